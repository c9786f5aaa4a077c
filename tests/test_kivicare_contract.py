"""The client uses only routes, parameters and fields that the recorded fixtures show or API.md cites.

The allowed set is built from every request in ../shared/kivicare/fixtures, plus the few API.md
citations listed below; then a full sync (new, changed, deleted, encrypted) runs against the
sandbox and every request it received is checked against that set.
"""

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .conftest import ANNA, connect
from .test_sync_engine import GENERAL, at, mapping_id

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "kivicare" / "fixtures"
PREFIX = "/wp-json/kivicare/v1"

# Cited in API.md but not recorded with these exact parameters.
API_MD_CITED = {
    ("GET", "/doctors"): {"perPage"},  # section 3: "GET /doctors?perPage=all[&clinic_id=]"
    ("GET", "/appointments/{id}"): {"timezone", "target_timezone"},  # section 2.8
    ("GET", "/doctor-services"): {"doctor_id", "perPage"},  # section 3
    ("GET", "/clinics"): {"perPage"},  # section 3: perPage one of 5, 10, 25, 50, 100 or all
}


def route_of(path: str) -> str:
    if path.startswith(PREFIX):
        path = path[len(PREFIX):] or "/"
    return re.sub(r"/\d+(?=/|$)", "/{id}", path)


def allowed_routes() -> dict:
    allowed: dict = {}
    for file in sorted(FIXTURES.glob("[0-9]*.json")):
        request = json.loads(file.read_text())["request"]
        names = set(request.get("params") or {}) | set(request.get("query") or {})
        names |= set(parse_qs(urlparse(request["url"]).query))
        allowed.setdefault((request["method"], route_of(request["path"])), set()).update(names)
    for key, names in API_MD_CITED.items():
        allowed.setdefault(key, set()).update(names)
    return allowed


def check_requests(kivicare) -> set:
    """Assert every request the sandbox received is an allowed route with allowed parameters (appointment
    reads in UTC); returns the routes seen."""
    allowed = allowed_routes()
    seen = set()
    for request in kivicare.requests:
        if request["path"].startswith("/__sandbox__"):
            continue
        key = (request["method"], route_of(request["path"]))
        assert key in allowed, f"{key} is not a route the fixtures show"
        extra = set(request.get("query") or {}) - allowed[key]
        assert not extra, f"{key} sent parameters {extra} the fixtures never show"
        seen.add(key)
        if key[1].startswith("/appointments") and key[0] == "GET":
            assert (request.get("query") or {}).get("timezone") == "UTC", key
    return seen


def test_the_settings_page_lists_use_allowed_routes(runtime, kivicare):
    """The settings page's lists of services and clinics (which ones sync) and the connection test."""
    client = runtime.kivicare()
    assert client.list_clinics()
    assert client.list_doctor_services()
    client.site_info()
    client.addons()
    seen = check_requests(kivicare)
    assert ("GET", "/clinics") in seen


def test_every_request_the_sidecar_sends_is_one_the_fixtures_show(runtime, kivicare, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    service = [mapping_id(runtime, ANNA, GENERAL)]
    moved = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(2, 8, 10), service_mapping_ids=service)
    gone = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(2, 9, 10), service_mapping_ids=service)
    runtime.bridge.sync_once()
    kivicare.reschedule(moved, at(3, 8, 10))
    kivicare.delete_appointment(gone)
    kivicare.browser_login(kivicare.username)
    runtime.bridge.sync_once()
    assert connection.calendar_id

    seen = check_requests(kivicare)
    # Never the destructive routes (DESIGN invariant 6).
    assert ("PUT", "/appointments/{id}") not in seen
    assert not any("holidays" in route for _, route in seen)
