"""Scenario b: steady churn in KiviCare, once without and once with the companion plugin's hints.

Staff make ``rate`` appointment changes per minute for ``seconds`` per phase (issue 7: 300/min for 2 min):
reschedules, status changes (Pending, Booked, Cancelled), new appointments and deletions, half in the near
window (days 1..12, listed every poll) and half in the far horizon (days 17..60, listed every
``bridge.far_poll_seconds``). Each change is timed from the moment the KiviCare sandbox holds it until the
Google sandbox shows it on the appointment's deterministic event (``sidecar.calendars.google.event_id_for``):
start/end/status equal, or the event gone (cancelled/deleted). The Google sandbox is polled every 0.2 s from
its own process, so the clock has that resolution.

Phase 1 runs without hints (the sandbox's companion plugin has its ``hints`` feature off), phase 2 with them:
the switch is a sandbox knob, the sidecar keeps running. Phase 1's far changes may still be waiting for the
far poll while phase 2 runs; they never got a hint, so their latency is still the hint-less one.

Settings the scenario needs are applied at run time through the settings store (as the settings page does,
no restart): ``companion.secret``, ``bridge.far_poll_seconds`` (60 s instead of 600 s, so the far-window
figure is measurable in a few minutes). ``companion_settings(env)`` returns them for a lead who prefers
``Environment(extra=...)``.

Targets (issue 7): with hints p95 ≤ 2 s; without hints near ≤ poll interval + 2 s, far ≤ far interval + 2 s.

    .venv/bin/python -m bench.perf.churn --small      # 5 doctors, 200 appointments, 30 s per phase
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from .sandboxes import PATIENTS, POLL_SECONDS, UTC

SECRET = "perf-companion-secret-0123456789abcdef0123"
FAR_POLL_SECONDS = 60  # proposed for the bench (default 600 s): the far-window figure needs a few cycles
NEAR_DAYS = (1, 12)  # changes land well inside the near window (bridge.near_days = 14) ...
FAR_DAYS = (17, 60)  # ... or well beyond it, inside the horizon (bridge.horizon_days = 90)
CHURN_HOURS = (16, 20)  # UTC: after the seeded 09:00-17:00 Paris day, before scenario d's slots
WATCH_EVERY = 0.2  # s between two looks at the Google sandbox
GRACE = 20.0  # s past the target before a change counts as not seen (its latency then counts as infinite)
SETTLE = 20.0  # s at most to wait for the far pool's sync before phase 1
KINDS = (("reschedule", 40), ("status", 25), ("create", 20), ("delete", 15))


# ---- run in the sandbox processes (module level: Remote.call pickles them by name) -------------------

def _install_companion(sb, secret: str, sidecar_url: str, hints: bool) -> None:
    """KiviCare child: the companion plugin installed (busy, Meet, reschedule, mail), hints on or off.
    Installing again keeps its stored busy blocks and Meet links (``install_companion``)."""
    sb.install_companion(secret, sidecar_url)
    _set_hints(sb, hints)


def _set_hints(sb, on: bool) -> None:
    """KiviCare child: the plugin's ``hints`` feature on or off (the sandbox knob; no sidecar restart)."""
    features = [f for f in sb.companion.enabled_features if f != "hints"]
    sb.companion.enabled_features = features + (["hints"] if on else [])


def _hint_counts(sb) -> dict:
    """KiviCare child: hints sent so far, and how many the sidecar did not answer with 2xx."""
    hints = list(sb.companion.hints) if sb.companion else []
    return {"sent": len(hints), "failed": sum(not (h["status"] and 200 <= h["status"] < 300) for h in hints)}


def _kc_snapshot(sb, doctor_ids: list[int]) -> list[dict]:
    """KiviCare child: the real rows (UTC) of the bench's doctors."""
    wanted = {int(d) for d in doctor_ids}
    with sb._lock:
        return [{"id": str(a.id), "doctor": int(a.doctor_id), "start": a.start_utc.timestamp(),
                 "end": a.end_utc.timestamp(), "status": int(a.status)}
                for a in sb._appts.values() if int(a.doctor_id) in wanted]


