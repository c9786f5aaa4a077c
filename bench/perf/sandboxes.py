"""The benchmark's sandboxes, each in its own process, and what drives them.

Both sandboxes run in a child process (``multiprocessing``, fork) with simulated latency (Google 100 ms
per request; KiviCare 70 ms + 1.4 ms per appointment listed, /work/shared/kivicare/API.md "Measured
cost") and, for Google, the per-user limit of 600 requests/minute (403 rateLimitExceeded beyond it;
NOTES.md "Quotas"). The parent drives a child through a pipe (``Remote.call(fn, *args)`` runs
``fn(sandbox, *args)`` there): seeding doctors and appointments, reading request logs.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import requests

UTC = timezone.utc
GOOGLE_LATENCY = 0.100  # s per request
KIVICARE_LATENCY, KIVICARE_PER_ROW = 0.070, 0.0014  # s, s per appointment listed
USER_LIMIT = 600  # Google Calendar requests per user per minute
CALENDAR = "Clinic appointments"
PATIENTS = (5, 6, 7, 9)
GENERAL, VIDEO = 1, 2  # seeded kc_services: General Consultation (30 min), Video Consultation (telemedicine)
POLL_SECONDS = 5


# ---- a sandbox in its own process ------------------------------------------------------------------


def _serve(kind: str, knobs: dict, conn) -> None:
    """Child process: build and start the sandbox, then run the parent's calls ``(function, args)``
    on it (``function(sandbox, *args)``) until told to stop."""
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access-log line per request
    if kind == "google":
        from sandbox.google import GoogleSandbox as cls
    else:
        from sandbox.kivicare import KiviCareSandbox as cls
    sb = cls(**knobs)
    sb.start()
    conn.send(sb.base_url)
    while True:
        fn, args = conn.recv()
        if fn is None:
            sb.stop()
            conn.send(None)
            return
        try:
            conn.send(("ok", fn(sb, *args)))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", traceback.format_exc()))


class Remote:
    """A sandbox running in a child process; ``call(fn, *args)`` runs ``fn(sandbox, *args)`` there."""

    def __init__(self, kind: str, **knobs):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(kind, knobs, child), daemon=True, name=f"{kind}-sandbox")
        self.proc.start()
        self.base_url = self.conn.recv()
        self.lock = threading.Lock()
        self.pid = self.proc.pid

    def call(self, fn, *args):
        with self.lock:
            self.conn.send((fn, args))
            status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"sandbox call {fn.__name__} failed:\n{value}")
        return value

    def attr(self, name: str):
        return self.call(_getattr, name)

    def stop(self) -> None:
        with self.lock:
            self.conn.send((None, ()))
            self.conn.recv()
        self.proc.join(timeout=10)


def _getattr(sb, name):
    value = getattr(sb, name)
    return value() if callable(value) else value


def _setattr(sb, name, value):
    setattr(sb, name, value)


def _method(sb, name, *args):
    return getattr(sb, name)(*args)


def _google_state(sb) -> dict:
    """What the parent needs of the Google sandbox: its URLs and client."""
    return {k: getattr(sb, k) for k in ("client_id", "client_secret", "auth_uri", "token_uri", "revoke_uri",
                                        "api_endpoint")}


def _kivicare_state(sb) -> dict:
    return {"base_url": sb.base_url, "username": sb.username, "app_password": sb.app_password}


def _google_requests(sb) -> list[dict]:
    return [{"method": r["method"], "path": r["path"], "status": r["status"], "email": r["auth_email"]}
            for r in sb.requests]


def _kivicare_requests(sb) -> list[dict]:
    with sb._lock:
        return [{"method": r.get("method"), "path": r.get("path")} for r in sb.requests]


def _add_google_doctors(sb, emails: list[str]) -> dict:
    for email in emails:
        sb.add_account(email, calendars=[[CALENDAR, "owner"]], timezone="Europe/Paris")
    return {email: sb.calendar_id(email, CALENDAR) for email in emails}


def _live_events(sb, calendar_ids: list[str]) -> int:
    # Counted, not rendered: rendering (deep copies of 10,000 events under the sandbox's lock) every half
    # second took a third of the sandbox's CPU and stalled its answers to the sidecar being measured.
    return sb.count_events(calendar_ids, include_cancelled=False)


def _seed_kivicare(sb, doctors: int, appointments: int, first_day: str) -> dict:
    """``doctors`` new doctors (ids returned) with a General and a Video (telemedicine) service, and
    ``appointments`` appointments spread over business days from ``first_day`` (30-min slots, 09:00-17:00
    local), every third one telemedicine."""
    from sandbox.kivicare import DOCTOR
    ids, emails = [], []
    for n in range(doctors):
        email = f"perf.doctor{n:03d}@riverside-clinic.test"
        doctor = sb._add_user(username=f"perfdoc{n:03d}", email=email, first_name="Perf", last_name=f"Doctor {n}",
                              role=DOCTOR, password=f"pw-{n}", clinics=[1], meta={})
        general = sb._add_mapping(service_id=GENERAL, doctor_id=doctor, clinic_id=1, charges=50, duration=30,
                                  telemed="no")
        video = sb._add_mapping(service_id=VIDEO, doctor_id=doctor, clinic_id=1, charges=40, duration=30,
                                telemed="yes")
        for day in ("mon", "tue", "wed", "thu", "fri"):
            sb._add_session(doctor_id=doctor, clinic_id=1, day=day, start="09:00:00", end="17:00:00", time_slot=30)
        ids.append((doctor, general, video))
        emails.append(email)
    day, slot, made, telemed = date.fromisoformat(first_day), 0, 0, 0
    zone = sb._site_zone()
    while made < appointments:
        while day.weekday() >= 5:
            day += timedelta(days=1)
        for doctor, general, video in ids:
            if made >= appointments:
                break
            local = datetime.combine(day, datetime.min.time()).replace(hour=9) + timedelta(minutes=30 * slot)
            is_video = made % 3 == 0
            sb.create_appointment(doctor_id=doctor, patient_id=PATIENTS[made % len(PATIENTS)],
                                  start_utc=local.replace(tzinfo=zone).astimezone(UTC),
                                  service_mapping_ids=[video if is_video else general])
            made, telemed = made + 1, telemed + is_video
        slot += 1
        if slot >= 16:
            slot, day = 0, day + timedelta(days=1)
    return {"doctors": [d for d, _g, _v in ids], "emails": emails, "appointments": made, "telemedicine": telemed,
            "last_day": day.isoformat()}


# ---- capacity ---------------------------------------------------------------------------------------

def hammer(url: str, *, seconds: float, clients: int, headers=None, auth=None, params=None) -> tuple[float, int]:
    """``clients`` threads GET ``url`` for ``seconds``; returns (answers per second, non-2xx answers)."""
    done, bad = [0] * clients, [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                answer = session.get(url, headers=headers, auth=auth, params=params, timeout=30)
                done[i] += 1
                bad[i] += answer.status_code >= 300
    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - began), sum(bad)


def google_token(google: Remote, state: dict, email: str) -> str:
    """An access token for ``email`` through the real code flow (auto-approved)."""
    from google_auth_oauthlib.flow import Flow
    redirect = "http://127.0.0.1:5999/oauth/callback"
    google.call(_method, "auto_approve", email)
    flow = Flow.from_client_config({"web": {"client_id": state["client_id"], "client_secret": state["client_secret"],
                                            "auth_uri": state["auth_uri"], "token_uri": state["token_uri"],
                                            "redirect_uris": [redirect]}},
                                   scopes=["https://www.googleapis.com/auth/calendar"], redirect_uri=redirect)
    url, _ = flow.authorization_url(access_type="offline", prompt="consent")
    answer = requests.get(url, allow_redirects=False, timeout=10)
    flow.fetch_token(authorization_response=answer.headers["Location"])
    google.call(_method, "auto_approve", None)
    return flow.credentials.token


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds the processes ``pids`` used so far (``/proc/<pid>/stat``; 0 for a gone one):
    what work cost whatever else the machine is doing (wall times on a shared machine include waiting)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")
