"""Chaos soak (issue 6, item 4): churn both ways under faults and SIGKILLs, then prove convergence.

What runs, all on loopback:

* the KiviCare sandbox (with the companion plugin emulated, so a doctor's move in Google can be applied
  in KiviCare) and the Google sandbox, as threads of this process, each with probabilistic faults
  (``fault_rate``): Google 20 % (403 rateLimitExceeded, 429, 500, 503, timeouts held beyond the
  client's 30 s, resets before and after the request was carried out), KiviCare 10 % (503, 500,
  timeouts held beyond the client's 60 s, resets); Google access tokens expire every minute
  (``expire_access_tokens``: the next call gets 401 and refreshes); every sync token is invalidated
  once, midway;
* the sidecar as a real subprocess, ``python -m sidecar serve`` (web pages, hooks and the bridge loop)
  configured by ``SIDECAR_*`` variables (temp SQLite database and key file, a free port, a 2 s poll),
  SIGKILLed at random (seeded) moments and restarted; a third of the kills are armed with
  ``kill_on_insert`` so they land between Google storing an insert and the sidecar's commit;
* seeded churn: clinic staff create, reschedule, change the status of (pending, check-in, check-out,
  cancel, re-book) and delete appointments of 2-3 connected doctors; the doctors move and delete
  some of their events in Google, edit titles (put back by design), and add and remove busy events;
  a few bad inputs (malformed KiviCare rows, odd Google events) are mixed in.

The doctors are connected once, through the real OAuth code flow, by this process before the sidecar
starts (same database and key file), as tests/conftest.py does.

Every action is recorded in a ledger that says what each appointment must end up as. To keep that
ledger exact, staff never touch an appointment after its doctor moved or deleted it in Google, the
doctor only acts on an appointment the sidecar has fully synced (its database, job queue and the
Google event agree with KiviCare), and a doctor's move always goes to a slot nothing ever used (so
the plugin never refuses it as taken). Conflicts (both sides changing the same appointment at once)
are therefore not part of this soak: tests/test_two_way.py covers their rules.

At the end faults and kills stop, the sidecar runs until quiet, and the soak checks: every appointment
in the sync window agrees between KiviCare and Google (booked/pending/checked-in/out: exactly one live
event with the right start, end and tentative flag; cancelled or deleted future ones: none; past
cancelled ones may keep theirs), no duplicate events, no lost change (KiviCare holds exactly what the
ledger says: staff changes, and the doctors' moves and deletions applied), no unintended cancellation,
the doctors' busy time equals the plugin's busy blocks, Meet links agree, no open conflict, no job
given up, every connection still active, and no unexpected traceback in the sidecar's log.

    .venv/bin/python bench/soak.py [--minutes 3] [--seed 6] [--doctors 3] [--report docs/RELIABILITY.md]

Exit status 0 when everything converged, 1 otherwise. ``run_soak(SoakOptions(...))`` is the same run
as a function (tests/reliability/test_soak_short.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from sandbox.google import GoogleSandbox  # noqa: E402
from sandbox.kivicare import MISSING, KiviCareSandbox  # noqa: E402
from sandbox.wiring import sidecar_settings  # noqa: E402

UTC = timezone.utc
DOCTORS = {3: "anna.schmidt@riverside-clinic.test", 4: "marc.dubois@riverside-clinic.test",
           8: "sofia.rossi@riverside-clinic.test"}
# doctor -> (General 30 min, Extended 45 min, Online Follow-up 20 min: telemedicine) mapping ids
SERVICES = {3: (1, 6, 3), 4: (4, 7, 5), 8: (8, 10, 9)}
TELEMEDICINE_SERVICE = 3  # kc_services id of "Online Follow-up"
PATIENTS = (5, 6, 7, 9)
CALENDAR = "Clinic appointments"
SECRET = "soak-companion-secret-0123456789abcdef0123"
EVENT_STATUSES = (1, 2, 3, 4)
EDIT_MARK = "Edited by the doctor"

#: Fault mixes. Timeouts hold a request beyond the sidecar's client timeout, so they are rarer than the
#: quick faults: a 31 s (Google) or 61 s (KiviCare) hold stalls one thread of the sidecar that long.
GOOGLE_KINDS = {"403_rate_limit": 3, "429": 3, "500": 3, "503": 3, "reset": 2, "reset_after": 2,
                "timeout": 1, "hang": 0.5}
KIVICARE_KINDS = {"503": 4, "500": 3, "reset": 2, "reset_after": 2, "timeout": 1, "hang": 0.5}
QUICK_GOOGLE_KINDS = {k: w for k, w in GOOGLE_KINDS.items() if k not in ("timeout", "hang")}
QUICK_KIVICARE_KINDS = {k: w for k, w in KIVICARE_KINDS.items() if k not in ("timeout", "hang")}

#: Tracebacks the sidecar may log without it being a bug (none so far): regexes on the exception line.
EXPECTED_TRACEBACKS: tuple[str, ...] = ()

log = logging.getLogger("soak")


# ---- options and results ------------------------------------------------------------------------------

@dataclass
class SoakOptions:
    minutes: float = 3.0
    seed: int = 6
    doctors: int = 3
    google_rate: float = 0.20
    kivicare_rate: float = 0.10
    google_kinds: dict = field(default_factory=lambda: dict(GOOGLE_KINDS))
    kivicare_kinds: dict = field(default_factory=lambda: dict(KIVICARE_KINDS))
    google_hold: float = 31.0  # the sidecar's Google client gives up after 30 s
    kivicare_hold: float = 61.0  # its KiviCare client after 60 s (the plugin client after 15 s)
    token_expiry_every: float = 60.0
    kill_every: tuple[float, float] = (12.0, 45.0)  # seconds between SIGKILLs (uniform)
    kill_on_insert_share: float = 1 / 3
    restart_after: tuple[float, float] = (0.5, 3.0)
    poll_seconds: int = 2
    actions_per_minute: float = 36.0
    doctor_share: float = 0.35
    initial_per_doctor: int = 10
    keep_upcoming: int = 12  # no deletion below this many upcoming appointments (the mass-change guards)
    bad_inputs: bool = True
    conflict_rule: str = "kivicare"  # the sidecar's sync.conflict_rule (kivicare, google, recent)
    settle_seconds: float = 420.0
    report: Path | None = None
    workdir: Path | None = None
    quiet: bool = False


@dataclass
class SoakResult:
    ok: bool
    failures: list[str]
    figures: dict
    options: SoakOptions
    workdir: Path


# ---- small helpers ---------------------------------------------------------------------------------

def instant(value: dict | str | None, zone: str = "UTC") -> datetime | None:
    """An event's start/end (``{dateTime}`` or ``{date}``) or an ISO string as aware UTC."""
    if value is None:
        return None
    if isinstance(value, dict):
        if value.get("dateTime"):
            return datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00")).astimezone(UTC)
        if value.get("date"):
            return datetime.fromisoformat(value["date"]).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def private_of(event: dict) -> dict:
    return (event.get("extendedProperties") or {}).get("private") or {}


