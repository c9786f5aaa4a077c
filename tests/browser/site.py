"""A whole sidecar site on loopback for tests that use it as people do: the KiviCare and Google sandboxes,
the real web app served over HTTP on a free port, a runtime on a fresh SQLite file.

Used by the browser tests (tests/browser) and the security tests (tests/web/test_security.py). Nothing of
ours is patched: the web app, the engine and the clients are the production code; only KiviCare (with
the companion plugin) and Google are stand-ins, and they are real HTTP servers too.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests
from flask import url_for
from werkzeug.routing import BuildError
from werkzeug.serving import make_server

from sandbox.google import GoogleSandbox
from sandbox.kivicare import KiviCareSandbox
from sidecar.calendars.google_oauth import authorization_url, finish_authorization
from sidecar.config import Config
from sidecar.connections import choose_calendar, complete_authorization
from sidecar.runtime import Runtime
from sidecar.storage.models import Conflict, SyncLog
from sidecar.web import create_admin, create_app
from wp_bridge import preview

ADMIN, PASSWORD = "admin", "a long enough passphrase"
# What KiviCare's staff could type as names; both must come out of every page as plain text.
SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '"><img src=x onerror=alert(1)>'


def rules(app, method: str) -> list:
    """The app's URL rules that accept ``method``, sorted by path (new pages are picked up by themselves)."""
    return sorted((r for r in app.url_map.iter_rules() if method in r.methods), key=lambda r: r.rule)


def path_for(app, rule, **ids) -> str:
    """The path of ``rule`` with its arguments taken from ``ids`` by name, else 1 (or "app.js" where a
    number does not fit, e.g. a static file name)."""
    values = {name: ids.get(name, 1) for name in rule.arguments}
    with app.test_request_context():
        try:
            return url_for(rule.endpoint, **values)
        except BuildError:
            return url_for(rule.endpoint, **{n: str(ids.get(n, "app.js")) for n in rule.arguments})