def _kc_general_mappings(sb, doctor_ids: list[int]) -> dict:
    """KiviCare child: doctor id -> the service mapping id of their General Consultation (service 1)."""
    from .sandboxes import GENERAL
    with sb._lock:
        return {int(m["doctor_id"]): int(m["id"]) for m in sb._mappings.values()
                if int(m["doctor_id"]) in {int(d) for d in doctor_ids} and int(m["service_id"]) == GENERAL}


def _kc_change(sb, op: dict) -> dict:
    """KiviCare child: one staff action through the sandbox's dashboard API (the plugin's hooks fire and,
    when hints are on, a signed hint goes to the sidecar). Returns the appointment as KiviCare now holds it."""
    kind = op["kind"]
    if kind == "create":
        appointment_id = sb.create_appointment(doctor_id=op["doctor"], patient_id=op["patient"],
                                               start_utc=datetime.fromtimestamp(op["start"], UTC),
                                               service_mapping_ids=[op["mapping"]], status=op.get("status", 1))
    else:
        appointment_id = op["id"]
        if kind == "reschedule":
            sb.reschedule(appointment_id, datetime.fromtimestamp(op["start"], UTC))
        elif kind == "status":
            sb.set_status(appointment_id, op["status"])
        elif kind == "delete":
            sb.delete_appointment(appointment_id)
            return {"id": str(appointment_id), "deleted": True}
    with sb._lock:
        a = sb._appts[int(appointment_id)]
        return {"id": str(a.id), "doctor": int(a.doctor_id), "start": a.start_utc.timestamp(),
                "end": a.end_utc.timestamp(), "status": int(a.status), "deleted": False}


def _instant(value: dict | None) -> float | None:
    if not value or not value.get("dateTime"):
        return None
    return datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00")).timestamp()


def _google_shows(sb, items: list[tuple]) -> list:
    """Google child: the keys of ``items`` ``(key, calendar_id, event_id, want)`` whose event is as wanted:
    ``want`` None = no live event (absent or cancelled); else ``(start, end, tentative)`` (epoch seconds)."""
    seen = []
    for key, calendar_id, event_id, want in items:
        event = sb.event(calendar_id, event_id)
        live = event is not None and event.get("status") != "cancelled"
        if want is None:
            if not live:
                seen.append(key)
        elif live and _instant(event.get("start")) == want[0] and _instant(event.get("end")) == want[1] \
                and (event.get("status") == "tentative") == want[2]:
            seen.append(key)
    return seen


def _log_mark(sb) -> int:
    """Either child: the length of its request log, to count the requests between two marks."""
    with sb._lock:
        return len(sb._log if hasattr(sb, "_log") else sb.requests)


def _google_counts(sb, begin: int, end: int) -> dict:
    """Google child: Calendar API requests in the log slice [begin, end) by kind (list, get, insert, patch,
    update, delete, watch, batch, other)."""
    with sb._lock:
        rows = sb._log[begin:end]
    out: dict = {}
    for r in rows:
        path, method = r["path"], r["method"]
        if not path.startswith("/calendar/v3/") and not path.startswith("/batch"):
            continue
        if path.startswith("/batch"):
            kind = "batch"
        elif path.endswith("/watch") or path.endswith("/channels/stop"):
            kind = "watch"
        elif path.endswith("/events"):
            kind = {"GET": "list", "POST": "insert"}.get(method, "other")
        elif "/events/" in path:
            kind = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, "other")
        else:
            kind = "other"
        out[kind] = out.get(kind, 0) + 1
    return out


def _kivicare_counts(sb, begin: int, end: int) -> dict:
    """KiviCare child: requests in the log slice [begin, end) by kind (list, get, companion, other)."""
    with sb._lock:
        rows = sb.requests[begin:end]
    out: dict = {}
    for r in rows:
        path = r.get("path") or ""
        route = path if "/wp-json/" in path else str((r.get("query") or {}).get("rest_route", path))
        if "/kc-sidecar/" in route:
            kind = "companion"
        elif route.rstrip("/").endswith("/appointments") and r.get("method") == "GET":
            kind = "list"
        elif "/appointments/" in route and r.get("method") == "GET":
            kind = "get"
        else:
            kind = "other"
        out[kind] = out.get(kind, 0) + 1
    return out


