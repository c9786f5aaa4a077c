"""KiviCare wire shapes parsed once, at the edge, into typed objects with UTC datetimes.

Sources: ``GET /appointments?timezone=UTC`` list items (API.md 2.3, fixture 138),
``GET /appointments/{id}?timezone=UTC`` (API.md 2.8, fixture 139), ``GET /doctors[/{id}]`` and
``GET /doctor-services`` (API.md 3, fixtures 041-043, 140-141). Anything malformed raises
``BadAppointment`` whose message names the field but never its value (values may be patient data).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

CANCELLED, BOOKED, PENDING, CHECKED_OUT, CHECKED_IN = 0, 1, 2, 3, 4
STATUS_NAMES = {CANCELLED: "Cancelled", BOOKED: "Booked", PENDING: "Pending",
                CHECKED_OUT: "Check-Out", CHECKED_IN: "Check-In"}
# Statuses that have a Google event (API.md 2.4): booked, pending (tentative), checked in, checked out.
EVENT_STATUSES = frozenset({BOOKED, PENDING, CHECKED_IN, CHECKED_OUT})

_DIGITS = re.compile(r"^[0-9]{1,20}$")
# Appointment times must be convertible to any timezone (UTC offsets stay under a day): see _utc.
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc) + timedelta(days=2)
_LATEST = datetime.max.replace(tzinfo=timezone.utc) - timedelta(days=2)


class BadAppointment(ValueError):
    """A KiviCare appointment that cannot be used. ``appointment_id`` may be "" when even the id is bad."""

    def __init__(self, appointment_id: str, problem: str):
        super().__init__(f"appointment {appointment_id or '?'}: {problem}")
        self.appointment_id = appointment_id
        self.problem = problem


def row_hash(raw: Any) -> str:
    """A stable SHA-256 of a JSON value (dict key order ignored)."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _id_of(raw: dict) -> str:
    value = raw.get("id")
    # fullmatch: ``$`` alone also matches before a trailing newline, and "36\n" would be a second appointment 36
    # (a second event). Found by tests/reliability/test_fuzz_kivicare.py.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _DIGITS.fullmatch(str(value)):
        raise BadAppointment("", "missing or malformed id")
    return str(value)


def _as_list(value: Any) -> list:
    """``value`` when it is a list, else []: strings and dicts yielded no dict items anyway (fuzzing fix)."""
    return value if isinstance(value, list) else []


def _int(raw: dict, key: str, appointment_id: str, *, positive: bool = True) -> int:
    value = raw.get(key)
    if isinstance(value, bool):
        raise BadAppointment(appointment_id, f"{key} is not a number")
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if not isinstance(value, int) or (positive and value <= 0):
        raise BadAppointment(appointment_id, f"missing or malformed {key}")
    return value


def _text(raw: dict, key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _utc(text: Any, appointment_id: str, key: str) -> datetime:
    """KiviCare sends ``YYYY-MM-DDTHH:MM:SS`` with no offset in the requested timezone (here UTC)."""
    if not isinstance(text, str):
        raise BadAppointment(appointment_id, f"missing or malformed {key}")
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T").replace("/", "T"))
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc)  # OverflowError near years 1 and 9999
    except (ValueError, OverflowError):
        raise BadAppointment(appointment_id, f"malformed {key}") from None
    parsed = parsed.replace(tzinfo=timezone.utc)
    # Fuzzing fix (tests/reliability): a time that cannot be shown in every timezone (within a day of
    # datetime.min/max) made the engine raise OverflowError while rendering the event, so one bad row
    # stopped every poll. Such a row is rejected like any other malformed one.
    if not _EARLIEST <= parsed <= _LATEST:
        raise BadAppointment(appointment_id, f"{key} out of range")
    return parsed


def _status(value: Any, appointment_id: str) -> int:
    # Fuzzing fixes (tests/reliability): ASCII digits only ("\u00b2".isdigit() is True but int() refuses it),
    # numbers only before the dict lookup (a list or dict raised TypeError: unhashable), and an int out
    # (1.0 was accepted and kept as a float).
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in STATUS_NAMES:
        raise BadAppointment(appointment_id, "unknown status")
    return int(value)


