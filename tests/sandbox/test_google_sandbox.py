"""Contract tests of sandbox/google.py, driven only through the real client stack.

google-api-python-client's ``build()`` with ``api_endpoint``, google-auth's
``Credentials`` and google-auth-oauthlib's ``Flow`` with PKCE talk to the sandbox over
loopback http, exactly as the sidecar will talk to Google (google/NOTES.md, "Client
stack, offline" and "OAuth flow against a local server").
"""

from __future__ import annotations

import email.utils
import html.parser
import http.server
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import google.auth.exceptions
import googleapiclient.http
import pytest
import requests
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError

from sandbox.google import SCOPE_CALENDAR, SCOPE_EVENTS, SCOPE_READONLY, GoogleSandbox

REDIRECT = "http://127.0.0.1:5999/oauth/callback"
ANNA = "anna.schmidt@riverside-clinic.test"
MARC = "marc.dubois@riverside-clinic.test"
SOFIA = "sofia.rossi@riverside-clinic.test"
EVENT_ID = "kc0site0appt42cal0000000001"  # base32hex, as the sidecar derives them


@pytest.fixture(autouse=True)
def _oauthlib_env(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    # googleapiclient's retry backoff sleeps; keep the suite fast.
    monkeypatch.setattr(googleapiclient.http.time, "sleep", lambda _s: None)


@pytest.fixture
def sb():
    sandbox = GoogleSandbox()
    sandbox.start()
    yield sandbox
    sandbox.stop()


# ----------------------------------------------------------------------------- helpers

def make_flow(sb: GoogleSandbox, scopes, **kw) -> Flow:
    return Flow.from_client_config(sb.client_config(REDIRECT), scopes=scopes, redirect_uri=REDIRECT, **kw)


def authorize(flow: Flow, **extra) -> tuple[str, str]:
    url, state = flow.authorization_url(access_type="offline", prompt="consent",
                                        include_granted_scopes="false", **extra)
    return url, state


def connect(sb: GoogleSandbox, email: str = ANNA, scopes=(SCOPE_CALENDAR,)) -> Credentials:
    """Full code flow with auto-approve; returns the Flow's credentials."""
    sb.auto_approve(email)
    flow = make_flow(sb, list(scopes))
    url, _ = authorize(flow)
    resp = requests.get(url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    flow.fetch_token(authorization_response=resp.headers["Location"])
    sb.auto_approve(None)
    return flow.credentials


def service(sb: GoogleSandbox, creds):
    return build("calendar", "v3", credentials=creds, static_discovery=True, cache_discovery=False,
                 client_options={"api_endpoint": sb.api_endpoint})


def event_body(**kw) -> dict:
    body = {"summary": "Consultation", "start": {"dateTime": "2026-03-02T09:00:00+01:00"},
            "end": {"dateTime": "2026-03-02T09:30:00+01:00"}}
    body.update(kw)
    return body


def error_reason(err: HttpError) -> str:
    return err.error_details[0]["reason"]


class _FormParser(html.parser.HTMLParser):
    """Collects the consent form's inputs (as a browser would see them)."""

    def __init__(self):
        super().__init__()
        self.inputs: list[dict] = []
        self.labels: list[str] = []
        self.action = None
        self._in_label = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action")
        if tag in ("input", "button"):
            self.inputs.append({"tag": tag, **a})
        if tag == "label":
            self._in_label = True
            self.labels.append("")

    def handle_endtag(self, tag):
        if tag == "label":
            self._in_label = False

    def handle_data(self, data):
        if self._in_label:
            self.labels[-1] += data


# ----------------------------------------------------------------------------- OAuth

def test_code_flow_with_pkce_auto_approve(sb):
    creds = connect(sb, ANNA, [SCOPE_CALENDAR])
    assert creds.token.startswith("ya29.")
    assert creds.refresh_token
    assert creds.token_uri == sb.token_uri
    assert creds.granted_scopes == [SCOPE_CALENDAR]

    token_call = [r for r in sb.requests if r["path"] == "/token"][0]
    assert token_call["client_auth"] == "basic"  # requests-oauthlib's fetch_token
    assert len(token_call["form"]["code_verifier"]) == 128

    items = service(sb, creds).calendarList().list().execute()["items"]
    assert items[0]["id"] == ANNA
    assert sb.requests[-1]["auth_email"] == ANNA


def test_code_flow_via_html_consent_form(sb):
    flow = make_flow(sb, [SCOPE_CALENDAR, SCOPE_EVENTS])
    url, state = authorize(flow)
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    form = _FormParser()
    form.feed(page.text)
    assert any(MARC in label for label in form.labels)
    radios = [i for i in form.inputs if i.get("type") == "radio"]
    boxes = [i for i in form.inputs if i.get("type") == "checkbox"]
    assert {r["value"] for r in radios} == {ANNA, MARC, SOFIA}
    assert {b["value"] for b in boxes} == {SCOPE_CALENDAR, SCOPE_EVENTS}
    assert all("checked" in b for b in boxes)
    txn = [i for i in form.inputs if i.get("name") == "txn"][0]["value"]

    # The user picks Marc and unchecks the broad scope (granular consent).
    resp = requests.post(sb.base_url + form.action, allow_redirects=False, timeout=5,
                         data={"txn": txn, "account": MARC, "scope": [SCOPE_EVENTS], "action": "allow"})
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    flow.fetch_token(authorization_response=location)
    assert flow.credentials.granted_scopes == [SCOPE_EVENTS]
    # Google drops requested-but-not-granted scopes on refresh instead of failing.
    flow.credentials.refresh(Request())
    assert flow.credentials.granted_scopes == [SCOPE_EVENTS]

    # calendar.events cannot read the calendar list.
    with pytest.raises(HttpError) as exc:
        service(sb, flow.credentials).calendarList().list().execute()
    assert exc.value.status_code == 403 and error_reason(exc.value) == "insufficientPermissions"


def test_consent_cancel_redirects_access_denied(sb):
    flow = make_flow(sb, [SCOPE_CALENDAR])
    url, state = authorize(flow)
    form = _FormParser()
    form.feed(requests.get(url, timeout=5).text)
    txn = [i for i in form.inputs if i.get("name") == "txn"][0]["value"]
    resp = requests.post(sb.base_url + form.action, allow_redirects=False, timeout=5,
                         data={"txn": txn, "account": ANNA, "action": "cancel"})
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query == {"error": ["access_denied"], "state": [state]}


def test_new_flow_without_verifier_is_invalid_grant(sb):
    sb.auto_approve(ANNA)
    url, state = authorize(make_flow(sb, [SCOPE_CALENDAR]))
    location = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
    # The usual Flask mistake: a fresh Flow in the callback, the verifier forgotten.
    callback_flow = make_flow(sb, [SCOPE_CALENDAR], state=state)
    with pytest.raises(InvalidGrantError, match="Missing code verifier"):
        callback_flow.fetch_token(authorization_response=location)


def test_code_is_single_use_and_secret_checked(sb):
    sb.auto_approve(ANNA)
    flow = make_flow(sb, [SCOPE_CALENDAR])
    url, _ = authorize(flow)
    code = parse_qs(urlsplit(requests.get(url, allow_redirects=False, timeout=5).headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": flow.code_verifier}
    bad = requests.post(sb.token_uri, data=form, auth=(sb.client_id, "wrong"), timeout=5)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    ok = requests.post(sb.token_uri, data={**form, "client_id": sb.client_id,
                                           "client_secret": sb.client_secret}, timeout=5)
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"
    again = requests.post(sb.token_uri, data=form, auth=(sb.client_id, sb.client_secret), timeout=5)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_refresh_then_revoked_raises_refresh_error(sb):
    creds = connect(sb)
    first = creds.token
    creds.refresh(Request())
    assert creds.token != first
    assert [r["client_auth"] for r in sb.requests if r["path"] == "/token"][-1] == "form"

    sb.revoke(ANNA)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        service(sb, creds).calendarList().list().execute()


def test_expired_access_token_is_refreshed_transparently(sb):
    creds = connect(sb)
    svc = service(sb, creds)
    old = creds.token
    sb.expire_access_tokens()
    sb.reset_requests()
    assert svc.calendarList().list().execute()["items"]
    assert creds.token != old
    assert [(r["path"], r["status"]) for r in sb.requests] == [
        ("/calendar/v3/users/me/calendarList", 401), ("/token", 200),
        ("/calendar/v3/users/me/calendarList", 200)]


def test_revoke_endpoint_kills_the_grant(sb):
    creds = connect(sb)
    assert requests.post(sb.revoke_uri, params={"token": creds.refresh_token}, timeout=5).status_code == 200
    with pytest.raises(google.auth.exceptions.RefreshError):
        creds.refresh(Request())


# ----------------------------------------------------------------------------- calendars

def test_calendar_list_has_primary_and_clinic_calendar(sb):
    svc = service(sb, connect(sb, SOFIA))
    items = svc.calendarList().list().execute()["items"]
    primary = [c for c in items if c.get("primary")]
    assert [c["id"] for c in primary] == [SOFIA]
    assert primary[0]["accessRole"] == "owner" and primary[0]["timeZone"] == "America/New_York"
    clinic = [c for c in items if c["summary"] == "Clinic appointments"][0]
    assert clinic["id"] == GoogleSandbox.calendar_id(SOFIA, "Clinic appointments")
    assert clinic["accessRole"] == "writer" and clinic["backgroundColor"].startswith("#")
    owners = svc.calendarList().list(minAccessRole="owner").execute()["items"]
    assert [c["id"] for c in owners] == [SOFIA]
    assert svc.calendars().get(calendarId="primary").execute()["id"] == SOFIA


# ----------------------------------------------------------------------------- events

def test_insert_with_deterministic_id_then_duplicate_409(sb):
    svc = service(sb, connect(sb))
    ev = svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID), sendUpdates="none").execute()
    assert ev["id"] == EVENT_ID and ev["status"] == "confirmed" and ev["kind"] == "calendar#event"
    assert ev["etag"].startswith('"') and ev["updated"].endswith("Z") and ev["iCalUID"] == f"{EVENT_ID}@google.com"
    assert ev["organizer"] == {"email": ANNA, "self": True} and ev["reminders"] == {"useDefault": True}
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID)).execute()
    assert exc.value.status_code == 409 and error_reason(exc.value) == "duplicate"
    assert sb.requests[-2]["query"]["sendUpdates"] == "none"


