"""The settings page (admins): Google, the KiviCare site, sync, two-way sync, the companion plugin, alerts,
telemedicine services.

Each section is its own form and is saved as a whole or not at all. Every field is checked here
with a message an admin can act on, then stored with ``Config.set`` (the settings table, secrets
encrypted). A setting fixed by the environment or config.ini is shown read-only with its source
and ignored if posted. A stored secret is never sent back to the browser: the page shows
"••••last4" and an empty field, and leaving that field empty keeps the stored value.

The companion plugin block holds the one secret an admin must copy out: the shared secret the
WordPress plugin signs with (``companion.secret``). It is generated here ("Generate new secret"),
shown masked, and shown in full only in the answer to an explicit POST ("Show the secret"), which is
never cached. "Check the plugin" asks the plugin's ``/status`` route and remembers the answer
(``state.companion_check``), which the page uses to say which features are on because of it.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from ..calendars.google import REQUIRED_SCOPES
from ..config import BY_NAME, ConfigError
from ..crypto import SecretError, mask
from ..storage import transaction
from ..storage.models import Conflict, utcnow
from .common import as_datetime, runtime
from .security import admin_required, current_user

log = logging.getLogger(__name__)
bp = Blueprint("settings", __name__, url_prefix="/settings")

try:  # the placeholders the engine understands (wp_bridge.event_text)
    from wp_bridge.event_text import PLACEHOLDERS
except ImportError:  # pragma: no cover - the engine ships with the sidecar
    PLACEHOLDERS = ("appointment_date", "appointment_time", "service_name", "clinic_name", "doctor_name")

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
EVENT_FORMATS = (
    ("template", "Use the title and description below",
     "Starts as KiviCare's own Google event template, which shows no patient name."),
    ("detailed", "Detailed",
     "Title \"Patient: name\"; description with service, doctor and status; location is the clinic."),
)
MAX_REMINDERS = 5
MAX_REMINDER_MINUTES = 40320  # Google's limit: four weeks


class Invalid(ValueError):
    """A submitted value cannot be used; the message is shown next to the field."""


# ---- validators: text from the form -> typed value, or Invalid -----------------------------------

def v_text(max_len: int = 255, required: bool = False) -> Callable[[str], str]:
    def check(raw: str) -> str:
        value = raw.strip()
        if required and not value:
            raise Invalid("This cannot be empty.")
        if len(value) > max_len:
            raise Invalid(f"Use at most {max_len} characters.")
        if any(ch in value for ch in "\r\n\t"):
            raise Invalid("Use a single line without tabs.")
        return value
    return check


def v_site_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value:
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise Invalid("Enter the full address starting with https:// (or http://), e.g. https://clinic.example.com.")
    if parsed.query or parsed.fragment or " " in value:
        raise Invalid("Enter only the site's address, without ?, # or spaces.")
    if "/wp-json" in parsed.path:
        raise Invalid("Enter the site's address without /wp-json (the sidecar adds it).")
    return value


def v_int(low: int, high: int) -> Callable[[str], int]:
    def check(raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[0-9]{1,9}", text):
            raise Invalid(f"Enter a whole number from {low} to {high}.")
        value = int(text)
        if not low <= value <= high:
            raise Invalid(f"Enter a whole number from {low} to {high}.")
        return value
    return check


def v_minutes(raw: str) -> list[int]:
    parts = [p.strip() for p in re.split(r"[,\s]+", raw.strip()) if p.strip()]
    if len(parts) > MAX_REMINDERS:
        raise Invalid(f"Google allows at most {MAX_REMINDERS} reminders.")
    values = []
    for part in parts:
        if not part.isdigit() or int(part) > MAX_REMINDER_MINUTES:
            raise Invalid(f"Use whole numbers of minutes from 0 to {MAX_REMINDER_MINUTES}, separated by commas.")
        values.append(int(part))
    return sorted(set(values))


def v_template(max_len: int, required: bool) -> Callable[[str], str]:
    def check(raw: str) -> str:
        value = raw.replace("\r\n", "\n").strip()
        if required and not value:
            raise Invalid("This cannot be empty.")
        if len(value) > max_len:
            raise Invalid(f"Use at most {max_len} characters.")
        unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(value)} - set(PLACEHOLDERS))
        if unknown:
            raise Invalid("Unknown placeholder " + ", ".join("{{%s}}" % u for u in unknown)
                          + ". Use only the placeholders listed.")
        return value
    return check


_EMAIL = re.compile(r"^[^@\s,;<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")
MAX_RECIPIENTS = 20


def v_emails(raw: str) -> list[str]:
    """Comma-separated e-mail addresses (spaces, semicolons and new lines also separate); duplicates dropped."""
    parts = [p.strip() for p in re.split(r"[,;\s]+", raw.strip()) if p.strip()]
    bad = [p for p in parts if len(p) > 254 or not _EMAIL.match(p)]
    if bad:
        raise Invalid("Not an e-mail address: " + ", ".join(bad[:3]) + ". Separate addresses with commas.")
    unique = list(dict.fromkeys(p.lower() for p in parts))
    if len(unique) > MAX_RECIPIENTS:
        raise Invalid(f"Use at most {MAX_RECIPIENTS} addresses.")
    return unique


def v_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(raw: str) -> str:
        if raw not in choices:
            raise Invalid("Choose one of the options.")
        return raw
    return check


# ---- the page's fields ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One setting on the page. ``widget``: text, url, secret, number, textarea, radio, checkbox, minutes."""

    name: str
    widget: str
    validate: Callable[[str], Any] | None = None
    choices: tuple = ()
    help: str = ""  # overrides the registry's help

    @property
    def setting(self):
        return BY_NAME[self.name]

    @property
    def html_id(self) -> str:
        return "f-" + self.name.replace(".", "-").replace("_", "-")


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    intro: str
    fields: tuple[Field, ...] = field(default_factory=tuple)


