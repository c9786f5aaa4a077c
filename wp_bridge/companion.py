"""A client for the companion WordPress plugin's signed routes (``/wp-json/kc-sidecar/v1``).

The contract is wp_bridge/wordpress/PROTOCOL.md ("Sidecar → plugin"). Every request is signed with
the shared secret (``wp_bridge.signing``); bodies are compact JSON; every time sent or received is
UTC, ISO 8601 with ``Z`` (``2025-03-04T13:30:00Z``), handed to callers as aware ``datetime`` objects.

Errors are named so the engine can decide between retry and give-up:

- ``CompanionNotConfigured``: no shared secret (or no site URL) on the sidecar's side;
- ``CompanionNotInstalled``: WordPress answers ``404 rest_no_route`` (the plugin is not active);
- ``CompanionUnavailable``: connection refused, timeout, 5xx, or an answer that is not the plugin's
  JSON (``CompanionBadResponse``; ``CompanionPluginNotConfigured`` when the plugin has no secret yet);
- ``CompanionRefused(status, code, message)``: the plugin understood and said no: 401
  ``kc_sidecar_bad_signature`` / ``kc_sidecar_stale_request``, 404 ``kc_sidecar_not_found``, 409
  ``kc_sidecar_slot_taken``, 422 ``kc_sidecar_not_movable``, 400 for a body it does not accept.

Every error carries ``status`` (0 without a response), ``code`` and ``message``; no secret is ever
put in a message.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable
from urllib.parse import urlparse

import requests

from .signing import signed_headers

NAMESPACE = "/wp-json/kc-sidecar/v1"
FEATURES = ("hints", "busy", "meet", "reschedule", "mail", "sso")
MAX_BLOCK_ID = 64
_APPOINTMENT_ID = re.compile(r"^[0-9]{1,20}$")


# ---- errors ---------------------------------------------------------------------------------------

class CompanionError(Exception):
    """Base class: ``status`` (HTTP status, 0 without a response), ``code`` and ``message``."""

    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class CompanionNotConfigured(CompanionError):
    """The sidecar has no shared secret (or no KiviCare site URL): nothing can be signed."""


class CompanionNotInstalled(CompanionError):
    """WordPress answered ``404 rest_no_route``: the plugin is not installed or not active."""


class CompanionUnavailable(CompanionError):
    """No usable answer now: connection error, timeout, 5xx. Worth retrying later."""


class CompanionBadResponse(CompanionUnavailable):
    """An answer that is not the plugin's JSON (an HTML page, a redirect, a body of the wrong shape)."""


class CompanionPluginNotConfigured(CompanionUnavailable):
    """``503 kc_sidecar_not_configured``: the plugin is active but nobody pasted the secret into it yet."""