@pytest.mark.parametrize("bad_id", ["abcd", "has-dash-0001", "wxyz00001", "UPPER00001"])
def test_invalid_event_id_is_400(sb, bad_id):
    svc = service(sb, connect(sb))
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(id=bad_id)).execute()
    assert exc.value.status_code == 400 and exc.value.reason == "Invalid resource id value."


def test_times_come_back_as_the_same_instant_in_calendar_zone(sb):
    svc = service(sb, connect(sb))
    ev = svc.events().insert(calendarId="primary", body=event_body(
        start={"dateTime": "2026-07-01T08:00:00Z"}, end={"dateTime": "2026-07-01T08:30:00Z"})).execute()
    assert ev["start"]["dateTime"] == "2026-07-01T10:00:00+02:00"  # Anna's calendar is Europe/Paris
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(end={"dateTime": "2026-03-02T08:00:00+01:00"})).execute()
    assert error_reason(exc.value) == "timeRangeEmpty"


def test_if_match_mismatch_is_412(sb):
    svc = service(sb, connect(sb))
    ev = svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID)).execute()
    req = svc.events().patch(calendarId="primary", eventId=EVENT_ID, body={"summary": "Moved"})
    req.headers["If-Match"] = ev["etag"]
    moved = req.execute()
    assert moved["etag"] != ev["etag"]
    stale = svc.events().patch(calendarId="primary", eventId=EVENT_ID, body={"summary": "Again"})
    stale.headers["If-Match"] = ev["etag"]
    with pytest.raises(HttpError) as exc:
        stale.execute()
    assert exc.value.status_code == 412 and error_reason(exc.value) == "conditionNotMet"


