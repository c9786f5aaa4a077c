"""Security of the web pages, tested from the outside as an attacker or a curious user would try it.

- CSRF: every state-changing form route (all POST rules of ``app.url_map`` except the plugin's and
  Google's signed hooks, so a new route is covered the day it is added) refuses a missing, a forged and
  another session's token, and changes nothing in the database;
- OAuth: Google's redirect back with a wrong state, another browser's state, or a state used before
  (even replayed with the session cookie of that time) is refused and stores nothing;
- XSS: doctor and patient names typed in KiviCare (``<script>…`` and ``"><img onerror…>``) come out of
  every page as text, for admins, doctors and receptionists;
- roles: a doctor gets 403 on every route that is not meant for doctors (enumerated), a receptionist on
  every form; nothing changes;
- secrets (Google client secret, KiviCare application password, companion secret, any other secret
  setting such as an SMTP password, the session key, Google's access and refresh tokens) appear in no
  page, header, session cookie, error page or log line over a full sync and a web session.

Everything runs against the real app and the KiviCare and Google sandboxes (``tests/browser/site.py``).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
from urllib.parse import urlparse

import pytest
import requests

from sidecar.config import SETTINGS
from sidecar.storage.models import Conflict, Connection, Doctor, OAuthState, SyncLog
from tests.browser.site import ADMIN, IMG_NAME, PASSWORD, SCRIPT_NAME, LiveSidecar, path_for, rules
from tests.conftest import ANNA, EMAILS, MARC

from .conftest import csrf, sign_in

SIGNED_HOOKS = ("hooks.", "google_hooks.")  # authenticated by a signature or a channel token, not a session
# Routes a signed-in doctor may reach at all: their own page and actions, their own conflicts (read-only)
# and sync log, signing in and out, and the public pages that check a one-time token or Google's state
# themselves. Every other route, present or future, must answer a doctor 403.
DOCTOR_MAY_USE = {"auth.login", "auth.logout", "auth.setup", "sso.sso", "health.healthz", "static",
                  "connect.me", "connect.my_connect", "connect.my_disconnect", "conflicts.index",
                  "synclog_page.index", "synclog_page.export_csv",
                  "connect.start", "connect.go", "connect.oauth_callback"}


@pytest.fixture
def site(tmp_path):
    """A configured sidecar with its admin; the companion plugin is installed by the tests that need it."""
    live = LiveSidecar(tmp_path)
    live.create_admin()
    yield live
    live.stop()


# ---- helpers ------------------------------------------------------------------------------------

def admin_client(site):
    client = site.app.test_client()
    assert sign_in(client, ADMIN, PASSWORD).status_code == 302
    return client


def wordpress_client(site, user_id: int, roles: list[str] | None = None):
    """A browser signed in through the companion plugin's link (``/sso``) as WordPress user ``user_id``."""
    client = site.app.test_client()
    answer = client.get("/sso?token=" + site.kivicare.companion.sso_token(user_id, roles=roles))
    assert answer.status_code == 303, answer.text[:300]
    return client


def form_rules(app):
    """Every state-changing route a browser form can reach (the signed hooks excepted)."""
    return [r for r in rules(app, "POST") if not r.endpoint.startswith(SIGNED_HOOKS)]


def snapshot(site) -> dict:
    """Every row of every table, to prove a refused request changed nothing."""
    db = site.runtime.db
    return {table: db.execute_sql(f'SELECT * FROM "{table}" ORDER BY 1').fetchall() for table in db.get_tables()}


def google_redirect(site, authorize_answer, email: str) -> str:
    """Follow the sidecar's redirect to Google's consent (auto-approved for ``email``); returns the path and
    query Google sends the browser back to (the OAuth callback)."""
    assert authorize_answer.status_code in (302, 303), authorize_answer.text[:300]
    site.google.auto_approve(email)
    try:
        answer = requests.get(authorize_answer.headers["Location"], allow_redirects=False, timeout=10)
    finally:
        site.google.auto_approve(None)
    assert answer.status_code == 302, answer.text[:300]
    back = urlparse(answer.headers["Location"])
    assert back.path == "/oauth/google/callback"
    return f"{back.path}?{back.query}"


