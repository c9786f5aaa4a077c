"""Privacy mode and the services/clinics filter (issue 5), end to end through the engine and the sandboxes.

Privacy mode: no patient name, e-mail or notes reach Google whatever the templates say, and no
patient is invited. Filters: appointments outside ``sync.services``/``sync.clinics`` get no event;
one that leaves the filter loses its upcoming event like a cancelled one, past ones keep theirs, and
narrowing the filter never removes many events at once without the mass-delete guard asking.
"""

from __future__ import annotations

import json
import logging

from sidecar.storage.models import Appointment as AppointmentRow, Conflict, MeetMapping

from .conftest import ANNA, connect
from .test_sync_engine import GENERAL, at, mapping_id, our_events

EXTENDED, FOLLOW_UP = 4, 3  # kc_services ids in the sandbox seed


def patient_data(appointment_ids) -> set[str]:
    """Patient names, e-mails and notes of these appointments, as the sidecar read them from KiviCare."""
    found = set()
    for row in AppointmentRow.select().where(AppointmentRow.id.in_(list(appointment_ids))):
        for key in ("patient_name", "patient_email", "description"):
            if row.data.get(key):
                found.add(row.data[key])
    return found


def event_ids(google, calendar_id) -> dict[str, dict]:
    return {e["extendedProperties"]["private"]["kcAppointmentId"]: e for e in our_events(google, calendar_id)}


# ---- privacy mode -------------------------------------------------------------------------------

def test_privacy_mode_keeps_patients_out_of_events_whatever_the_templates_say(make_runtime, kivicare, google):
    runtime = make_runtime(**{
        "sync.title_template": "{{patient_name}}: {{service_name}}",
        "sync.description_template": "Patient: {{patient_name}} <{{patient_email}}>\nNotes: {{description}}\n"
                                     "{{appointment_date}} at {{clinic_name}}",
        "sync.invite_patients": True})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    booked = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 8, 10),
                                         service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)],
                                         description="Allergic to penicillin")
    runtime.bridge.sync_once()
    before = event_ids(google, connection.calendar_id)
    private = patient_data(before)
    assert "Louis Bernard" in before[booked]["summary"]  # privacy off: the admin's template names the patient
    assert before[booked]["attendees"][0]["email"] in private

    runtime.cfg.set("sync.privacy_mode", True)
    runtime.bridge.sync_once()  # every event is rewritten without the patient
    after = event_ids(google, connection.calendar_id)
    assert set(after) == set(before)
    event = after[booked]
    assert event["summary"] == "General Consultation"
    assert event["description"] == f"{at(3, 8, 10).date().isoformat()} at Riverside Family Clinic"
    assert not event.get("attendees")
    for appointment_id, body in after.items():
        text = json.dumps(body)
        assert not [value for value in private if value in text], appointment_id


def test_privacy_mode_with_the_detailed_format_and_on_a_new_appointment(make_runtime, kivicare, google):
    runtime = make_runtime(**{"sync.event_template": "detailed", "sync.privacy_mode": True,
                              "sync.invite_patients": True})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    booked = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(4, 9, 10),
                                         service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)],
                                         description="Private notes")
    runtime.bridge.sync_once()
    event = event_ids(google, connection.calendar_id)[booked]
    assert event["summary"] == "General Consultation"
    assert event["description"] == "Service: General Consultation\nDoctor: Anna Schmidt\nStatus: Booked"
    assert not event.get("attendees")
    insert = next(r for r in google.requests if r["method"] == "POST" and (r.get("json") or {}).get("id") == event["id"])
    assert insert["query"].get("sendUpdates") in ("none", ["none"])  # nobody is e-mailed


# ---- services and clinics ---------------------------------------------------------------------------

def test_only_chosen_services_sync_and_one_leaving_the_filter_loses_its_upcoming_event(make_runtime, kivicare,
                                                                                       google):
    runtime = make_runtime()
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    follow_up = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(6, 8, 10),
                                            service_mapping_ids=[mapping_id(runtime, ANNA, FOLLOW_UP)])
    past_follow_up = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(-1, 12, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, FOLLOW_UP)])
    runtime.bridge.sync_once()
    everything = event_ids(google, connection.calendar_id)
    assert follow_up in everything and past_follow_up in everything  # no filter: all services

    runtime.cfg.set("sync.services", [GENERAL, EXTENDED])  # the admin leaves online follow-ups out
    runtime.bridge.sync_once()
    now = event_ids(google, connection.calendar_id)
    assert follow_up not in now  # upcoming: removed like a cancelled appointment
    assert past_follow_up in now  # past: kept, as for a cancellation
    upcoming_follow_ups = {a for a in everything if FOLLOW_UP in (AppointmentRow.get_by_id(a).data["service_ids"] or [])
                           and AppointmentRow.get_by_id(a).start_utc > runtime.bridge.clock()}
    assert follow_up in upcoming_follow_ups and set(now) == set(everything) - upcoming_follow_ups
    assert not Conflict.select().exists()

    later = kivicare.create_appointment(doctor_id=ANNA, patient_id=7, start_utc=at(7, 8, 10),
                                        service_mapping_ids=[mapping_id(runtime, ANNA, FOLLOW_UP)])
    runtime.bridge.sync_once()
    assert later not in event_ids(google, connection.calendar_id)  # never created

    runtime.cfg.set("sync.services", [])  # all again: the follow-ups come (back)
    runtime.bridge.sync_once()
    assert {follow_up, later} <= set(event_ids(google, connection.calendar_id))


def test_narrowing_the_filter_to_remove_many_events_stops_at_the_mass_delete_guard(make_runtime, kivicare, google):
    runtime = make_runtime()
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    for day in (3, 4, 5, 6):
        kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(day, 8, 10),
                                    service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    before = event_ids(google, connection.calendar_id)
    runtime.cfg.set("sync.services", [EXTENDED])  # would remove every General Consultation at once
    runtime.bridge.sync_once()
    assert set(event_ids(google, connection.calendar_id)) == set(before)  # nothing removed unasked
    conflict = Conflict.get(Conflict.kind == "mass_delete")
    assert conflict.doctor_id == ANNA and len(conflict.kivicare["appointments"]) >= 4
    runtime.bridge.inbound.resolve(conflict.id, "kivicare", by="admin")  # the admin agrees
    runtime.bridge.sync_once()
    remaining = event_ids(google, connection.calendar_id)
    assert not set(conflict.kivicare["appointments"]) & set(remaining)


def test_clinic_filter_and_a_malformed_filter_create_and_remove_nothing(make_runtime, kivicare, google, caplog):
    runtime = make_runtime(**{"sync.clinics": [2]})  # the seed's clinic is 1
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    assert our_events(google, connection.calendar_id) == []
    runtime2 = make_runtime(**{"sync.clinics": [1]})
    runtime2.bridge.sync_once()
    synced = event_ids(google, connection.calendar_id)
    assert synced
    bad = make_runtime(**{"sync.clinics": ["1", "clinic one"]})
    with caplog.at_level(logging.WARNING, logger="wp_bridge.filters"):
        bad.bridge.sync_once()
        bad.bridge.sync_once()
    assert set(event_ids(google, connection.calendar_id)) == set(synced)  # nothing removed on a bad value
    warnings = [r for r in caplog.records if "sync.clinics" in r.getMessage()]
    assert len(warnings) <= 1 and MeetMapping.select().where(MeetMapping.state == "active").count() == len(synced)
