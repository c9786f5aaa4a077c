"""Connecting doctors: the Connect page, Connect links, the real OAuth flow against the Google sandbox
with a plain HTTP client (no JavaScript), the calendar choice, errors, and disconnect."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from sidecar.config import Config
from sidecar.runtime import Runtime
from sidecar.storage.models import Connection, Doctor, OneTimeToken, SyncLog
from sidecar.web import create_admin, create_app, create_connect_link
from tests.conftest import ANNA, EMAILS, MARC, connect, sandbox_settings
from tests.test_sync_engine import our_events

from .conftest import ADMIN, PASSWORD, csrf, sign_in, text_of

CONNECTED = "Connected. Appointments will appear in {} within a minute."
SUMMARY = re.compile(r"(\d+) events? will be created in calendar (.+?), (\d+) busy blocks?\.")


@pytest.fixture
def site(live, kivicare, google, tmp_path):
    """A runtime wired to both sandboxes, served on a live port with an admin account."""
    overrides = sandbox_settings(kivicare, google, tmp_path, **{"web.public_url": live.url})
    rt = Runtime(Config(None, environ={}, overrides=overrides))
    live.app = create_app(rt)
    create_admin(rt, ADMIN, PASSWORD)
    live.rt = rt
    return live


def http_admin(site) -> requests.Session:
    session = requests.Session()
    page = session.get(site.url + "/login", timeout=10)
    answer = session.post(site.url + "/login", data={"csrf_token": csrf(page.text), "username": ADMIN,
                                                     "password": PASSWORD}, timeout=10)
    assert answer.url == site.url + "/", answer.text[:500]
    return session


def choose(session: requests.Session, page: requests.Response, calendar_id: str | None = None) -> requests.Response:
    """Submit the calendar form like a browser: the pre-selected radio unless ``calendar_id``."""
    if calendar_id is None:
        calendar_id = unescape(re.search(r'name="calendar_id" value="([^"]+)"\s*checked', page.text).group(1))
    action = unescape(re.search(r'<form action="([^"]+)" method="post"', page.text).group(1))
    return session.post(urljoin(page.url, action), data={"csrf_token": csrf(page.text), "calendar_id": calendar_id},
                        timeout=20)


def start_sync(session: requests.Session, page: requests.Response) -> requests.Response:
    """Press "Start syncing" on the first-sync preview."""
    action = unescape(re.search(r'<form action="([^"]+)" method="post" id="confirm-first-sync"', page.text).group(1))
    return session.post(urljoin(page.url, action), data={"csrf_token": csrf(page.text)}, timeout=20)


def test_doctor_connects_through_a_connect_link(site, google):
    admin = http_admin(site)
    doctors = admin.get(site.url + "/connect", timeout=20)
    for name in ("Anna Schmidt", "Marc Dubois", "Sofia Rossi"):
        assert name in doctors.text
    assert Doctor.get_by_id(ANNA).name == "Anna Schmidt"
    made = admin.post(f"{site.url}/connect/{ANNA}/link", data={"csrf_token": csrf(doctors.text)}, timeout=20)
    link = unescape(re.search(r'id="new-link" type="text" value="([^"]+)"', made.text).group(1))
    assert link.startswith(site.url + "/connect/start?token=")
    assert "new-link" not in admin.get(site.url + "/connect", timeout=20).text  # shown once

    google.auto_approve(EMAILS[ANNA])
    doctor = requests.Session()  # no admin session, no JavaScript: links, forms and redirects only
    start = doctor.get(link, timeout=20)
    assert start.status_code == 200
    assert "Connect Anna Schmidt's Google Calendar to KiviCare Calendar Sidecar" in text_of(start.text)
    go = unescape(re.search(r'id="continue" href="([^"]+)"', start.text).group(1))
    page = doctor.get(urljoin(start.url, go), timeout=20)  # → Google (auto-approve) → callback → calendar
    assert page.status_code == 200, text_of(page.text)
    assert urlparse(page.url).path == f"/connect/{ANNA}/calendar"
    assert "Clinic appointments" in page.text and EMAILS[ANNA] in page.text
    preselected = re.search(r'value="([^"]+)"\s*checked>\s*<label[^>]*>([^<]+)', page.text)
    assert preselected.group(2).strip() == "Clinic appointments"

    preview = choose(doctor, page)
    assert preview.status_code == 200 and urlparse(preview.url).path == f"/connect/{ANNA}/preview"
    summary = SUMMARY.search(text_of(preview.text))
    assert summary and summary.group(2) == "Clinic appointments", text_of(preview.text)
    assert Connection.get(Connection.doctor == ANNA).awaiting_confirmation
    assert not [r for r in google.requests if r["method"] in ("POST", "PATCH") and "/events" in r["path"]
                and "/watch" not in r["path"]]  # nothing written before the confirmation
    done = start_sync(doctor, preview)
    assert done.status_code == 200
    assert CONNECTED.format("Clinic appointments") in text_of(done.text)
    conn = Connection.get(Connection.doctor == ANNA)
    assert conn.sync_confirmed_at is not None and conn.sync_confirmed_by == "Connect link"
    assert conn.state == "active" and conn.account_email == EMAILS[ANNA]
    assert conn.calendar_name == "Clinic appointments" and conn.calendar_id
    assert conn.refresh_token and "1//" not in conn.refresh_token  # stored encrypted
    assert SyncLog.select().where((SyncLog.action == "connect") & (SyncLog.doctor_id == ANNA)).exists()

    # The link is used up; the doctor's session is good for this doctor's calendar step only.
    again = requests.get(link, timeout=20)
    assert again.status_code == 403 and "not valid any more" in text_of(again.text)
    assert doctor.get(f"{site.url}/connect/{MARC}/calendar", timeout=20).status_code == 403
    assert urlparse(doctor.get(site.url + "/connect", timeout=20).url).path == "/login"
    assert urlparse(doctor.get(site.url + "/", timeout=20).url).path == "/login"

    status = admin.get(site.url + "/api/status", timeout=20).json()
    anna = next(d for d in status["doctors"] if d["id"] == ANNA)
    assert anna["state"] == "active" and anna["state_label"] == "connected"
    assert anna["account_email"] == EMAILS[ANNA] and anna["calendar_name"] == "Clinic appointments"


def test_admin_connects_now_then_disconnects(site, google):
    admin = http_admin(site)
    doctors = admin.get(site.url + "/connect", timeout=20)
    google.auto_approve(EMAILS[MARC])
    page = admin.post(f"{site.url}/connect/{MARC}/authorize", data={"csrf_token": csrf(doctors.text)}, timeout=20)
    assert urlparse(page.url).path == f"/connect/{MARC}/calendar", text_of(page.text)
    done = start_sync(admin, choose(admin, page, calendar_id=EMAILS[MARC]))  # the primary calendar's id is the address
    assert done.status_code == 200
    conn = Connection.get(Connection.doctor == MARC)
    assert conn.state == "active" and conn.calendar_id == EMAILS[MARC]
    assert CONNECTED.format(conn.calendar_name) in text_of(done.text)

    listing = admin.get(site.url + "/connect", timeout=20)
    assert "Disconnect" in listing.text
    gone = admin.post(f"{site.url}/connect/{MARC}/disconnect", data={"csrf_token": csrf(listing.text)}, timeout=20)
    assert "is disconnected" in text_of(gone.text)
    conn = Connection.get(Connection.doctor == MARC)
    assert conn.state == "disconnected" and conn.refresh_token is None and conn.access_token is None
    assert any(r["path"].endswith("/revoke") for r in google.requests)
    assert SyncLog.select().where((SyncLog.action == "disconnect") & (SyncLog.doctor_id == MARC)).exists()


def test_calendar_choice_must_be_one_of_the_accounts_calendars(site, google):
    admin = http_admin(site)
    doctors = admin.get(site.url + "/connect", timeout=20)
    google.auto_approve(EMAILS[ANNA])
    page = admin.post(f"{site.url}/connect/{ANNA}/authorize", data={"csrf_token": csrf(doctors.text)}, timeout=20)
    wrong = choose(admin, page, calendar_id="someone-else@example.com")
    assert wrong.status_code == 400 and "Choose one of the calendars." in text_of(wrong.text)
    assert Connection.get(Connection.doctor == ANNA).state == "pending"


# ---- errors, with the test client (no Google round trip needed) ------------------------------------

@pytest.fixture
def google_rt(make_rt):
    """A runtime with a Google client configured (endpoints unreachable: these tests never call them)."""
    rt = make_rt(**{"google.client_id": "cid", "google.client_secret": "csecret",
                    "google.auth_uri": "http://127.0.0.1:9/auth", "google.token_uri": "http://127.0.0.1:9/token",
                    "kivicare.base_url": "http://127.0.0.1:9"})
    Doctor.create(id=ANNA, name="Anna Schmidt", email=EMAILS[ANNA])
    return rt


def _admin(rt):
    app = create_app(rt)
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    sign_in(client)
    return client


def test_denied_consent_shows_a_friendly_page_with_try_again(google_rt):
    client = _admin(google_rt)
    page = client.get("/connect")
    start = client.post(f"/connect/{ANNA}/authorize", data={"csrf_token": csrf(page.text)})
    assert start.status_code == 303
    google_url = urlparse(start.headers["Location"])
    query = parse_qs(google_url.query)
    assert query["login_hint"] == [EMAILS[ANNA]] and query["code_challenge_method"] == ["S256"]
    answer = client.get(f"/oauth/google/callback?state={query['state'][0]}&error=access_denied")
    assert answer.status_code == 400
    text = text_of(answer.text)
    assert "Google access was not granted (access_denied)" in text
    assert 'href="/connect">Try again' in answer.text


def test_callback_from_another_browser_is_refused(google_rt):
    client = _admin(google_rt)
    page = client.get("/connect")
    start = client.post(f"/connect/{ANNA}/authorize", data={"csrf_token": csrf(page.text)})
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    stranger = create_app(google_rt).test_client()
    answer = stranger.get(f"/oauth/google/callback?state={state}&code=stolen")
    assert answer.status_code == 400
    assert "started in another browser" in text_of(answer.text)
    assert not Connection.select().exists()


def test_connect_link_without_google_settings_explains(make_rt):
    rt = make_rt()
    Doctor.create(id=ANNA, name="Anna Schmidt", email="")
    create_admin(rt, ADMIN, PASSWORD)
    link = create_connect_link(rt, ANNA)
    client = create_app(rt).test_client()
    start = client.get(urlparse(link).path + "?" + urlparse(link).query)
    assert start.status_code == 200
    go = unescape(re.search(r'id="continue" href="([^"]+)"', start.text).group(1))
    answer = client.get(go)
    assert "Google is not configured yet" in text_of(answer.text)
    assert "Try again" in answer.text and OneTimeToken.get().used_at is None  # not used up


def test_connect_links_are_single_and_expire(make_rt):
    rt = make_rt()
    Doctor.create(id=ANNA, name="Anna Schmidt")
    create_admin(rt, ADMIN, PASSWORD)
    first = create_connect_link(rt, ANNA)
    second = create_connect_link(rt, ANNA)
    client = create_app(rt).test_client()
    path = lambda url: urlparse(url).path + "?" + urlparse(url).query  # noqa: E731
    assert client.get(path(first)).status_code == 403  # replaced by the newer link
    assert client.get(path(second)).status_code == 200
    OneTimeToken.update(expires_at=OneTimeToken.created_at).execute()
    assert client.get(path(second)).status_code == 403


def test_calendar_step_needs_a_session(google_rt):
    client = create_app(google_rt).test_client()
    create_admin(google_rt, ADMIN, PASSWORD)
    answer = client.get(f"/connect/{ANNA}/calendar")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login")


def test_connect_page_lists_known_doctors_when_kivicare_is_down(google_rt):
    client = _admin(google_rt)
    page = client.get("/connect")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "could not reach" in text and "Doctors already known are listed." in text
    assert "Anna Schmidt" in text



def test_connect_link_for_a_doctor_not_loaded_yet(site):
    from tests.conftest import SOFIA
    assert Doctor.get_or_none(Doctor.id == SOFIA) is None
    link = create_connect_link(site.rt, SOFIA)  # e.g. from the CLI, before anyone opened the Connect page
    page = requests.get(link, timeout=20)
    assert "Connect Sofia Rossi's Google Calendar" in text_of(page.text)


def test_google_hiccup_after_consent_keeps_the_link_usable(site, google):
    link = create_connect_link(site.rt, ANNA)
    google.auto_approve(EMAILS[ANNA])
    doctor = requests.Session()
    start = doctor.get(link, timeout=20)
    go = urljoin(start.url, unescape(re.search(r'id="continue" href="([^"]+)"', start.text).group(1)))
    google.fail_next(3, 503)  # the account lookup right after the consent fails (all 3 tries of the client)
    failed = doctor.get(go, timeout=20)
    assert failed.status_code == 503
    assert "did not answer" in text_of(failed.text)
    again = unescape(re.search(r'href="([^"]+)">Try again', failed.text).group(1))
    retry = doctor.get(urljoin(failed.url, again), timeout=20)
    assert retry.status_code == 200  # the link still works
    page = doctor.get(urljoin(retry.url, unescape(re.search(r'id="continue" href="([^"]+)"', retry.text).group(1))),
                      timeout=20)
    assert SUMMARY.search(text_of(choose(doctor, page).text))


# ---- the first-sync preview ---------------------------------------------------------------------------

@pytest.fixture
def held(make_runtime, kivicare, google):
    """Anna connected (sandbox OAuth) but her first sync not confirmed; the companion secret for sign-ins."""
    from .test_sso import SECRET
    runtime = make_runtime(**{"companion.secret": SECRET})
    connection = connect(runtime, google, ANNA, confirm=False)
    app = create_app(runtime)
    create_admin(runtime, ADMIN, PASSWORD)
    app.rt, app.connection = runtime, connection
    return app


def _admin_client(app):
    client = app.test_client()
    sign_in(client)
    return client


def test_admin_sees_waiting_for_confirmation_and_starts_the_sync_from_the_preview(held, google):
    client = _admin_client(held)
    listing = text_of(client.get("/connect").text)
    assert "waiting for confirmation" in listing and "Review and start the sync" in listing
    page = client.get(f"/doctors/{ANNA}")
    assert "Nothing is synced yet" in text_of(page.text) and f"/connect/{ANNA}/preview" in page.text
    preview_page = client.get(f"/connect/{ANNA}/preview")
    assert preview_page.status_code == 200
    summary = SUMMARY.search(text_of(preview_page.text))
    assert summary and summary.group(2) == "Clinic appointments"
    assert client.get(f"/connect/{ANNA}/done").headers["Location"].endswith(f"/connect/{ANNA}/preview")
    assert client.post(f"/connect/{ANNA}/preview").status_code == 400  # no CSRF token: refused
    assert Connection.get_by_id(held.connection.id).awaiting_confirmation
    done = client.post(f"/connect/{ANNA}/preview", data={"csrf_token": csrf(preview_page.text)})
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/connect/{ANNA}/done")
    assert CONNECTED.format("Clinic appointments") in text_of(client.get(f"/connect/{ANNA}/done").text)
    stored = Connection.get_by_id(held.connection.id)
    assert not stored.awaiting_confirmation and stored.sync_confirmed_by == f"{ADMIN} (admin)"
    held.rt.bridge.sync_once()
    assert len(our_events(google, stored.calendar_id)) == int(summary.group(1))
    # Confirmed: the preview now leads to the "connected" page.
    assert client.get(f"/connect/{ANNA}/preview").headers["Location"].endswith(f"/connect/{ANNA}/done")
    from sidecar.storage.models import AuditEntry
    assert AuditEntry.select().where(AuditEntry.action == "first_sync_confirmed").count() == 1


def test_the_doctor_confirms_their_own_preview_and_nobody_else_can(held):
    from .test_sso import ROLES, signed_in
    other, _ = signed_in(held, ROLES["doctor"], uid=MARC, name="Marc Dubois")
    assert other.get(f"/connect/{ANNA}/preview").status_code == 403
    assert other.post(f"/connect/{ANNA}/preview",
                      data={"csrf_token": csrf(other.get("/me").text)}).status_code == 403
    desk, _ = signed_in(held, ROLES["receptionist"], uid=2, name="Claire Martin")
    assert desk.post(f"/connect/{ANNA}/preview", data={"csrf_token": csrf(desk.get("/").text)}).status_code == 403
    anonymous = held.test_client().get(f"/connect/{ANNA}/preview")
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
    assert Connection.get_by_id(held.connection.id).awaiting_confirmation

    anna, _ = signed_in(held, ROLES["doctor"], uid=ANNA)
    me = text_of(anna.get("/me").text)
    assert "waiting for confirmation" in me and "Review and start the sync" in me
    page = anna.get(f"/connect/{ANNA}/preview")
    assert page.status_code == 200 and SUMMARY.search(text_of(page.text))
    assert anna.post(f"/connect/{ANNA}/preview", data={"csrf_token": csrf(page.text)}).status_code == 303
    stored = Connection.get_by_id(held.connection.id)
    assert not stored.awaiting_confirmation and stored.sync_confirmed_by == "Anna Schmidt (doctor)"


def test_a_doctor_name_from_kivicare_is_inert_on_the_preview(held):
    Doctor.update(name='<script>alert("x")</script>').where(Doctor.id == ANNA).execute()
    page = _admin_client(held).get(f"/connect/{ANNA}/preview")
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text


def test_google_refusing_the_grant_turns_the_page_into_reconnect(held, google):
    from wp_bridge import preview
    preview.confirm(held.rt, held.connection)
    google.revoke(EMAILS[ANNA])
    google.expire_access_tokens()
    client = _admin_client(held)
    text = text_of(client.get(f"/doctors/{ANNA}").text)
    assert "Click Reconnect below" in text and "Google no longer accepts this connection" in text
    held.rt.bridge.sync_once()  # the engine meets the refusal too: the state says so from now on
    assert Connection.get_by_id(held.connection.id).state == "needs_reconnect"
    text = text_of(client.get(f"/doctors/{ANNA}").text)
    assert "needs reconnect" in text and "Click Reconnect below" in text and "Reconnect" in text
