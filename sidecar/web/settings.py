"""The settings page (admins): Google, the KiviCare site, the companion plugin, sync, events in Google
(with a live preview), telemedicine services, which appointments sync, alerts, log retention, and the
danger zone; linked to the audit trail.

Each card is its own form and is saved as a whole or not at all. Every field is checked
(``settings_fields``) with a message an admin can act on, then stored with ``Config.set`` (the settings
table, secrets encrypted) in one transaction together with one audit entry per changed setting
(``audit.record``: the setting's name, and old → new except for secrets). A setting fixed by the
environment or config.ini is shown read-only with its source and ignored if posted. A stored secret is
never sent back to the browser: the page shows "••••last4" and an empty field, and leaving that field
empty keeps the stored value ("Remove the stored value" clears it).

The event preview renders a made-up appointment with the engine's own renderer (``settings_preview``):
``POST /settings/preview`` answers JSON for the small script in ``static/app.js``; without JavaScript
the form's "Preview" button shows the same preview on the page, saving nothing.

The companion plugin block holds the one secret an admin must copy out: the shared secret the
WordPress plugin signs with (``companion.secret``). It is generated here ("Generate new secret"),
shown masked, and shown in full only in the answer to an explicit POST ("Show the secret"), which is
never cached. "Check the plugin" asks the plugin's ``/status`` route and remembers the answer
(``state.companion_check``), which the page uses to say which features are on because of it.

The danger zone (``danger_zone``) resets the sync of every doctor or disconnects every doctor, each
behind a confirmation page that lists the doctors concerned and says what will happen.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext

from ..calendars.google import REQUIRED_SCOPES
from ..config import BY_NAME, ConfigError
from ..crypto import SecretError, mask
from ..storage import transaction
from ..storage.models import AuditEntry, Conflict
from . import audit, danger_zone
from .common import runtime
from .security import admin_required, current_user
from .settings_fields import (BY_SECTION, COLOR_NAMES, COLOR_STATUSES, EVENT_FORMATS, GOOGLE_COLORS, PAGE_ORDER,
                              PLACEHOLDERS, SCOPE, SECTIONS, TELEMEDICINE, Field, Invalid, Section, source_text,
                              title_of, v_colors, v_ids)
from .settings_preview import preview as event_preview
from .settings_sites import (COMPANION_SECRET, companion_message, companion_secret_or_none, companion_view,
                             forget_lists, kivicare_message, last_kivicare_check, new_companion_secret, scope_view,
                             telemedicine_view, test_companion, test_kivicare)

log = logging.getLogger(__name__)
bp = Blueprint("settings", __name__, url_prefix="/settings")

EVENTS = "events"
PREVIEW_FIELDS = ("sync.event_template", "sync.title_template", "sync.description_template", "sync.privacy_mode",
                  "sync.status_colors")


# ---- one field, as the template needs it ---------------------------------------------------------

def _display(f: Field, value: Any) -> str:
    if f.widget in ("minutes", "emails"):
        return ", ".join(str(v) for v in value or [])
    if f.widget == "radio":
        # Older values of the event format ("kivicare", "custom") mean the template format.
        choices = {c[0] for c in f.choices}
        if value in choices:
            return value
        return "template" if f.name == "sync.event_template" else f.setting.default
    if value is None:
        return ""
    return str(value)


def field_view(f: Field, submitted: dict | None = None, errors: dict | None = None) -> dict:
    """What the template needs for one field. Secrets carry only their mask, never the value."""
    cfg = runtime().cfg
    setting = f.setting
    fixed = cfg.is_fixed(f.name)
    mine = submitted is not None and not fixed
    view = {"name": f.name, "id": f.html_id, "widget": f.widget, "label": _(setting.label) if setting.label else f.name,
            # Radio choices carry their own explanations; the registry's sentence would repeat them.
            "help": f.help or ("" if f.widget == "radio" else (_(setting.help) if setting.help else "")),
            "fixed": fixed, "source": source_text(f.name) if fixed else "", "bounds": f.bounds,
            "choices": f.choices, "error": (errors or {}).get(f.name, ""), "value": "", "masked": "",
            "unreadable": False}
    if f.widget == "secret":
        try:
            view["masked"] = mask(cfg.get(f.name))
        except SecretError:
            view["unreadable"] = True
        view["clear"] = bool(mine and submitted.get(f.name + ".clear") == "on")
        return view
    if f.widget == "colors":
        chosen = submitted.get(f.name) if mine else (cfg.get(f.name) or {})
        view["colors"] = [{"status": status, "label": label, "id": f"{f.html_id}-{status}",
                           "value": str(chosen.get(status, "") or "")} for status, label in COLOR_STATUSES]
        view["options"] = GOOGLE_COLORS
        return view
    if mine and f.name in submitted:
        view["value"] = submitted[f.name]
    else:
        view["value"] = _display(f, cfg.get(f.name))
    if f.widget == "checkbox":
        view["checked"] = (submitted.get(f.name) == "on") if mine else bool(cfg.get(f.name))
    return view


def section_view(section: Section, submitted: dict | None = None, errors: dict | None = None) -> dict:
    """One card: ``{"key", "title", "intro", "fields": [field_view], "has_errors", "all_fixed"}``."""
    fields = [field_view(f, submitted, errors) for f in section.present()]
    return {"key": section.key, "title": section.title, "intro": section.intro, "fields": fields,
            "has_errors": bool(errors), "all_fixed": all(f["fixed"] for f in fields)}


# ---- reading, checking and storing a submitted section -----------------------------------------------

def _submitted(section: Section, form) -> dict:
    """The raw form values of ``section``: text per field, a dict per status for colours, and
    ``<name>.clear`` for the "Remove the stored value" box of a secret."""
    raw: dict[str, Any] = {}
    for f in section.present():
        if f.widget == "colors":
            raw[f.name] = {status: form.get(f"{f.name}.{status}", "") for status, _label in COLOR_STATUSES}
        else:
            raw[f.name] = form.get(f.name, "")
        if f.widget == "secret":
            raw[f.name + ".clear"] = form.get(f.name + ".clear", "")
    return raw


def check_section(section: Section, submitted: dict) -> tuple[dict[str, Any], dict[str, str]]:
    """``(values, errors)``: the typed values to store (fixed settings and untouched secrets left out),
    or the problems by setting name. Nothing is stored here."""
    cfg = runtime().cfg
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for f in section.present():
        if cfg.is_fixed(f.name):
            continue  # read-only on the page; a forged value is ignored
        raw = submitted[f.name]
        if f.widget == "checkbox":
            values[f.name] = raw == "on"
            continue
        if f.widget == "secret":
            clear = submitted.get(f.name + ".clear") == "on"
            if clear and raw.strip():
                errors[f.name] = _("Either type a new value or remove the stored one, not both.")
            elif clear:
                values[f.name] = ""
            elif raw.strip():
                try:
                    values[f.name] = f.validate(raw) if f.validate else raw.strip()
                except Invalid as exc:
                    errors[f.name] = str(exc)
            continue  # empty keeps the stored secret
        try:
            if f.widget == "colors":
                values[f.name] = v_colors(raw, cfg.get(f.name) or {})
            else:
                values[f.name] = f.validate(raw) if f.validate else raw.strip()
        except Invalid as exc:
            errors[f.name] = str(exc)
    if not errors and section.check is not None:
        errors.update(section.check(values, lambda name: values[name] if name in values else cfg.get(name)))
    return values, errors


def store(values: dict[str, Any]) -> dict[str, str]:
    """Store ``values`` in one transaction, with one audit entry per setting whose value changes.

    Returns {} when saved, else ``{name: message}`` and nothing is stored (the transaction rolls back).
    """
    cfg = runtime().cfg
    name = ""
    try:
        with transaction():
            for name, value in values.items():
                try:
                    old = cfg.get(name)
                except SecretError:  # a secret the current key file cannot read: replaced, so "changed"
                    old = "(unreadable)"
                cfg.set(name, value)
                if old != value:
                    audit.record("setting_changed", name,
                                 audit.describe_change(old, value, secret=BY_NAME[name].secret), strict=True)
    except ConfigError as exc:
        return {name: str(exc)}
    return {}


# ---- the event preview ------------------------------------------------------------------------------

def events_preview(form=None) -> tuple[dict, dict[str, str]]:
    """``(preview, errors)`` for the events card: the submitted values where given (fixed ones and, without
    a form, all of them from the saved settings). The preview is drawn even with unknown placeholders
    (left visible, as the engine leaves them); ``errors`` says what saving would refuse."""
    cfg = runtime().cfg
    section = BY_SECTION[EVENTS]
    given = form is not None
    raw = _submitted(section, form) if given else {}
    errors: dict[str, str] = {}

    def pick(name: str, default: Any = "") -> Any:
        if name not in BY_NAME:
            return default
        if not given or cfg.is_fixed(name):
            return cfg.get(name)
        return raw.get(name, "")

    fmt = pick("sync.event_template", "template")
    if fmt not in {c[0] for c in EVENT_FORMATS}:
        fmt = "template"
    texts = {}
    for name in ("sync.title_template", "sync.description_template"):
        texts[name] = str(pick(name)).replace("\r\n", "\n")
        if given and not cfg.is_fixed(name):
            f = next(f for f in section.fields if f.name == name)
            try:
                f.validate(texts[name])
            except Invalid as exc:
                errors[name] = str(exc)
    privacy = pick("sync.privacy_mode", False)
    privacy = (privacy == "on") if isinstance(privacy, str) else bool(privacy)
    colors = pick("sync.status_colors", {})
    if given and "sync.status_colors" in BY_NAME and not cfg.is_fixed("sync.status_colors"):
        try:
            colors = v_colors(colors, cfg.get("sync.status_colors") or {})
        except Invalid as exc:
            errors["sync.status_colors"] = str(exc)
            colors = cfg.get("sync.status_colors") or {}
    shown = event_preview(fmt=fmt, title_template=texts["sync.title_template"],
                          description_template=texts["sync.description_template"], privacy=privacy, colors=colors)
    return shown, errors


# ---- the page -----------------------------------------------------------------------------------------

def _redirect_warning(uri: str) -> str:
    """Google accepts plain-http redirect URIs only for localhost; say so before the admin finds out."""
    parsed = urlparse(uri)
    if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
        return _("Google refuses redirect URIs that are not https (except localhost). Serve the sidecar over "
                 "https and set [web] public_url to the https address.")
    return ""


def _danger_summary() -> dict:
    return {"reset": len(danger_zone.affected("reset")), "disconnect": len(danger_zone.affected("disconnect"))}


def _render(*, section_key: str = "", submitted: dict | None = None, errors: dict | None = None, status: int = 200,
            companion_revealed: str | None = None,
            companion_generated: bool = False, preview: tuple[dict, dict] | None = None,
            preview_only: bool = False, scope_submitted: dict | None = None):
    rt = runtime()
    sections = {s.key: section_view(s, submitted if s.key == section_key else None,
                                    errors if s.key == section_key else None) for s in SECTIONS}
    shown_preview = preview[0] if preview else events_preview()[0]
    context = {
        "order": PAGE_ORDER, "sections": sections, "nav": [(key, title_of(key)) for key in PAGE_ORDER],
        "redirect_uri": rt.cfg.redirect_uri,
        "public_url": rt.cfg.get("web.public_url"),
        "public_url_source": (source_text("web.public_url") if rt.cfg.is_fixed("web.public_url")
                              else _("the default: set [web] public_url in config.ini")),
        "redirect_warning": _redirect_warning(rt.cfg.redirect_uri),
        "scopes": REQUIRED_SCOPES,
        "placeholders": PLACEHOLDERS,
        "telemedicine": telemedicine_view(),
        "telemedicine_error": (errors or {}).get(TELEMEDICINE, "") if section_key == "telemedicine" else "",
        "scope": scope_view(scope_submitted, errors if section_key == "scope" else None),
        "scope_has_errors": bool(section_key == "scope" and errors),
        "kivicare_test": last_kivicare_check(),
        "companion": companion_view(companion_revealed, companion_generated),
        "open_conflicts": Conflict.select().where(Conflict.state == "open").count(),
        "event_preview": shown_preview, "preview_only": preview_only, "color_names": COLOR_NAMES,
        "danger": _danger_summary(),
        "audit_count": AuditEntry.select().count(),
    }
    return render_template("settings/index.html", **context), status


@bp.route("", methods=["GET"])
@admin_required
def index():
    return _render()


@bp.route("", methods=["POST"])
@admin_required
def save():
    """Save one card (``section`` = a key of ``settings_fields.SECTIONS``, telemedicine or scope): all fields
    or none. In the events card, ``action=preview`` shows the preview of the submitted values instead."""
    key = request.form.get("section", "")
    if key == "telemedicine":
        return _save_telemedicine()
    if key == "scope":
        return _save_scope()
    section = BY_SECTION.get(key)
    if section is None:
        flash(_("Unknown settings section."), "error")
        return redirect(url_for("settings.index"))
    submitted = _submitted(section, request.form)
    values, errors = check_section(section, submitted)
    if key == EVENTS and request.form.get("action") == "preview":
        shown, _problems = events_preview(request.form)
        return _render(section_key=key, submitted=submitted, errors=errors, preview=(shown, errors),
                       preview_only=True, status=400 if errors else 200)
    if not errors:
        errors = store(values)
    if errors:
        preview = events_preview(request.form) if key == EVENTS else None
        return _render(section_key=key, submitted=submitted, errors=errors, preview=preview, status=400)
    runtime().request_poll()
    flash(_("%(section)s settings saved.", section=section.title), "ok")
    return redirect(url_for("settings.index") + f"#{section.key}")


def _save_telemedicine():
    cfg = runtime().cfg
    if cfg.is_fixed(TELEMEDICINE):
        flash(_("The telemedicine services are %(source)s and cannot be changed here.",
                source=source_text(TELEMEDICINE)), "error")
        return redirect(url_for("settings.index") + "#telemedicine")
    try:
        chosen = v_ids(request.form.getlist("service"))
    except Invalid:
        return _render(section_key="telemedicine", errors={TELEMEDICINE: _("Choose services from the list.")},
                       status=400)
    errors = store({TELEMEDICINE: chosen})
    if errors:
        return _render(section_key="telemedicine", errors=errors, status=400)
    runtime().request_poll()
    flash(_("Telemedicine services saved."), "ok")
    return redirect(url_for("settings.index") + "#telemedicine")


def _save_scope():
    """Which services and clinics sync: "all" (stored as an empty list) or at least one ticked (or typed) id."""
    cfg = runtime().cfg
    submitted: dict[str, dict] = {}
    values: dict[str, list[int]] = {}
    errors: dict[str, str] = {}
    for name, prefix in SCOPE:
        if name not in BY_NAME or cfg.is_fixed(name):
            continue
        mode = request.form.get(f"{prefix}_mode", "")
        ticked = request.form.getlist(prefix)
        text = request.form.get(f"{prefix}_ids", "")
        submitted[name] = {"mode": mode, "ids": [int(t) for t in ticked if t.isdigit() and len(t) <= 9],
                           "text": text}
        if mode == "all":
            values[name] = []
            continue
        if mode != "chosen":
            errors[name] = _("Choose one of the options.")
            continue
        try:
            ids = sorted(set(v_ids(ticked)) | set(v_ids(text)))
        except Invalid as exc:
            errors[name] = str(exc)
            continue
        submitted[name]["ids"] = ids
        if not ids:
            errors[name] = (_("Tick at least one service, or choose all services.") if prefix == "service"
                            else _("Tick at least one clinic, or choose all clinics."))
            continue
        values[name] = ids
    if not errors:
        errors = store(values)
    if errors:
        return _render(section_key="scope", errors=errors, scope_submitted=submitted, status=400)
    runtime().request_poll()
    flash(_("Which appointments sync: saved."), "ok")
    return redirect(url_for("settings.index") + "#scope")


@bp.route("/preview", methods=["POST"])
@admin_required
def preview():
    """JSON for the live preview (``static/app.js``): the events card's form in, the sample event out:
    ``{"preview": {"title", "description", "location", "when", "status", "color_id", "color_name"},
    "errors": {setting: message}}``. Saves nothing."""
    shown, errors = events_preview(request.form)
    return {"preview": shown, "errors": errors}


# ---- the companion plugin ------------------------------------------------------------------------

@bp.route("/companion/secret", methods=["POST"])
@admin_required
def companion_generate():
    """Generate a new shared secret and show it once. The plugin must get it too: until then its hints,
    sign-ins and the sidecar's calls to it are refused (and every WordPress sign-in here ends)."""
    cfg = runtime().cfg
    if cfg.is_fixed(COMPANION_SECRET):
        flash(_("The companion secret is %(source)s and cannot be changed here.",
                source=source_text(COMPANION_SECRET)), "error")
        return redirect(url_for("settings.index") + "#companion")
    secret = new_companion_secret()
    try:
        with transaction():
            cfg.set(COMPANION_SECRET, secret)
            audit.record("secret_generated", COMPANION_SECRET, strict=True)
    except ConfigError as exc:
        flash(str(exc), "error")
        return redirect(url_for("settings.index") + "#companion")
    runtime().clear_state("companion_check")  # the plugin still has the old secret
    log.info("a new companion secret was generated by %s", current_user().name)
    return _render(companion_revealed=secret, companion_generated=True)


