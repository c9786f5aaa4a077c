"""The main job end to end: KiviCare appointments become Google events (with Meet for telemedicine).

Drives the real sidecar code (KiviCare client over requests, google-api-python-client,
google-auth-oauthlib) against the two sandboxes, as issue 2's "Done when" asks.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sidecar.storage.models import Connection, Job, MeetMapping, RejectedRow, SyncLog
from wp_bridge.bridge import RefuseToRun
from wp_bridge.kivicare import KiviCareUnavailable

from .conftest import ANNA, EMAILS, MARC, MEET, ONLINE_FOLLOW_UP, SOFIA, connect

GENERAL = 1  # kc_services id of "General Consultation"


def mapping_id(runtime, doctor_id: int, service_id: int) -> int:
    """The doctor-service mapping id KiviCare books with (``GET /doctor-services``)."""
    for service in runtime.kivicare().list_doctor_services(doctor_id):
        if service.service_id == service_id and service.doctor_id == doctor_id:
            return service.id
    raise AssertionError(f"doctor {doctor_id} has no service {service_id}")


def at(days: int, hour: int, minute: int = 0) -> datetime:
    """A UTC time ``days`` from today (odd minutes keep clear of the seeded appointments)."""
    day = datetime.now(timezone.utc).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def our_events(google, calendar_id: str, appointment_id: str | None = None, live: bool = True) -> list[dict]:
    found = []
    for event in google.events(calendar_id):
        private = (event.get("extendedProperties") or {}).get("private") or {}
        if "kcAppointmentId" not in private:
            continue
        if appointment_id is not None and private["kcAppointmentId"] != str(appointment_id):
            continue
        if live and event.get("status") == "cancelled":
            continue
        found.append(event)
    return found


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def writes(google) -> list[dict]:
    return [r for r in google.requests if r["method"] in ("POST", "PATCH", "PUT", "DELETE")
            and "/calendar/v3/" in r["path"]]


@pytest.fixture
def anna(runtime, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    return connection


def test_booked_appointment_becomes_exactly_one_event_with_right_times(runtime, kivicare, google, anna):
    start = at(2, 8, 10)
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=start,
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    events = our_events(google, anna.calendar_id, appointment_id)
    assert len(events) == 1
    event = events[0]
    assert instant(event["start"]["dateTime"]) == start
    assert instant(event["end"]["dateTime"]) == start + timedelta(minutes=30)
    # Anna has no timezone in KiviCare: the site's (Europe/Paris) is used for display.
    assert event["start"]["timeZone"] == "Europe/Paris"
    assert instant(event["start"]["dateTime"]).astimezone(ZoneInfo("Europe/Paris")).hour == \
        start.astimezone(ZoneInfo("Europe/Paris")).hour
    # KiviCare's own template: service name, no patient name.
    assert event["summary"] == "General Consultation"
    assert "Louis" not in event["summary"] + event.get("description", "")
    mapping = MeetMapping.get(MeetMapping.appointment_id == appointment_id)
    assert mapping.event_id == event["id"] and mapping.calendar_id == anna.calendar_id
    # Every appointment of Anna in the window with an event status has exactly one event.
    listed = runtime.kivicare().list_appointments(*[d.date() for d in runtime.bridge.window()], doctor_id=ANNA)
    expected = {a.id for a in listed.appointments if a.status in (1, 2, 3, 4)}
    got = [e["extendedProperties"]["private"]["kcAppointmentId"] for e in our_events(google, anna.calendar_id)]
    assert sorted(got) == sorted(expected)
    assert Connection.get_by_id(anna.id).synced_count >= len(expected)


def test_doctor_timezone_differs_from_site_and_dst_boundary(make_runtime, kivicare, google):
    runtime = make_runtime(**{"bridge.horizon_days": 200})
    sofia = connect(runtime, google, SOFIA)
    runtime.bridge.startup()
    # New York leaves DST on the first Sunday of November and enters it on the second Sunday of March.
    year = datetime.now(timezone.utc).year + 1
    before = datetime(year, 3, 12, 15, 0, tzinfo=timezone.utc)  # 10:00 EST (UTC-5)
    after = datetime(year, 3, 16, 14, 0, tzinfo=timezone.utc)  # 10:00 EDT (UTC-4)
    service = mapping_id(runtime, SOFIA, GENERAL)
    ids = [kivicare.create_appointment(doctor_id=SOFIA, patient_id=6, start_utc=t, service_mapping_ids=[service])
           for t in (before, after)]
    if (after.date() - datetime.now(timezone.utc).date()).days > 200:
        pytest.skip("DST boundary beyond the horizon")
    runtime.bridge.sync_once()
    for appointment_id, utc in zip(ids, (before, after)):
        event = our_events(google, sofia.calendar_id, appointment_id)[0]
        assert event["start"]["timeZone"] == "America/New_York"
        assert instant(event["start"]["dateTime"]) == utc
        assert instant(event["start"]["dateTime"]).astimezone(ZoneInfo("America/New_York")).hour == 10


def synced_online_appointment(make_runtime, kivicare, google, **settings):
    """Anna connected, one telemedicine appointment booked and synced: ``(anna, its mapping, its event)``."""
    runtime = make_runtime(**MEET, **settings)
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    appointment_id = kivicare.create_appointment(
        doctor_id=ANNA, patient_id=6, start_utc=at(3, 9, 10),
        service_mapping_ids=[mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP)])
    runtime.bridge.sync_once()
    mapping = MeetMapping.get(MeetMapping.appointment_id == appointment_id)
    return anna, mapping, our_events(google, anna.calendar_id, appointment_id)[0]


def test_telemedicine_gets_a_meet_link_stored_in_the_mapping_table(make_runtime, kivicare, google):
    anna, mapping, event = synced_online_appointment(make_runtime, kivicare, google)
    assert mapping.conference_status == "success"
    assert mapping.hangout_link.startswith("https://meet.google.com/")
    assert event["hangoutLink"] == mapping.hangout_link
    # By default the link lives in conferenceData only (Google's Join button): one write for the event.
    assert mapping.hangout_link not in event.get("description", "") and event.get("location") != mapping.hangout_link
    assert len([r for r in writes(google) if mapping.event_id in r["path"]
                or (r.get("json") or {}).get("id") == mapping.event_id]) == 1
    # conferenceDataVersion=1 on every write to the event.
    for request in writes(google):
        if mapping.event_id in request["path"] or (request.get("json") or {}).get("id") == mapping.event_id:
            assert request["query"].get("conferenceDataVersion") in ("1", 1, ["1"])


def test_meet_link_in_text_writes_it_into_location_and_description(make_runtime, kivicare, google):
    _anna, mapping, event = synced_online_appointment(make_runtime, kivicare, google,
                                                      **{"sync.meet_link_in_text": True})
    assert mapping.hangout_link in event["description"] and event["location"] == mapping.hangout_link


def test_a_template_using_the_meet_link_gets_it_without_the_setting(make_runtime, kivicare, google):
    _anna, mapping, event = synced_online_appointment(
        make_runtime, kivicare, google, **{"sync.description_template": "Video call: {{ meet_link }}"})
    assert f"Video call: {mapping.hangout_link}" in event["description"]


def test_telemedicine_dropped_removes_the_conference(make_runtime, kivicare, google):
    runtime = make_runtime(**MEET)
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    appointment_id = kivicare.create_appointment(
        doctor_id=ANNA, patient_id=6, start_utc=at(3, 11, 10),
        service_mapping_ids=[mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP)])
    runtime.bridge.sync_once()
    assert our_events(google, connection.calendar_id, appointment_id)[0].get("hangoutLink")
    runtime2 = make_runtime(**{"sync.telemedicine_services": []})
    runtime2.bridge.sync_once()
    event = our_events(google, connection.calendar_id, appointment_id)[0]
    assert not event.get("hangoutLink") and "meet.google.com" not in event.get("description", "")
    assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).hangout_link == ""


def test_reschedule_status_cancel_and_delete_follow_kivicare(runtime, kivicare, google, anna):
    service = [mapping_id(runtime, ANNA, GENERAL)]
    moved = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(4, 8, 10), service_mapping_ids=service)
    pending = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(4, 10, 10),
                                          service_mapping_ids=service, status=2)
    cancelled = kivicare.create_appointment(doctor_id=ANNA, patient_id=7, start_utc=at(5, 8, 10), service_mapping_ids=service)
    deleted = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(5, 10, 10), service_mapping_ids=service)
    runtime.bridge.sync_once()
    assert our_events(google, anna.calendar_id, pending)[0]["status"] == "tentative"
    assert all(len(our_events(google, anna.calendar_id, a)) == 1 for a in (moved, cancelled, deleted))

    kivicare.reschedule(moved, at(6, 13, 10))
    kivicare.set_status(pending, 1)
    kivicare.set_status(cancelled, 0)
    kivicare.delete_appointment(deleted)
    runtime.bridge.sync_once()

    event = our_events(google, anna.calendar_id, moved)[0]
    assert instant(event["start"]["dateTime"]) == at(6, 13, 10)
    assert instant(event["end"]["dateTime"]) == at(6, 13, 40)  # duration kept
    assert our_events(google, anna.calendar_id, pending)[0]["status"] == "confirmed"
    assert our_events(google, anna.calendar_id, cancelled) == []
    assert our_events(google, anna.calendar_id, deleted) == []
    assert MeetMapping.get(MeetMapping.appointment_id == deleted).state == "deleted"
    # Check-in keeps the event, with KiviCare's colour for status 4.
    kivicare.set_status(moved, 4)
    runtime.bridge.sync_once()
    assert our_events(google, anna.calendar_id, moved)[0]["colorId"] == "2"


def test_past_appointment_closed_by_the_nightly_cron_keeps_its_event(runtime, kivicare, google, anna):
    past = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=datetime.now(timezone.utc)
                                       - timedelta(hours=3), service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, past)) == 1
    kivicare.run_nightly_cron()
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, past)) == 1


def test_running_twice_writes_nothing_new(runtime, kivicare, google, anna):
    runtime.bridge.sync_once()
    before = len(our_events(google, anna.calendar_id))
    google.reset_requests()
    runtime.bridge.sync_once()
    assert writes(google) == []
    assert len(our_events(google, anna.calendar_id)) == before


def test_row_missing_from_the_list_while_get_answers_is_not_a_deletion(runtime, kivicare, google, anna):
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=7, start_utc=at(3, 14, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    kivicare.anonymise_patient(7)
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1


def test_bad_row_is_logged_once_skipped_and_its_event_left_alone(runtime, kivicare, google, anna, caplog):
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(2, 15, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    event_before = our_events(google, anna.calendar_id, appointment_id)[0]
    kivicare.set_raw_field(appointment_id, "start", "not a date")
    caplog.clear()
    for _ in range(3):
        runtime.bridge.sync_once()
    warnings = [r for r in caplog.records if "skipped KiviCare appointment" in r.getMessage()]
    assert len(warnings) == 1 and "Louis" not in warnings[0].getMessage()
    assert RejectedRow.select().count() == 1
    assert our_events(google, anna.calendar_id, appointment_id)[0]["etag"] == event_before["etag"]
    # The other appointments still sync.
    other = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(2, 16, 10),
                                        service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, other)) == 1


def test_kivicare_down_then_back_loses_nothing(runtime, kivicare, google, anna):
    runtime.bridge.sync_once()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 7, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    kivicare.set_down(True)
    with pytest.raises(KiviCareUnavailable):
        runtime.bridge.sync_once()
    assert runtime.get_state("poll")["ok"] is False
    assert len(our_events(google, anna.calendar_id)) > 0  # nothing deleted while KiviCare was down
    kivicare.set_down(False)
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1


def test_google_down_then_back_loses_nothing(runtime, kivicare, google, anna):
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 12, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    google.set_down(True)
    runtime.bridge.poll()
    runtime.bridge.run_due_jobs()
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{anna.id}")
    assert job.state == "pending" and job.attempts == 0  # an outage is not a failed try
    google.set_down(False)
    Job.update(run_after=datetime.now(timezone.utc)).execute()
    runtime.bridge.run_due_jobs()
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1
    assert SyncLog.select().where(SyncLog.outcome == "retry").exists()


def test_expired_access_token_is_refreshed(runtime, kivicare, google, anna):
    google.expire_access_tokens()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(4, 12, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1
    assert any(r["path"] == "/token" for r in google.requests)
    assert Connection.get_by_id(anna.id).state == "active"


def test_revoked_grant_needs_reconnect_and_keeps_jobs(runtime, kivicare, google, anna):
    google.revoke(EMAILS[ANNA])
    google.expire_access_tokens()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(4, 14, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert Connection.get_by_id(anna.id).state == "needs_reconnect"
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{anna.id}")
    assert job.state == "pending" and job.attempts == 0
    assert our_events(google, anna.calendar_id, appointment_id) == []
    # The doctor reconnects: the kept jobs run.
    connect(runtime, google, ANNA)
    runtime.bridge.sync_once()
    assert Connection.get_by_id(anna.id).state == "active"
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1


def test_encrypted_kivicare_answers_are_decrypted_and_reported(runtime, kivicare, google, anna):
    kivicare.browser_login(kivicare.username)
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(5, 12, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1
    assert runtime.get_state("e2ee")["event"] in ("encrypted", "decrypted")
    paths = [r["path"] for r in kivicare.requests]
    assert "/wp-json/kivicare/v1/config/register-key" in paths


def test_addons_google_meet_refuses_pro_and_zoom_warn(runtime, kivicare):
    kivicare.set_addon("kiviPro", True)
    kivicare.set_addon("telemed", True)
    warnings = runtime.bridge.check_addons()
    assert any("Pro" in w for w in warnings) and any("Zoom" in w for w in warnings)
    kivicare.set_addon("googlemeet", True)
    with pytest.raises(RefuseToRun):
        runtime.bridge.check_addons()


def test_appointment_moved_to_another_doctor_moves_its_event(runtime, kivicare, google, anna):
    marc = connect(runtime, google, MARC)
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(6, 8, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert len(our_events(google, anna.calendar_id, appointment_id)) == 1
    kivicare.set_raw_field(appointment_id, "doctorId", MARC)
    runtime.bridge.sync_once()
    assert our_events(google, anna.calendar_id, appointment_id) == []
    assert len(our_events(google, marc.calendar_id, appointment_id)) == 1


def test_doctor_own_colour_and_reminders_survive_our_updates(runtime, kivicare, google, anna):
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(8, 8, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    event = our_events(google, anna.calendar_id, appointment_id)[0]
    own_reminders = {"useDefault": False, "overrides": [{"method": "email", "minutes": 1440}]}
    google.user_patch(anna.calendar_id, event["id"], {"colorId": "6", "reminders": own_reminders})
    kivicare.reschedule(appointment_id, at(8, 9, 10))
    runtime.bridge.sync_once()
    event = our_events(google, anna.calendar_id, appointment_id)[0]
    assert instant(event["start"]["dateTime"]) == at(8, 9, 10)
    assert event["colorId"] == "6" and event["reminders"] == own_reminders


def test_patient_invitation_detailed_text_and_reminder_overrides(make_runtime, kivicare, google):
    runtime = make_runtime(**{"sync.invite_patients": True, "sync.event_template": "detailed",
                              "sync.reminder_minutes": [30, 10], **MEET})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(8, 12, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP)],
                                                 description="Follow-up on results")
    runtime.bridge.sync_once()
    event = our_events(google, connection.calendar_id, appointment_id)[0]
    assert event["summary"] == "Patient: Louis Bernard"
    assert "Service: Online Follow-up" in event["description"] and "Status: Booked" in event["description"]
    assert [a["email"] for a in event["attendees"]] == ["louis.bernard@patients.test"]
    assert event["reminders"] == {"useDefault": False, "overrides": [{"method": "popup", "minutes": 30},
                                                                     {"method": "popup", "minutes": 10}]}
    inserts = [r for r in google.requests if r["method"] == "POST" and r["path"].endswith("/events")
               and (r.get("json") or {}).get("id") == event["id"]]
    assert inserts and inserts[0]["query"].get("sendUpdates") in ("all", ["all"])


def test_an_unknown_doctor_timezone_falls_back_instead_of_breaking_the_poll(runtime, kivicare, google, anna):
    from sidecar.storage.models import Doctor
    Doctor.update(timezone="Nope/Zone").where(Doctor.id == ANNA).execute()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(9, 9, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert our_events(google, anna.calendar_id, appointment_id)[0]["start"]["timeZone"] == "Europe/Paris"