# ---- helpers shared with scenario d ------------------------------------------------------------------

def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * (len(ordered) - 1)))))]


def fmt_s(value: float | None) -> str:
    """Seconds for the table; infinity (a change not seen by its deadline) as "not seen"."""
    if value is None:
        return "n/a"
    return "not seen" if value == float("inf") else f"{value:.2f} s"


def apply_settings(env, settings: dict) -> None:
    """Store ``settings`` in the sidecar's settings table through the real ``Config.set`` (what the settings
    page does); the running sidecar reads them on its next use, no restart. A setting the environment fixes
    (``Environment(extra=...)``) is left as fixed there."""
    for name, value in settings.items():
        if not env.runtime.cfg.is_fixed(name):
            env.runtime.cfg.set(name, value)


def companion_settings(env) -> dict:
    """The settings scenario b (and d) need beyond the Environment's: the companion plugin's shared secret and
    a bench-sized far-window interval. ``run`` applies them itself at run time; pass them through
    ``Environment(extra=...)`` only if the companion must be on from the start (then call
    ``install_companion(env)`` before the sidecar starts)."""
    return {"companion.secret": SECRET, "bridge.far_poll_seconds": FAR_POLL_SECONDS}


def install_companion(env, hints: bool = False) -> None:
    """The KiviCare sandbox gets the companion plugin, pointed at the sidecar's public URL."""
    env.kivicare.call(_install_companion, SECRET, env.settings["web.public_url"], hints)


def doctor_calendars(env) -> dict[int, str]:
    """KiviCare doctor id -> the Google calendar the doctor connected."""
    return {doctor: env.calendars[email] for doctor, email in zip(env.seeded["doctors"], env.seeded["emails"])}


def event_id(env, appointment_id: str, calendar_id: str) -> str:
    """The Google event id the sidecar gives ``appointment_id`` in ``calendar_id`` (``event_id_for``)."""
    from sidecar.calendars.google import event_id_for
    return event_id_for(env.settings["kivicare.base_url"].rstrip("/"), str(appointment_id), calendar_id)


class Counts:
    """Request counts of both sandboxes between ``start()`` and ``stop()``: ``{"google": {kind: n},
    "kivicare": {kind: n}, "google_total", "kivicare_total"}`` (the sandboxes' own request logs)."""

    def __init__(self, env):
        self.env = env

    def start(self) -> None:
        self.g0, self.k0 = self.env.google.call(_log_mark), self.env.kivicare.call(_log_mark)

    def stop(self) -> dict:
        g1, k1 = self.env.google.call(_log_mark), self.env.kivicare.call(_log_mark)
        google = self.env.google.call(_google_counts, self.g0, g1)
        kivicare = self.env.kivicare.call(_kivicare_counts, self.k0, k1)
        return {"google": google, "kivicare": kivicare, "google_total": sum(google.values()),
                "kivicare_total": sum(kivicare.values())}


# ---- the scenario ------------------------------------------------------------------------------------

