"""Connecting doctors' Google Calendars: the Connect page, Connect links, the OAuth callback,
the calendar choice and disconnect, and each doctor's own page.

Three ways in, one flow:
- an admin clicks "Connect now" and authorizes on the doctor's behalf (signed in);
- an admin sends the doctor a Connect link (``/connect/start?token=…``, 7 days); the doctor needs
  no account. The token is checked at every step and used up only when Google's answer arrives;
- a doctor signed in through the companion plugin (``/sso``) opens ``/me``: their connection, last
  sync, counts and recent activity, with Connect / Reconnect / Disconnect and the calendar choice
  for their own calendar only. Admins see the same page for any doctor at ``/doctors/<id>``.

Google's ``state`` is bound to the browser's session as well as stored server-side (with the
PKCE verifier, ``sidecar.calendars.google_oauth``), so a callback started in another browser is
refused. After the callback the session carries "may choose the calendar for doctor N", which
is what lets a doctor from a Connect link finish without signing in. Everything works with plain
links, forms and redirects (no JavaScript).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlparse

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for

from .. import connections
from ..calendars.base import CalendarAuthError, CalendarError
from ..calendars.google_oauth import OAuthError, authorization_url, finish_authorization
from ..storage import transaction
from ..storage.models import Connection, Doctor, OneTimeToken, utcnow
from .common import runtime
from .security import (CONNECT_TTL, admin_required, consume_token, current_admin, current_user, forbidden,
                       new_token, release_token, roles_required, valid_token)

log = logging.getLogger(__name__)
bp = Blueprint("connect", __name__)

PROVIDER = "google"


# ---- helpers ---------------------------------------------------------------------------------------

def refresh_doctors() -> str:
    """Upsert KiviCare's doctors into the Doctor table. Returns "" or a message saying why it could not."""
    from wp_bridge.kivicare import KiviCareError
    from .settings import kivicare_message

    rt = runtime()
    if not rt.cfg.get("kivicare.base_url"):
        return "The KiviCare site is not set yet (Settings). Doctors already known are listed."
    try:
        doctors = rt.kivicare().list_doctors()
    except KiviCareError as exc:
        return kivicare_message(exc) + " Doctors already known are listed."
    except Exception as exc:
        log.warning("listing KiviCare doctors failed: %s", type(exc).__name__)
        return f"The doctors could not be loaded from KiviCare ({type(exc).__name__}). Doctors already known are listed."
    now = utcnow()
    with transaction():
        for d in doctors:
            (Doctor.insert(id=d.id, name=d.name, email=d.email, updated_at=now)
             .on_conflict(conflict_target=[Doctor.id],
                          update={Doctor.name: d.name, Doctor.email: d.email, Doctor.updated_at: now})
             .execute())
    return ""


def doctor_name(doctor_id: int) -> str:
    doctor = Doctor.get_or_none(Doctor.id == doctor_id)
    return (doctor.name if doctor and doctor.name else f"Doctor #{doctor_id}")


def ensure_doctor(doctor_id: int) -> None:
    """Best effort: learn a doctor's name and e-mail from KiviCare if the Doctor table lacks them
    (a Connect link made from the CLI before anyone opened the Connect page)."""
    from wp_bridge.kivicare import KiviCareError

    known = Doctor.get_or_none(Doctor.id == doctor_id)
    if known is not None and known.name:
        return
    try:
        found = runtime().kivicare().get_doctor(doctor_id)
    except KiviCareError:
        return
    (Doctor.insert(id=doctor_id, name=found.name, email=found.email, updated_at=utcnow())
     .on_conflict(conflict_target=[Doctor.id], update={Doctor.name: found.name, Doctor.email: found.email})
     .execute())


def _connection(doctor_id: int) -> Connection | None:
    return Connection.get_or_none((Connection.doctor == doctor_id) & (Connection.provider == PROVIDER))


def _is_own_doctor(doctor_id: int) -> bool:
    """The signed-in person is doctor ``doctor_id`` (through the companion plugin's sign-in)."""
    user = current_user()
    return user is not None and user.is_doctor and user.doctor_id == doctor_id


def _may_choose_calendar(doctor_id: int) -> bool:
    return current_admin() is not None or _is_own_doctor(doctor_id) or session.get("connect_doctor") == doctor_id