@bp.route("/companion/reveal", methods=["POST"])
@admin_required
def companion_reveal():
    """Show the stored secret in full, in this answer only (not cached, never in a URL)."""
    secret = companion_secret_or_none()
    if not secret:
        flash(_("There is no readable secret to show. Generate a new one."), "error")
        return redirect(url_for("settings.index") + "#companion")
    if runtime().cfg.is_fixed(COMPANION_SECRET):
        flash(_("The companion secret is %(source)s; copy it from there.", source=source_text(COMPANION_SECRET)),
              "error")
        return redirect(url_for("settings.index") + "#companion")
    audit.record("secret_shown", COMPANION_SECRET)
    log.info("the companion secret was shown to %s", current_user().name)
    return _render(companion_revealed=secret)


@bp.route("/companion/test", methods=["POST"])
@admin_required
def companion_test():
    """Ask the plugin whether it answers, and show which features are on because of it."""
    test_companion()
    return redirect(url_for("settings.index") + "#companion", code=303)


@bp.route("/kivicare/test", methods=["POST"])
@admin_required
def kivicare_test():
    """Test the saved KiviCare settings and show the result (and the detected add-ons) on the page."""
    forget_lists()  # read the services and clinics again too
    test_kivicare()  # kept as state.kivicare_check, which the page shows
    return _render()


