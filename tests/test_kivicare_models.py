"""Parsing KiviCare's wire shapes with the recorded fixtures (../shared/kivicare/fixtures)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from wp_bridge.models import Appointment, BadAppointment

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "kivicare" / "fixtures"


def fixture(name):
    return json.loads((FIXTURES / name).read_text())["response"]


def test_list_item_from_the_utc_window_fixture():
    rows = fixture("138-list-appointments-utc-window.json")["data"]["appointments"]
    parsed = [Appointment.from_list_item(r) for r in rows]
    first = parsed[0]
    assert first.id == "36" and first.doctor_id == 4 and first.status == 1
    assert first.start == datetime(2026, 11, 26, 10, 20, tzinfo=timezone.utc)
    assert first.service_names == ("General Consultation",)


def test_detail_gives_service_mapping_ids():
    detail = Appointment.from_detail(fixture("139-get-appointment-utc.json")["data"])
    assert detail.id == "36" and detail.service_mapping_ids == (2,) and detail.status == 1
    assert detail.end == datetime(2026, 11, 26, 10, 40, tzinfo=timezone.utc)


@pytest.mark.parametrize("field,value", [
    ("id", None), ("id", "1; DROP"), ("start", "garbage"), ("start", None), ("end", "2026-11-26T09:00:00"),
    ("status", 9), ("status", "booked"), ("doctorId", None), ("doctorId", True), ("timezone", "Europe/Paris"),
])
def test_malformed_rows_raise_without_patient_data(field, value):
    row = dict(fixture("138-list-appointments-utc-window.json")["data"]["appointments"][0])
    row[field] = value
    with pytest.raises(BadAppointment) as err:
        Appointment.from_list_item(row)
    assert "Louis" not in str(err.value) and "louis" not in str(err.value)


def test_round_trip_through_the_cache():
    row = fixture("138-list-appointments-utc-window.json")["data"]["appointments"][0]
    appointment = Appointment.from_list_item(row).with_services((2,), (1,))
    assert Appointment.from_dict(json.loads(json.dumps(appointment.to_dict()))) == appointment
