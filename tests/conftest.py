"""Shared fixtures: the two sandboxes on loopback, a runtime on a real SQLite file, a connected doctor.

Everything real: the KiviCare and Google sandboxes are HTTP servers in this process; the sidecar
talks to them through requests, google-api-python-client and google-auth-oauthlib.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from sidecar.calendars.google_oauth import authorization_url, finish_authorization
from sidecar.config import Config
from sidecar.connections import choose_calendar, complete_authorization
from sidecar.runtime import Runtime
from sandbox.wiring import sidecar_settings
from wp_bridge import preview

ANNA, MARC, SOFIA = 3, 4, 8
EMAILS = {ANNA: "anna.schmidt@riverside-clinic.test", MARC: "marc.dubois@riverside-clinic.test",
          SOFIA: "sofia.rossi@riverside-clinic.test"}
ONLINE_FOLLOW_UP = 3  # kc_services id the admin marks as telemedicine in the sandbox seed
MEET = {"sync.telemedicine_services": [ONLINE_FOLLOW_UP]}


@pytest.fixture
def kivicare():
    from sandbox.kivicare import KiviCareSandbox
    sandbox = KiviCareSandbox()
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def google():
    from sandbox.google import GoogleSandbox
    sandbox = GoogleSandbox(conference_pending_reads=1)
    sandbox.start()
    yield sandbox
    sandbox.stop()


def sandbox_settings(kivicare, google, tmp_path, **extra) -> dict:
    """Overrides wiring the sidecar to the two sandboxes, a temp database and key file."""
    settings = {
        **sidecar_settings(kivicare, google),
        "database.url": f"sqlite:///{tmp_path}/sidecar.db", "security.key_file": str(tmp_path / "sidecar.key"),
        "web.public_url": "http://127.0.0.1:8300",
    }
    settings.update(extra)
    return settings


@pytest.fixture
def make_runtime(kivicare, google, tmp_path):
    """``make_runtime(**overrides) -> Runtime`` on the sandboxes.

    No telemedicine service by default: a pending Meet conference makes ``sync_once`` wait for Google's
    answer, so tests about Meet ask for it (``MEET``)."""
    def make(**extra):
        extra.setdefault("sync.telemedicine_services", [])
        return Runtime(Config(None, environ={}, overrides=sandbox_settings(kivicare, google, tmp_path, **extra)))
    return make


@pytest.fixture
def runtime(make_runtime):
    return make_runtime()


def connect(runtime, google, doctor_id: int, calendar: str = "Clinic appointments", *, confirm: bool = True):
    """Connect a doctor through the real OAuth code flow (PKCE) against the Google sandbox.

    ``confirm`` (default) also confirms the first-sync preview, as the person connecting would; with
    ``confirm=False`` the connection stays held (``wp_bridge.preview``)."""
    email = EMAILS[doctor_id]
    google.auto_approve(email)
    url = authorization_url(runtime.cfg, runtime.box, doctor_id)
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text[:300]
    query = parse_qs(urlparse(answer.headers["Location"]).query)
    doctor, credentials = finish_authorization(runtime.cfg, runtime.box, state=query["state"][0],
                                               code=query["code"][0])
    connection = complete_authorization(runtime, doctor, credentials)
    calendar_id = email if calendar == "primary" else google.calendar_id(email, calendar)
    connection = choose_calendar(runtime, connection, calendar_id)
    if confirm:
        preview.confirm(runtime, connection, by="tests")
    return connection


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # Loopback only: a proxy variable from the environment must never route sandbox traffic.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # sandbox access lines drown real failures
