"""Signed calls from the companion WordPress plugin: ``POST /hooks/kivicare`` and ``POST /hooks/ping``.

The contract is wp_bridge/wordpress/PROTOCOL.md ("Plugin → sidecar"). Both endpoints need no session
and no CSRF token: every request carries an HMAC signature made with the shared secret
(``companion.secret``), checked in constant time, and refused when older than 5 minutes.

Answers are JSON, never a page or a stack trace:

- ``202 {"ok": true}``: a hint was accepted; ``200 {"ok": true, "sidecar_version": …}``: a ping;
- ``401 {"error": "bad_signature" | "stale_request", "message": …}``: the signature check failed;
- ``503 {"error": "not_configured", …}``: the sidecar has no shared secret yet;
- ``400 {"error": "bad_request", …}``: the body is not the JSON the protocol describes;
- ``413 {"error": "too_large", …}``.

A hint is only a reason to look at one appointment now: it is answered at once, then handed to
``runtime.bridge.on_hint(appointment_id, event)`` by a background thread (``HintDispatcher``), which
fetches the appointment from KiviCare itself and never trusts the hint as data. Hints for the same
appointment that arrive while one is waiting are merged. A hint that cannot be handled (queue full,
engine error) only asks for an early poll: a lost hint costs latency, never a change.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from urllib.parse import urlparse

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from wp_bridge.signing import BadSignature, SignatureError, StaleRequest, verify

from ..crypto import SecretError
from ..storage import close_database
from ..storage.models import utcnow
from .common import runtime

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__, url_prefix="/hooks")

SIDECAR_VERSION = "0.3.0"
MAX_BODY = 16 * 1024
EVENTS = ("kc_after_create_appointment", "kc_appointment_updated", "kc_appointment_status_update",
          "kc_appointment_cancelled", "kc_appointment_deleted", "kc_sidecar_rescheduled")
_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # a future plugin may send other hook names: still a hint
_APPOINTMENT_ID = re.compile(r"^[0-9]{1,20}$")
NOTE_EVERY = 60.0  # seconds between two writes of state.companion_hint (the settings page shows it)


# ---- the background hand-over to the engine ---------------------------------------------------------

class HintDispatcher:
    """Runs ``runtime.bridge.on_hint`` off the request thread, one hint at a time, merged per appointment.

    The worker thread starts on the first hint and ends after ``idle`` seconds without one.
    ``drain(timeout)`` waits until every accepted hint was handled (for tests and shutdown).
    """

    def __init__(self, rt, idle: float = 5.0, maxsize: int = 1000):
        self.rt = rt
        self.idle = idle
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._pending: dict[str, str] = {}  # appointment id -> latest event, while waiting in the queue
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._noted = 0.0
        self.handled = 0
        self.failed = 0

    def submit(self, appointment_id: str, event: str) -> bool:
        """Queue a hint; False when it could not be queued (an early poll is requested instead)."""
        with self._lock:
            if appointment_id in self._pending:
                self._pending[appointment_id] = event  # merged: one fetch covers both
                return True
            try:
                self._queue.put_nowait(appointment_id)
            except queue.Full:
                self.rt.request_poll()
                return False
            self._pending[appointment_id] = event
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="companion-hints", daemon=True)
                self._thread.start()
        return True

    def drain(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _run(self) -> None:
        while True:
            try:
                appointment_id = self._queue.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            with self._lock:
                event = self._pending.pop(appointment_id, "")
            try:
                self._handle(appointment_id, event)
            finally:
                close_database()  # this thread's connection
                self._queue.task_done()

    def _handle(self, appointment_id: str, event: str) -> None:
        try:
            on_hint = getattr(self.rt.bridge, "on_hint", None)
            if on_hint is None:  # an engine without targeted fetches: poll now instead
                self.rt.request_poll()
            else:
                on_hint(appointment_id, event)
            self.handled += 1
        except Exception as exc:  # never kill the worker; the poll catches up
            self.failed += 1
            log.warning("hint for appointment %s (%s) failed: %s", appointment_id, event, type(exc).__name__)
            self.rt.request_poll()
        now = time.monotonic()
        if now - self._noted > NOTE_EVERY:
            self._noted = now
            try:
                self.rt.set_state("companion_hint", {"at": utcnow().isoformat(), "event": event})
            except Exception as exc:  # a health note must not fail the hint
                log.warning("could not note the last hint: %s", type(exc).__name__)


def dispatcher() -> HintDispatcher:
    return current_app.extensions["sidecar_hints"]


# ---- the signature check ---------------------------------------------------------------------------

def _error(status: int, code: str, message: str):
    return jsonify({"error": code, "message": message}), status


def companion_secret() -> str:
    """The shared secret, or "" when unset or unreadable (a replaced key file)."""
    try:
        return runtime().cfg.get("companion.secret") or ""
    except SecretError:
        log.warning("the companion secret cannot be decrypted with the current key file")
        return ""


def _candidate_paths() -> list[str]:
    """The path the plugin signed: as this app sees it, or below the public URL's path (a proxy that
    strips a prefix such as ``/calendar``)."""
    paths = [request.script_root + request.path]
    prefix = urlparse(str(runtime().cfg.get("web.public_url") or "")).path.rstrip("/")
    if prefix and prefix + request.path not in paths:
        paths.append(prefix + request.path)
    return paths


def check_signature():
    """None when the request is signed with the shared secret and fresh; else the JSON error answer."""
    secret = companion_secret()
    if not secret:
        return _error(503, "not_configured", "The sidecar has no companion plugin secret yet. Generate one in the "
                                             "sidecar's settings and paste it into the plugin.")
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _error(413, "too_large", f"The body is larger than {MAX_BODY} bytes.")
    body = request.get_data(cache=True)
    if len(body) > MAX_BODY:
        return _error(413, "too_large", f"The body is larger than {MAX_BODY} bytes.")
    failure: SignatureError | None = None
    for path in _candidate_paths():
        try:
            verify(secret, request.method, path, body, request.headers)
            return None
        except StaleRequest as exc:
            failure = exc
            break
        except BadSignature as exc:
            failure = failure or exc
    log.info("refused a companion request to %s: %s", request.path, failure.code)
    return _error(401, failure.code, str(failure))


def _json_body() -> dict | None:
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


# ---- endpoints ---------------------------------------------------------------------------------------

@bp.errorhandler(Exception)
def unexpected(exc):
    """JSON for the plugin, never a page or a stack trace."""
    if isinstance(exc, HTTPException):
        return _error(exc.code or 500, "http_error", exc.description or exc.name)
    log.warning("companion hook %s failed: %s", request.path, type(exc).__name__)
    return _error(500, "internal_error", "The sidecar could not handle this request; the details are in its log.")


@bp.route("/kivicare", methods=["POST"])
def kivicare():
    """A hint from the plugin: ``{"event", "appointment_id", "site", "sent_at"}``. ``202`` at once."""
    refused = check_signature()
    if refused is not None:
        return refused
    body = _json_body()
    if body is None:
        return _error(400, "bad_request", "The body must be a JSON object.")
    event = body.get("event")
    appointment_id = body.get("appointment_id")
    if isinstance(appointment_id, int) and not isinstance(appointment_id, bool):
        appointment_id = str(appointment_id)
    if not isinstance(event, str) or not _EVENT.match(event):
        return _error(400, "bad_request", "event must be a KiviCare hook name such as kc_appointment_updated.")
    if not isinstance(appointment_id, str) or not _APPOINTMENT_ID.match(appointment_id):
        return _error(400, "bad_request", "appointment_id must be an appointment id such as \"36\".")
    if event not in EVENTS:
        log.info("hint with an unknown event %s: treated as a change", event)
    queued = dispatcher().submit(appointment_id, event)
    return jsonify({"ok": True, "queued": queued}), 202


@bp.route("/ping", methods=["POST"])
def ping():
    """The plugin's "Test connection" button: ``{"site", "plugin_version"}`` → ``200 {"ok", "sidecar_version"}``."""
    refused = check_signature()
    if refused is not None:
        return refused
    body = _json_body()
    if body is None:
        return _error(400, "bad_request", "The body must be a JSON object.")
    try:
        runtime().set_state("companion_ping", {"at": utcnow().isoformat(),
                                               "plugin_version": str(body.get("plugin_version") or "")[:20],
                                               "site": str(body.get("site") or "")[:200]})
    except Exception as exc:
        log.warning("could not note the plugin's ping: %s", type(exc).__name__)
    return jsonify({"ok": True, "sidecar_version": SIDECAR_VERSION})


__all__ = ["bp", "HintDispatcher", "SIDECAR_VERSION", "check_signature", "companion_secret"]
