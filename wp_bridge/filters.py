"""Which appointments sync: the admin's choice of KiviCare services and clinics (issue 5).

``sync.services`` and ``sync.clinics`` are lists of KiviCare ids (``kc_services.id`` and
``kc_clinics.id``); an empty list means "all" (the default). An appointment syncs when its clinic
is chosen and at least one of its services is. The engine (``Bridge.decide``) treats an appointment
outside the filter like a cancelled one: a future event is removed (through the poll's mass-delete
guard, so narrowing the filter never wipes a calendar unasked), a past one is kept.

An appointment whose service ids are not known yet (a doctor-service mapping KiviCare did not list)
is ``UNKNOWN`` while a service filter is set: its event is neither created nor removed until the
next poll can tell.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from .models import Appointment

log = logging.getLogger(__name__)
_warned: set[str] = set()  # each malformed setting is logged once per process, not on every appointment


class Scope(Enum):
    """Whether an appointment is inside the admin's filter."""

    IN = "in"
    OUT = "out"
    UNKNOWN = "unknown"


class FilterError(ValueError):
    """A filter setting holds something that is not a KiviCare id (the message names the setting)."""


def parse_ids(name: str, raw: Any) -> frozenset[int]:
    """The positive integer ids in setting ``name`` (a list of ints or digit strings).

    Raises FilterError naming the setting and the bad entry, so the settings page can say what to fix.
    An empty list gives an empty set ("all").
    """
    if raw is None or raw == "":
        return frozenset()
    if not isinstance(raw, (list, tuple, set, frozenset)):
        raise FilterError(f"{name}: expected a list of KiviCare ids")
    ids = set()
    for item in raw:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isascii() or not text.isdigit() or int(text) <= 0:
            raise FilterError(f"{name}: {text[:30]!r} is not a KiviCare id (a whole number above 0)")
        ids.add(int(text))
    return frozenset(ids)


def chosen(cfg, name: str) -> frozenset[int] | None:
    """The ids chosen in ``name`` ("sync.services" or "sync.clinics"), or None for "all".

    A malformed value syncs nothing new rather than everything: the caller gets FilterError.
    """
    ids = parse_ids(name, cfg.get(name))
    return ids or None


def scope(appointment: Appointment, cfg) -> Scope:
    """Where ``appointment`` stands against ``sync.services`` and ``sync.clinics``. Raises FilterError."""
    clinics = chosen(cfg, "sync.clinics")
    services = chosen(cfg, "sync.services")
    if clinics is not None and appointment.clinic_id not in clinics:
        return Scope.OUT
    if services is None:
        return Scope.IN
    if appointment.service_ids is None:
        return Scope.UNKNOWN
    return Scope.IN if services.intersection(appointment.service_ids) else Scope.OUT


def scope_or_unknown(appointment: Appointment, cfg) -> Scope:
    """``scope`` for the engine: a malformed filter setting gives UNKNOWN (no event created or removed)
    and one warning in the log, instead of stopping the poll."""
    try:
        return scope(appointment, cfg)
    except FilterError as exc:
        if str(exc) not in _warned:
            _warned.add(str(exc))
            log.warning("sync filter ignored until it is fixed in the settings: %s", exc)
        return Scope.UNKNOWN


__all__ = ["Scope", "FilterError", "parse_ids", "chosen", "scope", "scope_or_unknown"]
