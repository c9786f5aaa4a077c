"""The durable job queue (DESIGN "jobs"): work is recorded before any remote call and survives crashes.

One row per ``dedupe_key``. ``enqueue`` on an existing key bumps ``generation`` and makes the row due,
so a burst of changes to one appointment becomes one job that pushes the latest state. ``claim``
leases a due job to one worker (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL/MySQL: ``FOR UPDATE SKIP
LOCKED``); a lease that expires (a killed worker) makes the job due again, and at start a process
releases the leases of dead workers on its own host at once.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

import peewee

from sidecar.storage import database, transaction
from sidecar.storage.models import Job, utcnow

LEASE = timedelta(seconds=120)
HOST = socket.gethostname()


def worker_id(thread_name: str = "") -> str:
    """``host:pid:thread`` so a restarted process can tell its dead predecessor's leases."""
    return f"{HOST}:{os.getpid()}:{thread_name}"[:64]


def enqueue(kind: str, key: str, payload: dict | None = None, *, run_after: datetime | None = None) -> None:
    """Record work. Re-enqueueing a key bumps its generation; a done or failed job becomes pending again."""
    now = utcnow()
    due = run_after or now
    with transaction():
        job = Job.get_or_none(Job.dedupe_key == key)
        if job is None:
            Job.create(kind=kind, dedupe_key=key, payload=payload or {}, run_after=due, created_at=now, updated_at=now)
            return
        fields = {Job.generation: Job.generation + 1, Job.payload: payload or job.payload, Job.updated_at: now}
        if job.state in ("done", "failed"):
            fields.update({Job.state: "pending", Job.attempts: 0, Job.retries: 0, Job.run_after: due,
                           Job.last_error: ""})
        elif job.state == "pending" and due < job.run_after:
            fields[Job.run_after] = due
        Job.update(fields).where(Job.id == job.id).execute()


def claim(worker: str, kinds: tuple[str, ...] | None = None) -> Job | None:
    """Lease the oldest due job to ``worker`` (or None). Pending jobs, and running ones whose lease ran out."""
    now = utcnow()
    due = (((Job.state == "pending") & (Job.run_after <= now))
           | ((Job.state == "running") & (Job.locked_until < now)))
    query = Job.select().where(due)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    query = query.order_by(Job.run_after, Job.id).limit(1)
    db = database.obj
    if not isinstance(db, peewee.SqliteDatabase):
        query = query.for_update("FOR UPDATE SKIP LOCKED")
    with transaction():
        job = query.first()
        if job is None:
            return None
        Job.update(state="running", locked_by=worker, locked_until=now + LEASE, updated_at=now).where(
            Job.id == job.id).execute()
    job.state, job.locked_by = "running", worker
    return job


def complete(job: Job) -> None:
    """Done, unless the job was re-enqueued while it ran: then it stays due to push the newer state."""
    now = utcnow()
    with transaction():
        done = (Job.update(state="done", locked_by="", locked_until=None, last_error="", updated_at=now)
                .where((Job.id == job.id) & (Job.generation == job.generation)).execute())
        if not done:
            Job.update(state="pending", locked_by="", locked_until=None, run_after=now, updated_at=now).where(
                Job.id == job.id).execute()


def retry_later(job: Job, delay: timedelta, error: str, *, counts: bool) -> int:
    """Put the job back with a delay. ``counts`` False for outages and rate limits (they are not tries).

    Returns the number of counted attempts so far.
    """
    now = utcnow()
    attempts = job.attempts + (1 if counts else 0)
    Job.update(state="pending", locked_by="", locked_until=None, run_after=now + delay, attempts=attempts,
               retries=Job.retries + 1, last_error=error[:500], updated_at=now).where(Job.id == job.id).execute()
    return attempts


def give_up(job: Job, error: str) -> None:
    """A poison job: stop trying, keep it visible (state failed) for the admin."""
    Job.update(state="failed", locked_by="", locked_until=None, attempts=Job.attempts + 1, last_error=error[:500],
               updated_at=utcnow()).where(Job.id == job.id).execute()


def release_dead_leases() -> int:
    """At start: leases held by processes on this host that no longer exist become due now."""
    released = 0
    for job in Job.select().where((Job.state == "running") & Job.locked_by.startswith(HOST + ":")):
        try:
            pid = int(job.locked_by.split(":")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        released += Job.update(state="pending", locked_by="", locked_until=None, run_after=utcnow()).where(
            (Job.id == job.id) & (Job.state == "running")).execute()
    return released


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

