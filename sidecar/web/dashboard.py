"""The home page: every doctor's calendar connection and sync counts, a health strip, recent activity.

``status_data()`` gathers it once for both the HTML page (``/``) and ``/api/status`` (JSON), from the
database and the health notes the engine keeps (``state.poll``, ``state.e2ee``, ``state.addons``).

Admins and receptionists (signed in through the companion plugin) see it; receptionists read-only
(no buttons, no links to pages that change anything). Doctors get 403 here: their page is ``/me``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template

from ..storage.models import Connection, Doctor, Job, SyncLog
from .common import as_datetime, iso, runtime
from .security import current_user, roles_required

bp = Blueprint("dashboard", __name__)

STATE_LABELS = {
    "active": "connected",
    "needs_reconnect": "needs reconnect",
    "disconnected": "disconnected",
    "pending": "not connected",  # authorized, but no calendar chosen yet
    None: "not connected",
}

E2EE_WARNING = ("Someone opened the KiviCare dashboard with the sidecar's WordPress user; its answers are "
                "encrypted. The sidecar registered its own key, but give it a WordPress user nobody logs in with.")


def pending_jobs(connection_id: int) -> int:
    """Jobs waiting or running for one connection (engine keys look like ``push:<appointment>:<connection>``)."""
    suffix = f":{connection_id}"
    return (Job.select()
            .where(Job.state.in_(["pending", "running"])
                   & (Job.dedupe_key.endswith(suffix) | Job.dedupe_key.contains(suffix + ":")))
            .count())


def doctor_rows() -> list[dict]:
    """One dict per known doctor: ids, names, connection state and counts (times as aware UTC)."""
    connections = {c.doctor_id: c for c in Connection.select().where(Connection.provider == "google")}
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
    return render_template("dashboard/index.html", read_only=not user.is_admin, **status_data())


@bp.route("/api/status")
@roles_required("admin", "receptionist")
def api_status():
    """The dashboard as JSON: ``{"doctors": [...], "health": {...}, "recent": [...]}`` (times ISO UTC)."""
    return jsonify(_jsonable(status_data()))