def start_connect(site, client, doctor_id: int = ANNA):
    page = client.get("/connect")  # also loads the doctors from KiviCare
    return client.post(f"/connect/{doctor_id}/authorize", data={"csrf_token": csrf(page.text)})


def token_exchanges(site) -> int:
    return sum(1 for r in site.google.requests if r["path"].endswith("/token"))


# ---- CSRF -------------------------------------------------------------------------------------------

def test_every_form_route_refuses_a_missing_or_wrong_csrf_token(site):
    app = site.app
    client = admin_client(site)
    stranger = admin_client(site)  # another browser's session: its token is valid, but not for this one
    other_token = csrf(stranger.get("/settings").text)
    own_token = csrf(client.get("/settings").text)
    conflict = Conflict.create(kind="both_changed", doctor_id=ANNA, appointment_id="1", kivicare={}, google={})
    routes = form_rules(app)
    endpoints = {r.endpoint for r in routes}
    # The enumeration sees the forms we know of (and any added later).
    assert {"auth.login", "auth.logout", "auth.setup", "settings.save", "conflicts.resolve",
            "connect.authorize", "connect.disconnect", "connect.calendar", "connect.my_connect",
            "connect.reset_sync", "settings.companion_reveal"} <= endpoints
    before = snapshot(site)
    for rule in routes:
        path = path_for(app, rule, doctor_id=ANNA, conflict_id=conflict.id)
        for label, data in (("missing", {}), ("forged", {"csrf_token": "IjEyMzQ1Ig.forged.token"}),
                            ("another session's", {"csrf_token": other_token}),
                            ("cut short", {"csrf_token": own_token[:-4]})):
            answer = client.post(path, data={**data, "choice": "kivicare", "section": "google",
                                              "google.client_id": "attacker", "events": "remove", "confirm": "yes",
                                              "calendar_id": "attacker", "username": ADMIN, "password": PASSWORD})
            assert answer.status_code == 400, f"{rule.rule} with a {label} token: {answer.status_code}"
            assert "This form has expired" in answer.text, rule.rule
            assert snapshot(site) == before, f"{rule.rule} with a {label} token changed the database"
    # Still signed in (the refused sign-out did nothing); with its own token the same form works.
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": own_token}).status_code == 302
    assert urlparse(client.get("/").headers["Location"]).path == "/login"


def test_first_run_and_sign_in_forms_need_the_token_too(tmp_path):
    site = LiveSidecar(tmp_path, configured=False)  # no admin yet: /setup is the only page
    try:
        from sidecar.web import create_setup_link
        link = urlparse(create_setup_link(site.runtime))
        client = site.app.test_client()
        page = client.get(f"{link.path}?{link.query}")
        token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
        form = {"token": token, "username": ADMIN, "password": PASSWORD, "password_confirm": PASSWORD}
        assert client.post("/setup", data=form).status_code == 400
        assert client.post("/setup", data={**form, "csrf_token": "forged"}).status_code == 400
        assert snapshot(site)["admin_users"] == []
        assert client.post("/setup", data={**form, "csrf_token": csrf(page.text)}).status_code == 302
    finally:
        site.stop()


# ---- OAuth state ---------------------------------------------------------------------------------------

def test_oauth_callback_with_a_wrong_state_is_refused_and_stores_nothing(site):
    client = admin_client(site)
    callback = google_redirect(site, start_connect(site, client), EMAILS[ANNA])
    exchanges = token_exchanges(site)
    forged = re.sub(r"state=[^&]+", "state=" + secrets.token_urlsafe(32), callback)
    answer = client.get(forged)
    assert answer.status_code == 400 and "Start again from the same browser" in answer.text
    # Another browser (an attacker who got the link) with the right state but not its session.
    other = admin_client(site)
    answer = other.get(callback)
    assert answer.status_code == 400
    assert not Connection.select().exists()
    assert token_exchanges(site) == exchanges  # Google's code was never even exchanged
    # The refused attempts used the state up: the real callback, late, is refused too.
    assert client.get(callback).status_code == 400
    assert not Connection.select().exists()


