"""Near and far KiviCare windows (issue 7): the near window is listed every poll, the far one only every
``bridge.far_poll_seconds``, and nothing outside the part listed is ever taken for deleted.

Real sandboxes on loopback, a real SQLite file; KiviCare's cost is counted with the sandbox's ``requests``
list. Time is moved with the Bridge's injectable clock (``Bridge.clock``), never by patching our code.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from sidecar.storage.models import Appointment as AppointmentRow, Conflict, Job, MeetMapping
from wp_bridge.bridge import BACKLOG_LONGEST_WAIT, BACKLOG_PUT_OFF
from wp_bridge.kivicare import KiviCareError

from .conftest import ANNA, connect
from .test_sync_engine import GENERAL, at, instant, mapping_id, our_events, writes

NEAR_DAYS, FAR_SECONDS = 14, 600


class Clock:
    """A UTC clock the test moves by hand (``Bridge.clock``)."""

    def __init__(self):
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def listings(kivicare) -> list[dict]:
    """The ``GET /appointments`` (list) requests KiviCare received."""
    return [r for r in kivicare.requests if r["method"] == "GET" and r["path"].endswith("/kivicare/v1/appointments")]


def detail_reads(kivicare) -> list[dict]:
    return [r for r in kivicare.requests if r["method"] == "GET" and "/kivicare/v1/appointments/" in r["path"]]


def listed_spans(kivicare) -> list[tuple[str, str]]:
    """``(date_from, date_to)`` of each list request."""
    return [(r["query"]["date_from"], r["query"]["date_to"]) for r in listings(kivicare)]


def days(first, last) -> tuple[str, str]:
    return first.isoformat(), last.isoformat()


@pytest.fixture
def setup(make_runtime, kivicare, google):
    """A runtime with Anna connected and synced once (both windows); the Bridge on a hand-moved clock."""
    runtime = make_runtime(**{"bridge.near_days": NEAR_DAYS, "bridge.far_poll_seconds": FAR_SECONDS})
    clock = Clock()
    runtime.bridge.clock = clock
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    return runtime, connection, clock


def book(runtime, kivicare, start: datetime) -> str:
    return kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=start,
                                       service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])


def settle(runtime) -> None:
    """Run the jobs a poll queued, as the workers would."""
    for _ in range(10):
        if not runtime.bridge.run_due_jobs():
            break


# ---- the windows -------------------------------------------------------------------------------------------

def test_windows_are_consecutive_half_open_utc_days_clamped_to_the_horizon(make_runtime):
    runtime = make_runtime(**{"bridge.near_days": NEAR_DAYS, "bridge.horizon_days": 90})
    clock = Clock()
    runtime.bridge.clock = clock
    today = clock.now.date()
    midnight = lambda d: datetime(d.year, d.month, d.day, tzinfo=timezone.utc)  # noqa: E731
    near, far = runtime.bridge.poll_windows()
    assert near.start == midnight(today - timedelta(days=1))
    assert near.end == far.start == midnight(today + timedelta(days=NEAR_DAYS + 1))  # no gap, no overlap
    assert far.end == midnight(today + timedelta(days=91))
    assert (near.first_day, near.last_day) == (today - timedelta(days=1), today + timedelta(days=NEAR_DAYS))
    assert far.first_day == near.last_day + timedelta(days=1)
    assert near.end - timedelta(microseconds=1) in near and near.end not in near and near.end in far
    # The boundaries move with the UTC day.
    clock.advance(86400)
    moved_near, moved_far = runtime.bridge.poll_windows()
    assert moved_near.end == near.end + timedelta(days=1) and moved_far.end == far.end + timedelta(days=1)

    small = make_runtime(**{"bridge.near_days": 0})
    assert small.bridge.near_days() == 1 and small.bridge.poll_windows()[0].last_day == today + timedelta(days=1)
    wide = make_runtime(**{"bridge.near_days": 500, "bridge.horizon_days": 30})
    wide_near, wide_far = wide.bridge.poll_windows()
    assert wide_far is None and wide_near.last_day == today + timedelta(days=30)
    with pytest.raises(ValueError):
        runtime.bridge.poll("sometimes")


def test_the_boundary_appointment_belongs_to_exactly_one_window(setup, kivicare):
    runtime, _, clock = setup
    near, far = runtime.bridge.poll_windows()
    last_near = book(runtime, kivicare, near.end - timedelta(minutes=1))  # 23:59 on the near window's last day
    first_far = book(runtime, kivicare, far.start)  # 00:00 on the far window's first day
    kivicare.reset_requests()
    report = runtime.bridge.poll("near")
    assert report.windows == ("near",)
    assert listed_spans(kivicare) == \
        [days(near.first_day, near.last_day)]
    assert AppointmentRow.get_or_none(AppointmentRow.id == last_near) is not None
    assert AppointmentRow.get_or_none(AppointmentRow.id == first_far) is None
    kivicare.reset_requests()
    assert runtime.bridge.poll("far").windows == ("far",)
    assert listed_spans(kivicare) == \
        [days(far.first_day, far.last_day)]
    assert AppointmentRow.get(AppointmentRow.id == first_far).start_utc == far.start


# ---- cost -----------------------------------------------------------------------------------------------------

def test_an_idle_near_poll_is_one_kivicare_request_for_the_near_window_and_no_google_write(setup, kivicare, google):
    runtime, _, clock = setup
    book(runtime, kivicare, at(3, 8, 10))
    book(runtime, kivicare, at(40, 8, 10))
    runtime.bridge.sync_once()
    clock.advance(30)
    kivicare.reset_requests()
    google.reset_requests()
    report = runtime.bridge.poll("due")
    settle(runtime)
    near, _ = runtime.bridge.poll_windows()
    assert report.windows == ("near",) and report.enqueued == 0 and report.fetched == 0
    assert len(kivicare.requests) == 1  # the list, and nothing else
    assert listed_spans(kivicare) == \
        [days(near.first_day, near.last_day)]
    assert writes(google) == []


def test_the_far_window_is_listed_at_start_and_then_only_when_its_interval_has_passed(setup, kivicare):
    runtime, _, clock = setup
    near, far = runtime.bridge.poll_windows()
    kivicare.reset_requests()
    assert runtime.bridge.poll("due").windows == ("near", "far")  # the first poll after start: both
    # Near first, then far: the next days never wait behind the far rows.
    assert listed_spans(kivicare) == \
        [days(near.first_day, near.last_day), days(far.first_day, far.last_day)]
    clock.advance(FAR_SECONDS - 1)
    assert runtime.bridge.poll("due").windows == ("near",)
    clock.advance(1)
    assert runtime.bridge.poll("due").windows == ("near", "far")
    clock.advance(30)
    assert runtime.bridge.poll("due").windows == ("near",)
    # A requested poll (a connect, a settings change) reads both and restarts the far interval.
    clock.advance(FAR_SECONDS - 60)
    assert runtime.bridge.poll().windows == ("near", "far")
    clock.advance(90)
    assert runtime.bridge.poll("due").windows == ("near",)
    # A clock that went backwards does not postpone the far window forever.
    clock.advance(-3600)
    assert runtime.bridge.poll("due").windows == ("near", "far")


def test_a_timed_poll_waits_while_a_large_backlog_of_pushes_is_written_but_at_most_a_minute(setup, kivicare):
    runtime, _, clock = setup
    bridge = runtime.bridge
    bridge.poll("due")
    # A first sync of thousands: more pushes due than BACKLOG_PUT_OFF (for another doctor: never run here).
    due = datetime.now(timezone.utc) - timedelta(seconds=1)
    Job.insert_many([dict(kind="push", dedupe_key=f"push:{900000 + n}:999", payload={}, run_after=due,
                          created_at=due, updated_at=due) for n in range(BACKLOG_PUT_OFF + 1)]).execute()
    clock.advance(5)
    kivicare.reset_requests()
    report = bridge.poll("due")
    assert report.put_off == BACKLOG_PUT_OFF + 1 and report.windows == () and listings(kivicare) == []
    # A requested poll (a connect, a settings change) is never put off.
    assert bridge.poll().windows == ("near", "far") and len(listings(kivicare)) == 2
    clock.advance(BACKLOG_LONGEST_WAIT.total_seconds() - 1)
    assert bridge.poll("due").put_off and len(listings(kivicare)) == 2
    clock.advance(1)  # a minute since the last poll began: listed whatever waits
    assert bridge.poll("due").windows == ("near",) and len(listings(kivicare)) == 3
    # Once the backlog is written, polls run on time again.
    clock.advance(5)
    assert bridge.poll("due").put_off
    Job.update(state="done").where(Job.dedupe_key.endswith(":999")).execute()
    assert bridge.poll("due").windows == ("near",) and len(listings(kivicare)) == 4


# ---- correctness -----------------------------------------------------------------------------------------

def test_a_far_deletion_is_found_by_the_far_poll_not_taken_as_missing_by_the_near_one(setup, kivicare, google):
    runtime, connection, clock = setup
    far_id = book(runtime, kivicare, at(30, 9, 10))
    runtime.bridge.sync_once()
    assert len(our_events(google, connection.calendar_id, far_id)) == 1
    kivicare.delete_appointment(far_id)
    clock.advance(30)
    kivicare.reset_requests()
    report = runtime.bridge.poll("due")
    settle(runtime)
    assert report.windows == ("near",) and report.missing_checked == 0 and report.deleted == 0
    assert detail_reads(kivicare) == []  # not even asked: it was not in the span listed
    assert AppointmentRow.get(AppointmentRow.id == far_id).present
    assert len(our_events(google, connection.calendar_id, far_id)) == 1
    clock.advance(FAR_SECONDS)
    report = runtime.bridge.poll("due")
    settle(runtime)
    assert report.windows == ("near", "far") and report.missing_checked == 1 and report.deleted == 1
    assert our_events(google, connection.calendar_id, far_id) == []


def test_moves_between_the_windows_keep_one_event_and_delete_nothing(setup, kivicare, google):
    runtime, connection, clock = setup
    going_near = book(runtime, kivicare, at(30, 9, 10))
    going_far = book(runtime, kivicare, at(5, 9, 10))
    runtime.bridge.sync_once()
    event_ids = {i: our_events(google, connection.calendar_id, i)[0]["id"] for i in (going_near, going_far)}
    kivicare.reschedule(going_near, at(6, 11, 10))
    kivicare.reschedule(going_far, at(31, 11, 10))
    google.reset_requests()
    for step in (30, FAR_SECONDS):  # the next near poll, then the next far poll
        clock.advance(step)
        report = runtime.bridge.poll("due")
        settle(runtime)
        assert report.deleted == 0
        for appointment_id, start in ((going_near, at(6, 11, 10)), (going_far, at(31, 11, 10))):
            events = our_events(google, connection.calendar_id, appointment_id)
            assert [e["id"] for e in events] == [event_ids[appointment_id]]
            assert instant(events[0]["start"]["dateTime"]) == start  # already at the near poll
    assert not [r for r in writes(google) if r["method"] == "DELETE"]
    assert MeetMapping.select().where((MeetMapping.appointment_id.in_(list(event_ids)))
                                      & (MeetMapping.state == "active")).count() == 2


def test_the_mass_delete_guard_trips_on_a_mass_deletion_in_the_far_window(setup, kivicare, google):
    runtime, connection, clock = setup
    ids = [book(runtime, kivicare, at(40 + n, 9, 10)) for n in range(4)]
    runtime.bridge.sync_once()
    for appointment_id in ids:
        kivicare.delete_appointment(appointment_id)
    clock.advance(30)
    assert runtime.bridge.poll("due").deleted == 0  # the near poll does not look there
    assert not Conflict.select().where(Conflict.kind == "mass_delete").exists()
    clock.advance(FAR_SECONDS)
    report = runtime.bridge.poll("due")
    settle(runtime)
    assert report.windows == ("near", "far") and report.deleted == 4
    conflict = Conflict.get(Conflict.kind == "mass_delete")
    assert set(ids) <= set(conflict.kivicare["appointments"])
    assert all(len(our_events(google, connection.calendar_id, i)) == 1 for i in ids)  # kept for the admin


def test_a_failed_listing_deletes_nothing_and_the_far_window_stays_due(setup, kivicare, google):
    runtime, connection, clock = setup
    near_id, far_id = book(runtime, kivicare, at(4, 9, 10)), book(runtime, kivicare, at(50, 9, 10))
    runtime.bridge.sync_once()
    kivicare.delete_appointment(near_id)
    kivicare.delete_appointment(far_id)
    kivicare.set_down(True)
    for step in (30, FAR_SECONDS):  # a near-only poll, then a near+far poll, both failing
        clock.advance(step)
        with pytest.raises(KiviCareError):
            runtime.bridge.poll("due")
        settle(runtime)
        assert all(AppointmentRow.get(AppointmentRow.id == i).present for i in (near_id, far_id))
        assert all(len(our_events(google, connection.calendar_id, i)) == 1 for i in (near_id, far_id))
    assert runtime.get_state("poll")["ok"] is False
    assert runtime.bridge.far_due()
    kivicare.set_down(False)
    clock.advance(30)
    report = runtime.bridge.poll("due")
    settle(runtime)
    assert report.windows == ("near", "far") and report.deleted == 2
    assert our_events(google, connection.calendar_id, near_id) == []
    assert our_events(google, connection.calendar_id, far_id) == []


def test_a_hint_reaches_google_for_a_far_appointment_without_waiting_for_the_far_poll(setup, kivicare, google):
    runtime, connection, clock = setup
    runtime.bridge.sync_once()
    far_id = book(runtime, kivicare, at(60, 9, 10))
    clock.advance(30)
    assert runtime.bridge.poll("due").windows == ("near",)
    settle(runtime)
    assert our_events(google, connection.calendar_id, far_id) == []  # the far window waits its turn...
    runtime.bridge.on_hint(far_id, "kc_after_create_appointment")
    settle(runtime)
    events = our_events(google, connection.calendar_id, far_id)
    assert len(events) == 1  # ...but a hint does not
    clock.advance(FAR_SECONDS)
    google.reset_requests()
    report = runtime.bridge.poll("due")
    settle(runtime)
    # The far poll finds the same appointment: the same event, never a second one nor a deletion, and no
    # patch either: the clinic address (only list rows carry it) was taken from the clinic's other rows.
    assert report.windows == ("near", "far") and report.deleted == 0
    assert [e["id"] for e in our_events(google, connection.calendar_id, far_id)] == [events[0]["id"]]
    assert writes(google) == []


# ---- cost of an idle poll ------------------------------------------------------------------------------------

def _statements(action) -> list[str]:
    """The SQL statements ``action()`` runs (peewee's debug log)."""
    import logging
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("peewee")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        action()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return seen


@pytest.mark.parametrize("extra", [0, 60])
def test_an_idle_poll_writes_nothing_and_reads_in_a_fixed_number_of_queries(setup, kivicare, google, extra):
    """Issue 7: rows KiviCare lists unchanged are neither written again nor looked up one by one; the
    poll's reads are a fixed number of queries whatever the number of appointments (up to 500 ids each)."""
    runtime, connection, clock = setup
    for n in range(extra):
        book(runtime, kivicare, at(1 + n % 10, 7 + n // 10, 10))
    runtime.bridge.sync_once()
    clock.advance(30)
    statements = _statements(lambda: runtime.bridge.poll("all"))
    writes_sql = [s for s in statements if s.lstrip("('\"").split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    # The connections' "last sync" time and the loop's "last poll" state are the only writes of an idle poll.
    assert len(writes_sql) <= 2, writes_sql
    # Two listings (near, then far), a fixed number each (one asks whether the span is known: a first sync
    # lists its first page in small pages).
    assert len(statements) <= 26, len(statements)


def test_a_poll_while_the_first_pushes_wait_does_not_ask_for_each_again(setup, kivicare, google):
    """Issue 7: during a long first sync the next polls list the same rows while their pushes still wait.
    Each waiting push is read once per poll (with the others) and not enqueued again: no write, no lock."""
    from sidecar.storage.models import Job
    runtime, connection, clock = setup
    for n in range(60):
        book(runtime, kivicare, at(1 + n % 10, 7 + n // 10, 10))
    assert runtime.bridge.poll("all").enqueued >= 60  # queued, not run
    clock.advance(30)
    generations = {job.dedupe_key: job.generation for job in Job.select()}
    statements = _statements(lambda: runtime.bridge.poll("all"))
    job_writes = [s for s in statements if s.split(None, 1)[0].upper() in ("INSERT", "UPDATE")
                  and '"jobs"' in s.split("WHERE")[0]]
    assert job_writes == []
    assert len(statements) <= 26, len(statements)  # near and far, a fixed number each
    assert {job.dedupe_key: job.generation for job in Job.select()} == generations
    settle(runtime)
    assert len([e for e in google.events(connection.calendar_id) if e.get("status") != "cancelled"]) >= 60


def test_a_quiet_row_is_planned_again_when_anything_its_event_depends_on_changes(setup, kivicare, google):
    """Issue 7: an unchanged row found in sync is not parsed, decided and hashed again on every poll; but a
    new setting, or its mapping changed behind the poll's back, makes it planned (and pushed) again."""
    runtime, connection, clock = setup
    booked = [book(runtime, kivicare, at(2 + n, 9, 10)) for n in range(3)]
    runtime.bridge.sync_once()
    settle(runtime)
    for _ in range(2):  # the second poll plans nothing it planned before from the same inputs
        clock.advance(30)
        assert runtime.bridge.poll("all").enqueued == 0
    runtime.cfg.set("sync.title_template", "Visit: {{service_name}}")
    clock.advance(30)
    assert runtime.bridge.poll("all").enqueued >= 3
    settle(runtime)
    assert all(e["summary"].startswith("Visit: ") for a in booked for e in our_events(google, connection.calendar_id, a))
    clock.advance(30)
    assert runtime.bridge.poll("all").enqueued == 0
    MeetMapping.update(pushed_hash="").where(MeetMapping.appointment_id == booked[0]).execute()
    clock.advance(30)
    assert runtime.bridge.poll("all").enqueued == 1


# ---- an older list never undoes a newer state ----------------------------------------------------------

@pytest.mark.parametrize("change", ["cancel", "delete"])
def test_a_list_older_than_a_hints_fetch_does_not_undo_it(setup, kivicare, google, change):
    """A poll's list is answered, then held on the wire (1 s per row listed); meanwhile staff cancel (or
    delete) the appointment and the companion's hint is fetched. The poll then plans its older rows: it must
    neither write the old state back nor keep the event (found by the churn benchmark, issue 7)."""
    import threading
    runtime, connection, clock = setup
    appointment_id = book(runtime, kivicare, at(3, 9, 10))
    runtime.bridge.sync_once()
    settle(runtime)
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1
    kivicare.latency_per_row = 0.2  # the list is computed at once, answered seconds later
    try:
        clock.advance(30)
        poll = threading.Thread(target=runtime.bridge.poll, args=("near",))
        poll.start()
        time.sleep(0.5)  # the list has been computed with the appointment still booked
        if change == "cancel":
            kivicare.set_status(appointment_id, 0)
        else:
            kivicare.delete_appointment(appointment_id)
        runtime.bridge.on_hint(appointment_id, "kc_after_update_appointment")
        settle(runtime)
        assert poll.is_alive()  # the older list is still on its way
        poll.join(timeout=60)
    finally:
        kivicare.latency_per_row = 0.0
    settle(runtime)
    assert our_events(google, connection.calendar_id, appointment_id) == []
    row = AppointmentRow.get_by_id(appointment_id)
    assert (row.status == 0) if change == "cancel" else (not row.present)


def test_rows_missing_from_a_list_are_confirmed_a_few_at_once(setup, kivicare, google):
    """Issue 7, scenario b: each row a list no longer shows is confirmed with ``GET /appointments/{id}``
    before anything is deleted (DESIGN invariant 3); four at once, so deletions do not wait in line."""
    runtime, connection, clock = setup
    gone = [book(runtime, kivicare, at(2 + n, 9, 10)) for n in range(4)]
    runtime.bridge.sync_once()
    settle(runtime)
    for appointment_id in gone:
        kivicare.delete_appointment(appointment_id)
    kivicare.latency = 0.6
    try:
        clock.advance(30)
        began = time.monotonic()
        report = runtime.bridge.poll("near")
        took = time.monotonic() - began
    finally:
        kivicare.latency = 0.0
    assert report.missing_checked == 4 and report.deleted == 4
    # The list, the doctor's check and the four confirmations; one by one the confirmations alone take 2.4 s.
    assert took < 0.6 * 4 + 0.6 * 2, took
