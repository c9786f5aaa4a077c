"""What an appointment's calendar event says: title, description, location, colour.

Two formats, chosen in the settings:
- ``template`` (default): the sidecar's title/description templates, whose initial value is
  KiviCare's own Google event template (``GET /settings/google-event-template``: ``{{service_name}}`` /
  "Appointment with patient at {{clinic_name}}"; no patient name);
- ``detailed``: the format KiviCare Pro documents: title "Patient: {patient_name}", description with
  service, doctor and status, location "clinic name, clinic address".
Placeholders are KiviCare's (API.md 5) plus ``{{appointment_status}}``, ``{{meet_link}}`` and
``{{description}}``. Dates and times are rendered in the doctor's timezone.

Privacy mode (``sync.privacy_mode``) keeps patient data out of Google whatever the templates say: a
template line naming the patient (name, e-mail) or the appointment's notes is left out, a title that
would name them becomes the service name, and the detailed format loses its "Patient:" title and notes.
(The engine also stops inviting patients then.)
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from .models import Appointment

PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
PLACEHOLDERS = ("appointment_date", "appointment_time", "service_name", "patient_name", "patient_email",
                "doctor_name", "doctor_email", "clinic_name", "clinic_address", "appointment_status",
                "meet_link", "description")
# What privacy mode keeps out of events: the patient's identity and the free-text notes (which may hold anything).
PATIENT_PLACEHOLDERS = frozenset({"patient_name", "patient_email", "description"})


def values(appointment: Appointment, zone: str, meet_link: str = "") -> dict[str, str]:
    """Placeholder values for ``appointment``; times in ``zone`` (IANA)."""
    local: datetime = appointment.start.astimezone(ZoneInfo(zone))
    return {
        "appointment_date": local.strftime("%Y-%m-%d"),
        "appointment_time": local.strftime("%H:%M"),
        "service_name": ", ".join(appointment.service_names) or "Appointment",
        "patient_name": appointment.patient_name,
        "patient_email": appointment.patient_email,
        "doctor_name": appointment.doctor_name,
        "doctor_email": appointment.doctor_email,
        "clinic_name": appointment.clinic_name,
        "clinic_address": appointment.clinic_address,
        "appointment_status": appointment.status_name,
        "meet_link": meet_link,
        "description": appointment.description,
    }


def render(template: str, vals: dict[str, str]) -> str:
    """Replace ``{{name}}`` placeholders; unknown names are left as they are (the admin sees them)."""
    return PLACEHOLDER.sub(lambda m: vals.get(m.group(1), m.group(0)), template).strip()


def location(appointment: Appointment) -> str:
    """Where the appointment takes place: "clinic name, clinic address" (either part may be missing)."""
    return ", ".join(p for p in (appointment.clinic_name, appointment.clinic_address) if p)


def names_patient(template: str) -> bool:
    """True when ``template`` uses a placeholder privacy mode must keep out (``PATIENT_PLACEHOLDERS``)."""
    return any(m.group(1) in PATIENT_PLACEHOLDERS for m in PLACEHOLDER.finditer(template))


def render_private(template: str, vals: dict[str, str]) -> str:
    """``render`` without patient data: lines naming the patient or the notes are dropped whole (a
    half-emptied "Patient: " line would only look broken)."""
    kept = [line for line in template.splitlines() if not names_patient(line)]
    return render("\n".join(kept), vals)


def texts(appointment: Appointment, zone: str, *, fmt: str, title_template: str, description_template: str,
          meet_link: str = "", privacy: bool = False) -> tuple[str, str, str]:
    """``(title, description, location)`` for the event. A Meet link goes into description and location.

    ``fmt`` is "template" or "detailed"; ``zone`` an IANA name for dates and times; ``privacy`` leaves
    out the patient's name and e-mail and the appointment's notes (see the module docstring).
    """
    vals = values(appointment, zone, meet_link)
    if fmt == "detailed":
        title = vals["service_name"] if privacy else f"Patient: {appointment.patient_name}".strip()
        lines = [f"Service: {vals['service_name']}", f"Doctor: {appointment.doctor_name}",
                 f"Status: {appointment.status_name}"]
        if appointment.description and not privacy:
            lines.append(f"Notes: {appointment.description}")
        description = "\n".join(lines)
    elif privacy:
        title = "" if names_patient(title_template) else render(title_template, vals)
        title = title or vals["service_name"]
        description = render_private(description_template, vals)
    else:
        title = render(title_template, vals) or vals["service_name"]
        description = render(description_template, vals)
    where = location(appointment)
    if meet_link:
        description = (description + "\n\n" if description else "") + f"Join with Google Meet: {meet_link}"
        where = meet_link
    return title, description, where
