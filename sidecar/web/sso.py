"""Single sign-on from WordPress: ``GET /sso?token=…``, the companion plugin's "Google Calendar" link.

The token (wp_bridge/wordpress/PROTOCOL.md, "Single sign-on") is signed by the plugin with the shared
secret and valid for 2 minutes; it carries the WordPress user id, roles, name and a random ``jti``.
This page refuses a bad signature, an expired token and a ``jti`` seen before (single use, kept
server-side with ``runtime.remember_once``), then signs the person in by role:

- ``administrator`` or ``kiviCare_clinic_admin`` → admin (every page);
- ``kiviCare_doctor`` → doctor: their own calendar page, ``/me`` (doctor id = WordPress user id);
- ``kiviCare_receptionist`` → receptionist: the dashboard, read-only;
- ``kiviCare_patient`` or anything else → refused with a page saying why.

A refused token changes nothing: no session, no stored data (except that its ``jti`` counts as used).
"""

from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, redirect, render_template, request, url_for

from wp_bridge.signing import MAX_AGE, BadSignature, StaleRequest, read_sso_token

from . import audit
from .common import runtime
from .hooks import companion_secret
from .security import start_sso_session

log = logging.getLogger(__name__)
bp = Blueprint("sso", __name__)

ADMIN_ROLES = ("administrator", "kiviCare_clinic_admin")
DOCTOR_ROLE = "kiviCare_doctor"
RECEPTIONIST_ROLE = "kiviCare_receptionist"
PATIENT_ROLE = "kiviCare_patient"
_JTI = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
WHERE_FROM = "Open the Google Calendar link in KiviCare (or wp-admin) again."


def role_for(roles) -> str | None:
    """The sidecar role for a list of WordPress roles (highest wins), or None for patients and others."""
    if isinstance(roles, dict):  # PHP encodes an array with gaps in its keys as an object
        roles = list(roles.values())
    if not isinstance(roles, list):
        return None
    names = {r for r in roles if isinstance(r, str)}
    if names & set(ADMIN_ROLES):
        return "admin"
    if DOCTOR_ROLE in names:
        return "doctor"
    if RECEPTIONIST_ROLE in names:
        return "receptionist"
    return None


def _refuse(title: str, message: str, status: int = 403):
    audit.record("sign_in_refused", "sign-in from WordPress", title)
    return render_template("error.html", title=title, message=message), status


def _user_id(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        return int(value) or None
    return None


@bp.route("/sso")
def sso():
    """Check the plugin's token and sign the WordPress user in, or explain why not."""
    secret = companion_secret()
    if not secret:
        return _refuse("Sign-in from WordPress is not set up",
                       "The sidecar has no companion plugin secret yet. An administrator generates it in the "
                       "sidecar's settings (Companion plugin) and pastes it into the plugin.", 503)
    token = request.args.get("token", "")
    if not token:
        return _refuse("This sign-in link is not valid", "The link has no sign-in token. " + WHERE_FROM, 400)
    try:
        payload = read_sso_token(secret, token)
    except StaleRequest:
        return _refuse("This sign-in link has expired",
                       "Sign-in links from WordPress work for 2 minutes. " + WHERE_FROM)
    except BadSignature as exc:
        log.info("refused an SSO token: %s", exc)
        return _refuse("This sign-in link is not valid",
                       "The link was changed, or it was made with another secret than the sidecar's. " + WHERE_FROM
                       + " If it keeps failing, copy the secret from the sidecar's settings into the plugin again.")
    uid = _user_id(payload.get("uid"))
    jti = payload.get("jti")
    if uid is None or not isinstance(jti, str) or not _JTI.match(jti):
        return _refuse("This sign-in link is not valid", "The link does not name a WordPress user. " + WHERE_FROM)
    ttl = max(int(float(payload["exp"]) - time.time()), 0) + MAX_AGE
    if not runtime().remember_once("sso", jti, ttl):
        log.info("refused a replayed SSO token for WordPress user %s", uid)
        return _refuse("This sign-in link was already used",
                       "Each sign-in link from WordPress works once. " + WHERE_FROM)
    role = role_for(payload.get("roles"))
    if role is None:
        roles = payload.get("roles")
        if isinstance(roles, (list, dict)) and PATIENT_ROLE in (roles.values() if isinstance(roles, dict) else roles):
            return _refuse("Patients cannot sign in here",
                           "This page is for the clinic's staff. Your appointments and video links are in your "
                           "KiviCare patient dashboard.")
        return _refuse("Your WordPress account has no access",
                       "Only administrators, clinic admins, doctors and receptionists can use the calendar sidecar.")
    name = payload.get("name") if isinstance(payload.get("name"), str) else ""
    start_sso_session(wp_user_id=uid, role=role, name=name or f"WordPress user {uid}", secret=secret)
    audit.record("signed_in", name or f"WordPress user {uid}", f"from WordPress as {role}")
    log.info("WordPress user %s signed in as %s", uid, role)
    if role == "doctor":
        _learn_doctor(uid)
        return redirect(url_for("connect.me"), code=303)
    return redirect(url_for("dashboard.index"), code=303)


def _learn_doctor(doctor_id: int) -> None:
    """Best effort: the doctor's name and e-mail from KiviCare, so the page can greet them."""
    from .connect import ensure_doctor
    try:
        ensure_doctor(doctor_id)
    except Exception as exc:  # KiviCare down or not set: the page still works
        log.info("could not load doctor %s from KiviCare: %s", doctor_id, type(exc).__name__)


__all__ = ["bp", "role_for"]
