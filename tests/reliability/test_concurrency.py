"""Several bridge workers never run the same job twice (issue 6, item 3), on SQLite (a file, WAL),
PostgreSQL and MariaDB.

The PostgreSQL and MariaDB servers are real ones from Debian's packages, started once per session on
loopback in temporary directories (``dbservers.py``) and skipped, with the reason, only when their
binaries are absent; .ci/run installs them. Every test gets a fresh database on each backend.

Scenario: 300 jobs of a test-only kind; 4 worker threads running ``Bridge.run_due_jobs``, then 3
worker processes (this file run as ``python -m tests.reliability.test_concurrency``: open the same
database URL and loop ``jobs.claim``/``jobs.complete``), each recording every job it ran with its
generation, payload and start/end times. Meanwhile the test re-enqueues jobs, preferring running ones
(a generation bump: the newer change must run, after the older run, never beside it). Then a worker
process holding leases is SIGKILLed: its jobs are taken over by the others once the lease runs out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sidecar.storage import close_database, database, open_database  # noqa: E402
from sidecar.storage.models import Job  # noqa: E402
from wp_bridge import jobs  # noqa: E402

KIND = "test_concurrency"  # a kind no production code handles
JOBS = 300
CHANGES = 60  # re-enqueues (generation bumps) while the workers run
THREADS, PROCESSES = 4, 3


def _unfinished() -> int:
    return Job.select().where((Job.kind == KIND) & (Job.state != "done")).count()


def _record(job: Job, worker: str, start: float, end: float) -> dict:
    return {"event": "run", "job": job.id, "gen": job.generation, "v": (job.payload or {}).get("v"),
            "worker": worker, "start": start, "end": end}


def _run_one(job: Job) -> tuple[float, float]:
    """The job's "work": long enough that re-enqueues land on running jobs."""
    start = time.time()
    time.sleep(random.uniform(0.001, 0.004))
    return start, time.time()


# ---- the worker process -----------------------------------------------------------------------------

