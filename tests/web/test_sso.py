"""Sign-in from WordPress through the companion plugin (``/sso``) and what each role may do.

Tokens are made exactly as the plugin makes them (``wp_bridge.signing.make_sso_token``; the plugin's
own vectors are checked in tests/companion/test_signing.py). Every refusal is checked to leave no
session behind and to change nothing.
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import urlparse

import pytest
import requests

from sidecar.config import Config
from sidecar.runtime import Runtime
from sidecar.storage.models import Connection, Doctor, SettingRow, SyncLog, utcnow
from sidecar.web import create_admin, create_app
from tests.conftest import ANNA, EMAILS, MARC, sandbox_settings
from wp_bridge.signing import make_sso_token

from .conftest import ADMIN, PASSWORD, csrf, text_of
from .test_connect import choose, start_sync

SECRET = "sso-test-secret-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
ROLES = {"admin": ["administrator"], "clinic_admin": ["kiviCare_clinic_admin"], "doctor": ["kiviCare_doctor"],
         "receptionist": ["kiviCare_receptionist"], "patient": ["kiviCare_patient"], "subscriber": ["subscriber"]}


def token(uid: int = ANNA, roles=("kiviCare_doctor",), *, secret: str = SECRET, ttl: int = 120, jti: str | None = None,
          name: str = "Anna Schmidt", **extra) -> str:
    payload = {"uid": uid, "roles": roles if isinstance(roles, dict) else list(roles), "name": name, "email": "someone@example.test",
               "exp": int(time.time()) + ttl, "jti": jti or secrets.token_hex(16), "site": "https://clinic.example"}
    payload.update(extra)
    return make_sso_token(secret, payload)


@pytest.fixture
def site(rt):
    """An app with the companion secret, a local admin, two doctors and Marc's active connection."""
    rt.cfg.set("companion.secret", SECRET)
    create_admin(rt, ADMIN, PASSWORD)
    Doctor.create(id=ANNA, name="Anna Schmidt", email=EMAILS[ANNA])
    Doctor.create(id=MARC, name="Marc Dubois", email=EMAILS[MARC])
    Connection.create(doctor=MARC, account_email="marc@gmail.test", calendar_id="c2", calendar_name="Work",
                      sync_confirmed_at=utcnow(),  # syncing already (first-sync preview confirmed)
                      state="active", refresh_token=rt.box.encrypt("1//marc-refresh"), synced_count=7)
    SyncLog.create(doctor_id=ANNA, appointment_id="501", action="create", outcome="ok")
    SyncLog.create(doctor_id=MARC, appointment_id="777", action="create", outcome="ok")
    return create_app(rt)


def signed_in(app, roles, uid=ANNA, name="Anna Schmidt"):
    client = app.test_client()
    answer = client.get("/sso?token=" + token(uid, roles, name=name))
    assert answer.status_code == 303, text_of(answer.text)
    return client, answer


def assert_signed_out(client):
    answer = client.get("/")
    assert answer.status_code == 302 and urlparse(answer.headers["Location"]).path == "/login"


# ---- the token ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("who, landing", [("admin", "/"), ("clinic_admin", "/"), ("doctor", "/me"),
                                          ("receptionist", "/")])
def test_each_staff_role_signs_in(site, who, landing):
    client, answer = signed_in(site, ROLES[who], uid=ANNA if who == "doctor" else 2, name="Claire Martin"
                               if who != "doctor" else "Anna Schmidt")
    assert answer.headers["Location"] == landing
    page = client.get(landing)
    assert page.status_code == 200
    text = text_of(page.text)
    if who in ("admin", "clinic_admin"):
        assert "Settings" in text and "Connect doctors" in text and "Sign out (Claire Martin)" in text
        assert client.get("/settings").status_code == 200
    elif who == "doctor":
        assert "My Google Calendar" in text and "Sign out (Anna Schmidt)" in text and "Settings" not in text
    else:
        assert "Read-only view" in text and "Sign out (Claire Martin, read-only)" in text
        assert "Settings" not in text and "Connect doctors" not in text


def test_the_highest_role_wins_and_wordpress_role_objects_are_read(site):
    _, answer = signed_in(site, ["kiviCare_patient", "kiviCare_doctor"])
    assert answer.headers["Location"] == "/me"
    client = site.test_client()
    # PHP writes an array with gaps in its keys as an object.
    answer = client.get("/sso?token=" + token(2, {"1": "kiviCare_receptionist", "3": "administrator"}))
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    assert client.get("/settings").status_code == 200


@pytest.mark.parametrize("who, message", [("patient", "Patients cannot sign in here"),
                                          ("subscriber", "Your WordPress account has no access")])
def test_patients_and_other_roles_are_refused(site, who, message):
    client = site.test_client()
    answer = client.get("/sso?token=" + token(9, ROLES[who]))
    assert answer.status_code == 403 and message in text_of(answer.text)
    assert_signed_out(client)