def test_delete_leaves_tombstone(sb):
    svc = service(sb, connect(sb))
    svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID)).execute()
    assert svc.events().delete(calendarId="primary", eventId=EVENT_ID, sendUpdates="none").execute() == ""
    assert svc.events().get(calendarId="primary", eventId=EVENT_ID).execute()["status"] == "cancelled"
    with pytest.raises(HttpError) as exc:
        svc.events().delete(calendarId="primary", eventId=EVENT_ID).execute()
    assert exc.value.status_code == 410 and error_reason(exc.value) == "deleted"
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID)).execute()
    assert exc.value.status_code == 409
    # Hidden from list unless showDeleted; then a bare tombstone.
    assert svc.events().list(calendarId="primary").execute()["items"] == []
    tomb = svc.events().list(calendarId="primary", showDeleted=True).execute()["items"]
    assert [(t["id"], t["status"]) for t in tomb] == [(EVENT_ID, "cancelled")] and "start" not in tomb[0]
    back = svc.events().patch(calendarId="primary", eventId=EVENT_ID, body={"status": "confirmed"}).execute()
    assert back["status"] == "confirmed" and back["summary"] == "Consultation"
    with pytest.raises(HttpError) as exc:
        svc.events().get(calendarId="primary", eventId="unknown00001").execute()
    assert exc.value.status_code == 404 and error_reason(exc.value) == "notFound"


def test_meet_conference_pending_then_success(sb):
    svc = service(sb, connect(sb))
    body = event_body(id=EVENT_ID, conferenceData={"createRequest": {
        "requestId": "req-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}})
    ev = svc.events().insert(calendarId="primary", body=body, conferenceDataVersion=1).execute()
    assert ev["conferenceData"]["createRequest"]["status"]["statusCode"] == "pending"
    assert "entryPoints" not in ev["conferenceData"] and "hangoutLink" not in ev
    got = svc.events().get(calendarId="primary", eventId=EVENT_ID).execute()
    conf = got["conferenceData"]
    assert conf["createRequest"]["status"]["statusCode"] == "success"
    assert conf["conferenceSolution"]["name"] == "Google Meet"
    video = conf["entryPoints"][0]
    assert video["entryPointType"] == "video" and video["uri"] == got["hangoutLink"]
    assert video["uri"] == f"https://meet.google.com/{conf['conferenceId']}"
    assert len(conf["conferenceId"].replace("-", "")) == 10

    # Same requestId again: ignored, the conference stays.
    same = svc.events().patch(calendarId="primary", eventId=EVENT_ID, conferenceDataVersion=1,
                              body={"conferenceData": body["conferenceData"]}).execute()
    assert same["hangoutLink"] == got["hangoutLink"]
    # conferenceData: null with version 1 removes it.
    gone = svc.events().patch(calendarId="primary", eventId=EVENT_ID, conferenceDataVersion=1,
                              body={"conferenceData": None}).execute()
    assert "conferenceData" not in gone and "hangoutLink" not in gone


def test_conference_ignored_without_conference_data_version(sb):
    svc = service(sb, connect(sb))
    body = event_body(conferenceData={"createRequest": {
        "requestId": "req-2", "conferenceSolutionKey": {"type": "hangoutsMeet"}}})
    ev = svc.events().insert(calendarId="primary", body=body).execute()
    assert "conferenceData" not in ev
    assert "conferenceData" not in svc.events().get(calendarId="primary", eventId=ev["id"]).execute()


def test_conference_ready_at_once_with_zero_pending_reads():
    sandbox = GoogleSandbox(conference_pending_reads=0)
    sandbox.start()
    try:
        svc = service(sandbox, connect(sandbox))
        ev = svc.events().insert(calendarId="primary", conferenceDataVersion=1, body=event_body(conferenceData={
            "createRequest": {"requestId": "r", "conferenceSolutionKey": {"type": "hangoutsMeet"}}})).execute()
        assert ev["hangoutLink"].startswith("https://meet.google.com/")
    finally:
        sandbox.stop()


def test_patch_merges_extended_properties(sb):
    svc = service(sb, connect(sb))
    svc.events().insert(calendarId="primary", body=event_body(
        id=EVENT_ID, extendedProperties={"private": {"kcAppointmentId": "42", "hash": "aaa"}})).execute()
    ev = svc.events().patch(calendarId="primary", eventId=EVENT_ID, body={
        "extendedProperties": {"private": {"hash": "bbb", "site": "riverside"}}}).execute()
    assert ev["extendedProperties"]["private"] == {"kcAppointmentId": "42", "hash": "bbb", "site": "riverside"}
    assert ev["summary"] == "Consultation" and ev["start"]["dateTime"] == "2026-03-02T09:00:00+01:00"
    ev = svc.events().patch(calendarId="primary", eventId=EVENT_ID, body={
        "extendedProperties": {"private": {"site": None}}, "description": None}).execute()
    assert ev["extendedProperties"]["private"] == {"kcAppointmentId": "42", "hash": "bbb"}


def test_list_filters_paginates_and_syncs(sb):
    svc = service(sb, connect(sb))
    cal = GoogleSandbox.calendar_id(ANNA, "Clinic appointments")
    for n in range(5):
        svc.events().insert(calendarId=cal, body=event_body(
            id=f"appt{n:02d}0000", summary=f"A{n}",
            start={"dateTime": f"2026-03-0{n + 1}T09:00:00+01:00"},
            end={"dateTime": f"2026-03-0{n + 1}T10:00:00+01:00"},
            extendedProperties={"private": {"kcAppointmentId": str(n)}})).execute()

    hits = svc.events().list(calendarId=cal, privateExtendedProperty=["kcAppointmentId=1", "kcAppointmentId=3"],
                             singleEvents=True).execute()["items"]
    assert sorted(e["id"] for e in hits) == ["appt010000", "appt030000"]
    window = svc.events().list(calendarId=cal, timeMin="2026-03-02T09:30:00+01:00",
                               timeMax="2026-03-04T09:00:00+01:00").execute()["items"]
    assert sorted(e["summary"] for e in window) == ["A1", "A2"]

    seen, page_token, pages = [], None, 0
    while True:
        resp = svc.events().list(calendarId=cal, maxResults=2, pageToken=page_token).execute()
        pages += 1
        seen += [e["id"] for e in resp["items"]]
        page_token = resp.get("nextPageToken")
        if not page_token:
            sync_token = resp["nextSyncToken"]
            break
        assert "nextSyncToken" not in resp
    assert pages == 3 and len(set(seen)) == 5

    svc.events().patch(calendarId=cal, eventId="appt000000", body={"summary": "moved"}).execute()
    svc.events().delete(calendarId=cal, eventId="appt040000").execute()
    changed = svc.events().list(calendarId=cal, syncToken=sync_token).execute()
    assert {(e["id"], e["status"]) for e in changed["items"]} == {
        ("appt000000", "confirmed"), ("appt040000", "cancelled")}
    with pytest.raises(HttpError) as exc:
        svc.events().list(calendarId=cal, syncToken="bogus").execute()
    assert exc.value.status_code == 410 and error_reason(exc.value) == "fullSyncRequired"


def test_body_and_query_validation(sb):
    creds = connect(sb)
    svc = service(sb, creds)
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(bogusField=True)).execute()
    assert exc.value.status_code == 400 and "bogusField" in exc.value.reason
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(start={"dateTime": "2026-03-02T09:00:00Z",
                                                                          "tz": "UTC"})).execute()
    assert "Unknown name \"tz\" at 'resource.start'" in exc.value.reason
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body(summary=123)).execute()
    assert exc.value.status_code == 400 and "resource.summary" in exc.value.reason
    # The client library refuses unknown parameters, so go around it.
    resp = requests.get(sb.api_endpoint + "calendars/primary/events", params={"bogus": "1"},
                        headers={"Authorization": f"Bearer {creds.token}"}, timeout=5)
    assert resp.status_code == 400 and "bogus" in resp.json()["error"]["message"]
    assert set(resp.json()["error"]) == {"code", "message", "errors", "status"}