class LiveSidecar:
    """The sidecar's web app on ``http://127.0.0.1:<free port>`` (werkzeug, threaded), wired to two
    sandboxes it starts itself, on ``<folder>/sidecar.db``.

    ``configured=False`` leaves the Google client and the KiviCare site unset (a fresh install, for the
    admin to fill in); Google's endpoint addresses always point at the sandbox, as a deployment's
    config.ini would point at Google. ``google_secret`` / ``kivicare_password``: the client secret and
    application password the sandboxes accept (random by default, so a test can search for them).
    ``stop()`` ends the server and both sandboxes.
    """

    def __init__(self, folder: Path, *, configured: bool = True, google_secret: str | None = None,
                 kivicare_password: str | None = None):
        self.google_secret = google_secret or "gcs-" + secrets.token_urlsafe(18)
        self.kivicare_password = kivicare_password or " ".join(secrets.token_hex(2) for _ in range(6))
        self.kivicare = KiviCareSandbox(app_password=self.kivicare_password)
        self.google = GoogleSandbox(client_secret=self.google_secret, conference_pending_reads=1)
        self.kivicare.start()
        self.google.start()
        self.app = None
        self.server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        overrides = {
            "database.url": f"sqlite:///{folder}/sidecar.db", "security.key_file": str(folder / "sidecar.key"),
            "web.public_url": self.url,
            "google.auth_uri": self.google.auth_uri, "google.token_uri": self.google.token_uri,
            "google.revoke_uri": self.google.revoke_uri, "google.api_endpoint": self.google.api_endpoint,
        }
        self.runtime = Runtime(Config(None, environ={}, overrides=overrides))
        if configured:
            self.configure()
        self.app = create_app(self.runtime)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sidecar-web", daemon=True)
        self._thread.start()

    def _dispatch(self, environ, start_response):
        return self.app(environ, start_response)

    # ---- what an admin would have done in the settings page ------------------------------------------

    def configure(self) -> None:
        """Store the Google client and the KiviCare site as the settings page does (secrets encrypted)."""
        cfg = self.runtime.cfg
        cfg.set("google.client_id", self.google.client_id)
        cfg.set("google.client_secret", self.google_secret)
        cfg.set("kivicare.base_url", self.kivicare.base_url)
        cfg.set("kivicare.username", self.kivicare.username)
        cfg.set("kivicare.app_password", self.kivicare_password)

    def create_admin(self) -> None:
        create_admin(self.runtime, ADMIN, PASSWORD)

    def install_companion(self) -> str:
        """A shared secret in the sidecar and the same one in the (emulated) companion plugin; returns it."""
        secret = "cps-" + secrets.token_urlsafe(24)
        self.runtime.cfg.set("companion.secret", secret)
        self.kivicare.install_companion(secret, self.url)
        return secret

    def connect(self, doctor_id: int, email: str, calendar: str = "Clinic appointments", *, confirm: bool = True):
        """Connect a doctor through the real OAuth code flow against the Google sandbox (no browser).

        ``confirm`` also confirms the first-sync preview, as the person connecting would."""
        self.google.auto_approve(email)
        try:
            answer = requests.get(authorization_url(self.runtime.cfg, self.runtime.box, doctor_id),
                                  allow_redirects=False, timeout=10)
        finally:
            self.google.auto_approve(None)
        assert answer.status_code == 302, answer.text[:300]
        query = parse_qs(urlparse(answer.headers["Location"]).query)
        doctor, credentials = finish_authorization(self.runtime.cfg, self.runtime.box, state=query["state"][0],
                                                   code=query["code"][0])
        connection = complete_authorization(self.runtime, doctor, credentials)
        connection = choose_calendar(self.runtime, connection, self.google.calendar_id(email, calendar))
        if confirm:
            preview.confirm(self.runtime, connection, by="tests")
        return connection

    # ---- KiviCare's staff at work ----------------------------------------------------------------------

    def kivicare_rest(self, method: str, route: str, body: dict) -> dict:
        """Call KiviCare's REST API as the site's administrator (what its dashboard does); returns ``data``."""
        answer = requests.request(method, self.kivicare.rest_url + route, json=body, timeout=10,
                                  auth=(self.kivicare.username, self.kivicare_password))
        assert answer.status_code in (200, 201), answer.text[:300]
        return answer.json()["data"]

    def add_doctor(self, first_name: str, last_name: str, email: str) -> tuple[int, int]:
        """A new doctor in KiviCare with one service; returns ``(doctor id, doctor-service mapping id)``."""
        doctor = self.kivicare_rest("POST", "/doctors", {"first_name": first_name, "last_name": last_name,
                                                         "email": email})
        self.kivicare_rest("POST", "/doctor-services", {"name": "Consultation", "price": 40, "duration": 30,
                                                        "doctors": [doctor["id"]]})
        mapping = next(s.id for s in self.runtime.kivicare().list_doctor_services(doctor["id"])
                       if s.doctor_id == doctor["id"])
        return int(doctor["id"]), int(mapping)

    def add_patient(self, first_name: str, last_name: str, email: str) -> int:
        patient = self.kivicare_rest("POST", "/patients", {"first_name": first_name, "last_name": last_name,
                                                           "email": email})
        return int(patient["id"])

    def add_hostile_names(self) -> int:
        """A doctor and a patient whose names are markup (``SCRIPT_NAME``, ``IMG_NAME``) typed in KiviCare, with
        an appointment synced to Google and then moved there by the doctor: a conflict (the companion plugin
        is installed only afterwards, for sign-ins) and sync log entries. Returns the doctor's id."""
        assert self.kivicare.companion is None, "call before install_companion: the move must open a conflict"
        email = "mallory@riverside-clinic.test"
        doctor_id, mapping = self.add_doctor(SCRIPT_NAME, IMG_NAME, email)
        patient_id = self.add_patient(IMG_NAME, SCRIPT_NAME, "eve@patients.test")
        self.google.add_account(email, name=SCRIPT_NAME)
        connection = self.connect(doctor_id, email)
        self.runtime.bridge.startup()
        start = (datetime.now(timezone.utc) + timedelta(days=3)).replace(hour=9, minute=10, second=0, microsecond=0)
        appointment_id = self.kivicare.create_appointment(doctor_id=doctor_id, patient_id=patient_id,
                                                          start_utc=start, service_mapping_ids=[mapping])
        self.runtime.bridge.sync_once()
        event = next(e for e in self.google.events(connection.calendar_id)
                     if ((e.get("extendedProperties") or {}).get("private") or {}).get("kcAppointmentId")
                     == appointment_id)
        moved = start + timedelta(days=1)
        self.google.user_patch(connection.calendar_id, event["id"], {
            "start": {"dateTime": moved.isoformat()},
            "end": {"dateTime": (moved + timedelta(minutes=30)).isoformat()}})
        self.runtime.bridge.sync_once()
        assert Conflict.select().where(Conflict.doctor_id == doctor_id).exists()
        assert SyncLog.select().where(SyncLog.appointment_id == appointment_id).exists()
        return doctor_id

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
        self.kivicare.stop()
        self.google.stop()
