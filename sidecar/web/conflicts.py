"""Conflicts (issue 4): changes the sidecar will not decide alone, shown side by side for the admin.

A conflict is opened by the engine (``wp_bridge.inbound``) when both sides changed between two syncs
under the "manual" rule, when the doctor moved an appointment in Google and the companion plugin is
not there to reschedule it, or when a pull would cancel many appointments at once (the mass-cancel
guard). ``/conflicts`` lists the open ones with KiviCare's and Google's versions (date and time in the
doctor's timezone) and one button per version; ``/conflicts/<id>/resolve`` applies the choice to both
sides through ``runtime.bridge.inbound.resolve`` and asks the loop to sync now.

Who sees what: admins see and resolve every conflict; receptionists see them all, read-only; a doctor
sees only the conflicts about their own appointments, read-only (resolving can cancel appointments and
e-mail patients, which is the clinic's decision, not one calendar owner's).
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import peewee

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..calendars.base import CalendarAuthError, CalendarError
from ..storage.models import Conflict, Doctor
from . import audit
from .common import as_datetime, doctor_zone, local_date, local_span, runtime, site_zone
from .security import admin_required, current_user, roles_required

log = logging.getLogger(__name__)
bp = Blueprint("conflicts", __name__)

RESOLVED_SHOWN = 50

KIND_LABELS = {
    "both_changed": _l("Both sides changed"),
    "move_without_plugin": _l("Moved in Google, but KiviCare cannot be changed safely"),
    "mass_cancel": _l("Many appointments deleted in Google at once"),
}
STATUS_NAMES = {0: _l("Cancelled"), 1: _l("Booked"), 2: _l("Pending"), 3: _l("Checked out"), 4: _l("Checked in")}
RESOLUTION_LABELS = {"kivicare": _l("KiviCare's version kept"), "google": _l("Google's version kept"),
                     "dismissed": _l("dismissed")}
MASS_RESOLUTION_LABELS = {"kivicare": _l("events restored"), "google": _l("appointments cancelled"),
                          "dismissed": _l("dismissed")}


# ---- queries -------------------------------------------------------------------------------------

def visible_conflicts(user):
    """The ``Conflict`` query ``user`` may see: everything for admins and receptionists, a doctor's own."""
    query = Conflict.select()
    if user is not None and user.is_doctor:
        query = query.where(Conflict.doctor_id == user.doctor_id)
    return query


def open_count(user=None) -> int:
    """Open conflicts ``user`` (default: the signed-in person) may see; 0 for nobody signed in."""
    user = user if user is not None else current_user()
    if user is None:
        return 0
    try:
        return visible_conflicts(user).where(Conflict.state == "open").count()
    except peewee.PeeweeException:  # the navigation must not break an error page
        return 0


# ---- what the page shows -------------------------------------------------------------------------

def _status_text(version: dict) -> str:
    name = version.get("status_name")
    if name:
        return str(name)
    status = version.get("status")
    return str(STATUS_NAMES.get(status, "")) if isinstance(status, int) else ""


def _local_moment(value, zone) -> str:
    moment = as_datetime(value)
    return f"{local_date(moment, zone)} {moment.astimezone(zone):%H:%M}" if moment else ""


def changed_rows(kivicare: dict, google: dict) -> dict[str, bool]:
    """Which rows of the side-by-side table differ (``date``, ``time``, ``status``), to highlight them. An
    event deleted in Google differs everywhere; a status Google does not carry is not a difference."""
    if google.get("deleted") or kivicare.get("deleted"):
        return {"date": True, "time": True, "status": True}
    return {"date": kivicare.get("date") != google.get("date"), "time": kivicare.get("time") != google.get("time"),
            "status": bool(kivicare.get("status") and google.get("status")
                           and kivicare.get("status") != google.get("status"))}


def conflict_view(conflict: Conflict, names: dict[int, str], zones: dict | None = None) -> dict:
    """Everything one conflict shows: both versions in the doctor's timezone, what differs between them,
    the message, the choices. Times are the stored UTC instants shown in the doctor's zone (zoneinfo).
    ``zones`` (``{doctor_id: (ZoneInfo, name)}``, from ``doctor_zones()``) saves a query per conflict."""
    if zones is None:
        zone, zone_name = doctor_zone(conflict.doctor_id)
    else:
        zone, zone_name = zones.get(conflict.doctor_id) or site_zone()
    kivicare = conflict.kivicare or {}
    google = conflict.google or {}
    view = {
        "id": conflict.id, "kind": conflict.kind, "kind_label": str(KIND_LABELS.get(conflict.kind, conflict.kind)),
        "doctor_id": conflict.doctor_id,
        "doctor": names.get(conflict.doctor_id) or (_("Doctor #%(id)s", id=conflict.doctor_id) if conflict.doctor_id
                                                    else ""),
        "appointment_id": conflict.appointment_id, "message": conflict.message, "zone": zone_name,
        "created_at": conflict.created_at, "resolved_at": conflict.resolved_at, "resolved_by": conflict.resolved_by,
        "resolution": conflict.resolution, "mass": conflict.kind == "mass_cancel",
    }
    if view["mass"]:
        ids = [str(i) for i in kivicare.get("appointments") or []]
        view.update(appointments=ids, count=len(ids), upcoming=kivicare.get("upcoming"),
                    deleted_events=google.get("deleted_events", len(ids)),
                    resolution_label=str(MASS_RESOLUTION_LABELS.get(conflict.resolution, conflict.resolution)))
        return view
    deleted = bool(google.get("deleted"))
    view.update(
        kivicare={**local_span(kivicare.get("start"), kivicare.get("end"), zone), "status": _status_text(kivicare),
                  "deleted": bool(kivicare.get("deleted"))},
        google={**(local_span(google.get("start"), google.get("end"), zone) if not deleted
                   else {"date": "", "time": ""}),
                "status": _status_text(google), "deleted": deleted, "updated": as_datetime(google.get("updated")),
                "updated_local": _local_moment(google.get("updated"), zone)},
        resolution_label=str(RESOLUTION_LABELS.get(conflict.resolution, conflict.resolution)),
    )
    view["changed"] = changed_rows(view["kivicare"], view["google"])
    return view


