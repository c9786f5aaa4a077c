"""The home page: every doctor's calendar connection and sync counts, a site health strip, a chart of the
last 24 hours, the progress of first syncs and resets, and recent activity.

Per doctor: the connection's state (connected, needs reconnect, waiting for confirmation, not connected,
disconnected, removed from KiviCare), Google account, calendar, last sync, synced and failed counts, jobs
waiting; the sync log of the last 24 hours counted per direction (KiviCare → Google, Google → KiviCare;
ok and error); busy blocks; open conflicts; missing Google permissions (granular consent); and, while a
first sync or a reset runs, how many of the appointments in the horizon already have their event.

The health strip: KiviCare reachable (the engine's last poll, ``state.poll``), the companion plugin and
its version (``state.companion_check``), Google errors in the last hour (the sync log), open conflicts.

The doctors table shows 50 doctors a page (``?page=N``), those needing attention first (needs reconnect,
failing jobs, open conflicts, a first sync waiting for confirmation, no calendar chosen), then by name, and
finds doctors by name or e-mail (``?q=``); a summary line counts every doctor so paging hides nothing.

Cheap at any size: a fixed handful of queries per page whatever the number of doctors (no query per
doctor); the cheap columns (names, connections, conflicts, failing jobs) are read for every doctor, the
costly figures (24-hour activity, busy blocks) for the doctors of the page only, and sync log reads are
bounded to the last day by the ``at`` index, so 500 doctors and a million log rows render quickly.
``status_data()`` gathers everything once for both the HTML page (``/``) and ``/api/status`` (JSON, every
doctor).

Admins and receptionists (signed in through the companion plugin) see it; receptionists read-only
(no buttons, no links to pages that change anything). Doctors get 403 here: their page is ``/me``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import peewee
from flask import Blueprint, current_app, jsonify, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from ..calendars.google import REQUIRED_SCOPES
from ..storage.models import Appointment, BusyBlock, Conflict, Connection, Doctor, Job, MeetMapping, SyncLog, utcnow
from . import activity_chart
from .common import as_datetime, iso, runtime, site_zone
from .log_entries import DIRECTIONS as LOG_DIRECTIONS
from .log_entries import entry_view
from .security import current_user, roles_required

bp = Blueprint("dashboard", __name__)

STATE_LABELS = {
    "active": _l("connected"),
    "held": _l("waiting for confirmation"),  # connected, first sync (or the sync after a reset) not confirmed
    "needs_reconnect": _l("needs reconnect"),
    "disconnected": _l("disconnected"),
    "pending": _l("calendar not chosen"),  # authorized, but no calendar chosen yet
    "removed": _l("removed from KiviCare"),  # the doctor no longer exists in KiviCare: sync stopped
    "disabled": _l("sync turned off"),
    None: _l("not connected"),
}
# CSS class of the state label (``state-…``).
STATE_CLASSES = {"active": "active", "held": "info", "needs_reconnect": "warn", "pending": "warn", "removed": "warn",
                 "disabled": "none"}

# (SyncLog.direction, key in the page and /api/status, label)
DIRECTIONS = tuple((raw, "kivicare_to_google" if key == "to_google" else "google_to_kivicare", label)
                   for raw, (key, label) in LOG_DIRECTIONS.items())
ACTIVITY_WINDOW = timedelta(hours=24)
GOOGLE_ERROR_WINDOW = timedelta(hours=1)
# A first sync or reset is shown as running for at most this long after it started, and only while work for
# the doctor is waiting (or just after the start, before the first poll planned it).
PROGRESS_WINDOW = timedelta(hours=24)
PROGRESS_GRACE = timedelta(minutes=10)
JOB_WAITING = ("pending", "running")
JOB_GIVEN_UP = "failed"  # ``wp_bridge.jobs.give_up``: stays visible until something changes
PAGE_SIZE = 50  # doctors per page of the doctors table
QUERY_MAX = 100  # characters of a search kept
_CHUNK = 500  # ids per IN (...) list

SCOPE_WARNING = _l("Google did not grant access to the calendars: when connecting, the calendar permission was "
                   "not ticked. Reconnect and leave it ticked.")

E2EE_WARNING = _l("Someone opened the KiviCare dashboard with the sidecar's WordPress user; its answers are "
                  "encrypted. The sidecar registered its own key, but give it a WordPress user nobody logs in "
                  "with.")


# ---- connection state -------------------------------------------------------------------------------

def awaiting_confirmation(conn: Connection | None) -> bool:
    """A connected calendar whose first sync (or the sync after a reset) waits for its preview to be
    confirmed (``Connection.sync_confirmed_at`` is None); nothing is written for it meanwhile."""
    return (conn is not None and conn.state == "active" and bool(conn.calendar_id)
            and bool(getattr(conn, "awaiting_confirmation", False)))


def state_key(conn: Connection | None) -> str | None:
    """The state shown for a connection: its ``state``, or "held" while waiting for confirmation."""
    if conn is None:
        return None
    return "held" if awaiting_confirmation(conn) else conn.state


PREVIEW_ENDPOINT = "connect.preview"  # "N events will be created in calendar X" and the button that starts it


def preview_url(doctor_id: int) -> str:
    """Where the first-sync preview of a doctor is confirmed (``/connect/<id>/preview``), else the doctor's page."""
    if PREVIEW_ENDPOINT in current_app.view_functions:
        return url_for(PREVIEW_ENDPOINT, doctor_id=doctor_id)
    return url_for("connect.doctor_page", doctor_id=doctor_id)


