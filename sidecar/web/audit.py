"""The audit trail of admin actions: who changed which setting, connected, disconnected or reset which
doctor, resolved which conflict, created which Connect link, signed in or failed to, and when.

``record(action, target, detail)`` writes one ``AuditEntry`` (time in UTC) with the actor taken from
the session (``security.current_user``) and the browser's address. It never stores a secret's value:
for a secret setting the detail is only "set", "changed" or "cleared" (``describe_change``); for other
settings "old → new" is kept, shortened. No patient data is passed in: doctors are named, appointments
and conflicts by id only.

The page ``/audit`` (admins only) lists the entries newest first, 50 a page, filterable by action.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import peewee
from flask import Blueprint, has_request_context, render_template, request
from flask_babel import lazy_gettext as _l

from ..storage.models import AuditEntry, Doctor
from .security import admin_required, current_user

log = logging.getLogger(__name__)
bp = Blueprint("audit", __name__)

PER_PAGE = 50
MAX_TARGET, MAX_DETAIL, MAX_ACTOR, MAX_SIDE = 255, 2000, 150, 200

# action -> what the page says (the stored key stays English and stable).
ACTIONS = {
    "setting_changed": _l("Changed a setting"),
    "secret_generated": _l("Generated the companion secret"),
    "secret_shown": _l("Showed the companion secret"),
    "connect_link_created": _l("Created a Connect link"),
    "connected": _l("Connected a Google Calendar"),
    "disconnected": _l("Disconnected a Google Calendar"),
    "reset_sync": _l("Reset a doctor's sync"),
    "jobs_retried": _l("Retried a doctor's given-up changes"),
    "first_sync_confirmed": _l("Confirmed a doctor's first sync"),
    "conflict_resolved": _l("Resolved a conflict"),
    "admin_created": _l("Created the first admin account"),
    "signed_in": _l("Signed in"),
    "sign_in_failed": _l("Failed sign-in"),
    "sign_in_refused": _l("Refused a sign-in from WordPress"),
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: Any, limit: int) -> str:
    """One line (control characters become spaces), at most ``limit`` characters."""
    value = _CONTROL.sub(" ", str(text if text is not None else "")).strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _actor() -> tuple[str, str]:
    """``(name, role)`` of the signed-in person; ``("", "")`` when nobody is signed in."""
    user = current_user() if has_request_context() else None
    if user is None:
        return "", ""
    if user.via == "sso":
        return f"{user.name} (WordPress user {user.wp_user_id})", user.role
    return user.name, user.role


def record(action: str, target: str = "", detail: str = "", *, strict: bool = False) -> AuditEntry | None:
    """Write one audit entry: ``action`` (a key of ``ACTIONS``), ``target`` (the setting name, a doctor
    from ``doctor()``, "conflict 12", a user name), ``detail`` (free text, never a secret's value).

    The actor and address come from the current request. A database error is logged (without the
    entry's text) and swallowed, so a page whose action already happened still answers; with
    ``strict`` it is raised instead, for callers writing the entry in the same transaction as the change.
    Returns the entry, or None when it could not be written.
    """
    actor, role = _actor()
    ip = (request.remote_addr or "") if has_request_context() else ""
    try:
        return AuditEntry.create(action=_clean(action, 40), target=_clean(target, MAX_TARGET),
                                 detail=_clean(detail, MAX_DETAIL), actor=_clean(actor, MAX_ACTOR),
                                 role=_clean(role, 20), ip=_clean(ip, 45))
    except peewee.DatabaseError as exc:
        if strict:
            raise
        log.error("could not write an audit entry (%s): %s", action, type(exc).__name__)
        return None


def doctor(doctor_id: int | None) -> str:
    """How an entry names a doctor: ``"Dr Anna Berg (doctor 12)"``, or ``"doctor 12"`` when the name is unknown."""
    row = Doctor.get_or_none(Doctor.id == doctor_id) if doctor_id is not None else None
    return f"{row.name} (doctor {doctor_id})" if row is not None and row.name else f"doctor {doctor_id}"


def _side(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = ", ".join(f"{k}: {v}" for k, v in sorted(value.items()))
    text = _clean(value, MAX_SIDE)
    return f'"{text}"' if text else "(empty)"


def describe_change(old: Any, new: Any, *, secret: bool) -> str:
    """The detail of a setting change: ``'30 → 60'`` for ordinary settings, and for secrets only
    "set", "changed" or "cleared" (never the value, nor its length or last characters)."""
    if secret:
        if not old:
            return "set"
        return "cleared" if not new else "changed"
    return f"{_side(old)} → {_side(new)}"


# ---- the page ------------------------------------------------------------------------------------

@bp.route("/audit")
@admin_required
def index():
    """The audit trail, newest first; ``?page=N`` (50 a page) and ``?action=<key>`` to filter."""
    action = request.args.get("action", "")
    if action not in ACTIONS:
        action = ""
    query = AuditEntry.select()
    if action:
        query = query.where(AuditEntry.action == action)
    total = query.count()
    pages = max(1, math.ceil(total / PER_PAGE))
    page_arg = request.args.get("page", "1")
    page = int(page_arg) if page_arg.isdigit() and 0 < len(page_arg) < 7 else 1
    page = min(max(page, 1), pages)
    rows = list(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).paginate(page, PER_PAGE))
    entries = [{"at": row.at, "actor": row.actor, "role": row.role, "action": row.action,
                "label": ACTIONS.get(row.action, row.action), "target": row.target, "detail": row.detail,
                "ip": row.ip} for row in rows]
    return render_template("audit/index.html", entries=entries, page=page, pages=pages, total=total,
                           action=action, actions=ACTIONS, per_page=PER_PAGE)


__all__ = ["bp", "record", "doctor", "describe_change", "ACTIONS"]