class Churn:
    """The staff's side: a ledger of the bench doctors' appointments, changes drawn from it, and a watcher
    that times each change until Google shows it."""

    def __init__(self, env, say, seed: int = 7):
        self.env, self.say = env, say
        self.rng = random.Random(seed)
        self.calendars = doctor_calendars(env)
        self.doctors = list(self.calendars)
        self.mappings = env.kivicare.call(_kc_general_mappings, self.doctors)
        self.ledger: dict[str, dict] = {a["id"]: a for a in env.kivicare.call(_kc_snapshot, self.doctors)}
        self.busy: set[str] = set()  # appointment ids with a change not yet seen (or never seen: left alone)
        self.changes: list[dict] = []
        self.lock = threading.Lock()
        self.today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    # -- drawing changes --

    def window_of(self, start: float) -> str | None:
        """"near", "far" or None (between the two, or outside both) for a start in epoch seconds."""
        day = (start - self.today.timestamp()) / 86400
        if NEAR_DAYS[0] <= day < NEAR_DAYS[1] + 1:
            return "near"
        if FAR_DAYS[0] <= day < FAR_DAYS[1] + 1:
            return "far"
        return None

    def new_start(self, window: str) -> float:
        """A random start (epoch seconds, on the half hour, CHURN_HOURS UTC) on a day of ``window``."""
        first, last = NEAR_DAYS if window == "near" else FAR_DAYS
        day = self.today + timedelta(days=self.rng.randint(first, last))
        minutes = self.rng.randrange(CHURN_HOURS[0] * 60, CHURN_HOURS[1] * 60, 30)
        return (day + timedelta(minutes=minutes)).timestamp()

    def targets(self, window: str) -> list[dict]:
        """Booked or pending appointments of ``window`` more than a day ahead with no change on its way."""
        soon = time.time() + 86400
        with self.lock:
            return [a for a in self.ledger.values() if a["status"] in (1, 2) and a["id"] not in self.busy
                    and a["start"] > soon and self.window_of(a["start"]) == window]

    def draw(self, window: str) -> dict:
        """The next staff action in ``window`` (``_kc_change``'s op); a create when no target is left."""
        kind = self.rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
        pool = self.targets(window) if kind != "create" else []
        if kind == "create" or not pool:
            doctor = self.rng.choice(self.doctors)
            return {"kind": "create", "doctor": doctor, "patient": self.rng.choice(PATIENTS),
                    "mapping": self.mappings[doctor], "start": self.new_start(window)}
        target = self.rng.choice(pool)
        if kind == "reschedule":
            return {"kind": "reschedule", "id": target["id"], "start": self.new_start(window)}
        if kind == "status":
            status = self.rng.choice((0, 0, 2)) if target["status"] == 1 else self.rng.choice((0, 1, 1))
            return {"kind": "status", "id": target["id"], "status": status}
        return {"kind": "delete", "id": target["id"]}

    # -- making one change --

    def change(self, op: dict, phase: str, window: str, deadline_s: float) -> dict:
        """Apply ``op`` in KiviCare, note what Google must show, return the change record."""
        before = self.ledger.get(op.get("id", ""))
        row = self.env.kivicare.call(_kc_change, op)
        made, wall = time.monotonic(), time.time()
        doctor = row["doctor"] if not row["deleted"] else before["doctor"]
        if row["deleted"] or row["status"] == 0:
            want = None  # a future appointment cancelled or deleted: its event goes
        else:
            want = (row["start"], row["end"], row["status"] == 2)
        name = op["kind"] if op["kind"] != "status" else ("cancel" if row.get("status") == 0 else "status")
        record = {"phase": phase, "window": window, "kind": name, "id": row["id"], "made": made, "wall": wall,
                  "deadline": made + deadline_s, "seen": None, "key": len(self.changes),
                  "calendar": self.calendars[doctor],
                  "event": event_id(self.env, row["id"], self.calendars[doctor]), "want": want}
        with self.lock:
            if row["deleted"]:
                self.ledger.pop(row["id"], None)
            else:
                self.ledger[row["id"]] = {k: row[k] for k in ("id", "doctor", "start", "end", "status")}
            self.busy.add(row["id"])
            self.changes.append(record)
        return record

    # -- watching Google --

    def watch(self, stop: threading.Event) -> None:
        """Until ``stop``: every WATCH_EVERY s, ask the Google sandbox which waiting changes it shows."""
        while not stop.is_set():
            now = time.monotonic()
            with self.lock:
                waiting = [c for c in self.changes if c["seen"] is None and now <= c["deadline"]]
            if waiting:
                keys = self.env.google.call(_google_shows, [(c["key"], c["calendar"], c["event"], c["want"])
                                                            for c in waiting])
                seen_at = time.monotonic()
                with self.lock:
                    for key in keys:
                        record = self.changes[key]
                        record["seen"] = seen_at
                        self.busy.discard(record["id"])  # settled: may be changed again
            stop.wait(WATCH_EVERY)

    def waiting(self) -> list[dict]:
        """Changes not seen yet whose deadline has not passed."""
        now = time.monotonic()
        with self.lock:
            return [c for c in self.changes if c["seen"] is None and now <= c["deadline"]]

    def run_phase(self, phase: str, seconds: float, rate_per_min: float, deadline_of) -> int:
        """``rate_per_min`` changes per minute for ``seconds``, alternating near and far. Returns how many."""
        interval = 60.0 / rate_per_min
        began, n = time.monotonic(), 0
        while time.monotonic() - began < seconds:
            due = began + n * interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            window = "near" if n % 2 == 0 else "far"
            self.change(self.draw(window), phase, window, deadline_of(window))
            n += 1
        return n