def missing_scopes(conn: Connection | None) -> list[str]:
    """The required Google scopes a connection's grant lacks (only for a connection holding a grant)."""
    if conn is None or not conn.refresh_token or conn.state == "disconnected":
        return []
    granted = set((conn.scopes or "").split())
    return [scope for scope in REQUIRED_SCOPES if scope not in granted]


# ---- jobs ----------------------------------------------------------------------------------------------

def job_owner(dedupe_key: str) -> tuple[str, str]:
    """Whose work a job is, from its key (``wp_bridge.bridge`` / ``inbound``): ``("connection", id)`` for
    ``push:<appointment>:<connection>``, ``conference:…:<connection>`` and ``pull:<connection>``;
    ``("doctor", id)`` for ``busy:<doctor>``; ``("appointment", id)`` for ``fetch:<id>`` and ``meet:<id>``;
    ``("", "")`` for anything else."""
    kind, _sep, rest = dedupe_key.partition(":")
    if kind in ("push", "conference") and ":" in rest:
        return "connection", rest.rsplit(":", 1)[1]
    if kind == "pull":
        return "connection", rest
    if kind == "busy":
        return "doctor", rest
    if kind in ("fetch", "meet"):
        return "appointment", rest
    return "", ""


def pending_jobs(connection_id: int) -> int:
    """Jobs waiting or running for one connection (``push``, ``conference`` and ``pull`` jobs)."""
    suffix = f":{connection_id}"
    keys = (Job.select(Job.dedupe_key)
            .where(Job.state.in_(JOB_WAITING)
                   & (Job.dedupe_key.endswith(suffix) | Job.dedupe_key.contains(suffix + ":")))
            .tuples())
    return sum(1 for (key,) in keys if job_owner(key) == ("connection", str(connection_id)))


