"""Fuzzing KiviCare appointment payloads through the real parsing code (issue 6, item 5).

Three levels, all with hypothesis, ``deadline=None`` and ``derandomize=True`` (a fixed seed: CI runs the
same examples every time, so these tests cannot flake):

1. ``Appointment.from_list_item`` / ``from_detail`` on payloads grown from the recorded shapes
   (fixtures 138 and 139): fields missing, wrong-typed, unknown statuses, odd offsets, far years, end
   before start, huge / unicode / HTML strings, unknown fields. Either a sane ``Appointment`` (aware
   UTC times, end after start, status 0..4, usable in any timezone and through the cache) or
   ``BadAppointment`` whose message carries no value of the payload (no patient name or e-mail).
   Nothing else may escape.
2. ``KiviCareClient.list_appointments`` against a tiny HTTP server on 127.0.0.1 answering a
   generated mix of good and bad rows: every row ends up once in ``appointments`` or ``rejected``.
3. The engine on the sandboxes: a synced appointment corrupted with ``set_raw_field``; ``sync_once``
   carries on, the event is left alone, a ``RejectedRow`` records it, other appointments still sync.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import threading
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from wp_bridge.kivicare import KiviCareClient
from wp_bridge.models import Appointment, BadAppointment, row_hash

from ..conftest import ANNA, connect

# Fixed seed (derandomize), no example database, no per-example deadline: the same run everywhere.
# No "explain" phase: it replays a failure many times over and made a found crash take minutes to report.
FUZZ = settings(deadline=None, derandomize=True, database=None, phases=[p for p in Phase if p != Phase.explain],
                max_examples=200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])
# The engine runs full syncs per example against the sandboxes: few examples (each corrupts 8 appointments),
# fixtures shared by them.
ENGINE = settings(FUZZ, max_examples=8,
                  suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture])

# Item "36" of fixture 138 and the data of fixture 139, as recorded (checked against the files below).
LIST_ROW = {
    "id": "36", "start": "2026-11-26T10:20:00", "end": "2026-11-26T10:40:00",
    "appointmentStartDateWF": "2026-11-26", "appointmentStartDate": "November 26, 2026",
    "appointmentStartTime": "10:20 am", "appointmentStartTimeWF": "10:20:00",
    "appointmentEndDate": "November 26, 2026", "appointmentEndDateWF": "2026-11-26",
    "appointmentEndTime": "10:40 am", "timezone": "UTC", "clinicId": 1,
    "clinicName": "Riverside Family Clinic", "clinicEmail": "contact@riverside-clinic.test",
    "clinicAddress": "12 Rue de la Paix", "clinic_image_url": "", "doctorId": 4, "doctorName": "Marc Dubois",
    "doctorEmail": "marc.dubois@riverside-clinic.test", "doctor_image_url": "", "patientId": 5,
    "patientName": "Louis Bernard", "patientEmail": "louis.bernard@patients.test", "patient_image_url": "",
    "description": "acceptance seed 3/3", "services": "General Consultation", "service_image_url": "",
    "charges": "\u20ac50.00", "payment": {"mode": "Manual", "status": "Pending", "amount": None, "currency": None},
    "status": 1, "createdAt": "2026-11-22 04:47:05", "encounterId": 0, "encounterStatus": "",
    "isToday": False, "isPast": False, "taxData": [], "video_consultation": False,
}
DETAIL = {
    "id": "36", "appointmentStartDate": "2026-11-26", "appointmentFormatedStartDate": "November 26, 2026",
    "appointmentStartTime": "10:20:00", "appointmentFormatedStartTime": "10:20 am",
    "appointmentEndDate": "2026-11-26", "appointmentEndTime": "10:40:00", "patientId": 5,
    "patientName": "Louis Bernard", "patientEmail": "louis.bernard@patients.test",
    "patientMobileNo": "+33610000101", "doctorId": 4, "doctorName": "Marc Dubois",
    "doctorEmail": "marc.dubois@riverside-clinic.test", "doctorMobileNo": "+33600000012", "clinicId": 1,
    "clinicName": "Riverside Family Clinic", "clinicEmail": "contact@riverside-clinic.test",
    "clinicMobileNo": "+33142000000", "description": "acceptance seed 3/3", "visitType": "2", "status": "1",
    "createdAt": "2026-11-22 04:47:05", "patient_image_url": "", "doctor_image_url": "", "clinic_image_url": "",
    "serviceName": "General Consultation", "paymentMode": "Manual", "appointmentDateTime": "2026-11-26/11:20:00",
    "encounterId": None, "encounterStatus": None, "encounterDescription": None, "subtotal": 50,
    "service_list": [{"id": "2", "title": "General Consultation", "service_image_url": "", "price": 50}],
    "serviceIds": ["2"], "taxItems": [], "video_consultation": False,
}
PATIENT_DATA = ("Louis Bernard", "louis.bernard@patients.test", "+33610000101")
FIXTURES = Path(os.environ.get("KIVICARE_FIXTURES", Path(__file__).resolve().parents[3] / "shared" / "kivicare"
                               / "fixtures"))
# Words a BadAppointment message may contain whatever the payload: its field names and fixed wording.
VOCABULARY = " ".join([*LIST_ROW, *DETAIL, "missing or malformed is not a number malformed unknown status",
                       "end is not after start times are not in UTC (timezone parameter ignored?)",
                       "list item is not an object appointment detail out of range"])
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Pacific/Kiritimati", "Etc/GMT+12",
         "Australia/Lord_Howe")


def test_embedded_shapes_are_the_recorded_fixtures():
    """The fuzzers grow payloads from these two dicts: they must stay the real wire shapes."""
    listing, detail = FIXTURES / "138-list-appointments-utc-window.json", FIXTURES / "139-get-appointment-utc.json"
    if not (listing.exists() and detail.exists()):
        pytest.skip(f"fixtures not found in {FIXTURES}")
    rows = json.loads(listing.read_text())["response"]["data"]["appointments"]
    assert next(r for r in rows if r["id"] == "36") == LIST_ROW
    assert json.loads(detail.read_text())["response"]["data"] == DETAIL


# ---- strategies -------------------------------------------------------------------------------------------

HTML = st.sampled_from([
    "<script>alert('x')</script>", "<b>Zoë</b> &amp; \"quotes\" 'single'", "<img src=x onerror=alert(1)>",
    "</td></tr><tr><td>", "&lt;&gt;&#x27;&#0;", "<!-- -->{{patient_name}}", "\u202eevil\u202c", "a\x00b",
])
HUGE = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=4), st.integers(2000, 20000))
TEXT = st.one_of(st.text(max_size=40), HTML, HUGE, st.text(st.characters(codec="utf-8"), max_size=10))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(), TEXT)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=6)

OFFSETS = st.sampled_from(["", "", "Z", "z", "+00:00", "+05:30", "-03:00", "+14:00", "-12:00", "+23:59", "-23:59",
                           "+0530", "+05", " +05:30", "UTC", "GMT+2"])


def _pad(value: datetime, pattern: str) -> str:
    """strftime without its platform quirks for years below 1000."""
    return (pattern.replace("%Y", f"{value.year:04d}").replace("%m", f"{value.month:02d}")
            .replace("%d", f"{value.day:02d}").replace("%H", f"{value.hour:02d}")
            .replace("%M", f"{value.minute:02d}").replace("%S", f"{value.second:02d}"))


DATE_TIME_PATTERNS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d/%H:%M:%S",
                      "%Y-%m-%d", "%Y%m%dT%H%M%S", "%Y-%m-%dT%H:%M:%S.123456", "%d/%m/%Y %H:%M", "%Y-%m-%dT%H"]
NEAR = datetime(2026, 11, 26, 10, 20)  # the fixture's start: most generated times land around it


@st.composite
def instants(draw) -> datetime:
    """Naive local times: mostly near the fixture's start, sometimes anywhere in years 1..9999."""
    if draw(st.booleans()):
        return NEAR + draw(st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)))
    return draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))


