"""What every calendar provider speaks: the desired event, the confirmed event, and named errors.

The engine computes an ``EventSpec`` (provider-neutral: UTC times, texts, flags) and hands it to a
provider; the provider answers with an ``EventState`` or raises one of the errors below, from which
the engine decides: retry later without counting (outage, rate limit), reconnect (auth), or count a
failed attempt (request refused).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import datetime


@dataclass(frozen=True)
class EventSpec:
    """The event an appointment should have. ``start``/``end`` aware UTC; ``timezone`` IANA (display).

    ``reminder_minutes`` None keeps the calendar's default reminders; ``attendee_email`` set invites
    the patient. ``telemedicine`` asks for a video conference (Google Meet).
    """

    appointment_id: str
    start: datetime
    end: datetime
    timezone: str
    title: str
    description: str
    location: str
    tentative: bool = False
    color_id: str | None = None
    telemedicine: bool = False
    attendee_email: str | None = None
    reminder_minutes: tuple[int, ...] | None = None

    def fingerprint(self) -> str:
        """SHA-256 of everything we write; equal fingerprints mean nothing to push."""
        # The fields as they are (asdict's deep copy cost more than the hash: every listed row of every poll
        # comes through here); the JSON, so the fingerprint, is the same.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EventState:
    """What the provider confirmed: ids, etag, Google's ``updated`` (aware UTC) and the conference."""

    event_id: str
    etag: str
    updated: datetime | None
    status: str
    hangout_link: str = ""
    conference_status: str = ""  # "", pending, success, failure


@dataclass(frozen=True)
class CalendarEvent:
    """An event read from a calendar (Google → us), parsed at the edge.

    ``start``/``end`` aware UTC, or None for a tombstone (Google sends cancelled events bare).
    ``all_day`` events carry UTC instants of local midnights in ``timezone``. ``busy`` follows RFC
    5545 transparency (absent = opaque). ``declined``: the calendar's owner declined it.
    ``appointment_id``/``site`` come from our private extended properties (our own events).
    """

    id: str
    status: str  # confirmed, tentative, cancelled
    etag: str = ""
    updated: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    all_day: bool = False
    busy: bool = True
    declined: bool = False
    event_type: str = "default"  # default, outOfOffice, workingLocation, focusTime, ...
    private: bool = False  # visibility private/confidential: no title leaves the calendar
    summary: str = ""
    description: str = ""
    location: str = ""
    appointment_id: str = ""
    site: str = ""

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"


@dataclass(frozen=True)
class CalendarInfo:
    """An entry of the account's calendar list."""

    id: str
    name: str
    timezone: str
    access_role: str
    primary: bool = False


class CalendarError(Exception):
    """Base class for provider errors; messages carry ids and reasons, never event text."""


class CalendarUnavailable(CalendarError):
    """Outage: timeout, connection error, 5xx. Retry later; it does not count as a failed try."""


class CalendarRateLimited(CalendarError):
    """429 or 403 rateLimitExceeded/userRateLimitExceeded. ``long_pause`` for quotaExceeded."""

    def __init__(self, message: str, long_pause: bool = False):
        super().__init__(message)
        self.long_pause = long_pause


class CalendarSyncTokenExpired(CalendarError):
    """410 on an incremental list: the syncToken is no longer valid; do a (bounded) full sync."""


class CalendarChanged(CalendarError):
    """412: the event changed in the calendar since our last write (If-Match did not match)."""


class CalendarAuthError(CalendarError):
    """The account's grant is gone (invalid_grant, revoked, missing scopes): the doctor must reconnect."""


class CalendarNotFound(CalendarError):
    """The event or calendar does not exist (404)."""


class CalendarRequestError(CalendarError):
    """The provider refused the request permanently (other 4xx). ``status`` and ``reason`` say why."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason
