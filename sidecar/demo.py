"""``python -m sidecar demo``: the main job, wired to the sandbox KiviCare and sandbox Google.

Starts both sandboxes on loopback, a fresh SQLite database under ``var/demo/``, the web pages and
the bridge loop; creates an admin account; connects doctor Anna Schmidt through the real OAuth
flow over HTTP (her Connect link → Google's consent → our callback → calendar choice → the first-sync
preview, confirmed), exactly as a doctor's browser would; waits for the first sync and prints what
landed in Google. Serves until Ctrl-C. Run it again for a fresh start (``--keep`` keeps the database).
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from html import unescape
from pathlib import Path
from urllib.parse import urljoin

import requests

from .config import ROOT, Config

DEMO_DIR = ROOT / "var" / "demo"
DOCTOR_ID, DOCTOR_EMAIL, TELEMEDICINE_SERVICE = 3, "anna.schmidt@riverside-clinic.test", 3


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html)
    return match.group(1) if match else ""


def connect_over_http(public_url: str, connect_link: str, calendar_name: str = "Clinic appointments") -> str:
    """Follow a doctor's Connect link like a browser without JavaScript; returns the final page's text."""
    session = requests.Session()
    page = session.get(connect_link, timeout=20)
    page.raise_for_status()
    # The Connect page links (or posts) to Google; the sandbox approves at once and redirects back.
    match = re.search(r'<form[^>]*action="([^"]+)"[^>]*method="post"', page.text, re.I)
    if match:
        page = session.post(urljoin(page.url, match.group(1)), data={"csrf_token": _csrf(page.text)}, timeout=20)
    else:
        href = re.search(r'href="([^"]*(?:oauth|authorize|google)[^"]*)"', page.text, re.I)
        page = session.get(urljoin(page.url, href.group(1).replace("&amp;", "&")), timeout=20)
    page.raise_for_status()
    # Calendar choice: pick the named calendar's radio button.
    form = re.search(r'<form[^>]*action="([^"]*)"[^>]*method="post"', page.text, re.I)
    radios = re.findall(r'<input[^>]*type="radio"[^>]*>', page.text)
    value = ""
    for radio in radios:
        found = re.search(r'value="([^"]+)"', radio)
        if found and not value:
            value = found.group(1)
    label = re.search(r'value="([^"]+)"[^>]*>\s*(?:</?[^>]+>\s*)*' + re.escape(calendar_name), page.text)
    if label:
        value = label.group(1)
    name = re.search(r'type="radio"[^>]*name="([^"]+)"', page.text) or re.search(
        r'name="([^"]+)"[^>]*type="radio"', page.text)
    done = session.post(urljoin(page.url, form.group(1) if form and form.group(1) else page.url),
                        data={"csrf_token": _csrf(page.text), (name.group(1) if name else "calendar_id"): value},
                        timeout=20)
    done.raise_for_status()
    # The first-sync preview ("N events will be created in calendar X, M busy blocks"): start the sync.
    confirm = re.search(r'<form[^>]*action="([^"]+)"[^>]*id="confirm-first-sync"', done.text)
    if confirm:
        summary = re.search(r'id="preview-summary">([^<]+)<', done.text)
        if summary:
            print(f"First-sync preview: {unescape(summary.group(1)).strip()}", flush=True)
        done = session.post(urljoin(done.url, unescape(confirm.group(1))), data={"csrf_token": _csrf(done.text)},
                            timeout=60)
        done.raise_for_status()
    return done.text


def run_demo(port: int = 8300, keep: bool = False) -> int:
    from sandbox.google import GoogleSandbox
    from sandbox.kivicare import KiviCareSandbox
    from sandbox.wiring import sidecar_settings
    from wp_bridge.loop import BridgeLoop

    from .cli import print_table, serve_web, status_rows, _wait_for_signal
    from .runtime import Runtime
    from .storage.models import Connection, Job, MeetMapping, utcnow
    from .web import create_admin, create_connect_link

    if not keep and DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    kivicare = KiviCareSandbox()
    kivicare.start(port=port + 1)
    google = GoogleSandbox(conference_pending_reads=1)
    google.start(port=port + 2)
    public_url = f"http://127.0.0.1:{port}"
    cfg = Config(None, environ={}, overrides={
        **sidecar_settings(kivicare, google),
        "database.url": f"sqlite:///{DEMO_DIR / 'sidecar.db'}", "security.key_file": str(DEMO_DIR / "sidecar.key"),
        "web.host": "127.0.0.1", "web.port": port, "web.public_url": public_url, "bridge.poll_seconds": 10,
    })
    runtime = Runtime(cfg)
    if not cfg.get("sync.telemedicine_services"):
        cfg.set("sync.telemedicine_services", [TELEMEDICINE_SERVICE])  # "Online Follow-up" gets Google Meet
    password = secrets.token_urlsafe(12)
    create_admin(runtime, "admin", password, replace=True)
    serve_web(runtime, "127.0.0.1", port)
    loop = BridgeLoop(runtime)
    loop.start()

    print(f"Sandbox KiviCare: {kivicare.base_url}   sandbox Google: {google.base_url}", flush=True)
    google.auto_approve(DOCTOR_EMAIL)  # the doctor clicks "Allow" on Google's consent screen
    link = create_connect_link(runtime, DOCTOR_ID)
    print(f"Connecting Anna Schmidt through her Connect link: {link}", flush=True)
    connect_over_http(public_url, link)

    deadline = time.time() + 60
    connection = Connection.get_or_none(Connection.doctor == DOCTOR_ID)
    while time.time() < deadline:
        connection = Connection.get_or_none(Connection.doctor == DOCTOR_ID)
        meet = MeetMapping.select().where((MeetMapping.hangout_link != "") & (MeetMapping.state == "active")).count()
        pending = Job.select().where(Job.state.in_(("pending", "running"))
                                     & (Job.run_after <= utcnow())).count()
        if connection and connection.state == "active" and connection.synced_count and meet and not pending:
            break
        time.sleep(1)
    print()
    print_table(status_rows(runtime))
    if connection and connection.calendar_id:
        print(f"\nEvents in Google calendar {connection.calendar_name!r} ({connection.account_email}):")
        for event in sorted(google.events(connection.calendar_id, include_cancelled=False),
                            key=lambda e: e["start"].get("dateTime", "")):
            print(f"  {event['start'].get('dateTime', '')[:16]}  {event.get('summary', '')[:40]:40}  "
                  f"{event.get('hangoutLink', '')}")
    print(f"\nDashboard: {public_url}/   (user: admin   password: {password})")
    print(f"Google sandbox events as JSON: {google.base_url}/__sandbox__/state")
    print("Press Ctrl-C to stop.", flush=True)
    _wait_for_signal()
    loop.stop()
    kivicare.stop()
    google.stop()
    return 0
