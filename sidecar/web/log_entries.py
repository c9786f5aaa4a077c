"""How a sync log entry reads to a person: names for actions, directions and outcomes, and for a failure
the next step in plain words (reconnect Google, check the KiviCare application password, fix the
appointment in KiviCare, nothing to do because it retries by itself, ...).

The sync log (``SyncLog``, written by ``wp_bridge.synclog.log_sync``) holds ids, the action, the
outcome and the error's class name, never patient data; this module only turns those codes into
words. Error class names are the ones the edges raise: ``sidecar.calendars.base`` (Google),
``wp_bridge.kivicare`` (KiviCare REST), ``wp_bridge.companion`` (the companion plugin) and
``wp_bridge.models.BadAppointment`` (a KiviCare row that cannot be read).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..storage.models import SyncLog

# SyncLog.direction values (wp_bridge.synclog) -> the key used in URLs and JSON, and the words.
DIRECTIONS = {"kivicare→google": ("to_google", _l("KiviCare → Google")),
              "google→kivicare": ("to_kivicare", _l("Google → KiviCare"))}
DIRECTION_BY_KEY = {key: raw for raw, (key, _label) in DIRECTIONS.items()}

OUTCOMES = {"ok": _l("OK"), "retry": _l("Will retry"), "error": _l("Failed"), "skipped": _l("Skipped")}

# Every code the engine writes in SyncLog.action, and its words (tests/web/test_log_page.py reads the code that
# calls ``log_sync`` and fails when a code has no words here). Each label is different, so the log's Action
# filter never lists the same words twice. Job kinds (push, conference, fetch, meet_link, pull, busy_push)
# appear only when a job fails or is retried, hence "-ing" words: the work that did not finish.
ACTIONS = {
    # KiviCare -> Google: event writes (wp_bridge.bridge), counted in Connection.synced_count
    "create": _l("Event created"),
    "update": _l("Event updated"),
    "delete": _l("Event deleted"),
    "moved-calendar": _l("Event moved to the new calendar"),
    "push": _l("Sending the appointment to Google"),
    "conference": _l("Asking Google for a Meet link"),
    "meet-link": _l("Meet link from Google"),
    # KiviCare side (wp_bridge.bridge)
    "fetch": _l("Reading the appointment from KiviCare"),
    "read-appointment": _l("Appointment could not be read"),
    "deleted-in-kivicare": _l("Appointment deleted in KiviCare"),
    "meet_link": _l("Sending the Meet link to KiviCare"),
    "meet-link-to-kivicare": _l("Meet link saved in KiviCare"),
    "mass-delete-guard": _l("Mass deletion held"),
    # Google -> KiviCare (wp_bridge.inbound)
    "pull": _l("Reading changes from Google"),
    "cancel": _l("Appointment cancelled from Google"),
    "reschedule": _l("Appointment moved from Google"),
    "revert-google-move": _l("Move in Google undone"),
    "revert-google-edit": _l("Edit in Google undone"),
    "conflict-kivicare-wins": _l("Both changed: KiviCare's version kept"),
    "conflict": _l("Conflict opened"),
    "busy-blocks": _l("Busy times sent to KiviCare"),
    "busy_push": _l("Sending busy times to KiviCare"),
    # the connection's life (wp_bridge.bridge, wp_bridge.preview) and alerts (wp_bridge.alerts)
    "connect": _l("Calendar connected"),
    "confirm-first-sync": _l("First sync confirmed"),
    "reset-sync": _l("Sync reset"),
    "disconnect": _l("Calendar disconnected"),
    "doctor-removed": _l("Doctor removed from KiviCare"),
    "alert": _l("Alert e-mail"),
}

# What the dashboard counts as "synced" (its figures, per-doctor tallies and chart): a change written to the
# other side. To Google the same writes as ``Connection.synced_count`` (wp_bridge.bridge); to KiviCare the
# moves, cancellations and busy times from Google. Reverts only plan an update (counted when it is written).
WRITES_TO_GOOGLE = frozenset({"create", "update", "delete", "moved-calendar"})
WRITES_TO_KIVICARE = frozenset({"reschedule", "cancel", "busy-blocks"})
SYNC_WRITES = WRITES_TO_GOOGLE | WRITES_TO_KIVICARE
# Entries about a connection or an e-mail, not about appointments: never counted as synced or failed.
NOT_SYNC_WORK = frozenset({"connect", "confirm-first-sync", "reset-sync", "disconnect", "doctor-removed", "alert"})


def direction_label(raw: str) -> str:
    """``"KiviCare → Google"`` for ``"kivicare→google"``; unknown values come back as they are."""
    found = DIRECTIONS.get(raw)
    return str(found[1]) if found else raw


def outcome_label(outcome: str) -> str:
    """``"Failed"`` for ``"error"``, ``"Will retry"`` for ``"retry"``...; unknown values as they are."""
    return str(OUTCOMES.get(outcome, outcome))


def action_label(action: str) -> str:
    """Words for an action code; an unknown code (a newer engine) is shown as it is."""
    return str(ACTIONS.get(action, action))


# ---- the next step for a failure -------------------------------------------------------------------

@dataclass(frozen=True)
class NextStep:
    """What a person does about a log entry. ``text``: one plain sentence. ``place``: where it is done
    ("reconnect", "kivicare_settings", "companion_settings", "alerts_settings", "conflicts", "doctor" or "");
    the page turns a place into a link only for someone allowed to act there."""

    text: str
    place: str = ""
    retries_by_itself: bool = False


_RETRIES = {"CalendarUnavailable", "CalendarRateLimited", "CalendarChanged", "CalendarSyncTokenExpired",
            "KiviCareUnavailable", "CompanionUnavailable", "CompanionBadResponse"}
_BAD_APPOINTMENT = {"BadAppointment", "KiviCareRequestError"}
_COMPANION_MISSING = {"CompanionNotInstalled", "CompanionNotConfigured"}


def next_step(action: str, outcome: str, error_class: str = "") -> NextStep | None:
    """The next step for one entry, or None when there is nothing to say (``ok``, most ``skipped``).

    Decided from the error class first (it says which side failed and how), then from the action."""
    if outcome not in ("error", "retry", "skipped"):
        return None
    cls = error_class or ""
    if cls == "CalendarAuthError":
        return NextStep(_("Google refused this doctor's access. Reconnect the doctor's Google Calendar; the "
                          "waiting changes are kept and sent afterwards."), "reconnect")
    if cls == "CalendarNotFound":
        return NextStep(_("Google no longer finds the doctor's calendar (deleted, or no longer shared). Choose "
                          "the doctor's calendar again."), "doctor")
    if cls == "KiviCareAuthError":
        return NextStep(_("WordPress refused the sidecar's user. Check the KiviCare user and application "
                          "password in the settings."), "kivicare_settings")
    if cls in ("KiviCareBadResponse", "KiviCareEncrypted"):
        return NextStep(_("KiviCare's answer could not be read. Check the KiviCare site address, and give the "
                          "sidecar a WordPress user nobody signs in with."), "kivicare_settings")
    if cls == "KiviCareNotFound":
        return NextStep(_("The appointment no longer exists in KiviCare: nothing to do."))
    if cls == "CompanionPluginNotConfigured":
        return NextStep(_("The companion plugin has no secret yet: paste the sidecar's secret into the plugin's "
                          "settings in WordPress."), "companion_settings")
    if cls in _COMPANION_MISSING or (action == "meet-link-to-kivicare" and outcome == "skipped"):
        return NextStep(_("Install and set up the companion plugin in WordPress, so KiviCare can receive this "
                          "change."), "companion_settings")
    if cls == "CompanionRefused":
        if action == "reschedule":
            return NextStep(_("KiviCare refused the move (the time is taken, or the patient checked in), so the "
                              "event was put back. Move the appointment in KiviCare if the new time is "
                              "needed."))
        return NextStep(_("The companion plugin refused the request. Check that both sides have the same "
                          "secret and that the two servers' clocks agree."), "companion_settings")
    if cls in _RETRIES or (outcome == "retry" and not cls.startswith(("KiviCareRequest", "BadAppointment"))):
        return NextStep(_("Nothing to do: the sidecar tries again by itself."), retries_by_itself=True)
    if cls in _BAD_APPOINTMENT or action in ("read-appointment", "fetch"):
        return NextStep(_("Fix the appointment in KiviCare: open it, check its date, time, doctor and service, "
                          "and save it. The next sync picks it up."))
    if cls == "CalendarRequestError":
        return NextStep(_("Google refused the change. Check the appointment in KiviCare; if it keeps failing, "
                          "reset the doctor's sync."), "doctor")
    if action in ("conflict", "mass-delete-guard"):
        return NextStep(_("Choose which version to keep on the Conflicts page."), "conflicts")
    if action == "meet-link":
        return NextStep(_("Nothing to do: the sidecar asks Google for a Meet link again at the next change."),
                        retries_by_itself=True)
    if action == "alert":
        return NextStep(_("The alert e-mail was not sent. Check the alert settings and the companion plugin's "
                          "mail relay."), "alerts_settings")
    if outcome == "skipped":
        return None
    return NextStep(_("Unexpected error. The change is tried again a few times; if it keeps failing, reset the "
                      "doctor's sync and report the time of this entry."), "doctor")


def step_link(place: str, entry: SyncLog, user) -> tuple[str, str] | None:
    """``(label, url)`` of the page where ``user`` can take a next step, or None if they cannot act there."""
    if user is None:  # a page opened through a Connect link: nobody signed in
        return None
    if place == "conflicts":
        return _("Open Conflicts"), url_for("conflicts.index")
    if user.is_doctor:
        if place in ("reconnect", "doctor") and entry.doctor_id == user.doctor_id:
            return _("Open my calendar page"), url_for("connect.me")
        return None
    if not user.is_admin:
        return None
    if place in ("reconnect", "doctor") and entry.doctor_id:
        return _("Open the doctor's page"), url_for("connect.doctor_page", doctor_id=entry.doctor_id)
    anchors = {"kivicare_settings": "kivicare", "companion_settings": "companion", "alerts_settings": "alerts"}
    if place in anchors:
        return _("Open the settings"), url_for("settings.index") + "#" + anchors[place]
    return None


def entry_view(entry: SyncLog, names: dict[int, str], user) -> dict:
    """One entry as the log page, the dashboard and a doctor's page show it: words for the codes, the next
    step and, when ``user`` can act on it, its link. ``names``: doctor names by id."""
    step = next_step(entry.action, entry.outcome, entry.error_class)
    return {"id": entry.id, "at": entry.at, "doctor_id": entry.doctor_id,
            "doctor": names.get(entry.doctor_id) or (f"#{entry.doctor_id}" if entry.doctor_id else ""),
            "appointment_id": entry.appointment_id, "direction": entry.direction,
            "direction_label": direction_label(entry.direction),
            "action": entry.action, "action_label": action_label(entry.action), "outcome": entry.outcome,
            "outcome_label": outcome_label(entry.outcome), "error_class": entry.error_class,
            "message": entry.message, "next_step": step.text if step else "",
            "retries_by_itself": bool(step and step.retries_by_itself),
            "link": step_link(step.place, entry, user) if step and step.place else None}


__all__ = ["ACTIONS", "DIRECTIONS", "DIRECTION_BY_KEY", "NOT_SYNC_WORK", "OUTCOMES", "SYNC_WRITES",
           "WRITES_TO_GOOGLE", "WRITES_TO_KIVICARE", "NextStep", "action_label", "direction_label", "entry_view", "next_step",
           "outcome_label"]
