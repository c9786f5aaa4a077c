"""Scenario d: the doctors act in Google; KiviCare must follow.

``moves`` doctor actions (issue 7: 1,000) spread over ``moves_seconds`` across every connected calendar:
half are moves of synced appointment events (new start and end, the same length: the sidecar reschedules
the appointment through the companion plugin, ``sync.direction`` "both", no KiviCare change in between so the
conflict rule does not apply), half are new personal events (opaque, so they must become busy blocks the
companion plugin stores for that doctor). Every action goes to an hour slot used by nothing else (20:00-24:00
UTC, days 2..80; a move keeps the appointment's 30 minutes, a busy event lasts 30 or 60), so the plugin never
refuses a move as taken.

Each action is timed from the moment the Google sandbox holds it until the KiviCare sandbox reflects it
(the appointment's start/end, or a busy block with that start/end), looked at every 0.2 s in the KiviCare
sandbox's process. Also from the moment a pull could first see it: the start of the first ``events.list``
of that calendar after the action (Google's request log). Push notifications are switched on for the run
(``google.push_over_http``, applied at run time through the settings store, like ``companion.secret``):
the sidecar opens a watch channel per calendar and pulls when Google notifies it.

Target (issue 7): p95 ≤ 5 s after the change is visible in a pull.

    .venv/bin/python -m bench.perf.inbound --small      # 5 doctors, 200 appointments, 200 actions
"""

from __future__ import annotations

import argparse
import bisect
import random
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

from .churn import (Counts, _google_shows, _kc_snapshot, apply_settings, companion_settings, doctor_calendars,
                    event_id, fmt_s, install_companion, percentile, standalone)
from .sandboxes import UTC

ZONE = "Europe/Paris"  # the bench calendars' time zone (sandboxes._add_google_doctors)
DAYS = (2, 80)  # inside the horizon (bridge.horizon_days = 90)
HOURS = (20, 24)  # UTC: after scenario b's churn slots (16-20 UTC) and the seeded day
WATCH_EVERY = 0.2
DEADLINE = 60.0  # s after an action before it counts as not reflected


# ---- run in the sandbox processes ----------------------------------------------------------------------

def _user_move(sb, calendar_id: str, event_id: str, start: float, end: float) -> None:
    """Google child: the doctor drags the event in Google Calendar (new start and end, wall time in ZONE)."""
    from zoneinfo import ZoneInfo
    zone = ZoneInfo(ZONE)
    sb.user_patch(calendar_id, event_id, {
        "start": {"dateTime": datetime.fromtimestamp(start, zone).isoformat(), "timeZone": ZONE},
        "end": {"dateTime": datetime.fromtimestamp(end, zone).isoformat(), "timeZone": ZONE}})


def _user_busy(sb, calendar_id: str, start: float, end: float) -> str:
    """Google child: the doctor adds a personal (opaque) event. Returns its id."""
    from zoneinfo import ZoneInfo
    zone = ZoneInfo(ZONE)
    return sb.user_insert(calendar_id, {
        "summary": "Personal", "transparency": "opaque",
        "start": {"dateTime": datetime.fromtimestamp(start, zone).isoformat(), "timeZone": ZONE},
        "end": {"dateTime": datetime.fromtimestamp(end, zone).isoformat(), "timeZone": ZONE}})["id"]


def _kc_reflects(sb, items: list[tuple]) -> list:
    """KiviCare child: the keys of ``items`` ``(key, kind, doctor, appointment_id, start, end)`` KiviCare
    reflects: "move" = the appointment has that start and end; "busy" = the companion plugin holds a busy
    block of that doctor with that start and end (epoch seconds)."""
    seen, blocks = [], {}
    with sb._lock:
        for key, kind, doctor, appointment_id, start, end in items:
            if kind == "move":
                a = sb._appts.get(int(appointment_id))
                if a is not None and a.start_utc.timestamp() == start and a.end_utc.timestamp() == end:
                    seen.append(key)
            else:
                if doctor not in blocks:
                    blocks[doctor] = {(b["start"].timestamp(), b["end"].timestamp())
                                      for b in (sb.companion.busy_blocks(doctor) if sb.companion else [])}
                if (start, end) in blocks[doctor]:
                    seen.append(key)
    return seen