def sidecar_env(settings: dict, workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env["SIDECAR_CONFIG"] = str(workdir / "absent.ini")
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    for name, value in settings.items():
        section, key = name.split(".")
        env[f"SIDECAR_{section.upper()}_{key.upper()}"] = (",".join(map(str, value)) if isinstance(value, list)
                                                          else str(value))
    return env


# ---- the sidecar subprocess ---------------------------------------------------------------------------

class Sidecar:
    """``python -m sidecar serve`` as a subprocess; every incarnation appends to one log file."""

    def __init__(self, env: dict, log_path: Path, port: int):
        self.env, self.log_path, self.port = env, log_path, port
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.starts += 1
            with open(self.log_path, "ab") as out:
                out.write(f"\n=== soak: sidecar start #{self.starts} at {datetime.now(UTC).isoformat()} ===\n".encode())
                out.flush()
                self.proc = subprocess.Popen([sys.executable, "-m", "sidecar", "serve"], cwd=ROOT, env=self.env,
                                             stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=30)

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGKILL)
                    self.proc.wait(timeout=30)

    def wait_ready(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return True
            except requests.RequestException:
                time.sleep(0.2)
        return False


# ---- the ledger: what every appointment must end up as ----------------------------------------------------

@dataclass
class Appt:
    id: str
    doctor: int
    start: datetime
    end: datetime
    status: int
    telemed: bool = False
    deleted: bool = False
    origin: str = "staff"  # staff | seed
    doctor_owned: bool = False  # moved or deleted by the doctor in Google: staff leave it alone since
    doctor_cancelled: bool = False
    corrupt: bool = False  # a bad input was planted in its KiviCare row: nobody touches it again
    slot: tuple | None = None
    history: list = field(default_factory=list)
    times: list = field(default_factory=list)  # when each history entry happened (UTC, for digging)


class Slots:
    """A per-doctor grid of one-hour UTC slots, days 2..31 ahead, 07:00-20:00.

    ``occupied`` is what holds a slot now; ``used`` every slot anything ever held. The doctor's moves and
    busy events only go to never-used slots, so the companion plugin can never refuse a move as taken (a
    slot freed by a move or a busy event the sidecar has not synced yet may still look taken there).
    """

    def __init__(self, today: date, doctors: list[int]):
        self.keys = [(d, h) for d in range(2, 32) for h in range(7, 21)]
        self.base = datetime.combine(today, datetime.min.time(), UTC)
        self.occupied: dict[int, dict[tuple, str]] = {d: {} for d in doctors}
        self.used: dict[int, set] = {d: set() for d in doctors}

    def start(self, key: tuple) -> datetime:
        return self.base + timedelta(days=key[0], hours=key[1])

    def overlapping(self, start: datetime, end: datetime) -> list[tuple]:
        return [k for k in self.keys if self.start(k) < end and self.start(k) + timedelta(hours=1) > start]

    def take(self, doctor: int, key: tuple, owner: str) -> None:
        self.occupied[doctor][key] = owner
        self.used[doctor].add(key)

    def release(self, doctor: int, key: tuple | None) -> None:
        if key is not None:
            self.occupied[doctor].pop(key, None)

    def free(self, rng: random.Random, doctor: int, *, fresh: bool) -> tuple | None:
        taken = self.used[doctor] if fresh else self.occupied[doctor]
        choices = [k for k in self.keys if k not in taken]
        return rng.choice(choices) if choices else None


# ---- the run ------------------------------------------------------------------------------------------

class Soak:
    def __init__(self, opts: SoakOptions):
        self.o = opts
        self.rng = random.Random(opts.seed)
        self.chaos_rng = random.Random(opts.seed * 7919 + 1)
        self.doctors = list(DOCTORS)[:max(2, min(3, opts.doctors))]
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ledger: dict[str, Appt] = {}
        self.busy: dict[int, dict[str, dict]] = {d: {} for d in self.doctors}  # doctor -> event id -> info
        self.actions: Counter = Counter()
        self.skipped: Counter = Counter()
        self.bad_inputs: Counter = Counter()
        self.chaos: Counter = Counter()
        self.driver_errors: list[str] = []
        self.stop_churn = threading.Event()
        self.stop_chaos = threading.Event()
        self.last_doctor_delete: dict[int, float] = defaultdict(float)
        self.say = (lambda *a: None) if opts.quiet else (lambda *a: print("[soak]", *a, flush=True))

    # ---- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
        self.port = free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.kivicare = KiviCareSandbox()
        self.kivicare.start()
        self.kivicare.install_companion(SECRET, sidecar_url=self.public_url)
        self.google = GoogleSandbox(conference_pending_reads=1)
        self.google.start()
        self.site = self.kivicare.base_url.rstrip("/")
        self.settings = {
            **sidecar_settings(self.kivicare, self.google),
            "database.url": f"sqlite:///{self.workdir}/sidecar.db",
            "security.key_file": str(self.workdir / "sidecar.key"),
            "web.host": "127.0.0.1", "web.port": self.port, "web.public_url": self.public_url,
            "companion.secret": SECRET, "google.push_over_http": True,
            "bridge.poll_seconds": self.o.poll_seconds, "sync.telemedicine_services": [TELEMEDICINE_SERVICE],
            "sync.conflict_rule": self.o.conflict_rule,
        }
        from sidecar.config import Config
        from sidecar.runtime import Runtime
        self.runtime = Runtime(Config(None, environ={}, overrides=self.settings))
        self.calendars = {d: self.connect(d) for d in self.doctors}
        self.zones = {d: next(c["timeZone"] for c in self.google.calendars(DOCTORS[d]) if c["id"] == cal)
                      for d, cal in self.calendars.items()}
        self.today = datetime.now(UTC).date()
        self.slots = Slots(self.today, self.doctors)
        self.adopt_seeded()
        for doctor in self.doctors:
            for _ in range(self.o.initial_per_doctor):
                self.staff_create(doctor)
        self.actions.clear()  # the initial bookings are not churn
        self.log_path = self.workdir / "sidecar.log"
        self.sidecar = Sidecar(sidecar_env(self.settings, self.workdir), self.log_path, self.port)

    def connect(self, doctor: int) -> str:
        """Connect a doctor through the real OAuth code flow (PKCE) against the Google sandbox."""
        from sidecar.calendars.google_oauth import authorization_url, finish_authorization
        from sidecar.connections import choose_calendar, complete_authorization
        from wp_bridge import preview
        email = DOCTORS[doctor]
        self.google.auto_approve(email)
        answer = requests.get(authorization_url(self.runtime.cfg, self.runtime.box, doctor), allow_redirects=False,
                              timeout=10)
        query = parse_qs(urlparse(answer.headers["Location"]).query)
        who, credentials = finish_authorization(self.runtime.cfg, self.runtime.box, state=query["state"][0],
                                                code=query["code"][0])
        connection = complete_authorization(self.runtime, who, credentials)
        connection = choose_calendar(self.runtime, connection, self.google.calendar_id(email, CALENDAR))
        preview.confirm(self.runtime, connection, by="soak")  # the first-sync preview, confirmed
        return connection.calendar_id

    def kc_rows(self) -> dict[str, dict]:
        """KiviCare's real rows (not what the list shows when a bad input was planted) of our doctors."""
        with self.kivicare._lock:
            return {str(a.id): {"doctor": int(a.doctor_id), "start": a.start_utc, "end": a.end_utc,
                                "status": int(a.status)}
                    for a in self.kivicare._appts.values() if int(a.doctor_id) in self.doctors}

    def adopt_seeded(self) -> None:
        for appointment_id, row in self.kc_rows().items():
            self.ledger[appointment_id] = Appt(appointment_id, row["doctor"], row["start"], row["end"], row["status"],
                                               origin="seed")
            for key in self.slots.overlapping(row["start"], row["end"]):
                self.slots.take(row["doctor"], key, appointment_id)

    # ---- staff (KiviCare) ---------------------------------------------------------------------------

    @staticmethod
    def note(appt: Appt, what: str) -> None:
        appt.history.append(what)
        appt.times.append(datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3])

    def staff_targets(self, doctor: int | None = None) -> list[Appt]:
        now = datetime.now(UTC)
        return [a for a in self.ledger.values() if not a.deleted and not a.doctor_owned and not a.corrupt
                and a.start > now + timedelta(days=1) and (doctor is None or a.doctor == doctor)]

    def staff_create(self, doctor: int | None = None) -> None:
        doctor = doctor or self.rng.choice(self.doctors)
        key = self.slots.free(self.rng, doctor, fresh=False)
        if key is None:
            self.skipped["staff_create"] += 1
            return
        general, extended, online = SERVICES[doctor]
        mapping = self.rng.choices((general, extended, online), weights=(5, 2, 3))[0]
        status = 2 if self.rng.random() < 0.15 else 1
        appointment_id = self.kivicare.create_appointment(
            doctor_id=doctor, patient_id=self.rng.choice(PATIENTS), start_utc=self.slots.start(key),
            service_mapping_ids=[mapping], status=status)
        row = self.kivicare.get_appointment(appointment_id)
        self.ledger[appointment_id] = Appt(appointment_id, doctor, row["start_utc"], row["end_utc"], status,
                                           telemed=mapping == online, slot=key)
        self.note(self.ledger[appointment_id], "created")
        self.slots.take(doctor, key, appointment_id)
        self.actions["staff_create"] += 1

    def staff_reschedule(self) -> None:
        targets = self.staff_targets()
        if not targets:
            self.skipped["staff_reschedule"] += 1
            return
        appt = self.rng.choice(targets)
        key = self.slots.free(self.rng, appt.doctor, fresh=False)
        if key is None:
            self.skipped["staff_reschedule"] += 1
            return
        start = self.slots.start(key)
        self.kivicare.reschedule(appt.id, start)
        for old in self.slots.overlapping(appt.start, appt.end) if appt.slot is None else [appt.slot]:
            if self.slots.occupied[appt.doctor].get(old) == appt.id:
                self.slots.release(appt.doctor, old)
        appt.end, appt.start, appt.slot = start + (appt.end - appt.start), start, key
        self.slots.take(appt.doctor, key, appt.id)
        self.note(appt, "staff-reschedule")
        self.actions["staff_reschedule"] += 1

    def staff_status(self) -> None:
        targets = self.staff_targets()
        if not targets:
            self.skipped["staff_status"] += 1
            return
        appt = self.rng.choice(targets)
        options = {1: [(2, 3), (4, 2), (0, 3)], 2: [(1, 4), (4, 1), (0, 2)], 4: [(3, 3), (0, 1)],
                   3: [(4, 1)], 0: [(1, 1)]}[appt.status]
        status = self.rng.choices([s for s, _ in options], weights=[w for _, w in options])[0]
        self.kivicare.set_status(appt.id, status)
        appt.status = status
        self.note(appt, f"staff-status-{status}")
        self.actions["staff_cancel" if status == 0 else "staff_status"] += 1

    def staff_delete(self) -> None:
        targets = self.staff_targets()
        # Keep every doctor well stocked: the mass-change guards hold bursts of deletions (on purpose).
        targets = [a for a in targets if len(self.upcoming(a.doctor)) > self.o.keep_upcoming]
        if not targets:
            self.skipped["staff_delete"] += 1
            return
        appt = self.rng.choice(targets)
        self.kivicare.delete_appointment(appt.id)
        appt.deleted = True
        if appt.slot is not None:
            self.slots.release(appt.doctor, appt.slot)
        self.note(appt, "staff-delete")
        self.actions["staff_delete"] += 1

    def upcoming(self, doctor: int) -> list[Appt]:
        now = datetime.now(UTC)
        return [a for a in self.ledger.values() if a.doctor == doctor and not a.deleted and a.start > now
                and a.status in EVENT_STATUSES]

    # ---- the doctor (Google) -------------------------------------------------------------------------

    def live_events(self, doctor: int, appointment_id: str) -> list[dict]:
        return [e for e in self.google.events(self.calendars[doctor], include_cancelled=False)
                if private_of(e).get("kcAppointmentId") == appointment_id and private_of(e).get("kcSite") == self.site]

    def synced(self, appt: Appt) -> dict | None:
        """The appointment's Google event when the sidecar has fully caught up with it, else None."""
        from sidecar.storage.models import Appointment as Row, Conflict, Job, MeetMapping
        events = self.live_events(appt.doctor, appt.id)
        if len(events) != 1:
            return None
        event = events[0]
        if instant(event["start"]) != appt.start or instant(event["end"]) != appt.end:
            return None
        if EDIT_MARK in (event.get("summary") or ""):
            return None
        row = Row.get_or_none(Row.id == appt.id)
        if row is None or not row.present or row.status != appt.status or row.start_utc != appt.start \
                or row.end_utc != appt.end:
            return None
        keys = [f"push:{appt.id}:", f"fetch:{appt.id}", f"conference:{appt.id}:", f"meet:{appt.id}"]
        busy = Job.select().where(Job.state.in_(("pending", "running")) & (
            Job.dedupe_key.startswith(keys[0]) | (Job.dedupe_key == keys[1]) | Job.dedupe_key.startswith(keys[2])
            | (Job.dedupe_key == keys[3]))).exists()
        if busy or Conflict.select().where((Conflict.appointment_id == appt.id) & (Conflict.state == "open")).exists():
            return None
        mapping = MeetMapping.get_or_none((MeetMapping.appointment_id == appt.id)
                                          & (MeetMapping.calendar_id == self.calendars[appt.doctor]))
        if mapping is None or mapping.state != "active" or mapping.etag != event.get("etag"):
            return None
        return event

    def doctor_targets(self) -> list[tuple[Appt, dict]]:
        now = datetime.now(UTC)
        found = []
        for appt in self.ledger.values():
            if appt.deleted or appt.corrupt or appt.status not in (1, 2) or appt.start < now + timedelta(days=1):
                continue
            found.append(appt)
        self.rng.shuffle(found)
        out = []
        for appt in found[:25]:
            event = self.synced(appt)
            if event is not None:
                out.append((appt, event))
                if len(out) >= 3:
                    break
        return out

    def doctor_move(self) -> None:
        targets = self.doctor_targets()
        if not targets:
            self.skipped["doctor_move"] += 1
            return
        appt, event = targets[0]
        key = self.slots.free(self.rng, appt.doctor, fresh=True)
        if key is None:
            self.skipped["doctor_move"] += 1
            return
        start = self.slots.start(key)
        length = appt.end - appt.start
        stretched = self.rng.random() < 0.3  # the doctor drags the end too; KiviCare keeps the service length
        end = start + length + (timedelta(minutes=15) if stretched else timedelta(0))
        zone = event["start"].get("timeZone") or "UTC"
        self.google.user_patch(self.calendars[appt.doctor], event["id"], {
            "start": {"dateTime": start.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone},
            "end": {"dateTime": end.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone}})
        if appt.slot is not None and self.slots.occupied[appt.doctor].get(appt.slot) == appt.id:
            self.slots.release(appt.doctor, appt.slot)
        appt.start, appt.end, appt.slot = start, start + length, key
        appt.doctor_owned = True
        self.slots.take(appt.doctor, key, appt.id)
        self.note(appt, "doctor-move" + ("-stretched" if stretched else ""))
        self.actions["doctor_move"] += 1

    def doctor_delete(self) -> None:
        now = time.monotonic()
        targets = [(a, e) for a, e in self.doctor_targets()
                   if len(self.upcoming(a.doctor)) > self.o.keep_upcoming
                   and now - self.last_doctor_delete[a.doctor] > 20]
        if not targets:
            self.skipped["doctor_delete"] += 1
            return
        appt, event = targets[0]
        self.google.user_delete(self.calendars[appt.doctor], event["id"])
        self.last_doctor_delete[appt.doctor] = now
        appt.status, appt.doctor_owned, appt.doctor_cancelled = 0, True, True
        self.note(appt, "doctor-delete")
        self.actions["doctor_delete"] += 1

    def doctor_edit_title(self) -> None:
        targets = self.doctor_targets()
        if not targets:
            self.skipped["doctor_edit_title"] += 1
            return
        appt, event = targets[0]
        self.google.user_patch(self.calendars[appt.doctor], event["id"],
                               {"summary": f"{EDIT_MARK} #{self.actions['doctor_edit_title'] + 1}"})
        self.note(appt, "doctor-edit-title")
        self.actions["doctor_edit_title"] += 1

    def busy_body(self, doctor: int, key: tuple, minutes: int = 60, **extra) -> dict:
        zone = self.zones[doctor]
        start = self.slots.start(key)
        return {"summary": "Dentist (private)", **extra,
                "start": {"dateTime": start.astimezone(ZoneInfo(zone)).isoformat(), "timeZone": zone},
                "end": {"dateTime": (start + timedelta(minutes=minutes)).astimezone(ZoneInfo(zone)).isoformat(),
                        "timeZone": zone}}

    def doctor_busy_add(self, doctor: int | None = None, **extra) -> dict | None:
        doctor = doctor or self.rng.choice(self.doctors)
        key = self.slots.free(self.rng, doctor, fresh=True)
        if key is None:
            self.skipped["doctor_busy_add"] += 1
            return None
        event = self.google.user_insert(self.calendars[doctor],
                                        self.busy_body(doctor, key, self.rng.choice((30, 45, 60)), **extra))
        self.slots.take(doctor, key, f"busy:{event['id']}")
        self.busy[doctor][event["id"]] = {"slot": key, "live": True}
        if not extra:
            self.actions["doctor_busy_add"] += 1
        return event

    def doctor_busy_delete(self) -> None:
        live = [(d, eid) for d in self.doctors for eid, info in self.busy[d].items() if info["live"]
                and not info.get("bad")]
        if not live:
            self.skipped["doctor_busy_delete"] += 1
            return
        doctor, event_id = self.rng.choice(live)
        self.google.user_delete(self.calendars[doctor], event_id)
        self.busy[doctor][event_id]["live"] = False
        self.slots.release(doctor, self.busy[doctor][event_id]["slot"])  # staff may book it; moves never go there
        self.actions["doctor_busy_delete"] += 1

    # ---- bad inputs ----------------------------------------------------------------------------------

    def plant_bad_inputs(self, round_no: int) -> None:
        """A few malformed KiviCare rows (on synced appointments) and odd Google events per round."""
        corruptions = [("start", "not-a-date"), ("status", "archived"), ("doctorId", "abc"),
                       ("end", "1999-01-01T00:00:00"), ("id", None)]
        field_name, value = corruptions[round_no % len(corruptions)]
        targets = [a for a, _ in self.doctor_targets() if not a.doctor_owned]
        if targets:
            appt = targets[0]
            self.kivicare.set_raw_field(appt.id, field_name, value)
            appt.corrupt = True
            self.note(appt, f"bad-row-{field_name}")
            self.bad_inputs[f"KiviCare row with malformed `{field_name}`"] += 1
        doctor = self.doctors[round_no % len(self.doctors)]
        text = ("<script>alert('x')</script> Ünïcødé ✓ 医生 " * 120)[:5000]
        odd = [
            ("Google busy event with a 5 000-character HTML/Unicode title, private", {
                "summary": text, "visibility": "private", "description": text}),
            ("Google free (transparent) event", {"transparency": "transparent", "summary": "Free: gym"}),
            ("Google event carrying another site's private appointment properties", {
                "extendedProperties": {"private": {"kcAppointmentId": "1", "kcSite": "https://other.example"}}}),
            ("Google event forging this site's properties for an unknown appointment", {
                "extendedProperties": {"private": {"kcAppointmentId": "987654", "kcSite": self.site}}}),
            ("Google invitation the doctor declined", {
                "organizer": {"email": "someone@example.org"},
                "attendees": [{"email": DOCTORS[doctor], "self": True, "responseStatus": "declined"},
                              {"email": "someone@example.org", "organizer": True, "responseStatus": "accepted"}]}),
        ]
        label, extra = odd[round_no % len(odd)]
        event = self.doctor_busy_add(doctor, **extra)
        if event is not None:
            self.busy[doctor][event["id"]]["bad"] = True
            self.bad_inputs[label] += 1
        # An all-day busy day: blocks the whole local day, so no move may go there.
        if round_no == 1:
            day = self.rng.randrange(20, 31)
            local_day = (self.slots.base + timedelta(days=day)).date()
            event = self.google.user_insert(self.calendars[doctor], {
                "summary": "Conference (all day)", "start": {"date": local_day.isoformat()},
                "end": {"date": (local_day + timedelta(days=1)).isoformat()}})
            for key in self.slots.keys:
                if abs(key[0] - day) <= 1:
                    self.slots.used[doctor].add(key)
            self.busy[doctor][event["id"]] = {"slot": None, "live": True, "bad": True}
            self.bad_inputs["Google all-day busy event"] += 1

    # ---- the threads -------------------------------------------------------------------------------

    def churn(self, deadline: float) -> None:
        staff = [(self.staff_create, 4), (self.staff_reschedule, 3), (self.staff_status, 3), (self.staff_delete, 1.2)]
        doctor = [(self.doctor_move, 3), (self.doctor_delete, 0.8), (self.doctor_busy_add, 1.5),
                  (self.doctor_busy_delete, 0.7), (self.doctor_edit_title, 0.6)]
        started = time.monotonic()
        shares = (0.15, 0.3, 0.45, 0.6, 0.75) if self.o.minutes >= 5 else (0.2, 0.45, 0.7)
        bad_rounds = [started + (deadline - started) * share for share in shares] if self.o.bad_inputs else []
        rate = self.o.actions_per_minute / 60.0
        while not self.stop_churn.is_set() and time.monotonic() < deadline:
            if self.stop_churn.wait(self.rng.expovariate(rate)):
                break
            if bad_rounds and time.monotonic() >= bad_rounds[0]:
                bad_rounds.pop(0)
                self.guarded(lambda: self.plant_bad_inputs(len(shares) - len(bad_rounds) - 1))
            pool = doctor if self.rng.random() < self.o.doctor_share else staff
            action = self.rng.choices([f for f, _ in pool], weights=[w for _, w in pool])[0]
            self.guarded(action)

    def guarded(self, action) -> None:
        try:
            action()
        except Exception as exc:  # the soak's own bug must not end the run silently
            self.driver_errors.append(f"{getattr(action, '__name__', 'action')}: {type(exc).__name__}: {exc}")
            log.exception("soak action failed")

    def chaos_loop(self, deadline: float, midpoint: float) -> None:
        next_expiry = time.monotonic() + self.o.token_expiry_every
        next_kill = time.monotonic() + self.chaos_rng.uniform(*self.o.kill_every)
        invalidated = False
        armed_since = None
        while not self.stop_chaos.is_set() and time.monotonic() < deadline:
            self.stop_chaos.wait(0.2)
            now = time.monotonic()
            if now >= next_expiry:
                self.google.expire_access_tokens()
                self.chaos["access tokens expired"] += 1
                next_expiry = now + self.o.token_expiry_every
            if not invalidated and now >= midpoint:
                self.google.invalidate_sync_tokens()
                self.chaos["sync tokens invalidated"] += 1
                invalidated = True
            if armed_since is not None:
                if not self.sidecar.alive():  # the armed kill fired: Google stored an insert, then SIGKILL
                    self.google.kill_on_insert(None)
                    self.chaos["SIGKILL between Google's insert and the sidecar's commit"] += 1
                    self.restart()
                    armed_since = None
                    next_kill = time.monotonic() + self.chaos_rng.uniform(*self.o.kill_every)
                elif now - armed_since > 20:
                    self.google.kill_on_insert(None)  # no insert came; kill at a random moment instead
                    armed_since = None
                    next_kill = now
                continue
            if not self.sidecar.alive():
                self.chaos["unexpected sidecar exits"] += 1
                self.restart()
                continue
            if now >= next_kill:
                if self.chaos_rng.random() < self.o.kill_on_insert_share:
                    self.google.kill_on_insert(self.sidecar.pid)
                    armed_since = now
                else:
                    self.sidecar.kill()
                    self.chaos["SIGKILL at a random moment"] += 1
                    self.restart()
                    next_kill = time.monotonic() + self.chaos_rng.uniform(*self.o.kill_every)
        self.google.kill_on_insert(None)

    def restart(self) -> None:
        self.stop_chaos.wait(self.chaos_rng.uniform(*self.o.restart_after))
        self.sidecar.start()

    # ---- checks ----------------------------------------------------------------------------------

    def window(self) -> tuple[datetime, datetime]:
        today = datetime.now(UTC).date()
        return (datetime.combine(today - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=1),
                datetime.combine(today + timedelta(days=90), datetime.min.time(), UTC))

    def check(self) -> tuple[list[str], dict]:
        """Everything the soak promises, from the two sandboxes and the sidecar's database."""
        from sidecar.storage.models import Conflict, Connection, Job
        problems: list[str] = []
        figures: dict = {}
        now = datetime.now(UTC)
        start, end = self.window()
        rows = self.kc_rows()
        events = {d: self.google.events(cal) for d, cal in self.calendars.items()}
        ours: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        for doctor, items in events.items():
            for event in items:
                private = private_of(event)
                if event.get("status") != "cancelled" and private.get("kcSite") == self.site \
                        and private.get("kcAppointmentId") in rows.keys() | self.ledger.keys():
                    ours[private["kcAppointmentId"]].append((doctor, event))
        duplicates = {a: len(v) for a, v in ours.items() if len(v) > 1}
        for appointment_id, count in duplicates.items():
            problems.append(f"duplicate: appointment {appointment_id} has {count} live events")
        checked = agree = 0
        lost_ids: set[str] = set()  # appointments where one side's latest change did not land
        for appointment_id, row in rows.items():
            if not start <= row["start"] <= end:
                continue
            checked += 1
            live = ours.get(appointment_id, [])
            wrong = [d for d, _ in live if d != row["doctor"]]
            if wrong:
                problems.append(f"appointment {appointment_id} has an event in another doctor's calendar")
            mine = [e for d, e in live if d == row["doctor"]]
            if row["status"] in EVENT_STATUSES:
                if len(mine) != 1:
                    problems.append(f"appointment {appointment_id} (status {row['status']}) has {len(mine)} live events")
                    if not mine:
                        lost_ids.add(appointment_id)
                    continue
                event = mine[0]
                if instant(event["start"]) != row["start"] or instant(event["end"]) != row["end"]:
                    problems.append(f"appointment {appointment_id}: KiviCare {row['start']:%m-%d %H:%M}-"
                                    f"{row['end']:%H:%M}, Google {instant(event['start']):%m-%d %H:%M}-"
                                    f"{instant(event['end']):%H:%M}")
                    lost_ids.add(appointment_id)
                    continue
                if (event.get("status") == "tentative") != (row["status"] == 2):
                    problems.append(f"appointment {appointment_id}: status {row['status']} but event {event.get('status')}")
                    lost_ids.add(appointment_id)
                    continue
                if EDIT_MARK in (event.get("summary") or ""):
                    problems.append(f"appointment {appointment_id}: the doctor's title edit was not put back")
                    continue
            elif row["start"] > now and mine:
                problems.append(f"appointment {appointment_id} is cancelled but keeps {len(mine)} live event(s)")
                lost_ids.add(appointment_id)
                continue
            agree += 1
        for appointment_id, appt in self.ledger.items():
            if appointment_id not in rows and appt.start > now and ours.get(appointment_id):
                problems.append(f"appointment {appointment_id} was deleted in KiviCare but keeps a live event")
                lost_ids.add(appointment_id)
        # Lost changes and unintended writes: KiviCare must hold exactly what the ledger says.
        unintended_cancel = unexpected = doctor_moves_applied = doctor_deletes_applied = 0
        for appointment_id, appt in self.ledger.items():
            row = rows.get(appointment_id)
            if appt.deleted:
                if row is not None:
                    problems.append(f"appointment {appointment_id} deleted by staff is back in KiviCare")
                    unexpected += 1
                continue
            if row is None:
                problems.append(f"appointment {appointment_id} vanished from KiviCare ({appt.history})")
                lost_ids.add(appointment_id)
                continue
            moved = any(h.startswith("doctor-move") for h in appt.history)
            if row["status"] == 0 and appt.status != 0:
                unintended_cancel += 1
                problems.append(f"unintended cancellation: appointment {appointment_id} ({appt.history})")
            elif row["status"] != appt.status:
                if appt.doctor_cancelled:
                    lost_ids.add(appointment_id)
                    problems.append(f"lost change: the doctor deleted appointment {appointment_id}'s event but "
                                    f"KiviCare still has status {row['status']}")
                else:
                    unexpected += 1
                    problems.append(f"appointment {appointment_id}: status {row['status']}, expected {appt.status}")
            elif appt.doctor_cancelled:
                doctor_deletes_applied += 1
            if row["start"] != appt.start or row["end"] != appt.end:
                if moved:
                    lost_ids.add(appointment_id)
                    problems.append(f"lost change: the doctor moved appointment {appointment_id} to "
                                    f"{appt.start:%m-%d %H:%M} but KiviCare has {row['start']:%m-%d %H:%M}")
                else:
                    unexpected += 1
                    problems.append(f"appointment {appointment_id} moved in KiviCare to {row['start']:%m-%d %H:%M} "
                                    f"without a reason ({appt.history})")
            elif moved:
                doctor_moves_applied += 1
        # Busy time: every busy event of the doctor's calendar is a block in KiviCare, nothing else is.
        busy_ok = True
        for doctor, items in events.items():
            wanted = Counter()
            for event in items:
                private = private_of(event)
                if event.get("status") == "cancelled" or private.get("kcSite") == self.site:
                    continue
                if event.get("transparency") == "transparent" or event.get("eventType") == "workingLocation":
                    continue
                if any(a.get("self") and a.get("responseStatus") == "declined" for a in event.get("attendees") or []):
                    continue
                b, e = instant(event["start"], self.zones[doctor]), instant(event["end"], self.zones[doctor])
                if e > start and b < end:
                    wanted[(b, e)] += 1
            have = Counter((b["start"], b["end"]) for b in self.kivicare.companion.busy_blocks(doctor)
                           if b["end"] > start and b["start"] < end)
            if wanted != have:
                busy_ok = False
                problems.append(f"doctor {doctor}: busy time in Google {sorted(wanted.elements())} but KiviCare "
                                f"blocks {sorted(have.elements())}")
        # Meet links: each live telemedicine event's link is the one KiviCare shows.
        meet_checked = meet_ok = 0
        for appointment_id, appt in self.ledger.items():
            row = rows.get(appointment_id)
            if not appt.telemed or row is None or row["status"] not in EVENT_STATUSES or len(ours.get(appointment_id, [])) != 1:
                continue
            meet_checked += 1
            link = ours[appointment_id][0][1].get("hangoutLink")
            stored = self.kivicare.companion.meet_url(int(appointment_id))
            if link and stored == link:
                meet_ok += 1
            else:
                problems.append(f"appointment {appointment_id}: Meet link in Google {link!r}, in KiviCare {stored!r}")
        conflicts = Conflict.select().where(Conflict.state == "open").count()
        if conflicts:
            problems.append(f"{conflicts} open conflict(s): " + "; ".join(
                f"{c.kind} {c.appointment_id}" for c in Conflict.select().where(Conflict.state == "open")))
        failed = list(Job.select().where(Job.state == "failed"))
        for job in failed:
            problems.append(f"job given up: {job.dedupe_key}: {job.last_error[:160]}")
        connections = {c.doctor_id: c.state for c in Connection.select()}
        for doctor in self.doctors:
            if connections.get(doctor) != "active":
                problems.append(f"doctor {doctor}'s connection is {connections.get(doctor)!r}, not active")
        figures.update(appointments_checked=checked, appointments_agreeing=agree, duplicates=len(duplicates),
                       lost_changes=len(lost_ids), unintended_cancellations=unintended_cancel, unexpected_writes=unexpected,
                       doctor_moves_applied=doctor_moves_applied, doctor_deletions_applied=doctor_deletes_applied,
                       doctor_moved_appointments=sum(1 for a in self.ledger.values()
                                                     if any(h.startswith("doctor-move") for h in a.history)),
                       doctor_cancelled_appointments=sum(1 for a in self.ledger.values() if a.doctor_cancelled),
                       live_events=sum(len(v) for v in ours.values()), busy_blocks_agree=busy_ok,
                       meet_links_checked=meet_checked, meet_links_agreeing=meet_ok, open_conflicts=conflicts,
                       jobs_given_up=len(failed), connections=connections)
        return problems, figures

    def quiet(self) -> bool:
        from sidecar.storage.models import Job
        soon = datetime.now(UTC) + timedelta(seconds=5)
        return not Job.select().where((Job.state == "running")
                                      | ((Job.state == "pending") & (Job.run_after <= soon))).exists()

    def idle(self) -> bool:
        from sidecar.storage.models import Job
        return not Job.select().where(Job.state.in_(("pending", "running"))).exists()

    def tracebacks(self) -> tuple[Counter, Counter]:
        """(expected, unexpected) tracebacks in the sidecar's log, by their last line and the log line before."""
        expected, unexpected = Counter(), Counter()
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        chained = ("During handling of the above exception", "The above exception was the direct cause")
        i = 0
        while i < len(lines):
            if not lines[i].startswith("Traceback (most recent call last)"):
                i += 1
                continue
            context = re.sub(r"^[0-9-]+ [0-9:,]+ ", "", lines[i - 1] if i else "")[:120]
            last, j = "(cut short by SIGKILL)", i + 1
            while j < len(lines):
                line = lines[j]
                if line.startswith((" ", "Traceback")) or not line.strip() or line.startswith(chained):
                    j += 1
                    continue
                if line.startswith("=== soak:"):
                    break
                last = line
                k = j + 1
                while k < len(lines) and not lines[k].strip():
                    k += 1
                if k < len(lines) and lines[k].startswith(chained):
                    j = k
                    continue
                j += 1
                break
            key = f"{last[:200]}  [logged after: {context}]"
            (expected if any(re.search(p, last) for p in EXPECTED_TRACEBACKS) else unexpected)[key] += 1
            i = j
        return expected, unexpected

    def sync_log(self) -> dict:
        from sidecar.storage.models import SyncLog
        from peewee import fn
        rows = (SyncLog.select(SyncLog.action, SyncLog.outcome, fn.COUNT(SyncLog.id).alias("n"))
                .group_by(SyncLog.action, SyncLog.outcome).tuples())
        return {f"{a} {o}": n for a, o, n in rows}

    # ---- main ------------------------------------------------------------------------------------

    def run(self) -> SoakResult:
        begun = datetime.now(UTC)
        self.setup()
        self.say(f"workdir {self.workdir}; sidecar on port {self.port}; doctors {self.doctors}; seed {self.o.seed}")
        self.sidecar.start()
        if not self.sidecar.wait_ready(60):
            raise RuntimeError(f"the sidecar did not start; see {self.log_path}")
        t0 = time.monotonic()
        churn_seconds = self.o.minutes * 60
        deadline = t0 + churn_seconds
        self.google.fault_rate(self.o.google_rate, self.o.google_kinds, seed=self.o.seed, hold=self.o.google_hold)
        self.kivicare.fault_rate(self.o.kivicare_rate, self.o.kivicare_kinds, seed=self.o.seed + 1,
                                 hold=self.o.kivicare_hold)
        chaos = threading.Thread(target=self.chaos_loop, args=(deadline, t0 + churn_seconds / 2), name="chaos",
                                 daemon=True)
        chaos.start()
        progress = threading.Thread(target=self.progress, args=(deadline,), daemon=True)
        progress.start()
        try:
            self.churn(deadline)
        finally:
            churned = time.monotonic() - t0
            self.stop_chaos.set()
            chaos.join(60)
            self.google.fault_rate(0)
            self.kivicare.fault_rate(0)
            self.google.kill_on_insert(None)
        self.say(f"churn over after {churned:.0f} s: {dict(self.actions)}; faults off, letting the sidecar settle")
        if not self.sidecar.alive():
            self.sidecar.start()
        settle_start = time.monotonic()
        problems, figures = self.check()
        passes, idle_since, settle_end = 0, None, "timeout"
        while time.monotonic() - settle_start < self.o.settle_seconds:
            if not self.sidecar.alive():
                self.chaos["unexpected sidecar exits"] += 1
                self.sidecar.start()
            problems, figures = self.check()
            passes = passes + 1 if not problems and self.quiet() else 0
            if passes >= 2:
                settle_end = "converged"
                break
            # Not converged, but nothing is queued any more (not even later retries): waiting cannot help.
            idle_since = (idle_since or time.monotonic()) if self.idle() else None
            if idle_since is not None and time.monotonic() - idle_since > 60:
                settle_end = "idle"
                break
            time.sleep(3)
        settled = time.monotonic() - settle_start
        self.sidecar.stop()
        problems, figures = self.check()
        expected_tb, unexpected_tb = self.tracebacks()
        for line, count in unexpected_tb.items():
            problems.append(f"traceback in the sidecar log ({count}x): {line}")
        if self.driver_errors:
            problems.extend(f"soak driver error: {e}" for e in self.driver_errors[:10])
        figures.update(
            started=begun.isoformat(timespec="seconds"), churn_seconds=round(churned), settle_seconds=round(settled),
            settled=passes >= 2, settle_end=settle_end, seed=self.o.seed, doctors=self.doctors, actions=dict(self.actions),
            skipped=dict(self.skipped), bad_inputs=dict(self.bad_inputs), chaos=dict(self.chaos),
            sidecar_starts=self.sidecar.starts, google_faults=self.google.fault_counts(),
            kivicare_faults=self.kivicare.fault_counts(), tracebacks_expected=dict(expected_tb),
            tracebacks_unexpected=dict(unexpected_tb), sync_log=self.sync_log(),
            appointments_in_ledger=len(self.ledger), workdir=str(self.workdir),
            options={"google_rate": self.o.google_rate, "kivicare_rate": self.o.kivicare_rate,
                     "google_kinds": self.o.google_kinds, "kivicare_kinds": self.o.kivicare_kinds,
                     "google_hold": self.o.google_hold, "kivicare_hold": self.o.kivicare_hold,
                     "token_expiry_every": self.o.token_expiry_every, "kill_every": list(self.o.kill_every),
                     "poll_seconds": self.o.poll_seconds, "actions_per_minute": self.o.actions_per_minute,
                     "conflict_rule": self.o.conflict_rule})
        (self.workdir / "ledger.json").write_text(json.dumps(
            {a.id: {"doctor": a.doctor, "start": a.start.isoformat(), "end": a.end.isoformat(), "status": a.status,
                    "deleted": a.deleted, "history": [f"{t} {h}" for t, h in zip(a.times, a.history)]}
             for a in self.ledger.values()}, indent=1))
        with open(self.workdir / "google-requests.jsonl", "w") as out:  # for digging into a failure
            for entry in self.google.requests:
                out.write(json.dumps({k: entry.get(k) for k in ("time", "method", "path", "status", "if_match")}
                                     | {"query": {k: v for k, v in (entry.get("query") or {}).items()
                                                  if k in ("syncToken", "pageToken")}}) + "\n")
        (self.workdir / "figures.json").write_text(json.dumps({**figures, "problems": problems}, indent=1, default=str))
        self.kivicare.stop()
        self.google.stop()
        return SoakResult(ok=not problems, failures=problems, figures=figures, options=self.o, workdir=self.workdir)

    def progress(self, deadline: float) -> None:
        while time.monotonic() < deadline and not self.stop_chaos.wait(30):
            self.say(f"{max(0, deadline - time.monotonic()):.0f} s left; actions {sum(self.actions.values())}, "
                     f"kills {sum(v for k, v in self.chaos.items() if k.startswith('SIGKILL'))}, "
                     f"Google faults {sum(v for k, v in self.google.fault_counts().items() if k != 'requests')}, "
                     f"KiviCare faults {sum(v for k, v in self.kivicare.fault_counts().items() if k != 'requests')}")


