"""Google writes whose answer never came back (soak findings 3 and 4), in process, with the sandboxes.

``GoogleSandbox.lose_answers`` carries a request out and then resets the connection, as a lost answer
does in the soak (``reset_after``); the client's own retries then meet 409 (insert) or 412 (patch),
whose answers are lost as well, so the push job ends as an outage and waits. Meanwhile:

* the appointment is cancelled or deleted in KiviCare: the event Google did create must not stay
  behind (DESIGN invariant 1, one event per appointment, and no orphans);
* a pull (e.g. after a push notification) reads our own write before its etag is recorded: it must
  not be taken for the doctor's move (invariant 4): no spurious conflict under ``manual``, and no
  newer reschedule of KiviCare's lost under ``google`` or ``recent``.
"""

from __future__ import annotations

import pytest

from sidecar.storage.models import Conflict, Job, MeetMapping, PendingWrite

from ..conftest import ANNA, connect
from ..test_sync_engine import GENERAL, at, instant, mapping_id, our_events

SECRET = "test-companion-secret-0123456789abcdef"


def setup(make_runtime, google, kivicare, **settings):
    runtime = make_runtime(**settings)
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # the seeded appointments first, so only the test's own push is due below
    return runtime, connection


def book(runtime, kivicare, start):
    return kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=start,
                                       service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])


def push_with_lost_answers(runtime, google, method: str, appointment_id: str) -> Job:
    """Run the due push with every answer of ``method`` lost (the call and the client's retries: tenacity's
    three tries, each sent twice by httplib2 when the connection drops)."""
    google.lose_answers(6, method)
    runtime.bridge.run_due_jobs()
    google.lose_answers(0)
    job = Job.get(Job.dedupe_key.startswith(f"push:{appointment_id}:"))
    assert job.state == "pending" and job.attempts == 0, (job.state, job.last_error)  # an outage: not a try
    return job


@pytest.mark.parametrize("change", ["cancel", "delete", "none"])
def test_an_insert_whose_answer_was_lost_leaves_no_orphan(make_runtime, kivicare, google, change):
    runtime, connection = setup(make_runtime, google, kivicare)
    appointment_id = book(runtime, kivicare, at(3, 9, 10))
    runtime.bridge.poll()
    push_with_lost_answers(runtime, google, "POST", appointment_id)
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1  # created in Google...
    assert not MeetMapping.select().where(MeetMapping.appointment_id == appointment_id).exists()  # unseen

    if change == "cancel":
        kivicare.set_status(appointment_id, 0)
    elif change == "delete":
        kivicare.delete_appointment(appointment_id)
    runtime.bridge.sync_once()

    live = our_events(google, connection.calendar_id, appointment_id)
    if change == "none":  # the retry finds the event (409) and adopts it: still exactly one
        assert len(live) == 1
        assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).event_id == live[0]["id"]
    else:
        assert live == []
    assert PendingWrite.select().count() == 0
    assert Job.select().where(Job.state != "done").count() == 0


@pytest.mark.parametrize("rule", ["manual", "google", "recent", "kivicare"])
def test_our_own_patch_read_back_before_its_answer_is_not_the_doctors_move(make_runtime, kivicare, google, rule):
    kivicare.install_companion(SECRET)  # so a doctor's move would be applied in KiviCare
    runtime, connection = setup(make_runtime, google, kivicare,
                                **{"sync.conflict_rule": rule, "companion.secret": SECRET})
    appointment_id = book(runtime, kivicare, at(4, 8, 10))
    runtime.bridge.sync_once()
    kivicare.reschedule(appointment_id, at(4, 9, 10))  # staff move it...
    runtime.bridge.poll()
    google.advance(1)
    push_with_lost_answers(runtime, google, "PATCH", appointment_id)  # ...our patch lands, its answer is lost
    assert instant(our_events(google, connection.calendar_id, appointment_id)[0]["start"]["dateTime"]) == at(4, 9, 10)
    kivicare.reschedule(appointment_id, at(4, 10, 10))  # and staff move it again before the retry

    runtime.bridge.pull_all()  # a push notification's pull reads our own write back first
    assert Conflict.select().count() == 0
    assert kivicare.get_appointment(appointment_id)["start_utc"] == at(4, 10, 10)  # the newer move stands

    runtime.bridge.sync_once()
    events = our_events(google, connection.calendar_id, appointment_id)
    assert len(events) == 1 and instant(events[0]["start"]["dateTime"]) == at(4, 10, 10)
    assert kivicare.get_appointment(appointment_id)["start_utc"] == at(4, 10, 10)
    assert Conflict.select().count() == 0 and PendingWrite.select().count() == 0
    assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).etag == events[0]["etag"]


def test_our_own_patch_met_as_a_412_on_the_retry_is_recognised(make_runtime, kivicare, google):
    """No pull in between: the retry's If-Match fails on our own landed write; the re-read must see it as
    ours and the push go through, without a conflict."""
    runtime, connection = setup(make_runtime, google, kivicare, **{"sync.conflict_rule": "manual"})
    appointment_id = book(runtime, kivicare, at(5, 8, 10))
    runtime.bridge.sync_once()
    kivicare.reschedule(appointment_id, at(5, 9, 10))
    runtime.bridge.poll()
    push_with_lost_answers(runtime, google, "PATCH", appointment_id)
    kivicare.set_status(appointment_id, 2)  # pending: the retry has something new to write
    runtime.bridge.poll()
    runtime.bridge.run_due_jobs()
    events = our_events(google, connection.calendar_id, appointment_id)
    assert len(events) == 1 and events[0]["status"] == "tentative"
    assert instant(events[0]["start"]["dateTime"]) == at(5, 9, 10)
    assert Conflict.select().count() == 0 and PendingWrite.select().count() == 0


def test_our_own_deletion_read_back_before_its_answer_does_not_cancel(make_runtime, kivicare, google):
    """Staff cancel, our deletion lands but its answer is lost, staff re-book. A pull that reads the
    tombstone before the deletion is recorded must not take it for the doctor's deletion (which would
    cancel the appointment, or leave it without an event)."""
    runtime, connection = setup(make_runtime, google, kivicare, **{"sync.conflict_rule": "google"})
    appointment_id = book(runtime, kivicare, at(6, 8, 10))
    runtime.bridge.sync_once()
    kivicare.set_status(appointment_id, 0)  # cancelled: the event goes
    runtime.bridge.poll()
    google.lose_answers(6, "DELETE")
    runtime.bridge.run_due_jobs()
    google.lose_answers(0)
    assert our_events(google, connection.calendar_id, appointment_id) == []
    assert MeetMapping.get(MeetMapping.appointment_id == appointment_id).state == "active"  # not recorded yet
    kivicare.set_status(appointment_id, 1)  # re-booked before the retry

    runtime.bridge.pull_all()
    assert kivicare.get_appointment(appointment_id)["status"] == 1
    runtime.bridge.sync_once()
    assert kivicare.get_appointment(appointment_id)["status"] == 1
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1
    assert Conflict.select().count() == 0