def seed_far(churn: Churn, count: int) -> None:
    """Give the doctors appointments in the far horizon (the seed fills only the first days), synced to
    Google before the phases start (hints on, so this takes seconds, not a far-poll interval)."""
    for _ in range(count):
        doctor = churn.rng.choice(churn.doctors)
        churn.change({"kind": "create", "doctor": doctor, "patient": churn.rng.choice(PATIENTS),
                      "mapping": churn.mappings[doctor], "start": churn.new_start("far")}, "seed", "far", 60.0)


def summarize(changes: list[dict]) -> dict:
    """p50/p95/max in seconds over every change, one not seen by its deadline counting as infinite (so a
    p95 is never flattered by leaving the slow ones out), and how many were not seen."""
    latencies = [c["seen"] - c["made"] if c["seen"] is not None else float("inf") for c in changes]
    unseen = sum(c["seen"] is None for c in changes)
    return {"n": len(changes), "seen": len(changes) - unseen, "unseen": unseen,
            "p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
            "max": max(latencies) if latencies else None}


def run(env, args, say) -> dict:
    """Scenario b on a running sidecar (after scenario a). Returns the figures (seconds, request counts).

    ``args``: ``churn_seconds`` (per phase, default 120), ``churn_rate`` (changes per minute, default 300),
    ``far_poll_seconds`` (default ``FAR_POLL_SECONDS``)."""
    seconds = float(getattr(args, "churn_seconds", 120))
    rate = float(getattr(args, "churn_rate", 300))
    apply_settings(env, {**companion_settings(env),
                         "bridge.far_poll_seconds": int(getattr(args, "far_poll_seconds", FAR_POLL_SECONDS))})
    install_companion(env, hints=True)
    far_poll = int(env.runtime.cfg.get("bridge.far_poll_seconds"))  # the effective one (extra may fix it)
    churn = Churn(env, say)
    stop = threading.Event()
    watcher = threading.Thread(target=churn.watch, args=(stop,), name="churn-watch", daemon=True)
    watcher.start()
    figures: dict = {"rate": rate, "seconds": seconds, "far_poll": far_poll, "poll": POLL_SECONDS, "phases": {},
                     "doctors": len(churn.doctors)}
    try:
        far_pool = min(200, max(40, int(rate * seconds / 60) // 2))
        figures["far_pool"] = far_pool
        say(f"scenario b: {far_pool} far-horizon appointments first (hints on), then {rate:.0f} changes/min "
            f"for {seconds:.0f} s without hints and {seconds:.0f} s with them (far poll every {far_poll} s) ...")
        seed_far(churn, far_pool)
        settle = time.monotonic() + SETTLE
        while churn.waiting() and time.monotonic() < settle:
            time.sleep(0.5)
        seeded = summarize([c for c in churn.changes if c["phase"] == "seed"])
        figures["seeded"] = seeded
        say(f"b: far pool in Google after {time.monotonic() - settle + SETTLE:.0f} s: {seeded['seen']}/{seeded['n']} "
            f"(the rest are left alone until seen)")
        counts = Counts(env)
        for phase, hints in (("without hints", False), ("with hints", True)):
            env.kivicare.call(_set_hints, hints)
            counts.start()  # phase 1's requests end where phase 2's begin (its far tail counts in phase 2)
            hint_mark = env.kivicare.call(_hint_counts)
            if hints:
                deadline_of = lambda window: _target("with hints", window, {}) + GRACE  # noqa: E731
            else:
                deadline_of = lambda window: _target("without hints", window,  # noqa: E731
                                                     {"poll": POLL_SECONDS, "far_poll": far_poll}) + GRACE
            began = time.monotonic()
            made = churn.run_phase(phase, seconds, rate, deadline_of)
            if hints:  # the tail: what is still on its way (phase 1's far changes wait for the far poll)
                while churn.waiting():
                    time.sleep(0.5)
            hint_end = env.kivicare.call(_hint_counts)
            figures["phases"][phase] = {"made": made, "wall_s": time.monotonic() - began,
                                        "requests": counts.stop(),
                                        "hints_sent": hint_end["sent"] - hint_mark["sent"],
                                        "hints_failed": hint_end["failed"] - hint_mark["failed"]}
            say(f"b: {phase}: {made} changes in {seconds:.0f} s")
    finally:
        stop.set()
        watcher.join(timeout=10)
    for phase, data in figures["phases"].items():
        mine = [c for c in churn.changes if c["phase"] == phase]
        data["near"] = summarize([c for c in mine if c["window"] == "near"])
        data["far"] = summarize([c for c in mine if c["window"] == "far"])
        data["all"] = summarize(mine)
        data["unseen_changes"] = [f"{c['kind']} of {c['id']} ({c['window']})" for c in mine if c["seen"] is None]
        data["kinds"] = {k: sum(c["kind"] == k for c in mine) for k in
                         ("reschedule", "status", "cancel", "create", "delete")}
        # Near-window p95 by kind: which path makes the tail (a deletion is confirmed with a GET first).
        data["near_p95_by_kind"] = {k: summarize([c for c in mine if c["window"] == "near" and c["kind"] == k])["p95"]
                                    for k, n in data["kinds"].items() if n}
        req = data["requests"]
        say(f"b: {phase}: near p50/p95/max {fmt_s(data['near']['p50'])}/{fmt_s(data['near']['p95'])}/"
            f"{fmt_s(data['near']['max'])}, far {fmt_s(data['far']['p50'])}/{fmt_s(data['far']['p95'])}/"
            f"{fmt_s(data['far']['max'])}, not seen {data['all']['unseen']}/{data['all']['n']}; "
            f"Google {req['google_total']} ({req['google']}), KiviCare {req['kivicare_total']} ({req['kivicare']}); "
            f"hints {data['hints_sent']} sent, {data['hints_failed']} failed")
    return figures


def _target(phase: str, window: str, b: dict) -> float:
    """Issue 7's p95 target (s): 2 with hints; else the window's poll interval + 2."""
    if phase == "with hints":
        return 2.0
    return (b["poll"] if window == "near" else b["far_poll"]) + 2.0


def rows(b: dict) -> list[str]:
    """Markdown table rows: scenario | figure | ours | baseline | ratio | target | verdict."""
    mark = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    out = [f"| b: steady churn, {b['rate']:.0f} changes/min × {b['seconds']:.0f} s per phase, {b['doctors']} doctors "
           f"(near: days {NEAR_DAYS[0]}-{NEAR_DAYS[1]}, polled every {b['poll']} s; far: days {FAR_DAYS[0]}-"
           f"{FAR_DAYS[1]}, far poll every {b['far_poll']} s for the bench, default 600 s) "
           f"| changes made without / with hints | {b['phases']['without hints']['made']} / "
           f"{b['phases']['with hints']['made']} | | | | |"]
    for phase, data in b["phases"].items():
        for window in ("near", "far"):
            f = data[window]
            target = _target(phase, window, b)
            ok = f["p95"] is not None and f["p95"] <= target and f["unseen"] == 0
            out.append(f"| b {phase}, {window} | KiviCare → Google p50 / p95 / max ({f['seen']}/{f['n']} seen) "
                       f"| {fmt_s(f['p50'])} / {fmt_s(f['p95'])} / {fmt_s(f['max'])} | | | p95 ≤ {target:.0f} s, "
                       f"all seen | {mark(ok)} |")
        req, made = data["requests"], max(data["made"], 1)
        out.append(f"| b {phase} | requests per change (Google / KiviCare, polls included) | "
                   f"{req['google_total'] / made:.2f} / {req['kivicare_total'] / made:.2f} | | | reported | |")
    return out


def notes(b: dict) -> str:
    parts = []
    for phase, data in b["phases"].items():
        req = data["requests"]
        kinds = ", ".join(f"{n} {k}" for k, n in data["kinds"].items() if n)
        by_kind = data.get("near_p95_by_kind") or {}
        if by_kind:
            kinds += " (near p95 by kind: " + ", ".join(f"{k} {fmt_s(v)}" for k, v in by_kind.items()) + ")"
        unseen = data.get("unseen_changes") or []
        parts.append(f"{phase}: {kinds}; Google requests {req['google']}, KiviCare requests {req['kivicare']}; "
                     f"{data['hints_sent']} hints sent ({data['hints_failed']} not answered 2xx)"
                     + (f"; not seen: {', '.join(unseen[:10])}{' …' if len(unseen) > 10 else ''}" if unseen else ""))
    return (f"Scenario b times each change from the moment the KiviCare sandbox holds it to the moment the "
            f"Google sandbox shows it on the appointment's deterministic event (looked at every {WATCH_EVERY} s; "
            f"a cancellation or deletion counts when the event is gone). Before the phases, {b['far_pool']} "
            f"far-horizon appointments were booked with hints on "
            f"({b['seeded']['seen']}/{b['seeded']['n']} in Google within {SETTLE:.0f} s; the others are not changed "
            f"until they are). The far poll interval was set to "
            f"{b['far_poll']} s for the bench (default 600 s); the companion plugin stayed installed in both "
            f"phases, only its hints were switched off in the first (a sandbox knob, no restart). Phase 1's "
            f"far changes still waiting for the far poll when phase 2 began count in phase 1's latencies and "
            f"in phase 2's request counts. " + "; ".join(parts) + ".")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario b's options (``__main__`` may add them to its own parser)."""
    parser.add_argument("--churn-seconds", type=float, default=120.0, help="length of each phase (s)")
    parser.add_argument("--churn-rate", type=float, default=300.0, help="changes per minute")
    parser.add_argument("--far-poll-seconds", type=int, default=FAR_POLL_SECONDS,
                        help="bridge.far_poll_seconds during the scenario")


def standalone(module, argv: list[str] | None, prog: str, small: dict) -> int:
    """Try one scenario module alone: an Environment, the doctors connected, scenario a's initial sync,
    then ``module.run``; prints its rows and the wall time. ``small``: option values ``--small`` sets."""
    from bench.perf import initial_sync
    from bench.perf.environment import Environment
    parser = argparse.ArgumentParser(prog=prog, description=(module.__doc__ or "").split("\n")[0])
    parser.add_argument("--small", action="store_true", help=", ".join(f"{k}={v}" for k, v in small.items()))
    parser.add_argument("--doctors", type=int, default=10)
    parser.add_argument("--appointments", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0, help="give the initial sync up after (s)")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.small:
        for name, value in small.items():
            setattr(args, name, value)
    say = lambda *a: print("[perf]", *a, flush=True)  # noqa: E731
    began = time.monotonic()
    with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as env:
        say(f"connecting {args.doctors} doctors ...")
        env.connect_doctors()
        initial_sync.run(env, args, say)
        scenario_began = time.monotonic()
        figures = module.run(env, args, say)
        scenario_wall = time.monotonic() - scenario_began
    print("\n".join(module.rows(figures)))
    if hasattr(module, "notes"):
        print("\n" + module.notes(figures))
    print(f"\nscenario wall time {scenario_wall:.0f} s; in all {time.monotonic() - began:.0f} s "
          f"(sidecar log and database under {env.workdir})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.perf.churn [--small]``: an Environment, scenario a's sync, then scenario b."""
    return standalone(sys.modules[__name__], argv, "python -m bench.perf.churn",
                      {"doctors": 5, "appointments": 200, "churn_seconds": 30.0})


if __name__ == "__main__":
    ROOT = Path(__file__).resolve().parents[2]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
