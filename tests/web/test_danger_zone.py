"""The settings page's danger zone: reset sync for all doctors and disconnect all, each behind a
confirmation page naming the doctors, run through the per-doctor functions against the Google and
KiviCare sandboxes, with one doctor's failure leaving the others done."""

from __future__ import annotations

import re

import pytest

from sidecar.storage.models import AuditEntry, Connection, MeetMapping, SyncLog
from sidecar.web import create_admin, create_app
from tests.conftest import ANNA, MARC, connect
from tests.test_sync_engine import GENERAL, at, mapping_id, our_events

from .conftest import ADMIN, PASSWORD, admin, csrf, text_of
from .test_sso import ROLES, SECRET, signed_in


@pytest.fixture
def site(make_runtime, kivicare, google):
    """Anna and Marc connected to "Clinic appointments" (sandbox OAuth), one appointment each synced, an admin."""
    kivicare.install_companion(SECRET)
    runtime = make_runtime(**{"companion.secret": SECRET})
    connections = {doctor: connect(runtime, google, doctor) for doctor in (ANNA, MARC)}
    runtime.bridge.startup()
    for doctor in (ANNA, MARC):
        kivicare.create_appointment(doctor_id=doctor, patient_id=5, start_utc=at(3, 9, 10),
                                    service_mapping_ids=[mapping_id(runtime, doctor, GENERAL)])
    runtime.bridge.sync_once()
    app = create_app(runtime)
    create_admin(runtime, ADMIN, PASSWORD)
    app.rt, app.connections = runtime, connections
    return app


def confirm_form(client, action: str) -> tuple[str, dict]:
    page = client.get(f"/settings/danger/{action}")
    assert page.status_code == 200
    fingerprint = re.search(r'name="fingerprint" value="([^"]+)"', page.text).group(1)
    return page.text, {"csrf_token": csrf(page.text), "fingerprint": fingerprint}


def state(connection) -> Connection:
    return Connection.get_by_id(connection.id)


def test_settings_page_offers_both_actions_with_counts(site):
    page = admin(site).get("/settings")
    block = text_of(page.text[page.text.index('<section id="danger"'):])
    assert "Reset sync for 2 doctors…" in block and "Disconnect 2 doctors…" in block
    assert 'href="/settings/danger/reset"' in page.text and 'href="/settings/danger/disconnect"' in page.text


def test_reset_all_confirmation_names_the_doctors_and_what_happens(site):
    client = admin(site)
    html, form = confirm_form(client, "reset")
    text = text_of(html)
    assert "2 doctors concerned" in text
    assert "Anna" in text and "Marc" in text
    assert "anna.schmidt@riverside-clinic.test" in text and "Clinic appointments" in text
    assert "waits until someone checks its preview" in text and "KiviCare is not changed" in text
    # Not ticked: nothing happens.
    refused = client.post("/settings/danger/reset", data={**form, "events": "keep"})
    assert refused.status_code == 400 and "Nothing was done: tick the box to confirm." in text_of(refused.text)
    assert not SyncLog.select().where(SyncLog.action == "reset-sync").exists()
    refused = client.post("/settings/danger/reset", data={**form, "events": "wipe", "confirm": "yes"})
    assert refused.status_code == 400
    assert not SyncLog.select().where(SyncLog.action == "reset-sync").exists()


