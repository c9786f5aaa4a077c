"""``sidecar.storage.prepared.Prepared``: SQL built once, run with other values, rows as peewee gives them.

A real SQLite file (the push path's reads go through it; PostgreSQL is exercised by test_worker_command).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sidecar.storage import close_database, open_database
from sidecar.storage.models import Appointment as AppointmentRow, MeetMapping
from sidecar.storage.prepared import Prepared

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc)  # the night Europe's clocks go forward


@pytest.fixture
def db(tmp_path):
    open_database(f"sqlite:///{tmp_path / 'prepared.db'}")
    yield
    close_database()


def row(appointment_id: str, doctor_id: int) -> None:
    AppointmentRow.create(id=appointment_id, doctor_id=doctor_id, start_utc=NOW, end_utc=NOW + timedelta(hours=1),
                          status=1, list_hash="h", data={"id": appointment_id, "note": "é"}, present=True,
                          first_seen_at=NOW, last_seen_at=NOW)


def test_rows_are_what_peewee_itself_answers_with_each_value(db):
    for n in range(1, 4):
        row(str(n), 10 + n)
    by_id = Prepared(lambda key: AppointmentRow.select().where(AppointmentRow.id == key), str)
    for n in ("1", "2", "3"):
        ours, theirs = by_id.first(n), AppointmentRow.get(AppointmentRow.id == n)
        assert ours.__data__ == theirs.__data__  # converted as the fields do: aware UTC, JSON, booleans
        assert ours.start_utc == NOW and ours.data == {"id": n, "note": "é"} and ours.present is True
    assert by_id.first("4") is None and by_id.rows("4") == []


def test_constants_stay_and_a_value_used_twice_is_replaced_everywhere(db):
    for n, doctor in (("1", 7), ("2", 7), ("3", 8)):
        row(n, doctor)
    query = Prepared(lambda doctor, key: AppointmentRow.select().where(
        ((AppointmentRow.doctor_id == doctor) & AppointmentRow.present & (AppointmentRow.list_hash == "h"))
        | ((AppointmentRow.id == key) & (AppointmentRow.doctor_id == doctor))), int, str)
    assert sorted(r.id for r in query.rows(7, "3")) == ["1", "2"]
    assert sorted(r.id for r in query.rows(8, "3")) == ["3"]
    MeetMapping.create(appointment_id="1", doctor_id=7, connection=None, calendar_id="c", event_id="e", etag="",
                       hangout_link="", conference_status="", conference_request="", pushed_hash="",
                       state="active", created_at=NOW, updated_at=NOW)
    mapping = Prepared(lambda key, calendar: MeetMapping.select().where(
        (MeetMapping.appointment_id == key) & ((MeetMapping.calendar_id == calendar) | (MeetMapping.state == "x"))),
        str, str)
    assert [m.event_id for m in mapping.rows("1", "c")] == ["e"] and mapping.rows("1", "d") == []


def test_a_value_the_field_converts_cannot_be_prepared(db):
    prepared = Prepared(lambda when: AppointmentRow.select().where(AppointmentRow.start_utc == when), str)
    with pytest.raises(ValueError, match="cannot prepare"):
        prepared.rows(NOW)
