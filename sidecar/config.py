"""Configuration: one registry of settings, three sources, one precedence rule.

Every setting the sidecar knows is declared once in ``SETTINGS`` (section, key, type, default,
whether it is a secret, and a sentence an admin can read). A value is looked up in this order:

1. the environment, ``SIDECAR_<SECTION>_<KEY>`` (upper case), for containers and headless hosts;
2. ``config.ini`` (an empty value counts as unset);
3. the settings page, stored in the database (secrets encrypted with the key file);
4. the default declared here (Google's real endpoints, safe intervals).

A setting fixed by 1 or 2 is shown read-only in the settings page with its source. Secrets from 1
or 2 are kept in memory only: they are never written to the database, a file, or a log line.
"""

from __future__ import annotations

import configparser
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parent.parent

GOOGLE_SCOPES = ("https://www.googleapis.com/auth/calendar",)


@dataclass(frozen=True)
class Setting:
    """One declared setting. ``name`` is ``"section.key"``; ``kind`` is str, int, bool or list."""

    section: str
    key: str
    default: Any = ""
    kind: type = str
    secret: bool = False
    label: str = ""
    help: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env_var(self) -> str:
        return f"SIDECAR_{self.section.upper()}_{self.key.upper()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("kivicare", "base_url", "", label="KiviCare site URL",
            help="The WordPress site's address, e.g. https://clinic.example.com (no /wp-json)."),
    Setting("kivicare", "username", "", label="WordPress user",
            help="A dedicated administrator user that nobody logs in with in a browser."),
    Setting("kivicare", "app_password", "", secret=True, label="Application password",
            help="Created in WordPress under Users > Profile > Application Passwords."),
    Setting("kivicare", "client_id", "kivicare-calendar-sidecar", label="X-KC-Client-Id header",
            help="A constant id sent on every request; turns KiviCare's encryption 401 into a normal error."),
    Setting("google", "client_id", "", label="OAuth client ID",
            help="From Google Cloud > APIs & Services > Credentials (type: Web application)."),
    Setting("google", "client_secret", "", secret=True, label="OAuth client secret"),
    Setting("google", "app_name", "KiviCare Calendar Sidecar", label="App name",
            help="Shown to doctors on the connect page; match the OAuth consent screen's name."),
    Setting("google", "auth_uri", "https://accounts.google.com/o/oauth2/auth", label="Authorization URI"),
    Setting("google", "token_uri", "https://oauth2.googleapis.com/token", label="Token URI"),
    Setting("google", "revoke_uri", "https://oauth2.googleapis.com/revoke", label="Revocation URI"),
    Setting("google", "api_endpoint", "https://www.googleapis.com/calendar/v3/", label="Calendar API endpoint"),
    Setting("google", "requests_per_second", 9, int, label="Google requests per second per account",
            help="Stays under Google's 600 requests per minute per user (with a burst of 6 seconds' worth: "
                 "9 × 60 + 54 = 594); lower it when several sidecar processes share one Google project and "
                 "accounts."),
    Setting("google", "batch_size", 50, int, label="Google writes per batch request",
            help="Up to this many event writes of one doctor go to Google in a single request (1 to 1000; "
                 "1 sends each on its own). Each still counts towards Google's per-minute limit."),
    Setting("google", "push_over_http", False, bool, label="Push notifications over plain HTTP",
            help="Only for local testing: Google itself sends push notifications to HTTPS addresses only."),
    Setting("database", "url", "sqlite:///data/sidecar.db", label="Database URL",
            help="sqlite:///path (default), postgresql://user:pass@host/db or mysql://user:pass@host/db."),
    Setting("security", "key_file", "data/sidecar.key", label="Key file",
            help="Encrypts secrets at rest; created with mode 0600 on first run. Back it up with the database."),
    Setting("companion", "secret", "", secret=True, label="Companion plugin secret",
            help="Shared with the KiviCare Sidecar Bridge WordPress plugin; signs every request both ways."),
    Setting("companion", "enabled", True, bool, label="Use the companion plugin",
            help="When the plugin answers: instant updates, busy times block booking, Meet links in KiviCare."),
    Setting("alerts", "recipients", [], list, label="Alert e-mails to",
            help="Admins who get an e-mail (through the SMTP server below if one is set, else the companion "
                 "plugin's mail relay) when a doctor must reconnect Google or a change could not be sent. The "
                 "doctor is told too when it is their connection."),
    Setting("alerts", "smtp_host", "", label="SMTP server",
            help="Leave empty to send alerts through the companion plugin (the WordPress site's mail). "
                 "Otherwise e.g. smtp.example.com."),
    Setting("alerts", "smtp_port", 587, int, label="SMTP port",
            help="587 for STARTTLS, 465 for SSL/TLS, 25 for a relay on the local network."),
    Setting("alerts", "smtp_tls", "starttls", label="SMTP encryption",
            help="starttls (port 587), ssl (port 465), or none (only for a relay on the same machine or network)."),
    Setting("alerts", "smtp_user", "", label="SMTP user name",
            help="Leave empty when the server does not ask for a sign-in."),
    Setting("alerts", "smtp_password", "", secret=True, label="SMTP password"),
    Setting("alerts", "smtp_from", "", label="Alerts sent from",
            help="The sender address, e.g. calendar-sync@clinic.example.com (default: the SMTP user name)."),
    Setting("bridge", "poll_seconds", 30, int, label="Poll interval (seconds)",
            help="How often KiviCare is asked for changed appointments."),
    Setting("bridge", "horizon_days", 90, int, label="Horizon (days)",
            help="Appointments from yesterday up to this many days ahead are kept in sync."),
    Setting("bridge", "near_days", 14, int, label="Near window (days)",
            help="Appointments from yesterday up to this many days ahead are read every poll interval; those "
                 "further ahead (up to the horizon) only every far-window interval, to spare the WordPress "
                 "server. At least 1; a value beyond the horizon means the whole horizon."),
    Setting("bridge", "far_poll_seconds", 600, int, label="Far window poll interval (seconds)",
            help="How often appointments beyond the near window are read. Changes there reach Google within "
                 "this time without the companion plugin, at once with it."),
    Setting("bridge", "list_page_size", 2000, int, label="Appointments per KiviCare list request",
            help="A large window is read in pages of this many appointments, the next page while the sidecar "
                 "works on this one, so a first sync of thousands starts writing to Google after one page. "
                 "KiviCare's cost is per appointment listed; each page adds ~0.07 s. 0: one request for all."),
    Setting("bridge", "workers", 8, int, label="Workers",
            help="Jobs run in parallel against Google (each waits ~0.1 s per request, so several keep many "
                 "doctors' calendars busy at once)."),
    Setting("bridge", "pull_concurrency", 4, int, label="Doctors pulled at once",
            help="How many doctors' Google calendars are read at the same time at each pull (each doctor has "
                 "their own Google quota; one doctor's calendars are never read twice at once)."),
    Setting("web", "host", "127.0.0.1", label="Listen address"),
    Setting("web", "port", 8300, int, label="Listen port"),
    Setting("web", "public_url", "http://127.0.0.1:8300", label="Public URL",
            help="How browsers reach the sidecar; the Google redirect URI is built from it (HTTPS in production)."),
    Setting("web", "proxy_hops", 0, int, label="Reverse proxies in front",
            help="How many reverse proxies (nginx, a load balancer) forward requests to the sidecar. Their "
                 "X-Forwarded-For/-Proto/-Host headers are trusted for that many hops, so sign-in limits apply "
                 "to the visitor's address, not the proxy's. 0 (default): the sidecar is reached directly."),
    Setting("sync", "event_template", "template", label="Event text",
            help="template: the title and description below (initially KiviCare's own Google event template, "
                 "no patient name); detailed: 'Patient: name' with service, doctor, status and location."),
    Setting("sync", "title_template", "{{service_name}}", label="Custom title"),
    Setting("sync", "description_template", "Appointment with patient at {{clinic_name}}", label="Custom description"),
    Setting("sync", "direction", "both", label="Sync direction",
            help="both; kivicare_to_google (Google edits of our events are put back); google_to_kivicare "
                 "(only moves, deletions and busy times flow from Google to KiviCare)."),
    Setting("sync", "conflict_rule", "kivicare", label="When both sides changed",
            help="kivicare (KiviCare wins), google (Google wins), recent (the most recent change wins), "
                 "manual (the admin chooses on the Conflicts page)."),
    Setting("sync", "mass_cancel_share", 30, int, label="Mass-change guard (%)",
            help="A sync that would cancel more than this share of a doctor's upcoming appointments (from "
                 "Google) or delete more than this share of their upcoming events (from KiviCare) at once, "
                 "and at least 3, stops and asks the admin."),
    Setting("sync", "telemedicine_services", [], list, label="Telemedicine services",
            help="KiviCare service ids whose appointments get a Google Meet link."),
    Setting("sync", "meet_link_in_text", False, bool, label="Meet link in the event's text",
            help="Also writes the Google Meet link into the event's location and description (one more request "
                 "per telemedicine event, once the link exists). Google already shows a Join button and puts the "
                 "link in its invitations; turn this on for calendars read by apps that show only text."),
    Setting("sync", "invite_patients", False, bool, label="Invite patients",
            help="Adds the patient as an attendee; Google e-mails them the invitation and the Meet link."),
    Setting("sync", "reminder_minutes", [], list, label="Reminder overrides (minutes)",
            help="Empty: the calendar's default reminders. Otherwise up to 5 popup reminders."),
    Setting("sync", "status_colors", {}, dict, label="Colours by status",
            help="Google event colour id per KiviCare status; initially KiviCare's own colours."),
    Setting("sync", "privacy_mode", False, bool, label="Privacy mode",
            help="Events carry no patient name, e-mail or appointment notes, whatever the templates say "
                 "(the title becomes the service name), and patients are not invited."),
    Setting("sync", "services", [], list, label="Services that sync",
            help="KiviCare service ids whose appointments go to Google. Empty: all services. An appointment "
                 "that leaves the list loses its upcoming event, like a cancelled one."),
    Setting("sync", "clinics", [], list, label="Clinics that sync",
            help="KiviCare clinic ids whose appointments go to Google. Empty: all clinics."),
    Setting("sync", "log_retention_days", 90, int, label="Keep the sync log (days)",
            help="Sync log entries, resolved conflicts and used sign-in links older than this are deleted "
                 "once a day."),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