def test_read_only_scope_cannot_write(sb):
    svc = service(sb, connect(sb, scopes=[SCOPE_READONLY]))
    assert svc.events().list(calendarId="primary").execute()["items"] == []
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId="primary", body=event_body()).execute()
    assert exc.value.status_code == 403 and error_reason(exc.value) == "insufficientPermissions"


def test_faults_rate_limit_and_outage(sb):
    svc = service(sb, connect(sb))
    sb.fail_next(2, 403, "rateLimitExceeded")
    assert svc.calendarList().list().execute(num_retries=3)["items"]
    sb.fail_next(1, 429, "rateLimitExceeded")
    with pytest.raises(HttpError) as exc:
        svc.calendarList().list().execute()
    assert exc.value.status_code == 429 and exc.value.error_details[0]["domain"] == "usageLimits"
    sb.set_down(True)
    with pytest.raises(HttpError) as exc:
        svc.calendarList().list().execute()
    assert exc.value.status_code == 503 and error_reason(exc.value) == "backendError"
    sb.set_down(False)


def test_kill_on_insert_stores_then_kills(sb):
    svc = service(sb, connect(sb))
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sb.kill_on_insert(victim.pid)
        svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID)).execute()
        assert victim.wait(timeout=5) == -9
    finally:
        if victim.poll() is None:
            victim.kill()
    assert [e["id"] for e in sb.events(ANNA)] == [EVENT_ID]


def test_admin_routes_over_http(sb):
    state = requests.get(sb.base_url + "/__sandbox__/state", timeout=5).json()
    assert state["client_id"] == sb.client_id and {a["email"] for a in state["accounts"]} == {ANNA, MARC, SOFIA}
    assert requests.post(sb.base_url + "/__sandbox__/auto_approve", json={"email": MARC}, timeout=5).ok
    flow = make_flow(sb, [SCOPE_CALENDAR])
    url, _ = authorize(flow)
    flow.fetch_token(authorization_response=requests.get(url, allow_redirects=False, timeout=5).headers["Location"])
    svc = service(sb, flow.credentials)
    requests.post(sb.base_url + "/__sandbox__/user_events/" + MARC, timeout=5,
                  json=event_body(summary="Dentist (private)"))
    assert [e["summary"] for e in svc.events().list(calendarId="primary").execute()["items"]] == ["Dentist (private)"]
    log = requests.get(sb.base_url + "/__sandbox__/requests", timeout=5).json()["requests"]
    assert log[-1]["auth_email"] == MARC and log[-1]["query"]["alt"] == "json"


# ----------------------------------------------------------------------------- push notifications

