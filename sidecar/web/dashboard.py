"""The home page: every doctor's calendar connection and sync counts, a site health strip, a chart of the
last 24 hours, the progress of first syncs and resets, and recent activity.

Per doctor: the connection's state (connected, needs reconnect, waiting for confirmation, not connected,
disconnected, removed from KiviCare), Google account, calendar, last sync, synced and failed counts, jobs
waiting; the sync log of the last 24 hours counted per direction (KiviCare → Google, Google → KiviCare;
ok and error); busy blocks; open conflicts; missing Google permissions (granular consent); and, while a
first sync or a reset runs, how many of the appointments in the horizon already have their event.

The health strip: KiviCare reachable (the engine's last poll, ``state.poll``), the companion plugin and
its version (``state.companion_check``), Google errors in the last hour (the sync log), open conflicts.

Cheap at any size: a fixed handful of queries per page whatever the number of doctors (no query per
doctor), and sync log reads bounded to the last day by the ``at`` index, so 500 doctors and a million log
rows render quickly. ``status_data()`` gathers everything once for both the HTML page (``/``) and
``/api/status`` (JSON).

Admins and receptionists (signed in through the companion plugin) see it; receptionists read-only
(no buttons, no links to pages that change anything). Doctors get 403 here: their page is ``/me``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import peewee
from flask import Blueprint, current_app, jsonify, render_template, url_for
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


def waiting_jobs_by_doctor(connections: dict[int, Connection]) -> dict[int, int]:
    """Jobs waiting or running per doctor: their connection's work, their busy blocks, and reads of their
    appointments. Two queries (the waiting keys; the doctors of appointments named by key), not one per doctor."""
    doctor_of_connection = {str(c.id): c.doctor_id for c in connections.values()}
    counts: dict[int, int] = {}
    appointments: dict[str, int] = {}
    for (key,) in Job.select(Job.dedupe_key).where(Job.state.in_(JOB_WAITING)).tuples():
        owner, ident = job_owner(key)
        doctor_id = None
        if owner == "connection":
            doctor_id = doctor_of_connection.get(ident)
        elif owner == "doctor" and ident.isdigit():
            doctor_id = int(ident)
        elif owner == "appointment":
            appointments[ident] = appointments.get(ident, 0) + 1
        if doctor_id is not None:
            counts[doctor_id] = counts.get(doctor_id, 0) + 1
    ids = list(appointments)
    for start in range(0, len(ids), _CHUNK):
        for appointment_id, doctor_id in (Appointment.select(Appointment.id, Appointment.doctor_id)
                                          .where(Appointment.id.in_(ids[start:start + _CHUNK])).tuples()):
            counts[doctor_id] = counts.get(doctor_id, 0) + appointments[appointment_id]
    return counts


# ---- counts ------------------------------------------------------------------------------------------

def unindexed(column):
    """``column + 0``: the same value, but not a reason for the planner to read the log through that
    column's index. Without it SQLite groups the last day's rows by walking the whole ``doctor_id`` index
    (seconds on a million rows) instead of reading the day through the ``at`` index (milliseconds)."""
    return column + 0


def activity_counts(doctor_id: int | None = None, since=None) -> dict[int, dict]:
    """Sync log rows of the last 24 hours per doctor, direction and outcome:
    ``{doctor_id: {"kivicare_to_google": {"ok": n, "error": n}, "google_to_kivicare": {...}}}``.

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


def busy_block_counts() -> dict[int, int]:
    """Busy blocks per doctor (Google time that KiviCare cannot book)."""
    query = (BusyBlock.select(BusyBlock.doctor_id, peewee.fn.COUNT(BusyBlock.id).alias("n"))
             .group_by(BusyBlock.doctor_id))
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


