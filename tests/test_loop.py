"""The unattended loop: start checks, polling on its own, waking up when asked."""

import time

from wp_bridge.loop import BridgeLoop

from .conftest import ANNA, MARC, SOFIA, connect
from .test_sync_engine import GENERAL, at, mapping_id, our_events


def wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_loop_syncs_new_appointments_without_being_asked(make_runtime, kivicare, google):
    runtime = make_runtime(**{"bridge.poll_seconds": 1})
    connection = connect(runtime, google, ANNA)
    loop = BridgeLoop(runtime, workers=2)
    loop.start()
    try:
        appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(9, 8, 10),
                                                     service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
        assert wait_for(lambda: len(our_events(google, connection.calendar_id, appointment_id)) == 1)
        assert runtime.get_state("template_imported") is True  # start checks ran
    finally:
        loop.stop()


def test_loop_refuses_to_sync_while_the_google_meet_addon_is_active(runtime, kivicare, google):
    connect(runtime, google, ANNA)
    kivicare.set_addon("googlemeet", True)
    google.reset_requests()
    loop = BridgeLoop(runtime, workers=1)
    loop.start()
    try:
        assert wait_for(lambda: runtime.get_state("refused"))
        assert "Google Meet add-on" in runtime.get_state("refused")
        time.sleep(1)
        assert not [r for r in google.requests if "/events" in r["path"]]
    finally:
        loop.stop()


# ---- log retention ------------------------------------------------------------------------------

def _old_and_new_rows(now):
    from datetime import timedelta

    from sidecar.storage.models import Conflict, Job, OAuthState, OneTimeToken, RejectedRow, SyncLog

    old, recent = now - timedelta(days=100), now - timedelta(days=10)
    for i in range(7):
        SyncLog.create(at=old, action="create", outcome="ok", appointment_id=str(i))
    for i in range(3):
        SyncLog.create(at=recent, action="create", outcome="ok", appointment_id=str(100 + i))
    Conflict.create(kind="both_changed", state="resolved", resolved_at=old, appointment_id="1")
    Conflict.create(kind="both_changed", state="resolved", resolved_at=recent, appointment_id="2")
    Conflict.create(kind="both_changed", state="open", created_at=old, appointment_id="3")  # open: kept
    Job.create(kind="push", dedupe_key="push:1:1", state="done", updated_at=old)
    Job.create(kind="push", dedupe_key="push:2:1", state="pending", updated_at=old)  # still to do: kept
    Job.create(kind="push", dedupe_key="push:3:1", state="failed", updated_at=old)  # shown to the admin: kept
    OneTimeToken.create(token_hash="a" * 64, purpose="connect", expires_at=now - timedelta(hours=1))
    OneTimeToken.create(token_hash="b" * 64, purpose="connect", expires_at=now + timedelta(days=5),
                        used_at=now - timedelta(days=2))
    OneTimeToken.create(token_hash="c" * 64, purpose="connect", expires_at=now + timedelta(days=5),
                        used_at=now - timedelta(minutes=5))  # may still be released if its step fails
    OneTimeToken.create(token_hash="d" * 64, purpose="setup", expires_at=now + timedelta(hours=5))
    OAuthState.create(state="old", code_verifier="x", doctor_id=3, created_at=now - timedelta(hours=1))
    OAuthState.create(state="new", code_verifier="x", doctor_id=3, created_at=now)
    RejectedRow.create(appointment_id="9", row_hash="h", error="bad", last_seen_at=old)


def test_purge_removes_only_what_retention_allows_in_batches(runtime, caplog):
    import logging

    from sidecar.storage.models import Conflict, Job, OAuthState, OneTimeToken, RejectedRow, SyncLog, utcnow
    from wp_bridge.retention import purge

    now = utcnow()
    _old_and_new_rows(now)
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        removed = purge(runtime.cfg, now=now, batch=2, pause=0)
    assert removed == {"sync_log": 7, "conflicts": 1, "jobs": 1, "kc_rejected_rows": 1, "one_time_tokens": 2,
                       "oauth_states": 1, "seen_keys": 0}
    assert SyncLog.select().count() == 3 and Conflict.select().count() == 2 and Job.select().count() == 2
    assert sorted(t.token_hash[0] for t in OneTimeToken.select()) == ["c", "d"]
    assert [s.state for s in OAuthState.select()] == ["new"] and not RejectedRow.select().exists()
    # 7 rows, 2 at a time: four small DELETEs, never one big one.
    deletes = [r for r in caplog.records if str(r.msg).startswith("('DELETE FROM \"sync_log\"")]
    assert len(deletes) == 4
    assert purge(runtime.cfg, now=now, batch=2, pause=0)["sync_log"] == 0  # nothing left to do


def test_a_bad_retention_value_purges_nothing(make_runtime):
    from sidecar.storage.models import SyncLog, utcnow
    from wp_bridge.retention import purge

    make_runtime()  # opens the database
    _old_and_new_rows(utcnow())
    for value in (0, -5, "ninety"):
        runtime = make_runtime(**{"sync.log_retention_days": value})
        assert purge(runtime.cfg) == {}  # never "delete everything" on a bad value
        assert SyncLog.select().count() == 10