def _start_google(doctor_id: int, via: dict):
    """Create the OAuth state for ``doctor_id``, bind it to this browser, and send the browser to Google."""
    doctor = Doctor.get_or_none(Doctor.id == doctor_id)
    # The doctor's KiviCare e-mail pre-selects that Google account when it is one; it is only a hint.
    url = authorization_url(runtime().cfg, runtime().box, doctor_id,
                            login_hint=(doctor.email or None) if doctor else None)
    session["oauth_state"] = parse_qs(urlparse(url).query).get("state", [""])[0]
    session["oauth_via"] = via
    return redirect(url, code=303)


def _oauth_failed(message: str, via: dict | None, status: int = 400):
    if via and via.get("token"):
        again = url_for("connect.start", token=via["token"])
    elif via and via.get("self"):
        again = url_for("connect.me")
    elif current_admin() is not None:
        again = url_for("connect.index")
    else:
        again = ""
    return render_template("connect/error.html", message=message, again=again), status


def preferred_calendar(calendars, current_id: str | None) -> str:
    """The calendar to pre-select: the one in use, else the first of ``connections.calendars`` (which puts
    one named like "Clinic appointments" first, then the primary calendar)."""
    ids = [c.id for c in calendars]
    if current_id and current_id in ids:
        return current_id
    return ids[0] if ids else ""


def create_connect_link(rt, doctor_id: int) -> str:
    """A doctor's Connect link (7 days, single use): ``<public_url>/connect/start?token=…``.

    Earlier unused links for the same doctor stop working. Needs no request context (the CLI and
    the demo call it too).
    """
    with transaction():
        (OneTimeToken.delete()
         .where((OneTimeToken.purpose == "connect") & (OneTimeToken.doctor_id == doctor_id)
                & OneTimeToken.used_at.is_null())
         .execute())
        token = new_token("connect", CONNECT_TTL, doctor_id)
    return rt.cfg.get("web.public_url").rstrip("/") + "/connect/start?token=" + token


# ---- admin pages -------------------------------------------------------------------------------------

@bp.route("/connect")
@admin_required
def index():
    """Doctors from KiviCare with their connection state and the connect actions."""
    problem = refresh_doctors()
    by_doctor = {c.doctor_id: c for c in Connection.select().where(Connection.provider == PROVIDER)}
    doctors = [{"doctor": d, "connection": by_doctor.get(d.id)}
               for d in Doctor.select().order_by(Doctor.name, Doctor.id)]
    new_link = session.pop("new_connect_link", None)  # shown once
    google_ready = bool(runtime().cfg.get("google.client_id"))
    return render_template("connect/index.html", doctors=doctors, problem=problem, new_link=new_link,
                           google_ready=google_ready, link_days=CONNECT_TTL.days)


@bp.route("/connect/<int:doctor_id>/authorize", methods=["POST"])
@admin_required
def authorize(doctor_id: int):
    """"Connect now": the signed-in admin authorizes Google on the doctor's behalf."""
    if Doctor.get_or_none(Doctor.id == doctor_id) is None:
        abort(404)
    try:
        return _start_google(doctor_id, {"admin": True, "doctor_id": doctor_id})
    except OAuthError as exc:
        return _oauth_failed(str(exc), None)


@bp.route("/connect/<int:doctor_id>/link", methods=["POST"])
@admin_required
def create_link(doctor_id: int):
    """Create a Connect link for the doctor (7 days). Earlier unused links for that doctor stop working."""
    if Doctor.get_or_none(Doctor.id == doctor_id) is None:
        abort(404)
    url = create_connect_link(runtime(), doctor_id)
    session["new_connect_link"] = {"doctor_id": doctor_id, "name": doctor_name(doctor_id), "url": url}
    return redirect(url_for("connect.index") + f"#doctor-{doctor_id}", code=303)


@bp.route("/connect/<int:doctor_id>/disconnect", methods=["POST"])
@admin_required
def disconnect(doctor_id: int):
    """Revoke the grant (best effort), forget the tokens, stop syncing this doctor."""
    conn = _connection(doctor_id)
    if conn is None:
        abort(404)
    connections.disconnect(runtime(), conn)
    flash(f"{doctor_name(doctor_id)}'s Google Calendar is disconnected. Events already in the calendar stay there.",
          "ok")
    return redirect(url_for("connect.index") + f"#doctor-{doctor_id}", code=303)


# ---- the doctor's Connect link -------------------------------------------------------------------

@bp.route("/connect/start")
def start():
    """The page a doctor's Connect link opens (no sign-in; the link is the permission)."""
    token = request.args.get("token", "")
    row = valid_token(token, "connect")
    if row is None:
        return render_template("connect/error.html", again="",
                               message="This Connect link is not valid any more (it expires after 7 days and works "
                                       "once). Ask the clinic's administrator for a new one."), 403
    ensure_doctor(row.doctor_id)
    return render_template("connect/start.html", doctor_name=doctor_name(row.doctor_id), token=token)


