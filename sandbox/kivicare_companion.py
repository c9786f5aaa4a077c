"""The companion WordPress plugin (``kivicare-sidecar-bridge``) as the KiviCare sandbox emulates it.

Opt-in: ``KiviCareSandbox(companion=True, companion_secret=…, sidecar_url=…)`` or
``sb.install_companion(secret, sidecar_url)``. The sandbox then answers the plugin's REST namespace
``/wp-json/kc-sidecar/v1`` exactly as wp_bridge/wordpress/PROTOCOL.md says (signature and age checks,
WordPress error shapes, the same storage and answers), and behaves like a site with the plugin active:

* busy blocks pushed to ``PUT /busy`` feed KiviCare's slot generator (``kc_external_busy_slots``) and
  its booking check (``kc_external_busy_slots_single``): those slots disappear from
  ``GET /appointments/slots`` and ``POST /appointments`` over them answers 409;
* a Meet link stored with ``PUT /appointments/{id}/meet`` makes ``video_consultation`` true in the
  appointment's list item, ``GET /appointments/{id}`` and ``/view``, and (the first time) e-mails the
  patient; ``DELETE`` removes it;
* ``POST /appointments/{id}/reschedule`` keeps the duration, refuses 409 (another appointment or a busy
  block other than the appointment's own event) and 422 (checked in / checked out), e-mails the
  patient, and sends a ``kc_sidecar_rescheduled`` hint;
* ``POST /mail`` records the mail (``mail_fails = True`` makes it answer 502 like a failing ``wp_mail``);
* staff actions (Python API and ``/__sandbox__``) and KiviCare's own REST writes send signed hints to
  ``POST {sidecar_url}/hooks/kivicare`` from a background thread (the booking never waits), as the
  plugin's shutdown hook does.

Without the plugin installed the ``kc-sidecar/v1`` routes answer WordPress's ``404 rest_no_route``.

Python API (``sb.companion`` once installed)::

    c.secret, c.sidecar_url, c.enabled_features, c.mail_fails
    c.busy_blocks(doctor_id) -> [{"id", "start", "end", "name"}]   # UTC datetimes
    c.meet_links -> {appointment_id(str): {"url", "event_id", "calendar_id"}}
    c.mails -> [{"to": [...], "subject", "text", "kind"}]         # kind: relay | meet_link | rescheduled
    c.hints -> [{"event", "appointment_id", "status", "error"}]   # what was sent and the answer
    c.flush_hints(timeout=5) -> bool     # wait until every queued hint was sent
    c.sso_token(user_id, roles=None, ttl=120) -> str   # what the "Google Calendar" link carries
    c.sso_url(user_id, ...) -> "{sidecar_url}/sso?token=…"
"""

from __future__ import annotations

import json
import logging
import queue
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import requests
from flask import Response

from wp_bridge.signing import BadSignature, StaleRequest, make_sso_token, signed_headers, verify

if TYPE_CHECKING:  # pragma: no cover
    from sandbox.kivicare import KiviCareSandbox

log = logging.getLogger(__name__)

NAMESPACE = "/kc-sidecar/v1"
PLUGIN_VERSION = "1.0.0"
FEATURES = ("hints", "busy", "meet", "reschedule", "mail", "sso")
HINT_EVENTS = ("kc_after_create_appointment", "kc_appointment_updated", "kc_appointment_status_update",
               "kc_appointment_cancelled", "kc_appointment_deleted", "kc_sidecar_rescheduled")
NOT_MOVABLE = (3, 4)  # Check-Out, Check-In
MAX_BLOCK_ID = 64
MAX_RECIPIENTS = 50