SECTIONS = (
    Section("google", "Google", "The OAuth client the doctors' Google accounts are connected through.", (
        Field("google.client_id", "text", v_text(255)),
        Field("google.client_secret", "secret", v_text(255)),
        Field("google.app_name", "text", v_text(100, required=True)),
    )),
    Section("kivicare", "KiviCare site", "Where KiviCare runs and the WordPress user the sidecar reads it with.", (
        Field("kivicare.base_url", "url", v_site_url),
        Field("kivicare.username", "text", v_text(150)),
        Field("kivicare.app_password", "secret", v_text(255)),
    )),
    Section("sync", "Sync", "How often and how far ahead appointments are copied, and what the events say.", (
        Field("bridge.poll_seconds", "number", v_int(5, 3600)),
        Field("bridge.horizon_days", "number", v_int(1, 365)),
        Field("sync.event_template", "radio", v_choice(tuple(c[0] for c in EVENT_FORMATS)), EVENT_FORMATS),
        Field("sync.title_template", "text", v_template(300, required=True)),
        Field("sync.description_template", "textarea", v_template(4000, required=False)),
        Field("sync.invite_patients", "checkbox"),
        Field("sync.reminder_minutes", "minutes", v_minutes,
              help="Minutes before the appointment, separated by commas (e.g. 10, 60). Empty: the calendar's "
                   "default reminders. At most 5."),
    )),
    Section("companion", "Companion plugin",
            "The KiviCare Sidecar Bridge WordPress plugin makes KiviCare and the sidecar talk to each other "
            "directly. The sidecar works without it; with it, more works.", (
                Field("companion.enabled", "checkbox",
                      help="Send Meet links, busy times, moves and alert e-mails to the plugin when it answers. "
                           "Hints and sign-ins from the plugin are accepted whenever the secret matches."),
            )),
)
# The meanings are those of the registry's help texts (sidecar/config.py), in plain words.
DIRECTIONS = (
    ("both", "Both ways",
     "Appointments go to Google, and a doctor's moves and deletions of them in Google change KiviCare (by the "
     "rule below). Other edits of the events (title, description) are put back to KiviCare's version."),
    ("kivicare_to_google", "KiviCare → Google only",
     "KiviCare is never changed from Google: edits of the clinic's events in Google, moves and deletions included, "
     "are put back. Busy times in Google still block booking."),
    ("google_to_kivicare", "Google → KiviCare only",
     "Only moves, deletions and busy times flow from Google to KiviCare; changes made in KiviCare are not sent "
     "to Google."),
)
CONFLICT_RULES = (
    ("kivicare", "KiviCare wins",
     "When an appointment changed in KiviCare and in Google between two syncs, KiviCare's version is kept and the "
     "event in Google is put back."),
    ("google", "Google wins", "Google's version is applied to KiviCare."),
    ("recent", "The most recent change wins",
     "Google's time of the edit is compared with the time the sidecar saw KiviCare's change."),
    ("manual", "The admin chooses",
     "Nothing changes on either side until an admin chooses a version on the Conflicts page."),
)
PUSH_OVER_HTTP = "google.push_over_http"

