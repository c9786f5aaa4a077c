"""Behaviour of the KiviCare sandbox beyond the recorded fixtures.

Covers the staff actions (Python and ``/__sandbox__`` HTTP), the E2EE round trip
and ``browser_login``, ``set_down``, timezone framing (UTC, Europe/Paris,
America/New_York, across the 2027-03-28 Paris DST switch), ``perPage`` rules,
anonymised patients, the PUT/holiday traps, permissions and the seeded data.
Everything runs offline: the Flask test client, or the werkzeug server on
127.0.0.1 for the HTTP-level tests.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from sandbox.kivicare import MISSING, KiviCareSandbox
from sandbox.kivicare_seed import MAPPINGS, SEED_USERS, business_day

UTC = timezone.utc
NOW = datetime(2027, 3, 20, 10, 0, tzinfo=UTC)  # a Saturday, a week before Paris DST
REPO = Path(__file__).resolve().parents[2]


def basic(username: str, password: str) -> dict:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Api:
    """Tiny helper around the Flask test client, authenticated as one user."""

    def __init__(self, sb: KiviCareSandbox, username: str | None = None) -> None:
        self.sb = sb
        self.client = sb.app.test_client(use_cookies=False)
        username = username or sb.username
        self.headers = basic(*sb.credentials(username))

    def call(self, method: str, path: str, headers: dict | None = None, **kwargs):
        return self.client.open("/wp-json/kivicare/v1" + path, method=method,
                                headers={**self.headers, **(headers or {})}, **kwargs)

    def get(self, path: str, **kw):
        return self.call("GET", path, **kw)

    def list(self, **params) -> dict:
        resp = self.get("/appointments", query_string=params)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()["data"]


@pytest.fixture
def sb() -> KiviCareSandbox:
    return KiviCareSandbox(now=lambda: NOW)


@pytest.fixture
def api(sb) -> Api:
    return Api(sb)


# --------------------------------------------------------------------------- seed

def test_seed_ids_match_the_documentation(sb, api):
    doctors = api.get("/doctors", query_string={"perPage": "all"}).get_json()["data"]["doctors"]
    assert sorted(d["id"] for d in doctors) == [3, 4, 8]
    patients = api.get("/patients", query_string={"perPage": "all"}).get_json()["data"]["patients"]
    assert sorted(p["id"] for p in patients) == [5, 6, 7, 9]
    assert api.get("/doctors/3").get_json()["data"]["timezone"] is None
    assert api.get("/doctors/8").get_json()["data"]["timezone"] == "America/New_York"
    services = api.get("/doctor-services", query_string={"perPage": "all"}).get_json()["data"]
    by_id = {s["id"]: s for s in services["doctorServices"]}
    assert {k: (v["doctorId"], v["serviceId"]) for k, v in by_id.items()} == {
        k: (d, s) for k, (d, s, _m) in MAPPINGS.items()}
    assert by_id[6]["duration"] == "45 min" and by_id[1]["duration"] == "30 min"
    assert by_id[2]["telemedService"] == "yes" and by_id[3]["telemedService"] == "no"
    detail = api.get("/doctor-services/6").get_json()["data"]
    assert detail["duration"] == 45 and detail["telemed_service"] == "no"
    clinic = api.get("/clinics/1").get_json()["data"]
    assert (clinic["clinic_name"], clinic["address"], clinic["city"], clinic["postal_code"]) == (
        "Riverside Family Clinic", "12 Rue de la Paix", "Paris", "75002")


def test_seed_appointments_are_relative_to_today_and_deterministic(sb, api):
    items = api.list(perPage="all", timezone="UTC")["appointments"]
    assert 15 <= len(items) <= 25
    statuses = [a["status"] for a in items]
    assert statuses.count(4) == 1 and statuses.count(0) == 1 and statuses.count(2) >= 2
    assert statuses.count(1) > len(items) / 2
    starts = sorted(datetime.fromisoformat(a["start"]).replace(tzinfo=UTC) for a in items)
    assert starts[0] < NOW < starts[-1]
    assert starts[0] >= NOW - timedelta(days=6) and starts[-1] <= NOW + timedelta(days=21)
    again = Api(KiviCareSandbox(now=lambda: NOW)).list(perPage="all", timezone="UTC")
    assert [(a["id"], a["start"], a["end"]) for a in again["appointments"]] == [
        (a["id"], a["start"], a["end"]) for a in items]
    checked_in = next(a for a in items if a["status"] == 4)
    assert checked_in["encounterId"] == "1" and checked_in["payment"]["status"] == "unpaid"


def test_business_day_helper():
    saturday = datetime(2027, 3, 20).date()
    assert business_day(saturday, 0).isoformat() == "2027-03-22"
    assert business_day(saturday, 1).isoformat() == "2027-03-23"
    assert business_day(saturday, -1).isoformat() == "2027-03-19"


def test_seeded_users_can_authenticate():
    sb = KiviCareSandbox(now=lambda: NOW)
    for username, (user_id, _login, app_password) in SEED_USERS.items():
        assert sb.credentials(username) == (username, app_password)
        # WordPress strips the spaces of application passwords
        resp = sb.app.test_client().get("/wp-json/wp/v2/users/me",
                                        headers=basic(username, app_password.replace(" ", "")))
        assert resp.get_json()["id"] == user_id


# --------------------------------------------------------------------------- staff actions

def test_create_appointment_uses_mapping_durations(sb, api):
    start = datetime(2027, 3, 30, 12, 0, tzinfo=UTC)
    new_id = sb.create_appointment(doctor_id=3, patient_id=5, start_utc=start,
                                   service_mapping_ids=[6], description="long one")
    assert isinstance(new_id, str)
    got = api.get(f"/appointments/{new_id}", query_string={"timezone": "UTC"}).get_json()["data"]
    assert (got["appointmentStartTime"], got["appointmentEndTime"]) == ("12:00:00", "12:45:00")
    assert got["serviceIds"] == ["6"] and got["status"] == "1"
    two = sb.create_appointment(doctor_id=3, patient_id=5, start_utc=start + timedelta(hours=2),
                                service_mapping_ids=[1, 3])
    assert sb.get_appointment(two)["end_utc"] - sb.get_appointment(two)["start_utc"] == \
        timedelta(minutes=50)
    with pytest.raises(ValueError):
        sb.create_appointment(doctor_id=5, patient_id=5, start_utc=start, service_mapping_ids=[1])
    with pytest.raises(ValueError):
        sb.create_appointment(doctor_id=3, patient_id=5, start_utc=start, service_mapping_ids=[99])


def test_reschedule_status_delete(sb, api):
    new_id = sb.create_appointment(doctor_id=4, patient_id=6,
                                   start_utc=datetime(2027, 3, 31, 9, tzinfo=UTC),
                                   service_mapping_ids=[7])
    sb.reschedule(new_id, datetime(2027, 4, 1, 13, tzinfo=UTC))
    snap = sb.get_appointment(new_id)
    assert snap["start_utc"] == datetime(2027, 4, 1, 13, tzinfo=UTC)
    assert snap["end_utc"] == datetime(2027, 4, 1, 13, 45, tzinfo=UTC)
    sb.reschedule(new_id, datetime(2027, 4, 1, 14, tzinfo=UTC), datetime(2027, 4, 1, 14, 10,
                                                                         tzinfo=UTC))
    assert sb.get_appointment(new_id)["end_utc"] == datetime(2027, 4, 1, 14, 10, tzinfo=UTC)
    sb.set_status(new_id, 2)
    assert api.get(f"/appointments/{new_id}").get_json()["data"]["status"] == "2"
    sb.set_status(new_id, 4)
    item = next(a for a in api.list(perPage="all")["appointments"] if a["id"] == new_id)
    assert item["status"] == 4 and item["encounterId"] != 0
    sb.delete_appointment(new_id)
    resp = api.get(f"/appointments/{new_id}")
    assert resp.status_code == 404
    assert resp.get_json() == {"status": False, "message": "Appointment not found",
                               "data": {"error": "Appointment not found"}}
    with pytest.raises(KeyError):
        sb.delete_appointment(new_id)


def test_anonymised_patient_is_excluded_from_list_but_get_answers(sb, api):
    mine = [a["id"] for a in api.list(perPage="all", patient=9)["appointments"]]
    assert mine
    sb.anonymise_patient(9)
    data = api.list(perPage="all")
    assert all(a["patientId"] != 9 for a in data["appointments"])
    assert api.list(perPage="all", patient=9)["pagination"] == {
        "total": 0, "perPage": 1, "currentPage": 1, "lastPage": 0}
    got = api.get(f"/appointments/{mine[0]}").get_json()["data"]
    assert got["patientId"] == 9 and got["patientEmail"].endswith("@example.invalid")


def test_set_raw_field_corrupts_list_and_get(sb, api):
    appt_id = api.list(perPage=1)["appointments"][0]["id"]
    sb.set_raw_field(appt_id, "start", "garbage")
    sb.set_raw_field(appt_id, "doctorId", MISSING)
    sb.set_raw_field(appt_id, field="description", value=None)
    item = next(a for a in api.list(perPage="all")["appointments"] if a["id"] == appt_id)
    assert item["start"] == "garbage" and "doctorId" not in item and item["description"] is None
    got = api.get(f"/appointments/{appt_id}").get_json()["data"]
    assert "doctorId" not in got and got["description"] is None and "start" not in got


def test_nightly_cron_cancels_past_booked_only(sb, api):
    before = {a["id"]: a for a in api.list(perPage="all")["appointments"]}
    changed = sb.run_nightly_cron()
    after = {a["id"]: a for a in api.list(perPage="all")["appointments"]}
    expected = sorted((i for i, a in before.items() if a["status"] == 1 and a["isPast"]), key=int)
    assert changed == expected and changed
    for appt_id, item in after.items():
        if appt_id in changed:
            assert item["status"] == 0
        else:
            assert item["status"] == before[appt_id]["status"]
    assert sb.run_nightly_cron() == []


# --------------------------------------------------------------------------- E2EE

def _register(api: Api) -> tuple[PrivateKey, PublicKey]:
    server = api.client.post("/wp-json/kivicare/v1/server-key")  # no auth needed
    assert server.status_code == 200 and "X-KiviCare-Encrypted" not in server.headers
    server_key = PublicKey(base64.b64decode(server.get_json()["public_key"]))
    client_key = PrivateKey.generate()
    resp = api.call("POST", "/config/register-key",
                    json={"public_key": base64.b64encode(bytes(client_key.public_key)).decode()})
    assert resp.status_code == 200 and resp.get_json() == {"status": "success"}
    return client_key, server_key


def _decrypt(client_key: PrivateKey, server_key: PublicKey, body: str) -> dict:
    blob = base64.b64decode(body)
    return json.loads(Box(client_key, server_key).decrypt(blob[24:], blob[:24]))


def test_e2ee_round_trip(sb, api):
    client_key, server_key = _register(api)
    resp = api.get("/appointments", query_string={"perPage": 2})
    assert resp.status_code == 200 and resp.headers["X-KiviCare-Encrypted"] == "true"
    body = resp.get_json()
    assert isinstance(body, str)
    plain = _decrypt(client_key, server_key, body)
    assert plain["message"] == "Appointments retrieved successfully"
    assert len(plain["data"]["appointments"]) == 2
    missing = api.get("/appointments/999999")  # errors are encrypted too, status kept
    assert missing.status_code == 404 and missing.headers["X-KiviCare-Encrypted"] == "true"
    assert _decrypt(client_key, server_key, missing.get_json())["message"] == \
        "Appointment not found"
    invalid = api.get("/appointments", query_string={"status": 9})
    assert invalid.status_code == 400
    assert _decrypt(client_key, server_key, invalid.get_json())["code"] == "rest_invalid_param"
    # plain JSON writes are still accepted; the answer is encrypted
    appt_id = plain["data"]["appointments"][0]["id"]
    write = api.call("PUT", f"/appointments/{appt_id}/status", json={"status": 2})
    assert _decrypt(client_key, server_key, write.get_json())["data"] == {
        "id": int(appt_id), "status": 2}
    # other users are not affected; wp/v2 routes are never encrypted
    assert "X-KiviCare-Encrypted" not in Api(sb, "Anna").get("/appointments").headers
    assert "X-KiviCare-Encrypted" not in api.client.get("/wp-json/wp/v2/users/me",
                                                        headers=api.headers).headers


def test_browser_login_makes_responses_undecipherable(sb, api):
    client_key, server_key = _register(api)
    sb.browser_login()  # someone opens the dashboard as the sidecar user: last key wins
    resp = api.get("/appointments")
    assert resp.headers["X-KiviCare-Encrypted"] == "true"
    with pytest.raises(CryptoError):
        _decrypt(client_key, server_key, resp.get_json())
    sb.forget_client_key()
    plain = api.get("/appointments")
    assert "X-KiviCare-Encrypted" not in plain.headers and plain.get_json()["status"] is True


def test_anonymous_requests(sb):
    client = sb.app.test_client(use_cookies=False)
    resp = client.get("/wp-json/kivicare/v1/appointments")
    assert resp.status_code == 401 and resp.get_json() == {
        "code": "unauthorized", "message": "Unauthorized request", "data": {"status": 401}}
    bad = client.get("/wp-json/kivicare/v1/appointments", headers=basic("sidecar", "nope"))
    assert bad.status_code == 401 and bad.get_json()["code"] == "unauthorized"
    with_header = client.get("/wp-json/kivicare/v1/appointments",
                             headers={"X-KC-Client-Id": "sidecar-1"})
    assert with_header.status_code == 401 and with_header.get_json()["code"] == "rest_forbidden"
    slots = client.get("/wp-json/kivicare/v1/appointments/slots?date=2027-03-23&doctor_id=3"
                       "&clinic_id=1&service_id[]=1", headers={"X-KC-Client-Id": "x"})
    assert slots.status_code == 200 and slots.get_json()["data"]["total_slots"] > 0


# --------------------------------------------------------------------------- down / HTTP

@pytest.fixture
def served():
    sb = KiviCareSandbox(now=lambda: NOW)
    base = sb.start()
    try:
        yield sb, base
    finally:
        sb.stop()


def test_set_down_answers_503_html(served):
    sb, base = served
    auth = basic(*sb.credentials(sb.username))
    assert requests.get(sb.rest_url + "/appointments", headers=auth, timeout=5).status_code == 200
    sb.set_down(True)
    resp = requests.get(sb.rest_url + "/appointments", headers=auth, timeout=5)
    assert resp.status_code == 503 and resp.headers["Content-Type"].startswith("text/html")
    assert "<html" in resp.text.lower()
    assert requests.get(base + "/wp-json/", timeout=5).status_code == 503
    # the control routes keep working, so a demo can bring the site back
    assert requests.get(base + "/__sandbox__/info", timeout=5).json()["down"] is True
    assert requests.post(base + "/__sandbox__/down", json={"down": False}, timeout=5).ok
    assert requests.get(sb.rest_url + "/appointments", headers=auth, timeout=5).status_code == 200


def test_sandbox_http_routes(served):
    sb, base = served
    auth = basic(*sb.credentials(sb.username))
    created = requests.post(base + "/__sandbox__/appointments", timeout=5, json={
        "doctor_id": 8, "patient_id": 5, "start_utc": "2027-04-01T14:00:00Z",
        "service_mapping_ids": [9], "description": "via HTTP"})
    assert created.status_code == 201
    appt_id = created.json()["id"]
    moved = requests.post(f"{base}/__sandbox__/appointments/{appt_id}/reschedule", timeout=5,
                          json={"start_utc": "2027-04-01T15:00:00+00:00"}).json()
    assert (moved["start_utc"], moved["end_utc"]) == ("2027-04-01T15:00:00+00:00",
                                                      "2027-04-01T15:20:00+00:00")
    assert requests.post(f"{base}/__sandbox__/appointments/{appt_id}/status", timeout=5,
                         json={"status": 2}).json()["status"] == 2
    assert requests.post(f"{base}/__sandbox__/appointments/{appt_id}/raw", timeout=5,
                         json={"field": "end", "remove": True}).ok
    item = requests.get(sb.rest_url + f"/appointments/{appt_id}", headers=auth, timeout=5).json()
    assert item["data"]["description"] == "via HTTP"
    assert requests.post(base + "/__sandbox__/addon", timeout=5,
                         json={"name": "googlemeet", "active": True}).ok
    addons = requests.get(sb.rest_url + "/config/addon", headers=auth, timeout=5).json()["data"]
    assert addons["googlemeet"] == {"active": True, "version": "1.0.0"}
    assert requests.post(base + "/__sandbox__/cron", timeout=5).json()["cancelled"]
    assert requests.post(base + "/__sandbox__/patients/6/anonymise", timeout=5).ok
    assert requests.post(base + "/__sandbox__/browser-login", json={"username": "Marc"},
                         timeout=5).ok
    marc = basic(*sb.credentials("Marc"))
    assert requests.get(sb.rest_url + "/appointments", headers=marc,
                        timeout=5).headers.get("X-KiviCare-Encrypted") == "true"
    assert requests.post(base + "/__sandbox__/forget-key", json={"username": "Marc"},
                         timeout=5).ok
    assert requests.delete(f"{base}/__sandbox__/appointments/{appt_id}", timeout=5).ok
    missing = requests.delete(f"{base}/__sandbox__/appointments/{appt_id}", timeout=5)
    assert missing.status_code == 404 and "error" in missing.json()
    assert requests.post(base + "/__sandbox__/appointments", json={"doctor_id": 3},
                         timeout=5).status_code == 400
    log = requests.get(base + "/__sandbox__/requests", timeout=5).json()
    assert log and all(not r["path"].startswith("/__sandbox__") for r in log)


def test_requests_log(sb, api):
    sb.reset_requests()
    api.get("/appointments", query_string={"perPage": 3, "timezone": "UTC"})
    api.call("PUT", "/appointments/1/status", json={"status": 2})
    assert sb.requests == [
        {"method": "GET", "path": "/wp-json/kivicare/v1/appointments",
         "query": {"perPage": "3", "timezone": "UTC"}, "json": None},
        {"method": "PUT", "path": "/wp-json/kivicare/v1/appointments/1/status", "query": {},
         "json": {"status": 2}},
    ]
    sb.reset_requests()
    assert sb.requests == []


def test_concurrent_requests(served):
    sb, _base = served
    auth = basic(*sb.credentials(sb.username))

    def work(i: int) -> int:
        if i % 4 == 0:
            start = datetime(2027, 5, 3, 6, tzinfo=UTC) + timedelta(hours=i)
            sb.create_appointment(doctor_id=3, patient_id=5, service_mapping_ids=[1],
                                  start_utc=start)
        return requests.get(sb.rest_url + "/appointments?perPage=all", headers=auth,
                            timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(work, range(24))) == {200}


def test_module_runs_standalone():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.kivicare", "--port", "0"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, proc.kill)  # never let a stuck child hang the suite
    watchdog.start()
    try:
        first = proc.stdout.readline()
        assert first.startswith("KiviCare sandbox: http://127.0.0.1:")
        base = first.split(": ", 1)[1].strip()
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "sidecar" in lines[1]
        assert requests.get(base + "/wp-json/", timeout=5).json()["timezone_string"] == \
            "Europe/Paris"
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- timezones

def test_timezone_framing_across_paris_dst(sb, api):
    # 2027-03-27 23:30Z is 00:30 on the 28th in Paris (still UTC+1 until 02:00 local)
    late = sb.create_appointment(doctor_id=3, patient_id=5, service_mapping_ids=[1],
                                 start_utc=datetime(2027, 3, 27, 23, 30, tzinfo=UTC))
    # after the switch Paris is UTC+2; New York has been on EDT (UTC-4) since 2027-03-14
    after = sb.create_appointment(doctor_id=3, patient_id=6, service_mapping_ids=[1],
                                  start_utc=datetime(2027, 3, 29, 9, 0, tzinfo=UTC))

    def ids(**params):
        return [a["id"] for a in api.list(perPage="all", **params)["appointments"]]

    assert late in ids(date="2027-03-28") and late not in ids(date="2027-03-27")
    assert late in ids(date="2027-03-27", timezone="UTC")
    assert late not in ids(date="2027-03-28", timezone="UTC")
    assert late in ids(date_from="2027-03-28", date_to="2027-03-28")
    assert late in ids(date="2027-03-27", timezone="America/New_York")

    def start_of(appt_id, **params):
        item = next(a for a in api.list(perPage="all", **params)["appointments"]
                    if a["id"] == appt_id)
        return item["start"], item["end"], item["timezone"]

    assert start_of(late) == ("2027-03-28T00:30:00", "2027-03-28T01:00:00", "Europe/Paris")
    assert start_of(after) == ("2027-03-29T11:00:00", "2027-03-29T11:30:00", "Europe/Paris")
    assert start_of(after, timezone="UTC") == ("2027-03-29T09:00:00", "2027-03-29T09:30:00",
                                               "UTC")
    assert start_of(after, timezone="America/New_York")[0] == "2027-03-29T05:00:00"
    assert start_of(after, timezone="UTC+5:30") == ("2027-03-29T14:30:00",
                                                   "2027-03-29T15:00:00", "+05:30")
    got = api.get(f"/appointments/{after}", query_string={"timezone": "America/New_York"})
    data = got.get_json()["data"]
    assert (data["appointmentStartDate"], data["appointmentStartTime"]) == ("2027-03-29",
                                                                            "05:00:00")
    assert data["appointmentDateTime"] == "2027-03-29/11:00:00"  # raw local, Paris
    assert api.get(f"/appointments/{after}").get_json()["data"]["appointmentStartTime"] == \
        "11:00:00"
    view = api.get(f"/appointments/{after}/view").get_json()["data"]
    assert view["start"] == "2027-03-29T11:00:00"  # the /view trap: local, no timezone
    bad = api.get("/appointments", query_string={"timezone": "Mars/Olympus"})
    assert bad.status_code == 400 and bad.get_json()["data"]["params"] == {
        "timezone": "Invalid parameter."}


def test_rest_create_uses_the_doctors_timezone(sb, api):
    def create(doctor: int, day: str, hhmm: str) -> str:
        resp = api.call("POST", "/appointments", json={
            "appointmentStartDate": day, "appointmentStartTime": hhmm, "doctorId": doctor,
            "patientId": 7, "serviceId": [8 if doctor == 8 else 1], "status": 1})
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return str(resp.get_json()["data"]["appointment_id"])

    before_dst = create(3, "2027-03-26", "11:00")
    after_dst = create(3, "2027-03-29", "11:00")
    new_york = create(8, "2027-03-29", "11:00")
    utc = {a["id"]: a["start"] for a in api.list(perPage="all", timezone="UTC")["appointments"]}
    assert utc[before_dst] == "2027-03-26T10:00:00"
    assert utc[after_dst] == "2027-03-29T09:00:00"
    assert utc[new_york] == "2027-03-29T15:00:00"
    assert api.get(f"/appointments/{new_york}").get_json()["data"]["appointmentDateTime"] == \
        "2027-03-29/11:00:00"


# --------------------------------------------------------------------------- REST rules & traps

def test_per_page_rules(sb, api):
    total = api.list(perPage="all")["pagination"]["total"]
    assert api.list(perPage="all")["pagination"] == {"total": total, "perPage": total,
                                                    "currentPage": 1, "lastPage": 1}
    assert api.list(perPage=7)["pagination"]["lastPage"] == -(-total // 7)
    assert len(api.list(perPage=7, page=2)["appointments"]) == 7
    assert api.list(perPage=1000)["pagination"]["perPage"] == 1000  # no maximum
    for bad in (0, -1, "abc"):
        assert api.get("/appointments", query_string={"perPage": bad}).status_code == 400
    empty = api.list(perPage="all", date="2030-01-01")
    assert empty == {"appointments": [], "pagination": {"total": 0, "perPage": 1,
                                                        "currentPage": 1, "lastPage": 0}}
    for route in ("/doctors", "/patients", "/clinics", "/doctor-services"):
        bad = api.get(route, query_string={"perPage": 1000})
        assert bad.status_code == 400 and bad.get_json()["code"] == "rest_invalid_param"
        for ok in ("5", "100", "all"):
            assert api.get(route, query_string={"perPage": ok}).status_code == 200


def test_list_filters_and_order(sb, api):
    assert all(a["doctorId"] == 8 for a in api.list(doctor=8, perPage="all")["appointments"])
    assert all(a["status"] == 2 for a in api.list(status=2, perPage="all")["appointments"])
    assert api.get("/appointments", query_string={"status": 7}).status_code == 400
    upcoming = api.list(timeFrame="upcoming", perPage="all")["appointments"]
    assert upcoming and all(not a["isPast"] and a["status"] in (1, 2, 4) for a in upcoming)
    ordered = api.list(perPage="all", orderby="appointment_start_date", order="asc")
    starts = [a["start"] for a in api.list(perPage="all", orderby="appointment_start_date",
                                           timezone="UTC")["appointments"]]
    assert starts == sorted(starts) and ordered["appointments"]
    default = [int(a["id"]) for a in api.list(perPage="all")["appointments"]]
    assert default == sorted(default, reverse=True)  # id DESC
    assert [a["description"] for a in api.list(search="eczema")["appointments"]] == [
        "Eczema follow-up (pending)"]
    clinic = api.get("/appointments", query_string={"clinic": 42}).get_json()
    assert clinic["message"] == "Clinic not found" and clinic["data"]["appointments"] == []


def test_item_types(sb, api):
    item = api.list(perPage=1)["appointments"][0]
    assert isinstance(item["id"], str)
    for key in ("clinicId", "doctorId", "patientId", "status"):
        assert isinstance(item[key], int)
    assert item["charges"].startswith("\u20ac") and "+" not in item["start"]
    got = api.get(f"/appointments/{item['id']}").get_json()["data"]
    assert isinstance(got["status"], str) and all(isinstance(s, str) for s in got["serviceIds"])


def test_put_wrong_duration_and_description_wipe(sb, api):
    long_one = next(a for a in api.list(perPage="all", timezone="UTC")["appointments"]
                    if a["services"] == "Extended Consultation" and a["doctorId"] == 3)
    start = datetime.fromisoformat(long_one["start"])
    end = datetime.fromisoformat(long_one["end"])
    assert end - start == timedelta(minutes=45)
    local = api.get(f"/appointments/{long_one['id']}").get_json()["data"]
    resp = api.call("PUT", f"/appointments/{long_one['id']}", json={
        "appointmentStartDate": local["appointmentStartDate"],
        "appointmentStartTime": local["appointmentStartTime"][:5]})
    assert resp.status_code == 200
    data = resp.get_json()["data"]
    assert data["previous_start_time"] == data["appointment_start_time"]
    after = api.get(f"/appointments/{long_one['id']}", query_string={"timezone": "UTC"})
    after = after.get_json()["data"]
    end_at = f"{after['appointmentEndDate']}T{after['appointmentEndTime']}"
    start_at = f"{after['appointmentStartDate']}T{after['appointmentStartTime']}"
    duration = datetime.fromisoformat(end_at) - datetime.fromisoformat(start_at)
    assert duration == timedelta(minutes=30)  # 45 -> 30 (the session time_slot)
    assert after["description"] == ""  # wiped because it was omitted
    missing = api.call("PUT", f"/appointments/{long_one['id']}",
                       json={"appointmentStartDate": "2027-03-29"})
    assert missing.status_code == 400


def test_create_rules(sb, api):
    def post(**body):
        return api.call("POST", "/appointments", json=body)

    missing = post()
    assert missing.status_code == 400 and missing.get_json()["code"] == \
        "rest_missing_callback_param"
    base = {"appointmentStartDate": "2027-03-30", "appointmentStartTime": "16:00",
            "doctorId": 3, "patientId": 5, "serviceId": [1]}
    created = post(**base)  # no "status": the row is created Cancelled (API.md 2.9)
    assert created.status_code == 201 and created.get_json()["data"]["status"] == 0
    booked = post(**base, status=1)  # a cancelled row does not block the slot
    assert booked.status_code == 201 and booked.get_json()["data"]["status"] == 1
    taken = post(**{**base, "appointmentStartTime": "16:15"})
    assert taken.status_code == 409
    assert taken.get_json()["message"] == "Selected time slot is not available"
    assert post(**{**base, "patientId": 999}).status_code == 404
    assert post(**{**base, "appointmentStartDate": "30/03/2027"}).status_code == 500
    telemed = {**base, "appointmentStartTime": "08:00", "serviceId": [2], "status": 1}
    refused = post(**telemed)
    assert refused.status_code == 400 and "telemed" in refused.get_json()["message"]
    sb.set_addon("telemed", True)
    assert post(**telemed).status_code == 201
    sb.set_addon("telemed", False)
    assert api.get("/config/addon").get_json()["data"]["telemed"] == {"active": False,
                                                                     "version": None}


def test_holiday_save_cancels_booked_appointments(sb, api):
    day = business_day(NOW.date(), 1).isoformat()
    booked = [a for a in api.list(perPage="all", doctor=3, date=day)["appointments"]
              if a["status"] == 1]
    assert booked
    body = {"module_type": {"id": "doctor", "label": "Doctor"},
            "module_id": {"id": 3, "label": "Anna Schmidt"},
            "scheduleDate": {"start": day, "end": day}, "selectionMode": "single",
            "timeSpecific": True, "start_time": "16:00", "end_time": "16:30",
            "description": "gcal-busy abc"}
    resp = api.call("POST", "/settings/holidays/update", json=body)
    assert resp.status_code == 200 and resp.get_json()["status"] is True
    for item in booked:  # cancelled although the block does not overlap them
        assert api.get(f"/appointments/{item['id']}").get_json()["data"]["status"] == "0"
    again = api.call("POST", "/settings/holidays/update", json={**body, "start_time": "10:00",
                                                                  "end_time": "10:30"})
    assert again.status_code == 200 and again.get_json() == {
        "status": False, "message": "Doctor already has a holiday scheduled for this period.",
        "data": None}
    clash = api.call("POST", "/appointments", json={
        "appointmentStartDate": day, "appointmentStartTime": "16:00", "doctorId": 3,
        "patientId": 5, "serviceId": [1], "status": 1})
    assert clash.status_code == 409


def test_permissions(sb):
    anna, louis = Api(sb, "Anna"), Api(sb, "Louis")
    assert {a["doctorId"] for a in anna.list(perPage="all", doctor=4)["appointments"]} == {3}
    assert {a["patientId"] for a in louis.list(perPage="all")["appointments"]} == {5}
    assert louis.get("/patients").status_code == 403
    assert louis.get("/doctors").status_code == 403
    other = next(a for a in Api(sb).list(perPage="all")["appointments"] if a["patientId"] != 5)
    assert louis.call("DELETE", f"/appointments/{other['id']}").get_json()["code"] == \
        "rest_forbidden"
    assert louis.get(f"/appointments/{other['id']}").status_code == 200
    assert louis.get("/patients/6").status_code == 403
    assert louis.get("/patients/5").status_code == 200


def test_cookie_login_flow(sb):
    client = sb.app.test_client(use_cookies=False)
    headers = {"X-KC-Client-Id": "python"}
    admin = client.post("/wp-json/kivicare/v1/auth/login", headers=headers,
                        json={"username": sb.username, "password": sb.app_password})
    assert admin.status_code == 403
    login = client.post("/wp-json/kivicare/v1/auth/login", headers=headers,
                        json={"username": "Marc", "password": SEED_USERS["Marc"][1]})
    assert login.status_code == 200
    cookie = login.headers["Set-Cookie"].split(";")[0]
    nonce = login.get_json()["data"]["nonce"]
    ok = client.get("/wp-json/kivicare/v1/appointments",
                    headers={"Cookie": cookie, "X-WP-Nonce": nonce})
    assert ok.status_code == 200
    assert {a["doctorId"] for a in ok.get_json()["data"]["appointments"]} == {4}
    assert client.get("/wp-json/kivicare/v1/appointments",
                      headers={"Cookie": cookie}).status_code == 401
    assert client.get("/wp-json/kivicare/v1/appointments",
                      headers={"Cookie": cookie, "X-WP-Nonce": "0000000000"}).status_code == 403
    client.post("/wp-json/kivicare/v1/auth/logout", headers={"Cookie": cookie, "X-WP-Nonce": nonce})
    assert client.get("/wp-json/kivicare/v1/appointments",
                      headers={"Cookie": cookie, "X-WP-Nonce": nonce}).status_code == 401


def test_index_and_unknown_routes(sb, api):
    index = api.client.get("/wp-json/").get_json()
    assert index["timezone_string"] == "Europe/Paris" and index["gmt_offset"] == 1
    assert "kivicare/v1" in index["namespaces"]
    summary = api.client.get("/?rest_route=/kivicare/v1/appointments&perPage=2",
                             headers=api.headers).get_json()
    assert len(summary["data"]["appointments"]) == 2
    assert api.get("/appointments/summary").status_code == 501
    unknown = api.get("/nope")
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "rest_no_route"
    general = api.get("/config/general").get_json()["data"]
    assert general["timezone"] == "Europe/Paris"
    template = api.get("/settings/google-event-template").get_json()
    assert template["message"] == 200 and "templates" in template["data"]["data"]
