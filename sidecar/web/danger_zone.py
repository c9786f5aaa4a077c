"""The settings page's danger zone: reset the sync of every doctor, or disconnect every doctor.

Nothing new happens here: each doctor goes through the same functions as the per-doctor buttons
(``Bridge.reset_sync`` and ``sidecar.connections.disconnect``), one doctor at a time, and one doctor's
failure (Google refusing or not answering) never stops the others. Each action is confirmed on a page
that names what will happen and lists the doctors concerned; the confirmation carries the list it
showed (``fingerprint``), and if the list changed meanwhile (a doctor connected or disconnected) the
page is shown again instead of acting on doctors the admin did not see.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from flask_babel import gettext as _

from .. import connections
from ..calendars.base import CalendarAuthError, CalendarError
from ..storage.models import Connection, Doctor
from . import audit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Affected:
    """A doctor the action concerns: KiviCare doctor id, name, Google account and calendar name."""

    connection_id: int
    doctor_id: int
    name: str
    account: str
    calendar: str


@dataclass(frozen=True)
class Outcome:
    """What happened for one doctor: ``ok``, and for a failure a sentence saying why and what to do."""

    doctor: Affected
    ok: bool
    message: str = ""
    found: int = 0


def resettable(conn: Connection) -> bool:
    """The per-doctor reset's own rule (``connect.reset_sync``): a grant, a calendar, and syncing."""
    return bool(conn.refresh_token and conn.calendar_id and conn.state in ("active", "removed"))


def connected(conn: Connection) -> bool:
    """Anything to disconnect: every connection that is not disconnected already."""
    return conn.state != "disconnected"


def affected(action: str) -> list[Affected]:
    """The doctors ``action`` ("reset" or "disconnect") would concern now, by name."""
    rule = resettable if action == "reset" else connected
    names = {d.id: d.name for d in Doctor.select(Doctor.id, Doctor.name)}
    rows = [c for c in Connection.select().order_by(Connection.doctor) if rule(c)]
    found = [Affected(connection_id=c.id, doctor_id=c.doctor_id, name=names.get(c.doctor_id) or f"Doctor {c.doctor_id}",
                      account=c.account_email or "", calendar=c.calendar_name or c.calendar_id or "") for c in rows]
    return sorted(found, key=lambda a: (a.name.lower(), a.doctor_id))


def fingerprint(doctors: list[Affected]) -> str:
    """A short digest of which connections a confirmation page listed."""
    ids = ",".join(str(d.connection_id) for d in sorted(doctors, key=lambda d: d.connection_id))
    return hashlib.sha256(ids.encode("ascii")).hexdigest()[:16]


def reset_all(rt, doctors: list[Affected], *, remove_events: bool) -> list[Outcome]:
    """``Bridge.reset_sync`` for each doctor (still resettable when reached). Returns one outcome each."""
    outcomes = []
    mode = "events removed from Google" if remove_events else "events kept"
    for doctor in doctors:
        conn = Connection.get_or_none(Connection.id == doctor.connection_id)
        if conn is None or not resettable(conn):
            outcomes.append(Outcome(doctor, False, _("no longer connected, so there was nothing to reset")))
            continue
        try:
            found = rt.bridge.reset_sync(conn, remove_events=remove_events)
        except CalendarAuthError:
            outcomes.append(Outcome(doctor, False, _("Google no longer accepts the connection: reconnect it first")))
            continue
        except CalendarError as exc:
            log.warning("reset sync of connection %s failed: %s", conn.id, type(exc).__name__)
            outcomes.append(Outcome(doctor, False, _("Google did not answer in time: try again (a reset can be "
                                                     "repeated)")))
            continue
        except Exception as exc:  # one doctor must not stop the others; the details are in the log
            log.exception("reset sync of connection %s failed unexpectedly", conn.id)
            outcomes.append(Outcome(doctor, False, _("failed unexpectedly (%(kind)s)", kind=type(exc).__name__)))
            continue
        audit.record("reset_sync", audit.doctor(doctor.doctor_id),
                     f"all doctors, from the danger zone; {mode}; {found} found in Google")
        outcomes.append(Outcome(doctor, True, found=found))
    rt.request_poll()
    return outcomes


def disconnect_all(rt, doctors: list[Affected]) -> list[Outcome]:
    """``connections.disconnect`` for each doctor (still connected when reached). One outcome each."""
    outcomes = []
    for doctor in doctors:
        conn = Connection.get_or_none(Connection.id == doctor.connection_id)
        if conn is None or not connected(conn):
            outcomes.append(Outcome(doctor, True, _("was already disconnected")))
            continue
        try:
            connections.disconnect(rt, conn)
        except Exception as exc:  # one doctor must not stop the others; the details are in the log
            log.exception("disconnecting connection %s failed unexpectedly", conn.id)
            outcomes.append(Outcome(doctor, False, _("failed unexpectedly (%(kind)s)", kind=type(exc).__name__)))
            continue
        audit.record("disconnected", audit.doctor(doctor.doctor_id), "all doctors, from the danger zone")
        outcomes.append(Outcome(doctor, True))
    return outcomes


__all__ = ["Affected", "Outcome", "affected", "fingerprint", "reset_all", "disconnect_all", "resettable",
           "connected"]