def test_reset_all_keeps_the_events_and_relinks_them(site, google):
    events = {doctor: our_events(google, conn.calendar_id) for doctor, conn in site.connections.items()}
    assert all(events.values())
    client = admin(site)
    _html, form = confirm_form(client, "reset")
    answer = client.post("/settings/danger/reset", data={**form, "events": "keep", "confirm": "yes"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/settings#danger"
    text = text_of(client.get("/settings").text)
    total = sum(len(found) for found in events.values())
    assert f"Sync reset for 2 doctors ({total} events found in Google)." in text
    assert "The events were kept and linked again." in text
    for doctor, conn in site.connections.items():
        assert MeetMapping.select().where(MeetMapping.calendar_id == conn.calendar_id).count() == len(events[doctor])
        assert state(conn).awaiting_confirmation  # the per-doctor rule: the preview is confirmed again
        assert our_events(google, conn.calendar_id) == events[doctor]
    assert SyncLog.select().where(SyncLog.action == "reset-sync").count() == 2
    entries = list(AuditEntry.select().where(AuditEntry.action == "reset_sync"))
    assert len(entries) == 2 and all(e.actor == ADMIN for e in entries)
    assert {e.target for e in entries} == {f"{state(c).doctor.name} (doctor {d})" for d, c in site.connections.items()}
    assert all("events kept" in e.detail for e in entries)


def test_reset_all_removing_the_events(site, google):
    client = admin(site)
    _html, form = confirm_form(client, "reset")
    client.post("/settings/danger/reset", data={**form, "events": "remove", "confirm": "yes"})
    assert "The events were removed from Google and will be created again." in text_of(client.get("/settings").text)
    for conn in site.connections.values():
        assert our_events(google, conn.calendar_id) == []


def test_a_list_that_changed_since_the_confirmation_page_is_shown_again(site, google):
    client = admin(site)
    _html, form = confirm_form(client, "disconnect")
    Connection.update(state="disconnected").where(Connection.id == site.connections[MARC].id).execute()
    answer = client.post("/settings/danger/disconnect", data={**form, "confirm": "yes"})
    assert answer.status_code == 409
    text = text_of(answer.text)
    assert "The list of doctors changed since this page was opened" in text and "1 doctor concerned" in text
    assert state(site.connections[ANNA]).state == "active"


def test_one_doctors_failure_does_not_stop_the_others(site, google):
    google.revoke("anna.schmidt@riverside-clinic.test")
    google.expire_access_tokens()
    client = admin(site)
    _html, form = confirm_form(client, "reset")
    client.post("/settings/danger/reset", data={**form, "events": "keep", "confirm": "yes"})
    text = text_of(client.get("/settings").text)
    assert "Sync reset for 1 doctor" in text
    assert "Not reset:" in text and "Google no longer accepts the connection: reconnect it first" in text
    assert [e.target.endswith(f"(doctor {MARC})") for e in AuditEntry.select().where(AuditEntry.action == "reset_sync")] \
        == [True]


def test_disconnect_all_revokes_every_grant_and_keeps_the_events(site, google):
    events = {doctor: our_events(google, conn.calendar_id) for doctor, conn in site.connections.items()}
    client = admin(site)
    html, form = confirm_form(client, "disconnect")
    assert "Events already in their calendars stay there." in text_of(html)
    answer = client.post("/settings/danger/disconnect", data={**form, "confirm": "yes"})
    assert answer.status_code == 303
    assert "2 doctors disconnected." in text_of(client.get("/settings").text)
    for doctor, conn in site.connections.items():
        row = state(conn)
        assert row.state == "disconnected" and row.refresh_token is None and row.access_token is None
        assert our_events(google, conn.calendar_id) == events[doctor]
    assert AuditEntry.select().where(AuditEntry.action == "disconnected").count() == 2
    # Nothing left to do: the page says so instead of offering the button.
    page = client.get("/settings")
    assert "No doctor is connected." in text_of(page.text)
    assert 'href="/settings/danger/disconnect"' not in page.text


def test_only_admins_reach_the_danger_zone_and_csrf_is_required(site):
    doctor, _ = signed_in(site, ROLES["doctor"], uid=ANNA)
    desk, _ = signed_in(site, ROLES["receptionist"], uid=2, name="Claire Martin")
    for client, home in ((doctor, "/me"), (desk, "/")):
        assert client.get("/settings/danger/reset").status_code == 403
        token = csrf(client.get(home).text)
        assert client.post("/settings/danger/disconnect", data={"csrf_token": token, "confirm": "yes"}).status_code \
            == 403
    anonymous = site.test_client()
    assert anonymous.get("/settings/danger/reset").status_code == 302
    client = admin(site)
    _html, form = confirm_form(client, "disconnect")
    assert client.post("/settings/danger/disconnect", data={"fingerprint": form["fingerprint"],
                                                            "confirm": "yes"}).status_code == 400
    assert client.get("/settings/danger/everything").status_code == 404
    assert all(state(c).state == "active" for c in site.connections.values())