def job_counts_by_doctor(connections: dict[int, Connection]) -> tuple[dict[int, int], dict[int, int]]:
    """``(waiting, failing)``: jobs per doctor (``{doctor_id: n}``) that are waiting or running, and that are
    failing (given up, state "failed", or waiting again after a counted failure, ``attempts`` > 0). A doctor's
    jobs are their connection's work, their busy blocks, and reads of their appointments (``job_owner``).
    One query for the keys, plus one per 500 appointments named by key (their doctors), not one per doctor."""
    doctor_of_connection = {str(c.id): c.doctor_id for c in connections.values()}
    waiting: dict[int, int] = {}
    failing: dict[int, int] = {}
    by_appointment: dict[str, list[int]] = {}  # appointment id -> [waiting, failing]

    def add(doctor_id: int, is_waiting: bool, is_failing: bool) -> None:
        if is_waiting:
            waiting[doctor_id] = waiting.get(doctor_id, 0) + 1
        if is_failing:
            failing[doctor_id] = failing.get(doctor_id, 0) + 1

    keys = (Job.select(Job.dedupe_key, Job.state, Job.attempts)
            .where(Job.state.in_(JOB_WAITING + (JOB_GIVEN_UP,))).tuples())
    for key, state, attempts in keys:
        is_waiting, is_failing = state in JOB_WAITING, state == JOB_GIVEN_UP or bool(attempts)
        owner, ident = job_owner(key)
        if owner == "connection" and ident in doctor_of_connection:
            add(doctor_of_connection[ident], is_waiting, is_failing)
        elif owner == "doctor" and ident.isdigit():
            add(int(ident), is_waiting, is_failing)
        elif owner == "appointment":
            tally = by_appointment.setdefault(ident, [0, 0])
            tally[0] += is_waiting
            tally[1] += is_failing
    ids = list(by_appointment)
    for start in range(0, len(ids), _CHUNK):
        for appointment_id, doctor_id in (Appointment.select(Appointment.id, Appointment.doctor_id)
                                          .where(Appointment.id.in_(ids[start:start + _CHUNK])).tuples()):
            n_waiting, n_failing = by_appointment[appointment_id]
            if n_waiting:
                waiting[doctor_id] = waiting.get(doctor_id, 0) + n_waiting
            if n_failing:
                failing[doctor_id] = failing.get(doctor_id, 0) + n_failing
    return waiting, failing


def waiting_jobs_by_doctor(connections: dict[int, Connection]) -> dict[int, int]:
    """Jobs waiting or running per doctor (``job_counts_by_doctor``'s first half)."""
    return job_counts_by_doctor(connections)[0]


# ---- counts ------------------------------------------------------------------------------------------

def unindexed(column):
    """``column + 0``: the same value, but not a reason for the planner to read the log through that
    column's index. Without it SQLite groups the last day's rows by walking the whole ``doctor_id`` index
    (seconds on a million rows) instead of reading the day through the ``at`` index (milliseconds)."""
    return column + 0


def activity_counts(doctor_id: int | None = None, since=None, doctor_ids=None) -> dict[int, dict]:
    """Sync log rows of the last 24 hours per doctor, direction and outcome:
    ``{doctor_id: {"kivicare_to_google": {"ok": n, "error": n}, "google_to_kivicare": {...}}}``; all doctors,
    one (``doctor_id``) or some (``doctor_ids``: the dashboard's page, at most a few hundred ids).

    ``ok``: changes written (``activity_chart.counted_entries()``: the same rows as the chart, so a doctor's
    tally, the chart and the figures above it agree; connecting or confirming a calendar is not counted);
    ``error``: sync work that failed."""
    since = since or utcnow() - ACTIVITY_WINDOW
    keys = {raw: key for raw, key, _label in DIRECTIONS}
    doctor = unindexed(SyncLog.doctor_id)
    query = (SyncLog.select(doctor.alias("doctor_id"), SyncLog.direction, SyncLog.outcome,
                            peewee.fn.COUNT(SyncLog.id).alias("n"))
             .where((SyncLog.at >= since) & SyncLog.outcome.in_(["ok", "error"]) & activity_chart.counted_entries())
             .group_by(doctor, SyncLog.direction, SyncLog.outcome))
    if doctor_id is not None:
        query = query.where(SyncLog.doctor_id == doctor_id)
    if doctor_ids is not None:  # still read through the ``at`` index: a day of rows, then this filter
        query = query.where(doctor.in_(list(doctor_ids)))
    out: dict[int, dict] = {}
    for doctor_id, direction, outcome, n in query.tuples():  # tuples: a day of a busy log is ~1,000 groups
        key = keys.get(direction)
        if key is None:
            continue
        out.setdefault(doctor_id, empty_activity())[key][outcome] += n
    return out


class Row(dict):
    """A dict whose keys are also its attributes (it is its own ``__dict__``). Jinja reads ``d.name`` as
    ``getattr(d, "name")`` first and only then ``d["name"]``: on a plain dict every lookup raised and caught an
    AttributeError, 18,000 times per dashboard with 500 doctors (about a fifth of its rendering;
    bench/perf/pages.py, scenario e). Keys must not be names of dict methods."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__ = self


def empty_activity() -> dict:
    """Zero counts in the shape of ``activity_counts()``'s values."""
    return {key: Row(ok=0, error=0) for _raw, key, _label in DIRECTIONS}