def worker_main(argv: list[str] | None = None) -> int:
    """``python -m tests.reliability.test_concurrency URL NAME OUT [--go F] [--stop F] [--hold N] [--lease S]``

    Opens ``URL``, writes ``ready``, waits for the file ``--go``, then claims and completes jobs of the
    test kind, appending one JSON line per run to ``OUT``. Exits once ``--stop`` exists and every job
    of the kind is done. ``--hold N``: claim N jobs, write a ``claim`` line for each, and never finish
    them (the test SIGKILLs this worker).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("name")
    parser.add_argument("out")
    parser.add_argument("--go")
    parser.add_argument("--stop")
    parser.add_argument("--hold", type=int, default=0)
    parser.add_argument("--lease", type=float)
    parser.add_argument("--migrate-only", action="store_true", help="wait for --go, open the database, exit")
    args = parser.parse_args(argv)
    lease = timedelta(seconds=args.lease) if args.lease else None
    worker = jobs.worker_id(args.name)
    with open(args.out, "a", buffering=1) as out:
        def write(line: dict) -> None:
            out.write(json.dumps(line) + "\n")
            out.flush()

        def wait_for_go() -> None:
            while args.go and not os.path.exists(args.go):
                time.sleep(0.001)

        if args.migrate_only:
            write({"event": "ready", "worker": worker})
            wait_for_go()
            open_database(args.url)
            write({"event": "opened", "worker": worker})
            return 0
        open_database(args.url)
        write({"event": "ready", "worker": worker})
        wait_for_go()
        held = 0
        while True:
            job = jobs.claim(worker, kinds=(KIND,), lease=lease)
            if job is None:
                if (not args.stop or os.path.exists(args.stop)) and not _unfinished():
                    return 0
                time.sleep(0.02)
                continue
            if args.hold:
                write({"event": "claim", "job": job.id, "worker": worker, "at": time.time()})
                held += 1
                if held >= args.hold:
                    time.sleep(600)  # holding its leases until killed
                continue
            start, end = _run_one(job)
            write(_record(job, worker, start, end))
            jobs.complete(job)


if __name__ == "__main__":
    sys.exit(worker_main())


# ---- fixtures: one real server of each kind per session, a fresh database per test ----------------------

import pytest  # noqa: E402

from wp_bridge.bridge import Bridge  # noqa: E402

from .dbservers import MariaDBServer, PostgresServer  # noqa: E402


def _server(kind):
    reason = kind.missing()
    if reason:
        pytest.skip(reason)
    server = kind().start()
    print(f"\n{kind.name} started in {server.started_in:.1f} s on 127.0.0.1:{server.port}")
    return server


@pytest.fixture(scope="session")
def postgresql_server():
    server = _server(PostgresServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_server():
    server = _server(MariaDBServer)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def fresh_url(request, tmp_path):
    """The URL of a new, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sidecar.db"
    return request.getfixturevalue(f"{request.param}_server").create_database(f"kc_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def db_url(fresh_url):
    """``fresh_url``, opened (and so migrated) in this process."""
    open_database(fresh_url)
    yield fresh_url
    close_database()


# ---- helpers ----------------------------------------------------------------------------------------------

def _enqueue_all(n: int = JOBS) -> list[str]:
    keys = [f"{KIND}:{i}" for i in range(n)]
    for i, key in enumerate(keys):
        jobs.enqueue(KIND, key, {"n": i, "v": 1})
    assert Job.select().where(Job.kind == KIND).count() == n
    return keys


def _change_while_running(keys: list[str], finished, limit: float = 30.0) -> dict[str, dict]:
    """Re-enqueue CHANGES keys while the workers run, running jobs first. Returns {key: what it saw}."""
    changed: dict[str, dict] = {}
    deadline = time.monotonic() + limit
    while len(changed) < CHANGES and time.monotonic() < deadline:
        running = [job.dedupe_key for job in Job.select(Job.dedupe_key).where(
            (Job.kind == KIND) & (Job.state == "running")) if job.dedupe_key not in changed]
        if running:
            key, state = random.choice(running), "running"
        elif finished():
            key = random.choice([k for k in keys if k not in changed])
            state = "done"  # the workers are faster than us: a change to a finished job
        else:
            time.sleep(0.001)
            continue
        jobs.enqueue(KIND, key, {"n": keys.index(key), "v": 2})
        changed[key] = {"state_before": state}
        time.sleep(random.uniform(0, 0.003))
    assert len(changed) == CHANGES, f"only {len(changed)} changes made in {limit:.0f} s"
    return changed


def _assert_each_ran_once(runs: list[dict], changed: dict[str, dict], n: int = JOBS) -> None:
    """Every job done; each (job, generation) ran at most once, the latest exactly once; no two runs overlap."""
    rows = {job.id: job for job in Job.select().where(Job.kind == KIND)}
    assert len(rows) == n
    not_done = {job.dedupe_key: job.state for job in rows.values() if job.state != "done"}
    assert not not_done, f"jobs left unfinished: {not_done}"
    by_job: dict[int, list[dict]] = defaultdict(list)
    for run in runs:
        by_job[run["job"]].append(run)
    lost = [rows[i].dedupe_key for i in rows if i not in by_job]
    assert not lost, f"{len(lost)} jobs never ran: {lost[:10]}"
    twice = {rows[i].dedupe_key: [(r["gen"], r["worker"]) for r in rs]
             for i, rs in by_job.items() if len({r["gen"] for r in rs}) != len(rs)}
    assert not twice, f"{len(twice)} jobs ran twice for one generation: {dict(list(twice.items())[:5])}"
    for job_id, job_runs in by_job.items():
        job = rows[job_id]
        job_runs.sort(key=lambda r: r["start"])
        for before, after in zip(job_runs, job_runs[1:]):
            assert after["start"] >= before["end"], f"{job.dedupe_key} ran on two workers at once: {job_runs}"
        last = job_runs[-1]
        assert last["gen"] == job.generation, f"{job.dedupe_key}: generation {job.generation} never ran"
        if job.dedupe_key in changed:
            assert job.generation >= 2 and last["v"] == 2, f"the change to {job.dedupe_key} was lost: {job_runs}"
        else:
            assert [(r["gen"], r["v"]) for r in job_runs] == [(1, 1)], f"{job.dedupe_key}: {job_runs}"


def _assert_side_by_side(runs: list[dict]) -> None:
    """The workers really competed: several of them ran jobs, and runs of different workers overlapped."""
    workers = {run["worker"] for run in runs}
    assert len(workers) >= 2, f"one worker ran everything: {workers}"
    timeline = sorted(runs, key=lambda r: r["start"])
    overlaps = sum(1 for before, after in zip(timeline, timeline[1:])
                   if after["start"] < before["end"] and after["worker"] != before["worker"])
    assert overlaps, "no two workers were ever running jobs at the same time"


def _spawn(url: str, name: str, tmp: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    out = tmp / f"{name}.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.test_concurrency", url, name, str(out), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def _lines(path: Path, event: str) -> list[dict]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [line for line in lines if line["event"] == event]


def _wait_for(check, what: str, procs=(), timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for proc, _ in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a worker exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _finish(procs, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for proc, _ in procs:
        try:
            output, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(f"a worker did not finish:\n{output}")
        assert proc.returncode == 0, f"a worker failed ({proc.returncode}):\n{output}"


# ---- the tests -------------------------------------------------------------------------------------------

def test_open_database_migrates_every_backend(db_url):
    """``open_database`` takes the URL, runs every migration; long unique keys, microseconds and a re-run work."""
    from sidecar.storage.migrations import MIGRATIONS, current_version, migrate
    from sidecar.storage.models import ALL_MODELS, MeetMapping, utcnow
    import peewee

    db = database.obj
    assert current_version(db) == MIGRATIONS[-1][0]
    assert migrate(db) == []
    assert {model._meta.table_name for model in ALL_MODELS} <= set(db.get_tables())
    calendar = "c" * 200 + "@group.calendar.google.com"
    event = "e" * 1000  # Google allows event ids up to 1024 characters
    MeetMapping.create(appointment_id="1", doctor_id=3, calendar_id=calendar, event_id=event)
    assert MeetMapping.get(MeetMapping.calendar_id == calendar).event_id == event
    with pytest.raises(peewee.IntegrityError), db.atomic():
        MeetMapping.create(appointment_id="1", doctor_id=3, calendar_id=calendar, event_id="other")
    stamp = utcnow().replace(microsecond=123456)
    jobs.enqueue(KIND, "stamp", {}, run_after=stamp)
    assert Job.get(Job.dedupe_key == "stamp").run_after == stamp  # no rounding: leases are compared to it


def test_processes_starting_together_on_a_fresh_database_all_open_it(fresh_url, tmp_path):
    """4 processes open a new database at the same moment: migrations run once, nobody fails."""
    from sidecar.storage.migrations import MIGRATIONS
    from sidecar.storage.models import SchemaVersion

    go = tmp_path / "go"
    procs = [_spawn(fresh_url, f"starter-{n}", tmp_path, "--go", str(go), "--migrate-only") for n in range(4)]
    try:
        _wait_for(lambda: all(_lines(out, "ready") for _, out in procs), "the processes to start", procs)
        go.touch()
        _finish(procs)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(_lines(out, "opened") for _, out in procs)
    open_database(fresh_url)
    try:
        assert [row.version for row in SchemaVersion.select().order_by(SchemaVersion.version)] == \
            [version for version, _, _ in MIGRATIONS]
    finally:
        close_database()


def test_a_worker_whose_lease_was_taken_over_writes_nothing(db_url):
    """A worker slower than its lease: the job is re-leased, and the slow worker's outcome is ignored."""
    jobs.enqueue(KIND, f"{KIND}:slow", {"v": 1})
    slow = jobs.claim("slow-worker", kinds=(KIND,), lease=timedelta(0))
    time.sleep(0.01)
    other = jobs.claim("other", kinds=(KIND,), lease=timedelta(seconds=60))  # the slow one's lease ran out
    assert other is not None and other.id == slow.id
    jobs.complete(slow)
    jobs.retry_later(slow, timedelta(0), "slow worker's error", counts=True)
    jobs.give_up(slow, "slow worker's error")
    row = Job.get_by_id(slow.id)
    assert (row.state, row.locked_by, row.attempts, row.last_error) == ("running", "other", 0, "")
    jobs.complete(other)
    assert Job.get_by_id(slow.id).state == "done"


def test_worker_threads_never_run_a_job_twice(db_url):
    """4 threads running ``Bridge.run_due_jobs`` on one database; changes arrive while they run."""
    keys = _enqueue_all()
    runs: list[dict] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    class RecordingBridge(Bridge):
        """The engine's worker loop with a test-only job body (these jobs touch no remote side)."""

        def __init__(self):  # no runtime: run_job below is all a job of this kind needs
            pass

        def run_job(self, job):
            start, end = _run_one(job)
            with lock:
                runs.append(_record(job, threading.current_thread().name, start, end))
            jobs.complete(job)

    def work():
        bridge = RecordingBridge()
        try:
            while True:
                if not bridge.run_due_jobs(jobs.worker_id(threading.current_thread().name)):
                    if stop.is_set() and not _unfinished():
                        return
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=work, name=f"worker-{n}", daemon=True) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        changed = _change_while_running(keys, finished=lambda: not _unfinished())
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    _assert_each_ran_once(runs, changed)
    _assert_side_by_side(runs)
    assert any(seen["state_before"] == "running" for seen in changed.values())


def test_worker_processes_never_run_a_job_twice(db_url, tmp_path):
    """3 processes sharing the database URL claim and complete; changes arrive while they run."""
    keys = _enqueue_all()
    go, stop = tmp_path / "go", tmp_path / "stop"
    procs = [_spawn(db_url, f"proc-{n}", tmp_path, "--go", str(go), "--stop", str(stop)) for n in range(PROCESSES)]
    try:
        _wait_for(lambda: all(_lines(out, "ready") for _, out in procs), "the workers to open the database", procs)
        go.touch()  # all at once, so they compete for every job
        changed = _change_while_running(keys, finished=lambda: not _unfinished())
        stop.touch()
        _finish(procs)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    runs = [run for _, out in procs for run in _lines(out, "run")]
    _assert_each_ran_once(runs, changed)
    _assert_side_by_side(runs)
    assert any(seen["state_before"] == "running" for seen in changed.values())


def test_a_killed_workers_jobs_are_taken_over_when_its_lease_runs_out(db_url, tmp_path):
    """SIGKILL a worker holding 5 leases (2 s): two other processes run them, after expiry, once."""
    _enqueue_all(40)
    doomed, doomed_out = _spawn(db_url, "doomed", tmp_path, "--hold", "5", "--lease", "2")
    try:
        _wait_for(lambda: len(_lines(doomed_out, "claim")) == 5, "the doomed worker's 5 claims", [(doomed, doomed_out)])
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
    assert doomed.returncode == -signal.SIGKILL
    held = {line["job"] for line in _lines(doomed_out, "claim")}
    leases = {job.id: job for job in Job.select().where(Job.id.in_(list(held)))}
    assert all(job.state == "running" and f":{doomed.pid}:" in job.locked_by for job in leases.values())

    stop = tmp_path / "stop"
    stop.touch()  # no more changes: the survivors stop once every job is done
    survivors = [_spawn(db_url, f"survivor-{n}", tmp_path, "--stop", str(stop)) for n in range(2)]
    try:
        _finish(survivors)
    finally:
        for proc, _ in survivors:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    runs = [run for _, out in survivors for run in _lines(out, "run")]
    _assert_each_ran_once(runs, {}, n=40)
    for run in runs:
        if run["job"] in held:  # taken over only once the dead worker's lease had run out
            assert run["start"] >= leases[run["job"]].locked_until.timestamp(), run
    assert {run["job"] for run in runs} >= held