class Receiver:
    """A tiny webhook receiver on loopback: records every POST, answers scripted statuses."""

    def __init__(self, statuses=()):
        self.hits: list[dict] = []
        self.statuses = list(statuses)
        self._cv = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._cv:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.hits.append({"path": self.path, "body": body, "status": status,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})
                    outer._cv.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/google/push?source=test"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def wait(self, n: int, timeout: float = 5.0) -> list[dict]:
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.hits) >= n, timeout), f"only {len(self.hits)} of {n}"
            return list(self.hits)

    def states(self) -> list[tuple[str, int]]:
        with self._cv:
            return [(h["headers"]["x-goog-resource-state"], int(h["headers"]["x-goog-message-number"]))
                    for h in self.hits]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def fast():
    """A sandbox whose notification retries take milliseconds."""
    sandbox = GoogleSandbox(push_retry_delays=(0.01, 0.02, 0.04), channel_ttl=3600)
    sandbox.start()
    yield sandbox
    sandbox.stop()


def watch(svc, receiver, channel_id="chan-0001", calendar="primary", **extra):
    body = {"id": channel_id, "type": "web_hook", "address": receiver.url, **extra}
    return svc.events().watch(calendarId=calendar, body=body).execute()


def test_watch_sync_then_exists_with_google_headers_and_no_body(sb, receiver):
    svc = service(sb, connect(sb))
    before_ms = int(time.time() * 1000)
    ch = watch(svc, receiver, token="site=riverside&doctor=3")
    assert ch["kind"] == "api#channel" and ch["id"] == "chan-0001" and ch["token"] == "site=riverside&doctor=3"
    assert isinstance(ch["expiration"], str)  # int64 travels as a string
    assert abs(int(ch["expiration"]) - (before_ms + 604800 * 1000)) < 60_000  # default ttl: 7 days
    assert ch["resourceUri"].startswith(sb.api_endpoint + "calendars/primary/events")

    sync = receiver.wait(1)[0]
    h = sync["headers"]
    assert sync["body"] == b"" and h["content-length"] == "0" and sync["path"] == "/google/push?source=test"
    assert h["x-goog-resource-state"] == "sync" and h["x-goog-message-number"] == "1"
    assert h["x-goog-channel-id"] == "chan-0001" and h["x-goog-channel-token"] == "site=riverside&doctor=3"
    assert h["x-goog-resource-id"] == ch["resourceId"] and h["x-goog-resource-uri"] == ch["resourceUri"]
    expires = email.utils.parsedate_to_datetime(h["x-goog-channel-expiration"])  # RFC 1123, GMT
    assert int(expires.timestamp()) == int(ch["expiration"]) // 1000

    # Every kind of change to an event of the calendar pings the channel.
    svc.events().insert(calendarId="primary", body=event_body(id=EVENT_ID)).execute()
    svc.events().patch(calendarId="primary", eventId=EVENT_ID, body={"summary": "Moved"}).execute()
    sb.user_insert(ANNA, event_body(summary="Dentist (private)"))
    svc.events().delete(calendarId="primary", eventId=EVENT_ID).execute()
    receiver.wait(5)
    states = receiver.states()
    assert [s for s, _ in states] == ["sync"] + ["exists"] * 4
    numbers = [n for _, n in states]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5  # increasing, not necessarily +1
    assert all("x-goog-channel-token" in hit["headers"] and hit["body"] == b"" for hit in receiver.hits)
    # Another calendar's changes do not reach this channel.
    sb.user_insert(GoogleSandbox.calendar_id(ANNA, "Clinic appointments"), event_body())
    assert sb.flush_notifications() and len(receiver.hits) == 5
    log = sb.notifications
    assert [(n["state"], n["status"], n["ok"]) for n in log] == [("sync", 200, True)] + [("exists", 200, True)] * 4
    # The resource id is the calendar's, the same for a second channel on it.
    again = watch(svc, receiver, channel_id="chan-0002")
    assert again["resourceId"] == ch["resourceId"]