@dataclass(frozen=True)
class Appointment:
    """A KiviCare appointment. ``start``/``end`` are aware UTC. Ids are KiviCare's (appointment id a string).

    ``service_mapping_ids`` are doctor-service mapping ids (``kc_service_doctor_mapping.id``) from
    ``GET /appointments/{id}``; ``None`` until the detail was fetched. ``row_hash`` fingerprints the
    list row it came from, so an unchanged row is not fetched again.
    """

    id: str
    doctor_id: int
    patient_id: int
    clinic_id: int
    start: datetime
    end: datetime
    status: int
    description: str = ""
    service_names: tuple[str, ...] = ()
    patient_name: str = ""
    patient_email: str = ""
    doctor_name: str = ""
    doctor_email: str = ""
    clinic_name: str = ""
    clinic_address: str = ""
    service_mapping_ids: tuple[int, ...] | None = None
    service_ids: tuple[int, ...] | None = None  # kc_services ids, resolved from the mapping ids
    row_hash: str = ""

    @property
    def status_name(self) -> str:
        return STATUS_NAMES[self.status]

    def is_past(self, now: datetime) -> bool:
        """True when the appointment started before ``now`` (aware)."""
        return self.start <= now

    @classmethod
    def _from_wire(cls, raw: dict, appointment_id: str, start_text: Any, end_text: Any,
                   service_names: list[str], **extra) -> "Appointment":
        """The fields both routes carry under the same names; ``extra`` adds route-specific ones."""
        start = _utc(start_text, appointment_id, "start")
        end = _utc(end_text, appointment_id, "end")
        if end <= start:
            raise BadAppointment(appointment_id, "end is not after start")
        return cls(
            id=appointment_id,
            doctor_id=_int(raw, "doctorId", appointment_id),
            patient_id=_int(raw, "patientId", appointment_id),
            clinic_id=_int(raw, "clinicId", appointment_id),
            start=start, end=end,
            status=_status(raw.get("status"), appointment_id),
            description=_text(raw, "description"),
            service_names=tuple(n.strip() for n in service_names if n and n.strip()),
            patient_name=_text(raw, "patientName"), patient_email=_text(raw, "patientEmail"),
            doctor_name=_text(raw, "doctorName"), doctor_email=_text(raw, "doctorEmail"),
            clinic_name=_text(raw, "clinicName"),
            row_hash=row_hash(raw),
            **extra,
        )

    @classmethod
    def from_list_item(cls, raw: Any) -> "Appointment":
        """Parse one item of ``GET /appointments?timezone=UTC`` (fixture 138). Raises BadAppointment."""
        if not isinstance(raw, dict):
            raise BadAppointment("", "list item is not an object")
        appointment_id = _id_of(raw)
        if raw.get("timezone") not in (None, "UTC"):
            raise BadAppointment(appointment_id, "times are not in UTC (timezone parameter ignored?)")
        return cls._from_wire(raw, appointment_id, raw.get("start"), raw.get("end"),
                              _text(raw, "services").split(","), clinic_address=_text(raw, "clinicAddress"))

    @classmethod
    def from_detail(cls, raw: Any) -> "Appointment":
        """Parse ``GET /appointments/{id}?timezone=UTC`` data (fixture 139). Raises BadAppointment."""
        if not isinstance(raw, dict):
            raise BadAppointment("", "appointment is not an object")
        appointment_id = _id_of(raw)
        # Fuzzing fix (tests/reliability): a service_list that is not a list (an int raised TypeError) or a
        # title that is not a string (AttributeError on .strip()) no longer escapes as a crash.
        names = [s.get("title", "") if isinstance(s.get("title", ""), str) else ""
                 for s in _as_list(raw.get("service_list")) if isinstance(s, dict)]
        if not names:
            names = _text(raw, "serviceName").split(",")
        return cls._from_wire(raw, appointment_id,
                              f"{raw.get('appointmentStartDate')}T{raw.get('appointmentStartTime')}",
                              f"{raw.get('appointmentEndDate')}T{raw.get('appointmentEndTime')}", names,
                              service_mapping_ids=parse_service_ids(raw, appointment_id))

    def with_services(self, mapping_ids: tuple[int, ...], service_ids: tuple[int, ...] | None) -> "Appointment":
        """A copy carrying the mapping ids learnt from the detail route and the kc_services ids they name."""
        return replace(self, service_mapping_ids=mapping_ids, service_ids=service_ids)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["end"] = self.end.isoformat()
        data["service_names"] = list(self.service_names)
        for key in ("service_mapping_ids", "service_ids"):
            value = getattr(self, key)
            data[key] = None if value is None else list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Appointment":
        data = dict(data)
        data["start"] = datetime.fromisoformat(data["start"])
        data["end"] = datetime.fromisoformat(data["end"])
        data["service_names"] = tuple(data.get("service_names") or ())
        for key in ("service_mapping_ids", "service_ids"):
            ids = data.get(key)
            data[key] = None if ids is None else tuple(ids)
        return cls(**data)


def parse_service_ids(raw: dict, appointment_id: str) -> tuple[int, ...]:
    """``serviceIds`` (strings of mapping ids) from ``GET /appointments/{id}``; raises BadAppointment."""
    ids = raw.get("serviceIds")
    if ids is None:
        ids = [s.get("id") for s in _as_list(raw.get("service_list")) if isinstance(s, dict)]
    if not isinstance(ids, list):
        raise BadAppointment(appointment_id, "malformed serviceIds")
    out = []
    for value in ids:
        if isinstance(value, int) and not isinstance(value, bool):
            out.append(value)
        elif isinstance(value, str) and _DIGITS.match(value.strip()):
            out.append(int(value))
        else:
            raise BadAppointment(appointment_id, "malformed serviceIds")
    return tuple(out)


@dataclass(frozen=True)
class Doctor:
    """A KiviCare doctor: ``id`` is the WordPress user id; ``timezone`` None means the site's."""

    id: int
    name: str
    email: str
    timezone: str | None = None


@dataclass(frozen=True)
class DoctorService:
    """A doctor-service mapping (``GET /doctor-services``): ``id`` mapping id, ``service_id`` kc_services id."""

    id: int
    service_id: int
    name: str
    doctor_id: int
    clinic_id: int
    telemed: bool


@dataclass(frozen=True)
class Clinic:
    """A KiviCare clinic (``GET /clinics``, fixture 046): ``id`` is ``kc_clinics.id`` (a string on the wire)."""

    id: int
    name: str


@dataclass(frozen=True)
class EventTemplate:
    """KiviCare's Google event template (``GET /settings/google-event-template``, API.md 5)."""

    title: str = "{{service_name}}"
    description: str = "Appointment with patient at {{clinic_name}}"
    status_colors: dict = field(default_factory=lambda: {"0": "11", "1": "9", "2": "5", "3": "8", "4": "2"})


@dataclass(frozen=True)
class SiteInfo:
    """From the ``/wp-json/`` index: the site's name and IANA timezone (``timezone_string``)."""

    name: str
    timezone: str