def busy_block_counts(doctor_ids=None) -> dict[int, int]:
    """Busy blocks per doctor (Google time that KiviCare cannot book), all doctors or those of ``doctor_ids``."""
    query = (BusyBlock.select(BusyBlock.doctor_id, peewee.fn.COUNT(BusyBlock.id).alias("n"))
             .group_by(BusyBlock.doctor_id))
    if doctor_ids is not None:
        query = query.where(BusyBlock.doctor_id.in_(list(doctor_ids)))
    return {row["doctor_id"]: row["n"] for row in query.dicts()}


def open_conflict_counts() -> dict[int, int]:
    """Open conflicts per doctor (``None`` for conflicts about no doctor)."""
    query = (Conflict.select(Conflict.doctor_id, peewee.fn.COUNT(Conflict.id).alias("n"))
             .where(Conflict.state == "open").group_by(Conflict.doctor_id))
    return {row["doctor_id"]: row["n"] for row in query.dicts()}


# ---- first sync and reset progress -------------------------------------------------------------------

def sync_progress(connections: dict[int, Connection], waiting: dict[int, int], now: datetime) -> dict[int, dict]:
    """Doctors whose first sync or reset is running: ``{doctor_id: {"kind": "initial" | "reset", "done": n,
    "total": m, "started_at": aware UTC}}``.

    ``total``: the doctor's appointments in the synced window (``Bridge.window()``, UTC) with a status
    that has an event (booked, pending, checked in, checked out); ``done``: those whose event Google
    confirmed in the connection's calendar (an active mapping with a pushed body). A run starts when the
    calendar is connected, a reset is made, or the first-sync preview is confirmed, and is shown while
    ``done < total`` and work for the doctor is waiting (or within ``PROGRESS_GRACE`` of the start).
    Two queries whatever the number of doctors."""
    from wp_bridge.models import EVENT_STATUSES

    since = now - PROGRESS_WINDOW
    starts: dict[int, tuple[datetime, str]] = {}
    doctor = unindexed(SyncLog.doctor_id)
    markers = (SyncLog.select(doctor.alias("doctor_id"), SyncLog.action, peewee.fn.MAX(SyncLog.at).alias("last"))
               .where((SyncLog.at >= since) & SyncLog.action.in_(["connect", "reset-sync"]))
               .group_by(doctor, SyncLog.action))
    for row in markers.dicts():
        if row["doctor_id"] is None:
            continue
        moment = as_datetime(row["last"])
        kind = "reset" if row["action"] == "reset-sync" else "initial"
        if moment is not None and (row["doctor_id"] not in starts or moment > starts[row["doctor_id"]][0]):
            starts[row["doctor_id"]] = (moment, kind)
    for doctor_id, conn in connections.items():
        confirmed = getattr(conn, "sync_confirmed_at", None)
        later = doctor_id not in starts or (confirmed is not None and confirmed > starts[doctor_id][0])
        if confirmed is not None and confirmed >= since and later:
            starts[doctor_id] = (confirmed, starts.get(doctor_id, (None, "initial"))[1])
    candidates = [d for d in starts if d in connections and state_key(connections[d]) == "active"
                  and connections[d].calendar_id]
    if not candidates:
        return {}
    start, end = runtime().bridge.window()
    done_mapping = ((MeetMapping.appointment_id == Appointment.id) & (MeetMapping.calendar_id == Connection.calendar_id)
                    & (MeetMapping.state == "active") & (MeetMapping.pushed_hash != ""))
    query = (Appointment.select(Appointment.doctor_id, peewee.fn.COUNT(Appointment.id).alias("total"),
                                peewee.fn.COUNT(MeetMapping.id).alias("done"))
             .join(Connection, on=((Connection.doctor == Appointment.doctor_id) & (Connection.provider == "google")))
             .join(MeetMapping, peewee.JOIN.LEFT_OUTER, on=done_mapping)
             .where(Appointment.doctor_id.in_(candidates) & (Appointment.present == True)  # noqa: E712
                    & Appointment.status.in_(sorted(EVENT_STATUSES))
                    & (Appointment.start_utc >= start) & (Appointment.start_utc <= end))
             .group_by(Appointment.doctor_id))
    out = {}
    for row in query.dicts():
        doctor_id, total, done = row["doctor_id"], int(row["total"]), int(row["done"])
        started_at, kind = starts[doctor_id]
        if done >= total or (not waiting.get(doctor_id) and now - started_at > PROGRESS_GRACE):
            continue
        out[doctor_id] = {"kind": kind, "done": done, "total": total, "started_at": started_at,
                          "percent": int(done * 100 / total) if total else 0}
    return out


