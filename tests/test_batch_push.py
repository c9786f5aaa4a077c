"""Push jobs of one doctor go to Google in batch requests (issue 7), against the two real sandboxes.

A worker that claims a ``push`` job also claims up to ``google.batch_size - 1`` more of the same
connection and sends their writes in one ``POST /batch/calendar/v3`` (the Calendar batch guide); each job
is still prepared, recorded and retried on its own. The sandbox logs the batch HTTP request once and
each call in it with ``batch: True``, so HTTP requests and API calls are counted apart.
"""

from __future__ import annotations

import math
import signal
from collections import Counter

from sidecar.calendars.google import batch_uri_for, event_id_for
from sidecar.storage.models import Connection, Job, MeetMapping, PendingWrite, utcnow

from .conftest import ANNA, MEET, ONLINE_FOLLOW_UP, connect, sandbox_settings
from .test_crash_recovery import run_sync_once, sidecar_env
from .test_sync_engine import GENERAL, at, mapping_id, our_events

BATCH = "/batch/calendar/v3"


def book(runtime, kivicare, n: int, *, every_third_online: bool = False, day: int = 5) -> list[str]:
    """``n`` appointments for Anna on ``day`` (every third one telemedicine when asked)."""
    general = mapping_id(runtime, ANNA, GENERAL)
    online = mapping_id(runtime, ANNA, ONLINE_FOLLOW_UP) if every_third_online else general
    return [kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(day + k // 12, 7 + k % 12, 10),
                                        service_mapping_ids=[online if k % 3 == 0 else general])
            for k in range(n)]


def batch_requests(google) -> list[dict]:
    return [r for r in google.requests if r["path"] == BATCH]


def single_writes(google) -> list[dict]:
    """Event inserts/patches sent on their own, not inside a batch."""
    return [r for r in google.requests if r["path"].startswith("/calendar/v3/") and r["method"] in ("POST", "PATCH")
            and "/events" in r["path"] and not r["path"].endswith("/watch") and not r.get("batch")]


def per_appointment(google, calendar_id: str) -> Counter:
    return Counter(e["extendedProperties"]["private"]["kcAppointmentId"] for e in our_events(google, calendar_id))


def make_due_now() -> None:
    Job.update(run_after=utcnow()).where(Job.state == "pending").execute()


def claim_order(connection_id: int) -> list[str]:
    """Appointment ids of the due push jobs in the order a worker claims them (oldest first)."""
    due = Job.select().where((Job.kind == "push") & (Job.state == "pending")
                             & Job.dedupe_key.endswith(f":{connection_id}")).order_by(Job.run_after, Job.id)
    return [job.payload["appointment_id"] for job in due]


def queued(make_runtime, kivicare, google, count: int):
    """Anna connected and synced (her seeded appointments first, so the next batch holds only ours), then
    ``count`` appointments booked on day 9 and polled: their pushes queued, batches of 10.
    Returns ``(runtime, anna, appointment ids)``."""
    runtime = make_runtime(**{"google.batch_size": 10})
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    created = book(runtime, kivicare, count, day=9)
    runtime.bridge.poll()
    return runtime, anna, created


def test_thirty_appointments_sync_in_batches_with_meet(make_runtime, kivicare, google):
    google.conference_pending_reads = 0  # Meet ready in the insert answer (issue 7, scenario a)
    runtime = make_runtime(**MEET, **{"google.batch_size": 10})
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # Anna's seeded appointments first
    created = book(runtime, kivicare, 30, every_third_online=True)
    google.reset_requests()
    runtime.bridge.sync_once()

    counts = per_appointment(google, anna.calendar_id)
    assert set(created) <= set(counts) and all(counts[a] == 1 for a in created)
    # The inserts in ceil(30/10) batches, the Meet links of the ten online ones in one more.
    assert len(batch_requests(google)) <= 1 + math.ceil(30 / 10)
    assert not single_writes(google)
    inner = [r for r in google.requests if r.get("batch")]
    assert len([r for r in inner if r["method"] == "POST"]) >= 30  # one call per insert, counted as such
    online = created[::3]
    for appointment_id in created:
        mapping = MeetMapping.get(MeetMapping.appointment_id == appointment_id)
        assert mapping.state == "active"
        if appointment_id in online:
            assert mapping.conference_status == "success" and mapping.hangout_link.startswith("https://meet.")
            event = our_events(google, anna.calendar_id, appointment_id)[0]
            assert event["hangoutLink"] == mapping.hangout_link
        else:
            assert mapping.hangout_link == ""
    assert PendingWrite.select().count() == 0
    assert Connection.get_by_id(anna.id).failed_count == 0


