"""What the settings page asks for: validators, the fields of each section, and the choices explained in
plain words.

A validator turns the text of a form field into the typed value ``Config.set`` stores, or raises
``Invalid`` with a message an admin can act on (shown next to the field). A ``Section`` is saved whole
or not at all; its optional ``check`` looks at several fields together (e.g. an SMTP server needs a
sender address). Fields whose setting is not declared in ``sidecar.config.SETTINGS`` are left out
(``Section.present``), so the page shows exactly what this sidecar knows.

Messages are translatable: ``gettext`` when a form is checked, ``lazy_gettext`` for the declarations.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlparse

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..config import BY_NAME

try:  # the placeholders the engine understands (wp_bridge.event_text)
    from wp_bridge.event_text import PLACEHOLDERS
except ImportError:  # pragma: no cover - the engine ships with the sidecar
    PLACEHOLDERS = ("appointment_date", "appointment_time", "service_name", "clinic_name", "doctor_name")

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
MAX_REMINDERS = 5
MAX_REMINDER_MINUTES = 40320  # Google's limit: four weeks
MAX_RECIPIENTS = 20
MAX_IDS = 500  # services or clinics chosen in one list


class Invalid(ValueError):
    """A submitted value cannot be used; the message is shown next to the field."""


# ---- validators: text from the form -> typed value, or Invalid -----------------------------------

def v_text(max_len: int = 255, required: bool = False) -> Callable[[str], str]:
    """One line of at most ``max_len`` characters, stripped; ``required`` refuses an empty one."""
    def check(raw: str) -> str:
        value = raw.strip()
        if required and not value:
            raise Invalid(_("This cannot be empty."))
        if len(value) > max_len:
            raise Invalid(_("Use at most %(n)d characters.", n=max_len))
        if any(ch in value for ch in "\r\n\t"):
            raise Invalid(_("Use a single line without tabs."))
        return value
    return check


def v_site_url(raw: str) -> str:
    """The WordPress site's address (http or https, no query, no /wp-json); "" when empty."""
    value = raw.strip().rstrip("/")
    if not value:
        return ""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise Invalid(_("Enter the full address starting with https:// (or http://), e.g. "
                        "https://clinic.example.com."))
    if parsed.query or parsed.fragment or " " in value:
        raise Invalid(_("Enter only the site's address, without ?, # or spaces."))
    if "/wp-json" in parsed.path:
        raise Invalid(_("Enter the site's address without /wp-json (the sidecar adds it)."))
    return value


def v_int(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high`` (the page also shows these as the field's min and max)."""
    def check(raw: str) -> int:
        text = raw.strip()
        if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
            raise Invalid(_("Enter a whole number from %(low)d to %(high)d.", low=low, high=high))
        return int(text)
    check.bounds = (low, high)  # type: ignore[attr-defined]
    return check


def v_minutes(raw: str) -> list[int]:
    """Reminder minutes separated by commas or spaces: at most 5, each 0 … 40320 (Google's limits)."""
    parts = [p.strip() for p in re.split(r"[,\s]+", raw.strip()) if p.strip()]
    if len(parts) > MAX_REMINDERS:
        raise Invalid(_("Google allows at most %(n)d reminders.", n=MAX_REMINDERS))
    values = []
    for part in parts:
        if not part.isdigit() or int(part) > MAX_REMINDER_MINUTES:
            raise Invalid(_("Use whole numbers of minutes from 0 to %(n)d, separated by commas.",
                            n=MAX_REMINDER_MINUTES))
        values.append(int(part))
    return sorted(set(values))


def v_template(max_len: int, required: bool) -> Callable[[str], str]:
    """An event title or description: only the engine's placeholders (``wp_bridge.event_text``)."""
    def check(raw: str) -> str:
        value = raw.replace("\r\n", "\n").strip()
        if required and not value:
            raise Invalid(_("This cannot be empty."))
        if len(value) > max_len:
            raise Invalid(_("Use at most %(n)d characters.", n=max_len))
        unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(value)} - set(PLACEHOLDERS))
        if unknown:
            raise Invalid(_("Unknown placeholder %(names)s. Use only the placeholders listed.",
                            names=", ".join("{{%s}}" % u for u in unknown)))
        return value
    return check