def run_soak(opts: SoakOptions) -> SoakResult:
    result = Soak(opts).run()
    if opts.report:
        write_report(result, opts.report)
    return result


# ---- docs/RELIABILITY.md ------------------------------------------------------------------------------

ACTION_LABELS = {
    "staff_create": "Staff book an appointment", "staff_reschedule": "Staff reschedule",
    "staff_status": "Staff change the status (pending, check-in, check-out, re-book)",
    "staff_cancel": "Staff cancel", "staff_delete": "Staff delete",
    "doctor_move": "Doctor moves an event in Google", "doctor_delete": "Doctor deletes an event in Google",
    "doctor_edit_title": "Doctor edits an event's title in Google (put back)",
    "doctor_busy_add": "Doctor adds a busy event in Google", "doctor_busy_delete": "Doctor removes a busy event",
}
FAULT_LABELS = {
    "403_rate_limit": "403 rateLimitExceeded", "429": "429 Too Many Requests", "500": "500", "503": "503",
    "timeout": "timeout (answered after the client's timeout; the request was carried out)",
    "hang": "hang (held beyond the client's timeout, then dropped; not carried out)",
    "reset": "connection reset before the request was carried out",
    "reset_after": "connection reset after the request was carried out (no answer)",
}


def write_report(result: SoakResult, path: Path) -> None:
    f = result.figures
    minutes = max(f["churn_seconds"], 1) / 60
    lines = [
        "# Reliability: the chaos soak",
        "",
        f"Written by `bench/soak.py` (`make soak`) on {f['started'][:10]} (run started {f['started']} UTC). "
        f"Seed {f['seed']}, {len(f['doctors'])} doctors, {f['churn_seconds'] / 60:.1f} minutes of churn under faults, "
        f"then {f['settle_seconds']} s for the sidecar to settle with faults off.",
        "",
        f"**Verdict: {'converged — nothing lost, nothing duplicated' if result.ok else 'DID NOT CONVERGE'}.**",
        "",
        "Setup: the KiviCare sandbox (companion plugin emulated, so doctors' moves are applied in KiviCare) and the "
        "Google sandbox run as threads of the soak; the sidecar runs as a real `python -m sidecar serve` subprocess "
        f"(SQLite, poll every {f['options']['poll_seconds']} s, 2 workers, conflict rule "
        f"`{f['options'].get('conflict_rule', 'kivicare')}`) that the soak SIGKILLs at random moments "
        "and restarts. Doctors were connected once through the OAuth code flow before the first start. "
        "Reproduce: `.venv/bin/python bench/soak.py --minutes "
        f"{f['churn_seconds'] / 60:.0f} --seed {f['seed']} --doctors {len(f['doctors'])}` (the churn and faults are "
        "seeded; timing on the machine still varies).",
        "",
        "## Load held",
        "",
        "| Change | Count | Per minute |",
        "|---|---:|---:|",
    ]
    total = 0
    for key, label in ACTION_LABELS.items():
        n = f["actions"].get(key, 0)
        total += n
        lines.append(f"| {label} | {n} | {n / minutes:.1f} |")
    lines += [f"| **All changes** | **{total}** | **{total / minutes:.1f}** |", "",
              f"{f['appointments_in_ledger']} appointments were tracked (seeded, booked before the start, and booked "
              "during the run). A doctor only moves or deletes an appointment the sidecar has fully synced, and staff "
              "leave an appointment alone once its doctor changed it, so every appointment has one right answer "
              "(conflict rules are tested in tests/test_two_way.py).", "",
              "## Faults injected", "",
              f"Google: {f['options']['google_rate']:.0%} of API and token requests; KiviCare (its REST API and the "
              f"companion plugin's routes): {f['options']['kivicare_rate']:.0%}. Timeouts hold a request "
              f"{f['options']['google_hold']:.0f} s (Google) / {f['options']['kivicare_hold']:.0f} s (KiviCare), beyond "
              "the sidecar's client timeouts.", "",
              "| Where | Fault | Count |", "|---|---|---:|"]
    for where, counts in (("Google", f["google_faults"]), ("KiviCare", f["kivicare_faults"])):
        for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            if kind != "requests":
                lines.append(f"| {where} | {FAULT_LABELS.get(kind, kind)} | {n} |")
        lines.append(f"| {where} | *requests seen* | {counts.get('requests', 0)} |")
    for label, n in sorted(f["chaos"].items()):
        if not label.startswith("SIGKILL") and label != "unexpected sidecar exits":
            lines.append(f"| Google | {label} | {n} |")
    kills = {k: v for k, v in f["chaos"].items() if k.startswith("SIGKILL")}
    lines += ["", "## Crashes survived", "",
              f"{sum(kills.values())} SIGKILLs, {f['sidecar_starts']} sidecar starts in all; "
              f"{f['chaos'].get('unexpected sidecar exits', 0)} exits the soak did not cause.", "",
              "| Kill | Count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(kills.items())]
    lines += ["", "## Bad inputs tried", ""]
    if f["bad_inputs"]:
        lines += ["| Input | Count |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in sorted(f["bad_inputs"].items())]
        lines += ["", "Malformed KiviCare rows must be skipped with a log line while their event stays as it was; odd "
                  "Google events must block time exactly when Google says the doctor is busy (not free, declined, or "
                  "one of our own events)."]
    else:
        lines.append("None in this run.")
    lines += ["", "## Convergence", "", "| Check | Result |", "|---|---|",
              f"| Appointments in the sync window checked | {f['appointments_checked']} |",
              f"| … where KiviCare and Google agree | {f['appointments_agreeing']} |",
              f"| Live events of ours at the end | {f['live_events']} |",
              f"| Duplicate events | {f['duplicates']} |",
              f"| Lost changes (appointments where a change of either side did not land) | {f['lost_changes']} |",
              f"| Unintended cancellations | {f['unintended_cancellations']} |",
              f"| Other unexpected KiviCare writes | {f['unexpected_writes']} |",
              f"| Appointments moved by their doctor in Google, final time in KiviCare | {f['doctor_moves_applied']} "
              f"of {f['doctor_moved_appointments']} |",
              f"| Appointments whose event the doctor deleted, cancelled in KiviCare | "
              f"{f['doctor_deletions_applied']} of {f['doctor_cancelled_appointments']} |",
              f"| Busy time in Google = busy blocks in KiviCare | {'yes' if f['busy_blocks_agree'] else 'NO'} |",
              f"| Meet links agree | {f['meet_links_agreeing']} of {f['meet_links_checked']} |",
              f"| Open conflicts | {f['open_conflicts']} |",
              f"| Jobs given up | {f['jobs_given_up']} |",
              f"| Connections still active | {sum(1 for s in f['connections'].values() if s == 'active')} of "
              f"{len(f['connections'])} |",
              "| Converged after faults stopped | " + (
                  f"yes, in {f['settle_seconds']} s" if f["settled"] else
                  f"NO: nothing was left in the queue, yet the differences below remained ({f['settle_seconds']} s)"
                  if f.get("settle_end") == "idle" else f"NO, not within {f['settle_seconds']} s") + " |",
              f"| Unexpected tracebacks in the sidecar log | {sum(f['tracebacks_unexpected'].values())} |",
              f"| Expected tracebacks | {sum(f['tracebacks_expected'].values())} |"]
    if not result.ok:
        lines += ["", "### What did not converge", ""] + [f"- {p}" for p in result.failures[:60]]
    lines += ["", "## The sidecar's own sync log", "", "What the sidecar recorded (SyncLog rows by action and outcome):",
              "", "| Action | Outcome | Rows |", "|---|---|---:|"]
    for key, n in sorted(f["sync_log"].items()):
        action, _, outcome = key.rpartition(" ")
        lines.append(f"| {action} | {outcome} | {n} |")
    lines.append("")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of churn under faults (default 3)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--doctors", type=int, default=3, choices=(2, 3))
    parser.add_argument("--settle", type=float, default=420.0, help="most seconds to wait for quiet at the end")
    parser.add_argument("--report", default=str(ROOT / "docs" / "RELIABILITY.md"),
                        help="where to write the report ('' = nowhere)")
    parser.add_argument("--workdir", help="keep the database, log and ledger here (default: a temp directory)")
    parser.add_argument("--conflict-rule", default="kivicare", choices=("kivicare", "google", "recent"),
                        help="the sidecar's rule when both sides changed (default kivicare)")
    parser.add_argument("--quick-faults", action="store_true",
                        help="no timeouts (they hold a request 31/61 s): for short runs")
    args = parser.parse_args(argv)
    opts = SoakOptions(minutes=args.minutes, seed=args.seed, doctors=args.doctors, settle_seconds=args.settle,
                       report=Path(args.report) if args.report else None,
                       workdir=Path(args.workdir) if args.workdir else None, conflict_rule=args.conflict_rule)
    if args.quick_faults:
        opts.google_kinds, opts.kivicare_kinds = dict(QUICK_GOOGLE_KINDS), dict(QUICK_KIVICARE_KINDS)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_soak(opts)
    f = result.figures
    print(json.dumps({k: f[k] for k in ("appointments_checked", "appointments_agreeing", "duplicates", "lost_changes",
                                         "unintended_cancellations", "settled", "settle_seconds", "actions", "chaos",
                                         "google_faults", "kivicare_faults", "bad_inputs")}, indent=1, default=str))
    if result.ok:
        print(f"[soak] converged. Work files in {result.workdir}")
        return 0
    print(f"[soak] DID NOT CONVERGE ({len(result.failures)} problems). Work files in {result.workdir}")
    for problem in result.failures[:40]:
        print("  -", problem)
    return 1


if __name__ == "__main__":
    sys.exit(main())