@st.composite
def time_texts(draw) -> str:
    return _pad(draw(instants()), draw(st.sampled_from(DATE_TIME_PATTERNS))) + draw(OFFSETS)


def odd_times():
    return st.one_of(time_texts(), time_texts(), JUNK)


STATUSES = st.one_of(st.integers(-3, 9), st.sampled_from(["0", "1", " 2 ", "3", "4", "04", "9", "booked", "Booked",
                                                          "\u00b2", "\u0661", "1.0", "", "-1"]),
                     st.sampled_from([1.0, 2.5, float("nan"), True, False]), st.lists(st.integers(0, 4), max_size=2),
                     st.dictionaries(st.sampled_from(["1", "status"]), st.integers(0, 4), max_size=1), JUNK)
IDS = st.one_of(st.integers(-5, 10 ** 25), st.from_regex(r"[0-9]{1,25}", fullmatch=True),
                st.sampled_from(["12\n", " 12", "1e3", "0x1f", "", "\u0663\u0666", "36", "-36", "36; DROP TABLE"]),
                JUNK)
NUMBERS = st.one_of(st.integers(-5, 2 ** 64), st.sampled_from(["4", "04", " 4", "4\n", "four", "", "0", "-4"]),
                    JUNK)
ZONE_FIELD = st.one_of(st.none(), st.just("UTC"), st.sampled_from(["Europe/Paris", "utc", "+05:30", "Z"]), JUNK)