def _doctor_names() -> dict[int, str]:
    return {d.id: d.name for d in Doctor.select(Doctor.id, Doctor.name)}


def doctor_zones() -> dict[int, tuple]:
    """``{doctor_id: (ZoneInfo, name)}`` for doctors with a valid timezone of their own (one query)."""
    zones = {}
    for doctor_id, name in Doctor.select(Doctor.id, Doctor.timezone).where(Doctor.timezone.is_null(False)).tuples():
        try:
            zones[doctor_id] = (ZoneInfo(name), name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return zones


# ---- views ---------------------------------------------------------------------------------------

@bp.route("/conflicts")
@roles_required("admin", "receptionist", "doctor")
def index():
    user = current_user()
    names = _doctor_names()
    zones = doctor_zones()
    query = visible_conflicts(user)
    open_rows = [conflict_view(c, names, zones) for c in
                 query.where(Conflict.state == "open").order_by(Conflict.created_at.desc(), Conflict.id.desc())]
    resolved = [conflict_view(c, names, zones) for c in
                visible_conflicts(user).where(Conflict.state != "open")
                .order_by(Conflict.resolved_at.desc(), Conflict.id.desc()).limit(RESOLVED_SHOWN)]
    rt = runtime()
    return render_template("conflicts/index.html", open_conflicts=open_rows, resolved=resolved,
                           can_resolve=user.is_admin, own=user.is_doctor, resolved_shown=RESOLVED_SHOWN,
                           has_companion=rt.companion() is not None,
                           rule=rt.cfg.get("sync.conflict_rule"))


@bp.route("/conflicts/<int:conflict_id>/resolve", methods=["POST"])
@admin_required
def resolve(conflict_id: int):
    """Apply the admin's choice (``choice`` = kivicare | google) to both sides, then sync now."""
    from wp_bridge.companion import CompanionError
    from wp_bridge.kivicare import KiviCareError

    from .settings import companion_message, kivicare_message

    conflict = Conflict.get_or_none(Conflict.id == conflict_id)
    if conflict is None:
        abort(404)
    choice = request.form.get("choice", "")
    back = redirect(url_for("conflicts.index"), code=303)
    ids = ", ".join(str(i) for i in (conflict.kivicare or {}).get("appointments") or [])
    what = (_("appointments %(ids)s", ids=ids) if conflict.kind == "mass_cancel"
            else _("appointment %(id)s", id=conflict.appointment_id))
    rt = runtime()
    try:
        rt.bridge.inbound.resolve(conflict_id, choice, by=current_user().name)
    except ValueError as exc:
        flash(str(exc), "error")
        return back
    except CalendarAuthError:
        flash(_("Google no longer accepts this doctor's connection, so the choice could not be applied. Reconnect "
                "the doctor's calendar, then choose again."), "error")
        return back
    except CalendarError as exc:
        log.warning("resolving conflict %s failed at Google: %s", conflict_id, type(exc).__name__)
        flash(_("Google did not answer, so the choice could not be applied. The conflict stays open: try again "
                "in a moment."), "error")
        return back
    except KiviCareError as exc:
        flash(_("KiviCare could not be changed, so the conflict stays open:") + " " + kivicare_message(exc), "error")
        return back
    except CompanionError as exc:
        flash(_("The companion plugin could not be used, so the conflict stays open:") + " " + companion_message(exc),
              "error")
        return back
    rt.request_poll()
    audit.record("conflict_resolved", f"conflict {conflict_id}", f"{choice}: {what}")
    if conflict.kind == "mass_cancel":
        done = (_("The events of %(what)s will be put back in Google.", what=what) if choice == "kivicare" else
                _("Appointments %(ids)s were cancelled in KiviCare; KiviCare e-mails the patients.", ids=ids))
    else:
        done = (_("KiviCare's version of %(what)s was kept; Google's event is put back.", what=what)
                if choice == "kivicare" else
                _("Google's version of %(what)s was kept and applied to KiviCare.", what=what))
    flash(_("Conflict resolved.") + " " + done, "ok")
    reopened = (Conflict.select().where((Conflict.state == "open") & (Conflict.id > conflict_id)
                                        & (Conflict.appointment_id == conflict.appointment_id)
                                        & (Conflict.appointment_id != "")).exists())
    if reopened:
        flash(_("KiviCare could not follow Google for %(what)s (is the companion plugin installed?), so a new "
                "conflict was opened for it.", what=what), "error")
    return back


__all__ = ["bp", "open_count", "visible_conflicts", "conflict_view"]