class _Refuse(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$")


def _utc(value: Any, name: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset (like the plugin's ``KC_Sidecar_Time::parse_utc``) -> aware UTC."""
    if not isinstance(value, str) or not _ISO.match(value):
        raise _Refuse(400, "kc_sidecar_bad_request", f"{name} must be a UTC ISO 8601 time like 2025-03-04T13:30:00Z")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        raise _Refuse(400, "kc_sidecar_bad_request", f"{name} is not a valid time") from None


def _z(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CompanionEmulation:
    """The plugin's state and routes inside one ``KiviCareSandbox`` (see the module docstring)."""

    def __init__(self, sandbox: "KiviCareSandbox", secret: str, sidecar_url: str | None = None) -> None:
        self.sb = sandbox
        self.secret = secret or ""
        self.sidecar_url = (sidecar_url or "").rstrip("/")
        self.enabled_features = list(FEATURES)
        self.kivicare_version = "4.3.0"
        self.mail_fails = False
        self.patient_mail_on_meet = True
        self.patient_mail_on_move = True
        self._busy: dict[int, dict[str, dict]] = {}
        self.meet_links: dict[str, dict] = {}
        self.mails: list[dict] = []
        self.hints: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()

    # ---- read by the sandbox -------------------------------------------------------------------

    def busy_blocks(self, doctor_id: int) -> list[dict]:
        """The stored blocks of one doctor, sorted by start (UTC datetimes)."""
        with self.sb._lock:
            rows = [dict(b, id=i) for i, b in self._busy.get(int(doctor_id), {}).items()]
        return sorted(rows, key=lambda b: (b["start"], b["id"]))

    def blocking(self, doctor_id: int, start: datetime, end: datetime,
                 except_ids: tuple[str, ...] = ()) -> list[tuple[datetime, datetime]]:
        """Busy intervals of ``doctor_id`` overlapping [start, end), as ``kc_external_busy_slots`` serves them."""
        if "busy" not in self.enabled_features:
            return []
        return [(b["start"], b["end"]) for i, b in self._busy.get(int(doctor_id), {}).items()
                if i not in except_ids and b["start"] < end and b["end"] > start]

    def meet_url(self, appointment_id: int) -> str | None:
        """The stored join URL of an appointment, or None."""
        if "meet" not in self.enabled_features:
            return None
        return (self.meet_links.get(str(appointment_id)) or {}).get("url")

    # ---- hints (plugin -> sidecar) -------------------------------------------------------------

    def hint(self, event: str, appointment_id: Any) -> None:
        """Queue a signed ``POST {sidecar_url}/hooks/kivicare``; sent from a background thread."""
        if "hints" not in self.enabled_features:
            return
        self._queue.put((event, str(appointment_id)))
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._send_hints, name="kc-sidecar-hints", daemon=True)
                self._worker.start()

    def flush_hints(self, timeout: float = 5.0) -> bool:
        """Wait until every queued hint has been sent (or failed). False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _send_hints(self) -> None:
        while True:
            try:
                event, appointment_id = self._queue.get(timeout=2.0)
            except queue.Empty:
                return
            record = {"event": event, "appointment_id": appointment_id, "status": None, "error": ""}
            try:
                if not (self.sidecar_url and self.secret):
                    record["error"] = "no sidecar URL or secret"
                else:
                    body = json.dumps({"event": event, "appointment_id": appointment_id,
                                       "site": self.sb.base_url, "sent_at": int(time.time())},
                                      separators=(",", ":")).encode()
                    path = urlparse(self.sidecar_url).path.rstrip("/") + "/hooks/kivicare"
                    headers = {"Content-Type": "application/json",
                               **signed_headers(self.secret, "POST", path, body)}
                    answer = requests.post(self.sidecar_url + "/hooks/kivicare", data=body, headers=headers,
                                           timeout=(1, 2))
                    record["status"] = answer.status_code
            except requests.RequestException as exc:
                record["error"] = type(exc).__name__
            finally:
                self.hints.append(record)
                self._queue.task_done()

    # ---- single sign-on --------------------------------------------------------------------------

    def sso_token(self, user_id: int, *, roles: list[str] | None = None, ttl: int = 120,
                  issued_at: float | None = None, jti: str | None = None) -> str:
        """The token the plugin's "Google Calendar" link carries for WordPress user ``user_id``."""
        with self.sb._lock:
            user = self.sb._users.get(int(user_id))
            if user is None:
                raise KeyError(f"user {user_id} not found")
            payload = {"uid": user.id, "roles": list(roles) if roles is not None else [user.role],
                       "name": user.display_name, "email": user.email,
                       "exp": int(issued_at if issued_at is not None else time.time()) + int(ttl),
                       "jti": jti or secrets.token_hex(16), "site": self.sb.base_url}
        return make_sso_token(self.secret, payload)

    def sso_url(self, user_id: int, **kwargs: Any) -> str:
        return f"{self.sidecar_url}/sso?token={self.sso_token(user_id, **kwargs)}"

    # ---- REST (sidecar -> plugin) ----------------------------------------------------------------

    def handle(self, req: Any, route: str) -> Response:
        """Answer one request to ``/wp-json/kc-sidecar/v1/...`` (``route`` starts with ``/kc-sidecar/v1``)."""
        sub = route[len(NAMESPACE):] or "/"
        method = req.method
        table = [
            (r"/status", "GET", self._status),
            (r"/busy", "PUT", self._push_busy),
            (r"/appointments/(?P<id>\d+)/meet", "PUT", self._set_meet),
            (r"/appointments/(?P<id>\d+)/meet", "DELETE", self._remove_meet),
            (r"/appointments/(?P<id>\d+)/reschedule", "POST", self._reschedule),
            (r"/mail", "POST", self._mail),
        ]
        for pattern, wanted, handler in table:
            match = re.fullmatch(pattern, sub)
            if match and method == wanted:
                break
        else:
            return self._error(404, "rest_no_route", "No route was found matching the URL and request method.")
        if not self.secret:
            return self._error(503, "kc_sidecar_not_configured",
                               "The KiviCare Sidecar Bridge has no shared secret yet.")
        raw = req.get_data(cache=True)
        try:
            verify(self.secret, method, req.path, raw, req.headers)
        except StaleRequest as exc:
            return self._error(401, "kc_sidecar_stale_request", str(exc))
        except BadSignature as exc:
            return self._error(401, "kc_sidecar_bad_signature", str(exc))
        body: dict = {}
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return self._error(400, "rest_invalid_json", "Invalid JSON body passed.")
            if not isinstance(body, dict):
                return self._error(400, "kc_sidecar_bad_request", "The body must be a JSON object.")
        try:
            with self.sb._lock:
                status, payload = handler(body, **match.groupdict())
        except _Refuse as refusal:
            return self._error(refusal.status, refusal.code, refusal.message)
        return self.sb._json(status, payload)

    def _error(self, status: int, code: str, message: str) -> Response:
        return self.sb._json(status, {"code": code, "message": message, "data": {"status": status}})

    def _status(self, _body: dict) -> tuple:
        return 200, {"ok": True, "plugin_version": PLUGIN_VERSION, "kivicare_version": self.kivicare_version,
                     "features": list(self.enabled_features), "site_timezone": self.sb.site_timezone}

    def _push_busy(self, body: dict) -> tuple:
        doctor_id = body.get("doctor_id")
        if isinstance(doctor_id, str) and doctor_id.isdigit():
            doctor_id = int(doctor_id)
        if isinstance(doctor_id, bool) or not isinstance(doctor_id, int) or doctor_id <= 0:
            raise _Refuse(400, "kc_sidecar_bad_request", "doctor_id must be a positive integer")
        window_start = _utc(body.get("window_start"), "window_start")
        window_end = _utc(body.get("window_end"), "window_end")
        if window_end <= window_start:
            raise _Refuse(400, "kc_sidecar_bad_request", "window_end must be after window_start")
        blocks = body.get("blocks")
        if not isinstance(blocks, list):
            raise _Refuse(400, "kc_sidecar_bad_request", "blocks must be a list")
        new: dict[str, dict] = {}
        for item in blocks:
            if not isinstance(item, dict):
                raise _Refuse(400, "kc_sidecar_bad_request", "each block must be an object")
            block_id = item.get("id")
            if not isinstance(block_id, str) or not 0 < len(block_id) <= MAX_BLOCK_ID:
                raise _Refuse(400, "kc_sidecar_bad_request", f"each block needs an id of 1 to {MAX_BLOCK_ID} characters")
            start, end = _utc(item.get("start"), "start"), _utc(item.get("end"), "end")
            if end <= start:
                raise _Refuse(400, "kc_sidecar_bad_request", "a block must end after it starts")
            new[block_id] = {"start": start, "end": end, "name": str(item.get("name") or "Busy")[:190]}
        stored = self._busy.setdefault(doctor_id, {})
        for block_id in [i for i, b in stored.items() if b["start"] < window_end and b["end"] > window_start]:
            del stored[block_id]
        stored.update(new)
        return 200, {"ok": True, "stored": len(new)}

    def _appointment(self, id: str):
        appt = self.sb._appts.get(int(id))
        if appt is None:
            raise _Refuse(404, "kc_sidecar_not_found", "Appointment not found.")
        return appt

    def _set_meet(self, body: dict, id: str) -> tuple:
        url = body.get("url").strip() if isinstance(body.get("url"), str) else ""
        if not url.startswith("https://") or len(url) > 2048 or any(ch in url for ch in " <>\"'"):
            raise _Refuse(400, "kc_sidecar_bad_request", "url must be an https URL.")
        appt = self._appointment(id)
        first = str(appt.id) not in self.meet_links
        self.meet_links[str(appt.id)] = {"url": url, "event_id": str(body.get("event_id") or "")[:255],
                                         "calendar_id": str(body.get("calendar_id") or "")[:255]}
        if first and self.patient_mail_on_meet:
            self._mail_patient(appt, "meet_link", "Your video consultation link",
                               f"Join your video consultation at the appointment time: {url}")
        return 200, {"ok": True, "first": first}

    def _remove_meet(self, _body: dict, id: str) -> tuple:
        self.meet_links.pop(str(int(id)), None)
        return 200, {"ok": True}

    def _reschedule(self, body: dict, id: str) -> tuple:
        start = _utc(body.get("start"), "start")
        appt = self._appointment(id)
        if appt.status in NOT_MOVABLE:
            raise _Refuse(422, "kc_sidecar_not_movable", "A checked-in or checked-out appointment cannot be moved.")
        end = start + (appt.end_utc - appt.start_utc)
        if start == appt.start_utc:  # nothing to do: no hint, no e-mail
            return 200, {"ok": True, "appointment_id": str(appt.id), "start": _z(start), "end": _z(end)}
        for other in self.sb._appts.values():
            if (other.id != appt.id and other.doctor_id == appt.doctor_id and other.status != 0
                    and other.start_utc < end and other.end_utc > start):
                raise _Refuse(409, "kc_sidecar_slot_taken", "Another appointment of this doctor overlaps the new time.")
        own_event = self.meet_links.get(str(appt.id), {}).get("event_id", "")
        if self.blocking(appt.doctor_id, start, end, except_ids=(own_event,) if own_event else ()):
            raise _Refuse(409, "kc_sidecar_slot_taken", "The doctor is busy in their calendar at the new time.")
        zone = _zone(self.sb._doctor_tz(appt.doctor_id))
        day = start.astimezone(zone).date()
        if self.sb._on_leave(appt.doctor_id, appt.clinic_id, day) or any(
                b_start < end and b_end > start
                for b_start, b_end in self.sb._holiday_blocks(appt.doctor_id, appt.clinic_id, day)):
            raise _Refuse(409, "kc_sidecar_slot_taken", "The doctor is on leave (KiviCare holiday) at the new time.")
        appt.start_utc, appt.end_utc = start, end
        if self.patient_mail_on_move:
            local = start.astimezone(_zone(appt.tz or self.sb.site_timezone))
            self._mail_patient(appt, "rescheduled", "Your appointment moved",
                               f"Your appointment is now on {local:%Y-%m-%d} at {local:%H:%M}.")
        self.hint("kc_sidecar_rescheduled", appt.id)
        return 200, {"ok": True, "appointment_id": str(appt.id), "start": _z(start), "end": _z(end)}

    def _mail(self, body: dict) -> tuple:
        to, subject, text = body.get("to"), body.get("subject"), body.get("text")
        if (not isinstance(to, list) or not 0 < len(to) <= MAX_RECIPIENTS
                or not all(isinstance(a, str) and re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a) for a in to)
                or not isinstance(subject, str) or not subject.strip() or not isinstance(text, str)):
            raise _Refuse(400, "kc_sidecar_bad_request",
                          f"Need 1 to {MAX_RECIPIENTS} valid addresses in to, a subject and a text.")
        if self.mail_fails:
            raise _Refuse(502, "kc_sidecar_mail_failed", "wp_mail() could not send the message.")
        self.mails.append({"to": list(to), "subject": subject, "text": text, "kind": "relay"})
        return 200, {"ok": True}

    def _mail_patient(self, appt: Any, kind: str, subject: str, text: str) -> None:
        patient = self.sb._users.get(appt.patient_id)
        if patient is None or not patient.email or "mail" not in self.enabled_features:
            return
        self.mails.append({"to": [patient.email], "subject": subject, "text": text, "kind": kind,
                           "appointment_id": str(appt.id)})

    # ---- /__sandbox__/companion ------------------------------------------------------------------

    def snapshot(self) -> dict:
        """JSON-ready state for ``GET /__sandbox__/companion``."""
        with self.sb._lock:
            return {"sidecar_url": self.sidecar_url, "features": list(self.enabled_features),
                    "busy": {str(d): [{"id": i, "start": _z(b["start"]), "end": _z(b["end"]), "name": b["name"]}
                                      for i, b in sorted(blocks.items(), key=lambda kv: kv[1]["start"])]
                             for d, blocks in self._busy.items()},
                    "meet_links": dict(self.meet_links), "mails": list(self.mails), "hints": list(self.hints)}


def _zone(name: str):
    from sandbox.kivicare import _zone as zone
    return zone(name)


__all__ = ["CompanionEmulation", "FEATURES", "HINT_EVENTS", "PLUGIN_VERSION"]