def doctor_rows(now: datetime | None = None, conflicts: dict[int, int] | None = None) -> list[dict]:
    """One dict per known doctor: ids, names, connection state and counts (times as aware UTC). A fixed
    number of queries whatever the number of doctors (``conflicts``: ``open_conflict_counts()`` if known)."""
    now = now or utcnow()
    connections = google_connections()
    activity = activity_counts(since=now - ACTIVITY_WINDOW)
    busy = busy_block_counts()
    conflicts = open_conflict_counts() if conflicts is None else conflicts
    waiting = waiting_jobs_by_doctor(connections)
    progress = sync_progress(connections, waiting, now)
    labels = {state: str(label) for state, label in STATE_LABELS.items()}  # translated once, not once per doctor
    rows = []
    for doctor_id, name, email in Doctor.select(Doctor.id, Doctor.name, Doctor.email).order_by(Doctor.name,
                                                                                             Doctor.id).tuples():
        conn = connections.get(doctor_id)
        state = state_key(conn)
        shown = conn is not None and conn.state != "disconnected"
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
            "pending_jobs": waiting.get(doctor_id, 0),
            "last_error": conn.last_error if conn else "",
            "activity_24h": activity.get(doctor_id) or empty_activity(),
            "busy_blocks": busy.get(doctor_id, 0),
            "open_conflicts": conflicts.get(doctor_id, 0),
            "missing_scopes": missing_scopes(conn),
            "progress": progress.get(doctor_id),
        }))
    return rows


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


def summary(doctors: list[dict], hours: list) -> dict:
    """The figures above the chart: doctors connected, synced and failed in 24 hours, jobs waiting."""
    return {"doctors": len(doctors),
            "connected": sum(1 for d in doctors if d["state"] in ("active", "held")),
            "attention": sum(1 for d in doctors if d["state"] in ("needs_reconnect", "held", "pending")
                             or d["missing_scopes"]),
            "synced_24h": sum(h.ok for h in hours), "retried_24h": sum(h.retry for h in hours),
            "failed_24h": sum(h.error for h in hours), "waiting": sum(d["pending_jobs"] for d in doctors),
            "running": sum(1 for d in doctors if d["progress"])}


def status_data() -> dict:
    """Everything the dashboard shows: ``{"doctors", "health", "recent", "hours", "summary"}``."""
    now = utcnow()
    conflicts = open_conflict_counts()
    doctors = doctor_rows(now, conflicts)
    hours = activity_chart.hourly_activity(now)
    names = {d["id"]: d["name"] for d in doctors}
    return {"doctors": doctors, "health": health(now, sum(conflicts.values())),
            "recent": recent_activity(names=names), "hours": hours, "summary": summary(doctors, hours)}


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


@bp.route("/")
@roles_required("admin", "receptionist")
def index():
    """The dashboard page (read-only for receptionists)."""
    user = current_user()
    data = status_data()
    zone, zone_name = site_zone()
    held = {d["id"]: preview_url(d["id"]) for d in data["doctors"] if d["awaiting_confirmation"]}
    directions = [(raw, key, str(label)) for raw, key, label in DIRECTIONS]
    return render_template("dashboard/index.html", read_only=not user.is_admin, directions=directions,
                           scope_warning=SCOPE_WARNING, chart=activity_chart.chart(data["hours"], zone),
                           zone_name=zone_name, preview_urls=held, ngettext=ngettext, counts=CountWords(), **data)


@bp.route("/api/status")
@roles_required("admin", "receptionist")
def api_status():
    """The dashboard as JSON: ``{"doctors": [...], "health": {...}, "recent": [...], "hours": [...],
    "summary": {...}}`` (times ISO UTC).

    Each doctor also carries ``activity_24h`` (``{"kivicare_to_google": {"ok", "error"},
    "google_to_kivicare": {...}}``), ``busy_blocks``, ``open_conflicts``, ``missing_scopes`` and ``progress``
    (``{"kind", "done", "total", "percent", "started_at"}`` while a first sync or reset runs, else null); the
    health part carries ``open_conflicts`` (all doctors) and ``google_errors_1h``; ``hours`` is the last 24
    hours of the sync log (``{"start", "ok", "retry", "error"}``, oldest first)."""
    return jsonify(_jsonable(status_data()))