_TWO_WAY = Section("two_way", "Two-way sync",
            "What happens when a doctor changes a clinic appointment in Google Calendar.", (
                Field("sync.direction", "radio", v_choice(tuple(c[0] for c in DIRECTIONS)), DIRECTIONS),
                Field("sync.conflict_rule", "radio", v_choice(tuple(c[0] for c in CONFLICT_RULES)), CONFLICT_RULES),
                Field("sync.mass_cancel_share", "number", v_int(1, 100),
                      help="If one sync from Google would cancel more than this share (in %) of a doctor's upcoming "
                           "appointments at once, and at least 3, nothing is cancelled and the admin is asked on the "
                           "Conflicts page. This catches a calendar that was deleted or is no longer shared."),
                Field(PUSH_OVER_HTTP, "checkbox",
                      help="Google sends change notifications only to https addresses; "
                           "this lets the sidecar ask for them at a plain http public URL (e.g. behind a test "
                           "tunnel). The regular sync keeps running either way."),
            ))
_ALERTS = Section("alerts", "Alerts", "Who is told when something needs a person.", (
    Field("alerts.recipients", "emails", v_emails,
          help="E-mail addresses separated by commas. They get an e-mail (sent through the companion plugin) "
               "when a doctor must reconnect Google or a change could not be sent. The doctor is told too "
               "when it is their connection."),
))
# Page order: Google, KiviCare, Sync, Two-way sync, Companion plugin, Alerts.
_BASE = {s.key: s for s in SECTIONS}
SECTIONS = (_BASE["google"], _BASE["kivicare"], _BASE["sync"], _TWO_WAY, _BASE["companion"], _ALERTS)
BY_SECTION = {s.key: s for s in SECTIONS}
TELEMEDICINE = "sync.telemedicine_services"


def _source_text(name: str) -> str:
    """Why a fixed setting is read-only, e.g. "set in config.ini" or "set by SIDECAR_GOOGLE_CLIENT_ID"."""
    cfg = runtime().cfg
    source = cfg.source(name)
    if source == "config.ini":
        return "set in config.ini"
    env_var = BY_NAME[name].env_var
    if env_var in cfg.environ:
        return f"set by {env_var}"
    return "fixed when the sidecar was started"


def _display(f: Field, value: Any) -> str:
    if f.widget in ("minutes", "emails"):
        return ", ".join(str(v) for v in value or [])
    if f.widget == "radio":
        # Older values of the event format ("kivicare", "custom") mean the template format.
        return value if value in {c[0] for c in f.choices} else (f.setting.default if f.name != "sync.event_template"
                                                                  else "template")
    if value is None:
        return ""
    return str(value)


