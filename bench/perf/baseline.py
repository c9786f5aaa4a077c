"""The naive baseline of issue 7 (item 2): a reconcile loop as several open-source peers write it.

One loop, one request at a time. Each cycle it lists KiviCare's whole sync window (yesterday … 90 days
ahead, ``GET /appointments?timezone=UTC&perPage=all``, one request), then walks the list:

- a linked appointment: ``events.get`` of its event (every one, every cycle), compare, and
  ``events.patch`` the whole body when it differs, or ``events.delete`` when it was cancelled;
- a new appointment: ``GET /appointments/{id}`` to learn its services (the list has service names
  only), ``events.insert`` (with a ``conferenceData.createRequest`` for telemedicine services, i.e. a
  doctor-service mapping with ``telemedService: yes``), then for telemedicine an ``events.patch``
  putting the Meet link into the description and location when the sidecar does so too
  (``sync.meet_link_in_text``: the environment's setting, else its default; ``meet_link_in_text``).

Linked appointments gone from the list are deleted if upcoming. Links live in a dict (no database).
It builds the same event bodies as the sidecar (``wp_bridge.event_text`` for the texts from KiviCare's
own template, ``sidecar.calendars.google.event_body``), so its result is comparable: ``--compare`` runs
both at a small size and compares every event. Google is reached with google-api-python-client
(``build`` per doctor against the sandbox's ``api_endpoint``, ``num_retries=3`` like the peers).

The baseline runs as its own subprocess (``python -m bench.perf.baseline --worker``, settings as JSON
on stdin, one JSON line per phase on stdout), so its peak RSS (VmHWM) is its own. Measured against a
fresh Environment (doctors not connected to the sidecar; the baseline is the only client):

- a: wall time from the subprocess's start (imports and first list included) until every event
  exists, Google requests per created event (the sandbox's request log), peak RSS; capped at
  ``--baseline-timeout`` seconds, reported as "> cap (k/N events)" when it does not finish;
- c: the second cycle (nothing changed): KiviCare requests per cycle, Google requests per calendar;
- b-like: the cycle time T of that idle cycle (cut at ``--baseline-cycle-cap`` seconds and then
  extrapolated from the list time and the mean ``events.get`` time, said so in the figures), and the
  latency of one KiviCare reschedule derived from it (``latency`` below).

    .venv/bin/python -m bench.perf.baseline --small            # 120 appointments, 4 doctors: rows
    .venv/bin/python -m bench.perf.baseline --compare --small  # ours vs baseline: identical events?
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.perf.sandboxes import (POLL_SECONDS, _google_requests, _kivicare_requests, _live_events,  # noqa: E402
                                  google_token)

HORIZON_DAYS = 90  # the sidecar's default bridge.horizon_days: the same window is listed
DEFAULT_TIMEOUT = 240.0  # s: cap of scenario a (--baseline-timeout)
DEFAULT_CYCLE_CAP = 20.0  # s: cap of the measured idle cycle; the rest is extrapolated (budget of make bench)


# ---- the naive reconcile (runs in the worker subprocess) --------------------------------------------

class NaiveReconcile:
    """The peers' loop. ``settings``: the JSON the parent sends (see ``run``). Not thread-safe.

    ``links``: appointment id -> (doctor id, calendar id, event id, start UTC); in memory only.
    ``counts``: requests sent by kind ("list", "detail", "reference", "get", "insert", "patch", "delete").
    """

    def __init__(self, settings: dict):
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        from wp_bridge.kivicare import KiviCareClient

        k = settings["kivicare"]
        self.kivicare = KiviCareClient(k["base_url"], k["username"], k["app_password"])
        self.site = k["base_url"].rstrip("/")
        self.counts: dict[str, int] = {}
        self.links: dict[str, tuple[int, str, str, float]] = {}
        self.calendars: dict[int, str] = {}
        self.services = {}
        for doctor in settings["doctors"]:
            creds = Credentials(token=doctor["token"])
            # One build() per doctor, as peers do (discovery document shipped with the client).
            self.services[doctor["id"]] = build("calendar", "v3", credentials=creds, cache_discovery=False,
                                                static_discovery=True,
                                                client_options={"api_endpoint": settings["api_endpoint"]})
            self.calendars[doctor["id"]] = doctor["calendar"]
        # Reference data, read once at start (the sidecar reads the same routes).
        self.site_zone = self._ref(self.kivicare.site_info).timezone or "UTC"
        self.zones = {d: self._ref(self.kivicare.get_doctor, d).timezone or self.site_zone for d in self.calendars}
        template = self._ref(self.kivicare.event_template)
        self.title_template, self.description_template = template.title, template.description
        self.colors = template.status_colors
        self.telemed_mappings = {s.id for s in self._ref(self.kivicare.list_doctor_services) if s.telemed}
        self.meet_in_text = bool(settings["meet_in_text"])  # follows the sidecar's sync.meet_link_in_text

    def _ref(self, fn, *args):
        self.counts["reference"] = self.counts.get("reference", 0) + 1
        return fn(*args)

    def _google(self, kind: str, request) -> dict:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return request.execute(num_retries=3)

    def desired(self, appointment, meet_link: str) -> dict:
        """The event body the sidecar would write (default settings, KiviCare's template)."""
        from sidecar.calendars.base import EventSpec
        from sidecar.calendars.google import event_body
        from wp_bridge import event_text
        from wp_bridge.models import PENDING

        zone = self.zones[appointment.doctor_id]
        title, description, where = event_text.texts(appointment, zone, fmt="template",
                                                      title_template=self.title_template,
                                                      description_template=self.description_template,
                                                      meet_link=meet_link)
        spec = EventSpec(appointment_id=appointment.id, start=appointment.start, end=appointment.end, timezone=zone,
                         title=title, description=description, location=where,
                         tentative=appointment.status == PENDING, color_id=self.colors.get(str(appointment.status)))
        return event_body(spec, self.site, create_conference=False, request_id="")

    @staticmethod
    def differs(event: dict, body: dict) -> bool:
        """True when Google's ``event`` does not show ``body`` (times compared as instants)."""
        from sidecar.calendars.google import _rfc3339_to_utc
        for key in ("summary", "description", "location", "status", "colorId"):
            if (event.get(key) or "") != (body.get(key) or ""):
                return True
        return any(_rfc3339_to_utc((event.get(k) or {}).get("dateTime")) !=
                   _rfc3339_to_utc(body[k]["dateTime"]) for k in ("start", "end"))

    def cycle(self, deadline: float | None = None, *, create: bool = True) -> dict:
        """One reconcile cycle. Stops early (``complete`` False) at ``deadline`` (time.monotonic()).
        ``create`` False leaves unlinked appointments alone (the idle measure after a capped scenario a).

        Returns counts: listed, created, patched, deleted, gets, elapsed seconds, list seconds.
        Raises KiviCareError when the list fails (the peers' loop then sleeps and tries again).
        """
        from wp_bridge.models import CANCELLED, EVENT_STATUSES
        began = time.monotonic()
        now = datetime.now(timezone.utc)
        today = now.date()
        self.counts["list"] = self.counts.get("list", 0) + 1
        page = self.kivicare.list_appointments(today - timedelta(days=1), today + timedelta(days=HORIZON_DAYS))
        listed_s = time.monotonic() - began
        out = {"listed": len(page.appointments), "created": 0, "patched": 0, "deleted": 0, "gets": 0,
               "complete": True, "list_s": listed_s}
        seen = set()
        for appointment in page.appointments:
            if deadline is not None and time.monotonic() >= deadline:
                out["complete"] = False
                break
            seen.add(appointment.id)
            service = self.services.get(appointment.doctor_id)
            link = self.links.get(appointment.id)
            if service is None:
                continue  # a doctor who did not connect a calendar
            if link is not None:
                _doctor, calendar, event_id, _start = link
                out["gets"] += 1
                event = self._google("get", service.events().get(calendarId=calendar, eventId=event_id))
                if appointment.status == CANCELLED and appointment.start > now:
                    self._google("delete", service.events().delete(calendarId=calendar, eventId=event_id))
                    del self.links[appointment.id]
                    out["deleted"] += 1
                    continue
                if appointment.status not in EVENT_STATUSES:
                    continue
                link_text = (event.get("hangoutLink") or "") if self.meet_in_text else ""  # the event's own link
                body = self.desired(appointment, link_text)
                if self.differs(event, body):
                    self._google("patch", service.events().patch(calendarId=calendar, eventId=event_id, body=body,
                                                                 conferenceDataVersion=1))
                    self.links[appointment.id] = (appointment.doctor_id, calendar, event_id,
                                                  appointment.start.timestamp())
                    out["patched"] += 1
                continue
            if appointment.status not in EVENT_STATUSES or not create:
                continue
            self.counts["detail"] = self.counts.get("detail", 0) + 1
            mapping_ids = self.kivicare.get_service_ids(appointment.id)
            telemed = bool(self.telemed_mappings.intersection(mapping_ids))
            calendar = self.calendars[appointment.doctor_id]
            body = self.desired(appointment, "")
            if telemed:
                body["conferenceData"] = {"createRequest": {"requestId": f"{appointment.id}-{os.urandom(6).hex()}",
                                                            "conferenceSolutionKey": {"type": "hangoutsMeet"}}}
            event = self._google("insert", service.events().insert(calendarId=calendar, body=body,
                                                                   conferenceDataVersion=1))
            self.links[appointment.id] = (appointment.doctor_id, calendar, event["id"], appointment.start.timestamp())
            out["created"] += 1
            if telemed and self.meet_in_text and event.get("hangoutLink"):
                linked = self.desired(appointment, event["hangoutLink"])
                self._google("patch", service.events().patch(
                    calendarId=calendar, eventId=event["id"], conferenceDataVersion=1,
                    body={"description": linked["description"], "location": linked["location"]}))
        if out["complete"]:
            for appointment_id, (doctor, calendar, event_id, start) in list(self.links.items()):
                if appointment_id not in seen and start > now.timestamp():
                    # Gone from the list: deleted in KiviCare (naive: no confirmation, unlike the sidecar).
                    self._google("delete", self.services[doctor].events().delete(calendarId=calendar,
                                                                                   eventId=event_id))
                    del self.links[appointment_id]
                    out["deleted"] += 1
        out["elapsed_s"] = time.monotonic() - began
        return out


def _worker() -> int:
    """The subprocess: first cycle (scenario a) under the cap, then waits for "go", then one idle cycle."""
    from bench.perf.sandboxes import peak_rss_mb
    settings = json.loads(sys.stdin.readline())
    began = time.monotonic()
    loop = NaiveReconcile(settings)
    first = loop.cycle(deadline=began + settings["timeout"])
    first.update(counts=dict(loop.counts), links=len(loop.links), rss_mb=peak_rss_mb(os.getpid()),
                 worker_s=time.monotonic() - began)
    print(json.dumps({"phase": "a", **first}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 0
    loop.counts.clear()
    idle = loop.cycle(deadline=time.monotonic() + settings["cycle_cap"], create=first["complete"])
    idle.update(counts=dict(loop.counts), links=len(loop.links))
    print(json.dumps({"phase": "c", **idle}), flush=True)
    if sys.stdin.readline().strip() != "loop":
        return 0
    # The peers' loop proper (for --probe): cycle, sleep the poll interval, again, until told to stop.
    stop, cycles = threading.Event(), []

    def forever() -> None:
        while not stop.is_set():
            cycles.append(loop.cycle()["elapsed_s"])
            stop.wait(settings["poll"])
    thread = threading.Thread(target=forever, daemon=True)
    thread.start()
    sys.stdin.readline()
    stop.set()
    thread.join()
    print(json.dumps({"phase": "loop", "cycles": cycles}), flush=True)
    return 0


# ---- the parent: one run against a fresh Environment ---------------------------------------------------

def p95_latency(cycle_s: float, poll_s: float) -> tuple[float, float, float]:
    """(mean, p95, worst) seconds from a KiviCare change to Google for the naive loop.

    A change lands at a uniform moment of the period ``cycle_s + poll_s`` (cycle, then the poll sleep), so
    the next list sees it after U[0, cycle+poll]; the loop then reaches that appointment after U[0, cycle]
    (its place in the list). The latency is the sum of these two independent uniforms.
    """
    a, b = max(cycle_s + poll_s, 1e-9), max(cycle_s, 1e-9)

    def cdf(s: float) -> float:  # the sum of U[0, a] and U[0, b], a ≥ b
        if s <= b:
            return s * s / (2 * a * b)
        if s <= a:
            return (2 * s - b) / (2 * a)
        return 1 - (a + b - s) ** 2 / (2 * a * b)
    lo, hi = 0.0, a + b
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < 0.95 else (lo, mid)
    return (a + b) / 2, hi, a + b


def meet_link_in_text(env, args) -> bool:
    """Whether the baseline writes the Meet link into the text (a patch after the insert): as the sidecar does,
    i.e. ``sync.meet_link_in_text`` of the environment's settings, else its default (an engine without the
    setting always wrote it). ``args.baseline_meet_in_text`` "yes"/"no" overrides."""
    wanted = getattr(args, "baseline_meet_in_text", "auto")
    if wanted in ("yes", "no"):
        return wanted == "yes"
    from sidecar.config import BY_NAME
    setting = BY_NAME.get("sync.meet_link_in_text")
    return bool(env.extra.get("sync.meet_link_in_text", setting.default if setting else True))


def _api(requests_log: list[dict]) -> list[dict]:
    return [r for r in requests_log if r["path"].startswith("/calendar/v3/")]


def run(env, args, say) -> dict:
    """Run the baseline against ``env`` (fresh; doctors not connected to the sidecar). Returns figures:
    seconds, MB, request counts (see the module docstring). Tokens come from the real OAuth code flow."""
    timeout = float(getattr(args, "baseline_timeout", DEFAULT_TIMEOUT))
    cycle_cap = float(getattr(args, "baseline_cycle_cap", DEFAULT_CYCLE_CAP))
    doctors = [{"id": d, "token": google_token(env.google, env.gstate, email), "calendar": env.calendars[email]}
               for d, email in zip(env.seeded["doctors"], env.seeded["emails"])]
    env.reset_requests()
    expected = env.seeded["appointments"]
    settings = {"kivicare": env.kstate, "api_endpoint": env.gstate["api_endpoint"], "doctors": doctors,
                "timeout": timeout, "cycle_cap": cycle_cap, "poll": POLL_SECONDS,
                "meet_in_text": meet_link_in_text(env, args)}
    say(f"baseline a: naive reconcile of {expected} appointments, {len(doctors)} doctors (cap {timeout:.0f} s) ...")
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.perf.baseline", "--worker"], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        proc.stdin.write(json.dumps(settings) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        wall = time.monotonic() - began
        if not line:
            raise RuntimeError(f"the baseline worker ended without a result (exit {proc.wait(timeout=10)})")
        a = json.loads(line)
        created = env.google.call(_live_events, list(env.calendars.values()))
        a_api = _api(env.google.call(_google_requests))
        a_kivicare = len(env.kivicare.call(_kivicare_requests))
        say(f"baseline a: {created}/{expected} events in {wall:.1f} s ({len(a_api)} Google requests); "
            f"idle cycle (cap {cycle_cap:.0f} s) ...")
        env.reset_requests()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline worker ended without a cycle (exit {proc.wait(timeout=10)})")
        c = json.loads(line)
        c_api = _api(env.google.call(_google_requests))  # before any probe adds its own requests
        c_kivicare = env.kivicare.call(_kivicare_requests)
        cycle_s = _full_cycle(c, expected)
        probes = _probe(env, proc, int(args.probe), say, cycle_s + POLL_SECONDS) if getattr(args, "probe", 0) else []
        proc.stdin.close()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    calendars = len(doctors)
    links, gets = c["links"], c["gets"]
    # The idle cycle when every event is linked: measured when it finished under the cap (and scenario a
    # did), else extrapolated to all ``expected`` events from the list time and the mean events.get.
    per_get = (c["elapsed_s"] - c["list_s"]) / gets if gets else 0.0
    full_cycle = _full_cycle(c, expected)
    exact = c["complete"] and links >= expected
    google_per_cycle = len(c_api) if exact else (len(c_api) / max(gets, 1)) * expected
    mean, p95, worst = p95_latency(full_cycle, POLL_SECONDS)
    c_writes = sum(r["method"] not in ("GET", "HEAD") for r in c_api) + \
        sum(r["method"] not in ("GET", "HEAD") for r in c_kivicare)
    figures = {
        "expected": expected, "doctors": calendars, "telemedicine": env.seeded["telemedicine"],
        "a_wall_s": wall, "a_complete": created >= expected and a["complete"], "a_created": created,
        "a_google_requests": len(a_api), "a_per_event": len(a_api) / max(created, 1),
        "a_inserts": a["counts"].get("insert", 0), "a_patches": a["counts"].get("patch", 0),
        "a_kivicare_requests": a_kivicare, "a_details": a["counts"].get("detail", 0),
        "a_rss_mb": a["rss_mb"], "a_refused": sum(r["status"] == 403 for r in a_api), "timeout_s": timeout,
        "c_complete": exact, "c_measured_s": c["elapsed_s"], "c_list_s": c["list_s"], "c_gets": gets,
        "c_links": links, "c_per_get_s": per_get, "c_cap_s": cycle_cap,
        "c_kivicare_per_cycle": len(c_kivicare), "c_google_per_cycle": google_per_cycle,
        "c_google_per_calendar_cycle": google_per_cycle / calendars, "c_writes": c_writes,
        "b_cycle_s": full_cycle, "b_poll_s": POLL_SECONDS, "b_latency_mean_s": mean, "b_latency_p95_s": p95,
        "b_latency_worst_s": worst, "meet_in_text": settings["meet_in_text"], "probes": probes,
    }
    say(f"baseline: a {wall:.1f} s ({created}/{expected}), {figures['a_per_event']:.2f} Google requests/event, "
        f"RSS {a['rss_mb']} MB; idle cycle {full_cycle:.1f} s{'' if c['complete'] else ' (extrapolated)'}, "
        f"{len(c_kivicare)} KiviCare requests, {figures['c_google_per_calendar_cycle']:.1f} Google/calendar; "
        f"reschedule latency mean {mean:.1f} s, p95 {p95:.1f} s")
    return figures


def _full_cycle(c: dict, expected: int) -> float:
    """Seconds of one idle cycle over ``expected`` linked events: measured, or extrapolated from the cut one."""
    if c["complete"] and c["links"] >= expected:
        return c["elapsed_s"]
    per_get = (c["elapsed_s"] - c["list_s"]) / c["gets"] if c["gets"] else 0.0
    return c["list_s"] + per_get * expected


def _event_index(sb, calendar_ids: list[str]) -> dict:
    """appointment id -> (calendar id, event id, start dateTime) of every live event."""
    return {((e.get("extendedProperties") or {}).get("private") or {}).get("kcAppointmentId", ""):
            (cal, e["id"], e["start"].get("dateTime")) for cal in calendar_ids
            for e in sb.events(cal, include_cancelled=False)}


def _event_start(sb, calendar_id: str, event_id: str) -> str | None:
    event = sb.event(calendar_id, event_id)
    return event["start"].get("dateTime") if event else None


def _probe(env, proc, count: int, say, period: float) -> list[float]:
    """Measured, not derived: with the worker looping (cycle, poll sleep), ``count`` reschedules made in
    KiviCare at random moments (seeded, uniform over one ``period`` = cycle + poll seconds), each timed
    until Google shows the new start (0.2 s resolution). Returns the latencies in seconds. Standalone only
    (``--probe N``): each takes about a cycle."""
    from .sandboxes import _method
    rng = random.Random(7)
    index = env.google.call(_event_index, list(env.calendars.values()))
    upcoming = sorted(a for a in index if a)
    proc.stdin.write("loop\n")
    proc.stdin.flush()
    latencies = []
    for n in range(count):
        appointment_id = upcoming[rng.randrange(len(upcoming))]
        upcoming.remove(appointment_id)
        calendar, event_id, before = index[appointment_id]
        time.sleep(rng.uniform(0, period))
        start = datetime.fromisoformat(before).astimezone(timezone.utc) + timedelta(days=7)
        env.kivicare.call(_method, "reschedule", appointment_id, start)
        began = time.monotonic()
        while env.google.call(_event_start, calendar, event_id) == before and time.monotonic() - began < 600:
            time.sleep(0.2)
        latencies.append(time.monotonic() - began)
        say(f"probe {n + 1}/{count}: appointment moved in KiviCare, in Google after {latencies[-1]:.1f} s")
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    proc.stdout.readline()
    return latencies


def _a_wall_text(f: dict) -> str:
    if f["a_complete"]:
        return f"{f['a_wall_s']:.1f} s"
    return f"> {f['timeout_s']:.0f} s cap ({f['a_created']}/{f['expected']} events)"


def baseline_cells(f: dict) -> dict:
    """Baseline values for the other scenarios' rows, by key: numbers where the run finished, else text
    ("> 240 s cap (k/N events)"). Keys: a.wall_s, a.per_event, a.rss_mb, c.kivicare_per_cycle,
    c.google_per_calendar_cycle, c.writes, b.cycle_s, b.latency_s (p95), b.latency_mean_s."""
    return {
        "a.wall_s": f["a_wall_s"] if f["a_complete"] else _a_wall_text(f),
        "a.per_event": f["a_per_event"],
        "a.rss_mb": f["a_rss_mb"],
        "c.kivicare_per_cycle": f["c_kivicare_per_cycle"],
        "c.google_per_calendar_cycle": f["c_google_per_calendar_cycle"],
        "c.writes": f["c_writes"],
        "b.cycle_s": f["b_cycle_s"],
        "b.latency_s": f["b_latency_p95_s"],
        "b.latency_mean_s": f["b_latency_mean_s"],
    }


def rows(f: dict) -> list[str]:
    """The baseline's own summary rows of the report table (its figures in the "baseline" column)."""
    how = "measured" if f["c_complete"] else \
        f"extrapolated: {f['c_gets']} of {f['expected']} events.get in {f['c_measured_s']:.0f} s"
    rss = f"{f['a_rss_mb']:.0f} MB" if f["a_rss_mb"] is not None else "n/a"
    return [
        f"| baseline (naive reconcile), a: {f['expected']} appointments / {f['doctors']} doctors | wall time | "
        f"| {_a_wall_text(f)} | | | |",
        f"| baseline, a | Google requests per created event | | {f['a_per_event']:.2f} ({f['a_google_requests']} "
        f"requests: {f['a_inserts']} inserts, {f['a_patches']} Meet-link patches"
        f"{'' if f['meet_in_text'] else ': the link stays in conferenceData, as the sidecar default'}) | | | |",
        f"| baseline, a | KiviCare requests | | {f['a_kivicare_requests']} ({f['a_details']} detail GETs) | | | |",
        f"| baseline, a | peak RSS of the baseline process (VmHWM) | | {rss} | | | |",
        f"| baseline, c: idle cycle | KiviCare requests per cycle | | {f['c_kivicare_per_cycle']} | | | |",
        f"| baseline, c | Google requests per calendar per cycle | | {f['c_google_per_calendar_cycle']:.1f} | | | |",
        f"| baseline, c | writes in the idle cycle | | {f['c_writes']} | | | |",
        f"| baseline, b | one idle cycle ({how}) | | {f['b_cycle_s']:.1f} s | | | |",
        f"| baseline, b | KiviCare reschedule → Google, p95 (mean) | | {f['b_latency_p95_s']:.1f} s "
        f"({f['b_latency_mean_s']:.1f} s) | | | |",
    ]


def notes(f: dict) -> str:
    """The report's paragraph on the baseline: what it is and how its latency was derived."""
    return (f"The baseline is a naive reconcile in its own process (bench/perf/baseline.py): one loop, one request "
            f"at a time, every linked event fetched each cycle, links in memory; the same event bodies as the sidecar. "
            f"Its reschedule latency is derived from the idle cycle time T = {f['b_cycle_s']:.1f} s and its poll "
            f"sleep P = {f['b_poll_s']} s: a change waits U[0, T+P] for the next list, then U[0, T] until the loop "
            f"reaches it, so mean = T + P/2 = {f['b_latency_mean_s']:.1f} s, p95 {f['b_latency_p95_s']:.1f} s, "
            f"worst 2T + P = {f['b_latency_worst_s']:.1f} s."
            + ("" if f["c_complete"] else
               f" The idle cycle was cut at {f['c_cap_s']:.0f} s (make bench budget) after {f['c_gets']} events.get "
               f"({f['c_links']} events linked); T = list time {f['c_list_s']:.2f} s + {f['expected']} × the mean "
               f"events.get {f['c_per_get_s'] * 1000:.0f} ms; Google requests per calendar likewise scaled to "
               f"{f['expected']} events."))


# ---- standalone: python -m bench.perf.baseline [--small] [--compare] ------------------------------------

def _events(sb, calendar_ids: list[str]) -> dict:
    """Every live event's fields that matter, by appointment id, Meet links replaced by "<meet>"."""
    out = {}
    for cal in calendar_ids:
        for e in sb.events(cal, include_cancelled=False):
            link = e.get("hangoutLink") or ""
            norm = lambda text: (text or "").replace(link, "<meet>") if link else (text or "")  # noqa: E731
            private = dict((e.get("extendedProperties") or {}).get("private") or {})
            key = private.get("kcAppointmentId", e["id"])
            private["kcSite"] = "<site>" if private.get("kcSite") else None  # each run's KiviCare port differs
            out[key] = {"calendar": cal, "summary": e.get("summary"), "description": norm(e.get("description")),
                        "location": norm(e.get("location")), "start": e.get("start"), "end": e.get("end"),
                        "status": e.get("status"), "colorId": e.get("colorId"), "meet": bool(link),
                        "private": private, "reminders": e.get("reminders"),
                        "attendees": e.get("attendees")}
    return out


def compare(args, say) -> int:
    """Scenario a by the sidecar, then by the baseline, each on a fresh Environment: the same events?"""
    from bench.perf.environment import Environment
    with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as env:
        env.connect_doctors()
        env.start_sidecar()
        cals = list(env.calendars.values())
        deadline = time.monotonic() + 300
        while env.google.call(_live_events, cals) < env.seeded["appointments"] and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3 * POLL_SECONDS)  # the Meet-link patches follow the inserts
        ours = env.google.call(_events, cals)
    with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as env:
        run(env, args, say)
        theirs = env.google.call(_events, list(env.calendars.values()))
    differences = [(k, ours.get(k), theirs.get(k)) for k in sorted(set(ours) | set(theirs))
                   if ours.get(k) != theirs.get(k)]
    say(f"compare: ours {len(ours)} events, baseline {len(theirs)} events, {len(differences)} differ")
    for key, mine, other in differences[:5]:
        say(f"  appointment {key}:\n    ours     {mine}\n    baseline {other}")
    return 1 if differences or not ours else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return _worker()
    parser = argparse.ArgumentParser(prog="python -m bench.perf.baseline", description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="120 appointments across 4 doctors")
    parser.add_argument("--compare", action="store_true", help="run ours and the baseline; compare every event")
    parser.add_argument("--appointments", type=int, default=1000)
    parser.add_argument("--doctors", type=int, default=10)
    parser.add_argument("--baseline-timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--baseline-cycle-cap", type=float, default=DEFAULT_CYCLE_CAP)
    parser.add_argument("--probe", type=int, default=0,
                        help="also measure N real KiviCare reschedules with the loop running (slow: ~1 cycle each)")
    parser.add_argument("--baseline-meet-in-text", choices=("auto", "yes", "no"), default="auto",
                        help="patch the Meet link into the text (auto: as the sidecar's sync.meet_link_in_text)")
    args = parser.parse_args(argv)
    if args.small:
        args.appointments, args.doctors = 120, 4
    say = lambda *a: print("[baseline]", *a, flush=True)  # noqa: E731
    if args.compare:
        return compare(args, say)
    from bench.perf.environment import Environment
    began = time.monotonic()
    with Environment(doctors=args.doctors, appointments=args.appointments, say=say) as env:
        figures = run(env, args, say)
    print("\n".join(rows(figures)))
    print(notes(figures))
    if figures["probes"]:
        ordered = sorted(figures["probes"])
        print(f"probe: {len(ordered)} reschedules measured, mean {sum(ordered) / len(ordered):.1f} s, "
              f"max {ordered[-1]:.1f} s (derived: mean {figures['b_latency_mean_s']:.1f} s, "
              f"p95 {figures['b_latency_p95_s']:.1f} s, worst {figures['b_latency_worst_s']:.1f} s)")
    print(json.dumps(baseline_cells(figures)))
    say(f"wall time {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