def test_oauth_callback_used_twice_is_refused_even_with_the_old_session_cookie(site):
    client = admin_client(site)
    callback = google_redirect(site, start_connect(site, client), EMAILS[ANNA])
    old_cookie = client.get_cookie("sidecar_session").value  # it holds the state, until the callback
    answer = client.get(callback)
    assert answer.status_code == 303 and answer.headers["Location"] == f"/connect/{ANNA}/calendar"
    stored = Connection.get(Connection.doctor == ANNA)
    rows, exchanges = snapshot(site), token_exchanges(site)
    # The same redirect again, in the same browser: its session no longer carries the state.
    assert client.get(callback).status_code == 400
    # Replayed with the cookie from before the callback: the state matches the cookie, but the server
    # kept it for one use only.
    replay = site.app.test_client()
    replay.set_cookie("sidecar_session", old_cookie)
    answer = replay.get(callback)
    assert answer.status_code == 400 and "already used" in answer.text
    assert snapshot(site) == rows and token_exchanges(site) == exchanges
    again = Connection.get(Connection.doctor == ANNA)
    assert (again.refresh_token, again.access_token) == (stored.refresh_token, stored.access_token)
    assert not OAuthState.select().exists()


# ---- XSS through names that come from KiviCare ------------------------------------------------------------

RAW = (SCRIPT_NAME, IMG_NAME, "<script>alert", "<img src=x", "onerror=alert(1)>")


def assert_inert(html: str, where: str) -> None:
    for raw in RAW:
        assert raw not in html, f"{raw!r} unescaped in {where}"


@pytest.fixture
def hostile_names(site):
    """A doctor and a patient named with markup in KiviCare, synced, with a conflict and log entries."""
    doctor_id = site.add_hostile_names()
    site.install_companion()  # for the sign-ins from WordPress
    assert SCRIPT_NAME in Doctor.get_by_id(doctor_id).name
    return doctor_id