LIST_FIELDS = {
    "id": IDS, "start": odd_times(), "end": odd_times(), "status": STATUSES, "doctorId": NUMBERS,
    "patientId": NUMBERS, "clinicId": NUMBERS, "timezone": ZONE_FIELD, "services": TEXT,
    "description": TEXT, "patientName": TEXT, "patientEmail": TEXT, "clinicName": TEXT, "clinicAddress": TEXT,
    "doctorName": TEXT, "payment": JUNK, "charges": JUNK,
}
DATES = st.one_of(st.builds(lambda d, p: _pad(d, p), instants(),
                            st.sampled_from(["%Y-%m-%d", "%Y/%m/%d", "%d-%m-%Y", "%Y-%m-%dT%H:%M:%S"])),
                  st.sampled_from(["November 26, 2026", "2026-02-30", "0000-00-00"]), JUNK)
TIMES = st.one_of(st.builds(lambda d, p, o: _pad(d, p) + o, instants(),
                            st.sampled_from(["%H:%M:%S", "%H:%M", "%H", "%H:%M:%S.123"]), OFFSETS),
                  st.sampled_from(["10:20 am", "25:00:00", "10:61:00", ""]), JUNK)
SERVICE_LIST = st.one_of(
    st.lists(st.fixed_dictionaries({"id": st.one_of(NUMBERS, st.just("2")), "title": st.one_of(TEXT, JUNK)},
                                    optional={"price": JUNK}), max_size=3),
    st.lists(JUNK, max_size=3), JUNK)
SERVICE_IDS = st.one_of(st.lists(st.one_of(NUMBERS, st.just("2"), st.just(" 3 ")), max_size=4), JUNK)
DETAIL_FIELDS = {
    "id": IDS, "appointmentStartDate": DATES, "appointmentStartTime": TIMES, "appointmentEndDate": DATES,
    "appointmentEndTime": TIMES, "status": STATUSES, "doctorId": NUMBERS, "patientId": NUMBERS,
    "clinicId": NUMBERS, "service_list": SERVICE_LIST, "serviceIds": SERVICE_IDS, "serviceName": TEXT,
    "description": TEXT, "patientName": TEXT, "patientEmail": TEXT, "clinicName": TEXT,
}
# Free texts: copied as they are, so they are fuzzed less often than the fields parsing depends on.
COSMETIC = {"services", "description", "patientName", "patientEmail", "clinicName", "clinicAddress", "doctorName",
            "payment", "charges", "serviceName"}


@st.composite
def mutated(draw, base: dict, fields: dict) -> dict:
    """``base`` with a few fields removed, made junk or given an odd value; plus unknown fields.

    Only a few fields change per example, so the checks that come late in parsing (status, services)
    are reached as often as the early ones (id, times)."""
    row = copy.deepcopy(base)
    weighted = [name for name in fields for _ in range(1 if name in COSMETIC else 3)]
    for name in draw(st.lists(st.sampled_from(weighted), max_size=4, unique=True)):
        odd = fields[name]
        action = draw(st.sampled_from(["missing", "junk", "odd", "odd"]))
        if action == "missing":
            row.pop(name, None)
        elif action == "junk":
            row[name] = draw(JUNK)
        elif action == "odd":
            row[name] = draw(odd)
    for key, value in draw(st.dictionaries(st.text(max_size=12), JUNK, max_size=3)).items():
        row.setdefault(key, value)
    return row


def list_items():
    return st.one_of(mutated(LIST_ROW, LIST_FIELDS), JUNK)


def details():
    return st.one_of(mutated(DETAIL, DETAIL_FIELDS), JUNK)


# ---- the properties ------------------------------------------------------------------------------------------

