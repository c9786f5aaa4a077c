"""The home page: every doctor's calendar connection and sync counts, a health strip, recent activity.

Per doctor, besides the connection: the sync log of the last 24 hours counted per direction (KiviCare →
Google, Google → KiviCare; ok and error), the busy blocks Google currently gives KiviCare, the open
conflicts, and a warning when Google did not grant the calendar permission (granular consent).

``status_data()`` gathers it once for both the HTML page (``/``) and ``/api/status`` (JSON), from the
database and the health notes the engine keeps (``state.poll``, ``state.e2ee``, ``state.addons``).

Admins and receptionists (signed in through the companion plugin) see it; receptionists read-only
(no buttons, no links to pages that change anything). Doctors get 403 here: their page is ``/me``.
"""

from __future__ import annotations

from datetime import timedelta

import peewee
from flask import Blueprint, jsonify, render_template

from ..calendars.google import REQUIRED_SCOPES
from ..storage.models import BusyBlock, Conflict, Connection, Doctor, Job, SyncLog, utcnow
from .common import as_datetime, iso, runtime
from .security import current_user, roles_required

bp = Blueprint("dashboard", __name__)

STATE_LABELS = {
    "active": "connected",
    "needs_reconnect": "needs reconnect",
    "disconnected": "disconnected",
    "pending": "not connected",  # authorized, but no calendar chosen yet
    "removed": "removed from KiviCare",  # the doctor no longer exists in KiviCare: sync stopped
    None: "not connected",
}
# CSS class of the state label (``state-…``).
STATE_CLASSES = {"active": "active", "needs_reconnect": "warn", "pending": "warn", "removed": "warn"}

# SyncLog.direction values (wp_bridge.synclog) -> the keys the page and /api/status use.
DIRECTIONS = (("kivicare→google", "kivicare_to_google", "KiviCare → Google"),
              ("google→kivicare", "google_to_kivicare", "Google → KiviCare"))
ACTIVITY_WINDOW = timedelta(hours=24)

SCOPE_WARNING = ("Google did not grant access to the calendars: when connecting, the calendar permission was not "
                 "ticked. Reconnect and leave it ticked.")

E2EE_WARNING = ("Someone opened the KiviCare dashboard with the sidecar's WordPress user; its answers are "
                "encrypted. The sidecar registered its own key, but give it a WordPress user nobody logs in with.")


def pending_jobs(connection_id: int) -> int:
    """Jobs waiting or running for one connection (engine keys look like ``push:<appointment>:<connection>``)."""
    suffix = f":{connection_id}"
    return (Job.select()
            .where(Job.state.in_(["pending", "running"])
                   & (Job.dedupe_key.endswith(suffix) | Job.dedupe_key.contains(suffix + ":")))
            .count())


def missing_scopes(conn: Connection | None) -> list[str]:
    """The required Google scopes a connection's grant lacks (only for a connection holding a grant)."""
    if conn is None or not conn.refresh_token or conn.state == "disconnected":
        return []
    granted = set((conn.scopes or "").split())
    return [scope for scope in REQUIRED_SCOPES if scope not in granted]


def activity_counts(doctor_id: int | None = None, since=None) -> dict[int, dict]:
    """Sync log rows of the last 24 hours per doctor, direction and outcome:
    ``{doctor_id: {"kivicare_to_google": {"ok": n, "error": n}, "google_to_kivicare": {...}}}``."""
    since = since or utcnow() - ACTIVITY_WINDOW
    keys = {raw: key for raw, key, _ in DIRECTIONS}
    query = (SyncLog.select(SyncLog.doctor_id, SyncLog.direction, SyncLog.outcome,
                            peewee.fn.COUNT(SyncLog.id).alias("n"))
             .where((SyncLog.at >= since) & SyncLog.outcome.in_(["ok", "error"]))
             .group_by(SyncLog.doctor_id, SyncLog.direction, SyncLog.outcome))
    if doctor_id is not None:
        query = query.where(SyncLog.doctor_id == doctor_id)
    out: dict[int, dict] = {}
    for row in query.dicts():
        key = keys.get(row["direction"])
        if key is None:
            continue
        out.setdefault(row["doctor_id"], empty_activity())[key][row["outcome"]] += row["n"]
    return out


def empty_activity() -> dict:
    return {key: {"ok": 0, "error": 0} for _, key, _ in DIRECTIONS}