def _list_times(sb, since: float) -> dict:
    """Google child: calendar id -> start times (epoch s) of the ``events.list`` requests since ``since``."""
    out: dict = {}
    with sb._lock:
        rows = [(r["path"], r["time"]) for r in sb._log if r["method"] == "GET" and r["time"] >= since]
    for path, at in rows:
        path = unquote(path)
        prefix = "/calendar/v3/calendars/"
        if path.startswith(prefix) and path.endswith("/events"):
            out.setdefault(path[len(prefix):-len("/events")], []).append(at)
    return {k: sorted(v) for k, v in out.items()}


def _live_channels(sb) -> int:
    return sum(ch["state"] == "live" for ch in sb.channels())


# ---- the scenario --------------------------------------------------------------------------------------

class Doctors:
    """The doctors' side: which appointment events may be moved, which slots are still unused."""

    def __init__(self, env, seed: int = 11):
        self.env = env
        self.rng = random.Random(seed)
        self.calendars = doctor_calendars(env)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.free = {d: [(today + timedelta(days=day, minutes=m)).timestamp()
                         for day in range(DAYS[0], DAYS[1] + 1)
                         for m in range(HOURS[0] * 60, HOURS[1] * 60, 60)] for d in self.calendars}
        for slots in self.free.values():
            self.rng.shuffle(slots)

    def movable(self) -> list[dict]:
        """Booked or pending appointments more than a day ahead whose event Google shows as KiviCare has it."""
        soon = time.time() + 86400
        rows = [a for a in self.env.kivicare.call(_kc_snapshot, list(self.calendars))
                if a["status"] in (1, 2) and a["start"] > soon]
        items = [(i, self.calendars[a["doctor"]], event_id(self.env, a["id"], self.calendars[a["doctor"]]),
                  (a["start"], a["end"], a["status"] == 2)) for i, a in enumerate(rows)]
        synced = set(self.env.google.call(_google_shows, items))
        found = [dict(rows[i], event=items[i][2]) for i in synced]
        self.rng.shuffle(found)
        return found

    def slot(self, doctor: int) -> float:
        """A start (epoch seconds) of an hour slot of ``doctor`` nothing has used; never given twice."""
        return self.free[doctor].pop()


