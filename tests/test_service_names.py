"""Service ids from the list row's names (issue 7): the poll does not read ``GET /appointments/{id}`` per
new or changed appointment when the row's service names name one doctor-service mapping each.

KiviCare's list joins the appointment's services on the mapping of its own doctor and clinic and gives
their names only (API.md 2.3); ``GET /doctor-services?perPage=all`` (read once, cached) turns each name
into its mapping and kc_services id. Where a name is missing or ambiguous, the detail route decides, as
before. Real sandboxes on loopback, a real SQLite file; requests counted from the sandbox's log.
"""

from __future__ import annotations

from sidecar.storage.models import Appointment as AppointmentRow, MeetMapping

from .conftest import ANNA, MEET, ONLINE_FOLLOW_UP, connect
from .test_poll_windows import Clock, detail_reads
from .test_sync_engine import GENERAL, at, mapping_id, our_events


def service_list_reads(kivicare) -> list[dict]:
    return [r for r in kivicare.requests if r["method"] == "GET" and r["path"].endswith("/kivicare/v1/doctor-services")]


def test_new_appointments_are_planned_from_the_list_alone(make_runtime, kivicare, google):
    runtime = make_runtime(**MEET)
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    video = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(3, 9, 10),
                                        service_mapping_ids=[mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP)])
    general = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(4, 9, 10),
                                          service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    kivicare.requests.clear()
    report = runtime.bridge.sync_once()
    assert detail_reads(kivicare) == [] and report.fetched == 0
    assert len(service_list_reads(kivicare)) <= 1  # the cached mapping list, read at most once
    video_row = AppointmentRow.get_by_id(video)
    assert video_row.data["service_ids"] == [ONLINE_FOLLOW_UP]
    assert video_row.data["service_mapping_ids"] == [mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP)]
    assert AppointmentRow.get_by_id(general).data["service_ids"] == [GENERAL]
    # Telemedicine decided from the names: the Meet conference exists; the other has none.
    assert MeetMapping.get(MeetMapping.appointment_id == video).hangout_link.startswith("https://meet.google.com/")
    assert "conferenceData" not in our_events(google, anna.calendar_id, general)[0]
    # A reschedule changes the row: still no detail read.
    kivicare.requests.clear()
    kivicare.reschedule(general, at(5, 10, 10))
    runtime.bridge.sync_once()
    assert detail_reads(kivicare) == []


def test_an_ambiguous_name_is_settled_by_the_detail_route(make_runtime, kivicare, google):
    runtime = make_runtime(**MEET)
    runtime.bridge.clock = clock = Clock()
    connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    # A second kc_service of the same name, also offered by Anna at clinic 1: the name names two mappings.
    twin = kivicare._add_service(name="General Consultation", category_id=1, price=10, duration=30, telemed="no")
    twin_mapping = kivicare._add_mapping(service_id=twin, doctor_id=ANNA, clinic_id=1, charges=10, duration=30,
                                         telemed="no")
    clock.advance(31)  # a poll meeting new rows re-reads a mapping list older than 30 s: the twin is known
    appointment = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 11, 10),
                                              service_mapping_ids=[twin_mapping])
    kivicare.requests.clear()
    report = runtime.bridge.sync_once()
    assert [r["path"].rsplit("/", 1)[1] for r in detail_reads(kivicare)] == [appointment]
    assert report.fetched == 1
    assert AppointmentRow.get_by_id(appointment).data["service_ids"] == [twin]


def test_a_service_added_after_the_cache_was_read_is_found_by_a_fresh_read(make_runtime, kivicare, google):
    runtime = make_runtime(**MEET)
    runtime.bridge.clock = clock = Clock()
    connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    new_service = kivicare._add_service(name="Allergy Test", category_id=1, price=30, duration=30, telemed="no")
    new_mapping = kivicare._add_mapping(service_id=new_service, doctor_id=ANNA, clinic_id=1, charges=30,
                                        duration=30, telemed="no")
    appointment = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 13, 10),
                                              service_mapping_ids=[new_mapping])
    # The cache is older than 30 s: an unknown name re-reads the mapping list instead of the detail.
    clock.advance(31)
    kivicare.requests.clear()
    runtime.bridge.sync_once()
    assert detail_reads(kivicare) == [] and len(service_list_reads(kivicare)) == 1
    assert AppointmentRow.get_by_id(appointment).data["service_ids"] == [new_service]