class ConfigError(ValueError):
    """A setting has a value that cannot be used (message names the setting and its source)."""


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    if raw is None:
        return setting.default
    if setting.kind is str:
        return str(raw).strip()
    if isinstance(raw, setting.kind) and not isinstance(raw, str):
        return raw
    text = str(raw).strip()
    try:
        if setting.kind is int:
            return int(text)
        if setting.kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if setting.kind is list:
            if text.startswith("["):
                return list(json.loads(text))
            return [part.strip() for part in text.split(",") if part.strip()]
        if setting.kind is dict:
            return dict(json.loads(text)) if text else {}
    except ValueError as exc:
        raise ConfigError(f"{setting.name} from {source}: {text!r} is not a valid {setting.kind.__name__}") from exc
    return raw


class Config:
    """Effective configuration.

    ``Config(ini_path, environ, store)``: ``store`` is anything with ``get(name) -> str | None`` and
    ``set(name, value, secret)`` (the database settings table, see ``sidecar.settings_store``); it may be
    attached later with ``attach_store`` because the database URL itself comes from the config.
    """

    def __init__(self, ini_path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None):
        self.ini_path = Path(ini_path) if ini_path else None
        self.environ = dict(os.environ if environ is None else environ)
        self._ini: dict[str, str] = {}
        # overrides: values fixed by code (tests, the demo); treated like the environment.
        self._overrides = dict(overrides or {})
        self._store = None
        if self.ini_path and self.ini_path.exists():
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(self.ini_path, encoding="utf-8")
            for section in parser.sections():
                for key, value in parser.items(section):
                    if value.strip():
                        self._ini[f"{section}.{key}"] = value.strip()
        self.base_dir = self.ini_path.parent if self.ini_path else ROOT

    def attach_store(self, store) -> None:
        """Attach the database-backed store for settings entered in the settings page."""
        self._store = store

    def source(self, name: str) -> str:
        """Where the effective value of ``name`` comes from: environment, config.ini, settings page, default."""
        setting = BY_NAME[name]
        if name in self._overrides or setting.env_var in self.environ:
            return "environment"
        if name in self._ini:
            return "config.ini"
        if self._store is not None and self._store.get(name) is not None:
            return "settings page"
        return "default"

    def is_fixed(self, name: str) -> bool:
        """True when the settings page must show ``name`` read-only (set by environment or config.ini)."""
        return self.source(name) in ("environment", "config.ini")

    def get(self, name: str) -> Any:
        """The effective, typed value of ``name`` ("section.key"). Raises KeyError for unknown names."""
        setting = BY_NAME[name]
        if name in self._overrides:
            return _coerce(setting, self._overrides[name], "overrides")
        if setting.env_var in self.environ:
            return _coerce(setting, self.environ[setting.env_var], setting.env_var)
        if name in self._ini:
            return _coerce(setting, self._ini[name], "config.ini")
        if self._store is not None:
            stored = self._store.get(name)
            if stored is not None:
                return _coerce(setting, stored, "settings page")
        return setting.default

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def set(self, name: str, value: Any) -> None:
        """Store a settings-page value. Refuses settings fixed by the environment or config.ini."""
        setting = BY_NAME[name]
        if self.is_fixed(name):
            raise ConfigError(f"{name} is set in the {self.source(name)} and cannot be changed here")
        if self._store is None:
            raise ConfigError("no settings store attached")
        if setting.kind in (list, dict):
            text = json.dumps(value)
        elif setting.kind is bool:
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        _coerce(setting, text, "settings page")  # validate before writing
        self._store.set(name, text, secret=setting.secret)

    def path(self, name: str) -> Path:
        """A file-system setting resolved against the directory holding config.ini."""
        value = Path(self.get(name))
        return value if value.is_absolute() else self.base_dir / value

    def database_url(self) -> str:
        """The database URL with a relative SQLite path resolved against the config directory."""
        url = self.get("database.url")
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str(self.base_dir / url[len(prefix):])
        return url

    @property
    def redirect_uri(self) -> str:
        """The exact OAuth redirect URI to register in Google Cloud."""
        return self.get("web.public_url").rstrip("/") + "/oauth/google/callback"

    def google_client_config(self) -> dict:
        """The ``{"web": {...}}`` client config google-auth-oauthlib's Flow expects."""
        return {"web": {
            "client_id": self.get("google.client_id"),
            "client_secret": self.get("google.client_secret"),
            "auth_uri": self.get("google.auth_uri"),
            "token_uri": self.get("google.token_uri"),
            "redirect_uris": [self.redirect_uri],
        }}


def load(ini_path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Load ``config.ini`` (default: ``SIDECAR_CONFIG`` or the repository's config.ini)."""
    env = os.environ if environ is None else environ
    if ini_path is None:
        ini_path = env.get("SIDECAR_CONFIG") or (ROOT / "config.ini")
    return Config(ini_path, env, overrides)