def test_default_batch_size_sends_thirty_inserts_in_one_request(runtime, kivicare, google):
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    created = book(runtime, kivicare, 30)
    google.reset_requests()
    runtime.bridge.sync_once()
    assert len(batch_requests(google)) <= 1 + math.ceil(30 / 50)
    assert batch_requests(google)[0]["calls"] >= 30  # Anna's seeded appointments come along
    assert all(per_appointment(google, anna.calendar_id)[a] == 1 for a in created)


def test_an_existing_event_and_a_refused_call_are_handled_per_job(make_runtime, kivicare, google):
    runtime, anna, created = queued(make_runtime, kivicare, google, 6)
    order = claim_order(anna.id)
    assert sorted(order) == sorted(created)
    # An earlier try already created the event of the second call (its answer never reached us): 409.
    taken = event_id_for(runtime.bridge.site, order[1], anna.calendar_id)
    google.user_insert(anna.calendar_id, {"id": taken, "summary": "earlier try",
                                          "start": {"dateTime": at(9, 8, 10).isoformat()},
                                          "end": {"dateTime": at(9, 8, 40).isoformat()}})
    google.reset_requests()
    google.fail_next(1, 400, "invalid")  # the first call of the batch is refused for good
    runtime.bridge.run_due_jobs()

    batches = batch_requests(google)
    assert len(batches) == 1 and batches[0]["calls"] == 6
    mapped = {m.appointment_id for m in MeetMapping.select().where(MeetMapping.appointment_id.in_(created))}
    assert mapped == set(order[1:])  # the 409 was patched (one event, ours now); four were fine
    assert google.event(anna.calendar_id, taken)["summary"] != "earlier try"
    refused = Job.get(Job.dedupe_key == f"push:{order[0]}:{anna.id}")
    assert (refused.state, refused.attempts) == ("pending", 1) and "400" in refused.last_error
    assert Connection.get_by_id(anna.id).failed_count == 1
    assert PendingWrite.select().where(PendingWrite.appointment_id == order[0]).count() == 1

    make_due_now()
    runtime.bridge.run_due_jobs()
    counts = per_appointment(google, anna.calendar_id)
    assert all(counts[a] == 1 for a in created)
    assert Job.get_by_id(refused.id).state == "done"


def test_a_rate_limited_call_is_retried_later_and_not_counted(make_runtime, kivicare, google):
    runtime, anna, created = queued(make_runtime, kivicare, google, 5)
    first = claim_order(anna.id)[0]
    google.reset_requests()
    # Every call is refused in the batch and in its first resend; in the last of the client's three
    # tries only the first call still is.
    google.fail_next(5 + 5 + 1, 403, "rateLimitExceeded")
    runtime.bridge.run_due_jobs()

    limited = Job.get(Job.dedupe_key == f"push:{first}:{anna.id}")
    assert limited.state == "pending" and limited.attempts == 0 and "rate limited" in limited.last_error
    assert limited.run_after > utcnow()
    assert Connection.get_by_id(anna.id).failed_count == 0
    assert all(per_appointment(google, anna.calendar_id)[a] == 1 for a in created if a != first)
    assert first not in per_appointment(google, anna.calendar_id)
    assert [b["calls"] for b in batch_requests(google)] == [5, 5, 5]  # the refused calls are sent again

    make_due_now()
    runtime.bridge.run_due_jobs()
    assert per_appointment(google, anna.calendar_id)[first] == 1
    assert Job.get_by_id(limited.id).state == "done"


