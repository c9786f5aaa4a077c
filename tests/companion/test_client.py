"""wp_bridge.companion.CompanionClient against the KiviCare sandbox's emulation of the plugin: every
route of PROTOCOL.md, its answers and its errors, and what the plugin changes in KiviCare (slots,
bookings, video consultation, reschedules, mails, hints)."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import timedelta

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from wp_bridge.companion import (BusyBlock, CompanionClient, CompanionNotConfigured, CompanionNotInstalled,
                                 CompanionPluginNotConfigured, CompanionRefused, CompanionStatus,
                                 CompanionUnavailable)
from wp_bridge.signing import signed_headers, verify

from .conftest import ANNA, ANNA_EXTENDED, ANNA_GENERAL, EMMA, LOUIS, MARC, SECRET, at, free_day


def kivicare(plugin, method: str, path: str, **kwargs):
    """KiviCare's own REST API of the sandbox, as the sidecar's WordPress user."""
    user, password = plugin.credentials(plugin.username)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return plugin.app.test_client(use_cookies=False).open(
        "/wp-json/kivicare/v1" + path, method=method, headers={"Authorization": f"Basic {token}"}, **kwargs)


def free_slots(plugin, day) -> set[str]:
    answer = kivicare(plugin, "GET", "/appointments/slots", query_string={
        "date": day.isoformat(), "doctor_id": ANNA, "clinic_id": 1, "service_id[]": ANNA_GENERAL})
    assert answer.status_code == 200, answer.text
    return {slot["source_datetime"][11:16] for slot in answer.json["data"]["slots_by_session"][0]}


def book(plugin, day, hhmm: str):
    return kivicare(plugin, "POST", "/appointments", json={
        "appointmentStartDate": day.isoformat(), "appointmentStartTime": hhmm, "serviceId": [ANNA_GENERAL],
        "doctorId": ANNA, "patientId": LOUIS, "status": 1})


def raw(plugin, method: str, route: str, body: bytes = b"", secret: str = SECRET, timestamp: int | None = None):
    path = "/wp-json/kc-sidecar/v1" + route
    headers = {"Content-Type": "application/json", **signed_headers(secret, method, path, body, timestamp)}
    return requests.request(method, plugin.base_url + path, data=body or None, headers=headers, timeout=10)


# ---- status and the errors every route shares ----------------------------------------------------

def test_status(client, plugin):
    status = client.status()
    assert status == CompanionStatus(plugin_version="1.0.0", kivicare_version="4.3.0",
                                     features=("hints", "busy", "meet", "reschedule", "mail", "sso"),
                                     site_timezone="Europe/Paris")
    assert status.has("busy")
    request = plugin.requests[-1]
    assert request["method"] == "GET" and request["path"] == "/wp-json/kc-sidecar/v1/status"
    assert "kc-sidecar/v1" in requests.get(plugin.base_url + "/wp-json/", timeout=10).json()["namespaces"]


def test_without_the_plugin_every_route_is_rest_no_route(kivicare):
    client = CompanionClient(kivicare.base_url, SECRET)
    calls = [client.status, lambda: client.push_busy(ANNA, at("08:00"), at("18:00"), []),
             lambda: client.set_meet_link("1", "https://meet.google.com/abc-defg-hij", "e", "c"),
             lambda: client.remove_meet_link("1"), lambda: client.reschedule("1", at("10:00")),
             lambda: client.send_mail("a@example.test", "s", "t")]
    for call in calls:
        with pytest.raises(CompanionNotInstalled) as caught:
            call()
        assert caught.value.status == 404 and caught.value.code == "rest_no_route"
    assert "kc-sidecar/v1" not in requests.get(kivicare.base_url + "/wp-json/", timeout=10).json()["namespaces"]


def test_a_wrong_secret_is_refused_and_changes_nothing(plugin, client):
    client.push_busy(ANNA, at("00:00"), at("23:00"), [BusyBlock("evt1", at("14:00"), at("15:00"))])
    appointment = plugin.create_appointment(doctor_id=ANNA, patient_id=LOUIS, start_utc=at("10:00"),
                                            service_mapping_ids=[ANNA_GENERAL])
    intruder = CompanionClient(plugin.base_url, "not the secret")
    with pytest.raises(CompanionRefused) as caught:
        intruder.push_busy(ANNA, at("00:00"), at("23:00"), [])
    assert (caught.value.status, caught.value.code) == (401, "kc_sidecar_bad_signature")
    with pytest.raises(CompanionRefused):
        intruder.set_meet_link(appointment, "https://meet.google.com/aaa-bbbb-ccc", "e", "c")
    with pytest.raises(CompanionRefused):
        intruder.reschedule(appointment, at("12:00"))
    with pytest.raises(CompanionRefused):
        intruder.send_mail("a@example.test", "Hello", "text")
    assert [b["id"] for b in plugin.companion.busy_blocks(ANNA)] == ["evt1"]
    assert plugin.companion.meet_links == {} and plugin.companion.mails == []
    assert plugin.get_appointment(appointment)["start_utc"] == at("10:00")


def test_stale_and_tampered_requests_are_refused(plugin):
    body = json.dumps({"doctor_id": ANNA, "window_start": "2030-01-01T00:00:00Z", "window_end": "2030-01-02T00:00:00Z",
                       "blocks": [{"id": "x", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z"}]}).encode()
    stale = raw(plugin, "PUT", "/busy", body, timestamp=int(time.time()) - 301)
    assert stale.status_code == 401
    assert stale.json()["code"] == "kc_sidecar_stale_request" and stale.json()["data"] == {"status": 401}
    path = "/wp-json/kc-sidecar/v1/busy"
    headers = {"Content-Type": "application/json", **signed_headers(SECRET, "PUT", path, body)}
    tampered = requests.put(plugin.base_url + path, data=body.replace(b"11:00", b"12:00"), headers=headers, timeout=10)
    assert tampered.status_code == 401 and tampered.json()["code"] == "kc_sidecar_bad_signature"
    unsigned = requests.put(plugin.base_url + path, data=body, timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "kc_sidecar_bad_signature"
    assert plugin.companion.busy_blocks(ANNA) == []
    fresh = raw(plugin, "PUT", "/busy", body)
    assert fresh.status_code == 200 and fresh.json() == {"ok": True, "stored": 1}


def test_plugin_without_secret_and_client_without_secret(plugin):
    plugin.install_companion("")
    with pytest.raises(CompanionPluginNotConfigured) as caught:
        CompanionClient(plugin.base_url, SECRET).status()
    assert isinstance(caught.value, CompanionUnavailable) and caught.value.status == 503
    plugin.reset_requests()
    with pytest.raises(CompanionNotConfigured):
        CompanionClient(plugin.base_url, "").status()
    with pytest.raises(CompanionNotConfigured):
        CompanionClient("", SECRET).status()
    assert plugin.requests == []


def test_site_down_or_unreachable_is_unavailable(plugin, client):
    plugin.set_down(True)
    with pytest.raises(CompanionUnavailable) as caught:
        client.status()
    assert caught.value.status == 503
    plugin.set_down(False)
    from sandbox.kivicare import KiviCareSandbox
    gone = KiviCareSandbox(seed=False)
    url = gone.start()
    gone.stop()
    with pytest.raises(CompanionUnavailable) as caught:
        CompanionClient(url, SECRET, timeout=(1, 1)).status()
    assert caught.value.status == 0 and SECRET not in str(caught.value)


# ---- busy blocks -------------------------------------------------------------------------------------

def test_busy_blocks_hide_slots_and_refuse_booking(plugin, client):
    day = free_day()
    assert {"14:00", "14:30", "16:00"} <= free_slots(plugin, day)
    stored = client.push_busy(ANNA, at("00:00"), at("23:30"),
                              [BusyBlock("evt_dentist", at("14:00"), at("15:00"), "Dentist")])
    assert stored == 1
    slots = free_slots(plugin, day)
    assert "14:00" not in slots and "14:30" not in slots
    assert {"13:00", "13:30", "15:00", "16:00"} <= slots  # 13:30 ends when the block starts
    refused = book(plugin, day, "14:30")
    assert refused.status_code == 409 and refused.json["message"] == "Selected time slot is not available"
    assert book(plugin, day, "16:00").status_code == 201
    # Marc is not blocked by Anna's busy time; nothing was cancelled.
    assert plugin.companion.busy_blocks(MARC) == []
    block = plugin.companion.busy_blocks(ANNA)[0]
    assert block == {"id": "evt_dentist", "start": at("14:00"), "end": at("15:00"), "name": "Dentist"}


def test_busy_push_replaces_only_the_window(plugin, client):
    first = [BusyBlock("a", at("09:00"), at("10:00")), BusyBlock("b", at("15:00"), at("16:00"))]
    later_day = free_day() + timedelta(days=7)
    client.push_busy(ANNA, at("00:00"), at("23:00"), first)
    client.push_busy(ANNA, at("00:00", later_day), at("23:00", later_day), [BusyBlock("c", at("09:00", later_day),
                                                                                        at("10:00", later_day))])
    assert [b["id"] for b in plugin.companion.busy_blocks(ANNA)] == ["a", "b", "c"]
    # A window covering only the afternoon of the first day: "b" goes, "a" and "c" stay.
    assert client.push_busy(ANNA, at("12:00"), at("23:00"), []) == 0
    assert [b["id"] for b in plugin.companion.busy_blocks(ANNA)] == ["a", "c"]
    assert "15:00" in free_slots(plugin, free_day())


def test_busy_push_checks_its_input(plugin, client):
    naive = at("10:00").replace(tzinfo=None)
    with pytest.raises(ValueError):
        client.push_busy(ANNA, naive, at("11:00"), [])
    with pytest.raises(ValueError):
        client.push_busy(ANNA, at("00:00"), at("23:00"), [BusyBlock("x" * 65, at("10:00"), at("11:00"))])
    with pytest.raises(ValueError):
        client.push_busy(ANNA, at("00:00"), at("23:00"), [BusyBlock("x", at("11:00"), at("10:00"))])
    for body in ({"doctor_id": 0, "window_start": "2030-01-01T00:00:00Z", "window_end": "2030-01-02T00:00:00Z",
                  "blocks": []},
                 {"doctor_id": 3, "window_start": "2030-01-02T00:00:00Z", "window_end": "2030-01-01T00:00:00Z",
                  "blocks": []},
                 {"doctor_id": 3, "window_start": "yesterday", "window_end": "2030-01-01T00:00:00Z", "blocks": []},
                 {"doctor_id": 3, "window_start": "2030-01-01T00:00:00Z", "window_end": "2030-01-02T00:00:00Z"},
                 {"doctor_id": 3, "window_start": "2030-01-01T00:00:00Z", "window_end": "2030-01-02T00:00:00Z",
                  "blocks": [{"id": "", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z"}]}):
        answer = raw(plugin, "PUT", "/busy", json.dumps(body).encode())
        assert answer.status_code == 400 and answer.json()["code"] == "kc_sidecar_bad_request", body
    answer = raw(plugin, "PUT", "/busy", b"{not json")
    assert answer.status_code == 400
    assert plugin.companion.busy_blocks(ANNA) == []


# ---- Meet links ----------------------------------------------------------------------------------------

def test_meet_link_marks_a_video_consultation_and_mails_the_patient_once(plugin, client):
    appointment = plugin.create_appointment(doctor_id=ANNA, patient_id=EMMA, start_utc=at("11:00"),
                                            service_mapping_ids=[3])
    url = "https://meet.google.com/abc-defg-hij"
    assert client.set_meet_link(appointment, url, "evt123", "clinic@group.calendar.google.com") is True
    assert client.set_meet_link(int(appointment), url, "evt123", "clinic@group.calendar.google.com") is False
    assert plugin.companion.meet_links[appointment] == {"url": url, "event_id": "evt123",
                                                        "calendar_id": "clinic@group.calendar.google.com"}
    item = kivicare(plugin, "GET", f"/appointments/{appointment}", query_string={"timezone": "UTC"}).json["data"]
    assert item["video_consultation"] is True and item["google_meet_link"] == url
    assert item["zoom_data"] == {"startUrl": url, "joinUrl": url}
    view = kivicare(plugin, "GET", f"/appointments/{appointment}/view").json["data"]
    assert view["video_consultation"] is True
    listed = kivicare(plugin, "GET", "/appointments", query_string={"perPage": "all"}).json["data"]["appointments"]
    flags = {row["id"]: row["video_consultation"] for row in listed}
    assert flags[appointment] is True and sum(flags.values()) == 1
    mails = [m for m in plugin.companion.mails if m["kind"] == "meet_link"]
    assert len(mails) == 1 and mails[0]["to"] == ["emma.petit@patients.test"] and url in mails[0]["text"]

    client.remove_meet_link(appointment)
    client.remove_meet_link(appointment)  # idempotent
    item = kivicare(plugin, "GET", f"/appointments/{appointment}").json["data"]
    assert item["video_consultation"] is False and "google_meet_link" not in item


def test_meet_link_errors(plugin, client):
    with pytest.raises(CompanionRefused) as caught:
        client.set_meet_link("99999", "https://meet.google.com/abc-defg-hij", "e", "c")
    assert (caught.value.status, caught.value.code) == (404, "kc_sidecar_not_found")
    with pytest.raises(ValueError):
        client.set_meet_link("1", "http://meet.google.com/abc", "e", "c")
    with pytest.raises(ValueError):
        client.set_meet_link("1/../2", "https://meet.google.com/abc", "e", "c")
    answer = raw(plugin, "PUT", "/appointments/1/meet", json.dumps({"url": "javascript:alert(1)"}).encode())
    assert answer.status_code == 400 and answer.json()["code"] == "kc_sidecar_bad_request"
    assert plugin.companion.meet_links == {}


# ---- reschedule ------------------------------------------------------------------------------------------

def test_reschedule_keeps_the_duration(plugin, client):
    plugin.companion.sidecar_url = ""  # hints are recorded as not sent
    appointment = plugin.create_appointment(doctor_id=ANNA, patient_id=LOUIS, start_utc=at("10:00"),
                                            service_mapping_ids=[ANNA_EXTENDED], description="keep me")
    plugin.companion.flush_hints()
    plugin.companion.hints.clear()
    start, end = client.reschedule(appointment, at("11:15"))
    assert (start, end) == (at("11:15"), at("12:00"))
    snapshot = plugin.get_appointment(appointment)
    assert (snapshot["start_utc"], snapshot["end_utc"]) == (at("11:15"), at("12:00"))
    assert snapshot["description"] == "keep me" and snapshot["status"] == 1
    local = kivicare(plugin, "GET", f"/appointments/{appointment}").json["data"]
    assert (local["appointmentStartTime"], local["appointmentEndTime"]) == ("11:15:00", "12:00:00")
    moved = [m for m in plugin.companion.mails if m["kind"] == "rescheduled"]
    assert len(moved) == 1 and moved[0]["to"] == ["louis.bernard@patients.test"] and "11:15" in moved[0]["text"]
    assert plugin.companion.flush_hints()
    assert [(h["event"], h["appointment_id"]) for h in plugin.companion.hints] == [("kc_sidecar_rescheduled", appointment)]
    # Same start again: nothing to do, nothing sent.
    assert client.reschedule(appointment, at("11:15")) == (at("11:15"), at("12:00"))
    assert len([m for m in plugin.companion.mails if m["kind"] == "rescheduled"]) == 1


def test_reschedule_refusals_change_nothing(plugin, client):
    mine = plugin.create_appointment(doctor_id=ANNA, patient_id=LOUIS, start_utc=at("10:00"),
                                     service_mapping_ids=[ANNA_GENERAL])
    plugin.create_appointment(doctor_id=ANNA, patient_id=EMMA, start_utc=at("13:00"),
                              service_mapping_ids=[ANNA_GENERAL])
    cancelled = plugin.create_appointment(doctor_id=ANNA, patient_id=EMMA, start_utc=at("16:00"),
                                          service_mapping_ids=[ANNA_GENERAL], status=0)
    client.set_meet_link(mine, "https://meet.google.com/abc-defg-hij", "my_event", "cal")
    client.push_busy(ANNA, at("00:00"), at("23:30"), [BusyBlock("other", at("15:00"), at("15:30")),
                                                       BusyBlock("my_event", at("10:00"), at("10:30"))])
    for target in (at("12:45"), at("13:15"), at("15:15")):
        with pytest.raises(CompanionRefused) as caught:
            client.reschedule(mine, target)
        assert (caught.value.status, caught.value.code) == (409, "kc_sidecar_slot_taken")
        assert plugin.get_appointment(mine)["start_utc"] == at("10:00")
    # Its own event's busy block does not count, and a cancelled appointment does not block.
    assert client.reschedule(mine, at("10:15"))[0] == at("10:15")
    assert client.reschedule(mine, at("16:00"))[0] == at("16:00")
    assert plugin.get_appointment(cancelled)["status"] == 0
    plugin.set_status(mine, 4)
    with pytest.raises(CompanionRefused) as caught:
        client.reschedule(mine, at("11:00"))
    assert (caught.value.status, caught.value.code) == (422, "kc_sidecar_not_movable")
    plugin.set_status(mine, 3)
    with pytest.raises(CompanionRefused):
        client.reschedule(mine, at("11:00"))
    assert plugin.get_appointment(mine)["start_utc"] == at("16:00")
    with pytest.raises(CompanionRefused) as caught:
        client.reschedule("99999", at("11:00"))
    assert (caught.value.status, caught.value.code) == (404, "kc_sidecar_not_found")
    with pytest.raises(ValueError):
        client.reschedule(mine, at("11:00").replace(tzinfo=None))


# ---- mail relay --------------------------------------------------------------------------------------------

def test_mail_relay(plugin, client):
    client.send_mail("admin@clinic.test", "Sync stopped", "Google refused Anna's connection.\nReconnect.")
    client.send_mail(["a@clinic.test", "b@clinic.test"], "Two", "Both")
    assert plugin.companion.mails == [
        {"to": ["admin@clinic.test"], "subject": "Sync stopped", "text": "Google refused Anna's connection.\nReconnect.",
         "kind": "relay"},
        {"to": ["a@clinic.test", "b@clinic.test"], "subject": "Two", "text": "Both", "kind": "relay"}]
    plugin.companion.mail_fails = True
    with pytest.raises(CompanionUnavailable) as caught:
        client.send_mail("admin@clinic.test", "Again", "text")
    assert (caught.value.status, caught.value.code) == (502, "kc_sidecar_mail_failed")
    with pytest.raises(ValueError):
        client.send_mail([], "No one", "text")
    plugin.companion.mail_fails = False
    with pytest.raises(CompanionRefused) as caught:
        client.send_mail("not an address", "Bad", "text")
    assert (caught.value.status, caught.value.code) == (400, "kc_sidecar_bad_request")
    assert len(plugin.companion.mails) == 2


# ---- hints (plugin -> sidecar) -------------------------------------------------------------------------------

class Receiver:
    """A stand-in sidecar on loopback that records hints and checks their signatures (the first one
    slowly, on purpose)."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.hints: list[dict] = []
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/sidecar"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @Request.application
    def app(self, request: Request) -> Response:
        if not self.hints:
            time.sleep(self.delay)
        body = request.get_data()
        try:
            verify(SECRET, request.method, request.path, body, request.headers)
            valid = True
        except Exception:
            valid = False
        self.hints.append({"path": request.path, "valid": valid, **json.loads(body)})
        return Response('{"ok": true}', status=202, mimetype="application/json")


