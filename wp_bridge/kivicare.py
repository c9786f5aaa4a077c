"""A typed client for KiviCare 4.3's REST API (``/wp-json/kivicare/v1``), read as it really behaves.

Follows ../shared/kivicare/API.md: WordPress Application Password (HTTP Basic) on every call, a
constant ``X-KC-Client-Id`` header (1.6), the ``{status, message, data}`` envelope and WordPress
error shapes (7), ``200`` with ``status:false`` treated as an error, string appointment ids,
``timezone=UTC`` on every appointment read (2.5, 2.8), ``perPage`` rules (7), and E2EE (1.5).
Only routes the recorded fixtures show are used; destructive ones (``PUT /appointments/{id}``,
``settings/holidays/update``) are deliberately absent.

Errors become a few named exceptions so the engine decides retry or give-up from the kind:
``KiviCareUnavailable`` (outage: connection, timeout, 5xx), ``KiviCareAuthError`` (401/403),
``KiviCareNotFound`` (404), ``KiviCareRequestError`` (other 4xx, ``status:false``),
``KiviCareBadResponse`` (not the shape we expect), ``KiviCareEncrypted`` (cannot decrypt).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterator

import requests

from .e2ee import ClientKey, DecryptError
from .models import (Appointment, BadAppointment, Clinic, Doctor, DoctorService, EventTemplate, SiteInfo,
                     parse_service_ids, row_hash)

log = logging.getLogger(__name__)

NAMESPACE = "/wp-json/kivicare/v1"


class KiviCareError(Exception):
    """Base class. ``status`` is the HTTP status (0 when no response)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class KiviCareUnavailable(KiviCareError):
    """KiviCare could not answer now (connection refused, timeout, 5xx, maintenance page)."""


class KiviCareAuthError(KiviCareError):
    """401/403: wrong user or application password, or a user without the needed role."""


class KiviCareNotFound(KiviCareError):
    """404 from a KiviCare route."""


class KiviCareRequestError(KiviCareError):
    """KiviCare refused the request (4xx, or 200 with ``status:false``)."""


class KiviCareBadResponse(KiviCareError):
    """The answer is not the JSON shape this client expects."""


class KiviCareEncrypted(KiviCareError):
    """Responses are E2EE-encrypted and registering our own key did not help."""


@dataclass
class AppointmentPage:
    """The result of a window listing: parsed appointments and the rows that could not be parsed."""

    appointments: list[Appointment]
    rejected: list[tuple[str, str, str]]  # (appointment id or "", row hash, problem); no patient data
    asked_at: datetime | None = None  # UTC, when the request was sent: the rows are KiviCare's state as of then