def test_names_from_kivicare_are_rendered_inert_on_every_page(site, hostile_names):
    doctor_id = hostile_names
    admin = admin_client(site)
    shown = 0
    for rule in rules(site.app, "GET"):
        if rule.endpoint.startswith(SIGNED_HOOKS) or rule.endpoint == "static":
            continue
        path = path_for(site.app, rule, doctor_id=doctor_id)
        answer = admin.get(path)
        if answer.mimetype == "text/html":
            assert_inert(answer.text, f"the admin's {path}")
            shown += "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
        else:  # JSON (/api/status carries the name as data) or CSV: never sniffed into HTML
            assert answer.headers["X-Content-Type-Options"] == "nosniff", path
    assert shown >= 5  # the dashboard, the doctor's page, the conflicts, the log, the doctors' list...
    for page in ("/", "/conflicts", "/log", f"/doctors/{doctor_id}"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in admin.get(page).text, page
    # The doctor, signed in from WordPress with that name (it is in the header of every page).
    doctor = wordpress_client(site, doctor_id)
    for path in ("/me", "/conflicts", f"/connect/{doctor_id}/calendar", "/nowhere", "/settings"):
        answer = doctor.get(path)
        assert_inert(answer.text, f"the doctor's {path}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doctor.get("/me").text
    receptionist = wordpress_client(site, 2, roles=["kiviCare_receptionist"])
    for path in ("/", "/conflicts"):
        assert_inert(receptionist.get(path).text, f"the receptionist's {path}")


# ---- roles -----------------------------------------------------------------------------------------------

def test_a_doctor_gets_403_on_every_route_not_meant_for_doctors(site):
    site.install_companion()
    site.connect(MARC, EMAILS[MARC])
    marc_conflict = Conflict.create(kind="both_changed", doctor_id=MARC, appointment_id="777", kivicare={}, google={})
    admin_client(site).get("/connect")  # the doctors are known
    anna = wordpress_client(site, ANNA)
    token = csrf(anna.get("/me").text)
    before = snapshot(site)
    checked = []
    for method in ("GET", "POST"):
        for rule in rules(site.app, method):
            if rule.endpoint in DOCTOR_MAY_USE or rule.endpoint.startswith(SIGNED_HOOKS):
                continue
            path = path_for(site.app, rule, doctor_id=MARC, conflict_id=marc_conflict.id)
            answer = anna.get(path) if method == "GET" else anna.post(path, data={
                "csrf_token": token, "section": "google", "google.client_id": "attacker", "choice": "google",
                "events": "remove", "confirm": "yes", "calendar_id": "attacker"})
            assert answer.status_code == 403, f"doctor {method} {path}: {answer.status_code}"
            checked.append(rule.endpoint)
    assert {"settings.index", "settings.save", "connect.index", "connect.doctor_page", "dashboard.index",
            "conflicts.resolve", "connect.reset_sync"} <= set(checked)
    assert snapshot(site) == before
    # What she may open shows her own only: Marc's log entries and conflicts stay out of sight.
    SyncLog.create(doctor_id=MARC, appointment_id="770077", action="create", outcome="ok")
    SyncLog.create(doctor_id=ANNA, appointment_id="330033", action="create", outcome="ok")
    for path in ("/me", f"/log?doctor={MARC}", f"/log.csv?doctor={MARC}", "/log", "/conflicts"):
        answer = anna.get(path)
        assert answer.status_code == 200, path
        assert "770077" not in answer.text and "Marc" not in answer.text, path
    assert "330033" in anna.get("/log").text


def test_a_receptionist_cannot_post_any_form_but_signing_out(site):
    site.install_companion()
    site.connect(MARC, EMAILS[MARC])
    receptionist = wordpress_client(site, 2, roles=["kiviCare_receptionist"])
    token = csrf(receptionist.get("/").text)
    before = snapshot(site)
    for rule in form_rules(site.app):
        if rule.endpoint in ("auth.logout", "auth.login", "auth.setup"):
            continue
        path = path_for(site.app, rule, doctor_id=MARC)
        answer = receptionist.post(path, data={"csrf_token": token, "section": "sync"})
        assert answer.status_code == 403, rule.rule
    assert snapshot(site) == before


# ---- secrets -----------------------------------------------------------------------------------------------

def secrets_of(site) -> dict[str, str]:
    """Every secret the sidecar holds, in the forms it could leak in."""
    found = {"Google client secret": site.google_secret,
             "KiviCare application password": site.kivicare_password,
             "KiviCare application password (no spaces)": site.kivicare_password.replace(" ", ""),
             "KiviCare Basic auth": base64.b64encode(
                 f"{site.kivicare.username}:{site.kivicare_password}".encode()).decode(),
             "companion secret": site.install_companion(),
             "session key": site.runtime.store.get("web.secret_key")}
    for setting in SETTINGS:
        if setting.secret and not site.runtime.cfg.get(setting.name):  # e.g. an SMTP password
            marker = f"{setting.key}-" + secrets.token_urlsafe(16)
            site.runtime.cfg.set(setting.name, marker)
            found[setting.name] = marker
    return found


def tokens_of(site) -> dict[str, str]:
    found = {}
    for conn in Connection.select():
        for kind in ("refresh_token", "access_token"):
            if getattr(conn, kind):
                found[f"doctor {conn.doctor_id} {kind}"] = site.runtime.box.decrypt(getattr(conn, kind))
    return found


def test_secrets_never_appear_in_pages_errors_cookies_or_logs(site, caplog):
    caplog.set_level(logging.INFO)
    for ours in ("sidecar", "wp_bridge"):
        caplog.set_level(logging.DEBUG, logger=ours)
    hidden = secrets_of(site)
    site.connect(ANNA, EMAILS[ANNA])
    site.runtime.bridge.startup()
    site.runtime.bridge.sync_once()
    hidden.update(tokens_of(site))
    site.google.expire_access_tokens()  # the next call refreshes: a new access token passes through
    site.runtime.bridge.sync_once()
    hidden.update({f"{name} (refreshed)": value for name, value in tokens_of(site).items()})

    answers = []
    admin = admin_client(site)
    conflict = Conflict.create(kind="both_changed", doctor_id=ANNA, appointment_id="1", kivicare={}, google={})
    for rule in rules(site.app, "GET"):
        if not rule.endpoint.startswith(SIGNED_HOOKS):
            answers.append(admin.get(path_for(site.app, rule, doctor_id=ANNA, conflict_id=conflict.id)))
    token = csrf(admin.get("/settings").text)
    answers += [
        admin.post("/settings/kivicare/test", data={"csrf_token": token}),
        admin.post("/settings/companion/test", data={"csrf_token": token}, follow_redirects=True),
        admin.post("/settings", data={"csrf_token": token, "section": "google", "google.app_name": "Clinic",
                                      "google.client_id": site.google.client_id, "google.client_secret": ""},
                   follow_redirects=True),
        admin.post("/settings", data={"csrf_token": token, "section": "kivicare", "kivicare.base_url": "not a url",
                                      "kivicare.username": "x", "kivicare.app_password": ""}),  # a refused form
        admin.post("/settings", data={"section": "google"}),  # the CSRF error page
        admin.get("/nowhere"),  # the 404 page
        admin.get("/oauth/google/callback?state=forged&code=4/forged"),  # the OAuth error page
        admin.get(f"/doctors/{ANNA}"),
    ]
    site.kivicare.set_down(True)  # a KiviCare error, as the test-connection button reports it
    answers.append(admin.post("/settings/kivicare/test", data={"csrf_token": token}))
    site.kivicare.set_down(False)
    callback = google_redirect(site, start_connect(site, admin, MARC), EMAILS[MARC])
    answers.append(admin.get(callback, follow_redirects=True))  # a second doctor connects through the pages
    doctor = wordpress_client(site, ANNA)
    answers += [doctor.get("/me"), doctor.get("/settings"), doctor.get(f"/doctors/{MARC}")]
    assert len(tokens_of(site)) == 4  # Anna's and Marc's refresh and access tokens
    hidden.update({f"{name} (last)": value for name, value in tokens_of(site).items()})

    serializer = site.app.session_interface.get_signing_serializer(site.app)
    for client in (admin, doctor):
        cookie = client.get_cookie("sidecar_session")
        answers.append(json.dumps(serializer.loads(cookie.value)))  # readable by whoever holds the browser
    for answer in answers:
        text = answer if isinstance(answer, str) else (
            answer.get_data(as_text=True) + json.dumps(dict(answer.headers)))
        where = text[:80] if isinstance(answer, str) else f"{answer.request.path} ({answer.status_code})"
        for name, value in hidden.items():
            assert value not in text, f"the {name} is in {where}"
    log_text = caplog.text
    assert any(r.name.startswith("sidecar.") for r in caplog.records)  # the capture did see our log lines
    for name, value in hidden.items():
        assert value not in log_text, f"the {name} is in the log"


def test_the_companion_secret_is_shown_only_on_request_and_never_cached(site):
    secret = site.install_companion()
    admin = admin_client(site)
    page = admin.get("/settings")
    assert secret not in page.text
    shown = admin.post("/settings/companion/reveal", data={"csrf_token": csrf(page.text)})
    assert secret in shown.text
    assert shown.headers["Cache-Control"] == "no-store"
    assert secret not in admin.get("/settings").text