def run(env, args, say) -> dict:
    """Scenario d on a running sidecar (after scenario a; b may have run). Returns the figures (seconds).

    ``args``: ``moves`` (actions, default 1000; half moves, half busy events), ``moves_seconds`` (default 60)."""
    total = int(getattr(args, "moves", 1000))
    seconds = float(getattr(args, "moves_seconds", 60))
    apply_settings(env, {**companion_settings(env), "google.push_over_http": True, "sync.direction": "both"})
    install_companion(env, hints=True)
    doctors = Doctors(env)
    waited = time.monotonic()
    while env.google.call(_live_channels) < len(doctors.calendars) and time.monotonic() - waited < 20:
        time.sleep(0.5)  # the next pull opens the watch channels
    channels = env.google.call(_live_channels)
    movable = doctors.movable()
    n_moves = min(total // 2, len(movable))
    plan = ["move"] * n_moves + ["busy"] * (total - n_moves)
    doctors.rng.shuffle(plan)
    say(f"scenario d: {n_moves} moves and {total - n_moves} busy events across {len(doctors.calendars)} calendars "
        f"in {seconds:.0f} s ({channels} push channels live) ...")
    actions: list[dict] = []
    lock, stop = threading.Lock(), threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = time.monotonic()
            with lock:
                waiting = [a for a in actions if a["seen"] is None and now - a["made"] <= DEADLINE]
            if waiting:
                keys = env.kivicare.call(_kc_reflects, [(a["key"], a["kind"], a["doctor"], a["id"], a["start"],
                                                          a["end"]) for a in waiting])
                seen_mono, seen_wall = time.monotonic(), time.time()
                with lock:
                    for key in keys:
                        actions[key]["seen"], actions[key]["seen_wall"] = seen_mono, seen_wall
            stop.wait(WATCH_EVERY)

    watcher = threading.Thread(target=watch, name="inbound-watch", daemon=True)
    watcher.start()
    counts = Counts(env)
    counts.start()
    began, interval = time.monotonic(), seconds / max(total, 1)
    try:
        for n, kind in enumerate(plan):
            pause = began + n * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if kind == "move":
                appt = movable.pop()
                doctor = appt["doctor"]
                start = doctors.slot(doctor)
                end = start + (appt["end"] - appt["start"])
                env.google.call(_user_move, doctors.calendars[doctor], appt["event"], start, end)
                ident = appt["id"]
            else:
                doctor = doctors.rng.choice(list(doctors.calendars))
                start = doctors.slot(doctor)
                end = start + doctors.rng.choice((30, 60)) * 60
                ident = env.google.call(_user_busy, doctors.calendars[doctor], start, end)
            with lock:
                actions.append({"key": len(actions), "kind": kind, "doctor": doctor, "id": ident, "start": start,
                                "end": end, "calendar": doctors.calendars[doctor], "made": time.monotonic(),
                                "wall": time.time(), "seen": None, "seen_wall": None})
        made_s = time.monotonic() - began
        while True:
            now = time.monotonic()
            with lock:
                if not any(a["seen"] is None and now - a["made"] <= DEADLINE for a in actions):
                    break
            time.sleep(0.5)
    finally:
        stop.set()
        watcher.join(timeout=10)
    requests = counts.stop()
    lists = env.google.call(_list_times, actions[0]["wall"] - 1 if actions else time.time())
    for a in actions:  # the first events.list of that calendar that began after the action
        times = lists.get(a["calendar"], [])
        i = bisect.bisect_left(times, a["wall"])
        a["pull_wall"] = times[i] if i < len(times) else None
    figures = {"actions": len(actions), "n_moves": n_moves, "n_busy": len(actions) - n_moves, "seconds": seconds,
               "made_s": made_s, "calendars": len(doctors.calendars), "channels": channels, "requests": requests}
    for name, subset in (("all", actions), ("move", [a for a in actions if a["kind"] == "move"]),
                         ("busy", [a for a in actions if a["kind"] == "busy"])):
        # Not reflected by the deadline = infinite, so a p95 is never flattered by leaving the slow ones out.
        seen = [a for a in subset if a["seen"] is not None]
        inf = float("inf")
        from_change = [a["seen"] - a["made"] if a["seen"] is not None else inf for a in subset]
        from_pull = [max(0.0, a["seen_wall"] - a["pull_wall"]) if a["seen"] is not None else inf
                     for a in subset if a["pull_wall"] is not None or a["seen"] is None]
        to_pull = [a["pull_wall"] - a["wall"] for a in subset if a["pull_wall"] is not None]
        figures[name] = {"n": len(subset), "seen": len(seen), "unseen": len(subset) - len(seen),
                         "p50": percentile(from_change, 0.5), "p95": percentile(from_change, 0.95),
                         "max": max(from_change) if from_change else None,
                         "pull_p50": percentile(from_pull, 0.5), "pull_p95": percentile(from_pull, 0.95),
                         "pull_max": max(from_pull) if from_pull else None,
                         "to_pull_p95": percentile(to_pull, 0.95)}
        f = figures[name]
        say(f"d: {name}: {f['seen']}/{f['n']} reflected; from the change p50/p95/max {fmt_s(f['p50'])}/"
            f"{fmt_s(f['p95'])}/{fmt_s(f['max'])}; from the first pull after it p50/p95/max "
            f"{fmt_s(f['pull_p50'])}/{fmt_s(f['pull_p95'])}/{fmt_s(f['pull_max'])}; change → pull p95 "
            f"{fmt_s(f['to_pull_p95'])}")
    figures["unseen_actions"] = [f"{a['kind']} ({'appointment ' + a['id'] if a['kind'] == 'move' else 'event'}, "
                                 f"doctor {a['doctor']})" for a in actions if a["seen"] is None]
    say(f"d: requests: Google {requests['google_total']} {requests['google']}, KiviCare {requests['kivicare_total']} "
        f"{requests['kivicare']}")
    return figures


def rows(d: dict) -> list[str]:
    """Markdown table rows: scenario | figure | ours | baseline | ratio | target | verdict."""
    mark = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    out = []
    for name, label in (("all", "all actions"), ("move", "moves"), ("busy", "busy events")):
        f = d[name]
        head = (f"d: Google → KiviCare, {d['n_moves']} moves + {d['n_busy']} busy events across {d['calendars']} "
                f"calendars in {d['seconds']:.0f} s" if name == "all" else "d")
        ok = f["pull_p95"] is not None and f["pull_p95"] <= 5.0 and f["unseen"] == 0
        out.append(f"| {head} | {label}: p95 after the first pull that could see it (p50 / max) "
                   f"({f['seen']}/{f['n']} reflected) | {fmt_s(f['pull_p95'])} ({fmt_s(f['pull_p50'])} / "
                   f"{fmt_s(f['pull_max'])}) | | | ≤ 5 s, all reflected | {mark(ok)} |")
        out.append(f"| d | {label}: p95 from the change in Google (p50 / max) | {fmt_s(f['p95'])} "
                   f"({fmt_s(f['p50'])} / {fmt_s(f['max'])}) | | | reported | |")
    r, n = d["requests"], max(d["actions"], 1)
    out.append(f"| d | requests per action (Google / KiviCare incl. companion) | {r['google_total'] / n:.2f} / "
               f"{r['kivicare_total'] / n:.2f} | | | reported | |")
    return out


def notes(d: dict) -> str:
    return (f"Scenario d: the doctors' actions are made in the Google sandbox as a user would (not through the "
            f"API), to slots nothing else uses; each is timed until the KiviCare sandbox reflects it (the "
            f"appointment's new start/end, or a busy block the companion plugin stores), looked at every "
            f"{WATCH_EVERY} s. \"After the first pull\" starts at the first `events.list` of that calendar that "
            f"began after the action (Google's request log; p95 of change → that pull: "
            f"{fmt_s(d['all']['to_pull_p95'])}). Push notifications were on ({d['channels']} live channels over "
            f"plain HTTP, `google.push_over_http`), `sync.direction` both. Requests: Google {d['requests']['google']}, "
            f"KiviCare {d['requests']['kivicare']}."
            + (f" Not reflected within {DEADLINE:.0f} s: {', '.join(d['unseen_actions'][:10])}"
               f"{' …' if len(d['unseen_actions']) > 10 else ''}." if d.get("unseen_actions") else ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Scenario d's options (``__main__`` may add them to its own parser)."""
    parser.add_argument("--moves", type=int, default=1000, help="doctor actions in Google (half moves, half busy)")
    parser.add_argument("--moves-seconds", type=float, default=60.0, help="spread over this many seconds")


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.perf.inbound [--small]``: an Environment, scenario a's sync, then scenario d."""
    return standalone(sys.modules[__name__], argv, "python -m bench.perf.inbound",
                      {"doctors": 5, "appointments": 200, "moves": 200, "moves_seconds": 20.0})


if __name__ == "__main__":
    ROOT = Path(__file__).resolve().parents[2]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
