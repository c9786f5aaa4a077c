"""Rate limits, quotas, poison jobs and Meet failures (issue 6 item 1; NOTES.md section E #8, #9)."""

import time
from datetime import datetime, timedelta, timezone

from sidecar.calendars.ratelimit import TokenBucket
from sidecar.storage.models import Job, MeetMapping, SyncLog

from .conftest import ANNA, MEET, ONLINE_FOLLOW_UP, connect
from .test_sync_engine import GENERAL, at, mapping_id, our_events


def make_due():
    Job.update(run_after=datetime.now(timezone.utc)).where(Job.state == "pending").execute()


def test_rate_limits_back_off_and_do_not_count_as_tries(runtime, kivicare, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 8, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.poll()
    google.fail_next(4, 403, "rateLimitExceeded")
    runtime.bridge.run_due_jobs()
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{connection.id}")
    assert job.attempts == 0
    make_due()
    runtime.bridge.run_due_jobs()
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1


def test_quota_exceeded_pauses_long_without_hammering(runtime, kivicare, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 9, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.poll()
    google.reset_requests()
    google.fail_next(1, 403, "quotaExceeded")
    runtime.bridge.run_due_jobs(limit=1)
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{connection.id}")
    assert job.attempts == 0 and job.run_after > datetime.now(timezone.utc) + timedelta(minutes=50)
    inserts = [r for r in google.requests if r["method"] == "POST" and r["path"].endswith("/events")]
    assert len(inserts) == 1  # no retry inside the call either


def test_a_poison_job_gives_up_after_bounded_tries_and_is_shown(runtime, kivicare, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # the seeded appointments first, so only the poisoned job is left
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 10, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.poll()
    google.fail_next(5, 400, "invalid")  # a permanent refusal, five times
    for _ in range(6):
        make_due()
        runtime.bridge.run_due_jobs()
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{connection.id}")
    assert job.state == "failed" and job.attempts == 5
    assert SyncLog.select().where((SyncLog.appointment_id == appointment_id) & (SyncLog.outcome == "error")
                                  & SyncLog.message.contains("Gave up")).exists()
    # The queue is not blocked: a new appointment syncs.
    other = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(3, 14, 10),
                                        service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    assert len(our_events(google, connection.calendar_id, other)) == 1


def test_meet_failure_keeps_the_appointment_and_asks_again(make_runtime, kivicare, google):
    runtime = make_runtime(**MEET)
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    google.conference_outcome("failure")
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(3, 11, 10),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP)])
    runtime.bridge.sync_once()
    mapping = MeetMapping.get(MeetMapping.appointment_id == appointment_id)
    assert mapping.conference_status == "failure" and mapping.hangout_link == ""
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1  # the appointment is there
    google.conference_outcome("success")
    kivicare.reschedule(appointment_id, at(3, 12, 10))  # the next change asks Google again, with a new requestId
    runtime.bridge.sync_once()
    assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).hangout_link.startswith("https://meet")


def test_token_bucket_keeps_under_the_rate():
    bucket = TokenBucket(rate=50, burst=5)
    started = time.monotonic()
    for _ in range(30):
        bucket.acquire()
    assert time.monotonic() - started >= (30 - 5) / 50 * 0.9
