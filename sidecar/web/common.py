"""Small things every blueprint uses: the runtime of this app, and how times are shown (relative,
plus absolute in the clinic's timezone)."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app, g, has_request_context
from flask_babel import gettext as _
from flask_babel import ngettext

from ..storage.models import utcnow


def runtime():
    """The ``sidecar.runtime.Runtime`` this app was created with."""
    return current_app.extensions["sidecar_runtime"]


# ---- times ------------------------------------------------------------------------------------

def site_zone() -> tuple[ZoneInfo, str]:
    """The clinic's timezone (``state.site_timezone``, kept by the engine and by the KiviCare test), else UTC.
    Read once per request (pages format many times with it)."""
    cached = getattr(g, "sidecar_site_zone", None) if has_request_context() else None
    if cached is not None:
        return cached
    name = runtime().get_state("site_timezone")
    try:
        found = ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        found = ZoneInfo("UTC"), "UTC"
    if has_request_context():
        g.sidecar_site_zone = found
    return found


def as_datetime(value) -> datetime | None:
    """An aware UTC datetime from a datetime or ISO string (what ``get_state`` hands back)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def relative(value, now: datetime | None = None) -> str:
    """"3 minutes ago", "in 2 hours", "never" (translated)."""
    moment = as_datetime(value)
    if moment is None:
        return _("never")
    seconds = ((now or utcnow()) - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        return _("just now")
    if seconds >= 86400:
        unit, count = "day", int(seconds // 86400)
    elif seconds >= 3600:
        unit, count = "hour", int(seconds // 3600)
    else:
        unit, count = "minute", max(1, int(round(seconds / 60)))
    # The same words come back for many rows of a page (500 doctors' "last sync"): translate each once per request.
    words = g.setdefault("sidecar_relative_words", {}) if has_request_context() else {}
    key = (unit, count, future)
    if key not in words:
        if unit == "day":
            text = ngettext("%(num)d day", "%(num)d days", count)
        elif unit == "hour":
            text = ngettext("%(num)d hour", "%(num)d hours", count)
        else:
            text = ngettext("%(num)d minute", "%(num)d minutes", count)
        words[key] = _("in %(span)s", span=text) if future else _("%(span)s ago", span=text)
    return words[key]


def absolute(value) -> str:
    """``2025-03-04 14:05 (Europe/Paris)`` in the clinic's timezone; "" for no time."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    zone, name = site_zone()
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") + f" ({name})"


def clock(value) -> str:
    """``2025-03-04 14:05`` in the clinic's timezone, for tables whose heading names the zone; "" for no time."""
    moment = as_datetime(value)
    return moment.astimezone(site_zone()[0]).strftime("%Y-%m-%d %H:%M") if moment else ""


def iso(value) -> str:
    moment = as_datetime(value)
    return moment.astimezone(timezone.utc).isoformat() if moment else ""


def doctor_zone(doctor_id: int | None) -> tuple[ZoneInfo, str]:
    """A doctor's timezone (``Doctor.timezone``, cached from KiviCare), else the clinic's, else UTC."""
    from ..storage.models import Doctor

    doctor = Doctor.get_or_none(Doctor.id == doctor_id) if doctor_id is not None else None
    if doctor is not None and doctor.timezone:
        try:
            return ZoneInfo(doctor.timezone), doctor.timezone
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return site_zone()


def local_date(moment: datetime, zone: ZoneInfo) -> str:
    """``Tue 4 Mar 2025`` in ``zone`` (no locale: the same on every server)."""
    local = moment.astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %Y}"


def local_span(start, end, zone: ZoneInfo) -> dict:
    """Date and time of an appointment in ``zone``: ``{"date": "Tue 4 Mar 2025", "time": "14:05–14:35"}``
    (the end's date is added when it falls on another day); empty strings for no start."""
    start, end = as_datetime(start), as_datetime(end)
    if start is None:
        return {"date": "", "time": ""}
    first = start.astimezone(zone)
    time = f"{first:%H:%M}"
    if end is not None:
        last = end.astimezone(zone)
        time += f"–{last:%H:%M}" if last.date() == first.date() else f" – {local_date(end, zone)} {last:%H:%M}"
    return {"date": local_date(start, zone), "time": time}
