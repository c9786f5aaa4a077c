"""Connecting doctors' Google Calendars: the Connect page, Connect links, the OAuth callback,
the calendar choice and disconnect, and each doctor's own page.

Three ways in, one flow:
- an admin clicks "Connect now" and authorizes on the doctor's behalf (signed in);
- an admin sends the doctor a Connect link (``/connect/start?token=…``, 7 days); the doctor needs
  no account. The token is checked at every step and used up only when Google's answer arrives;
- a doctor signed in through the companion plugin (``/sso``) opens ``/me``: their connection, last
  sync, counts and recent activity, with Connect / Reconnect / Disconnect and the calendar choice
  for their own calendar only. Admins see the same page for any doctor at ``/doctors/<id>``.

Right after the calendar choice, a new connection (or one whose sync an admin reset) shows the
first-sync preview (``/connect/<id>/preview``, ``wp_bridge.preview``): "N events will be created in
calendar X, M busy blocks". Nothing is written until the person who chose the calendar (an admin, or
the doctor through their Connect link or WordPress sign-in) confirms it there.

Both the calendar choice and the doctor's page also choose the calendars whose busy time blocks
booking in KiviCare (``Connection.busy_calendars``; None means "the destination calendar", which is
the default and follows a change of destination). Admins can reset a doctor's sync on
``/doctors/<id>`` (rebuild the mapping from the events in Google, keeping or removing them).

Google's ``state`` is bound to the browser's session as well as stored server-side (with the
PKCE verifier, ``sidecar.calendars.google_oauth``), so a callback started in another browser is
refused. After the callback the session carries "may choose the calendar for doctor N", which
is what lets a doctor from a Connect link finish without signing in. Everything works with plain
links, forms and redirects (no JavaScript). Every sentence shown is translatable (Flask-Babel).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, urlparse

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from wp_bridge import jobs as job_queue
from wp_bridge import preview as first_sync

from .. import connections
from ..calendars.base import CalendarAuthError, CalendarError
from ..calendars.google_oauth import OAuthError, authorization_url, finish_authorization
from ..storage import transaction
from ..storage.models import BusyBlock, Conflict, Connection, Doctor, OneTimeToken, utcnow
from . import audit
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
        return _("The KiviCare site is not set yet (Settings). Doctors already known are listed.")
    try:
        doctors = rt.kivicare().list_doctors()
    except KiviCareError as exc:
        return kivicare_message(exc) + " " + _("Doctors already known are listed.")
    except Exception as exc:
        log.warning("listing KiviCare doctors failed: %s", type(exc).__name__)
        return _("The doctors could not be loaded from KiviCare (%(error)s). Doctors already known are listed.",
                 error=type(exc).__name__)
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
    return doctor.name if doctor and doctor.name else _("Doctor #%(id)s", id=doctor_id)


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
    """An admin, the doctor signed in from WordPress, or the browser that just finished the doctor's
    Connect link: they choose the calendars and confirm the first sync."""
    return current_admin() is not None or _is_own_doctor(doctor_id) or session.get("connect_doctor") == doctor_id


def _refuse_chooser(doctor_id: int, message: str):
    """The answer for someone who may not act on ``doctor_id``'s connection: sign in first, or 403."""
    if current_user() is None and "connect_doctor" not in session:
        return redirect(url_for("auth.login", next=request.path))
    return forbidden(message)


def _who() -> str:
    """Who confirmed, for ``Connection.sync_confirmed_by``: the signed-in name, or "Connect link"."""
    user = current_user()
    if user is None:
        return "Connect link"
    return f"{user.name} ({user.role})"


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


def busy_choices(calendars, conn: Connection, destination: str | None = None) -> list[dict]:
    """The "Calendars that block booking time" checkboxes: the account's calendars, then any saved id
    Google no longer lists (kept checked, so saving does not drop it silently)."""
    destination = destination if destination is not None else conn.calendar_id
    saved = conn.busy_calendars
    chosen = set(saved) if saved is not None else ({destination} if destination else set())
    rows = [{"id": c.id, "name": c.name or c.id, "primary": c.primary, "access_role": c.access_role,
             "checked": c.id in chosen, "destination": c.id == destination, "missing": False} for c in calendars]
    listed = {c.id for c in calendars}
    for calendar_id in saved or []:
        if isinstance(calendar_id, str) and calendar_id not in listed:
            rows.append({"id": calendar_id, "name": calendar_id, "primary": False, "access_role": "",
                         "checked": True, "destination": calendar_id == destination, "missing": True})
    return rows