@bp.route("/connect/google")
def go():
    """The Connect link's "Continue to Google" button: start OAuth for the link's doctor."""
    token = request.args.get("token", "")
    row = valid_token(token, "connect")
    if row is None:
        return redirect(url_for("connect.start", token=token))
    try:
        return _start_google(row.doctor_id, {"doctor_id": row.doctor_id, "token": token})
    except OAuthError as exc:
        return _oauth_failed(str(exc), {"token": token})


# ---- Google's redirect back ------------------------------------------------------------------------

@bp.route("/oauth/google/callback")
def oauth_callback():
    """``GET ?state&code`` (or ``&error``) from Google: store the grant, then ask for the calendar."""
    state = request.args.get("state", "")
    expected = session.pop("oauth_state", None)
    via = session.pop("oauth_via", None) or {}
    if not state or state != expected:
        return _oauth_failed("This Google sign-in was started in another browser or took too long. "
                             "Start again from the same browser.", via)
    token_row = None
    if via.get("self"):
        if not _is_own_doctor(via.get("doctor_id")):
            return _oauth_failed("Your session ended. Open the Google Calendar link in KiviCare again.", None, 403)
    elif not via.get("admin"):
        token_row = valid_token(via.get("token"), "connect")
        if token_row is None:
            return _oauth_failed("This Connect link is not valid any more. Ask the clinic's administrator "
                                 "for a new one.", None, 403)
    elif current_admin() is None:
        return _oauth_failed("Your admin session ended. Sign in and start again.", None, 403)
    try:
        doctor_id, credentials = finish_authorization(runtime().cfg, runtime().box, state=state,
                                                      code=request.args.get("code"), error=request.args.get("error"))
    except OAuthError as exc:
        return _oauth_failed(str(exc), via)
    if doctor_id != via.get("doctor_id") or (token_row is not None and token_row.doctor_id != doctor_id):
        return _oauth_failed("This Google sign-in belongs to another connection. Start again.", via)
    # The link is used up now, before anything is stored: two browsers cannot both finish with it.
    if token_row is not None and not consume_token(token_row):
        return _oauth_failed("This Connect link was just used in another browser.", None, 409)
    try:
        # Stores the grant; "pending" until a calendar is chosen (a reconnect keeps its calendar and resumes).
        connections.complete_authorization(runtime(), doctor_id, credentials)
    except CalendarError as exc:
        log.warning("reading the Google account of doctor %s failed: %s", doctor_id, type(exc).__name__)
        if token_row is not None:
            release_token(token_row)  # not finished: the doctor may use the link again
        return _oauth_failed("Google accepted the sign-in but did not answer when asked for the account. "
                             "Try again in a moment.", via, 503)
    session["connect_doctor"] = doctor_id
    session.permanent = True
    return redirect(url_for("connect.calendar", doctor_id=doctor_id), code=303)


# ---- choosing the calendar ---------------------------------------------------------------------------

@bp.route("/connect/<int:doctor_id>/calendar", methods=["GET", "POST"])
def calendar(doctor_id: int):
    """Pick the calendar that receives the appointments (radio buttons), then start syncing."""
    if not _may_choose_calendar(doctor_id):
        if current_user() is None and "connect_doctor" not in session:
            return redirect(url_for("auth.login", next=request.path))
        return forbidden("You can choose the calendar only for your own Google connection.")
    conn = _connection(doctor_id)
    if conn is None or not conn.refresh_token or conn.state == "disconnected":
        return _oauth_failed("This doctor's Google account is not connected. Connect it first.", None, 409)
    name = doctor_name(doctor_id)
    try:
        calendars = connections.calendars(runtime(), conn)
    except CalendarAuthError:
        return _oauth_failed("Google no longer accepts this connection. Connect again.", None, 409)
    except CalendarError as exc:
        log.warning("listing calendars of connection %s failed: %s", conn.id, type(exc).__name__)
        return render_template("connect/error.html", again=request.path,
                               message="Google did not answer in time. Wait a moment and try again."), 503
    error = ""
    if request.method == "POST":
        try:
            connections.choose_calendar(runtime(), conn, request.form.get("calendar_id", ""))
        except ValueError:
            error = "Choose one of the calendars."
        except CalendarError as exc:
            log.warning("choosing the calendar of connection %s failed: %s", conn.id, type(exc).__name__)
            error = "Google did not answer in time. Try again in a moment."
        else:
            return redirect(url_for("connect.done", doctor_id=doctor_id), code=303)
    selected = request.form.get("calendar_id") or preferred_calendar(calendars, conn.calendar_id)
    return render_template("connect/calendar.html", doctor_id=doctor_id, doctor_name=name, calendars=calendars,
                           selected=selected, account_email=conn.account_email, error=error), (400 if error else 200)