class CompanionRefused(CompanionError):
    """The plugin refused the request: ``CompanionRefused(status, code, message)``.

    401 ``kc_sidecar_bad_signature`` / ``kc_sidecar_stale_request`` (secrets differ, or clocks are off),
    404 ``kc_sidecar_not_found`` (no such appointment), 409 ``kc_sidecar_slot_taken``, 422
    ``kc_sidecar_not_movable`` (checked in or out), 400 (a body the plugin does not accept).
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message, status, code)

    def __reduce__(self):  # picklable despite the reordered arguments
        return (type(self), (self.status, self.code, self.message))


# ---- values -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompanionStatus:
    """``GET /status``: ``plugin_version`` ("1.0.0"), ``kivicare_version`` ("4.3.0" or None when KiviCare
    is not active), ``features`` (a subset of ``FEATURES``), ``site_timezone`` (IANA name or "+01:00")."""

    plugin_version: str
    kivicare_version: str | None
    features: tuple[str, ...]
    site_timezone: str

    def has(self, feature: str) -> bool:
        return feature in self.features


@dataclass(frozen=True)
class BusyBlock:
    """One busy interval of a doctor, in UTC: ``id`` (opaque, ≤ 64 characters; the Google event id),
    ``start`` < ``end`` (aware datetimes; naive ones are refused), ``name`` (what KiviCare may show)."""

    id: str
    start: datetime
    end: datetime
    name: str = "Busy"


def utc_z(value: datetime) -> str:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, seconds). ValueError for a naive one."""
    if not isinstance(value, datetime):
        raise ValueError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("times sent to the companion plugin must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(value: Any) -> datetime:
    """``"…Z"`` (or any ISO 8601 with an offset) → aware UTC datetime. ValueError otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"not a time: {value!r}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"time without an offset: {value!r}")
    return parsed.astimezone(timezone.utc)


def _appointment_id(value: Any) -> str:
    text = str(value).strip()
    if not _APPOINTMENT_ID.match(text):
        raise ValueError(f"not an appointment id: {value!r}")
    return text


# ---- the client -----------------------------------------------------------------------------------

class CompanionClient:
    """``CompanionClient(base_url, secret, timeout=(3, 15))``: ``base_url`` is the WordPress site's address
    (the KiviCare site URL, without ``/wp-json``); ``timeout`` is (connect, read) seconds.

    Thread-safe (one ``requests.Session`` per thread). Redirects are not followed: a site that
    redirects (http → https, another host) must be entered under its final address, because the
    signature covers the path and a redirected POST would lose its body.
    """

    def __init__(self, base_url: str, secret: str, timeout: tuple[float, float] = (3, 15)):
        self.base_url = (base_url or "").rstrip("/")
        self._secret = secret or ""
        self.timeout = timeout
        self._local = threading.local()
        self._prefix = urlparse(self.base_url).path.rstrip("/") if self.base_url else ""

    def __repr__(self) -> str:  # never the secret
        return f"CompanionClient({self.base_url!r})"

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self._secret)

    # ---- transport ----------------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update({"Accept": "application/json", "User-Agent": "kivicare-calendar-sidecar"})
        return session

    def _call(self, method: str, route: str, body: dict | None = None) -> dict:
        """Send one signed request to ``NAMESPACE + route``; the decoded JSON object of a 2xx answer."""
        if not self.configured:
            raise CompanionNotConfigured("the companion plugin's shared secret or the KiviCare site URL is not set")
        path = self._prefix + NAMESPACE + route
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = signed_headers(self._secret, method, path, data)
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.base_url + NAMESPACE + route
        what = f"{method} {NAMESPACE}{route}"
        try:
            response = self._session.request(method, url, data=data or None, headers=headers,
                                             timeout=self.timeout, allow_redirects=False)
        except requests.Timeout as exc:
            raise CompanionUnavailable(f"{what}: the WordPress site did not answer in time") from exc
        except requests.RequestException as exc:
            raise CompanionUnavailable(f"{what}: cannot reach the WordPress site ({type(exc).__name__})") from exc
        return self._decode(response, what)

    @staticmethod
    def _decode(response: requests.Response, what: str) -> dict:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        code = str(payload.get("code") or payload.get("error") or "") if isinstance(payload, dict) else ""
        message = str(payload.get("message") or "") if isinstance(payload, dict) else ""
        if 200 <= status < 300:
            if not isinstance(payload, dict):
                raise CompanionBadResponse(f"{what}: the answer is not JSON", status)
            if payload.get("ok") is not True:
                raise CompanionBadResponse(f"{what}: the answer does not say ok", status, code)
            return payload
        if 300 <= status < 400:
            where = response.headers.get("Location", "")
            raise CompanionBadResponse(f"{what}: the site redirects to {where or 'another address'}; enter the "
                                       "site's final address (https, with or without www) as the KiviCare site URL",
                                       status)
        if status == 404 and (code == "rest_no_route" or not code):
            raise CompanionNotInstalled(f"{what}: the companion plugin is not installed or not active "
                                        "(WordPress has no such route)", status, code or "rest_no_route")
        if status == 503 and code == "kc_sidecar_not_configured":
            raise CompanionPluginNotConfigured(f"{what}: the plugin has no shared secret yet; paste it in "
                                               "WordPress under Settings > KiviCare Sidecar", status, code)
        if status >= 500:
            raise CompanionUnavailable(f"{what}: the WordPress site answered {status}"
                                       + (f" ({code}: {message})" if code else ""), status, code)
        if not code:
            raise CompanionBadResponse(f"{what}: unexpected answer {status}", status)
        raise CompanionRefused(status, code, message or f"{what}: refused ({status})")

    # ---- routes --------------------------------------------------------------------------------------

    def status(self) -> CompanionStatus:
        """``GET /status`` (PROTOCOL.md): which plugin and KiviCare versions run, and what the plugin offers."""
        data = self._call("GET", "/status")
        features = data.get("features")
        if not isinstance(features, list):
            raise CompanionBadResponse("GET /status: no feature list in the answer", 200)
        kivicare_version = data.get("kivicare_version")
        return CompanionStatus(plugin_version=str(data.get("plugin_version") or ""),
                               kivicare_version=str(kivicare_version) if kivicare_version else None,
                               features=tuple(str(f) for f in features),
                               site_timezone=str(data.get("site_timezone") or ""))

    def push_busy(self, doctor_id: int, window_start: datetime, window_end: datetime,
                  blocks: Iterable[BusyBlock]) -> int:
        """``PUT /busy``: replace every stored busy block of ``doctor_id`` that overlaps
        [``window_start``, ``window_end``) (aware datetimes, sent as UTC) with ``blocks``.

        KiviCare's slot generator then treats them as taken (``kc_external_busy_slots*``). Returns how
        many blocks the plugin stored. An empty ``blocks`` clears the window. ValueError for naive
        times, an id longer than 64 characters, or a block that does not end after it starts.
        """
        items = []
        for block in blocks:
            if not block.id or len(block.id) > MAX_BLOCK_ID:
                raise ValueError(f"a busy block id must have 1 to {MAX_BLOCK_ID} characters")
            start, end = utc_z(block.start), utc_z(block.end)  # ValueError for naive times first
            if block.end <= block.start:
                raise ValueError("a busy block must end after it starts")
            items.append({"id": block.id, "start": start, "end": end, "name": block.name or "Busy"})
        first, last = utc_z(window_start), utc_z(window_end)
        if window_end <= window_start:
            raise ValueError("the window must end after it starts")
        data = self._call("PUT", "/busy", {"doctor_id": int(doctor_id), "window_start": first,
                                           "window_end": last, "blocks": items})
        try:
            return int(data.get("stored", len(items)))
        except (TypeError, ValueError):
            raise CompanionBadResponse("PUT /busy: 'stored' is not a number", 200) from None

    def set_meet_link(self, appointment_id: str | int, url: str, event_id: str, calendar_id: str) -> bool:
        """``PUT /appointments/{id}/meet``: store the appointment's Google Meet URL (and the Google event and
        calendar it belongs to). True when the link was not stored before (the plugin then e-mails the
        patient). KiviCare then marks the appointment as a video consultation with a join link.
        """
        if not isinstance(url, str) or not url.startswith("https://"):
            raise ValueError("a Meet link must be an https:// URL")
        data = self._call("PUT", f"/appointments/{_appointment_id(appointment_id)}/meet",
                          {"url": url, "event_id": event_id or "", "calendar_id": calendar_id or ""})
        return bool(data.get("first"))

    def remove_meet_link(self, appointment_id: str | int) -> None:
        """``DELETE /appointments/{id}/meet``: the appointment is no longer a video consultation."""
        self._call("DELETE", f"/appointments/{_appointment_id(appointment_id)}/meet")

    def reschedule(self, appointment_id: str | int, start_utc: datetime) -> tuple[datetime, datetime]:
        """``POST /appointments/{id}/reschedule``: move the appointment to ``start_utc`` keeping its duration,
        through KiviCare's own model (both its UTC and local columns; ``kc_appointment_updated`` fires).

        Returns the new ``(start, end)`` (aware UTC). ``CompanionRefused`` 409 ``kc_sidecar_slot_taken``
        (another appointment or busy block is there), 422 ``kc_sidecar_not_movable`` (checked in or
        out), 404 ``kc_sidecar_not_found``.
        """
        data = self._call("POST", f"/appointments/{_appointment_id(appointment_id)}/reschedule",
                          {"start": utc_z(start_utc)})
        try:
            return parse_utc(data.get("start")), parse_utc(data.get("end"))
        except ValueError as exc:
            raise CompanionBadResponse(f"POST reschedule: {exc}", 200) from None

    def send_mail(self, to: str | Iterable[str], subject: str, text: str) -> None:
        """``POST /mail``: send a plain-text e-mail through the site's own mail settings (``wp_mail``).

        ``to``: one address or several. A failed ``wp_mail`` is ``CompanionUnavailable`` (502
        ``kc_sidecar_mail_failed``).
        """
        recipients = [to] if isinstance(to, str) else [str(a) for a in to]
        recipients = [a.strip() for a in recipients if a and a.strip()]
        if not recipients:
            raise ValueError("no recipient")
        self._call("POST", "/mail", {"to": recipients, "subject": subject, "text": text})


__all__ = ["CompanionClient", "CompanionStatus", "BusyBlock", "CompanionError", "CompanionNotConfigured",
           "CompanionNotInstalled", "CompanionUnavailable", "CompanionBadResponse", "CompanionPluginNotConfigured",
           "CompanionRefused", "FEATURES", "NAMESPACE", "utc_z", "parse_utc"]
