"""Scale-out (issue 7, item 4): sync throughput with 1, 2 and 4 processes sharing one PostgreSQL database.

Setup, once: a private PostgreSQL server (tests/reliability/dbservers.py ``PostgresServer``), both
sandboxes in their own processes (``bench.perf.environment.Environment``, used as is: Google 100 ms per
request and its per-user limit of 600/min, KiviCare 70 ms + 1.4 ms per row), 200 doctors each with a few
appointments (so no account's quota is the bound: the per-user limit is the only one), every doctor
connected through the real OAuth flow, then one real ``Bridge.startup()`` and ``Bridge.poll("all")`` in
this process, which queue one push job per appointment. Latency is lifted for that setup only (it is not
measured). The jobs are then held (``run_after`` a day ahead) and the database kept as a PostgreSQL
template.

Each run with k processes: the doctors' Google calendars are emptied, a fresh database is cloned from the
template, one ``python -m sidecar serve`` and k-1 ``python -m sidecar worker`` processes start (each with
``bridge.workers`` = ``THREADS`` (2) and ``google.requests_per_second`` = its default ÷ k, as README "More workers"
says); once all are up the jobs are released at once, and the run ends when every appointment has its
event in Google. Throughput = events ÷ (last event's ``created`` − release), both on this machine's clock.
Also counted: events per appointment (a duplicate fails the run), requests refused by the per-user
limit, Google requests per event.

``python -m bench.perf.scaleout [--small] [--doctors 200] [--appointments 400] [--workers 1 2 4]`` prints
the rows; ``run(args, say)`` / ``rows(figures)`` / ``notes(figures)`` are what ``bench.perf`` calls.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.perf.environment import Environment  # noqa: E402
from bench.perf.sandboxes import (GOOGLE_LATENCY, KIVICARE_LATENCY, KIVICARE_PER_ROW, UTC, _method,  # noqa: E402
                                  _setattr, cpu_seconds)
from bench.soak import Sidecar, free_port, sidecar_env  # noqa: E402
from sidecar.config import SETTINGS  # noqa: E402

DOCTORS, APPOINTMENTS, WORKERS = 200, 400, (1, 2, 4)  # ~2 minutes in all on a 2-core machine
# Job threads per process (``bridge.workers``). Few, so one process is bound by waiting on Google (100 ms a
# request), not by this 2-core machine's CPU: what is measured is how throughput grows with processes.
THREADS = 2
SMALL = {"doctors": 40, "appointments": 120, "workers": (1, 2)}
DEFAULT_RATE = next(s.default for s in SETTINGS if s.name == "google.requests_per_second")  # each of k
# processes gets DEFAULT_RATE // k (README "More workers")
GROWTH = 1.2  # "grows": at least this many times the throughput with half the processes
READY = "Worker running"  # the line ``python -m sidecar worker`` prints once its threads run
SCENARIO = "scale-out: {doctors} doctors, per-user limit only"


# ---- run in the Google sandbox's process (``Remote.call``) -------------------------------------------

def _clear_calendars(sb, calendar_ids: list[str]) -> None:
    """Empty the calendars (events and sync tokens) for the next run: as if nothing was ever synced."""
    with sb._lock:
        for calendar_id in calendar_ids:
            sb._calendars[calendar_id].events.clear()
            sb._drop_sync_tokens(calendar_id)


def _our_events(sb, calendar_ids: list[str]) -> list[tuple[str, str]]:
    """(appointment id, ``created``) of every live event the sidecar made (``kcAppointmentId``)."""
    found = []
    for calendar_id in calendar_ids:
        for event in sb.events(calendar_id, include_cancelled=False):
            private = (event.get("extendedProperties") or {}).get("private") or {}
            if "kcAppointmentId" in private:
                found.append((private["kcAppointmentId"], event["created"]))
    return found


def _api_requests(sb) -> int:
    with sb._lock:
        return sum(1 for r in sb._log if "/calendar/v3/" in r.get("path", ""))


# ---- the database ------------------------------------------------------------------------------------

def _clone(server, template: str, name: str) -> str:
    """A new database ``name`` copied from ``template`` (PostgreSQL ``CREATE DATABASE … TEMPLATE``)."""
    conn = server._connect("postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (template,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        conn.close()
    return f"postgresql://postgres@127.0.0.1:{server.port}/{name}"


def _set_due(url: str, when: datetime) -> int:
    """Every pending job due at ``when`` (UTC); returns how many."""
    from sidecar.storage import close_database, open_database
    from sidecar.storage.models import Job
    open_database(url)
    try:
        return Job.update(run_after=when).where(Job.state == "pending").execute()
    finally:
        close_database()


def _job_states(url: str) -> dict:
    from sidecar.storage import close_database, open_database
    from sidecar.storage.models import Job
    open_database(url)
    try:
        return dict(Counter(job.state for job in Job.select(Job.state)))
    finally:
        close_database()


# ---- one run -----------------------------------------------------------------------------------------

def _prepare(env: Environment, say) -> dict:
    """Connect every doctor and queue their pushes (latency lifted: setup is not measured); hold the jobs."""
    from sidecar.storage import close_database
    from sidecar.storage.models import Job
    env.google.call(_setattr, "latency", 0.0)
    env.kivicare.call(_setattr, "latency", 0.0)
    env.kivicare.call(_setattr, "latency_per_row", 0.0)
    began = time.monotonic()
    env.connect_doctors()
    env.runtime.bridge.startup()
    report = env.runtime.bridge.poll("all")
    queued = Counter(job.kind for job in Job.select(Job.kind).where(Job.state == "pending"))
    Job.update(run_after=datetime.now(UTC) + timedelta(days=1)).where(Job.state == "pending").execute()
    close_database()
    env.google.call(_setattr, "latency", GOOGLE_LATENCY)
    env.kivicare.call(_setattr, "latency", KIVICARE_LATENCY)
    env.kivicare.call(_setattr, "latency_per_row", KIVICARE_PER_ROW)
    say(f"scale-out: {len(env.seeded['doctors'])} doctors connected, {report.listed} appointments listed, "
        f"jobs queued {dict(queued)} in {time.monotonic() - began:.0f} s")
    return dict(queued)


def _start_worker(env_vars: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sidecar", "worker"], cwd=ROOT, env=env_vars,
                                stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _run_once(env: Environment, server, template: str, k: int, expected: int, timeout: float, say,
              threads: int = 2) -> dict:
    calendar_ids = list(env.calendars.values())
    env.google.call(_clear_calendars, calendar_ids)
    env.reset_requests()
    refused_before = env.google.call(_method, "limit_counts")["refused"]
    url = _clone(server, template, f"scaleout_{k}")
    port = free_port()
    settings = {**env.settings, "database.url": url, "google.requests_per_second": max(1, DEFAULT_RATE // k),
                "web.port": port, "web.public_url": f"http://127.0.0.1:{port}", "bridge.workers": threads}
    workdir = env.workdir / f"k{k}"
    workdir.mkdir(exist_ok=True)
    variables = sidecar_env(settings, workdir)
    serve = Sidecar(variables, workdir / "serve.log", port)
    logs = [workdir / f"worker-{n}.log" for n in range(1, k)]
    workers: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        serve.start()
        workers = [_start_worker(variables, log) for log in logs]
        if not serve.wait_ready(timeout=60):
            raise RuntimeError(f"serve did not start; see {workdir / 'serve.log'}")
        deadline = time.monotonic() + 60
        while not all(log.exists() and READY in log.read_text() for log in logs):
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"a worker did not start; see {workdir}")
            time.sleep(0.1)
        ready_s = time.monotonic() - started
        pids = [serve.pid, *(w.pid for w in workers)]
        cpu_before, load = cpu_seconds(*pids), os.getloadavg()[0]
        fake_before = cpu_seconds(env.google.pid)
        released_at = time.time()
        released = _set_due(url, datetime.now(UTC))
        deadline = time.monotonic() + timeout
        made: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            made = env.google.call(_our_events, calendar_ids)
            if len(made) >= expected:
                break
            time.sleep(0.5)
        cpu, fake_cpu = cpu_seconds(*pids) - cpu_before, cpu_seconds(env.google.pid) - fake_before
        last = max((datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() for _a, created in made),
                   default=time.time())
        per_appointment = Counter(appointment for appointment, _c in made)
        elapsed = max(last - released_at, 1e-3)
        figures = {
            "processes": k, "released": released, "events": len(per_appointment), "expected": expected,
            "complete": len(per_appointment) >= expected, "seconds": elapsed,
            "events_per_s": len(per_appointment) / elapsed,
            "duplicates": sum(n - 1 for n in per_appointment.values()),
            "google_requests": env.google.call(_api_requests),
            "refused": env.google.call(_method, "limit_counts")["refused"] - refused_before,
            "rate_per_process": settings["google.requests_per_second"], "ready_s": ready_s,
            "cpu_per_event_ms": 1000 * cpu / max(len(per_appointment), 1), "load_before": load,
            "fake_cpu_per_event_ms": 1000 * fake_cpu / max(len(per_appointment), 1),
        }
    finally:
        stopping = time.monotonic()
        for proc in [*workers, serve.proc]:
            if proc is not None and proc.poll() is None:
                proc.terminate()  # all at once: each gets its own few seconds
        for proc in workers:
            _stop(proc)
        workers_stop_s = time.monotonic() - stopping
        serve.stop()
        stop_s = time.monotonic() - stopping
    figures["stop_s"], figures["workers_stop_s"] = stop_s, workers_stop_s
    figures["jobs"] = _job_states(url)
    say(f"scale-out: {k} process(es): {figures['events']}/{expected} events in {figures['seconds']:.1f} s = "
        f"{figures['events_per_s']:.1f} events/s, {figures['duplicates']} duplicates, "
        f"{figures['refused']} refused, jobs {figures['jobs']}; up in {figures['ready_s']:.1f} s, "
        f"{figures['cpu_per_event_ms']:.0f} ms CPU per event (Google sandbox "
        f"{figures['fake_cpu_per_event_ms']:.0f} ms), load {figures['load_before']:.1f} before; workers "
        f"stopped in {figures['workers_stop_s']:.1f} s, serve in {figures['stop_s']:.1f} s")
    return figures


def run(args, say) -> dict:
    """Figures of the scale-out runs: ``{"doctors", "appointments", "runs": [per-k dict], "skipped"}``.

    ``args`` may carry ``scaleout_doctors``, ``scaleout_appointments``, ``scaleout_workers`` and
    ``scaleout_timeout`` (seconds per run); anything absent takes this module's defaults. Never raises
    for a missing PostgreSQL: ``skipped`` then says why.
    """
    sys.path.insert(0, str(ROOT))
    from tests.reliability.dbservers import PostgresServer
    doctors = getattr(args, "scaleout_doctors", None) or DOCTORS
    appointments = getattr(args, "scaleout_appointments", None) or APPOINTMENTS
    ks = tuple(getattr(args, "scaleout_workers", None) or WORKERS)
    timeout = getattr(args, "scaleout_timeout", None) or 120.0
    threads = getattr(args, "scaleout_threads", None) or THREADS
    figures = {"doctors": doctors, "appointments": appointments, "runs": [], "skipped": PostgresServer.missing(),
               "threads": threads}
    if figures["skipped"]:
        say(f"scale-out not measured: {figures['skipped']}")
        return figures
    began = time.monotonic()
    server = PostgresServer().start()
    try:
        template = "scaleout_template"
        template_url = server.create_database(template)
        with Environment(doctors=doctors, appointments=appointments, say=say,
                         extra={"database.url": template_url}) as env:
            figures["queued"] = _prepare(env, say)
            expected = env.seeded["appointments"]
            for k in ks:
                figures["runs"].append(_run_once(env, server, template, k, expected, timeout, say, threads))
            if all(r["complete"] and not r["duplicates"] for r in figures["runs"]):
                shutil.rmtree(env.workdir, ignore_errors=True)  # kept (with the logs) when a run went wrong
            else:
                say(f"scale-out: logs kept in {env.workdir}")
    finally:
        server.stop()
    figures["wall_s"] = time.monotonic() - began
    return figures


def _grew(runs: list[dict], run: dict) -> bool | None:
    """True when ``run`` has at least GROWTH × the throughput of the run with half as many processes
    (or the nearest fewer); None for the first run."""
    fewer = [r for r in runs if r["processes"] < run["processes"]]
    if not fewer:
        return None
    half = min(fewer, key=lambda r: abs(r["processes"] - run["processes"] / 2))
    return run["events_per_s"] >= GROWTH * half["events_per_s"]


def rows(figures: dict) -> list[str]:
    """Markdown rows: scenario | figure | ours | baseline | ratio | target | verdict (one per process count)."""
    scenario = SCENARIO.format(doctors=figures["doctors"])
    if figures.get("skipped"):
        return [f"| {scenario} | throughput with 1, 2, 4 worker processes | not measured: {figures['skipped']} "
                f"| | | grows with workers | **not met** |"]
    out = []
    for run in figures["runs"]:
        grew = _grew(figures["runs"], run)
        sound = run["complete"] and run["duplicates"] == 0
        ok = sound and grew is not False
        plural = "es" if run["processes"] > 1 else ""
        extra = "" if run["complete"] else f" ({run['events']}/{run['expected']} events)"
        extra += f", {run['duplicates']} duplicates" if run["duplicates"] else ""
        out.append(f"| {scenario} | throughput with {run['processes']} worker process{plural} "
                   f"| {run['events_per_s']:.1f} events/s{extra} | | | grows with workers "
                   f"| {'met' if ok else '**not met**'} |")
    return out


def notes(figures: dict) -> str:
    """What the scale-out rows mean and how they were measured."""
    if figures.get("skipped") or not figures["runs"]:
        return ""
    first = figures["runs"][0]
    speedups = ", ".join(f"{r['processes']}: {r['events_per_s'] / first['events_per_s']:.2f}×"
                         for r in figures["runs"])
    details = "; ".join(f"{r['processes']} process(es): {r['events']} events in {r['seconds']:.1f} s, "
                        f"{r['google_requests'] / max(r['events'], 1):.2f} Google requests and "
                        f"{r['cpu_per_event_ms']:.0f} ms of the sidecar's CPU per event (the Google sandbox's: "
                        f"{r['fake_cpu_per_event_ms']:.0f} ms), load average {r['load_before']:.1f} "
                        f"before, "
                        f"{r['refused']} refused by the per-user limit, "
                        f"google.requests_per_second {r['rate_per_process']}" for r in figures["runs"])
    return (f"**Scale-out.** {figures['doctors']} doctors, {figures['appointments']} appointments (a push each), "
            f"one PostgreSQL database; k processes = one `serve` + k−1 `python -m sidecar worker`, each with "
            f"`bridge.workers` = {figures.get('threads', THREADS)} job threads (few, so that one process waits on Google "
            f"rather than on this machine's CPU). The queue is filled first and released at once; throughput = "
            f"events ÷ (last event created − release). \"Grows\" = at least {GROWTH}× the run with half the "
            f"processes. Speed-up over one process: {speedups}. On this {os.cpu_count()}-CPU machine the "
            f"sidecar's own CPU per event bounds the whole: {os.cpu_count()} CPU ÷ "
            f"{first['cpu_per_event_ms']:.0f} ms ≈ {1000 * (os.cpu_count() or 1) / first['cpu_per_event_ms']:.0f} "
            f"events/s, the sandboxes and PostgreSQL sharing the same CPUs. {details}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.scaleout", description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="40 doctors, 120 appointments, 1 and 2 processes")
    parser.add_argument("--doctors", dest="scaleout_doctors", type=int)
    parser.add_argument("--appointments", dest="scaleout_appointments", type=int)
    parser.add_argument("--workers", dest="scaleout_workers", type=int, nargs="+")
    parser.add_argument("--timeout", dest="scaleout_timeout", type=float, help="seconds per run (default 120)")
    args = parser.parse_args(argv)
    if args.small:
        args.scaleout_doctors = args.scaleout_doctors or SMALL["doctors"]
        args.scaleout_appointments = args.scaleout_appointments or SMALL["appointments"]
        args.scaleout_workers = args.scaleout_workers or SMALL["workers"]
    say = lambda *a: print("[scale-out]", *a, flush=True)  # noqa: E731
    figures = run(args, say)
    print("\n".join(rows(figures)))
    note = notes(figures)
    if note:
        print("\n" + note)
    if "wall_s" in figures:
        print(f"\nwall time {figures['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