def test_lost_batch_answers_leave_pending_writes_the_next_run_resolves(make_runtime, kivicare, google):
    runtime, anna, created = queued(make_runtime, kivicare, google, 6)
    # Every try of the batch is carried out and its answer lost (httplib2 resends once: 2 per try, 3 tries).
    google.lose_answers(6, "POST")
    runtime.bridge.run_due_jobs()

    assert all(per_appointment(google, anna.calendar_id)[a] == 1 for a in created)  # they landed
    assert not MeetMapping.select().where(MeetMapping.appointment_id.in_(created)).exists()
    pending = {p.appointment_id for p in PendingWrite.select()}
    assert pending == set(created)  # committed before the batch was sent
    assert Connection.get_by_id(anna.id).failed_count == 0  # an outage, not a failure

    google.lose_answers(0)
    make_due_now()
    runtime.bridge.run_due_jobs()
    counts = per_appointment(google, anna.calendar_id)
    assert all(counts[a] == 1 for a in created), counts  # 409 → patch, never a second event
    assert {m.appointment_id for m in MeetMapping.select().where(MeetMapping.appointment_id.in_(created))} \
        == set(created)
    assert PendingWrite.select().count() == 0


def test_sigkill_during_a_batch_leaves_pending_writes_for_every_call(runtime, kivicare, google, tmp_path):
    connection = connect(runtime, google, ANNA)
    created = book(runtime, kivicare, 4, day=7)
    env = sidecar_env(sandbox_settings(kivicare, google, tmp_path, **{"google.batch_size": 50}), tmp_path)

    first = run_sync_once(env)
    google.kill_on_insert(first.pid)  # killed right after the batch's first insert is stored
    output = first.communicate(timeout=60)[0].decode()
    assert first.returncode == -signal.SIGKILL, output
    # Google carries out the whole batch; we recorded every write before sending it, and none since.
    assert all(per_appointment(google, connection.calendar_id)[a] == 1 for a in created)
    assert MeetMapping.select().count() == 0
    assert set(created) <= {p.appointment_id for p in PendingWrite.select()}

    second = run_sync_once(env)
    output = second.communicate(timeout=120)[0].decode()
    assert second.returncode == 0, output
    counts = per_appointment(google, connection.calendar_id)
    assert all(n == 1 for n in counts.values()), counts
    assert set(created) <= set(counts)
    assert PendingWrite.select().count() == 0


def test_batch_size_one_sends_each_write_on_its_own(make_runtime, kivicare, google):
    runtime = make_runtime(**{"google.batch_size": 1})
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    created = book(runtime, kivicare, 5)
    google.reset_requests()
    runtime.bridge.sync_once()
    assert not batch_requests(google) and not [r for r in google.requests if r.get("batch")]
    assert all(per_appointment(google, anna.calendar_id)[a] == 1 for a in created)
    assert len(single_writes(google)) >= 5


def test_only_the_calls_that_met_an_outage_are_sent_again(make_runtime, kivicare, google):
    runtime, anna, created = queued(make_runtime, kivicare, google, 5)
    google.reset_requests()
    google.fail_next(1, 503, "backendError")
    runtime.bridge.run_due_jobs()
    assert [b["calls"] for b in batch_requests(google)] == [5, 1]
    assert all(per_appointment(google, anna.calendar_id)[a] == 1 for a in created)
    assert Connection.get_by_id(anna.id).failed_count == 0
    assert not Job.select().where((Job.kind == "push") & (Job.state != "done")).exists()


def test_the_batch_endpoint_follows_the_api_endpoint():
    assert batch_uri_for("https://www.googleapis.com/calendar/v3/") == "https://www.googleapis.com/batch/calendar/v3"
    assert batch_uri_for("https://www.googleapis.com/") == "https://www.googleapis.com/batch/calendar/v3"
    assert batch_uri_for("http://127.0.0.1:8089/calendar/v3/") == "http://127.0.0.1:8089/batch/calendar/v3"
