"""The settings page's view of the two sites the sidecar talks to: the KiviCare site (connection test,
detected add-ons, its services and clinics for the telemedicine and "which appointments sync" choices)
and the companion WordPress plugin (shared secret, whether it answers, what it adds).

Every remote call is made with the saved settings through the sidecar's own clients
(``wp_bridge.kivicare.KiviCareClient``, ``wp_bridge.companion.CompanionClient``); errors become one plain
sentence (``kivicare_message``, ``companion_message``), never a stack trace or a secret. Lists read from
KiviCare are remembered for a minute per client, so a page drawn again after each save stays quick
even when the site times out; ids already saved are always listed, so saving loses nothing when
KiviCare cannot be read.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from typing import Any, Callable

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..config import BY_NAME
from ..crypto import SecretError, mask
from ..storage.models import utcnow
from .common import as_datetime, runtime
from .settings_fields import SCOPE, TELEMEDICINE, source_text

log = logging.getLogger(__name__)

LIST_TTL = 60.0  # seconds a list read from KiviCare is reused


def saved_ids(name: str) -> list[int]:
    """The ids stored in list setting ``name`` (malformed entries skipped: the page shows what it can)."""
    ids = []
    for value in runtime().cfg.get(name) or []:
        try:
            ids.append(int(value))
        except (TypeError, ValueError):
            continue
    return ids


def _cached(key: str, load: Callable[[Any], Any]):
    """``load(client)``, remembered for ``LIST_TTL`` per KiviCare client; failures too (raised again).

    A settings change builds a new client, so the next page reads a fresh list.
    """
    client = runtime().kivicare()
    cache = current_app.extensions.setdefault("sidecar_kivicare_lists", {})
    hit = cache.get(key)
    if hit and hit[0] is client and time.monotonic() - hit[1] < LIST_TTL:
        if isinstance(hit[2], Exception):
            raise hit[2]
        return hit[2]
    try:
        result = load(client)
    except Exception as exc:
        cache[key] = (client, time.monotonic(), exc)
        raise
    cache[key] = (client, time.monotonic(), result)
    return result


def forget_lists() -> None:
    """Read the services and clinics from KiviCare again on the next page (after "Test connection")."""
    current_app.extensions.pop("sidecar_kivicare_lists", None)


def _services() -> dict[int, dict]:
    """KiviCare's services by ``kc_services.id``: name, telemedicine flag, how many doctors offer it."""
    services: dict[int, dict] = {}
    for item in _cached("services", lambda client: client.list_doctor_services()):
        entry = services.setdefault(item.service_id, {"id": item.service_id, "name": item.name, "telemed": False,
                                                      "doctors": set()})
        entry["telemed"] = entry["telemed"] or item.telemed
        entry["name"] = entry["name"] or item.name
        entry["doctors"].add(item.doctor_id)
    return services


def _clinics() -> dict[int, dict]:
    """KiviCare's clinics by ``kc_clinics.id`` (``KiviCareClient.list_clinics``)."""
    return {c.id: {"id": c.id, "name": c.name} for c in _cached("clinics", lambda client: client.list_clinics())}


def _load(reader: Callable[[], dict[int, dict]], what: str) -> tuple[dict[int, dict], str]:
    """``(items, error)``: the list, or {} and a sentence saying why it could not be read."""
    from wp_bridge.kivicare import KiviCareError

    if not runtime().cfg.get("kivicare.base_url"):
        return {}, _("Enter the KiviCare site first; the %(what)s are read from it.", what=what)
    try:
        return reader(), ""
    except KiviCareError as exc:
        return {}, _("The %(what)s could not be loaded from KiviCare: %(why)s", what=what, why=kivicare_message(exc))
    except Exception as exc:  # never a stack trace on the page
        log.warning("loading KiviCare %s failed: %s", what, type(exc).__name__)
        return {}, _("The %(what)s could not be loaded from KiviCare (%(kind)s).", what=what, kind=type(exc).__name__)