def test_conference_completion_is_a_change(sb, receiver):
    svc = service(sb, connect(sb))
    svc.events().insert(calendarId="primary", conferenceDataVersion=1, body=event_body(
        id=EVENT_ID, conferenceData={"createRequest": {
            "requestId": "r1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}})).execute()
    watch(svc, receiver)
    receiver.wait(1)
    svc.events().get(calendarId="primary", eventId=EVENT_ID).execute()  # Google finishes the Meet
    receiver.wait(2)
    assert [s for s, _ in receiver.states()] == ["sync", "exists"]


def test_stop_only_by_its_creator_then_silence(sb, receiver):
    anna = service(sb, connect(sb, ANNA))
    ch = watch(anna, receiver)
    receiver.wait(1)
    marc = service(sb, connect(sb, MARC))
    with pytest.raises(HttpError) as exc:
        marc.channels().stop(body={"id": ch["id"], "resourceId": ch["resourceId"]}).execute()
    assert exc.value.status_code == 404 and error_reason(exc.value) == "notFound"
    with pytest.raises(HttpError) as exc:
        anna.channels().stop(body={"id": ch["id"], "resourceId": "wrong"}).execute()
    assert exc.value.status_code == 404 and "not found for project" in exc.value.reason
    assert anna.channels().stop(body={"id": ch["id"], "resourceId": ch["resourceId"]}).execute() == ""
    stop_call = sb.requests[-1]
    assert stop_call["path"] == "/calendar/v3/channels/stop" and stop_call["status"] == 204
    anna.events().insert(calendarId="primary", body=event_body()).execute()
    assert sb.flush_notifications()
    assert len(receiver.hits) == 1 and sb.channels()[0]["state"] == "stopped"
    with pytest.raises(HttpError) as exc:  # stopping twice
        anna.channels().stop(body={"id": ch["id"], "resourceId": ch["resourceId"]}).execute()
    assert exc.value.status_code == 404


def test_channel_expiry_clamps_and_stops_notifying(fast, receiver):
    svc = service(fast, connect(fast))
    now_ms = int(time.time() * 1000)
    asked = now_ms + 30 * 86400 * 1000  # cal.com asks for 30 days …
    ch = watch(svc, receiver, expiration=str(asked))
    assert abs(int(ch["expiration"]) - (now_ms + 3600 * 1000)) < 60_000  # … and gets the limit
    short = watch(svc, receiver, channel_id="chan-short", expiration=now_ms + 600_000)  # int accepted too
    assert abs(int(short["expiration"]) - (now_ms + 600_000)) < 1000
    receiver.wait(2)
    fast.advance(601)  # the short channel lapses, the long one lives
    svc.events().insert(calendarId="primary", body=event_body()).execute()
    assert fast.flush_notifications()
    assert [h["headers"]["x-goog-channel-id"] for h in receiver.hits[2:]] == ["chan-0001"]
    fast.expire_channels()
    svc.events().insert(calendarId="primary", body=event_body()).execute()
    assert fast.flush_notifications() and len(receiver.hits) == 3
    assert {c["state"] for c in fast.channels()} == {"expired"}
    # No automatic renewal: a new channel with a new id; the old id stays taken.
    with pytest.raises(HttpError) as exc:
        watch(svc, receiver)
    assert error_reason(exc.value) == "channelIdNotUnique"
    watch(svc, receiver, channel_id="chan-0002")
    receiver.wait(4)
    # Seconds sent where milliseconds are expected: an expiration in 1970.
    with pytest.raises(HttpError) as exc:
        watch(svc, receiver, channel_id="chan-0003", expiration=str(now_ms // 1000))
    assert exc.value.status_code == 400 and "Invalid ttl value" in exc.value.reason


def test_watch_validation(sb, receiver):
    svc = service(sb, connect(sb))
    watch(svc, receiver)
    cases = [
        ({"id": "chan-0001"}, "channelIdNotUnique"),
        ({"id": "x" * 65}, "push.channelIdInvalid"),
        ({"id": "has space"}, "push.channelIdInvalid"),
        ({"id": "chan-t", "token": "t" * 257}, "invalid"),
        ({"id": "chan-a", "address": "http://clinic.example.com/google/push"}, "push.webhookUrlNotHttps"),
        ({"id": "chan-b", "type": "email"}, "push.channelTypeNotSupported"),
    ]
    for extra, reason in cases:
        body = {"type": "web_hook", "address": receiver.url, **extra}
        with pytest.raises(HttpError) as exc:
            svc.events().watch(calendarId="primary", body=body).execute()
        assert exc.value.status_code == 400 and error_reason(exc.value) == reason, extra
    ok = watch(svc, receiver, channel_id="x" * 64, token="t" * 256)  # the limits themselves are fine
    assert ok["token"] == "t" * 256
    with pytest.raises(HttpError) as exc:  # a calendar Anna cannot see
        watch(svc, receiver, channel_id="chan-c", calendar=MARC)
    assert exc.value.status_code == 404
    sb.allow_http_webhooks = False  # Google proper: HTTPS only, loopback or not
    with pytest.raises(HttpError) as exc:
        watch(svc, receiver, channel_id="chan-d")
    assert error_reason(exc.value) == "push.webhookUrlNotHttps"
    assert "WebHook callback must be HTTPS" in exc.value.reason


def test_receiver_5xx_is_retried_other_codes_are_not(fast):
    rec = Receiver(statuses=[503, 500, 200, 404])
    try:
        svc = service(fast, connect(fast))
        watch(svc, rec)
        assert fast.flush_notifications()
        assert [h["headers"]["x-goog-message-number"] for h in rec.wait(3)] == ["1", "1", "1"]
        svc.events().insert(calendarId="primary", body=event_body()).execute()
        assert fast.flush_notifications()
        assert len(rec.wait(4)) == 4  # the 404 is a failure, not retried
        log = [(n["state"], n["attempt"], n["status"], n["retry"]) for n in fast.notifications]
        assert log == [("sync", 1, 503, True), ("sync", 2, 500, True), ("sync", 3, 200, False),
                       ("exists", 1, 404, False)]
        # Unreachable receiver: retried like a 5xx, then given up.
        rec.close()
        svc.events().insert(calendarId="primary", body=event_body()).execute()
        assert fast.flush_notifications()
        tail = fast.notifications[4:]
        assert [n["attempt"] for n in tail] == [1, 2, 3, 4] and all(n["status"] is None for n in tail)
        assert tail[-1]["retry"] is False and tail[0]["error"]
    finally:
        rec.close()


def test_dropped_notifications_leave_a_gap(fast, receiver):
    svc = service(fast, connect(fast))
    watch(svc, receiver)
    receiver.wait(1)
    fast.drop_notifications(1)
    svc.events().insert(calendarId="primary", body=event_body()).execute()
    svc.events().insert(calendarId="primary", body=event_body()).execute()
    assert fast.flush_notifications()
    assert [s for s, _ in receiver.states()] == ["sync", "exists"]
    dropped = [n for n in fast.notifications if n["dropped"]]
    assert len(dropped) == 1 and dropped[0]["status"] is None
    assert receiver.states()[1][1] > dropped[0]["message_number"] > 1


# ----------------------------------------------------------------------------- freeBusy

def test_freebusy_merges_busy_time_only(sb):
    svc = service(sb, connect(sb))
    cal = "primary"

    def add(start, end, **kw):
        svc.events().insert(calendarId=cal, body=event_body(
            start={"dateTime": start}, end={"dateTime": end}, **kw)).execute()

    add("2026-03-02T09:00:00+01:00", "2026-03-02T10:00:00+01:00")
    add("2026-03-02T09:30:00+01:00", "2026-03-02T11:00:00+01:00", status="tentative")  # overlaps: merged
    add("2026-03-02T11:00:00+01:00", "2026-03-02T11:30:00+01:00")  # touches: merged
    add("2026-03-02T12:00:00+01:00", "2026-03-02T13:00:00+01:00", transparency="transparent")
    add("2026-03-02T13:00:00+01:00", "2026-03-02T14:00:00+01:00", eventType="workingLocation",
        workingLocationProperties={"type": "officeLocation", "officeLocation": {"label": "Riverside"}},
        visibility="public", transparency="transparent")
    add("2026-03-02T14:00:00+01:00", "2026-03-02T15:00:00+01:00", eventType="outOfOffice",
        outOfOfficeProperties={"autoDeclineMode": "declineNoneConflictingInvitations"})
    add("2026-03-02T16:00:00+01:00", "2026-03-02T17:00:00+01:00", attendees=[
        {"email": ANNA, "responseStatus": "declined"}, {"email": "patient@example.com"}])
    gone = svc.events().insert(calendarId=cal, body=event_body(
        start={"dateTime": "2026-03-02T17:00:00+01:00"}, end={"dateTime": "2026-03-02T18:00:00+01:00"})).execute()
    svc.events().delete(calendarId=cal, eventId=gone["id"]).execute()
    add("2026-03-02T23:00:00+01:00", "2026-03-03T01:00:00+01:00")  # clipped at timeMax
    svc.events().insert(calendarId=cal, body=event_body(start={"date": "2026-03-04"},
                                                        end={"date": "2026-03-05"})).execute()  # all-day, opaque

    body = {"timeMin": "2026-03-02T00:00:00+01:00", "timeMax": "2026-03-03T00:00:00+01:00",
            "items": [{"id": "primary"}, {"id": MARC}, {"id": "nobody@example.com"}]}
    fb = svc.freebusy().query(body=body).execute()
    assert fb["kind"] == "calendar#freeBusy"
    assert fb["timeMin"] == "2026-03-01T23:00:00.000Z" and fb["timeMax"] == "2026-03-02T23:00:00.000Z"
    assert fb["calendars"]["primary"] == {"busy": [
        {"start": "2026-03-02T08:00:00Z", "end": "2026-03-02T10:30:00Z"},
        {"start": "2026-03-02T13:00:00Z", "end": "2026-03-02T14:00:00Z"},
        {"start": "2026-03-02T22:00:00Z", "end": "2026-03-02T23:00:00Z"}]}
    for other in (MARC, "nobody@example.com"):  # not shared with Anna / unknown
        assert fb["calendars"][other] == {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}

    fb = svc.freebusy().query(body={**body, "timeMax": "2026-03-06T00:00:00+01:00", "timeZone": "Europe/Paris",
                                    "items": [{"id": ANNA}]}).execute()
    assert fb["calendars"][ANNA]["busy"][-1] == {"start": "2026-03-04T00:00:00+01:00",
                                                 "end": "2026-03-05T00:00:00+01:00"}

    # The sidecar can tell these apart on events.list too.
    items = {e["start"]["dateTime"][11:16]: e
             for e in svc.events().list(calendarId=cal, timeMin="2026-03-02T12:00:00+01:00",
                                        timeMax="2026-03-02T17:00:00+01:00").execute()["items"]}
    assert items["12:00"]["transparency"] == "transparent" and items["12:00"]["eventType"] == "default"
    assert items["13:00"]["eventType"] == "workingLocation" and items["13:00"]["visibility"] == "public"
    assert items["13:00"]["workingLocationProperties"]["officeLocation"]["label"] == "Riverside"
    assert items["14:00"]["eventType"] == "outOfOffice" and "transparency" not in items["14:00"]  # absent = busy
    assert [(a["email"], a["responseStatus"], a.get("self")) for a in items["16:00"]["attendees"]] == [
        (ANNA, "declined", True), ("patient@example.com", "needsAction", None)]


def test_freebusy_limits_and_errors(sb):
    svc = service(sb, connect(sb))
    base = {"timeMin": "2026-03-01T00:00:00Z", "timeMax": "2026-05-30T00:00:00Z", "items": [{"id": ANNA}]}
    assert svc.freebusy().query(body=base).execute()["calendars"][ANNA] == {"busy": []}  # 90 days: fine

    def refused(body):
        with pytest.raises(HttpError) as exc:
            svc.freebusy().query(body=body).execute()
        assert exc.value.status_code == 400
        return exc.value

    err = refused({**base, "timeMax": "2026-05-30T00:00:01Z"})
    assert error_reason(err) == "timeRangeTooLong" and err.reason == "The requested time range is too long."
    assert error_reason(refused({**base, "items": [{"id": f"c{i}@example.com"} for i in range(51)]})) \
        == "tooManyCalendarsRequested"
    assert "calendarExpansionMax" in refused({**base, "calendarExpansionMax": 51}).reason
    assert error_reason(refused({**base, "timeMax": base["timeMin"]})) == "timeRangeEmpty"
    assert error_reason(refused({"timeMax": base["timeMax"], "items": base["items"]})) == "required"
    assert "Unknown name" in refused({**base, "calendars": []}).reason
    capped = svc.freebusy().query(body={**base, "calendarExpansionMax": 1,
                                        "items": [{"id": ANNA}, {"id": "primary"}]}).execute()["calendars"]
    assert capped == {ANNA: {"busy": []}, "primary": {
        "errors": [{"domain": "global", "reason": "tooManyCalendarsRequested"}], "busy": []}}
    # calendar.events (write-only scope) may not call freeBusy, as the discovery document says.
    writer = service(sb, connect(sb, MARC, scopes=[SCOPE_EVENTS]))
    with pytest.raises(HttpError) as exc:
        writer.freebusy().query(body=base).execute()
    assert exc.value.status_code == 403 and error_reason(exc.value) == "insufficientPermissions"


def test_free_busy_reader_sees_times_only(sb):
    marc_cal = GoogleSandbox.calendar_id(MARC, "Clinic appointments")
    sb.user_insert(MARC, event_body(id="appt00000001", summary="Root canal (Mr X)"))
    sb.user_insert(MARC, event_body(id="free00000001", summary="Maybe gym", transparency="transparent",
                                    start={"dateTime": "2026-03-02T12:00:00+01:00"},
                                    end={"dateTime": "2026-03-02T13:00:00+01:00"}))
    sb.share_calendar(MARC, ANNA, "freeBusyReader")
    assert {c["id"]: c["accessRole"] for c in sb.calendars(ANNA)}[MARC] == "freeBusyReader"
    svc = service(sb, connect(sb, ANNA))

    entries = {c["id"]: c for c in svc.calendarList().list().execute()["items"]}
    assert entries[MARC]["accessRole"] == "freeBusyReader" and not entries[MARC].get("primary")
    assert entries[ANNA]["primary"] is True and marc_cal not in entries
    readable = [c["id"] for c in svc.calendarList().list(minAccessRole="reader").execute()["items"]]
    assert ANNA in readable and MARC not in readable

    fb = svc.freebusy().query(body={"timeMin": "2026-03-02T00:00:00Z", "timeMax": "2026-03-03T00:00:00Z",
                                    "items": [{"id": MARC}, {"id": marc_cal}]}).execute()["calendars"]
    assert fb[MARC]["busy"] == [{"start": "2026-03-02T08:00:00Z", "end": "2026-03-02T08:30:00Z"}]
    assert fb[marc_cal]["errors"][0]["reason"] == "notFound"

    listed = svc.events().list(calendarId=MARC).execute()
    assert listed["accessRole"] == "freeBusyReader"
    assert [sorted(e) for e in listed["items"]] == [["end", "etag", "id", "kind", "start", "status", "updated"]]
    assert listed["items"][0]["id"] == "appt00000001"  # no summary; the free event is not shown
    with pytest.raises(HttpError) as exc:
        svc.events().get(calendarId=MARC, eventId="free00000001").execute()
    assert exc.value.status_code == 404
    with pytest.raises(HttpError) as exc:
        svc.events().insert(calendarId=MARC, body=event_body()).execute()
    assert exc.value.status_code == 403 and error_reason(exc.value) == "requiredAccessLevel"
    sb.unshare_calendar(MARC, ANNA)
    with pytest.raises(HttpError) as exc:
        svc.events().list(calendarId=MARC).execute()
    assert exc.value.status_code == 404


def test_declined_invitation_and_visibility_are_kept(sb):
    svc = service(sb, connect(sb))
    sb.user_insert(ANNA, event_body(
        id="invite000001", summary="Board meeting", visibility="private",
        organizer={"email": "director@riverside-clinic.test"},
        attendees=[{"email": "director@riverside-clinic.test", "responseStatus": "accepted"},
                   {"email": ANNA, "responseStatus": "declined"}]))
    ev = svc.events().get(calendarId="primary", eventId="invite000001").execute()
    assert ev["organizer"] == {"email": "director@riverside-clinic.test"} and ev["visibility"] == "private"
    me = [a for a in ev["attendees"] if a.get("self")]
    assert me == [{"email": ANNA, "responseStatus": "declined", "self": True}]
    fb = svc.freebusy().query(body={"timeMin": "2026-03-02T00:00:00Z", "timeMax": "2026-03-03T00:00:00Z",
                                    "items": [{"id": ANNA}]}).execute()
    assert fb["calendars"][ANNA]["busy"] == []


def test_push_and_sharing_admin_routes(fast, receiver):
    admin = fast.base_url + "/__sandbox__/"
    shared = requests.post(admin + "share_calendar", json={"calendar_id": SOFIA, "email": MARC}, timeout=5).json()
    assert {c["id"]: c["accessRole"] for c in shared["calendars"]}[SOFIA] == "freeBusyReader"
    svc = service(fast, connect(fast, MARC))
    assert requests.post(admin + "drop_notifications", json={"n": 1}, timeout=5).json() == {"ok": True}
    watch(svc, receiver, calendar=SOFIA)
    assert fast.flush_notifications() and receiver.hits == []  # the sync message was dropped
    requests.post(admin + "user_events/" + SOFIA, json=event_body(), timeout=5)
    receiver.wait(1)
    chans = requests.get(admin + "channels", timeout=5).json()["channels"]
    assert [(c["id"], c["calendarId"], c["state"]) for c in chans] == [("chan-0001", SOFIA, "live")]
    notes = requests.get(admin + "notifications", timeout=5).json()["notifications"]
    assert [(n["state"], n["dropped"]) for n in notes] == [("sync", True), ("exists", False)]
    assert requests.post(admin + "expire_channels", timeout=5).ok
    requests.post(admin + "user_events/" + SOFIA, json=event_body(), timeout=5)
    assert fast.flush_notifications() and len(receiver.hits) == 1
    assert requests.delete(admin + "notifications", timeout=5).ok and fast.notifications == []
    state = requests.get(admin + "state", timeout=5).json()
    assert state["channel_ttl"] == 3600 and state["freebusy_max_days"] == 90
    assert requests.post(admin + "unshare_calendar", json={"calendar_id": SOFIA, "email": MARC}, timeout=5).ok
    assert SOFIA not in [c["id"] for c in fast.calendars(MARC)]