# ---- what the page shows -------------------------------------------------------------------------------

# The columns of ``Connection`` the dashboard reads (not the access token, busy calendars or dates it never shows).
_CONNECTION_COLUMNS = (Connection.id, Connection.doctor, Connection.account_email, Connection.refresh_token,
                       Connection.scopes, Connection.calendar_id, Connection.calendar_name, Connection.state,
                       Connection.last_error, Connection.last_sync_at, Connection.synced_count,
                       Connection.failed_count, Connection.sync_confirmed_at)


def google_connections() -> dict[int, SimpleNamespace]:
    """Every Google connection by doctor id, as plain objects with the ``Connection`` attributes the dashboard
    reads (``id``, ``doctor_id``, ``state``, ``calendar_id``, ``refresh_token``, ``scopes``, counts, times as
    aware UTC) and ``awaiting_confirmation``. One query, and plain rows: 500 full model instances cost the page
    ~15 ms of CPU (bench/perf/pages.py, scenario e)."""
    found = {}
    for row in Connection.select(*_CONNECTION_COLUMNS).where(Connection.provider == "google").dicts():
        row["doctor_id"] = row.pop("doctor")
        row["awaiting_confirmation"] = row["sync_confirmed_at"] is None
        found[row["doctor_id"]] = SimpleNamespace(**row)
    return found


def attention_reasons(state: str | None, missing: list[str], failing: int, conflicts: int) -> list[str]:
    """Why a doctor needs someone to act, most urgent first (empty when nothing does): ``"reconnect"``
    (needs reconnect, or a grant missing a permission), ``"failing"`` (jobs given up or failing),
    ``"conflicts"`` (open conflicts), ``"confirm"`` (a first sync waits for its confirmation), ``"calendar"``
    (connected, no calendar chosen)."""
    reasons = []
    if state == "needs_reconnect" or missing:
        reasons.append("reconnect")
    if failing:
        reasons.append("failing")
    if conflicts:
        reasons.append("conflicts")
    if state == "held":
        reasons.append("confirm")
    if state == "pending":
        reasons.append("calendar")
    return reasons


def doctor_rows(now: datetime | None = None, conflicts: dict[int, int] | None = None, *,
                connections: dict[int, SimpleNamespace] | None = None,
                failing: dict[int, int] | None = None) -> list[Row]:
    """One row per known doctor, by name: ids, names, connection state and counts (times as aware UTC) and
    ``attention`` (``attention_reasons()``). Cheap columns only, two queries whatever the number of doctors
    (plus those of ``conflicts``, ``connections`` and ``failing`` when not given); ``add_figures()`` adds the
    costly ones to the rows shown."""
    connections = google_connections() if connections is None else connections
    conflicts = open_conflict_counts() if conflicts is None else conflicts
    failing = job_counts_by_doctor(connections)[1] if failing is None else failing
    labels = {state: str(label) for state, label in STATE_LABELS.items()}  # translated once, not once per doctor
    rows = []
    for doctor_id, name, email in Doctor.select(Doctor.id, Doctor.name, Doctor.email).order_by(Doctor.name,
                                                                                             Doctor.id).tuples():
        conn = connections.get(doctor_id)
        state = state_key(conn)
        shown = conn is not None and conn.state != "disconnected"
        missing = missing_scopes(conn)
        rows.append(Row({
            "id": doctor_id,
            "name": name or _("Doctor #%(id)s", id=doctor_id),
            "email": email,
            "connection_id": conn.id if conn else None,
            "state": state or "none",
            "state_label": labels.get(state, state or labels[None]),
            "state_class": STATE_CLASSES.get(state, "none"),
            "awaiting_confirmation": state == "held",
            "account_email": conn.account_email if shown else "",
            "calendar_id": conn.calendar_id if conn else None,
            "calendar_name": (conn.calendar_name or conn.calendar_id or "") if shown else "",
            "last_sync_at": conn.last_sync_at if conn else None,
            "synced": conn.synced_count if conn else 0,
            "failed": conn.failed_count if conn else 0,
            "failing_jobs": failing.get(doctor_id, 0),
            "last_error": conn.last_error if conn else "",
            "open_conflicts": conflicts.get(doctor_id, 0),
            "missing_scopes": missing,
            "attention": attention_reasons(state, missing, failing.get(doctor_id, 0), conflicts.get(doctor_id, 0)),
        }))
    return rows


