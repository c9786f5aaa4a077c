"""The durable job queue (DESIGN "jobs"): work is recorded before any remote call and survives crashes.

One row per ``dedupe_key``. ``enqueue`` on an existing key bumps ``generation`` and makes the row due,
so a burst of changes to one appointment becomes one job that pushes the latest state. A job that keeps
failing with a permanent error is given up (state "failed", ``give_up``) and stays failed until
something changes that could make it succeed: a new ``change`` token from the enqueuer (the content to
write is different), an enqueue that brings a reason of its own, or ``retry_failed`` (an admin's
"Retry", a reconnect). So a poison job neither blocks the queue nor comes back on every poll. ``claim``
leases a due job to one worker (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL/MySQL: ``FOR UPDATE SKIP
LOCKED``), ``claim_many`` several at once (push jobs of one connection, for a Google batch); a lease
that expires (a killed worker) makes the job due again, and at start a process releases the leases of
dead workers on its own host at once.

Several workers (threads, or processes sharing a PostgreSQL or MariaDB database) never run one job at
the same time: ``claim`` takes a row lock (or SQLite's write lock) to lease it, ``enqueue`` locks the row
it bumps, and ``complete``/``retry_later``/``give_up`` write only while the caller still holds the lease
(a worker whose lease ran out and was taken over leaves the job to its new holder). A deadlock or
serialization failure reported by the server is retried. Proven by tests/reliability/test_concurrency.py.
"""

from __future__ import annotations

import functools
import operator
import os
import random
import socket
import time
from datetime import datetime, timedelta

import peewee

from sidecar.storage import database, transaction
from sidecar.storage.models import Job, utcnow
from sidecar.storage.prepared import Prepared, PreparedWrite

LEASE = timedelta(seconds=120)
HOST = socket.gethostname()


def worker_id(thread_name: str = "") -> str:
    """``host:pid:thread`` so a restarted process can tell its dead predecessor's leases."""
    return f"{HOST}:{os.getpid()}:{thread_name}"[:64]


CHANGE = "change"  # payload key: the enqueuer's token for the content to write (see ``enqueue``)


def enqueue(kind: str, key: str, payload: dict | None = None, *, run_after: datetime | None = None,
            change: str | None = None, revive: bool = False) -> bool:
    """Record work. Re-enqueueing a key bumps its generation; a done job becomes pending again.

    A failed job (given up, ``give_up``) is left failed, untouched, when ``change`` is given and equals
    the token it was last enqueued with: nothing that could make it succeed has changed (the sync engine
    passes the event's fingerprint, so an unchanged appointment does not revive a poison push on every
    poll). A different ``change``, no ``change`` at all (the caller has a reason of its own: a hint, a
    doctor's edit put back) or ``revive`` makes it pending again with its tries reset. The token is kept
    in the payload under ``CHANGE``; an enqueue without one keeps the last.

    Returns True when the job is due (now or at its time), False when a failed job was left alone.
    """
    return _retrying(lambda: _enqueue(kind, key, payload, run_after, change, revive), duplicate_key=True)


def _enqueue(kind: str, key: str, payload: dict | None, run_after: datetime | None, change: str | None,
             revive: bool) -> bool:
    now = utcnow()
    due = run_after or now
    with transaction():
        # Locked, so a worker cannot complete the job between the read of its state and the bump below
        # (that would leave the newer change marked done). SQLite's BEGIN IMMEDIATE already serialises.
        job = _BY_KEY.first(key)
        if job is None:
            # Two enqueues of a new key at once: one insert fails on the unique key and is retried as a bump.
            _INSERT.run(kind, key, _with_change(payload or {}, change), due, now, now)
            return True
        stored = (job.payload or {}).get(CHANGE)
        if job.state == "failed" and not revive and change is not None and change == stored:
            return False  # given up, and what it would write is the same: trying again would fail again
        if job.state == "pending" and change is not None and change == stored and job.run_after <= due \
                and (payload is None or payload == {k: v for k, v in (job.payload or {}).items() if k != CHANGE}):
            return True  # already waiting to write this very version (a poll during a long first sync): no write
        fields = {Job.generation: Job.generation + 1, Job.updated_at: now,
                  Job.payload: _with_change(payload or job.payload or {}, change if change is not None else stored)}
        if job.state in ("done", "failed"):
            fields.update({Job.state: "pending", Job.attempts: 0, Job.retries: 0, Job.run_after: due,
                           Job.last_error: ""})
        elif job.state == "pending" and due < job.run_after:
            fields[Job.run_after] = due
        Job.update(fields).where(Job.id == job.id).execute()
        return True