# ---- the danger zone ----------------------------------------------------------------------------------

DANGER_ACTIONS = ("reset", "disconnect")


def _confirm_page(action: str, *, error: str = "", status: int = 200, mode: str = "keep"):
    doctors = danger_zone.affected(action)
    return render_template("settings/danger_confirm.html", action=action, doctors=doctors, error=error, mode=mode,
                           fingerprint=danger_zone.fingerprint(doctors)), status


@bp.route("/danger/<action>", methods=["GET"])
@admin_required
def danger_confirm(action: str):
    """The confirmation step: what "reset sync for all doctors" or "disconnect all" will do, and to whom."""
    if action not in DANGER_ACTIONS:
        abort(404)
    return _confirm_page(action)


@bp.route("/danger/<action>", methods=["POST"])
@admin_required
def danger_run(action: str):
    """Run a confirmed danger-zone action for the doctors the confirmation page listed (still the same)."""
    if action not in DANGER_ACTIONS:
        abort(404)
    mode = request.form.get("events", "keep")
    if action == "reset" and mode not in ("keep", "remove"):
        return _confirm_page(action, error=_("Choose whether to keep the events in Google or remove them."),
                             status=400)
    if request.form.get("confirm") != "yes":
        return _confirm_page(action, error=_("Nothing was done: tick the box to confirm."), status=400, mode=mode)
    doctors = danger_zone.affected(action)
    if not doctors:
        flash(_("No doctor is connected, so there was nothing to do."), "ok")
        return redirect(url_for("settings.index") + "#danger", code=303)
    if request.form.get("fingerprint") != danger_zone.fingerprint(doctors):
        return _confirm_page(action, status=409, mode=mode,
                             error=_("The list of doctors changed since this page was opened (someone connected or "
                                     "disconnected). Nothing was done: check the list below and confirm again."))
    rt = runtime()
    if action == "reset":
        outcomes = danger_zone.reset_all(rt, doctors, remove_events=mode == "remove")
        done = [o for o in outcomes if o.ok]
        found = sum(o.found for o in done)
        if done:
            flash(ngettext("Sync reset for %(num)d doctor", "Sync reset for %(num)d doctors", len(done))
                  + " " + ngettext("(%(num)d event found in Google).", "(%(num)d events found in Google).", found)
                  + " " + (_("The events were kept and linked again.") if mode == "keep" else
                           _("The events were removed from Google and will be created again."))
                  + " " + _("Each doctor's sync now waits until its preview is confirmed on the doctor's page."),
                  "ok")
    else:
        outcomes = danger_zone.disconnect_all(rt, doctors)
        done = [o for o in outcomes if o.ok]
        if done:
            flash(ngettext("%(num)d doctor disconnected.", "%(num)d doctors disconnected.", len(done)) + " "
                  + _("Events already in their calendars stay there. To sync again, each doctor connects again "
                      "(send them a Connect link)."), "ok")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        flash((_("Not reset:") if action == "reset" else _("Not disconnected:")) + " "
              + "; ".join(f"{o.doctor.name}: {o.message}" for o in failed) + ".", "error")
    return redirect(url_for("settings.index") + "#danger", code=303)


# Used by other blueprints (conflicts, connect) for their own messages.
__all__ = ["bp", "kivicare_message", "companion_message", "field_view", "check_section", "store", "events_preview"]