def _strings(value) -> list[str]:
    """Every string inside a JSON value (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (_strings(k) + _strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check_parsed(appointment: Appointment, raw: dict) -> None:
    assert isinstance(appointment, Appointment)
    for instant in (appointment.start, appointment.end):
        assert isinstance(instant, datetime) and instant.tzinfo is not None
        assert instant.utcoffset() == timedelta(0)
    assert appointment.end > appointment.start
    assert type(appointment.status) is int and 0 <= appointment.status <= 4
    assert re.fullmatch(r"[0-9]{1,20}", appointment.id)
    for number in (appointment.doctor_id, appointment.patient_id, appointment.clinic_id):
        assert type(number) is int and number > 0
    assert appointment.row_hash == row_hash(raw)
    # What the engine does next must work too: render in any doctor's zone, cache and read back.
    for zone in ZONES:
        appointment.start.astimezone(ZoneInfo(zone))
        appointment.end.astimezone(ZoneInfo(zone))
    assert Appointment.from_dict(json.loads(json.dumps(appointment.to_dict()))) == appointment


def check_rejected(exc: BadAppointment, raw) -> None:
    message = str(exc)
    assert message == f"appointment {exc.appointment_id or '?'}: {exc.problem}"
    if exc.appointment_id:
        assert re.fullmatch(r"[0-9]{1,20}", exc.appointment_id) and exc.appointment_id == str(raw["id"])
    for secret in PATIENT_DATA:
        assert secret not in message
    # No value from the payload (beyond the id) may reach the message: it goes to logs and the dashboard.
    for text in _strings(raw):
        if len(text.strip()) >= 3 and text != exc.appointment_id and text not in VOCABULARY:
            assert text not in exc.problem, f"payload text {text[:40]!r} leaked into {exc.problem!r}"


def parse(method, raw):
    """``method(raw)`` → (Appointment, None) or (None, BadAppointment); any other exception fails the test."""
    try:
        appointment = method(raw)
    except BadAppointment as exc:
        check_rejected(exc, raw)
        return None, exc
    check_parsed(appointment, raw)
    return appointment, None


@FUZZ
@given(raw=list_items())
def test_list_item_parses_sanely_or_is_rejected_without_patient_data(raw):
    parse(Appointment.from_list_item, raw)


@FUZZ
@given(raw=details())
def test_detail_parses_sanely_or_is_rejected_without_patient_data(raw):
    appointment, _ = parse(Appointment.from_detail, raw)
    if appointment is not None:
        ids = appointment.service_mapping_ids
        assert isinstance(ids, tuple) and all(type(i) is int for i in ids)


@pytest.mark.parametrize("start,end", [
    ("9999-12-31T23:00:00", "9999-12-31T23:30:00"),  # would overflow in any zone east of UTC
    ("0001-01-01T00:10:00", "0001-01-01T00:40:00"),  # ... and west of it
    ("9999-12-31T20:00:00-05:00", "9999-12-31T20:30:00-05:00"),  # past datetime.max once in UTC
    ("0001-01-01T02:00:00+05:30", "0001-01-01T03:00:00+05:30"),  # before datetime.min once in UTC
])
def test_times_no_timezone_can_show_are_rejected(start, end):
    with pytest.raises(BadAppointment) as err:
        Appointment.from_list_item({**LIST_ROW, "start": start, "end": end})
    check_rejected(err.value, {**LIST_ROW, "start": start, "end": end})


# ---- through the real client ---------------------------------------------------------------------------------

class _Listing(BaseHTTPRequestHandler):
    """``GET /wp-json/kivicare/v1/appointments`` answers ``server.body``; everything else 404."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path.rstrip("/") == "/wp-json/kivicare/v1/appointments":
            self.server.queries.append(parse_qs(url.query))
            status, body = 200, self.server.body
        else:
            status, body = 404, b'{"code":"rest_no_route","message":"No route","data":{"status":404}}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def listing_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listing)
    server.body, server.queries = b"", []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@st.composite