_EMAIL = re.compile(r"^[^@\s,;<>\"']{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")


def v_emails(raw: str) -> list[str]:
    """Comma-separated e-mail addresses (spaces, semicolons and new lines also separate); duplicates dropped."""
    parts = [p.strip() for p in re.split(r"[,;\s]+", raw.strip()) if p.strip()]
    bad = [p for p in parts if len(p) > 254 or not _EMAIL.match(p)]
    if bad:
        raise Invalid(_("Not an e-mail address: %(bad)s. Separate addresses with commas.", bad=", ".join(bad[:3])))
    unique = list(dict.fromkeys(p.lower() for p in parts))
    if len(unique) > MAX_RECIPIENTS:
        raise Invalid(_("Use at most %(n)d addresses.", n=MAX_RECIPIENTS))
    return unique


def v_email(raw: str) -> str:
    """One e-mail address, or "" when empty."""
    value = raw.strip()
    if value and (len(value) > 254 or not _EMAIL.match(value)):
        raise Invalid(_("Enter one e-mail address, e.g. sidecar@clinic.example.com."))
    return value


_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def v_host(raw: str) -> str:
    """A host name or IP address without scheme or port (e.g. smtp.example.com), or "" when empty."""
    value = raw.strip().rstrip(".")
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if len(value) > 253 or not all(_HOST_LABEL.match(label) for label in value.split(".")):
        raise Invalid(_("Enter only the server's name, e.g. smtp.example.com (no https://, no port)."))
    return value.lower()


def v_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    """One of ``choices`` (the values of radio buttons)."""
    def check(raw: str) -> str:
        if raw not in choices:
            raise Invalid(_("Choose one of the options."))
        return raw
    return check


def v_ids(raw: str | list[str]) -> list[int]:
    """KiviCare ids (whole numbers above 0) from ticked boxes or a text of ids separated by commas."""
    parts = raw if isinstance(raw, list) else [p for p in re.split(r"[,;\s]+", raw.strip()) if p]
    bad = [p for p in parts if not (p.isascii() and p.isdigit() and 0 < len(p) <= 9 and int(p) > 0)]
    if bad:
        raise Invalid(_("Not a KiviCare id: %(bad)s. Use whole numbers separated by commas.",
                        bad=", ".join(str(b)[:20] for b in bad[:3])))
    ids = sorted({int(p) for p in parts})
    if len(ids) > MAX_IDS:
        raise Invalid(_("Choose at most %(n)d.", n=MAX_IDS))
    return ids


# ---- Google event colours -----------------------------------------------------------------------

# Google Calendar's event colours (``colorId`` 1-11) with the names Google Calendar shows.
GOOGLE_COLORS = (
    ("1", _l("Lavender")), ("2", _l("Sage")), ("3", _l("Grape")), ("4", _l("Flamingo")), ("5", _l("Banana")),
    ("6", _l("Tangerine")), ("7", _l("Peacock")), ("8", _l("Graphite")), ("9", _l("Blueberry")),
    ("10", _l("Basil")), ("11", _l("Tomato")),
)
COLOR_NAMES = dict(GOOGLE_COLORS)
# KiviCare statuses that have an event (wp_bridge.models.EVENT_STATUSES), in the order a day runs.
COLOR_STATUSES = (("1", _l("Booked")), ("2", _l("Pending (shown as tentative)")), ("4", _l("Checked in")),
                  ("3", _l("Checked out")))