def field_view(f: Field, submitted: dict | None = None, errors: dict | None = None) -> dict:
    """What the template needs for one field. Secrets carry only their mask, never the value."""
    cfg = runtime().cfg
    setting = f.setting
    fixed = cfg.is_fixed(f.name)
    view = {"name": f.name, "id": f.html_id, "widget": f.widget, "label": setting.label or f.name,
            # Radio choices carry their own explanations; the registry's sentence would repeat them.
            "help": f.help or ("" if f.widget == "radio" else setting.help), "fixed": fixed, "source": _source_text(f.name) if fixed else "",
            "choices": f.choices, "error": (errors or {}).get(f.name, ""), "value": "", "masked": "",
            "unreadable": False}
    if f.widget == "secret":
        try:
            view["masked"] = mask(cfg.get(f.name))
        except SecretError:
            view["unreadable"] = True
        return view
    if submitted is not None and not fixed and f.name in submitted:
        view["value"] = submitted[f.name]
    else:
        view["value"] = _display(f, cfg.get(f.name))
    if f.widget == "checkbox":
        view["checked"] = (submitted.get(f.name) == "on") if (submitted is not None and not fixed) \
            else bool(cfg.get(f.name))
    return view


# ---- telemedicine services ---------------------------------------------------------------------

def _saved_service_ids() -> list[int]:
    ids = []
    for value in runtime().cfg.get(TELEMEDICINE) or []:
        try:
            ids.append(int(value))
        except (TypeError, ValueError):
            continue
    return ids


SERVICES_TTL = 60.0  # seconds


def _doctor_services() -> list:
    """``kivicare().list_doctor_services()``, remembered for a minute per KiviCare client.

    The page is drawn again after every save; a site that times out must not cost 5 s each time.
    Failures are remembered too (and raised again). A settings change builds a new client: fresh list.
    """
    client = runtime().kivicare()
    cache = current_app.extensions.setdefault("sidecar_services_cache", {})
    hit = cache.get("entry")
    if hit and hit[0] is client and time.monotonic() - hit[1] < SERVICES_TTL:
        if isinstance(hit[2], Exception):
            raise hit[2]
        return hit[2]
    try:
        result = client.list_doctor_services()
    except Exception as exc:
        cache["entry"] = (client, time.monotonic(), exc)
        raise
    cache["entry"] = (client, time.monotonic(), result)
    return result


def telemedicine_view() -> dict:
    """KiviCare's services grouped by kc_services id, with which are chosen and which KiviCare flags.

    On a KiviCare error the services already chosen are still listed, so saving loses nothing.
    """
    from wp_bridge.kivicare import KiviCareError

    cfg = runtime().cfg
    chosen = set(_saved_service_ids())
    services: dict[int, dict] = {}
    error = ""
    if cfg.get("kivicare.base_url"):
        try:
            for item in _doctor_services():
                entry = services.setdefault(item.service_id, {"id": item.service_id, "name": item.name,
                                                              "telemed": False, "doctors": set()})
                entry["telemed"] = entry["telemed"] or item.telemed
                entry["name"] = entry["name"] or item.name
                entry["doctors"].add(item.doctor_id)
        except KiviCareError as exc:
            error = "The services could not be loaded from KiviCare: " + kivicare_message(exc)
        except Exception as exc:  # never a stack trace on the page
            log.warning("loading KiviCare services failed: %s", type(exc).__name__)
            error = "The services could not be loaded from KiviCare (%s)." % type(exc).__name__
    else:
        error = "Enter the KiviCare site first; the services are read from it."
    for service_id in chosen - set(services):
        services[service_id] = {"id": service_id, "name": f"Service #{service_id} (not found in KiviCare now)",
                                "telemed": False, "doctors": set()}
    rows = sorted(services.values(), key=lambda s: (s["name"].lower(), s["id"]))
    for row in rows:
        row["checked"] = row["id"] in chosen
        row["doctor_count"] = len(row.pop("doctors"))
    fixed = cfg.is_fixed(TELEMEDICINE)
    return {"services": rows, "error": error, "fixed": fixed, "source": _source_text(TELEMEDICINE) if fixed else "",
            "label": BY_NAME[TELEMEDICINE].label, "help": BY_NAME[TELEMEDICINE].help}