# Built once (sidecar/storage/prepared.py): a first sync enqueues thousands. Locked as ``_locking`` says.
_BY_KEY = Prepared(lambda key: _locking(Job.select().where(Job.dedupe_key == key)), str)
_COLUMNS = (Job.kind, Job.dedupe_key, Job.payload, Job.run_after, Job.created_at, Job.updated_at)
_INSERT = PreparedWrite(lambda *values: Job.insert(dict(zip(_COLUMNS, values))), *_COLUMNS)


def waiting(keys: list[str]) -> dict[str, str | None]:
    """Of the jobs keyed ``keys`` (one query; keep under 500 keys), those pending and due now, or running:
    key -> their ``change`` token. A caller about to enqueue one of them with the same token may skip the
    call: ``enqueue`` of a pending one would write nothing, and a running one is writing that very content
    (its token is the content it was queued for; it reads the current state when it runs)."""
    if not keys:
        return {}
    rows = Job.select(Job.dedupe_key, Job.payload).where(
        Job.dedupe_key.in_(keys) & (((Job.state == "pending") & (Job.run_after <= utcnow()))
                                    | (Job.state == "running")))
    return {row.dedupe_key: (row.payload or {}).get(CHANGE) for row in rows}


def backlog(kind: str, at_most: int) -> int:
    """How many ``kind`` jobs are pending and due now, counted up to ``at_most`` (the count stops there, so a
    queue of 100,000 jobs costs no more to ask about than one of ``at_most``)."""
    return Job.select(Job.id).where((Job.kind == kind) & (Job.state == "pending")
                                    & (Job.run_after <= utcnow())).limit(at_most).count()


def _with_change(payload: dict, change: str | None) -> dict:
    if change is None:
        return payload
    return {**payload, CHANGE: change}


def retry_failed(connection_id: int | None = None) -> int:
    """Make given-up jobs due now with their tries reset: an admin's "Retry", a reconnect, a reset.

    ``connection_id``: only that connection's jobs (``failed_jobs``); None: every given-up job.
    Returns how many were revived. Their ``change`` token is kept, so one that fails again stays failed.
    """
    now = utcnow()
    return _retrying(lambda: Job.update(
        state="pending", attempts=0, retries=0, run_after=now, last_error="", generation=Job.generation + 1,
        updated_at=now).where(_failed(connection_id)).execute())


def failed_jobs(connection_id: int | None = None) -> int:
    """How many jobs are given up: a connection's (its ``push``, ``conference`` and ``pull`` jobs, keyed
    ``…:<connection id>``), or all of them when ``connection_id`` is None."""
    return Job.select().where(_failed(connection_id)).count()


def of_connection(connection_id: int):
    """A peewee condition for one connection's jobs: ``push:<appointment>:<connection>``,
    ``conference:<appointment>:<connection>`` and ``pull:<connection>``. The kind matters: ``busy:<doctor>``,
    ``fetch:<appointment>`` and ``meet:<appointment>`` also end with a number that is not a connection's."""
    return Job.kind.in_(("push", "conference", "pull")) & Job.dedupe_key.endswith(f":{int(connection_id)}")


def _failed(connection_id: int | None):
    where = Job.state == "failed"
    if connection_id is not None:
        where &= of_connection(connection_id)
    return where


def claim(worker: str, kinds: tuple[str, ...] | None = None, *, lease: timedelta | None = None) -> Job | None:
    """Lease the oldest due job to ``worker`` (or None). Pending jobs, and running ones whose lease ran out.

    ``lease``: how long the job stays ``worker``'s before another worker may take it over (``LEASE``).
    """
    claimed = _retrying(lambda: _claim(worker, kinds, LEASE if lease is None else lease, 1, None))
    return claimed[0] if claimed else None