def telemedicine_view() -> dict:
    """KiviCare's services grouped by kc_services id, with which are chosen and which KiviCare flags.

    On a KiviCare error the services already chosen are still listed, so saving loses nothing.
    """
    cfg = runtime().cfg
    chosen = set(saved_ids(TELEMEDICINE))
    services, error = _load(_services, _("services"))
    for service_id in chosen - set(services):
        services[service_id] = {"id": service_id, "name": _("Service #%(id)d (not found in KiviCare now)",
                                                             id=service_id), "telemed": False, "doctors": set()}
    rows = sorted(services.values(), key=lambda s: (s["name"].lower(), s["id"]))
    for row in rows:
        row["checked"] = row["id"] in chosen
        row["doctor_count"] = len(row.pop("doctors"))
    fixed = cfg.is_fixed(TELEMEDICINE)
    return {"services": rows, "error": error, "fixed": fixed, "source": source_text(TELEMEDICINE) if fixed else "",
            "label": BY_NAME[TELEMEDICINE].label, "help": BY_NAME[TELEMEDICINE].help}


SCOPE_WORDS = {"sync.services": (_l("services"), _l("All services"), _l("Only the services ticked below"),
                                 _l("Service #%(id)d (not found in KiviCare now)")),
               "sync.clinics": (_l("clinics"), _l("All clinics"), _l("Only the clinics ticked below"),
                                _l("Clinic #%(id)d (not found in KiviCare now)"))}


def scope_view(submitted: dict | None = None, errors: dict | None = None) -> list[dict]:
    """One block per present setting of ``SCOPE`` (services, clinics): "all" or the ticked ids.

    ``submitted`` (after a refused save) is ``{setting: {"mode": "all"|"chosen", "ids": [int], "text": str}}``.
    When KiviCare cannot list them, ``manual`` is True and the ids are typed in a text field instead.
    """
    cfg = runtime().cfg
    blocks = []
    for name, prefix in SCOPE:
        if name not in BY_NAME:
            continue
        what, all_label, some_label, missing = SCOPE_WORDS[name]
        stored = saved_ids(name)
        mine = (submitted or {}).get(name)
        chosen = set(mine["ids"]) if mine else set(stored)
        mode = mine["mode"] if mine else ("chosen" if stored else "all")
        items, error = _load(_services if prefix == "service" else _clinics, str(what))
        if not error:  # without KiviCare's list the ids are typed instead (``manual``)
            for item_id in chosen - set(items):
                items[item_id] = {"id": item_id, "name": str(missing) % {"id": item_id}}
        rows = [{"id": i["id"], "name": i["name"], "checked": i["id"] in chosen}
                for i in sorted(items.values(), key=lambda i: (i["name"].lower(), i["id"]))]
        fixed = cfg.is_fixed(name)
        blocks.append({"name": name, "prefix": prefix, "label": BY_NAME[name].label, "help": BY_NAME[name].help,
                       "mode": mode, "all_label": all_label, "some_label": some_label, "items": rows,
                       "error": error, "manual": bool(error), "text": mine["text"] if mine else
                       ", ".join(str(i) for i in sorted(chosen)),
                       "field_error": (errors or {}).get(name, ""), "fixed": fixed,
                       "source": source_text(name) if fixed else ""})
    return blocks


# ---- KiviCare connection test ------------------------------------------------------------------

def kivicare_message(exc: Exception) -> str:
    """A plain sentence for a KiviCare client error (no stack trace, no secret)."""
    from wp_bridge.kivicare import (KiviCareAuthError, KiviCareBadResponse, KiviCareEncrypted, KiviCareNotFound,
                                    KiviCareRequestError, KiviCareUnavailable)
    url = runtime().cfg.get("kivicare.base_url") or _("(no address)")
    if isinstance(exc, KiviCareAuthError):
        return _("WordPress did not accept this user and application password. Check the user name, create a new "
                 "application password under Users > Profile > Application Passwords, and make sure the user is "
                 "an administrator.")
    if isinstance(exc, KiviCareUnavailable):
        return _("The sidecar could not reach %(url)s. Check the address and that the site is online (%(why)s).",
                 url=url, why=str(exc))
    if isinstance(exc, KiviCareNotFound):
        return _("%(url)s answered, but KiviCare's REST API is not there. Check the address is the WordPress "
                 "site's and that the KiviCare plugin is active.", url=url)
    if isinstance(exc, KiviCareBadResponse):
        return _("%(url)s answered, but not like a WordPress site with KiviCare. Check the address.", url=url)
    if isinstance(exc, KiviCareEncrypted):
        return str(exc)
    if isinstance(exc, KiviCareRequestError):
        if "not set" in str(exc):
            return _("Enter and save the KiviCare site URL first.")
        return _("KiviCare refused the request: %(why)s", why=str(exc))
    return _("The test failed (%(kind)s).", kind=type(exc).__name__)


KIVICARE_CHECK = "kivicare_check"