# ---- KiviCare connection test ------------------------------------------------------------------

def kivicare_message(exc: Exception) -> str:
    """A plain sentence for a KiviCare client error (no stack trace, no secret)."""
    from wp_bridge.kivicare import (KiviCareAuthError, KiviCareBadResponse, KiviCareEncrypted, KiviCareNotFound,
                                    KiviCareRequestError, KiviCareUnavailable)
    url = runtime().cfg.get("kivicare.base_url") or "(no address)"
    if isinstance(exc, KiviCareAuthError):
        return ("WordPress did not accept this user and application password. Check the user name, create a new "
                "application password under Users > Profile > Application Passwords, and make sure the user is "
                "an administrator.")
    if isinstance(exc, KiviCareUnavailable):
        return (f"The sidecar could not reach {url}. Check the address and that the site is online "
                f"({exc}).")
    if isinstance(exc, KiviCareNotFound):
        return (f"{url} answered, but KiviCare's REST API is not there. Check the address is the WordPress site's "
                "and that the KiviCare plugin is active.")
    if isinstance(exc, KiviCareBadResponse):
        return f"{url} answered, but not like a WordPress site with KiviCare. Check the address."
    if isinstance(exc, KiviCareEncrypted):
        return str(exc)
    if isinstance(exc, KiviCareRequestError):
        if "not set" in str(exc):
            return "Enter and save the KiviCare site URL first."
        return f"KiviCare refused the request: {exc}"
    return f"The test failed ({type(exc).__name__})."


def test_kivicare() -> dict:
    """Call ``site_info()`` and ``addons()`` with the saved settings.

    Returns ``{"ok": bool, "message": str, "site_name", "timezone", "addons": [(name, active, version)],
    "warnings": [str]}``; remembers the site's timezone (``state.site_timezone``, as the engine does) so the
    dashboard shows times in it.
    """
    from wp_bridge.kivicare import KiviCareError

    rt = runtime()
    result: dict = {"ok": False, "message": "", "site_name": "", "timezone": "", "addons": [], "warnings": []}
    try:
        client = rt.kivicare()
        info = client.site_info()
        result.update(site_name=info.name, timezone=info.timezone)
        addons = client.addons()
    except KiviCareError as exc:
        result["message"] = kivicare_message(exc)
        return result
    except Exception as exc:
        log.warning("KiviCare test failed unexpectedly: %s", type(exc).__name__)
        result["message"] = f"The test failed unexpectedly ({type(exc).__name__}). The details are in the log."
        return result
    result["ok"] = True
    result["addons"] = sorted((name, active, version or "") for name, (active, version) in addons.items())
    for name, label in (("kiviPro", "KiviCare Pro"), ("googlemeet", "KiviCare Google Meet")):
        if addons.get(name, (False, None))[0]:
            result["warnings"].append(f"The {label} add-on is active. It syncs to Google by itself, which would "
                                      "conflict with the sidecar; turn its Google Calendar sync off.")
    result["message"] = "Connected to KiviCare."
    rt.set_state("site_timezone", info.timezone)
    return result


# ---- the companion plugin ------------------------------------------------------------------------

COMPANION_SECRET = "companion.secret"

