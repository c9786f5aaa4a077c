"""The live preview of the event text on the settings page: a made-up appointment rendered with the
title and description templates, the format, privacy mode and the status colours being edited.

The text comes from the engine's own renderer (``wp_bridge.event_text.texts``), so the preview shows
exactly what the doctors' events will say. The sample appointment is tomorrow at 10:00 in the clinic's
timezone (``common.site_zone``), 30 minutes, status Booked; its patient is fictional.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from flask_babel import gettext as _

from wp_bridge import event_text
from wp_bridge.models import BOOKED, Appointment

from ..storage.models import utcnow
from .common import local_span, site_zone
from .settings_fields import COLOR_NAMES

SAMPLE = {"patient_name": "Jane Example", "patient_email": "jane.example@example.com",
          "doctor_name": "Dr Sam Carter", "doctor_email": "sam.carter@clinic.example",
          "clinic_name": "Riverside Clinic", "clinic_address": "1 Main Street, Springfield",
          "service_names": ("General consultation",), "description": "Follow-up of last week's blood test"}


def sample_appointment(now: datetime | None = None) -> tuple[Appointment, str]:
    """``(appointment, zone)``: the made-up appointment tomorrow 10:00-10:30 in the clinic's timezone."""
    zone, name = site_zone()
    day = (now or utcnow()).astimezone(zone).date() + timedelta(days=1)
    start = datetime.combine(day, time(10, 0), zone)
    return Appointment(id="0", doctor_id=0, patient_id=0, clinic_id=0, start=start.astimezone(timezone.utc),
                       end=(start + timedelta(minutes=30)).astimezone(timezone.utc), status=BOOKED,
                       **SAMPLE), name


def preview(*, fmt: str, title_template: str, description_template: str, privacy: bool = False,
            colors: dict | None = None) -> dict:
    """What an event for the sample appointment looks like under these settings.

    Returns ``{"title", "description", "location", "when", "status", "color_id", "color_name"}`` (strings;
    ``color_id`` "" means the calendar's own colour). Raises nothing for any template text: unknown
    placeholders are left visible, as the engine leaves them.
    """
    appointment, zone = sample_appointment()
    title, description, where = event_text.texts(appointment, zone, fmt=fmt, title_template=title_template,
                                                 description_template=description_template, privacy=privacy)
    color_id = str((colors or {}).get(str(BOOKED), "") or "")
    span = local_span(appointment.start, appointment.end, site_zone()[0])
    return {"title": title, "description": description, "location": where,
            "when": f"{span['date']}, {span['time']} ({zone})", "status": _("Booked"),
            "color_id": color_id if color_id in COLOR_NAMES else "",
            "color_name": str(COLOR_NAMES[color_id]) if color_id in COLOR_NAMES else _("The calendar's colour")}


__all__ = ["preview", "sample_appointment", "SAMPLE"]