def add_figures(rows: list[Row], now: datetime, waiting: dict[int, int], progress: dict[int, dict], *,
                every_doctor: bool = False) -> list[Row]:
    """``rows`` (from ``doctor_rows()``) with the figures that cost a read per doctor: ``activity_24h``,
    ``busy_blocks``, ``pending_jobs`` and ``progress``. The sync log and busy blocks are read for these
    doctors only (``WHERE doctor_id IN (...)``, a page at a time), or with ``every_doctor`` (``rows`` is every
    doctor) unfiltered; two queries whatever their number."""
    ids = None if every_doctor else [row["id"] for row in rows]
    activity = activity_counts(since=now - ACTIVITY_WINDOW, doctor_ids=ids) if rows else {}
    busy = busy_block_counts(ids) if rows else {}
    for row in rows:
        row.update(activity_24h=activity.get(row["id"]) or empty_activity(), busy_blocks=busy.get(row["id"], 0),
                   pending_jobs=waiting.get(row["id"], 0), progress=progress.get(row["id"]))
    return rows


def attention_first(rows: list[Row]) -> list[Row]:
    """Doctors needing attention first, then the others; by name (their order in ``rows``) within each."""
    return sorted(rows, key=lambda row: not row["attention"])


def matching(rows: list[Row], query: str) -> list[Row]:
    """The rows whose name or e-mail contains ``query``, ignoring case (``str.casefold``: "müller" finds
    "MÜLLER"); every row for an empty query."""
    needle = query.casefold()
    if not needle:
        return rows
    return [row for row in rows if needle in (row["name"] or "").casefold()
            or needle in (row["email"] or "").casefold()]


def page_number(text: str | None, pages: int) -> int:
    """The page asked for (``?page=N``, from 1), held within ``1..pages``: a link from before doctors were
    removed, or a number typed by hand, shows the nearest page rather than an empty one or an error."""
    number = int(text) if text and text.isdigit() and len(text) < 7 else 1
    return min(max(number, 1), max(pages, 1))


def google_errors(now: datetime) -> int:
    """Google calls that failed or had to be retried in the last hour (sync log entries whose error class
    is one of ``sidecar.calendars.base``'s, all named ``Calendar…``)."""
    return (SyncLog.select().where((SyncLog.at >= now - GOOGLE_ERROR_WINDOW) & SyncLog.outcome.in_(["error", "retry"])
                                   & SyncLog.error_class.startswith("Calendar")).count())


def health(now: datetime | None = None, open_conflicts: int | None = None) -> dict:
    """The health strip: KiviCare reachability from the last poll, the companion plugin, Google errors in the
    last hour, E2EE and add-on warnings, setup gaps, open conflicts (counted here unless given)."""
    now = now or utcnow()
    if open_conflicts is None:
        open_conflicts = Conflict.select().where(Conflict.state == "open").count()
    rt = runtime()
    cfg = rt.cfg
    poll = rt.get_state("poll")
    poll = poll if isinstance(poll, dict) else None
    e2ee = rt.get_state("e2ee")
    addons = rt.get_state("addons") or []
    if not isinstance(addons, list):
        addons = [str(addons)]
    return {
        "kivicare_configured": bool(cfg.get("kivicare.base_url") and cfg.get("kivicare.username")),
        "google_configured": bool(cfg.get("google.client_id")),
        "kivicare_ok": None if poll is None else bool(poll.get("ok")),
        "kivicare_checked_at": as_datetime(poll.get("at")) if poll else None,
        "kivicare_error": str(poll.get("error") or "") if poll else "",
        "google_errors_1h": google_errors(now),
        "e2ee": bool(e2ee),
        "e2ee_warning": str(E2EE_WARNING) if e2ee else "",
        "addon_warnings": [str(a) for a in addons],
        "refused": str(rt.get_state("refused") or ""),  # another Google integration is active: not syncing
        "companion": companion_health(),
        "open_conflicts": open_conflicts,
    }