def test_loop_purges_at_start_and_then_daily(make_runtime):
    from datetime import timedelta

    from sidecar.storage.models import SyncLog, utcnow

    runtime = make_runtime(**{"sync.log_retention_days": 1, "bridge.poll_seconds": 3600})
    SyncLog.create(at=utcnow() - timedelta(days=2), action="create", outcome="ok")
    kept = SyncLog.create(at=utcnow() - timedelta(hours=2), action="create", outcome="ok")
    loop = BridgeLoop(runtime, workers=1)
    loop.start()
    try:
        assert wait_for(lambda: [r.id for r in SyncLog.select().where(SyncLog.action == "create")] == [kept.id])
        daily = [j for j in loop.scheduler.jobs if j.job_func.func == loop.purge]
        assert len(daily) == 1 and daily[0].unit == "days" and daily[0].interval == 1
    finally:
        loop.stop()


# ---- timing: a slow Google never delays KiviCare polls; doctors are pulled at once ---------------------

def _kivicare_lists(kivicare) -> int:
    return sum(1 for r in kivicare.requests if r["method"] == "GET" and r["path"].endswith("/kivicare/v1/appointments"))


def test_a_slow_google_pull_does_not_delay_the_kivicare_poll(make_runtime, kivicare, google):
    """Issue 7, scenario c: one KiviCare poll per ``poll_seconds`` even when each Google request takes 1.5 s
    (the pull runs in its own thread; before, the poller waited for it and polled about half as often)."""
    runtime = make_runtime(**{"bridge.poll_seconds": 1})
    connect(runtime, google, ANNA)
    connect(runtime, google, MARC)
    loop = BridgeLoop(runtime, workers=1)
    loop.start()
    try:
        assert wait_for(lambda: _kivicare_lists(kivicare) >= 1)
        google.latency = 1.5
        time.sleep(1.5)  # a pull is under way now
        before = _kivicare_lists(kivicare)
        time.sleep(4.2)
        assert _kivicare_lists(kivicare) - before >= 3  # ~4 polls at 1 s
    finally:
        google.latency = 0.0
        loop.stop()


def test_pull_all_reads_several_doctors_at_once(make_runtime, kivicare, google):
    runtime = make_runtime(**{"bridge.pull_concurrency": 3})
    for doctor in (ANNA, MARC, SOFIA):
        connect(runtime, google, doctor)
    runtime.bridge.startup()
    runtime.bridge.pull_all()  # first pulls: full syncs and push channels
    google.latency = 0.5
    try:
        google.reset_requests()
        began = time.monotonic()
        assert runtime.bridge.pull_all() == 3
        took = time.monotonic() - began
        per_doctor = len([r for r in google.requests if "/calendar/v3/" in r["path"]]) / 3
        # Sequentially this is 3 doctors × their requests × 0.5 s; at once, about one doctor's share.
        assert took < 0.5 * per_doctor * 2, (took, per_doctor)
    finally:
        google.latency = 0.0


def test_polls_keep_their_rate_when_a_poll_takes_most_of_the_interval(make_runtime, kivicare, google):
    """Issue 7, scenario c: a list answered in 0.7 s (a large site) still gets one poll per ``poll_seconds``:
    the interval runs from each poll's start, not its end (which gave ~1 poll per 1.7 s)."""
    runtime = make_runtime(**{"bridge.poll_seconds": 1})
    connect(runtime, google, ANNA)
    loop = BridgeLoop(runtime, workers=1)
    loop.start()
    try:
        assert wait_for(lambda: _kivicare_lists(kivicare) >= 1)
        kivicare.latency = 0.7
        time.sleep(1.5)
        before = _kivicare_lists(kivicare)
        time.sleep(6.0)
        assert _kivicare_lists(kivicare) - before >= 5  # ~6 at one per second; end-to-start gave ~3.5
    finally:
        kivicare.latency = 0.0
        loop.stop()


def test_a_stop_is_not_held_up_by_a_long_queue(make_runtime, kivicare, google):
    """A worker finishes the job in hand and claims no other once the loop is stopping: a queue of pushes
    (each 0.3 s at Google, one per request) does not keep the process running until it is empty."""
    from sidecar.storage.models import Job

    runtime = make_runtime(**{"bridge.poll_seconds": 1, "google.batch_size": 1})
    connect(runtime, google, ANNA)
    service = [mapping_id(runtime, ANNA, GENERAL)]
    for n in range(40):
        kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(2 + n % 5, 7 + n // 5, 10),
                                    service_mapping_ids=service)
    google.latency = 0.3
    loop = BridgeLoop(runtime, workers=1)
    loop.start()
    try:
        assert wait_for(lambda: Job.select().where((Job.kind == "push") & (Job.state == "done")).count() >= 2)
    finally:
        began = time.monotonic()
        loop.stop()
        stopped_in = time.monotonic() - began
        google.latency = 0
    assert stopped_in < 3, stopped_in
    assert Job.select().where((Job.kind == "push") & (Job.state == "pending")).count() > 10  # left for next time


def test_a_stop_during_the_start_checks_ends_them_without_a_poll(make_runtime, kivicare, google):
    """Each KiviCare request takes 0.4 s; three doctors are connected. Stopped while the start checks run,
    the loop reads no further doctor and lists nothing: it stops in about one request's time."""
    runtime = make_runtime(**{"bridge.poll_seconds": 1})
    for doctor in (ANNA, MARC, SOFIA):
        connect(runtime, google, doctor)
    kivicare.reset_requests()
    kivicare.latency = 0.4
    loop = BridgeLoop(runtime, workers=1)
    try:
        loop.start()
        time.sleep(0.2)
        began = time.monotonic()
        loop.stop()
        stopped_in = time.monotonic() - began
    finally:
        kivicare.latency = 0.0
    assert stopped_in < 1.5, stopped_in
    assert not [r for r in kivicare.requests if r["path"].endswith("/kivicare/v1/appointments")]
