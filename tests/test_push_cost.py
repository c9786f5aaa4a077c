"""What a pushed event costs the sidecar (issue 7): one shared Calendar service and a connection pool per
thread, one read of each row a push needs, and a batch's counters, log rows and completions written once.

Against the two real sandboxes and a real SQLite file; SQL statements are counted with sqlite3's own
trace callback, so the figures are the statements the database really ran.
"""

from __future__ import annotations

import threading

from sidecar.storage import database
from sidecar.storage.models import Connection, Job, MeetMapping, PendingWrite, SyncLog, utcnow
from wp_bridge import jobs

from .conftest import ANNA, EMAILS, MARC, connect
from .test_batch_push import book, make_due_now
from .test_sync_engine import our_events

# BEGIN and COMMIT included. Per new event: the pending write; the mapping recorded and the pending write
# cleared in one transaction. Per batch: reads of its appointments, mappings, pending writes and open
# conflicts (PushReads.load), the claim, counters, log rows and completions. Measured 6.7 for 30 new events
# (10.6 with each push reading its own rows, 20.4 before this work).
STATEMENTS_PER_BATCHED_PUSH = 7


def test_a_batch_of_pushes_runs_few_statements_and_records_every_outcome(make_runtime, kivicare, google):
    runtime = make_runtime(**{"google.batch_size": 50})
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # Anna's seeded appointments first
    created = book(runtime, kivicare, 30, day=6)
    runtime.bridge.poll()
    make_due_now()
    before = Connection.get_by_id(anna.id).synced_count
    statements: list[str] = []
    connection = database.obj.connection()
    connection.set_trace_callback(statements.append)
    try:
        ran = runtime.bridge.run_due_jobs()
    finally:
        connection.set_trace_callback(None)
    assert ran == 30
    assert len(statements) <= STATEMENTS_PER_BATCHED_PUSH * ran, len(statements)
    # Everything a single push records is there: events, mappings, counters, log rows, jobs done.
    assert all(len(our_events(google, anna.calendar_id, a)) == 1 for a in created)
    assert MeetMapping.select().where(MeetMapping.appointment_id.in_(created) & (MeetMapping.state == "active")).count() == 30
    assert PendingWrite.select().count() == 0
    row = Connection.get_by_id(anna.id)
    assert row.synced_count == before + 30 and row.last_error == ""
    logged = SyncLog.select().where(SyncLog.appointment_id.in_(created) & (SyncLog.action == "create")
                                    & (SyncLog.outcome == "ok"))
    assert logged.count() == 30
    assert Job.select().where((Job.kind == "push") & (Job.state != "done")).count() == 0


def test_accounts_share_one_service_and_each_thread_one_connection_pool(make_runtime, kivicare, google):
    runtime = make_runtime()
    anna, marc = connect(runtime, google, ANNA), connect(runtime, google, MARC)
    a, m = runtime.google_for(anna), runtime.google_for(marc)
    assert a._api is m._api  # built once per process, not per client
    assert a._http.http is m._http.http  # this thread's pool, whatever the account
    assert a._http.credentials is a.credentials and m._http.credentials is m.credentials
    other: list = []
    worker = threading.Thread(target=lambda: other.append(a._http.http))
    worker.start()
    worker.join()
    assert other[0] is not a._http.http  # httplib2 is not thread-safe: one pool per thread
    # Each account's writes go with its own token, singly and in a batch.
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    assert our_events(google, anna.calendar_id) and our_events(google, marc.calendar_id)


def test_refreshed_and_reconnected_tokens_are_used_by_the_next_batch(make_runtime, kivicare, google):
    runtime = make_runtime(**{"google.batch_size": 10})
    anna = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    stored = Connection.get_by_id(anna.id).access_token
    google.expire_access_tokens()
    first = book(runtime, kivicare, 4, day=7)
    runtime.bridge.sync_once()
    assert all(len(our_events(google, anna.calendar_id, a)) == 1 for a in first)
    refreshed = Connection.get_by_id(anna.id).access_token
    assert refreshed != stored and runtime.box.decrypt(refreshed) not in refreshed  # stored back, encrypted
    # Access withdrawn, then the doctor reconnects: the next batch uses the new grant, not a cached one.
    google.revoke(EMAILS[ANNA])
    google.expire_access_tokens()
    second = book(runtime, kivicare, 4, day=8)
    runtime.bridge.sync_once()
    assert Connection.get_by_id(anna.id).state == "needs_reconnect"
    assert not any(our_events(google, anna.calendar_id, a) for a in second)
    connect(runtime, google, ANNA)
    make_due_now()
    runtime.bridge.sync_once()
    assert Connection.get_by_id(anna.id).state == "active"
    assert all(len(our_events(google, anna.calendar_id, a)) == 1 for a in second)


def test_complete_many_keeps_a_job_re_enqueued_while_it_ran_due(runtime):
    for n in range(3):
        jobs.enqueue("push", f"push:a{n}:1", {"appointment_id": f"a{n}", "connection_id": 1})
    claimed = jobs.claim_many("w1", 3)
    assert len(claimed) == 3
    jobs.enqueue("push", "push:a1:1", {"appointment_id": "a1", "connection_id": 1})  # a newer change meanwhile
    taken = claimed[2]
    Job.update(locked_by="w2").where(Job.id == taken.id).execute()  # its lease ran out and w2 took it over
    jobs.complete_many(claimed)
    states = {job.dedupe_key: (job.state, job.locked_by) for job in Job.select()}
    assert states["push:a0:1"] == ("done", "")
    assert states["push:a1:1"][0] == "pending" and Job.get(Job.dedupe_key == "push:a1:1").run_after <= utcnow()
    assert states["push:a2:1"] == ("running", "w2")  # left to its new holder
