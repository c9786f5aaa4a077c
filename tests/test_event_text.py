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


# ---- privacy mode ---------------------------------------------------------------------------------

NOTED = Appointment(**{**APPOINTMENT.__dict__, "patient_email": "louis@patients.test",
                       "description": "Allergic to penicillin"})
PRIVATE = ("Louis", "louis@patients.test", "penicillin")


def test_privacy_mode_drops_template_lines_naming_the_patient_or_the_notes():
    title, description, where = texts(
        NOTED, "UTC", fmt="template", privacy=True, title_template="{{ patient_name }} – {{service_name}}",
        description_template="Patient: {{patient_name}} ({{patient_email}})\nNotes: {{description}}\n"
                             "{{appointment_time}} with {{doctor_name}} at {{clinic_name}}")
    assert title == "General Consultation"  # a title naming the patient becomes the service name
    assert description == "00:30 with Marc Dubois at Riverside Family Clinic"
    assert where == "Riverside Family Clinic, 12 Rue de la Paix"
    assert not [p for p in PRIVATE if p in title + description + where]


def test_privacy_mode_keeps_templates_without_patient_data_and_the_meet_link():
    title, description, _ = texts(NOTED, "UTC", fmt="template", privacy=True, title_template="{{clinic_name}} visit",
                                  description_template="Status: {{appointment_status}}",
                                  meet_link="https://meet.google.com/abc-defg-hij")
    assert title == "Riverside Family Clinic visit"
    assert description == "Status: Pending\n\nJoin with Google Meet: https://meet.google.com/abc-defg-hij"


def test_privacy_mode_with_the_detailed_format():
    title, description, _ = texts(NOTED, "UTC", fmt="detailed", title_template="", description_template="",
                                  privacy=True)
    assert title == "General Consultation"
    assert description == "Service: General Consultation\nDoctor: Marc Dubois\nStatus: Pending"
    without = texts(NOTED, "UTC", fmt="detailed", title_template="", description_template="")
    assert without[0] == "Patient: Louis Bernard" and "Notes: Allergic to penicillin" in without[1]


def test_a_template_made_only_of_patient_data_leaves_an_empty_description():
    _, description, _ = texts(NOTED, "UTC", fmt="template", privacy=True, title_template="{{patient_name}}",
                              description_template="{{patient_name}}\n{{description}}")
    assert description == ""


# ---- the services and clinics filter --------------------------------------------------------------

def test_filter_scope_services_clinics_and_unknown_services():
    from sidecar.config import Config
    from wp_bridge.filters import FilterError, Scope, parse_ids, scope, scope_or_unknown

    def cfg(**values):
        return Config(None, environ={}, overrides=values)

    known = Appointment(**{**APPOINTMENT.__dict__, "service_ids": (1, 4)})
    assert scope(known, cfg()) is Scope.IN  # empty lists: everything syncs
    assert scope(known, cfg(**{"sync.services": [4, 9]})) is Scope.IN  # one of its services is chosen
    assert scope(known, cfg(**{"sync.services": "3"})) is Scope.OUT
    assert scope(known, cfg(**{"sync.clinics": [2]})) is Scope.OUT
    assert scope(known, cfg(**{"sync.clinics": "1", "sync.services": "1, 2"})) is Scope.IN
    assert scope(APPOINTMENT, cfg(**{"sync.services": [1]})) is Scope.UNKNOWN  # services not read yet
    assert scope(APPOINTMENT, cfg(**{"sync.clinics": [1]})) is Scope.IN
    for bad in (["x"], [0], [-1], [True], ["1.5"], "²"):
        try:
            parse_ids("sync.services", bad if isinstance(bad, list) else [bad])
        except FilterError as exc:
            assert "sync.services" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
    assert scope_or_unknown(known, cfg(**{"sync.services": ["one"]})) is Scope.UNKNOWN