def claim_many(worker: str, limit: int, *, kinds: tuple[str, ...] | None = None, where=None,
               lease: timedelta | None = None) -> list[Job]:
    """Lease up to ``limit`` of the oldest due jobs to ``worker`` in one transaction, as ``claim`` does
    (SKIP LOCKED on PostgreSQL/MariaDB, the same lease). ``where``: a further peewee condition, e.g. the
    jobs of one connection (``of_connection``), so a worker can send their Google writes in one batch."""
    if limit <= 0:
        return []
    return _retrying(lambda: _claim(worker, kinds, LEASE if lease is None else lease, int(limit), where))


def _claim(worker: str, kinds: tuple[str, ...] | None, lease: timedelta, limit: int, where) -> list[Job]:
    now = utcnow()
    due = (((Job.state == "pending") & (Job.run_after <= now))
           | ((Job.state == "running") & (Job.locked_until < now)))
    query = Job.select().where(due)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    if where is not None:
        query = query.where(where)
    query = query.order_by(Job.run_after, Job.id).limit(limit)
    if not _is_sqlite():
        query = query.for_update("FOR UPDATE SKIP LOCKED")  # rows another worker is leasing are skipped
    with transaction():
        found = list(query)
        if not found:
            return []
        Job.update(state="running", locked_by=worker, locked_until=now + lease, updated_at=now).where(
            Job.id.in_([job.id for job in found])).execute()
    for job in found:
        job.state, job.locked_by, job.locked_until = "running", worker, now + lease
    return found


def complete(job: Job) -> None:
    """Done, unless the job was re-enqueued while it ran: then it stays due to push the newer state.

    Nothing is written when ``job``'s lease was taken over by another worker (it ran out): the new holder
    runs the job and completes it.
    """
    def write():
        now = utcnow()
        with transaction():
            done = (Job.update(state="done", locked_by="", locked_until=None, last_error="", updated_at=now)
                    .where(_held(job) & (Job.generation == job.generation)).execute())
            if not done:
                Job.update(state="pending", locked_by="", locked_until=None, run_after=now, updated_at=now).where(
                    _held(job)).execute()
    _retrying(write)


def complete_many(done: list[Job]) -> None:
    """``complete`` for several jobs leased by one worker (a batch of pushes), in one transaction of two
    UPDATEs: done where the lease is still held and the generation unchanged, due again where the job was
    re-enqueued while it ran. Jobs whose lease was taken over are left to their new holder."""
    if len(done) <= 1:
        for job in done:
            complete(job)
        return
    # Grouped by (lease holder, generation): a handful of IN lists, never a chain of 1000 ORs (SQLite
    # refuses expressions deeper than 1000).
    groups: dict[tuple[str, int], list[int]] = {}
    for job in done:
        groups.setdefault((job.locked_by or "", job.generation), []).append(job.id)
    holders: dict[str, list[int]] = {}
    for (holder, _), ids in groups.items():
        holders.setdefault(holder, []).extend(ids)
    finished = functools.reduce(operator.or_, [Job.id.in_(ids) & (Job.locked_by == holder) & (Job.generation == g)
                                               for (holder, g), ids in groups.items()])
    held = functools.reduce(operator.or_, [Job.id.in_(ids) & (Job.locked_by == holder)
                                           for holder, ids in holders.items()])

    def write():
        now = utcnow()
        with transaction():
            Job.update(state="done", locked_by="", locked_until=None, last_error="", updated_at=now).where(
                finished).execute()
            # Still held (a done job's locked_by is now empty): re-enqueued meanwhile, so the newer state is pushed.
            Job.update(state="pending", locked_by="", locked_until=None, run_after=now, updated_at=now).where(
                held).execute()
    _retrying(write)