@bp.route("/connect/<int:doctor_id>/done")
def done(doctor_id: int):
    if not _may_choose_calendar(doctor_id):
        return forbidden("This page belongs to another doctor's connection.")
    conn = _connection(doctor_id)
    if conn is None or conn.state != "active":
        return redirect(url_for("connect.calendar", doctor_id=doctor_id))
    return render_template("connect/done.html", doctor_name=doctor_name(doctor_id), conn=conn)


# ---- a doctor's own page ------------------------------------------------------------------------

def doctor_view(doctor_id: int) -> dict:
    """What a doctor's page shows: name, connection state, account, calendar, last sync, counts, activity."""
    from .dashboard import STATE_LABELS, pending_jobs, recent_activity

    conn = _connection(doctor_id)
    state = conn.state if conn else None
    return {
        "doctor_id": doctor_id,
        "doctor_name": doctor_name(doctor_id),
        "conn": conn,
        "state": state or "none",
        "state_label": STATE_LABELS.get(state, state or "not connected"),
        "connected": bool(conn and state in ("active", "needs_reconnect", "pending") and conn.refresh_token),
        "account_email": conn.account_email if conn and state != "disconnected" else "",
        "calendar_name": (conn.calendar_name or conn.calendar_id or "") if conn and state != "disconnected" else "",
        "last_sync_at": conn.last_sync_at if conn else None,
        "synced": conn.synced_count if conn else 0,
        "failed": conn.failed_count if conn else 0,
        "pending_jobs": pending_jobs(conn.id) if conn else 0,
        "last_error": (conn.last_error or "") if conn else "",
        "recent": recent_activity(20, doctor_id=doctor_id),
        "google_ready": bool(runtime().cfg.get("google.client_id")),
    }


@bp.route("/me")
def me():
    """A doctor's own page (signed in through the companion plugin). Admins go to the dashboard."""
    user = current_user()
    if user is None:
        return redirect(url_for("auth.login", next=request.path))
    if user.is_admin:
        return redirect(url_for("dashboard.index"))
    if not user.is_doctor or not user.doctor_id:
        return forbidden("This page is for doctors. Your account can view the dashboard.")
    return render_template("connect/doctor.html", own=True, **doctor_view(user.doctor_id))


@bp.route("/doctors/<int:doctor_id>")
@roles_required("admin", "doctor")
def doctor_page(doctor_id: int):
    """One doctor's page: any doctor for admins; a doctor only their own (403 for anyone else's)."""
    user = current_user()
    if user.is_doctor:
        if user.doctor_id != doctor_id:
            return forbidden("You can open only your own calendar page.")
        return redirect(url_for("connect.me"))
    if Doctor.get_or_none(Doctor.id == doctor_id) is None:
        abort(404)
    return render_template("connect/doctor.html", own=False, **doctor_view(doctor_id))


def _own_doctor_id() -> int | None:
    user = current_user()
    return user.doctor_id if user is not None and user.is_doctor else None


@bp.route("/me/connect", methods=["POST"])
def my_connect():
    """A doctor's own "Connect" / "Reconnect": sign in with their Google account."""
    doctor_id = _own_doctor_id()
    if doctor_id is None:
        return forbidden("Only a doctor signed in through KiviCare can connect their own calendar here.")
    ensure_doctor(doctor_id)
    try:
        return _start_google(doctor_id, {"self": True, "doctor_id": doctor_id})
    except OAuthError as exc:
        return _oauth_failed(str(exc), {"self": True})


@bp.route("/me/disconnect", methods=["POST"])
def my_disconnect():
    """A doctor disconnects their own Google Calendar (events already there stay)."""
    doctor_id = _own_doctor_id()
    if doctor_id is None:
        return forbidden("Only a doctor signed in through KiviCare can disconnect their own calendar here.")
    conn = _connection(doctor_id)
    if conn is None or conn.state == "disconnected":
        flash("Your Google Calendar is not connected.", "ok")
        return redirect(url_for("connect.me"), code=303)
    connections.disconnect(runtime(), conn)
    flash("Your Google Calendar is disconnected. Events already in the calendar stay there.", "ok")
    return redirect(url_for("connect.me"), code=303)


__all__ = ["bp", "create_connect_link", "preferred_calendar", "refresh_doctors", "doctor_view"]