def test_kivicare() -> dict:
    """Call ``site_info()`` and ``addons()`` with the saved settings.

    Returns ``{"ok": bool, "at": ISO UTC, "message": str, "site_name", "timezone", "addons": [(name, active,
    version)], "warnings": [str]}``, also kept as ``state.kivicare_check`` so the page shows the detected
    add-ons after a reload; remembers the site's timezone (``state.site_timezone``, as the engine does) so
    the dashboard shows times in it.
    """
    from wp_bridge.kivicare import KiviCareError

    rt = runtime()
    result: dict = {"ok": False, "at": utcnow().isoformat(), "message": "", "site_name": "", "timezone": "",
                    "addons": [], "warnings": []}
    try:
        client = rt.kivicare()
        info = client.site_info()
        result.update(site_name=info.name, timezone=info.timezone)
        addons = client.addons()
    except KiviCareError as exc:
        result["message"] = kivicare_message(exc)
    except Exception as exc:
        log.warning("KiviCare test failed unexpectedly: %s", type(exc).__name__)
        result["message"] = _("The test failed unexpectedly (%(kind)s). The details are in the log.",
                              kind=type(exc).__name__)
    else:
        result["ok"] = True
        result["addons"] = sorted((name, active, version or "") for name, (active, version) in addons.items())
        for name, label in (("kiviPro", "KiviCare Pro"), ("googlemeet", "KiviCare Google Meet")):
            if addons.get(name, (False, None))[0]:
                result["warnings"].append(_("The %(addon)s add-on is active. It syncs to Google by itself, which "
                                            "would conflict with the sidecar; turn its Google Calendar sync off.",
                                            addon=label))
        result["message"] = _("Connected to KiviCare.")
        rt.set_state("site_timezone", info.timezone)
    rt.set_state(KIVICARE_CHECK, result)
    return result


def last_kivicare_check() -> dict | None:
    """The last "Test connection" result (``test_kivicare``), with ``checked_at`` as a datetime, or None."""
    check = runtime().get_state(KIVICARE_CHECK)
    if not isinstance(check, dict):
        return None
    return {**check, "checked_at": as_datetime(check.get("at"))}


# ---- the companion plugin ------------------------------------------------------------------------

COMPANION_SECRET = "companion.secret"

# (feature, what it does with the plugin, what happens without it)
COMPANION_FEATURES = (
    ("hints", _l("Instant updates"),
     _l("KiviCare tells the sidecar at once: changes reach Google in about a second."),
     _l("Changes reach Google within the poll interval (%(poll)s seconds).")),
    ("busy", _l("Busy times block booking"),
     _l("Busy time in the doctors' Google calendars cannot be booked in KiviCare."),
     _l("Busy times in Google don't block booking in KiviCare.")),
    ("meet", _l("Meet links in KiviCare"),
     _l("Meet links are shown to doctor and patient in KiviCare, and the patient gets them by e-mail."),
     _l("Meet links are only in Google.")),
    ("reschedule", _l("Moves from Google"),
     _l("Moving an appointment's event in Google moves the appointment in KiviCare."),
     _l("Moving an event in Google does not move the appointment.")),
    ("mail", _l("Alert e-mails"), _l("Alerts to admins and doctors are sent through the site's own e-mail."),
     _l("Alerts go through the SMTP server set under Alerts, or are shown only on the dashboard.")),
    ("sso", _l("Sign-in from KiviCare"),
     _l("A \"Google Calendar\" link in KiviCare signs staff in here: doctors see their own calendar, "
        "receptionists a read-only dashboard."),
     _l("Admins sign in with a local account; doctors connect through Connect links.")),
)


