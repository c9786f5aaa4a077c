"""Fixtures for the web pages: a runtime on a temp SQLite file, the app, signed-in clients, a live server.

The sandboxes (``kivicare``, ``google``) come from tests/conftest.py. One Runtime per test, because
``sidecar.storage.database`` is a process-wide proxy that ``open_database`` re-binds.
"""

from __future__ import annotations

import logging

import re
import threading
from html import unescape

import pytest
from werkzeug.serving import make_server

from sidecar.config import Config
from sidecar.runtime import Runtime
from sidecar.web import create_admin, create_app

ADMIN, PASSWORD = "admin", "a long enough passphrase"


def csrf(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def text_of(html: str) -> str:
    """Page text with tags removed and whitespace collapsed (for readable assertions)."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _google_refusing(environ, start_response):
    """Stands in for Google's token, revoke and API endpoints in page tests without the sandbox: every
    refresh token is refused (``invalid_grant``), at once and without leaving the machine."""
    start_response("400 Bad Request", [("Content-Type", "application/json")])
    return [b'{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}']


@pytest.fixture(scope="session")
def google_refusing():
    server = make_server("127.0.0.1", 0, _google_refusing, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_rt(tmp_path, google_refusing):
    """``make_rt(environ=None, ini=None, **overrides) -> Runtime`` on a temp database and key file.

    Google's token, revoke and API addresses point at a local stand-in that refuses every grant, so a
    page that asks Google for a hand-made connection answers at once (no network, no retries)."""
    def make(environ=None, ini=None, **overrides):
        settings = {"database.url": f"sqlite:///{tmp_path}/t.db", "security.key_file": str(tmp_path / "k"),
                    "web.public_url": "http://127.0.0.1:8300", "google.token_uri": google_refusing + "/token",
                    "google.revoke_uri": google_refusing + "/revoke",
                    "google.api_endpoint": google_refusing + "/calendar/v3/"}
        settings.update(overrides)
        return Runtime(Config(ini, environ=environ or {}, overrides=settings))
    return make


@pytest.fixture
def rt(make_rt):
    return make_rt()


@pytest.fixture
def app(rt):
    return create_app(rt)


def sign_in(client, username: str = ADMIN, password: str = PASSWORD):
    page = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf(page.text), "username": username, "password": password})


def admin(app):
    """A test client of ``app`` signed in as the admin (who must exist already)."""
    client = app.test_client()
    sign_in(client)
    return client


@pytest.fixture
def admin_client(app):
    """A test client signed in as the admin."""
    create_admin(app.extensions["sidecar_runtime"], ADMIN, PASSWORD)
    client = app.test_client()
    answer = sign_in(client)
    assert answer.status_code == 302, answer.text
    return client


class LiveServer:
    """The app on a real loopback port (werkzeug, threaded), for clients that follow redirects.

    The port is known before the app exists, so ``web.public_url`` (and the OAuth redirect URI) can
    point at it: requests are dispatched to ``self.app`` once it is set.
    """

    def __init__(self):
        self.app = None
        self.server = make_server("127.0.0.1", 0, self._dispatch, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _dispatch(self, environ, start_response):
        return self.app(environ, start_response)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def live():
    server = LiveServer()
    yield server
    server.stop()


def count_queries(client, path: str) -> int:
    """How many SQL statements one GET of ``path`` runs (peewee's debug log); asserts the page answers 200.

    Reads of the ``settings`` table are not counted: the settings store re-reads it at most once a second
    (sidecar/settings_store.py), so whether a request does depends on the clock, not on the page."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: (None if 'FROM "settings"' in record.getMessage() else seen.append(record.getMessage()))
    logger = logging.getLogger("peewee")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        assert client.get(path).status_code == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return len(seen)