@pytest.fixture
def receiver():
    server = Receiver(delay=0.5)
    yield server
    server.server.shutdown()


def test_staff_actions_send_signed_hints_without_waiting(plugin, receiver):
    plugin.install_companion(SECRET, receiver.url)
    started = time.monotonic()
    created = plugin.create_appointment(doctor_id=ANNA, patient_id=LOUIS, start_utc=at("10:00"),
                                        service_mapping_ids=[ANNA_GENERAL])
    assert time.monotonic() - started < 0.3  # the receiver takes 0.5 s to answer: the booking does not wait
    plugin.reschedule(created, at("10:30"))
    plugin.set_status(created, 2)
    plugin.delete_appointment(created)
    booked = book(plugin, free_day(), "15:00")
    assert booked.status_code == 201
    new_id = str(booked.json["data"]["appointment_id"])
    assert kivicare(plugin, "PUT", f"/appointments/{new_id}/status", json={"status": 0}).status_code == 200
    assert kivicare(plugin, "DELETE", f"/appointments/{new_id}").status_code == 200
    assert plugin.companion.flush_hints(timeout=10)
    assert [(h["event"], h["appointment_id"]) for h in receiver.hints] == [
        ("kc_after_create_appointment", created), ("kc_appointment_updated", created),
        ("kc_appointment_status_update", created), ("kc_appointment_deleted", created),
        ("kc_after_create_appointment", new_id), ("kc_appointment_status_update", new_id),
        ("kc_appointment_deleted", new_id)]
    assert all(h["valid"] and h["path"] == "/sidecar/hooks/kivicare" for h in receiver.hints)
    assert all(h["site"] == plugin.base_url and isinstance(h["sent_at"], int) for h in receiver.hints)
    assert [h["status"] for h in plugin.companion.hints] == [202] * 7