class KiviCareClient:
    """``KiviCareClient(base_url, username, app_password)``; thread-safe (one requests.Session each thread).

    ``on_encrypted(event)`` is called with "encrypted" when an encrypted response arrives, and with
    "decrypted" once our own key is registered and decryption works (the dashboard shows a warning).
    """

    def __init__(self, base_url: str, username: str, app_password: str, *,
                 client_id: str = "kivicare-calendar-sidecar", timeout: tuple[float, float] = (5.0, 60.0),
                 on_encrypted: Callable[[str], None] | None = None):
        if not base_url:
            raise KiviCareRequestError("the KiviCare site URL is not set")
        self.base_url = base_url.rstrip("/")
        self.auth = (username or "", (app_password or "").replace(" ", ""))
        self.headers = {"Accept": "application/json", "X-KC-Client-Id": client_id}
        self.timeout = timeout
        self.on_encrypted = on_encrypted or (lambda event: None)
        self._local = threading.local()
        self._key: ClientKey | None = None
        self._key_lock = threading.Lock()

    # ---- transport -------------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = self.auth
            session.headers.update(self.headers)
        return session

    def _send(self, method: str, path: str, params: dict | None, body: Any) -> requests.Response:
        url = self.base_url + path
        try:
            return self._session.request(method, url, params=params, json=body, timeout=self.timeout)
        except requests.Timeout as exc:
            raise KiviCareUnavailable(f"{method} {path}: KiviCare did not answer in time") from exc
        except requests.RequestException as exc:
            raise KiviCareUnavailable(f"{method} {path}: cannot reach KiviCare ({type(exc).__name__})") from exc

    def _decode(self, response: requests.Response, path: str, retried: bool) -> tuple[Any, bool]:
        """Returns (json, needs_retry_after_key_registration)."""
        encrypted = response.headers.get("X-KiviCare-Encrypted", "").lower() == "true"
        if encrypted:
            key = self._key
            if key is not None:
                try:
                    return key.decrypt_body(response.text), False
                except DecryptError:
                    pass
            self.on_encrypted("encrypted")
            if retried:
                raise KiviCareEncrypted(
                    "KiviCare encrypts its answers for another key: someone keeps using the sidecar's "
                    "WordPress user in a browser. Give the sidecar a user nobody logs in with.", response.status_code)
            return None, True
        try:
            return response.json(), False
        except ValueError:
            if response.status_code >= 500:
                raise KiviCareUnavailable(f"{path}: KiviCare answered {response.status_code}",
                                          response.status_code) from None
            raise KiviCareBadResponse(f"{path}: answer is not JSON (HTTP {response.status_code})",
                                      response.status_code) from None

    def request(self, method: str, path: str, params: dict | None = None, body: Any = None, *,
                envelope: bool = True) -> Any:
        """One call to ``NAMESPACE + path`` (or ``path`` itself when it starts with /wp-json).

        Returns the envelope's ``data`` (or the whole JSON when ``envelope`` is False).
        Raises the KiviCareError subclasses described in the module docstring.
        """
        full = path if path.startswith("/wp-json") else NAMESPACE + path
        for attempt in range(2):
            response = self._send(method, full, params, body)
            payload, retry = self._decode(response, full, retried=attempt > 0)
            if retry:
                self._register_key()
                continue
            if attempt > 0:
                self.on_encrypted("decrypted")
            return self._unwrap(response.status_code, payload, full, envelope)
        raise AssertionError("unreachable")

    @staticmethod
    def _unwrap(status: int, payload: Any, path: str, envelope: bool) -> Any:
        message = ""
        if isinstance(payload, dict):
            message = str(payload.get("message") or payload.get("code") or "")[:200]
        if status in (401, 403):
            raise KiviCareAuthError(f"{path}: {message or 'not allowed'} (HTTP {status})", status)
        if status == 404:
            raise KiviCareNotFound(f"{path}: {message or 'not found'}", status)
        if status >= 500:
            raise KiviCareUnavailable(f"{path}: KiviCare answered {status}: {message}", status)
        if status >= 400:
            raise KiviCareRequestError(f"{path}: {message or 'refused'} (HTTP {status})", status)
        if not envelope:
            return payload
        if not isinstance(payload, dict) or "status" not in payload:
            raise KiviCareBadResponse(f"{path}: no {{status, message, data}} envelope", status)
        if payload.get("status") is False:
            raise KiviCareRequestError(f"{path}: {message or 'refused'}", status)
        return payload.get("data")

    def _register_key(self) -> None:
        """``POST /server-key`` then ``POST /config/register-key`` with a fresh key of ours (API.md 1.5)."""
        with self._key_lock:
            response = self._send("POST", NAMESPACE + "/server-key", None, None)
            try:
                server_key = response.json()["public_key"]
                key = ClientKey(server_key)
            except (ValueError, KeyError, TypeError) as exc:
                raise KiviCareEncrypted("KiviCare's server key could not be read", response.status_code) from exc
            response = self._send("POST", NAMESPACE + "/config/register-key", None,
                                  {"public_key": key.public_key_b64})
            if response.status_code != 200:
                raise KiviCareEncrypted(f"KiviCare refused our key (HTTP {response.status_code})",
                                        response.status_code)
            self._key = key
            log.warning("KiviCare encrypts answers for the sidecar's user (someone opened the dashboard with it); "
                        "registered the sidecar's own key. Give the sidecar a WordPress user nobody logs in with.")

    # ---- reads --------------------------------------------------------------------------------

    @staticmethod
    def _items(data: Any, key: str, path: str) -> list:
        """``data[key]`` of a list route, which must be a list: a malformed answer never looks empty."""
        rows = data.get(key) if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise KiviCareBadResponse(f"{path}: data.{key} is not a list")
        return rows

    def site_info(self) -> SiteInfo:
        """``GET /wp-json/``: site name and ``timezone_string`` (fixture 142). Falls back to UTC if empty."""
        data = self.request("GET", "/wp-json/", envelope=False)
        if not isinstance(data, dict):
            raise KiviCareBadResponse("/wp-json/: not an object")
        return SiteInfo(name=str(data.get("name") or ""), timezone=str(data.get("timezone_string") or "UTC"))

    def addons(self) -> dict[str, tuple[bool, str | None]]:
        """``GET /config/addon`` (fixture 135): ``{"kiviPro": (active, version), "googlemeet": ..., ...}``."""
        data = self.request("GET", "/config/addon")
        if not isinstance(data, dict):
            raise KiviCareBadResponse("/config/addon: data is not an object")
        return {name: (bool(v.get("active")), v.get("version")) for name, v in data.items() if isinstance(v, dict)}

    def list_appointments(self, date_from: date, date_to: date, doctor_id: int | None = None) -> AppointmentPage:
        """``GET /appointments?timezone=UTC&date_from&date_to&perPage=all`` (fixture 138).

        ``date_from``/``date_to`` are UTC dates, inclusive; only the start is filtered (API.md 2.2).
        Rows that cannot be parsed are returned in ``rejected``, never dropped silently.
        Raises KiviCareError subclasses; a failed listing never looks like an empty one.
        """
        return next(self.list_appointment_pages(date_from, date_to, 0, doctor_id=doctor_id))

    def list_appointment_pages(self, date_from: date, date_to: date, page_size: int = 0,
                               doctor_id: int | None = None, *, start_size: int = 0) -> Iterator[AppointmentPage]:
        """The same listing in pages of ``page_size`` rows (``perPage=<n>&page=<k>``, KiviCare's default order
        ``a.id DESC``; API.md 2.2), so a caller can work on the first rows while KiviCare reads the next
        (its cost is per row returned: "Measured cost"). ``page_size`` 0: one request, ``perPage=all``.
        ``start_size`` (smaller than ``page_size``): the first page holds that many rows and each next one as
        many as all before it, up to ``page_size`` (250, 250, 500, 1000, 2000, 2000 …), so the caller's first
        rows come within a fraction of a whole page's time and the next ones before it has worked through
        them (a first sync); each smaller page costs KiviCare's fixed part once more.

        Pages are asked one after the other. Each carries ``asked_at``. The listing ends after a page shorter
        than asked (or longer: a plugin ignoring ``perPage``) or at ``pagination.lastPage``. Rows booked or
        deleted meanwhile shift the pages: a row may come twice (callers keep the first) or not at all
        (callers confirm a known row missing from a listing before acting on it). Raises KiviCareError
        subclasses at the page that failed.
        """
        params = {"timezone": "UTC", "date_from": date_from.isoformat(), "date_to": date_to.isoformat(),
                  "perPage": str(page_size) if page_size > 0 else "all"}
        if doctor_id is not None:
            params["doctor"] = doctor_id
        size = start_size if 0 < start_size < page_size else page_size
        number = 1
        while True:
            if page_size > 0:
                params["perPage"], params["page"] = str(size), number
            asked_at = datetime.now(timezone.utc)
            data = self.request("GET", "/appointments", params)
            rows = self._items(data, "appointments", "/appointments")
            page = AppointmentPage([], [], asked_at)
            for raw in rows:
                try:
                    page.appointments.append(Appointment.from_list_item(raw))
                except BadAppointment as exc:
                    page.rejected.append((exc.appointment_id, row_hash(raw), exc.problem))
            yield page
            last = (data.get("pagination") or {}).get("lastPage") if isinstance(data, dict) else None
            if page_size <= 0 or len(rows) != size or (isinstance(last, int) and number >= last):
                return
            if size < page_size:
                # Growing pages: each as large as all before it (up to page_size), starting where they ended
                # (or a little before, when the sizes do not divide: those rows come twice).
                covered = number * size
                size = min(page_size, covered)
                number = covered // size + 1
            else:
                number += 1

    def get_appointment(self, appointment_id: str) -> Appointment:
        """``GET /appointments/{id}?timezone=UTC`` (fixture 139), with service mapping ids.

        Raises KiviCareNotFound when KiviCare deleted it (404), BadAppointment when malformed.
        """
        data = self.request("GET", f"/appointments/{int(appointment_id)}", {"timezone": "UTC"})
        return Appointment.from_detail(data)

    def get_service_ids(self, appointment_id: str) -> tuple[int, ...]:
        """The doctor-service mapping ids of an appointment (``serviceIds`` of the detail route)."""
        data = self.request("GET", f"/appointments/{int(appointment_id)}", {"timezone": "UTC"})
        if not isinstance(data, dict):
            raise BadAppointment(str(appointment_id), "detail is not an object")
        return parse_service_ids(data, str(appointment_id))

    def list_doctors(self) -> list[Doctor]:
        """``GET /doctors?perPage=all`` (fixture 041; perPage must be 5/10/25/50/100/all)."""
        rows = self._items(self.request("GET", "/doctors", {"perPage": "all"}), "doctors", "/doctors")
        return [Doctor(id=int(r["id"]), name=str(r.get("name") or ""), email=str(r.get("email") or ""))
                for r in rows if isinstance(r, dict) and str(r.get("id", "")).isdigit()]

    def get_doctor(self, doctor_id: int) -> Doctor:
        """``GET /doctors/{id}`` (fixtures 042-043): adds ``timezone`` (often null = the site's)."""
        data = self.request("GET", f"/doctors/{int(doctor_id)}")
        if not isinstance(data, dict) or not str(data.get("id", "")).isdigit():
            raise KiviCareBadResponse(f"/doctors/{doctor_id}: no doctor in the answer")
        tz = data.get("timezone")
        return Doctor(id=int(data["id"]), name=str(data.get("display_name") or ""),
                      email=str(data.get("email") or ""), timezone=tz if isinstance(tz, str) and tz else None)

    def list_doctor_services(self, doctor_id: int | None = None) -> list[DoctorService]:
        """``GET /doctor-services?perPage=all[&doctor_id=]`` (fixture 140): mapping id -> kc_services id."""
        params: dict = {"perPage": "all"}
        if doctor_id is not None:
            params["doctor_id"] = doctor_id
        rows = self._items(self.request("GET", "/doctor-services", params), "doctorServices", "/doctor-services")
        out = []
        for r in rows:
            try:
                out.append(DoctorService(id=int(r["id"]), service_id=int(r["serviceId"]),
                                         name=str(r.get("serviceName") or ""), doctor_id=int(r.get("doctorId") or 0),
                                         clinic_id=int(r.get("clinicId") or 0),
                                         telemed=str(r.get("telemedService", "")).lower() == "yes"))
            except (KeyError, TypeError, ValueError):
                log.warning("skipped a doctor-service row with a malformed id")
        return out

    def list_clinics(self) -> list[Clinic]:
        """``GET /clinics?perPage=all`` (fixture 046; API.md 3): the site's clinics, for the settings page."""
        rows = self._items(self.request("GET", "/clinics", {"perPage": "all"}), "clinics", "/clinics")
        return [Clinic(id=int(r["id"]), name=str(r.get("name") or "")) for r in rows
                if isinstance(r, dict) and str(r.get("id", "")).isdigit()]

    def event_template(self) -> EventTemplate:
        """``GET /settings/google-event-template`` (fixture 137; double-wrapped): the doctor template."""
        data = self.request("GET", "/settings/google-event-template")
        inner = data.get("data") if isinstance(data, dict) else None
        if not isinstance(inner, dict):
            raise KiviCareBadResponse("/settings/google-event-template: unexpected shape")
        templates = inner.get("templates") or {}
        chosen = templates.get("doctor") or templates.get("default") or {}
        colors = {k.removeprefix("status_"): str(v) for k, v in (inner.get("status_colors") or {}).items()}
        default = EventTemplate()
        return EventTemplate(title=str(chosen.get("post_title") or default.title),
                             description=str(chosen.get("post_content") or default.description).strip(),
                             status_colors=colors or default.status_colors)

    # ---- writes (safe routes only) ---------------------------------------------------------------

    def set_status(self, appointment_id: str, status: int) -> None:
        """``PUT /appointments/{id}/status {status}`` (fixtures 053-058): the safe way to cancel (0)."""
        self.request("PUT", f"/appointments/{int(appointment_id)}/status", body={"status": int(status)})
