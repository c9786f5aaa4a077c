"""The settings page: saving, validation messages, fixed settings, secrets never shown, KiviCare test."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from sidecar.storage.models import SettingRow
from sidecar.web import create_admin, create_app

from .conftest import ADMIN, PASSWORD, csrf, sign_in, text_of


def post_section(client, section: str, **fields):
    page = client.get("/settings")
    return client.post("/settings", data={"csrf_token": csrf(page.text), "section": section, **fields})


def test_page_shows_redirect_uri_scopes_and_placeholders(admin_client):
    page = admin_client.get("/settings")
    assert page.status_code == 200
    assert 'value="http://127.0.0.1:8300/oauth/google/callback" readonly' in page.text
    assert "https://www.googleapis.com/auth/calendar" in page.text
    assert "{{clinic_name}}" in page.text and "{{appointment_time}}" in page.text
    # Every control has a label.
    for control_id in ("f-google-client-id", "f-kivicare-base-url", "f-bridge-poll-seconds", "redirect-uri"):
        assert f'for="{control_id}"' in page.text


def test_save_google_and_secret_is_never_rendered_back(admin_client, rt):
    answer = post_section(admin_client, "google", **{
        "google.client_id": "1234-abc.apps.googleusercontent.com",
        "google.client_secret": "GOCSPX-verysecretvalue-WXYZ", "google.app_name": "Riverside Calendar"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#google"
    assert rt.cfg.get("google.client_id") == "1234-abc.apps.googleusercontent.com"
    assert rt.cfg.get("google.client_secret") == "GOCSPX-verysecretvalue-WXYZ"
    assert SettingRow.get(SettingRow.key == "google.client_secret").encrypted
    assert rt.poll_requested.is_set()
    page = admin_client.get("/settings")
    assert "GOCSPX-verysecretvalue" not in page.text
    assert "••••WXYZ" in page.text
    assert "Google settings saved." in text_of(page.text)
    # An empty secret field keeps the stored value.
    post_section(admin_client, "google", **{"google.client_id": "other-id", "google.client_secret": "",
                                            "google.app_name": "Riverside Calendar"})
    assert rt.cfg.get("google.client_secret") == "GOCSPX-verysecretvalue-WXYZ"
    assert rt.cfg.get("google.client_id") == "other-id"


@pytest.mark.parametrize("section, fields, field_name, message", [
    ("kivicare", {"kivicare.base_url": "ftp://clinic.example", "kivicare.username": "sidecar"},
     "kivicare.base_url", "starting with https://"),
    ("kivicare", {"kivicare.base_url": "https://clinic.example/wp-json", "kivicare.username": "sidecar"},
     "kivicare.base_url", "without /wp-json"),
    ("sync", {"bridge.poll_seconds": "0", "bridge.horizon_days": "90", "sync.event_template": "template",
              "sync.title_template": "{{service_name}}"}, "bridge.poll_seconds", "whole number from 5 to 3600"),
    ("sync", {"bridge.poll_seconds": "30", "bridge.horizon_days": "soon", "sync.event_template": "template",
              "sync.title_template": "{{service_name}}"}, "bridge.horizon_days", "whole number from 1 to 365"),
    ("sync", {"bridge.poll_seconds": "30", "bridge.horizon_days": "90", "sync.event_template": "template",
              "sync.title_template": "{{service_name}}", "sync.reminder_minutes": "10, soon"},
     "sync.reminder_minutes", "whole numbers of minutes"),
    ("sync", {"bridge.poll_seconds": "30", "bridge.horizon_days": "90", "sync.event_template": "template",
              "sync.title_template": "{{patient_nam}}"}, "sync.title_template", "Unknown placeholder {{patient_nam}}"),
    ("sync", {"bridge.poll_seconds": "30", "bridge.horizon_days": "90", "sync.event_template": "everything",
              "sync.title_template": "x"}, "sync.event_template", "Choose one of the options"),
    ("google", {"google.client_id": "x", "google.app_name": ""}, "google.app_name", "cannot be empty"),
])
def test_validation_messages_and_nothing_saved(admin_client, rt, section, fields, field_name, message):
    before = {name: rt.cfg.get(name) for name in fields if name in ("bridge.poll_seconds", "kivicare.username",
                                                                     "google.client_id")}
    answer = post_section(admin_client, section, **fields)
    assert answer.status_code == 400
    page = text_of(answer.text)
    assert message in page
    assert "Nothing was saved" in page
    assert 'aria-invalid="true"' in answer.text
    for name, value in before.items():
        assert rt.cfg.get(name) == value  # the section is saved whole or not at all


def test_sync_section_saves_typed_values(admin_client, rt):
    answer = post_section(admin_client, "sync", **{
        "bridge.poll_seconds": "60", "bridge.horizon_days": "30", "sync.event_template": "detailed",
        "sync.title_template": "{{service_name}} at {{clinic_name}}", "sync.description_template": "Hello",
        "sync.invite_patients": "on", "sync.reminder_minutes": "60, 10"})
    assert answer.status_code == 302
    assert rt.cfg.get("bridge.poll_seconds") == 60 and rt.cfg.get("bridge.horizon_days") == 30
    assert rt.cfg.get("sync.event_template") == "detailed"
    assert rt.cfg.get("sync.invite_patients") is True
    assert rt.cfg.get("sync.reminder_minutes") == [10, 60]
    post_section(admin_client, "sync", **{"bridge.poll_seconds": "60", "bridge.horizon_days": "30",
                                          "sync.event_template": "template", "sync.title_template": "x"})
    assert rt.cfg.get("sync.invite_patients") is False  # an unticked box is "no"
    assert rt.cfg.get("sync.reminder_minutes") == []


def test_fixed_settings_are_read_only(make_rt, tmp_path):
    ini = tmp_path / "config.ini"
    ini.write_text("[kivicare]\nbase_url = https://clinic.example\n", encoding="utf-8")
    rt = make_rt(environ={"SIDECAR_GOOGLE_CLIENT_SECRET": "env-secret-value-9876"}, ini=ini,
                 **{"google.client_id": "fixed-id"})
    app = create_app(rt)
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    sign_in(client)
    page = client.get("/settings")
    text = text_of(page.text)
    assert "Read-only: set in config.ini." in text
    assert "Read-only: set by SIDECAR_GOOGLE_CLIENT_SECRET." in text
    assert "Read-only: fixed when the sidecar was started." in text
    assert "env-secret-value" not in page.text and "••••9876" in page.text
    assert 'name="kivicare.base_url"' not in page.text and 'name="google.client_id"' not in page.text
    # A forged value for a fixed setting is ignored; the others are saved.
    answer = client.post("/settings", data={"csrf_token": csrf(page.text), "section": "google",
                                            "google.client_id": "forged", "google.app_name": "Clinic Sync"})
    assert answer.status_code == 302
    assert rt.cfg.get("google.client_id") == "fixed-id"
    assert rt.cfg.get("google.app_name") == "Clinic Sync"


# ---- the KiviCare connection test ----------------------------------------------------------------

def _test_result(client) -> str:
    page = client.get("/settings")
    answer = client.post("/settings/kivicare/test", data={"csrf_token": csrf(page.text)})
    assert answer.status_code == 200
    assert "Traceback" not in answer.text
    return text_of(answer.text)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_kivicare_unreachable_gives_a_message(admin_client, rt):
    rt.cfg.set("kivicare.base_url", f"http://127.0.0.1:{_closed_port()}")
    rt.cfg.set("kivicare.username", "sidecar")
    text = _test_result(admin_client)
    assert "could not reach http://127.0.0.1:" in text


def test_kivicare_not_set_gives_a_message(admin_client):
    assert "Enter and save the KiviCare site URL first." in _test_result(admin_client)


@pytest.fixture
def wordpress_401():
    """A tiny site answering every request like WordPress with a wrong application password."""
    def app(environ, start_response):
        body = json.dumps({"code": "unauthorized", "message": "Unauthorized", "data": {"status": 401}})
        return Response(body, status=401, content_type="application/json")(environ, start_response)
    server = make_server("127.0.0.1", 0, app)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_kivicare_wrong_credentials_local_401(admin_client, rt, wordpress_401):
    rt.cfg.set("kivicare.base_url", wordpress_401)
    rt.cfg.set("kivicare.username", "sidecar")
    rt.cfg.set("kivicare.app_password", "wrong wrong wrong")
    assert "WordPress did not accept this user and application password" in _test_result(admin_client)


def test_kivicare_sandbox_wrong_and_right_credentials(admin_client, rt, kivicare):
    rt.cfg.set("kivicare.base_url", kivicare.base_url)
    rt.cfg.set("kivicare.username", kivicare.username)
    rt.cfg.set("kivicare.app_password", "not the right application password")
    assert "WordPress did not accept this user and application password" in _test_result(admin_client)

    rt.cfg.set("kivicare.app_password", kivicare.app_password)
    text = _test_result(admin_client)
    assert "Connected to KiviCare." in text
    assert "Timezone" in text and "Add-ons" in text
    zone = rt.get_state("site_timezone")
    assert zone and zone in text
    assert kivicare.app_password not in admin_client.get("/settings").text


def test_kivicare_sandbox_warns_about_conflicting_addon(admin_client, rt, kivicare):
    for name, value in (("kivicare.base_url", kivicare.base_url), ("kivicare.username", kivicare.username),
                        ("kivicare.app_password", kivicare.app_password)):
        rt.cfg.set(name, value)
    kivicare.set_addon("googlemeet", True)
    assert "Google Meet add-on is active" in _test_result(admin_client)


def test_telemedicine_services_from_kivicare(admin_client, rt, kivicare):
    for name, value in (("kivicare.base_url", kivicare.base_url), ("kivicare.username", kivicare.username),
                        ("kivicare.app_password", kivicare.app_password)):
        rt.cfg.set(name, value)
    services = {s.service_id: s for s in rt.kivicare().list_doctor_services()}
    page = admin_client.get("/settings")
    for service_id, service in services.items():
        assert f'id="service-{service_id}"' in page.text
        assert service.name in page.text
    if any(s.telemed for s in services.values()):
        assert "suggested (flagged telemedicine in KiviCare)" in page.text
    chosen = sorted(services)[:2]
    answer = admin_client.post("/settings", data={"csrf_token": csrf(page.text), "section": "telemedicine",
                                                  "service": [str(i) for i in chosen]})
    assert answer.status_code == 302
    assert rt.cfg.get("sync.telemedicine_services") == chosen
    page = admin_client.get("/settings")
    for service_id in chosen:
        assert re.search(rf'id="service-{service_id}"[^>]*checked', page.text)


def test_telemedicine_keeps_saved_ids_when_kivicare_is_down(admin_client, rt):
    rt.cfg.set("kivicare.base_url", f"http://127.0.0.1:{_closed_port()}")
    rt.cfg.set("sync.telemedicine_services", [7])
    page = admin_client.get("/settings")
    text = text_of(page.text)
    assert "The services could not be loaded from KiviCare" in text
    assert "Service #7 (not found in KiviCare now)" in text


def test_plain_http_public_url_is_flagged(make_rt):
    rt = make_rt(**{"web.public_url": "http://sidecar.clinic.example"})
    app = create_app(rt)
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    sign_in(client)
    text = text_of(client.get("/settings").text)
    assert "http://sidecar.clinic.example/oauth/google/callback" in client.get("/settings").text
    assert "Google refuses redirect URIs that are not https" in text


# ---- two-way sync and alerts --------------------------------------------------------------------

TWO_WAY = {"sync.direction": "google_to_kivicare", "sync.conflict_rule": "manual", "sync.mass_cancel_share": "45"}


def test_two_way_section_explains_each_choice_and_saves(admin_client, rt):
    page = admin_client.get("/settings")
    text = text_of(page.text)
    assert "Two-way sync" in text and 'href="#two_way"' in page.text
    for label in ("Both ways", "KiviCare → Google only", "Google → KiviCare only", "KiviCare wins", "Google wins",
                  "The most recent change wins", "The admin chooses"):
        assert label in text
    assert "Only moves, deletions and busy times flow from Google to KiviCare" in text
    assert "Nothing changes on either side until an admin chooses a version on the Conflicts page." in text
    for control_id in ("f-sync-direction-both", "f-sync-conflict-rule-manual", "f-sync-mass-cancel-share",
                       "f-google-push-over-http", "f-alerts-recipients"):
        assert f'for="{control_id}"' in page.text  # every control has a label
    assert 'id="f-sync-direction-both" name="sync.direction" value="both"\n               checked' in page.text
    answer = post_section(admin_client, "two_way", **TWO_WAY)
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#two_way"
    assert rt.cfg.get("sync.direction") == "google_to_kivicare"
    assert rt.cfg.get("sync.conflict_rule") == "manual" and rt.cfg.get("sync.mass_cancel_share") == 45
    assert rt.cfg.get("google.push_over_http") is False  # an unticked box is "no"
    assert rt.poll_requested.is_set()
    assert "Two-way sync settings saved." in text_of(admin_client.get("/settings").text)


def test_push_over_http_is_shown_with_a_local_testing_warning(admin_client, rt):
    page = admin_client.get("/settings")
    warning = re.search(r'<p class="warning" id="push-over-http-warning">(.*?)</p>', page.text, re.S)
    assert warning and "For local testing only." in text_of(warning.group(1))
    post_section(admin_client, "two_way", **TWO_WAY, **{"google.push_over_http": "on"})
    assert rt.cfg.get("google.push_over_http") is True


@pytest.mark.parametrize("fields, field_name, message", [
    ({**TWO_WAY, "sync.mass_cancel_share": "0"}, "sync.mass_cancel_share", "whole number from 1 to 100"),
    ({**TWO_WAY, "sync.mass_cancel_share": "150"}, "sync.mass_cancel_share", "whole number from 1 to 100"),
    ({**TWO_WAY, "sync.direction": "sideways"}, "sync.direction", "Choose one of the options"),
    ({**TWO_WAY, "sync.conflict_rule": ""}, "sync.conflict_rule", "Choose one of the options"),
])
def test_two_way_validation(admin_client, rt, fields, field_name, message):
    answer = post_section(admin_client, "two_way", **fields)
    assert answer.status_code == 400 and message in text_of(answer.text)
    assert rt.cfg.get("sync.direction") == "both" and rt.cfg.get("sync.conflict_rule") == "kivicare"
    assert rt.cfg.get("sync.mass_cancel_share") == 30


def test_alert_recipients_are_validated_e_mails(admin_client, rt):
    answer = post_section(admin_client, "alerts", **{"alerts.recipients": "Admin@Clinic.test, ops@clinic.test;"
                                                                           " admin@clinic.test"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#alerts"
    assert rt.cfg.get("alerts.recipients") == ["admin@clinic.test", "ops@clinic.test"]
    assert 'value="admin@clinic.test, ops@clinic.test"' in admin_client.get("/settings").text
    wrong = post_section(admin_client, "alerts", **{"alerts.recipients": "admin@clinic.test, not-an-address"})
    assert wrong.status_code == 400
    assert "Not an e-mail address: not-an-address. Separate addresses with commas." in text_of(wrong.text)
    assert rt.cfg.get("alerts.recipients") == ["admin@clinic.test", "ops@clinic.test"]
    post_section(admin_client, "alerts", **{"alerts.recipients": ""})
    assert rt.cfg.get("alerts.recipients") == []