def busy_block_counts() -> dict[int, int]:
    """Busy blocks per doctor (Google time that KiviCare cannot book)."""
    query = (BusyBlock.select(BusyBlock.doctor_id, peewee.fn.COUNT(BusyBlock.id).alias("n"))
             .group_by(BusyBlock.doctor_id))
    return {row["doctor_id"]: row["n"] for row in query.dicts()}


def open_conflict_counts() -> dict[int, int]:
    query = (Conflict.select(Conflict.doctor_id, peewee.fn.COUNT(Conflict.id).alias("n"))
             .where(Conflict.state == "open").group_by(Conflict.doctor_id))
    return {row["doctor_id"]: row["n"] for row in query.dicts()}


def doctor_rows() -> list[dict]:
    """One dict per known doctor: ids, names, connection state and counts (times as aware UTC)."""
    connections = {c.doctor_id: c for c in Connection.select().where(Connection.provider == "google")}
    activity = activity_counts()
    busy = busy_block_counts()
    conflicts = open_conflict_counts()
    rows = []
    for doctor in Doctor.select().order_by(Doctor.name, Doctor.id):
        conn = connections.get(doctor.id)
        state = conn.state if conn else None
        rows.append({
            "id": doctor.id,
            "name": doctor.name or f"Doctor #{doctor.id}",
            "email": doctor.email,
            "connection_id": conn.id if conn else None,
            "state": state or "none",
            "state_label": STATE_LABELS.get(state, state or "not connected"),
            "account_email": conn.account_email if conn and state != "disconnected" else "",
            "calendar_id": conn.calendar_id if conn else None,
            "calendar_name": conn.calendar_name if conn and state != "disconnected" else "",
            "last_sync_at": conn.last_sync_at if conn else None,
            "synced": conn.synced_count if conn else 0,
            "failed": conn.failed_count if conn else 0,
            "pending_jobs": pending_jobs(conn.id) if conn else 0,
            "last_error": conn.last_error if conn else "",
            "state_class": STATE_CLASSES.get(state, "none"),
            "activity_24h": activity.get(doctor.id) or empty_activity(),
            "busy_blocks": busy.get(doctor.id, 0),
            "open_conflicts": conflicts.get(doctor.id, 0),
            "missing_scopes": missing_scopes(conn),
        })
    return rows


def health() -> dict:
    """The health strip: KiviCare reachability from the last poll, E2EE and add-on warnings, setup gaps."""
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
        "e2ee": bool(e2ee),
        "e2ee_warning": E2EE_WARNING if e2ee else "",
        "addon_warnings": [str(a) for a in addons],
        "refused": str(rt.get_state("refused") or ""),  # another Google integration is active: not syncing
        "companion": companion_health(),
        "open_conflicts": Conflict.select().where(Conflict.state == "open").count(),
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


def recent_activity(limit: int = 20, doctor_id: int | None = None) -> list[dict]:
    """The last ``limit`` sync log rows, all or one doctor's (ids and outcomes only: the log holds no
    patient data)."""
    names = {d.id: d.name for d in Doctor.select(Doctor.id, Doctor.name)}
    rows = []
    query = SyncLog.select()
    if doctor_id is not None:
        query = query.where(SyncLog.doctor_id == doctor_id)
    for entry in query.order_by(SyncLog.at.desc(), SyncLog.id.desc()).limit(limit):
        rows.append({"at": entry.at, "doctor_id": entry.doctor_id,
                     "doctor": names.get(entry.doctor_id, f"#{entry.doctor_id}" if entry.doctor_id else ""),
                     "appointment_id": entry.appointment_id, "direction": entry.direction,
                     "action": entry.action, "outcome": entry.outcome, "error_class": entry.error_class})
    return rows


def status_data() -> dict:
    return {"doctors": doctor_rows(), "health": health(), "recent": recent_activity()}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return iso(value)
    return value


@bp.route("/")
@roles_required("admin", "receptionist")
def index():
    user = current_user()
    return render_template("dashboard/index.html", read_only=not user.is_admin, directions=DIRECTIONS,
                           scope_warning=SCOPE_WARNING, **status_data())


@bp.route("/api/status")
@roles_required("admin", "receptionist")
def api_status():
    """The dashboard as JSON: ``{"doctors": [...], "health": {...}, "recent": [...]}`` (times ISO UTC).

    Each doctor also carries ``activity_24h`` (``{"kivicare_to_google": {"ok", "error"},
    "google_to_kivicare": {...}}``), ``busy_blocks``, ``open_conflicts`` and ``missing_scopes``; the health
    part carries ``open_conflicts`` (all doctors)."""
    return jsonify(_jsonable(status_data()))
