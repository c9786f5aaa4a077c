"""``python -m sidecar worker``: extra job-worker processes sharing one PostgreSQL database (issue 7, item 4).

Everything real: a PostgreSQL server from Debian's packages on loopback (``tests/reliability/dbservers.py``;
skipped with the reason only when its binaries are absent, CI installs them), the KiviCare and Google
sandboxes in this process, and two ``python -m sidecar worker`` subprocesses. The test's own runtime
polls KiviCare (as ``serve``'s poller would) while both workers wait; they drain the queue of pushes
between them, each job once, one event per appointment. SQLite is refused with a clear message, and
SIGTERM / SIGINT stop a worker within a few seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from sidecar.cli import SQLITE_REFUSED
from sidecar.storage import close_database
from sidecar.storage.models import Job

from .conftest import ANNA, MARC, SOFIA, connect, sandbox_settings
from .reliability.dbservers import PostgresServer
from .test_crash_recovery import sidecar_env
from .test_sync_engine import GENERAL, at, mapping_id, our_events

ROOT = Path(__file__).resolve().parents[1]
READY = "Worker running"
PER_DOCTOR = 8
GOOGLE_LATENCY = 0.15  # s per request: jobs last long enough that both processes hold some at once


@pytest.fixture(scope="module")
def postgres():
    reason = PostgresServer.missing()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


def start_worker(env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sidecar", "worker"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for(check, what: str, timeout: float = 30.0, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"{what} not within {timeout:.0f} s:\n" + "\n".join(p.read_text() for p in logs))


def test_two_worker_processes_drain_the_pushes_once_each(make_runtime, kivicare, google, postgres, tmp_path):
    url = postgres.create_database(f"kc_worker_{uuid.uuid4().hex[:10]}")
    runtime = make_runtime(**{"database.url": url})
    calendars = {doctor: connect(runtime, google, doctor).calendar_id for doctor in (ANNA, MARC, SOFIA)}
    for doctor in calendars:
        service = [mapping_id(runtime, doctor, GENERAL)]
        for n in range(PER_DOCTOR):
            kivicare.create_appointment(doctor_id=doctor, patient_id=5, start_utc=at(2 + n % 4, 7 + 2 * (n // 4), 10),
                                        service_mapping_ids=service)
    # One push per job (no batches): 24 jobs of 0.15 s, so a process cannot take them all before the other
    # wakes (with batches, one process could claim the three doctors' batches at once under load).
    env = sidecar_env(sandbox_settings(kivicare, google, tmp_path, **{"database.url": url, "google.batch_size": 1,
                                                                      "sync.telemedicine_services": []}), tmp_path)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(env, log) for log in logs]
    try:
        wait_for(lambda: all(READY in log.read_text() for log in logs if log.exists()) and all(
            log.exists() for log in logs), "both workers ready", logs=logs)
        google.latency = GOOGLE_LATENCY
        google.reset_requests()
        runtime.bridge.poll("all")  # serve's poller, here in the test: the jobs are queued while both wait
        pushes = list(Job.select().where(Job.kind == "push"))
        assert len(pushes) >= 3 * PER_DOCTOR

        holders: set[str] = set()  # pids seen holding a lease: both processes take part

        def drained() -> bool:
            holders.update(j.locked_by.split(":")[1] for j in Job.select(Job.locked_by).where(Job.state == "running"))
            return not Job.select().where(Job.state != "done").exists()
        wait_for(drained, "every job done", timeout=60, logs=logs)
        assert holders == {str(w.pid) for w in workers}, (holders, [w.pid for w in workers])

        appointments = {str(j.payload["appointment_id"]) for j in pushes}
        events = Counter()  # appointment id -> events, cancelled ones included: nothing created twice
        for calendar_id in calendars.values():
            events.update(e["extendedProperties"]["private"]["kcAppointmentId"]
                          for e in our_events(google, calendar_id, live=False))
        assert set(events) == appointments and set(events.values()) == {1}, events
        inserts = Counter(r["json"]["extendedProperties"]["private"]["kcAppointmentId"] for r in google.requests
                          if r["method"] == "POST" and r["path"].endswith("/events") and r.get("json"))
        rewrites = [r["path"] for r in google.requests if r["method"] in ("PATCH", "PUT", "DELETE")]
        assert inserts == events and not rewrites, (inserts, rewrites)  # every push ran exactly once

        google.latency = 0
        began = time.monotonic()
        workers[0].send_signal(signal.SIGTERM)
        workers[1].send_signal(signal.SIGINT)
        codes = [w.wait(timeout=10) for w in workers]
        stopped_in = time.monotonic() - began
        assert codes == [0, 0] and stopped_in < 5, (codes, stopped_in, [log.read_text() for log in logs])
        assert all("Worker stopped." in log.read_text() for log in logs)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)
        close_database()


def test_sqlite_is_refused_with_the_reason_and_nothing_written(kivicare, google, tmp_path):
    database = tmp_path / "data" / "sidecar.db"
    env = sidecar_env(sandbox_settings(kivicare, google, tmp_path, **{"database.url": f"sqlite:///{database}"}),
                      tmp_path)
    done = subprocess.run([sys.executable, "-m", "sidecar", "worker"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done
    assert SQLITE_REFUSED in done.stderr and "PostgreSQL or MariaDB" in done.stderr
    assert not database.exists() and not (tmp_path / "sidecar.key").exists()


def test_a_busy_worker_stops_on_sigterm_within_seconds(make_runtime, kivicare, google, postgres, tmp_path):
    """A job in flight (Google answering slowly) does not hold the process: it ends within a few seconds."""
    url = postgres.create_database(f"kc_worker_{uuid.uuid4().hex[:10]}")
    runtime = make_runtime(**{"database.url": url})
    calendar_id = connect(runtime, google, ANNA).calendar_id
    service = [mapping_id(runtime, ANNA, GENERAL)]
    for n in range(4):
        kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 7 + n, 10),
                                    service_mapping_ids=service)
    google.latency = 1.0
    runtime.bridge.poll("all")
    env = sidecar_env(sandbox_settings(kivicare, google, tmp_path, **{"database.url": url}), tmp_path)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_for(lambda: Job.select().where(Job.state == "running").exists(), "a job running", logs=[log])
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=15)
        stopped_in = time.monotonic() - began
        assert code == 0 and stopped_in < 7, (code, stopped_in, log.read_text())

        google.latency = 0  # the next worker on this host takes over what the stopped one cut short
        worker = start_worker(env, log)
        wait_for(lambda: not Job.select().where(Job.state != "done").exists(), "every job done", logs=[log])
        per_appointment = Counter(e["extendedProperties"]["private"]["kcAppointmentId"]
                                  for e in our_events(google, calendar_id, live=False))
        assert set(per_appointment.values()) == {1}, per_appointment
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
        google.latency = 0
        close_database()