def test_no_hints_without_the_plugin_and_the_nightly_cron_sends_none(kivicare, plugin, receiver):
    kivicare.create_appointment(doctor_id=ANNA, patient_id=LOUIS, start_utc=at("10:00"),
                                service_mapping_ids=[ANNA_GENERAL])
    plugin.install_companion(SECRET, receiver.url)
    plugin.run_nightly_cron()
    assert plugin.companion.flush_hints()
    assert receiver.hints == []


def test_sandbox_http_controls_for_the_plugin(kivicare):
    base = kivicare.base_url
    assert requests.get(base + "/__sandbox__/companion", timeout=10).status_code == 404
    assert requests.post(base + "/__sandbox__/companion", json={"secret": SECRET, "sidecar_url": "http://127.0.0.1:9"},
                         timeout=10).json() == {"ok": True}
    CompanionClient(base, SECRET).push_busy(ANNA, at("00:00"), at("23:00"), [BusyBlock("b1", at("09:00"), at("10:00"))])
    state = requests.get(base + "/__sandbox__/companion", timeout=10).json()
    assert state["busy"][str(ANNA)][0]["id"] == "b1" and state["sidecar_url"] == "http://127.0.0.1:9"
    sso = requests.post(base + "/__sandbox__/companion/sso", json={"user_id": ANNA}, timeout=10).json()
    assert sso["url"].startswith("http://127.0.0.1:9/sso?token=") and sso["token"].count(".") == 1
    assert requests.delete(base + "/__sandbox__/companion", timeout=10).json() == {"ok": True}
    assert kivicare.companion is None
