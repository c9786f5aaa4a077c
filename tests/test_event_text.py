"""Event text, deterministic ids and the Google body: pure functions, no servers."""

import re
from datetime import datetime, timezone

from sidecar.calendars.base import EventSpec
from sidecar.calendars.google import event_body, event_id_for
from wp_bridge.event_text import texts
from wp_bridge.models import Appointment

APPOINTMENT = Appointment(id="36", doctor_id=4, patient_id=5, clinic_id=1,
                          start=datetime(2027, 3, 28, 0, 30, tzinfo=timezone.utc),
                          end=datetime(2027, 3, 28, 1, 30, tzinfo=timezone.utc), status=2,
                          service_names=("General Consultation",), patient_name="Louis Bernard",
                          doctor_name="Marc Dubois", clinic_name="Riverside Family Clinic",
                          clinic_address="12 Rue de la Paix")


def test_event_ids_are_base32hex_deterministic_and_distinct():
    first = event_id_for("https://clinic.test", "36", "cal@x")
    assert first == event_id_for("https://clinic.test", "36", "cal@x")
    assert re.fullmatch(r"[a-v0-9]{5,1024}", first)
    assert first != event_id_for("https://clinic.test", "36", "other@x")
    assert first != event_id_for("https://other.test", "36", "cal@x")


def test_kivicare_template_has_no_patient_name_and_renders_in_the_doctor_zone():
    title, description, where = texts(APPOINTMENT, "Europe/Paris", fmt="template", title_template="{{service_name}}",
                                      description_template="{{appointment_date}} {{appointment_time}} at "
                                                           "{{clinic_name}}")
    assert title == "General Consultation" and "Louis" not in title + description
    # 00:30 UTC on the night Paris moves to summer time is 01:30 CET (the switch happens at 01:00 UTC).
    assert description == "2027-03-28 01:30 at Riverside Family Clinic"
    assert where == "Riverside Family Clinic, 12 Rue de la Paix"


def test_detailed_format_and_meet_link():
    title, description, where = texts(APPOINTMENT, "UTC", fmt="detailed", title_template="", description_template="",
                                      meet_link="https://meet.google.com/abc-defg-hij")
    assert title == "Patient: Louis Bernard" and "Status: Pending" in description
    assert description.endswith("https://meet.google.com/abc-defg-hij") and where.startswith("https://meet")


def test_google_body_carries_zone_tentative_and_conference_request():
    spec = EventSpec(appointment_id="36", start=APPOINTMENT.start, end=APPOINTMENT.end, timezone="Europe/Paris",
                     title="t", description="d", location="l", tentative=True, color_id="5", telemedicine=True)
    body = event_body(spec, "https://clinic.test", create_conference=True, request_id="r1")
    assert body["start"] == {"dateTime": "2027-03-28T01:30:00+01:00", "timeZone": "Europe/Paris"}
    assert body["end"] == {"dateTime": "2027-03-28T03:30:00+02:00", "timeZone": "Europe/Paris"}  # after the switch
    assert body["status"] == "tentative" and body["colorId"] == "5"
    assert body["extendedProperties"]["private"]["kcAppointmentId"] == "36"
    assert body["conferenceData"]["createRequest"]["conferenceSolutionKey"] == {"type": "hangoutsMeet"}
    assert "reminders" not in body and "attendees" not in body  # calendar defaults, no guests
