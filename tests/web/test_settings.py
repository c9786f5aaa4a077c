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


SYNC = {"sync.direction": "both", "sync.conflict_rule": "kivicare", "bridge.horizon_days": "90",
        "bridge.poll_seconds": "30", "bridge.near_days": "14", "bridge.far_poll_seconds": "600",
        "sync.mass_cancel_share": "30"}
EVENTS = {"sync.event_template": "template", "sync.title_template": "{{service_name}}",
          "sync.description_template": "At {{clinic_name}}"}
ALERTS = {"alerts.recipients": "", "alerts.smtp_host": "", "alerts.smtp_port": "587", "alerts.smtp_tls": "starttls",
          "alerts.smtp_user": "", "alerts.smtp_password": "", "alerts.smtp_from": ""}


@pytest.mark.parametrize("section, fields, field_name, message", [
    ("kivicare", {"kivicare.base_url": "ftp://clinic.example", "kivicare.username": "sidecar"},
     "kivicare.base_url", "starting with https://"),
    ("kivicare", {"kivicare.base_url": "https://clinic.example/wp-json", "kivicare.username": "sidecar"},
     "kivicare.base_url", "without /wp-json"),
    ("sync", {**SYNC, "bridge.poll_seconds": "0"}, "bridge.poll_seconds", "whole number from 5 to 3600"),
    ("sync", {**SYNC, "bridge.near_days": "0"}, "bridge.near_days", "whole number from 1 to 365"),
    ("sync", {**SYNC, "bridge.far_poll_seconds": "5"}, "bridge.far_poll_seconds", "whole number from 60 to 86400"),
    ("sync", {**SYNC, "bridge.horizon_days": "soon"}, "bridge.horizon_days", "whole number from 1 to 365"),
    ("events", {**EVENTS, "sync.reminder_minutes": "10, soon"}, "sync.reminder_minutes", "whole numbers of minutes"),
    ("events", {**EVENTS, "sync.title_template": "{{patient_nam}}"}, "sync.title_template",
     "Unknown placeholder {{patient_nam}}"),
    ("events", {**EVENTS, "sync.event_template": "everything"}, "sync.event_template", "Choose one of the options"),
    ("events", {**EVENTS, "sync.status_colors.1": "12"}, "sync.status_colors", "Choose one of Google's colours"),
    ("google", {"google.client_id": "x", "google.app_name": ""}, "google.app_name", "cannot be empty"),
    ("alerts", {**ALERTS, "alerts.smtp_host": "https://smtp.example.com"}, "alerts.smtp_host",
     "Enter only the server's name"),
    ("alerts", {**ALERTS, "alerts.smtp_port": "70000"}, "alerts.smtp_port", "whole number from 1 to 65535"),
    ("alerts", {**ALERTS, "alerts.smtp_host": "smtp.example.com"}, "alerts.smtp_from", "Enter the sender address"),
    ("alerts", {**ALERTS, "alerts.smtp_host": "smtp.example.com", "alerts.smtp_from": "not-an-address"},
     "alerts.smtp_from", "Enter one e-mail address"),
    ("alerts", {**ALERTS, "alerts.smtp_host": "smtp.example.com", "alerts.smtp_tls": "none",
                "alerts.smtp_user": "alerts@clinic.test"}, "alerts.smtp_tls", "The password would travel unencrypted"),
    ("retention", {"sync.log_retention_days": "0"}, "sync.log_retention_days", "whole number from 1 to 3650"),
])
def test_validation_messages_and_nothing_saved(admin_client, rt, section, fields, field_name, message):
    before = {name: rt.cfg.get(name) for name in fields if not name.startswith("sync.status_colors.")}
    answer = post_section(admin_client, section, **fields)
    assert answer.status_code == 400
    page = text_of(answer.text)
    assert message in page
    assert "Nothing was saved" in page
    assert 'aria-invalid="true"' in answer.text
    field_html = re.search(r'id="f-%s-field".*?</div>\s*(?=<div class="field|<details|<div class="event-preview|'
                           r'<h3|<div class="actions")' % field_name.replace(".", "-").replace("_", "-"),
                           answer.text, re.S)
    assert field_html and message in text_of(field_html.group(0))  # the message sits next to its field
    for name, value in before.items():
        assert rt.cfg.get(name) == value  # the section is saved whole or not at all