def v_colors(raw: dict[str, str], current: dict | None = None) -> dict[str, str]:
    """Colour ids per status from one choice per ``COLOR_STATUSES`` entry; "" = the calendar's colour.

    Statuses not on the page (e.g. "0", cancelled, which has no event) keep their stored colour.
    """
    result = {k: str(v) for k, v in (current or {}).items() if k not in dict(COLOR_STATUSES)}
    for status, _label in COLOR_STATUSES:
        value = (raw.get(status) or "").strip()
        if value and value not in COLOR_NAMES:
            raise Invalid(_("Choose one of Google's colours, or the calendar's own colour."))
        if value:
            result[status] = value
    return result


# ---- the page's fields ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """One setting on the page.

    ``widget``: text, url, secret, number, textarea, radio, checkbox, minutes, emails, email, colors.
    ``choices``: for radio, ``(value, label, explanation)`` triples. ``help`` overrides the registry's.
    """

    name: str
    widget: str
    validate: Callable[..., Any] | None = None
    choices: tuple = ()
    help: Any = ""

    @property
    def setting(self):
        return BY_NAME[self.name]

    @property
    def html_id(self) -> str:
        return "f-" + self.name.replace(".", "-").replace("_", "-")

    @property
    def bounds(self) -> tuple[int, int] | None:
        return getattr(self.validate, "bounds", None)


@dataclass(frozen=True)
class Section:
    """A card of the page, saved as a whole. ``check(values, effective) -> {name: message}`` looks at
    several fields together: ``values`` are the validated submitted values, ``effective(name)`` the value
    a field will have after saving (submitted, or stored when fixed or left empty)."""

    key: str
    title: Any
    intro: Any
    fields: tuple[Field, ...] = field(default_factory=tuple)
    check: Callable[[dict, Callable[[str], Any]], dict] | None = None

    def present(self) -> tuple[Field, ...]:
        """The fields whose setting this sidecar declares."""
        return tuple(f for f in self.fields if f.name in BY_NAME)


EVENT_FORMATS = (
    ("template", _l("Use the title and description below"),
     _l("Starts as KiviCare's own Google event template, which shows no patient name.")),
    ("detailed", _l("Detailed"),
     _l("Title \"Patient: name\"; description with service, doctor and status; location is the clinic.")),
)
DIRECTIONS = (
    ("both", _l("Both ways"),
     _l("Appointments go to Google, and a doctor's moves and deletions of them in Google change KiviCare (by the "
        "rule below). Other edits of the events (title, description) are put back to KiviCare's version.")),
    ("kivicare_to_google", _l("KiviCare → Google only"),
     _l("KiviCare is never changed from Google: edits of the clinic's events in Google, moves and deletions "
        "included, are put back. Busy times in Google still block booking.")),
    ("google_to_kivicare", _l("Google → KiviCare only"),
     _l("Only moves, deletions and busy times flow from Google to KiviCare; changes made in KiviCare are not "
        "sent to Google.")),
)
CONFLICT_RULES = (
    ("kivicare", _l("KiviCare wins"),
     _l("When an appointment changed in KiviCare and in Google between two syncs, KiviCare's version is kept and "
        "the event in Google is put back.")),
    ("google", _l("Google wins"), _l("Google's version is applied to KiviCare.")),
    ("recent", _l("The most recent change wins"),
     _l("Google's time of the edit is compared with the time the sidecar saw KiviCare's change.")),
    ("manual", _l("The admin chooses"),
     _l("Nothing changes on either side until an admin chooses a version on the Conflicts page.")),
)
TLS_MODES = (
    ("starttls", _l("STARTTLS"), _l("The usual choice, on port 587: the connection is encrypted before signing in.")),
    ("ssl", _l("SSL/TLS from the start"), _l("For servers that expect it, usually on port 465.")),
    ("none", _l("No encryption"), _l("Only for a mail relay on this machine or a private network.")),
)
PUSH_OVER_HTTP = "google.push_over_http"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def _check_smtp(values: dict, effective: Callable[[str], Any]) -> dict:
    """An SMTP server needs a sender address; a password never travels unencrypted to another machine."""
    if "alerts.smtp_host" not in BY_NAME:
        return {}
    errors = {}
    host = effective("alerts.smtp_host")
    # Without a sender address the SMTP user name is used (sidecar/config.py), so one of them is needed.
    if host and "alerts.smtp_from" in BY_NAME and not effective("alerts.smtp_from") \
            and not ("alerts.smtp_user" in BY_NAME and "@" in (effective("alerts.smtp_user") or "")):
        errors["alerts.smtp_from"] = _("Enter the sender address the SMTP server accepts, e.g. "
                                       "sidecar@clinic.example.com.")
    if (host and host not in LOCAL_HOSTS and effective("alerts.smtp_tls") == "none"
            and "alerts.smtp_user" in BY_NAME and effective("alerts.smtp_user")):
        errors["alerts.smtp_tls"] = _("The password would travel unencrypted: choose STARTTLS or SSL/TLS.")
    return errors


SECTIONS = (
    Section("google", _l("Google"), _l("The OAuth client the doctors' Google accounts are connected through. "
                                       "Create it once in Google Cloud, then paste its ID and secret here."), (
        Field("google.client_id", "text", v_text(255)),
        Field("google.client_secret", "secret", v_text(255)),
        Field("google.app_name", "text", v_text(100, required=True)),
    )),
    Section("kivicare", _l("KiviCare site"),
            _l("Where KiviCare runs and the WordPress user the sidecar reads it with."), (
        Field("kivicare.base_url", "url", v_site_url),
        Field("kivicare.username", "text", v_text(150)),
        Field("kivicare.app_password", "secret", v_text(255)),
    )),
    Section("companion", _l("Companion plugin"),
            _l("The KiviCare Sidecar Bridge WordPress plugin makes KiviCare and the sidecar talk to each other "
               "directly. The sidecar works without it; with it, more works."), (
        Field("companion.enabled", "checkbox",
              help=_l("Send Meet links, busy times, moves and alert e-mails to the plugin when it answers. "
                      "Hints and sign-ins from the plugin are accepted whenever the secret matches.")),
    )),
    Section("sync", _l("Sync"),
            _l("Which way changes flow, what happens when both sides changed, and how far ahead and how often "
               "appointments are read."), (
        Field("sync.direction", "radio", v_choice(tuple(c[0] for c in DIRECTIONS)), DIRECTIONS),
        Field("sync.conflict_rule", "radio", v_choice(tuple(c[0] for c in CONFLICT_RULES)), CONFLICT_RULES),
        Field("bridge.horizon_days", "number", v_int(1, 365)),
        Field("bridge.poll_seconds", "number", v_int(5, 3600)),
        Field("bridge.near_days", "number", v_int(1, 365)),
        Field("bridge.far_poll_seconds", "number", v_int(60, 86400)),
        Field("sync.mass_cancel_share", "number", v_int(1, 100),
              help=_l("If one sync from Google would cancel more than this share (in %) of a doctor's upcoming "
                      "appointments at once, and at least 3, nothing is cancelled and the admin is asked on the "
                      "Conflicts page. This catches a calendar that was deleted or is no longer shared.")),
        Field(PUSH_OVER_HTTP, "checkbox",
              help=_l("Google sends change notifications only to https addresses; this lets the sidecar ask for "
                      "them at a plain http public URL (e.g. behind a test tunnel). The regular sync keeps "
                      "running either way.")),
    )),
    Section("events", _l("Events in Google"),
            _l("What the doctors' calendar events say and look like. The preview shows a made-up appointment."), (
        Field("sync.event_template", "radio", v_choice(tuple(c[0] for c in EVENT_FORMATS)), EVENT_FORMATS),
        Field("sync.title_template", "text", v_template(300, required=True)),
        Field("sync.description_template", "textarea", v_template(4000, required=False)),
        Field("sync.privacy_mode", "checkbox"),
        Field("sync.meet_link_in_text", "checkbox"),
        Field("sync.status_colors", "colors", v_colors,
              help=_l("The colour of an event in Google follows the appointment's status. \"The calendar's "
                      "colour\" leaves the event in the colour of the calendar.")),
        Field("sync.reminder_minutes", "minutes", v_minutes,
              help=_l("Minutes before the appointment, separated by commas (e.g. 10, 60). Empty: the calendar's "
                      "default reminders. At most 5.")),
        Field("sync.invite_patients", "checkbox",
              help=_l("The patient is added as a guest and Google e-mails them the invitation, every change and the "
                      "cancellation (sendUpdates=all), with the Meet link for telemedicine. Off: Google sends "
                      "nobody anything (sendUpdates=none).")),
    )),
    Section("alerts", _l("Alerts"),
            _l("Who is told by e-mail when something needs a person: a doctor must reconnect Google, or changes "
               "keep failing. Leave the SMTP server empty to send through the companion plugin (the WordPress "
               "site's own e-mail)."), (
        Field("alerts.recipients", "emails", v_emails,
              help=_l("E-mail addresses separated by commas. The doctor is told too when it is their connection.")),
        Field("alerts.smtp_host", "text", v_host,
              help=_l("E.g. smtp.example.com. Empty: the companion plugin's mail relay is used.")),
        Field("alerts.smtp_port", "number", v_int(1, 65535)),
        Field("alerts.smtp_tls", "radio", v_choice(tuple(c[0] for c in TLS_MODES)), TLS_MODES),
        Field("alerts.smtp_user", "text", v_text(255)),
        Field("alerts.smtp_password", "secret", v_text(255)),
        Field("alerts.smtp_from", "email", v_email),
    ), check=_check_smtp),
    Section("retention", _l("Log retention"),
            _l("How long the sync log is kept (default 90 days). The audit trail of admin actions is not "
               "purged."), (
        Field("sync.log_retention_days", "number", v_int(1, 3650)),
    )),
)
BY_SECTION = {s.key: s for s in SECTIONS}

# The page's cards in order: the sections above plus the ones with their own forms.
PAGE_ORDER = ("google", "kivicare", "companion", "sync", "events", "telemedicine", "scope", "alerts", "retention",
              "danger")
SPECIAL_TITLES = {"telemedicine": _l("Telemedicine services"), "scope": _l("Which appointments sync"),
                  "danger": _l("Danger zone")}
TELEMEDICINE = "sync.telemedicine_services"
SCOPE = (("sync.services", "service"), ("sync.clinics", "clinic"))  # setting, form prefix


def title_of(key: str):
    """The title of a card of the page (a section or one of the special cards)."""
    return BY_SECTION[key].title if key in BY_SECTION else SPECIAL_TITLES[key]


__all__ = ["Invalid", "Field", "Section", "SECTIONS", "BY_SECTION", "PAGE_ORDER", "title_of", "EVENT_FORMATS",
           "DIRECTIONS", "CONFLICT_RULES", "TLS_MODES", "GOOGLE_COLORS", "COLOR_NAMES", "COLOR_STATUSES",
           "PLACEHOLDERS", "TELEMEDICINE", "SCOPE", "PUSH_OVER_HTTP", "v_text", "v_site_url", "v_int",
           "v_minutes", "v_template", "v_emails", "v_email", "v_host", "v_choice", "v_ids", "v_colors", "source_text"]


def source_text(name: str) -> str:
    """Why a fixed setting is read-only, e.g. "set in config.ini" or "set by SIDECAR_GOOGLE_CLIENT_ID"."""
    from .common import runtime

    cfg = runtime().cfg
    if cfg.source(name) == "config.ini":
        return _("set in config.ini")
    env_var = BY_NAME[name].env_var
    if env_var in cfg.environ:
        return _("set by %(var)s", var=env_var)
    return _("fixed when the sidecar was started")