def save_busy_calendars(conn: Connection, submitted: list[str], allowed: set[str],
                        follow_destination: bool = False) -> None:
    """Store the calendars whose busy time blocks booking. Raises ValueError for an id not offered.

    Exactly the destination calendar is stored as None (the default), so it follows a later change
    of destination; ``follow_destination`` stores None too (the form's default was left as it was).
    """
    ids = [c for c in dict.fromkeys(submitted) if c]
    if any(c not in allowed for c in ids) or len(ids) > 50:
        raise ValueError(_("Choose calendars from the list."))
    value = None if follow_destination or ids == [conn.calendar_id] else ids
    Connection.update(busy_calendars=value, updated_at=utcnow()).where(Connection.id == conn.id).execute()
    conn.busy_calendars = value


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
    doctors = [{"doctor": d, "connection": by_doctor.get(d.id), "state": first_sync.display_state(by_doctor.get(d.id))}
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
    audit.record("connect_link_created", audit.doctor(doctor_id))
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
    audit.record("disconnected", audit.doctor(doctor_id))
    flash(_("%(name)s's Google Calendar is disconnected. Events already in the calendar stay there.",
            name=doctor_name(doctor_id)), "ok")
    return redirect(url_for("connect.index") + f"#doctor-{doctor_id}", code=303)


# ---- the doctor's Connect link -------------------------------------------------------------------

@bp.route("/connect/start")
def start():
    """The page a doctor's Connect link opens (no sign-in; the link is the permission)."""
    token = request.args.get("token", "")
    row = valid_token(token, "connect")
    if row is None:
        return render_template("connect/error.html", again="",
                               message=_("This Connect link is not valid any more (it expires after 7 days and "
                                         "works once). Ask the clinic's administrator for a new one.")), 403
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
        return _oauth_failed(_("This Google sign-in was started in another browser or took too long. "
                               "Start again from the same browser."), via)
    token_row = None
    if via.get("self"):
        if not _is_own_doctor(via.get("doctor_id")):
            return _oauth_failed(_("Your session ended. Open the Google Calendar link in KiviCare again."),
                                 None, 403)
    elif not via.get("admin"):
        token_row = valid_token(via.get("token"), "connect")
        if token_row is None:
            return _oauth_failed(_("This Connect link is not valid any more. Ask the clinic's administrator "
                                   "for a new one."), None, 403)
    elif current_admin() is None:
        return _oauth_failed(_("Your admin session ended. Sign in and start again."), None, 403)
    try:
        doctor_id, credentials = finish_authorization(runtime().cfg, runtime().box, state=state,
                                                      code=request.args.get("code"), error=request.args.get("error"))
    except OAuthError as exc:
        return _oauth_failed(str(exc), via)
    if doctor_id != via.get("doctor_id") or (token_row is not None and token_row.doctor_id != doctor_id):
        return _oauth_failed(_("This Google sign-in belongs to another connection. Start again."), via)
    # The link is used up now, before anything is stored: two browsers cannot both finish with it.
    if token_row is not None and not consume_token(token_row):
        return _oauth_failed(_("This Connect link was just used in another browser."), None, 409)
    try:
        # Stores the grant; "pending" until a calendar is chosen (a reconnect keeps its calendar and resumes).
        connections.complete_authorization(runtime(), doctor_id, credentials)
    except CalendarError as exc:
        log.warning("reading the Google account of doctor %s failed: %s", doctor_id, type(exc).__name__)
        if token_row is not None:
            release_token(token_row)  # not finished: the doctor may use the link again
        return _oauth_failed(_("Google accepted the sign-in but did not answer when asked for the account. "
                               "Try again in a moment."), via, 503)
    audit.record("connected", audit.doctor(doctor_id), "Connect link" if token_row is not None else "")
    session["connect_doctor"] = doctor_id
    session.permanent = True
    return redirect(url_for("connect.calendar", doctor_id=doctor_id), code=303)


# ---- choosing the calendar ---------------------------------------------------------------------------

@bp.route("/connect/<int:doctor_id>/calendar", methods=["GET", "POST"])
def calendar(doctor_id: int):
    """Pick the calendar that receives the appointments (radio buttons), then the first-sync preview
    (a new or reset connection) or the "connected" page."""
    if not _may_choose_calendar(doctor_id):
        return _refuse_chooser(doctor_id, _("You can choose the calendar only for your own Google connection."))
    conn = _connection(doctor_id)
    if conn is None or not conn.refresh_token or conn.state == "disconnected":
        return _oauth_failed(_("This doctor's Google account is not connected. Connect it first."), None, 409)
    name = doctor_name(doctor_id)
    try:
        every_calendar = connections.calendars(runtime(), conn, include_read_only=True)
    except CalendarAuthError:
        return _oauth_failed(_("Google no longer accepts this connection. Connect again."), None, 409)
    except CalendarError as exc:
        log.warning("listing calendars of connection %s failed: %s", conn.id, type(exc).__name__)
        return render_template("connect/error.html", again=request.path,
                               message=_("Google did not answer in time. Wait a moment and try again.")), 503
    # Appointments go to a writable calendar; any calendar, free/busy-only included, may block time.
    calendars = [c for c in every_calendar if c.access_role in connections.WRITABLE]
    error = ""
    busy_allowed = {c.id for c in every_calendar} | set(conn.busy_calendars or [])
    if request.method == "POST":
        busy = request.form.getlist("busy_calendar")
        # An unchanged default ("the calendar chosen above") keeps following the destination.
        follow = (conn.busy_calendars is None and busy == [request.form.get("busy_default", "")]
                  and bool(busy[0]))
        if request.form.get("busy_form") and any(c not in busy_allowed for c in busy):
            error = _("Choose the calendars that block booking time from the list.")
        else:
            try:
                connections.choose_calendar(runtime(), conn, request.form.get("calendar_id", ""))
            except ValueError:
                error = _("Choose one of the calendars.")
            except CalendarError as exc:
                log.warning("choosing the calendar of connection %s failed: %s", conn.id, type(exc).__name__)
                error = _("Google did not answer in time. Try again in a moment.")
            else:
                if request.form.get("busy_form"):  # forms without the fieldset leave the choice alone
                    save_busy_calendars(conn, busy, busy_allowed, follow_destination=follow)
                runtime().request_poll()
                if conn.awaiting_confirmation:
                    return redirect(url_for("connect.preview", doctor_id=doctor_id), code=303)
                return redirect(url_for("connect.done", doctor_id=doctor_id), code=303)
    selected = request.form.get("calendar_id") or preferred_calendar(calendars, conn.calendar_id)
    busy_rows = busy_choices(every_calendar, conn, destination=selected)
    if request.method == "POST" and request.form.get("busy_form"):
        ticked = set(request.form.getlist("busy_calendar"))
        for row in busy_rows:
            row["checked"] = row["id"] in ticked
    return render_template("connect/calendar.html", doctor_id=doctor_id, doctor_name=name, calendars=calendars,
                           selected=selected, account_email=conn.account_email, error=error,
                           busy=busy_rows, busy_default=selected if conn.busy_calendars is None else "",
                           first_sync=conn.awaiting_confirmation), \
        (400 if error else 200)


# ---- the first-sync preview ------------------------------------------------------------------------

@bp.route("/connect/<int:doctor_id>/preview", methods=["GET", "POST"])
def preview(doctor_id: int):
    """What the first sync (or the sync after a reset) will do, and the button that starts it.

    GET: "N events will be created in calendar X, M busy blocks" (``wp_bridge.preview.compute``).
    POST: confirm (``wp_bridge.preview.confirm``), then the "connected" page. For the admin, or the
    doctor (signed in from WordPress, or the browser that finished their Connect link).
    """
    if not _may_choose_calendar(doctor_id):
        return _refuse_chooser(doctor_id, _("Only the doctor or an administrator can start this calendar's sync."))
    conn = _connection(doctor_id)
    if conn is None or not conn.refresh_token or not conn.calendar_id \
            or conn.state not in ("active", "needs_reconnect"):
        return redirect(url_for("connect.calendar", doctor_id=doctor_id), code=303)
    if not conn.awaiting_confirmation:
        return redirect(url_for("connect.done", doctor_id=doctor_id), code=303)
    if request.method == "POST":
        try:
            first_sync.confirm(runtime(), conn, by=_who())
        except ValueError:
            flash(_("This calendar cannot sync yet: connect it and choose a calendar first."), "error")
            return redirect(url_for("connect.calendar", doctor_id=doctor_id), code=303)
        audit.record("first_sync_confirmed", audit.doctor(doctor_id), conn.calendar_name or conn.calendar_id)
        return redirect(url_for("connect.done", doctor_id=doctor_id), code=303)
    try:
        view = first_sync.compute(runtime(), conn)
    except CalendarAuthError:
        return _oauth_failed(_("Google no longer accepts this connection, so the preview cannot be made. "
                               "Reconnect first."), {"self": True} if _is_own_doctor(doctor_id) else None, 409)
    except CalendarError as exc:
        log.warning("preview for connection %s failed: %s", conn.id, type(exc).__name__)
        return render_template("connect/error.html", again=request.path,
                               message=_("Google did not answer in time, so the preview cannot be shown. "
                                         "Nothing was synced. Try again in a moment.")), 503
    return render_template("connect/preview.html", doctor_id=doctor_id, doctor_name=doctor_name(doctor_id),
                           conn=conn, view=view, summary=preview_summary(view))


def preview_summary(view) -> str:
    """The preview's headline: "N events will be created in calendar X, M busy blocks."."""
    return _("%(events)s will be created in calendar %(calendar)s, %(blocks)s.",
             events=ngettext("%(num)d event", "%(num)d events", view.create),
             calendar=view.calendar_name,
             blocks=ngettext("%(num)d busy block", "%(num)d busy blocks", view.busy_blocks))


@bp.route("/connect/<int:doctor_id>/done")
def done(doctor_id: int):
    """"Connected": where the appointments go now."""
    if not _may_choose_calendar(doctor_id):
        return forbidden(_("This page belongs to another doctor's connection."))
    conn = _connection(doctor_id)
    if conn is None or conn.state != "active":
        return redirect(url_for("connect.calendar", doctor_id=doctor_id))
    if conn.awaiting_confirmation:
        return redirect(url_for("connect.preview", doctor_id=doctor_id))
    return render_template("connect/done.html", doctor_name=doctor_name(doctor_id), conn=conn)


# ---- a doctor's own page ------------------------------------------------------------------------

CALENDARS_TTL = 60.0  # seconds


def _calendars_cached(conn: Connection):
    """``connections.calendars`` for the doctor page, remembered for a minute per grant (failures too), so
    reloading the page does not ask Google every time or wait out its retries again."""
    cache = current_app.extensions.setdefault("sidecar_calendars_cache", {})
    key = (conn.id, conn.refresh_token)
    hit = cache.get(conn.id)
    if hit and hit[0] == key and time.monotonic() - hit[1] < CALENDARS_TTL:
        if isinstance(hit[2], Exception):
            raise hit[2]
        return hit[2]
    try:
        result = connections.calendars(runtime(), conn, include_read_only=True)
    except Exception as exc:
        cache[conn.id] = (key, time.monotonic(), exc)
        raise
    cache[conn.id] = (key, time.monotonic(), result)
    return result


def _forget_calendars(conn: Connection) -> None:
    current_app.extensions.get("sidecar_calendars_cache", {}).pop(conn.id, None)


def busy_view(conn: Connection | None) -> dict:
    """The doctor page's "Calendars that block booking time": checkboxes from Google's calendar list
    (``available``), or why they cannot be shown (``error``) with the calendars blocking now (``saved``)."""
    view = {"available": False, "rows": [], "error": "", "saved": [], "refused": False}
    if conn is None or conn.state != "active" or not conn.refresh_token or not conn.calendar_id:
        return view
    saved = conn.busy_calendars if conn.busy_calendars is not None else [conn.calendar_id]
    view["saved"] = [(conn.calendar_name or c) if c == conn.calendar_id else c for c in saved]
    try:
        calendars = _calendars_cached(conn)
    except CalendarAuthError:
        # Shown at once; the engine marks the connection "needs_reconnect" (and alerts) when it meets it.
        view["refused"] = True
        view["error"] = _("Google no longer accepts this connection. Reconnect to choose the calendars.")
        return view
    except Exception as exc:  # the page must not fail because Google is slow or down
        log.warning("listing calendars of connection %s failed: %s", conn.id, type(exc).__name__)
        view["error"] = _("The calendars could not be loaded from Google just now. Reload the page in a moment.")
        return view
    view.update(available=True, rows=busy_choices(calendars, conn))
    return view


def doctor_view(doctor_id: int) -> dict:
    """What a doctor's page shows: name, connection state, account, calendar, last sync, counts, activity,
    the calendars that block booking time, missing permissions, open conflicts and the 24-hour counts."""
    from .dashboard import (DIRECTIONS, SCOPE_WARNING, STATE_CLASSES, STATE_LABELS, activity_counts,
                            empty_activity, missing_scopes, pending_jobs, recent_activity)

    conn = _connection(doctor_id)
    busy = busy_view(conn)
    state = first_sync.display_state(conn)
    return {
        "state_class": STATE_CLASSES.get(state, "none"),
        "missing_scopes": missing_scopes(conn),
        "scope_warning": SCOPE_WARNING,
        "busy": busy,
        "busy_blocks": BusyBlock.select().where(BusyBlock.doctor_id == doctor_id).count(),
        "open_conflicts": Conflict.select().where((Conflict.doctor_id == doctor_id)
                                                  & (Conflict.state == "open")).count(),
        "activity_24h": activity_counts(doctor_id).get(doctor_id) or empty_activity(),
        "directions": DIRECTIONS,
        "can_reset": bool(conn and conn.refresh_token and conn.calendar_id
                          and conn.state in ("active", "removed")),
        "doctor_id": doctor_id,
        "doctor_name": doctor_name(doctor_id),
        "conn": conn,
        "state": state or "none",
        "state_label": STATE_LABELS.get(state, state or _("not connected")),
        "held": state == first_sync.HELD,
        "google_refused": busy["refused"],  # Google refused the grant just now: show "Reconnect" at once
        "connected": bool(conn and conn.state in ("active", "needs_reconnect", "pending") and conn.refresh_token),
        "account_email": conn.account_email if conn and state != "disconnected" else "",
        "calendar_name": (conn.calendar_name or conn.calendar_id or "") if conn and state != "disconnected" else "",
        "last_sync_at": conn.last_sync_at if conn else None,
        "synced": conn.synced_count if conn else 0,
        "failed": conn.failed_count if conn else 0,
        "given_up": job_queue.failed_jobs(conn.id) if conn else 0,
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
        return forbidden(_("This page is for doctors. Your account can view the dashboard."))
    return render_template("connect/doctor.html", own=True, **doctor_view(user.doctor_id))


@bp.route("/doctors/<int:doctor_id>")
@roles_required("admin", "doctor")
def doctor_page(doctor_id: int):
    """One doctor's page: any doctor for admins; a doctor only their own (403 for anyone else's)."""
    user = current_user()
    if user.is_doctor:
        if user.doctor_id != doctor_id:
            return forbidden(_("You can open only your own calendar page."))
        return redirect(url_for("connect.me"))
    if Doctor.get_or_none(Doctor.id == doctor_id) is None:
        abort(404)
    return render_template("connect/doctor.html", own=False, **doctor_view(doctor_id))


@bp.route("/connect/<int:doctor_id>/busy", methods=["POST"])
def busy(doctor_id: int):
    """Save the calendars whose busy time blocks booking (an admin, or the doctor for their own)."""
    if not _may_choose_calendar(doctor_id):
        if current_user() is None:
            return redirect(url_for("auth.login", next=request.path))
        return forbidden(_("You can choose only your own calendars."))
    page = url_for("connect.me") if _is_own_doctor(doctor_id) else url_for("connect.doctor_page", doctor_id=doctor_id)
    back = redirect(page + "#busy", code=303)
    conn = _connection(doctor_id)
    if conn is None or conn.state != "active" or not conn.refresh_token:
        flash(_("This Google Calendar is not connected, so there is nothing to choose."), "error")
        return back
    _forget_calendars(conn)  # saving asks Google afresh (and the page after it shows that answer)
    try:
        calendars = _calendars_cached(conn)
    except CalendarAuthError:
        flash(_("Google no longer accepts this connection. Reconnect, then choose the calendars again."), "error")
        return back
    except CalendarError as exc:
        log.warning("listing calendars of connection %s failed: %s", conn.id, type(exc).__name__)
        flash(_("Google did not answer in time, so nothing was changed. Try again in a moment."), "error")
        return back
    allowed = {c.id for c in calendars} | set(conn.busy_calendars or [])
    try:
        save_busy_calendars(conn, request.form.getlist("busy_calendar"), allowed)
    except ValueError as exc:
        flash(str(exc), "error")
        return back
    runtime().request_poll()
    chosen = conn.busy_calendars if conn.busy_calendars is not None else [conn.calendar_id]
    names = {c.id: c.name or c.id for c in calendars}
    if chosen:
        flash(_("Saved. Busy time in %(calendars)s blocks booking in KiviCare from the next sync.",
                calendars=", ".join(names.get(c, c) for c in chosen)), "ok")
    else:
        flash(_("Saved. No calendar blocks booking time in KiviCare now."), "ok")
    return back


@bp.route("/doctors/<int:doctor_id>/reset-sync", methods=["POST"])
@admin_required
def reset_sync(doctor_id: int):
    """Rebuild the doctor's mapping from the events in Google (keeping them, or removing them so they
    are created again), after an explicit confirmation. The sync then waits for the first-sync preview
    to be confirmed again."""
    back = redirect(url_for("connect.doctor_page", doctor_id=doctor_id) + "#reset", code=303)
    conn = _connection(doctor_id)
    if conn is None:
        abort(404)
    if not (conn.refresh_token and conn.calendar_id and conn.state in ("active", "removed")):
        flash(_("Reset needs a connected Google Calendar. Connect or reconnect it first."), "error")
        return back
    mode = request.form.get("events", "")
    if mode not in ("keep", "remove"):
        flash(_("Choose whether to keep the events in Google or remove them."), "error")
        return back
    if request.form.get("confirm") != "yes":
        flash(_("Nothing was reset: tick the box to confirm."), "error")
        return back
    try:
        found = runtime().bridge.reset_sync(conn, remove_events=mode == "remove")
    except CalendarAuthError:
        flash(_("Google no longer accepts this connection, so nothing was reset. Reconnect first."), "error")
        return back
    except CalendarError as exc:
        log.warning("reset sync of connection %s failed: %s", conn.id, type(exc).__name__)
        flash(_("Google did not answer in time, so the reset did not finish. Try again: a reset can be "
                "repeated."), "error")
        return back
    audit.record("reset_sync", audit.doctor(doctor_id), "events " + ("kept" if mode == "keep" else "removed"))
    runtime().request_poll()
    events = ngettext("%(num)d event found in Google.", "%(num)d events found in Google.", found)
    if mode == "keep":
        flash(events + " " + _("They are kept and linked again; the sync brings them up to date once you confirm "
                               "the preview."), "ok")
    elif conn.state == "removed":
        flash(events + " " + _("They were removed from Google."), "ok")
    else:
        flash(events + " " + _("They were removed from Google and are created again once you confirm the "
                               "preview."), "ok")
    return back


@bp.route("/doctors/<int:doctor_id>/retry-failed", methods=["POST"])
@admin_required
def retry_failed(doctor_id: int):
    """An admin's "Retry": the doctor's given-up changes (``wp_bridge.jobs.retry_failed``) are tried again
    now, each with a fresh set of tries. One that fails again is given up (and alerted) again."""
    conn = _connection(doctor_id)
    if conn is None:
        abort(404)
    revived = job_queue.retry_failed(conn.id)
    audit.record("jobs_retried", audit.doctor(doctor_id), f"given-up changes retried: {revived}")
    if revived:
        runtime().work_available.set()
        flash(ngettext("%(num)d change is being tried again.", "%(num)d changes are being tried again.", revived),
              "ok")
    else:
        flash(_("There was no given-up change to try again."), "ok")
    return redirect(url_for("connect.doctor_page", doctor_id=doctor_id) + "#given-up", code=303)


def _own_doctor_id() -> int | None:
    user = current_user()
    return user.doctor_id if user is not None and user.is_doctor else None


@bp.route("/me/connect", methods=["POST"])
def my_connect():
    """A doctor's own "Connect" / "Reconnect": sign in with their Google account."""
    doctor_id = _own_doctor_id()
    if doctor_id is None:
        return forbidden(_("Only a doctor signed in through KiviCare can connect their own calendar here."))
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
        return forbidden(_("Only a doctor signed in through KiviCare can disconnect their own calendar here."))
    conn = _connection(doctor_id)
    if conn is None or conn.state == "disconnected":
        flash(_("Your Google Calendar is not connected."), "ok")
        return redirect(url_for("connect.me"), code=303)
    connections.disconnect(runtime(), conn)
    audit.record("disconnected", audit.doctor(doctor_id), "by the doctor")
    flash(_("Your Google Calendar is disconnected. Events already in the calendar stay there."), "ok")
    return redirect(url_for("connect.me"), code=303)


__all__ = ["bp", "create_connect_link", "preferred_calendar", "refresh_doctors", "doctor_view", "preview_summary"]