def companion_health() -> dict:
    """The companion plugin as last checked: ``state`` is "answers", "problem", "unchecked" or "not set up"."""
    from ..crypto import SecretError
    rt = runtime()
    try:
        has_secret = bool(rt.cfg.get("companion.secret"))
    except SecretError:
        has_secret = False
    check = rt.get_state("companion_check")
    check = check if isinstance(check, dict) else None
    if not has_secret:
        state = "not set up"
    elif check is None:
        state = "unchecked"
    else:
        state = "answers" if check.get("ok") else "problem"
    return {"state": state, "version": str((check or {}).get("plugin_version") or ""),
            "message": str((check or {}).get("message") or ""),
            "checked_at": as_datetime((check or {}).get("at"))}


def recent_activity(limit: int = 20, doctor_id: int | None = None, names: dict[int, str] | None = None) -> list[dict]:
    """The last ``limit`` sync log rows, all or one doctor's (ids and outcomes only: the log holds no
    patient data), as ``log_entries.entry_view`` shows them. ``names``: doctor names if known."""
    if names is None:
        names = {d.id: d.name for d in Doctor.select(Doctor.id, Doctor.name)}
    query = SyncLog.select()
    if doctor_id is not None:
        query = query.where(SyncLog.doctor_id == doctor_id)
    user = current_user()
    return [entry_view(entry, names, user)
            for entry in query.order_by(SyncLog.at.desc(), SyncLog.id.desc()).limit(limit)]


def summary(doctors: list[dict], hours: list, waiting: dict[int, int], progress: dict[int, dict]) -> dict:
    """The figures above the chart and the doctors table's summary line, over every doctor (not one page):
    doctors, connected, ``syncing`` (connected, nothing to act on), ``attention`` (``attention_reasons()``),
    ``not_syncing`` (the rest: not connected, disconnected, removed, turned off), synced and failed in 24 hours,
    jobs waiting, first syncs or resets running."""
    attention = sum(1 for d in doctors if d["attention"])
    syncing = sum(1 for d in doctors if d["state"] == "active" and not d["attention"])
    ids = {d["id"] for d in doctors}
    return {"doctors": len(doctors),
            "connected": sum(1 for d in doctors if d["state"] in ("active", "held")),
            "attention": attention, "syncing": syncing, "not_syncing": len(doctors) - attention - syncing,
            "synced_24h": sum(h.ok for h in hours), "retried_24h": sum(h.retry for h in hours),
            "failed_24h": sum(h.error for h in hours),
            "waiting": sum(n for doctor_id, n in waiting.items() if doctor_id in ids),
            "running": sum(1 for doctor_id in progress if doctor_id in ids)}