def test_sync_section_saves_typed_values(admin_client, rt):
    answer = post_section(admin_client, "sync", **{**SYNC, "bridge.poll_seconds": "60", "bridge.horizon_days": "30"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#sync"
    assert rt.cfg.get("bridge.poll_seconds") == 60 and rt.cfg.get("bridge.horizon_days") == 30
    assert 'min="5" max="3600"' in admin_client.get("/settings").text  # the browser knows the range too


def test_events_section_saves_typed_values(admin_client, rt):
    answer = post_section(admin_client, "events", **{
        "sync.event_template": "detailed", "sync.title_template": "{{service_name}} at {{clinic_name}}",
        "sync.description_template": "Hello", "sync.invite_patients": "on", "sync.reminder_minutes": "60, 10",
        "sync.privacy_mode": "on", "sync.status_colors.1": "11", "sync.status_colors.2": "",
        "sync.status_colors.4": "2", "sync.status_colors.3": "8"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#events"
    assert rt.cfg.get("sync.event_template") == "detailed"
    assert rt.cfg.get("sync.invite_patients") is True and rt.cfg.get("sync.privacy_mode") is True
    assert rt.cfg.get("sync.reminder_minutes") == [10, 60]
    assert rt.cfg.get("sync.status_colors") == {"1": "11", "4": "2", "3": "8"}
    page = admin_client.get("/settings")
    assert re.search(r'id="f-sync-status-colors-1"[^>]*>.*?<option value="11" selected>Tomato', page.text, re.S)
    post_section(admin_client, "events", **{"sync.event_template": "template", "sync.title_template": "x"})
    assert rt.cfg.get("sync.invite_patients") is False  # an unticked box is "no"
    assert rt.cfg.get("sync.privacy_mode") is False
    assert rt.cfg.get("sync.reminder_minutes") == []
    assert rt.cfg.get("sync.status_colors") == {}  # every status: the calendar's colour


def test_colours_of_statuses_not_on_the_page_are_kept(admin_client, rt):
    rt.cfg.set("sync.status_colors", {"0": "11", "1": "9"})
    post_section(admin_client, "events", **{**EVENTS, "sync.status_colors.1": "5"})
    assert rt.cfg.get("sync.status_colors") == {"0": "11", "1": "5"}


def test_a_stored_secret_can_be_removed_but_not_replaced_at_the_same_time(admin_client, rt):
    rt.cfg.set("alerts.smtp_password", "Zq7-secret-value-1234")
    page = admin_client.get("/settings")
    assert "Zq7-secret-value" not in page.text and "••••1234" in page.text
    assert 'for="f-alerts-smtp-password-clear"' in page.text
    both = post_section(admin_client, "alerts", **{**ALERTS, "alerts.smtp_password": "new-one",
                                                   "alerts.smtp_password.clear": "on"})
    assert both.status_code == 400 and "Either type a new value or remove the stored one" in text_of(both.text)
    assert rt.cfg.get("alerts.smtp_password") == "Zq7-secret-value-1234"
    assert post_section(admin_client, "alerts", **ALERTS).status_code == 302  # empty keeps it
    assert rt.cfg.get("alerts.smtp_password") == "Zq7-secret-value-1234"
    post_section(admin_client, "alerts", **{**ALERTS, "alerts.smtp_password.clear": "on"})
    assert rt.cfg.get("alerts.smtp_password") == ""


def test_smtp_settings_are_saved_together(admin_client, rt):
    answer = post_section(admin_client, "alerts", **{
        **ALERTS, "alerts.recipients": "ops@clinic.test", "alerts.smtp_host": "SMTP.Example.com",
        "alerts.smtp_port": "465", "alerts.smtp_tls": "ssl", "alerts.smtp_user": "alerts@clinic.test",
        "alerts.smtp_password": "pw-9876"})
    assert answer.status_code == 302  # no sender address: the user name is an address and is used instead
    assert (rt.cfg.get("alerts.smtp_host"), rt.cfg.get("alerts.smtp_port"), rt.cfg.get("alerts.smtp_tls")) == \
        ("smtp.example.com", 465, "ssl")
    assert rt.cfg.get("alerts.smtp_password") == "pw-9876"
    assert SettingRow.get(SettingRow.key == "alerts.smtp_password").encrypted
    # A relay on this machine may go unencrypted.
    assert post_section(admin_client, "alerts", **{**ALERTS, "alerts.smtp_host": "localhost", "alerts.smtp_tls": "none",
                                                   "alerts.smtp_user": "x", "alerts.smtp_from": "a@b.test",
                                                   "alerts.smtp_port": "25"}).status_code == 302


def test_log_retention_defaults_to_90_days_and_saves(admin_client, rt):
    page = admin_client.get("/settings")
    assert re.search(r'id="f-sync-log-retention-days"[^>]*value="90"', page.text, re.S)
    assert post_section(admin_client, "retention", **{"sync.log_retention_days": "30"}).status_code == 302
    assert rt.cfg.get("sync.log_retention_days") == 30


def test_sections_are_listed_for_scanning_and_every_control_has_a_label(admin_client):
    page = admin_client.get("/settings")
    nav = re.search(r'<nav aria-label="Settings sections".*?</nav>', page.text, re.S).group(0)
    assert re.findall(r'href="#([a-z_]+)"', nav) == ["google", "kivicare", "companion", "sync", "events",
                                                     "telemedicine", "scope", "alerts", "retention", "danger"]
    assert 'href="/audit"' in nav
    for key in re.findall(r'href="#([a-z_]+)"', nav):
        assert f'<section id="{key}"' in page.text
    # Every input, select and textarea (not hidden) is named by a <label for> (or sits in a labelled table).
    ids = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\sid="([^"]+)"', page.text)
    assert ids
    for control_id in ids:
        assert f'for="{control_id}"' in page.text, control_id
    # No inline script or style (the Content-Security-Policy forbids them).
    assert "<script>" not in page.text and "style=" not in page.text and " on" + "click=" not in page.text


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


# ---- sync direction and conflicts, alerts --------------------------------------------------------

TWO_WAY = {**SYNC, "sync.direction": "google_to_kivicare", "sync.conflict_rule": "manual",
           "sync.mass_cancel_share": "45"}


def test_sync_section_explains_each_choice_and_saves(admin_client, rt):
    page = admin_client.get("/settings")
    text = text_of(page.text)
    assert 'href="#sync"' in page.text
    for label in ("Both ways", "KiviCare → Google only", "Google → KiviCare only", "KiviCare wins", "Google wins",
                  "The most recent change wins", "The admin chooses"):
        assert label in text
    assert "Only moves, deletions and busy times flow from Google to KiviCare" in text
    assert "Nothing changes on either side until an admin chooses a version on the Conflicts page." in text
    for control_id in ("f-sync-direction-both", "f-sync-conflict-rule-manual", "f-sync-mass-cancel-share",
                       "f-google-push-over-http", "f-alerts-recipients"):
        assert f'for="{control_id}"' in page.text  # every control has a label
    assert 'id="f-sync-direction-both" name="sync.direction" value="both"\n               checked' in page.text
    answer = post_section(admin_client, "sync", **TWO_WAY)
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#sync"
    assert rt.cfg.get("sync.direction") == "google_to_kivicare"
    assert rt.cfg.get("sync.conflict_rule") == "manual" and rt.cfg.get("sync.mass_cancel_share") == 45
    assert rt.cfg.get("google.push_over_http") is False  # an unticked box is "no"
    assert rt.poll_requested.is_set()
    assert "Sync settings saved." in text_of(admin_client.get("/settings").text)


def test_push_over_http_is_shown_with_a_local_testing_warning(admin_client, rt):
    page = admin_client.get("/settings")
    warning = re.search(r'<p class="warning" id="push-over-http-warning">(.*?)</p>', page.text, re.S)
    assert warning and "For local testing only." in text_of(warning.group(1))
    post_section(admin_client, "sync", **TWO_WAY, **{"google.push_over_http": "on"})
    assert rt.cfg.get("google.push_over_http") is True


@pytest.mark.parametrize("fields, field_name, message", [
    ({**TWO_WAY, "sync.mass_cancel_share": "0"}, "sync.mass_cancel_share", "whole number from 1 to 100"),
    ({**TWO_WAY, "sync.mass_cancel_share": "150"}, "sync.mass_cancel_share", "whole number from 1 to 100"),
    ({**TWO_WAY, "sync.direction": "sideways"}, "sync.direction", "Choose one of the options"),
    ({**TWO_WAY, "sync.conflict_rule": ""}, "sync.conflict_rule", "Choose one of the options"),
])
def test_sync_validation(admin_client, rt, fields, field_name, message):
    answer = post_section(admin_client, "sync", **fields)
    assert answer.status_code == 400 and message in text_of(answer.text)
    assert rt.cfg.get("sync.direction") == "both" and rt.cfg.get("sync.conflict_rule") == "kivicare"
    assert rt.cfg.get("sync.mass_cancel_share") == 30


def test_alert_recipients_are_validated_e_mails(admin_client, rt):
    answer = post_section(admin_client, "alerts", **{**ALERTS, "alerts.recipients": "Admin@Clinic.test, "
                                                                                     "ops@clinic.test; admin@clinic.test"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#alerts"
    assert rt.cfg.get("alerts.recipients") == ["admin@clinic.test", "ops@clinic.test"]
    assert 'value="admin@clinic.test, ops@clinic.test"' in admin_client.get("/settings").text
    wrong = post_section(admin_client, "alerts", **{**ALERTS, "alerts.recipients": "admin@clinic.test, not-an-address"})
    assert wrong.status_code == 400
    assert "Not an e-mail address: not-an-address. Separate addresses with commas." in text_of(wrong.text)
    assert rt.cfg.get("alerts.recipients") == ["admin@clinic.test", "ops@clinic.test"]
    post_section(admin_client, "alerts", **ALERTS)
    assert rt.cfg.get("alerts.recipients") == []


# ---- the event preview ---------------------------------------------------------------------------

def test_live_preview_renders_the_sample_with_the_engines_renderer(admin_client, rt):
    page = admin_client.get("/settings")
    assert 'data-preview-url="/settings/preview"' in page.text and 'id="events-form"' in page.text
    form = {"csrf_token": csrf(page.text), "section": "events", **EVENTS,
            "sync.title_template": "{{patient_name}}: {{service_name}}",
            "sync.description_template": "Patient {{patient_name}}\nAt {{clinic_name}} on {{appointment_date}}",
            "sync.status_colors.1": "11"}
    answer = admin_client.post("/settings/preview", data=form)
    assert answer.status_code == 200 and answer.is_json
    shown = answer.get_json()["preview"]
    assert shown["title"] == "Jane Example: General consultation"
    assert shown["description"].startswith("Patient Jane Example\nAt Riverside Clinic on ")
    assert shown["location"] == "Riverside Clinic, 1 Main Street, Springfield"
    assert (shown["color_id"], shown["color_name"]) == ("11", "Tomato")
    assert "10:00–10:30" in shown["when"]
    assert answer.get_json()["errors"] == {}
    # Privacy mode: the engine's own rule drops the patient, whatever the templates say.
    private = admin_client.post("/settings/preview", data={**form, "sync.privacy_mode": "on"}).get_json()["preview"]
    assert "Jane" not in private["title"] + private["description"]
    assert private["title"] == "General consultation" and private["description"].startswith("At Riverside Clinic")
    # A wrong placeholder is shown as typed, and said.
    wrong = admin_client.post("/settings/preview", data={**form, "sync.title_template": "{{patient_nam}}"}).get_json()
    assert wrong["preview"]["title"] == "{{patient_nam}}"
    assert "Unknown placeholder {{patient_nam}}" in wrong["errors"]["sync.title_template"]
    # Nothing was saved by previewing.
    assert rt.cfg.get("sync.title_template") != "{{patient_name}}: {{service_name}}"
    assert admin_client.post("/settings/preview", data={k: v for k, v in form.items()
                                                        if k != "csrf_token"}).status_code == 400


def test_preview_button_works_without_javascript_and_saves_nothing(admin_client, rt):
    before = rt.cfg.get("sync.title_template")
    answer = post_section(admin_client, "events", **{**EVENTS, "sync.title_template": "Visit: {{doctor_name}}",
                                                     "action": "preview"})
    assert answer.status_code == 200
    box = re.search(r'id="event-preview".*?</dl>', answer.text, re.S).group(0)
    assert "Visit: Dr Sam Carter" in text_of(box)
    assert "Preview only: nothing was saved yet." in text_of(answer.text)
    assert 'value="Visit: {{doctor_name}}"' in answer.text  # the form keeps what was typed
    assert rt.cfg.get("sync.title_template") == before
    # The saved settings are what the page previews otherwise.
    page = admin_client.get("/settings")
    assert "Preview only" not in text_of(page.text)
    assert re.search(r'data-preview="title">General consultation<', page.text)


# ---- which appointments sync (services and clinics) ----------------------------------------------

def _site(rt, kivicare):
    for name, value in (("kivicare.base_url", kivicare.base_url), ("kivicare.username", kivicare.username),
                        ("kivicare.app_password", kivicare.app_password)):
        rt.cfg.set(name, value)


def test_services_and_clinics_are_listed_from_kivicare_and_default_to_all(admin_client, rt, kivicare):
    _site(rt, kivicare)
    services = {s.service_id: s.name for s in rt.kivicare().list_doctor_services()}
    clinics = {c.id: c.name for c in rt.kivicare().list_clinics()}
    assert services and clinics
    page = admin_client.get("/settings")
    ids = re.findall(r'\sid="([^"]+)"', page.text)
    assert len(ids) == len(set(ids)), "an id is used twice (a <label for> would name the first one)"
    block = page.text[page.text.index('<section id="scope"'):]
    block = block[:block.index("</section>")]
    assert re.search(r'id="scope-service-all"[^>]*checked', block) and re.search(r'id="scope-clinic-all"[^>]*checked',
                                                                                 block)
    for service_id, name in services.items():
        assert f'id="scope-service-{service_id}"' in block and name in block
    for clinic_id, name in clinics.items():
        assert f'id="scope-clinic-{clinic_id}"' in block and name in block
    chosen = sorted(services)[:1]
    answer = admin_client.post("/settings", data={"csrf_token": csrf(page.text), "section": "scope",
                                                  "service_mode": "chosen", "service": [str(i) for i in chosen],
                                                  "clinic_mode": "all", "clinic": [str(c) for c in clinics]})
    assert answer.status_code == 302 and answer.headers["Location"] == "/settings#scope"
    assert rt.cfg.get("sync.services") == chosen and rt.cfg.get("sync.clinics") == []
    page = admin_client.get("/settings")
    assert re.search(r'id="scope-service-chosen"[^>]*checked', page.text)
    assert re.search(rf'id="scope-service-{chosen[0]}"[^>]*checked', page.text)


@pytest.mark.parametrize("fields, message", [
    ({"service_mode": "chosen", "clinic_mode": "all"}, "Tick at least one service, or choose all services."),
    ({"service_mode": "all", "clinic_mode": "chosen"}, "Tick at least one clinic, or choose all clinics."),
    ({"service_mode": "chosen", "service": "1; DROP", "clinic_mode": "all"}, "Not a KiviCare id"),
    ({"service_mode": "everything", "clinic_mode": "all"}, "Choose one of the options."),
])
def test_scope_validation_saves_nothing(admin_client, rt, fields, message):
    rt.cfg.set("sync.clinics", [1])
    page = admin_client.get("/settings")
    answer = admin_client.post("/settings", data={"csrf_token": csrf(page.text), "section": "scope", **fields})
    assert answer.status_code == 400
    assert message in text_of(answer.text) and "Nothing was saved" in text_of(answer.text)
    assert rt.cfg.get("sync.services") == [] and rt.cfg.get("sync.clinics") == [1]


def test_scope_ids_are_typed_when_kivicare_cannot_be_read(admin_client, rt):
    rt.cfg.set("kivicare.base_url", f"http://127.0.0.1:{_closed_port()}")
    rt.cfg.set("sync.clinics", [2])
    page = admin_client.get("/settings")
    text = text_of(page.text)
    assert "The clinics could not be loaded from KiviCare" in text
    assert re.search(r'id="scope-clinic-ids" name="clinic_ids" value="2"', page.text)
    answer = admin_client.post("/settings", data={"csrf_token": csrf(page.text), "section": "scope",
                                                  "service_mode": "chosen", "service_ids": "7, 9 7",
                                                  "clinic_mode": "chosen", "clinic_ids": "2,3"})
    assert answer.status_code == 302
    assert rt.cfg.get("sync.services") == [7, 9] and rt.cfg.get("sync.clinics") == [2, 3]


def test_kivicare_test_result_and_add_ons_stay_on_the_page(admin_client, rt, kivicare):
    _site(rt, kivicare)
    assert "Connected to KiviCare." in _test_result(admin_client)
    text = text_of(admin_client.get("/settings").text)  # after a reload, too
    assert "Connected to KiviCare." in text and "Add-ons" in text and "Companion plugin not checked yet" in text
