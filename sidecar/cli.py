"""``python -m sidecar``: serve (the main job), worker, sync-once, status, demo, create-admin, setup-link."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from . import config as config_module

log = logging.getLogger("sidecar")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Library loggers may print URLs with tokens or event bodies at debug level; keep them quiet.
    for noisy in ("googleapiclient", "google_auth_httplib2", "urllib3", "oauthlib", "requests_oauthlib",
                  "werkzeug", "waitress"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _runtime(args):
    from .runtime import Runtime
    return Runtime(config_module.load(args.config))


def serve_web(runtime, host: str, port: int) -> threading.Thread:
    """Serve the Flask app with waitress in a daemon thread."""
    from waitress import create_server

    from .web import create_app
    server = create_server(create_app(runtime), host=host, port=port, threads=8, ident="kivicare-sidecar")
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    thread.server = server  # type: ignore[attr-defined]
    return thread


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        pass


def cmd_serve(args) -> int:
    from wp_bridge.loop import BridgeLoop

    from .storage.models import AdminUser
    from .web import create_setup_link
    runtime = _runtime(args)
    cfg = runtime.cfg
    serve_web(runtime, cfg.get("web.host"), int(cfg.get("web.port")))
    print(f"Sidecar pages: {cfg.get('web.public_url')}", flush=True)
    if not AdminUser.select().exists():
        print(f"First run: create the admin account here (valid 24 h): {create_setup_link(runtime)}", flush=True)
    loop = BridgeLoop(runtime)
    loop.start()
    _wait_for_signal()
    loop.stop()
    return 0


STOP_SECONDS = 5  # after SIGTERM/SIGINT, how long running jobs may take to finish
SQLITE_REFUSED = ("python -m sidecar worker needs a PostgreSQL or MariaDB database ([database] url); "
                  "several processes on one SQLite file is not a supported deployment. With SQLite, run "
                  "`python -m sidecar serve` alone and raise [bridge] workers for more parallel jobs.")


def cmd_worker(args) -> int:
    """Job workers only (``bridge.workers`` threads, ``wp_bridge.loop.BridgeLoop``): no poller, no web pages.

    Extra processes beside one ``serve``, sharing its PostgreSQL or MariaDB database: ``jobs.claim``
    leases each job to one worker (``FOR UPDATE SKIP LOCKED``). Refused on SQLite (exit 2). SIGTERM or
    SIGINT stops it: running jobs get ``STOP_SECONDS`` to finish; one cut short is due again when its lease
    runs out (``jobs.LEASE``) or at once when a process on this host starts (dead-lease release).
    The per-account Google rate (``google.requests_per_second``) is per process: see README "More workers".
    """
    from wp_bridge import jobs
    from wp_bridge.loop import BridgeLoop
    cfg = config_module.load(args.config)
    if cfg.database_url().split(":", 1)[0].lower().startswith("sqlite"):
        print(f"Refusing to run: {SQLITE_REFUSED}", file=sys.stderr)
        return 2
    from .runtime import Runtime
    runtime = Runtime(cfg)
    released = jobs.release_dead_leases()
    if released:
        log.info("released %d jobs left by a stopped process", released)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the threads start: a stop is never missed
        signal.signal(sig, lambda *_: stop.set())
    loop = BridgeLoop(runtime)
    loop.start(poller=False)
    print(f"Worker running {loop.workers} job threads (pid {os.getpid()}), Google "
          f"{cfg.get('google.requests_per_second')} requests/s per account in this process.", flush=True)
    while not stop.wait(1):
        pass
    # One deadline for all threads: a thread keeps taking due jobs until the queue is empty, so the rest
    # is cut short at exit (daemon threads) and left to the lease release above or the lease's end.
    deadline = time.monotonic() + STOP_SECONDS
    loop.stop(timeout=0)
    for thread in loop.threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = sum(thread.is_alive() for thread in loop.threads)
    print("Worker stopped." + (f" {busy} job threads were cut short; their jobs run again." if busy else ""),
          flush=True)
    return 0


def cmd_sync_once(args) -> int:
    from wp_bridge.bridge import RefuseToRun
    from wp_bridge.kivicare import KiviCareError
    runtime = _runtime(args)
    try:
        runtime.bridge.startup()
        report = runtime.bridge.sync_once()
    except RefuseToRun as exc:
        print(f"Refusing to run: {exc}", file=sys.stderr)
        return 3
    except KiviCareError as exc:
        print(f"KiviCare could not be read: {exc}", file=sys.stderr)
        return 2
    print(f"listed {report.listed}, fetched {report.fetched}, skipped {report.rejected}, "
          f"deleted {report.deleted}, jobs {report.enqueued}")
    return 0


def status_rows(runtime) -> list[dict]:
    """Per-doctor status (the ``status`` command and the demo): plain values, no patient data."""
    from wp_bridge import jobs
    from wp_bridge.preview import HELD, display_state

    from .storage.models import Connection, Doctor, Job, MeetMapping
    rows = []
    for doctor in Doctor.select().order_by(Doctor.id):
        connection = Connection.get_or_none((Connection.doctor == doctor.id) & (Connection.provider == "google"))
        pending = 0
        events = 0
        if connection:
            pending = Job.select().where(Job.state.in_(("pending", "running"))
                                         & jobs.of_connection(connection.id)).count()
            events = MeetMapping.select().where((MeetMapping.connection == connection.id)
                                                & (MeetMapping.state == "active")).count()
        rows.append({
            "doctor": f"{doctor.id} {doctor.name}",
            # "held": connected, but the first sync waits for someone to confirm its preview.
            "state": (("held (confirm the first-sync preview)" if display_state(connection) == HELD
                       else connection.state) if connection else "not connected"),
            "account": connection.account_email if connection else "",
            "calendar": connection.calendar_name if connection else "",
            "last sync": connection.last_sync_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            if connection and connection.last_sync_at else "",
            "synced": connection.synced_count if connection else 0,
            "failed": connection.failed_count if connection else 0,
            "events": events,
            "pending jobs": pending,
        })
    return rows


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("No doctors known yet. Connect one from the Connect page.")
        return
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers))
    for row in rows:
        print("  ".join(str(row[h]).ljust(widths[h]) for h in headers))


def cmd_status(args) -> int:
    runtime = _runtime(args)
    print_table(status_rows(runtime))
    poll = runtime.get_state("poll")
    if poll:
        print(f"\nLast poll: {'ok' if poll.get('ok') else 'FAILED: ' + poll.get('error', '')} at {poll.get('at')}")
    for warning in runtime.get_state("addons") or []:
        print(f"Warning: {warning}")
    if runtime.get_state("e2ee"):
        print("Warning: KiviCare encrypts its answers for the sidecar's user: someone opened the KiviCare "
              "dashboard with it. Give the sidecar a WordPress user nobody logs in with.")
    return 0


def cmd_create_admin(args) -> int:
    import getpass

    from .web import create_admin
    runtime = _runtime(args)
    password = args.password or getpass.getpass("Password (12+ characters): ")
    try:
        create_admin(runtime, args.username, password)
    except ValueError as exc:
        print(f"Not created: {exc}", file=sys.stderr)
        return 2
    print(f"Admin account {args.username!r} created.")
    return 0


def cmd_setup_link(args) -> int:
    from .web import create_setup_link
    print(create_setup_link(_runtime(args)))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(port=args.port, keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar", description="KiviCare ↔ Google Calendar sidecar")
    parser.add_argument("--config", help="path to config.ini (default: SIDECAR_CONFIG or ./config.ini)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the web pages and the sync loop (the main job)").set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run extra job workers beside serve (PostgreSQL or MariaDB only)").set_defaults(
        func=cmd_worker)
    sub.add_parser("sync-once", help="poll KiviCare once and push every change to Google").set_defaults(
        func=cmd_sync_once)
    sub.add_parser("status", help="per-doctor sync status").set_defaults(func=cmd_status)
    demo = sub.add_parser("demo", help="the main job against local sandbox KiviCare and Google")
    demo.add_argument("--port", type=int, default=8300)
    demo.add_argument("--keep", action="store_true", help="keep the previous demo database")
    demo.set_defaults(func=cmd_demo)
    admin = sub.add_parser("create-admin", help="create a local admin account")
    admin.add_argument("username")
    admin.add_argument("--password")
    admin.set_defaults(func=cmd_create_admin)
    sub.add_parser("setup-link", help="print a one-time link to create the first admin").set_defaults(
        func=cmd_setup_link)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return args.func(args)