def status_data(page: str | None = None, query: str = "") -> dict:
    """Everything the dashboard shows: ``{"doctors", "running", "health", "recent", "hours", "summary"}``,
    and with ``page`` (the ``?page=`` text, "" for the first) ``"table"``: ``{"number", "pages", "matching",
    "query", "page_size"}``.

    Without ``page`` (``/api/status``) ``doctors`` is every doctor, by name; with it, the doctors of that page
    of the table: those matching ``query`` (name or e-mail), needing attention first, ``PAGE_SIZE`` a page.
    ``summary`` and ``running`` (first syncs and resets in progress, ``{"id", "name", "progress"}``) always
    cover every doctor. A fixed number of queries whatever the number of doctors."""
    now = utcnow()
    conflicts = open_conflict_counts()
    connections = google_connections()
    waiting, failing = job_counts_by_doctor(connections)
    progress = sync_progress(connections, waiting, now)
    everyone = doctor_rows(now, conflicts, connections=connections, failing=failing)
    names = {d["id"]: d["name"] for d in everyone}
    hours = activity_chart.hourly_activity(now)
    data = {"health": health(now, sum(conflicts.values())), "recent": recent_activity(names=names), "hours": hours,
            "summary": summary(everyone, hours, waiting, progress),
            "running": [Row(id=d["id"], name=d["name"], progress=progress[d["id"]])
                        for d in everyone if d["id"] in progress]}
    if page is None:
        data["doctors"] = add_figures(everyone, now, waiting, progress, every_doctor=True)
        return data
    query = " ".join(query.split())[:QUERY_MAX]
    found = attention_first(matching(everyone, query))
    pages = max(1, -(-len(found) // PAGE_SIZE))
    number = page_number(page, pages)
    shown = found[(number - 1) * PAGE_SIZE:number * PAGE_SIZE]
    data["doctors"] = add_figures(shown, now, waiting, progress)
    data["table"] = {"number": number, "pages": pages, "matching": len(found), "query": query,
                     "page_size": PAGE_SIZE}
    return data


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, activity_chart.Hour):
        return {"start": iso(value.start), "ok": value.ok, "retry": value.retry, "error": value.error}
    if hasattr(value, "isoformat"):
        return iso(value)
    return value


class CountWords:
    """The per-doctor counts of the doctors table in words (``"12 synced"``, ``"3 failed"``, ``"2 open
    conflicts"``), each distinct count translated once per page: with 500 doctors, a Flask-Babel call per
    cell was a third of the page's time (bench/perf/pages.py, scenario e)."""

    def __init__(self):
        self._words: dict[tuple[str, int], str] = {}

    def _get(self, kind: str, num: int, make) -> str:
        key = (kind, num)
        if key not in self._words:
            self._words[key] = make()
        return self._words[key]

    def synced(self, num: int) -> str:
        return self._get("synced", num, lambda: _("%(num)d synced", num=num))

    def failed(self, num: int) -> str:
        return self._get("failed", num, lambda: _("%(num)d failed", num=num))

    def open_conflicts(self, num: int) -> str:
        return self._get("conflicts", num, lambda: ngettext("%(num)d open conflict", "%(num)d open conflicts", num))

    def failing_jobs(self, num: int) -> str:
        return self._get("failing", num, lambda: ngettext("%(num)d job failing", "%(num)d jobs failing", num))


@bp.route("/")
@roles_required("admin", "receptionist")
def index():
    """The dashboard page (read-only for receptionists): ``?page=N`` (from 1) of the doctors table and
    ``?q=`` to find doctors by name or e-mail; both optional, and a page out of range shows the nearest."""
    user = current_user()
    data = status_data(page=request.args.get("page", ""), query=request.args.get("q", ""))
    zone, zone_name = site_zone()
    held = {d["id"]: preview_url(d["id"]) for d in data["doctors"] if d["awaiting_confirmation"]}
    directions = [(raw, key, str(label)) for raw, key, label in DIRECTIONS]
    return render_template("dashboard/index.html", read_only=not user.is_admin, directions=directions,
                           scope_warning=SCOPE_WARNING, chart=activity_chart.chart(data["hours"], zone),
                           zone_name=zone_name, preview_urls=held, ngettext=ngettext, counts=CountWords(), **data)


@bp.route("/api/status")
@roles_required("admin", "receptionist")
def api_status():
    """The dashboard as JSON: ``{"doctors": [...], "running": [...], "health": {...}, "recent": [...],
    "hours": [...], "summary": {...}}`` (times ISO UTC), every doctor (not paged).

    Each doctor also carries ``activity_24h`` (``{"kivicare_to_google": {"ok", "error"},
    "google_to_kivicare": {...}}``), ``busy_blocks``, ``open_conflicts``, ``missing_scopes`` and ``progress``
    (``{"kind", "done", "total", "percent", "started_at"}`` while a first sync or reset runs, else null); the
    health part carries ``open_conflicts`` (all doctors) and ``google_errors_1h``; ``hours`` is the last 24
    hours of the sync log (``{"start", "ok", "retry", "error"}``, oldest first)."""
    return jsonify(_jsonable(status_data()))