def test_a_token_works_once(site):
    link = "/sso?token=" + token(ANNA, ["administrator"])
    first = site.test_client()
    assert first.get(link).status_code == 303
    replay = site.test_client()
    answer = replay.get(link)
    assert answer.status_code == 403 and "already used" in text_of(answer.text)
    assert_signed_out(replay)
    assert first.get("/settings").status_code == 200  # the first sign-in is unaffected


def test_expired_tampered_and_foreign_tokens_are_refused(site):
    cases = {
        "expired": (token(ANNA, ["administrator"], ttl=-1), "has expired"),
        "foreign": (token(ANNA, ["administrator"], secret="another site's secret"), "not valid"),
        "too long": (token(ANNA, ["administrator"], ttl=86400), "not valid"),
        "no jti": (token(ANNA, ["administrator"], jti="short"), "not valid"),
        "no user": (token(0, ["administrator"]), "not valid"),
    }
    # Tampering: a doctor's token turned into an administrator's, signature kept.
    import base64
    import json
    doctor = token(ANNA, ["kiviCare_doctor"])
    encoded, mac = doctor.split(".")
    payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    payload["roles"] = ["administrator"]
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + mac
    cases["tampered"] = (forged, "not valid")
    cases["garbage"] = ("<script>alert(1)</script>", "not valid")
    for name, (bad, message) in cases.items():
        client = site.test_client()
        answer = client.get("/sso", query_string={"token": bad})
        assert answer.status_code == 403, name
        assert message in text_of(answer.text), name
        assert "<script>alert" not in answer.text
        assert_signed_out(client)
    empty = site.test_client().get("/sso")
    assert empty.status_code == 400


def test_without_a_secret_sso_is_not_available(rt):
    create_admin(rt, ADMIN, PASSWORD)
    app = create_app(rt)
    answer = app.test_client().get("/sso?token=" + token(ANNA, ["administrator"]))
    assert answer.status_code == 503 and "not set up" in text_of(answer.text)


def test_a_new_secret_ends_every_wordpress_session(site, rt):
    client, _ = signed_in(site, ["administrator"], uid=2)
    assert client.get("/settings").status_code == 200
    rt.cfg.set("companion.secret", SECRET + "-new")
    assert_signed_out(client)


def test_sign_out(site):
    client, _ = signed_in(site, ["kiviCare_receptionist"], uid=2)
    page = client.get("/")
    assert client.post("/logout", data={"csrf_token": csrf(page.text)}).status_code == 302
    assert_signed_out(client)


# ---- doctors: their own page only -----------------------------------------------------------------------

def test_doctor_page_shows_own_connection_and_activity(site):
    client, _ = signed_in(site, ["kiviCare_doctor"])
    text = text_of(client.get("/me").text)
    assert "not connected" in text and "Connect my Google Calendar" in text
    assert "501" in text and "777" not in text  # own activity only
    marc, _ = signed_in(site, ["kiviCare_doctor"], uid=MARC, name="Marc Dubois")
    text = text_of(marc.get("/me").text)
    assert "connected" in text and "marc@gmail.test" in text and "Work" in text and "Disconnect" in text
    assert "777" in text and "501" not in text
    assert marc.get(f"/doctors/{MARC}").headers["Location"] == "/me"


def test_doctor_cannot_reach_other_doctors_or_admin_pages(site):
    client, _ = signed_in(site, ["kiviCare_doctor"])  # Anna
    token_ = csrf(client.get("/me").text)
    for path in (f"/doctors/{MARC}", "/connect", "/settings", "/", f"/connect/{MARC}/calendar",
                 f"/connect/{MARC}/done"):
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert "Back to my calendar" in answer.text, path
    api = client.get("/api/status")
    assert api.status_code == 403 and api.json["error"] == "forbidden"
    for path, data in ((f"/connect/{MARC}/disconnect", {}), (f"/connect/{MARC}/link", {}),
                       (f"/connect/{MARC}/authorize", {}), (f"/connect/{MARC}/calendar", {"calendar_id": "x"}),
                       ("/settings", {"section": "google", "google.client_id": "evil"}),
                       ("/settings/companion/secret", {}), ("/settings/companion/reveal", {}),
                       ("/settings/kivicare/test", {})):
        answer = client.post(path, data={"csrf_token": token_, **data})
        assert answer.status_code == 403, path
        assert SECRET not in answer.text
    marc = Connection.get(Connection.doctor == MARC)
    assert marc.state == "active" and marc.refresh_token
    assert site.extensions["sidecar_runtime"].cfg.get("companion.secret") == SECRET
    assert not SettingRow.select().where(SettingRow.key == "google.client_id").exists()