def good_rows(draw) -> dict:
    start = datetime(2026, 11, 22, 8, 0) + timedelta(minutes=10 * draw(st.integers(0, 4000)))
    minutes = draw(st.sampled_from([15, 20, 30, 45, 60]))
    return {**LIST_ROW, "id": str(draw(st.integers(1, 10 ** 9))), "start": start.strftime("%Y-%m-%dT%H:%M:%S"),
            "end": (start + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S"),
            "status": draw(st.integers(0, 4)), "doctorId": draw(st.sampled_from([3, 4, 8])),
            "patientName": draw(TEXT), "description": draw(TEXT)}


@FUZZ
@given(rows=st.lists(st.one_of(good_rows(), list_items()), max_size=12))
def test_client_listing_loses_and_duplicates_nothing(listing_server, rows):
    body = json.dumps({"status": True, "message": "Appointments retrieved successfully",
                       "data": {"appointments": rows, "total": len(rows)}}).encode("utf-8")
    listing_server.body = body
    sent = json.loads(body)["data"]["appointments"]  # the rows as they travel (tuples → lists, and so on)
    client = KiviCareClient(f"http://127.0.0.1:{listing_server.server_address[1]}", "admin", "abcd efgh ijkl")
    page = client.list_appointments(date(2026, 11, 21), date(2026, 12, 22))
    query = listing_server.queries[-1]
    assert query["timezone"] == ["UTC"] and query["perPage"] == ["all"]
    assert len(page.appointments) + len(page.rejected) == len(sent)
    expected = Counter()
    for raw in sent:
        appointment, _ = parse(Appointment.from_list_item, raw)
        expected[(row_hash(raw), appointment is not None)] += 1
    got = Counter([(a.row_hash, True) for a in page.appointments] + [(h, False) for _, h, _ in page.rejected])
    assert got == expected
    for appointment_id, _, problem in page.rejected:
        assert appointment_id == "" or appointment_id.isdigit()
        assert not any(secret in problem for secret in PATIENT_DATA)


# ---- the engine on the sandboxes ---------------------------------------------------------------------------------

GENERAL = 1  # kc_services id of "General Consultation"
SANDBOX_MISSING = "__missing__"


def _our_event(google, calendar_id: str, appointment_id: str) -> list[dict]:
    return [e for e in google.events(calendar_id)
            if ((e.get("extendedProperties") or {}).get("private") or {}).get("kcAppointmentId") == appointment_id
            and e.get("status") != "cancelled"]


def _stamp(instant: datetime, offset: timedelta, pattern: str) -> str:
    """``instant`` written in the UTC offset ``offset`` with that offset spelled out (same instant)."""
    local = instant.astimezone(timezone(offset))
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    suffix = "Z" if minutes == 0 and pattern.endswith("Z") else f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return _pad(local, pattern.rstrip("Z")) + suffix


NOT_A_NUMBER = st.one_of(st.none(), st.booleans(), st.integers(max_value=0), st.floats(),
                         st.sampled_from(["", "abc", "-3", "3.5", "0", "1e2", "\u0663"]),
                         st.lists(st.integers(1, 9), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                   max_size=2),
                         st.just(SANDBOX_MISSING))
NOT_A_TIME = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(st.text(max_size=3), max_size=2),
                       st.text(max_size=30).filter(lambda t: not re.search(r"\d{4}", t)), HTML,
                       st.just(SANDBOX_MISSING))


CORRUPTED_FIELDS = ("start", "end", "status", "doctorId", "patientId", "clinicId", "timezone", "id")