def retry_later(job: Job, delay: timedelta, error: str, *, counts: bool) -> int:
    """Put the job back with a delay. ``counts`` False for outages and rate limits (they are not tries).

    Returns the number of counted attempts so far.
    """
    now = utcnow()
    attempts = job.attempts + (1 if counts else 0)
    _retrying(lambda: Job.update(state="pending", locked_by="", locked_until=None, run_after=now + delay,
                                 attempts=attempts, retries=Job.retries + 1, last_error=error[:500],
                                 updated_at=now).where(_held(job)).execute())
    return attempts


def give_up(job: Job, error: str) -> bool:
    """A poison job: stop trying, keep it visible (state failed) for the admin until something changes.

    Returns True when it gave up. False when the content to write changed while it ran (a new ``change``
    token was enqueued: that version gets its own tries, the job is due now with its tries reset), or
    when its lease was taken over by another worker (nothing is written then).
    """
    def write():
        now = utcnow()
        with transaction():
            row = _locking(Job.select().where(_held(job))).first()
            if row is None:
                return False
            if (row.payload or {}).get(CHANGE) != (job.payload or {}).get(CHANGE):
                Job.update(state="pending", locked_by="", locked_until=None, run_after=now, attempts=0, retries=0,
                           last_error=error[:500], updated_at=now).where(Job.id == job.id).execute()
                return False
            Job.update(state="failed", locked_by="", locked_until=None, attempts=Job.attempts + 1,
                       last_error=error[:500], updated_at=now).where(Job.id == job.id).execute()
            return True
    return _retrying(write)


def release_dead_leases() -> int:
    """At start: leases held by processes on this host that no longer exist become due now."""
    released = 0
    # Materialised: SQLite refuses writes made while a read is still open on this connection.
    for job in list(Job.select().where((Job.state == "running") & Job.locked_by.startswith(HOST + ":"))):
        try:
            pid = int(job.locked_by.split(":")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        released += Job.update(state="pending", locked_by="", locked_until=None, run_after=utcnow()).where(
            (Job.id == job.id) & (Job.state == "running") & (Job.locked_by == job.locked_by)).execute()
    return released


def _held(job: Job):
    """The row is still ``job``'s lease: nobody took it over since this worker claimed it."""
    return (Job.id == job.id) & (Job.locked_by == (job.locked_by or ""))


def _is_sqlite() -> bool:
    return isinstance(database.obj, peewee.SqliteDatabase)


def _locking(query):
    return query if _is_sqlite() else query.for_update()


# Server answers that mean "your transaction lost a race, run it again": PostgreSQL's SQLSTATEs for a
# serialization failure, a deadlock and a lock not available; MySQL/MariaDB's deadlock and lock wait timeout.
_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}
_RETRY_MYSQL_CODES = {1205, 1213}


def _retrying(write, *, duplicate_key: bool = False, tries: int = 6):
    """Run ``write`` (one transaction), again after a short random pause if it lost a race.

    Inside a caller's transaction a deadlock is left to the caller (MySQL rolled back all of it).
    """
    nested = database.obj.in_transaction()
    for attempt in range(tries):
        try:
            return write()
        except Exception as exc:  # noqa: BLE001 - only races are retried, anything else is raised
            if attempt == tries - 1 or not _lost_race(exc, duplicate_key, nested):
                raise
            time.sleep(random.uniform(0, 0.02 * 2 ** attempt))
    return None


def _lost_race(exc: Exception, duplicate_key: bool, nested: bool) -> bool:
    if duplicate_key and isinstance(exc, peewee.IntegrityError):
        return True  # the savepoint (or transaction) was rolled back; the key exists now
    if nested:
        return False
    for error in (exc, *(exc.args[:1] if exc.args else ())):
        if getattr(error, "pgcode", None) in _RETRY_SQLSTATES:
            return True
        args = getattr(error, "args", ())
        if type(error).__module__.startswith("pymysql") and args and args[0] in _RETRY_MYSQL_CODES:
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def backoff(retries: int, base: float = 5.0, cap: float = 900.0) -> timedelta:
    """Exponential backoff with full jitter: up to base·2^retries seconds, at most ``cap``."""
    import random
    return timedelta(seconds=random.uniform(base / 2, min(cap, base * (2 ** min(retries, 16)))))