def new_companion_secret() -> str:
    """32 random bytes, URL-safe base64 without padding (PROTOCOL.md, "Shared secret")."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def companion_secret_or_none() -> str | None:
    """The stored secret, "" when unset, None when it cannot be decrypted (a replaced key file)."""
    try:
        return runtime().cfg.get(COMPANION_SECRET) or ""
    except SecretError:
        return None


def companion_message(exc: Exception) -> str:
    """A plain sentence for a companion client error (no stack trace, no secret)."""
    from wp_bridge.companion import (CompanionNotConfigured, CompanionNotInstalled, CompanionPluginNotConfigured,
                                     CompanionRefused, CompanionUnavailable)
    url = runtime().cfg.get("kivicare.base_url") or _("(no address)")
    if isinstance(exc, CompanionNotConfigured):
        return _("Enter the KiviCare site URL and generate the shared secret first.")
    if isinstance(exc, CompanionNotInstalled):
        return _("The plugin does not answer at %(url)s: it is not installed or not active. Upload the plugin's zip "
                 "in WordPress (Plugins > Add New > Upload Plugin), activate it, and paste the secret.", url=url)
    if isinstance(exc, CompanionPluginNotConfigured):
        return _("The plugin is active but has no secret yet: paste the sidecar's secret in WordPress under "
                 "Settings > KiviCare Sidecar.")
    if isinstance(exc, CompanionRefused):
        if exc.code == "kc_sidecar_stale_request":
            return _("The plugin refused the request as too old: the clocks of this server and the WordPress "
                     "server differ by more than 5 minutes. Fix the clock (NTP) on the one that is wrong.")
        if exc.status == 401:
            return _("The plugin has a different secret. Show the secret below, copy it, and paste it into the "
                     "plugin again.")
        return _("The plugin refused the request: %(why)s", why=exc.message)
    if isinstance(exc, CompanionUnavailable):
        return _("The WordPress site did not answer as expected: %(why)s", why=str(exc))
    return _("The check failed (%(kind)s).", kind=type(exc).__name__)


def test_companion() -> dict:
    """Ask the plugin's ``/status`` (even when ``companion.enabled`` is off) and remember the answer.

    Returns ``{"ok", "at", "message", "plugin_version", "kivicare_version", "features", "site_timezone"}``,
    also kept as ``state.companion_check`` for the page (and the dashboard).
    """
    from wp_bridge.companion import CompanionClient, CompanionError

    rt = runtime()
    result = {"ok": False, "at": utcnow().isoformat(), "message": "", "plugin_version": "", "kivicare_version": "",
              "features": [], "site_timezone": ""}
    secret = companion_secret_or_none()
    base = rt.cfg.get("kivicare.base_url")
    if not base:
        result["message"] = _("Enter and save the KiviCare site URL first: the plugin runs on that site.")
    elif secret is None:
        result["message"] = _("The stored secret cannot be read with the current key file. Generate a new one.")
    elif not secret:
        result["message"] = _("Generate the shared secret first, then paste it into the plugin.")
    else:
        try:
            status = CompanionClient(base, secret, timeout=(3, 10)).status()
        except CompanionError as exc:
            result["message"] = companion_message(exc)
        except Exception as exc:  # never a stack trace on the page
            log.warning("checking the companion plugin failed unexpectedly: %s", type(exc).__name__)
            result["message"] = _("The check failed unexpectedly (%(kind)s). The details are in the log.",
                                  kind=type(exc).__name__)
        else:
            result.update(ok=True, plugin_version=status.plugin_version,
                          kivicare_version=status.kivicare_version or "", features=list(status.features),
                          site_timezone=status.site_timezone,
                          message=_("The plugin answers: version %(version)s.",
                                    version=status.plugin_version or _("unknown")))
    rt.set_state("companion_check", result)
    return result


def companion_view(revealed: str | None = None, just_generated: bool = False) -> dict:
    """What the Companion plugin block shows. The secret itself only when ``revealed`` is given."""
    rt = runtime()
    cfg = rt.cfg
    secret = companion_secret_or_none()
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
                         "without": str(without_text) % {"poll": cfg.get("bridge.poll_seconds")}})
    return {
        "has_secret": bool(secret), "unreadable": secret is None, "masked": mask(secret) if secret else "",
        "fixed": cfg.is_fixed(COMPANION_SECRET),
        "source": source_text(COMPANION_SECRET) if cfg.is_fixed(COMPANION_SECRET) else "",
        "revealed": revealed, "just_generated": just_generated,
        "enabled": enabled, "check": check, "checked_at": as_datetime(check.get("at")) if check else None,
        "answering": answering,
        "last_ping_at": as_datetime(ping.get("at")) if isinstance(ping, dict) else None,
        "last_hint_at": as_datetime(hint.get("at")) if isinstance(hint, dict) else None,
        "features": features,
        "hook_url": cfg.get("web.public_url").rstrip("/"),
    }


__all__ = ["telemedicine_view", "scope_view", "saved_ids", "forget_lists", "kivicare_message", "test_kivicare",
           "last_kivicare_check", "companion_message", "test_companion", "companion_view", "new_companion_secret",
           "companion_secret_or_none", "COMPANION_SECRET", "COMPANION_FEATURES", "LIST_TTL"]