@st.composite
def corruptions(draw, field: str, start: datetime, end: datetime) -> object:
    """A value for ``field`` that surely makes the appointment's list row unusable."""
    offset = timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60)))
    pattern = draw(st.sampled_from(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%MZ"]))
    if field == "start":  # not a time, or at/after the end
        late = end + timedelta(minutes=draw(st.integers(0, 60 * 24 * 365)))
        value = draw(st.one_of(NOT_A_TIME, st.just(_stamp(late, offset, pattern))))
    elif field == "end":  # not a time, or at/before the start
        early = start - timedelta(minutes=draw(st.integers(0, 60 * 24 * 365)))
        value = draw(st.one_of(NOT_A_TIME, st.just(_stamp(early, offset, pattern))))
    elif field == "status":
        value = draw(st.one_of(st.integers(5, 99), st.integers(-99, -1), st.sampled_from(["booked", "", "7", "\u00b2"]),
                               st.none(), st.lists(st.integers(0, 4), min_size=1, max_size=2), st.just({"1": 1}),
                               st.just(True), st.just(SANDBOX_MISSING)))
    elif field == "timezone":  # the timezone parameter ignored: anything but UTC or absent
        value = draw(st.one_of(st.sampled_from(["Europe/Paris", "America/New_York", "utc", "+00:00"]),
                               st.integers(), st.lists(st.just("UTC"), max_size=1), st.just(True)))
    elif field == "id":
        value = draw(st.one_of(st.sampled_from(["", "abc", "-1", "1.5", "12 ", "0x1f", "\u0663"]), st.none(),
                               st.booleans(), st.integers(max_value=-1), st.lists(st.integers(1, 9), max_size=1),
                               st.just(SANDBOX_MISSING)))
    else:
        value = draw(NOT_A_NUMBER)
    return value


@pytest.fixture
def anna(runtime, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    return connection


def _mapping_id(runtime, doctor_id: int, service_id: int) -> int:
    for service in runtime.kivicare().list_doctor_services(doctor_id):
        if service.service_id == service_id and service.doctor_id == doctor_id:
            return service.id
    raise AssertionError(f"doctor {doctor_id} has no service {service_id}")


@ENGINE
@given(data=st.data())
def test_corrupted_appointments_are_skipped_and_the_rest_still_syncs(runtime, kivicare, google, anna, data):
    """Per example, one synced appointment per field, each corrupted with a drawn value, then two syncs."""
    from sandbox.kivicare import MISSING as REMOVE
    from sidecar.storage.models import RejectedRow, SyncLog

    state = runtime.__dict__.setdefault("_fuzz", {"slots": itertools.count(),
                                                  "general": _mapping_id(runtime, ANNA, GENERAL)})
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def book() -> str:
        slot = next(state["slots"])
        start = today + timedelta(days=2 + slot // 12, hours=7 + slot % 12, minutes=10)
        return kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=start,
                                           service_mapping_ids=[state["general"]])

    victims = {field: book() for field in CORRUPTED_FIELDS}
    runtime.bridge.sync_once()
    before = {field: _our_event(google, anna.calendar_id, victim) for field, victim in victims.items()}
    real = {}
    for field, victim in victims.items():
        real[field] = kivicare.get_appointment(victim)
        value = data.draw(corruptions(field, real[field]["start_utc"], real[field]["end_utc"]), label=field)
        kivicare.set_raw_field(victim, field, REMOVE if value == SANDBOX_MISSING else value)
    other = book()

    report = runtime.bridge.sync_once()  # must not raise
    runtime.bridge.sync_once()  # and again: the loop goes on, no row is logged twice

    assert report.rejected >= len(CORRUPTED_FIELDS) - 1  # a corrupted id is rejected as a row, then by its id
    for field, victim in victims.items():
        [was] = before[field]
        [now] = _our_event(google, anna.calendar_id, victim)  # still exactly one event, unchanged
        assert (now["etag"], now["start"], now["end"], now["status"]) == \
            (was["etag"], was["start"], was["end"], was["status"]), field
        assert RejectedRow.get_or_none(RejectedRow.appointment_id == victim) is not None, field
        skipped = SyncLog.select().where((SyncLog.action == "read-appointment") & (SyncLog.outcome == "skipped")
                                         & (SyncLog.appointment_id == victim)).count()
        assert skipped == 1, field
        assert kivicare.get_appointment(victim)["status"] == real[field]["status"]  # nothing cancelled
    for row in RejectedRow.select():
        assert not any(secret in row.error for secret in PATIENT_DATA)
    assert len(_our_event(google, anna.calendar_id, other)) == 1


def test_times_out_of_any_timezone_do_not_stop_the_sync(runtime, kivicare, google, anna):
    """Both ends moved to where no timezone can show them: once this raised OverflowError from every poll."""
    from sidecar.storage.models import RejectedRow

    day = datetime.now(timezone.utc).replace(hour=9, minute=10, second=0, microsecond=0) + timedelta(days=3)
    general = _mapping_id(runtime, ANNA, GENERAL)
    for n, (start, end) in enumerate([("9999-12-31T23:00:00", "9999-12-31T23:30:00"),
                                      ("0001-01-01T00:10:00", "0001-01-01T00:40:00")]):
        victim = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=day + timedelta(hours=n),
                                             service_mapping_ids=[general])
        runtime.bridge.sync_once()
        [before] = _our_event(google, anna.calendar_id, victim)
        kivicare.set_raw_field(victim, "start", start)
        kivicare.set_raw_field(victim, "end", end)
        other = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=day + timedelta(hours=n + 4),
                                            service_mapping_ids=[general])
        runtime.bridge.sync_once()
        assert RejectedRow.get_or_none(RejectedRow.appointment_id == victim) is not None
        assert _our_event(google, anna.calendar_id, victim)[0]["etag"] == before["etag"]
        assert len(_our_event(google, anna.calendar_id, other)) == 1
