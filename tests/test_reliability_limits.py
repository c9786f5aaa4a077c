"""Rate limits, quotas, poison jobs and Meet failures (issue 6 item 1; NOTES.md section E #8, #9)."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from sidecar.calendars.ratelimit import TokenBucket
from sidecar.storage.models import Job, MeetMapping, SyncLog
from wp_bridge import jobs
from wp_bridge.bridge import MAX_ATTEMPTS

from .conftest import ANNA, MEET, ONLINE_FOLLOW_UP, connect
from .test_sync_engine import GENERAL, at, mapping_id, our_events

SECRET = "limits-companion-secret-0123456789abcdef"


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


def inserts(google) -> list[dict]:
    return [r for r in google.requests if r["method"] == "POST" and r["path"].endswith("/events")]


def gave_up_alerts(kivicare) -> list[dict]:
    return [m for m in kivicare.companion.mails if m["kind"] == "relay" and "could not be sent" in m["subject"]]


def gave_up_rows(appointment_id: str) -> int:
    return SyncLog.select().where((SyncLog.appointment_id == appointment_id) & (SyncLog.outcome == "error")
                                  & SyncLog.message.contains("Gave up")).count()


def give_up_a_push(runtime, kivicare, google, appointment_id: str, connection) -> Job:
    """Google refuses the appointment's push with a permanent 400 until the job gives up."""
    google.reset_requests()
    google.fail_next(MAX_ATTEMPTS, 400, "invalid")
    for _ in range(MAX_ATTEMPTS + 1):
        make_due()
        runtime.bridge.run_due_jobs()
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{connection.id}")
    assert job.state == "failed" and job.attempts == MAX_ATTEMPTS
    assert len(inserts(google)) == MAX_ATTEMPTS  # bounded: no sixth try
    return job


@pytest.fixture
def poisoned(make_runtime, kivicare, google):
    """Anna connected, alerts e-mailed through the companion plugin, and one new appointment whose insert
    Google refused until the job gave up: ``(runtime, connection, appointment_id)``."""
    kivicare.install_companion(SECRET)
    runtime = make_runtime(**{"companion.secret": SECRET, "alerts.recipients": ["it@clinic.test"]})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # the seeded appointments first, so only the poisoned job is left
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 10, 30),
                                                 service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    assert runtime.bridge.poll().enqueued == 1
    give_up_a_push(runtime, kivicare, google, appointment_id, connection)
    assert len(gave_up_alerts(kivicare)) == 1 and gave_up_rows(appointment_id) == 1
    return runtime, connection, appointment_id


def test_a_given_up_push_stays_failed_until_the_appointment_changes(poisoned, kivicare, google):
    runtime, connection, appointment_id = poisoned
    google.reset_requests()
    for _ in range(3):  # the appointment unchanged: the poll must not bring the poison job back
        assert runtime.bridge.poll().enqueued == 0
        make_due()
        runtime.bridge.run_due_jobs()
    job = Job.get(Job.dedupe_key == f"push:{appointment_id}:{connection.id}")
    assert job.state == "failed" and job.attempts == MAX_ATTEMPTS
    assert google.requests == []  # not one more try
    assert len(gave_up_alerts(kivicare)) == 1 and gave_up_rows(appointment_id) == 1
    # Rescheduled in KiviCare: something changed, so it is tried again (the fault is gone now).
    kivicare.reschedule(appointment_id, at(3, 11, 30))
    assert runtime.bridge.poll().enqueued == 1
    job = Job.get_by_id(job.id)
    assert job.state == "pending" and job.attempts == 0
    runtime.bridge.run_due_jobs()
    assert Job.get_by_id(job.id).state == "done"
    [event] = our_events(google, connection.calendar_id, appointment_id)
    assert datetime.fromisoformat(event["start"]["dateTime"].replace("Z", "+00:00")) == at(3, 11, 30)
    assert len(gave_up_alerts(kivicare)) == 1


@pytest.mark.parametrize("reason", ["hint", "reconnect"])
def test_a_hint_or_a_reconnect_revives_a_given_up_push(reason, poisoned, google):
    runtime, connection, appointment_id = poisoned
    if reason == "hint":  # someone saved the appointment in KiviCare, even without changing it
        runtime.bridge.on_hint(appointment_id, "kc_appointment_update")
    else:
        connect(runtime, google, ANNA)
    make_due()
    runtime.bridge.run_due_jobs()
    assert Job.get(Job.dedupe_key == f"push:{appointment_id}:{connection.id}").state == "done"
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1


def test_a_given_up_push_alerts_once_per_give_up(poisoned, kivicare, google):
    runtime, connection, appointment_id = poisoned
    assert jobs.retry_failed(connection.id) == 1  # an admin's "Retry" (tests/web/test_retry_failed.py)
    give_up_a_push(runtime, kivicare, google, appointment_id, connection)
    assert len(gave_up_alerts(kivicare)) == 2 and gave_up_rows(appointment_id) == 2
    runtime.bridge.poll()
    assert len(gave_up_alerts(kivicare)) == 2


def test_the_queue_revives_a_failed_job_only_for_a_new_change(runtime):
    key = "push:990001:77"
    assert jobs.enqueue("push", key, {"appointment_id": "990001"}, change="v1")
    job = jobs.claim("tests:1")
    Job.update(attempts=MAX_ATTEMPTS - 1).where(Job.id == job.id).execute()
    # A newer version arrives while the last try runs: that version gets tries of its own.
    assert jobs.enqueue("push", key, {"appointment_id": "990001"}, change="v2")
    assert jobs.give_up(job, "HttpError 400") is False
    assert Job.get_by_id(job.id).state == "pending" and Job.get_by_id(job.id).attempts == 0
    job = jobs.claim("tests:1")
    assert jobs.give_up(job, "HttpError 400") is True
    assert jobs.enqueue("push", key, {"appointment_id": "990001"}, change="v2") is False  # the same version
    assert Job.get_by_id(job.id).state == "failed" and Job.get_by_id(job.id).generation == job.generation
    assert jobs.failed_jobs(77) == 1 and jobs.failed_jobs(7) == 0 and jobs.failed_jobs() == 1
    assert jobs.enqueue("push", key, {"appointment_id": "990001"}, change="v3")  # a new version
    assert Job.get_by_id(job.id).state == "pending"
    job = jobs.claim("tests:1")
    jobs.give_up(job, "HttpError 400")
    assert jobs.enqueue("push", key, {"appointment_id": "990001"}, change="v3", revive=True)
    job = jobs.claim("tests:1")
    jobs.give_up(job, "HttpError 400")
    assert jobs.enqueue("push", key, {"appointment_id": "990001"})  # no token: the caller has its own reason
    assert Job.get_by_id(job.id).payload["change"] == "v3"  # kept for the next poll


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


def test_a_connection_s_jobs_are_told_apart_from_jobs_keyed_by_doctor_or_appointment(runtime):
    """``busy:<doctor>``, ``fetch:<appointment>`` and ``meet:<appointment>`` end with a number too: a
    disconnect of connection 7 must not drop doctor 7's busy push or appointment 7's pending hint."""
    from sidecar.storage.models import Job
    from wp_bridge import jobs
    for kind, key in (("push", "push:12:7"), ("conference", "conference:12:7"), ("pull", "pull:7"),
                      ("busy_push", "busy:7"), ("fetch", "fetch:7"), ("meet_link", "meet:7"), ("push", "push:7:8")):
        jobs.enqueue(kind, key, {})
    mine = {j.dedupe_key for j in Job.select().where(jobs.of_connection(7))}
    assert mine == {"push:12:7", "conference:12:7", "pull:7"}