# (feature, what it does with the plugin, what happens without it)
COMPANION_FEATURES = (
    ("hints", "Instant updates", "KiviCare tells the sidecar at once: changes reach Google in about a second.",
     "Changes reach Google within the poll interval ({poll} seconds)."),
    ("busy", "Busy times block booking", "Busy time in the doctors' Google calendars cannot be booked in KiviCare.",
     "Busy times in Google don't block booking in KiviCare."),
    ("meet", "Meet links in KiviCare", "Meet links are shown to doctor and patient in KiviCare, and the patient "
     "gets them by e-mail.", "Meet links are only in Google."),
    ("reschedule", "Moves from Google", "Moving an appointment's event in Google moves the appointment in KiviCare.",
     "Moving an event in Google does not move the appointment."),
    ("mail", "Alert e-mails", "Alerts to admins and doctors are sent through the site's own e-mail.",
     "Alerts are shown only on the dashboard."),
    ("sso", "Sign-in from KiviCare", "A \"Google Calendar\" link in KiviCare signs staff in here: doctors see "
     "their own calendar, receptionists a read-only dashboard.",
     "Admins sign in with a local account; doctors connect through Connect links."),
)


def new_companion_secret() -> str:
    """32 random bytes, URL-safe base64 without padding (PROTOCOL.md, "Shared secret")."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def _companion_secret_or_none() -> str | None:
    """The stored secret, "" when unset, None when it cannot be decrypted (a replaced key file)."""
    try:
        return runtime().cfg.get(COMPANION_SECRET) or ""
    except SecretError:
        return None


def companion_message(exc: Exception) -> str:
    """A plain sentence for a companion client error (no stack trace, no secret)."""
    from wp_bridge.companion import (CompanionNotConfigured, CompanionNotInstalled, CompanionPluginNotConfigured,
                                     CompanionRefused, CompanionUnavailable)
    url = runtime().cfg.get("kivicare.base_url") or "(no address)"
    if isinstance(exc, CompanionNotConfigured):
        return "Enter the KiviCare site URL and generate the shared secret first."
    if isinstance(exc, CompanionNotInstalled):
        return (f"The plugin does not answer at {url}: it is not installed or not active. Upload the plugin's zip "
                "in WordPress (Plugins > Add New > Upload Plugin), activate it, and paste the secret.")
    if isinstance(exc, CompanionPluginNotConfigured):
        return ("The plugin is active but has no secret yet: paste the sidecar's secret in WordPress under "
                "Settings > KiviCare Sidecar.")
    if isinstance(exc, CompanionRefused):
        if exc.code == "kc_sidecar_stale_request":
            return ("The plugin refused the request as too old: the clocks of this server and the WordPress server "
                    "differ by more than 5 minutes. Fix the clock (NTP) on the one that is wrong.")
        if exc.status == 401:
            return ("The plugin has a different secret. Show the secret below, copy it, and paste it into the plugin "
                    "again.")
        return f"The plugin refused the request: {exc.message}"
    if isinstance(exc, CompanionUnavailable):
        return f"The WordPress site did not answer as expected: {exc}"
    return f"The check failed ({type(exc).__name__})."


def test_companion() -> dict:
    """Ask the plugin's ``/status`` (even when ``companion.enabled`` is off) and remember the answer.

    Returns ``{"ok", "at", "message", "plugin_version", "kivicare_version", "features", "site_timezone"}``,
    also kept as ``state.companion_check`` for the page (and the dashboard).
    """
    from wp_bridge.companion import CompanionClient, CompanionError

    rt = runtime()
    result = {"ok": False, "at": utcnow().isoformat(), "message": "", "plugin_version": "", "kivicare_version": "",
              "features": [], "site_timezone": ""}
    secret = _companion_secret_or_none()
    base = rt.cfg.get("kivicare.base_url")
    if not base:
        result["message"] = "Enter and save the KiviCare site URL first: the plugin runs on that site."
    elif secret is None:
        result["message"] = "The stored secret cannot be read with the current key file. Generate a new one."
    elif not secret:
        result["message"] = "Generate the shared secret first, then paste it into the plugin."
    else:
        try:
            status = CompanionClient(base, secret, timeout=(3, 10)).status()
        except CompanionError as exc:
            result["message"] = companion_message(exc)
        except Exception as exc:  # never a stack trace on the page
            log.warning("checking the companion plugin failed unexpectedly: %s", type(exc).__name__)
            result["message"] = f"The check failed unexpectedly ({type(exc).__name__}). The details are in the log."
        else:
            result.update(ok=True, plugin_version=status.plugin_version,
                          kivicare_version=status.kivicare_version or "", features=list(status.features),
                          site_timezone=status.site_timezone,
                          message=f"The plugin answers: version {status.plugin_version or 'unknown'}.")
    rt.set_state("companion_check", result)
    return result


def companion_view(revealed: str | None = None, just_generated: bool = False) -> dict:
    """What the Companion plugin block shows. The secret itself only when ``revealed`` is given."""
    rt = runtime()
    cfg = rt.cfg
    secret = _companion_secret_or_none()
    check = rt.get_state("companion_check")
    check = check if isinstance(check, dict) else None
    ping = rt.get_state("companion_ping")
    hint = rt.get_state("companion_hint")
    enabled = bool(cfg.get("companion.enabled"))
    answering = bool(check and check.get("ok"))
    features = []
    for key, title, with_text, without_text in COMPANION_FEATURES:
        on = bool(enabled and answering and key in (check.get("features") or []))
        if key in ("hints", "sso"):  # inbound: they work whenever the plugin has the secret
            on = bool(answering and key in (check.get("features") or []))
        features.append({"key": key, "title": title, "on": on, "with": with_text,
                         "without": without_text.format(poll=cfg.get("bridge.poll_seconds"))})
    return {
        "has_secret": bool(secret), "unreadable": secret is None, "masked": mask(secret) if secret else "",
        "fixed": cfg.is_fixed(COMPANION_SECRET),
        "source": _source_text(COMPANION_SECRET) if cfg.is_fixed(COMPANION_SECRET) else "",
        "revealed": revealed, "just_generated": just_generated,
        "enabled": enabled, "check": check, "checked_at": as_datetime(check.get("at")) if check else None,
        "answering": answering,
        "last_ping_at": as_datetime(ping.get("at")) if isinstance(ping, dict) else None,
        "last_hint_at": as_datetime(hint.get("at")) if isinstance(hint, dict) else None,
        "features": features,
        "hook_url": cfg.get("web.public_url").rstrip("/"),
    }


# ---- views -------------------------------------------------------------------------------------

def _redirect_warning(uri: str) -> str:
    """Google accepts plain-http redirect URIs only for localhost; say so before the admin finds out."""
    parsed = urlparse(uri)
    if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
        return ("Google refuses redirect URIs that are not https (except localhost). Serve the sidecar over "
                "https and set [web] public_url to the https address.")
    return ""


def _render(submitted_section: str = "", submitted: dict | None = None, errors: dict | None = None,
            kivicare_test: dict | None = None, status: int = 200, companion_revealed: str | None = None,
            companion_generated: bool = False):
    rt = runtime()
    sections = []
    for section in SECTIONS:
        mine = section.key == submitted_section
        fields = [field_view(f, submitted if mine else None, errors if mine else None) for f in section.fields]
        sections.append({"key": section.key, "title": section.title, "intro": section.intro, "fields": fields,
                         "has_errors": bool(mine and errors), "all_fixed": all(f["fixed"] for f in fields)})
    context = {
        "sections": sections,
        "redirect_uri": rt.cfg.redirect_uri,
        "public_url": rt.cfg.get("web.public_url"),
        "public_url_source": (_source_text("web.public_url") if rt.cfg.is_fixed("web.public_url")
                              else "the default: set [web] public_url in config.ini"),
        "redirect_warning": _redirect_warning(rt.cfg.redirect_uri),
        "scopes": REQUIRED_SCOPES,
        "placeholders": PLACEHOLDERS,
        "telemedicine": telemedicine_view(),
        "telemedicine_error": (errors or {}).get(TELEMEDICINE, "") if submitted_section == "telemedicine" else "",
        "kivicare_test": kivicare_test,
        "companion": companion_view(companion_revealed, companion_generated),
        "open_conflicts": Conflict.select().where(Conflict.state == "open").count(),
    }
    return render_template("settings/index.html", **context), status


@bp.route("", methods=["GET"])
@admin_required
def index():
    return _render()


@bp.route("", methods=["POST"])
@admin_required
def save():
    """Save one section (``section`` = google | kivicare | sync | two_way | companion | alerts | telemedicine);
    all fields or none."""
    key = request.form.get("section", "")
    if key == "telemedicine":
        return _save_telemedicine()
    section = BY_SECTION.get(key)
    if section is None:
        flash("Unknown settings section.", "error")
        return redirect(url_for("settings.index"))
    cfg = runtime().cfg
    submitted = {f.name: request.form.get(f.name, "") for f in section.fields}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for f in section.fields:
        if cfg.is_fixed(f.name):
            continue  # read-only on the page; a forged value is ignored
        raw = submitted[f.name]
        if f.widget == "checkbox":
            values[f.name] = raw == "on"
            continue
        if f.widget == "secret" and not raw.strip():
            continue  # empty keeps the stored secret
        try:
            values[f.name] = f.validate(raw) if f.validate else raw.strip()
        except Invalid as exc:
            errors[f.name] = str(exc)
    if not errors:
        name = ""
        try:
            with transaction():  # all fields of the section, or none
                for name, value in values.items():
                    cfg.set(name, value)
        except ConfigError as exc:
            errors[name] = str(exc)
    if errors:
        return _render(key, submitted, errors, status=400)
    runtime().request_poll()
    flash(f"{section.title} settings saved.", "ok")
    return redirect(url_for("settings.index") + f"#{section.key}")


def _save_telemedicine():
    cfg = runtime().cfg
    if cfg.is_fixed(TELEMEDICINE):
        flash(f"The telemedicine services are {_source_text(TELEMEDICINE)} and cannot be changed here.", "error")
        return redirect(url_for("settings.index") + "#telemedicine")
    raw = request.form.getlist("service")
    if any(not value.isdigit() or len(value) > 9 for value in raw):
        return _render("telemedicine", {}, {TELEMEDICINE: "Choose services from the list."}, status=400)
    try:
        cfg.set(TELEMEDICINE, sorted({int(value) for value in raw}))
    except ConfigError as exc:
        return _render("telemedicine", {}, {TELEMEDICINE: str(exc)}, status=400)
    runtime().request_poll()
    flash("Telemedicine services saved.", "ok")
    return redirect(url_for("settings.index") + "#telemedicine")


@bp.route("/companion/secret", methods=["POST"])
@admin_required
def companion_generate():
    """Generate a new shared secret and show it once. The plugin must get it too: until then its hints,
    sign-ins and the sidecar's calls to it are refused (and every WordPress sign-in here ends)."""
    cfg = runtime().cfg
    if cfg.is_fixed(COMPANION_SECRET):
        flash(f"The companion secret is {_source_text(COMPANION_SECRET)} and cannot be changed here.", "error")
        return redirect(url_for("settings.index") + "#companion")
    secret = new_companion_secret()
    try:
        cfg.set(COMPANION_SECRET, secret)
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
    secret = _companion_secret_or_none()
    if not secret:
        flash("There is no readable secret to show. Generate a new one.", "error")
        return redirect(url_for("settings.index") + "#companion")
    if runtime().cfg.is_fixed(COMPANION_SECRET):
        flash(f"The companion secret is {_source_text(COMPANION_SECRET)}; copy it from there.", "error")
        return redirect(url_for("settings.index") + "#companion")
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
    """Test the saved KiviCare settings and show the result on the settings page."""
    current_app.extensions.pop("sidecar_services_cache", None)  # read the services again too
    return _render(kivicare_test=test_kivicare())
