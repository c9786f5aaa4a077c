"""``sidecar.storage.prepared``: SQL built once, run with other values; ``Prepared`` reads rows as peewee gives
them, ``PreparedWrite`` writes what peewee itself would.

A real SQLite file (the push path goes through both; PostgreSQL is exercised by test_worker_command).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from peewee import IntegrityError

from sidecar.storage import close_database, open_database
from sidecar.storage.models import Appointment as AppointmentRow, MeetMapping
from sidecar.storage.prepared import Prepared, PreparedWrite

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


# ---- PreparedWrite ---------------------------------------------------------------------------------------------

COLUMNS = (AppointmentRow.id, AppointmentRow.doctor_id, AppointmentRow.start_utc, AppointmentRow.end_utc,
           AppointmentRow.status, AppointmentRow.list_hash, AppointmentRow.data, AppointmentRow.present,
           AppointmentRow.first_seen_at, AppointmentRow.last_seen_at)


def values(appointment_id: str, doctor_id: int, when: datetime) -> dict:
    return dict(id=appointment_id, doctor_id=doctor_id, start_utc=when, end_utc=when + timedelta(hours=1), status=1,
                list_hash="h", data={"note": "é", "n": [1, 2]}, present=True, first_seen_at=when,
                last_seen_at=when)


def test_a_prepared_insert_stores_what_peewee_itself_stores_converted_by_the_fields(db):
    insert = PreparedWrite(lambda *v: AppointmentRow.insert(dict(zip(COLUMNS, v))), *COLUMNS)
    for n, when in ((1, NOW), (2, NOW.astimezone(timezone(timedelta(hours=2))))):  # any zone: stored as UTC
        assert insert.run(**values(f"p{n}", n, when)) == 1
        AppointmentRow.insert(values(f"q{n}", n, when)).execute()
        ours, theirs = (AppointmentRow.get(AppointmentRow.id == f"{k}{n}") for k in "pq")
        assert {**ours.__data__, "id": ""} == {**theirs.__data__, "id": ""}
        assert ours.start_utc == NOW and ours.data["note"] == "é" and ours.present is True
    with pytest.raises(IntegrityError):  # the database's errors, as peewee raises them
        insert.run(**values("p1", 1, NOW))
    with pytest.raises(ValueError, match="naive"):  # and the fields' own refusals
        insert.run(**{**values("p3", 1, NOW), "start_utc": NOW.replace(tzinfo=None)})


def test_a_prepared_upsert_and_update_write_each_values_of_their_own_and_count_rows(db):
    row("1", 7)
    row("2", 7)
    later = NOW + timedelta(minutes=5)
    touch = PreparedWrite(lambda key, seen: AppointmentRow.update({AppointmentRow.last_seen_at: seen}).where(
        (AppointmentRow.id == key) & (AppointmentRow.last_seen_at <= seen) & (AppointmentRow.status == 1)),
        AppointmentRow.id, AppointmentRow.last_seen_at)
    assert touch.run("1", later) == 1 and touch.run("1", NOW) == 0 and touch.run("nope", later) == 0
    assert AppointmentRow.get(AppointmentRow.id == "1").last_seen_at == later
    assert AppointmentRow.get(AppointmentRow.id == "2").last_seen_at == NOW
    upsert = PreparedWrite(lambda key, hash_: AppointmentRow.insert(
        {**values("x", 9, NOW), AppointmentRow.id: key, AppointmentRow.list_hash: hash_}).on_conflict(
        conflict_target=[AppointmentRow.id], update={AppointmentRow.list_hash: hash_}),
        AppointmentRow.id, AppointmentRow.list_hash)
    upsert.run("2", "new")
    upsert.run("3", "fresh")
    assert {r.id: r.list_hash for r in AppointmentRow.select()} == {"1": "h", "2": "new", "3": "fresh"}
    assert AppointmentRow.get(AppointmentRow.id == "3").doctor_id == 9  # the constants written as built


def test_a_callable_default_or_a_missing_value_is_refused_before_anything_is_written(db):
    # first_seen_at and last_seen_at default to utcnow(): built once, they would be frozen at the first build.
    partial = PreparedWrite(lambda key: AppointmentRow.insert(
        {AppointmentRow.id: key, AppointmentRow.doctor_id: 1, AppointmentRow.start_utc: NOW,
         AppointmentRow.end_utc: NOW, AppointmentRow.status: 1, AppointmentRow.list_hash: "",
         AppointmentRow.data: {}}), AppointmentRow.id)
    with pytest.raises(ValueError, match="callable default"):
        partial.run("1")
    insert = PreparedWrite(lambda *v: AppointmentRow.insert(dict(zip(COLUMNS, v))), *COLUMNS)
    with pytest.raises(TypeError, match="status"):
        insert.run(**{k: v for k, v in values("1", 1, NOW).items() if k != "status"})
    with pytest.raises(TypeError, match="colour"):
        insert.run(**values("1", 1, NOW), colour="red")
    with pytest.raises(TypeError, match="10 values"):
        insert.run("1", 1)
    assert AppointmentRow.select().count() == 0