def test_doctor_disconnects_own_calendar_only(site):
    marc, _ = signed_in(site, ["kiviCare_doctor"], uid=MARC, name="Marc Dubois")
    page = marc.get("/me")
    answer = marc.post("/me/disconnect", data={"csrf_token": csrf(page.text)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/me"
    assert Connection.get(Connection.doctor == MARC).state == "disconnected"
    assert "is disconnected" in text_of(marc.get("/me").text)
    # Anna has no connection: her disconnect touches nothing of Marc's.
    anna, _ = signed_in(site, ["kiviCare_doctor"])
    answer = anna.post("/me/disconnect", data={"csrf_token": csrf(anna.get("/me").text)})
    assert answer.status_code == 303
    assert Connection.select().count() == 1


def test_me_and_self_actions_need_a_doctor(site):
    receptionist, _ = signed_in(site, ["kiviCare_receptionist"], uid=2)
    assert receptionist.get("/me").status_code == 403
    admin, _ = signed_in(site, ["administrator"], uid=2)
    assert admin.get("/me").headers["Location"] == "/"
    assert admin.get(f"/doctors/{MARC}").status_code == 200
    page = admin.get("/")
    assert admin.post("/me/connect", data={"csrf_token": csrf(page.text)}).status_code == 403
    anonymous = site.test_client()
    assert urlparse(anonymous.get("/me").headers["Location"]).path == "/login"
    assert urlparse(anonymous.get(f"/doctors/{ANNA}").headers["Location"]).path == "/login"


# ---- receptionists: read-only ---------------------------------------------------------------------------

def test_receptionist_dashboard_is_read_only(site):
    client, _ = signed_in(site, ["kiviCare_receptionist"], uid=2)
    page = client.get("/")
    assert page.status_code == 200
    forms = re.findall(r'<form(?![^>]*method="get")[^>]*action="([^"]+)"', page.text)  # a GET search changes nothing
    assert forms == ["/logout"]  # no button that changes anything
    assert "/settings" not in page.text and "/connect" not in page.text and "/doctors/" not in page.text
    assert client.get("/api/status").json["doctors"][0]["name"] == "Anna Schmidt"
    token_ = csrf(page.text)
    for path in ("/settings", "/connect", f"/doctors/{ANNA}", f"/connect/{MARC}/calendar"):
        assert client.get(path).status_code == 403, path
    for path, data in (("/settings", {"section": "sync", "bridge.poll_seconds": "5"}),
                       (f"/connect/{MARC}/disconnect", {}), (f"/connect/{ANNA}/link", {}),
                       ("/settings/companion/secret", {}), ("/settings/companion/reveal", {}),
                       ("/settings/companion/test", {}), ("/me/connect", {}), ("/me/disconnect", {})):
        answer = client.post(path, data={"csrf_token": token_, **data})
        assert answer.status_code == 403, path
        assert SECRET not in answer.text
    assert Connection.get(Connection.doctor == MARC).state == "active"
    assert site.extensions["sidecar_runtime"].cfg.get("bridge.poll_seconds") == 30
    assert site.extensions["sidecar_runtime"].cfg.get("companion.secret") == SECRET


# ---- a doctor connects their own calendar, from KiviCare's link to Google and back --------------------------

def test_doctor_connects_own_calendar_from_the_kivicare_link(live, kivicare, google, tmp_path):
    overrides = sandbox_settings(kivicare, google, tmp_path, **{"web.public_url": live.url})
    rt = Runtime(Config(None, environ={}, overrides=overrides))
    rt.cfg.set("companion.secret", SECRET)
    create_admin(rt, ADMIN, PASSWORD)
    live.app = create_app(rt)
    kivicare.install_companion(SECRET, live.url)

    browser = requests.Session()
    me = browser.get(kivicare.companion.sso_url(ANNA), timeout=20)  # the "Google Calendar" link in KiviCare
    assert urlparse(me.url).path == "/me" and "Anna Schmidt" in text_of(me.text)
    assert Doctor.get_by_id(ANNA).email == EMAILS[ANNA]  # learnt from KiviCare at sign-in
    google.auto_approve(EMAILS[ANNA])
    page = browser.post(live.url + "/me/connect", data={"csrf_token": csrf(me.text)}, timeout=20)
    assert urlparse(page.url).path == f"/connect/{ANNA}/calendar", text_of(page.text)
    done = start_sync(browser, choose(browser, page))  # the calendar, then the first-sync preview
    assert "Connected. Appointments will appear in Clinic appointments" in text_of(done.text)
    assert "Back to my calendar" in done.text
    text = text_of(browser.get(live.url + "/me", timeout=20).text)
    assert "connected" in text and EMAILS[ANNA] in text and "Clinic appointments" in text and "Reconnect" in text
    assert Connection.get(Connection.doctor == ANNA).state == "active"
    # Her session is for her calendar only.
    assert browser.get(f"{live.url}/connect/{MARC}/calendar", timeout=20).status_code == 403
    assert browser.get(f"{live.url}/doctors/{MARC}", timeout=20).status_code == 403
    # A patient following the same kind of link is refused.
    patient = requests.Session().get(kivicare.companion.sso_url(5), timeout=20)
    assert patient.status_code == 403 and "Patients cannot sign in here" in text_of(patient.text)
