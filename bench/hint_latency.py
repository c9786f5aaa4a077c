"""Benchmark: how fast an appointment change reaches Google once the companion plugin's hint arrives.

Runs the real sidecar (web pages + bridge loop, as ``serve`` does) against the KiviCare sandbox with
the companion plugin emulated (it sends signed hints on every staff action) and the Google sandbox.
The poll interval is an hour, so only hints can make changes fast. For each change the clock
starts when the sidecar received the hint (``/hooks/kivicare`` answered) and stops when the event in
Google shows the new start time. Prints p50, p95 and max in seconds.

    .venv/bin/python bench/hint_latency.py [--changes 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from sandbox.google import GoogleSandbox  # noqa: E402
from sandbox.kivicare import KiviCareSandbox  # noqa: E402
from sandbox.wiring import sidecar_settings  # noqa: E402
from sidecar.calendars.google_oauth import authorization_url, finish_authorization  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.connections import choose_calendar, complete_authorization  # noqa: E402
from wp_bridge import preview  # noqa: E402
from sidecar.runtime import Runtime  # noqa: E402
from sidecar.web import create_app  # noqa: E402
from wp_bridge.loop import BridgeLoop  # noqa: E402

ANNA, EMAIL = 3, "anna.schmidt@riverside-clinic.test"
SECRET = "bench-companion-secret-0123456789abcdef"


def free_port() -> int:
    server = make_server("127.0.0.1", 0, None)
    port = server.server_port
    server.server_close()
    return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=40)
    args = parser.parse_args()

    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    kivicare = KiviCareSandbox()
    kivicare.start()
    kivicare.install_companion(SECRET, sidecar_url=public_url)
    google = GoogleSandbox(conference_pending_reads=0)
    google.start()
    data = Path(tempfile.mkdtemp(prefix="bench-hints-"))
    runtime = Runtime(Config(None, environ={}, overrides={
        **sidecar_settings(kivicare, google), "companion.secret": SECRET,
        "database.url": f"sqlite:///{data}/sidecar.db", "security.key_file": str(data / "sidecar.key"),
        "web.public_url": public_url, "bridge.poll_seconds": 3600, "bridge.workers": 2}))
    web = make_server("127.0.0.1", port, create_app(runtime), threaded=True)
    threading.Thread(target=web.serve_forever, daemon=True).start()

    # Connect Anna through the real OAuth flow.
    google.auto_approve(EMAIL)
    answer = requests.get(authorization_url(runtime.cfg, runtime.box, ANNA), allow_redirects=False, timeout=10)
    query = parse_qs(urlparse(answer.headers["Location"]).query)
    doctor, credentials = finish_authorization(runtime.cfg, runtime.box, state=query["state"][0], code=query["code"][0])
    connection = choose_calendar(runtime, complete_authorization(runtime, doctor, credentials),
                                 google.calendar_id(EMAIL, "Clinic appointments"))
    preview.confirm(runtime, connection, by="bench")  # the first-sync preview, confirmed
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    mapping_id = next(s.id for s in runtime.kivicare().list_doctor_services(ANNA) if s.service_id == 1)

    loop = BridgeLoop(runtime)
    loop.start()
    time.sleep(1.5)  # the loop's first poll
    latencies = []
    day = datetime.now(timezone.utc).replace(hour=6, minute=0, second=0, microsecond=0) + timedelta(days=20)
    appointment_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=day,
                                                 service_mapping_ids=[mapping_id])
    for n in range(args.changes):
        new_start = day + timedelta(minutes=30 * (n + 1))
        sent = len(kivicare.companion.hints)
        kivicare.reschedule(appointment_id, new_start)
        kivicare.companion.flush_hints(timeout=5)
        received = time.monotonic()  # flush returns once the sidecar answered the hint
        if len(kivicare.companion.hints) <= sent:
            print("hint not sent", file=sys.stderr)
            return 1
        deadline = received + 30
        while time.monotonic() < deadline:
            events = [e for e in google.events(connection.calendar_id, include_cancelled=False)
                      if (e.get("extendedProperties") or {}).get("private", {}).get("kcAppointmentId") == appointment_id]
            if events and datetime.fromisoformat(events[0]["start"]["dateTime"].replace("Z", "+00:00")) == new_start:
                latencies.append(time.monotonic() - received)
                break
            time.sleep(0.01)
        else:
            print(f"change {n} did not reach Google in 30 s", file=sys.stderr)
    loop.stop()
    web.shutdown()
    print(f"hint → Google: {len(latencies)} changes, p50 {statistics.median(latencies):.3f} s, "
          f"p95 {percentile(latencies, 0.95):.3f} s, max {max(latencies):.3f} s "
          f"(target p95 < 2 s; poll interval 3600 s, so every change rode on its hint)")
    return 0 if len(latencies) == args.changes else 1


if __name__ == "__main__":
    sys.exit(main())
