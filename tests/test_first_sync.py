"""The first-sync hold (issue 5): a new connection, or one whose sync was reset, writes nothing until
someone confirms the preview; the preview's counts are what the sync then does."""

from __future__ import annotations

from datetime import timedelta

from sidecar.config import Config
from sidecar.runtime import Runtime
from sidecar.storage.models import Appointment as AppointmentRow, BusyBlock, Connection, Doctor, MeetMapping, SchemaVersion, utcnow
from wp_bridge import preview

from .conftest import ANNA, EMAILS, connect, sandbox_settings
from .test_sync_engine import GENERAL, at, mapping_id, our_events

EXTENDED = 4


def event_writes(google) -> list[dict]:
    return [r for r in google.requests if r["method"] in ("POST", "PATCH", "PUT", "DELETE")
            and "/events" in r["path"] and "/watch" not in r["path"]]


def event_reads(google, calendar_id: str) -> list[dict]:
    return [r for r in google.requests if r["method"] == "GET" and calendar_id.replace("@", "%40") in r["path"]
            and r["path"].endswith("/events")]


def expected_events(runtime) -> set[str]:
    """Anna's appointments in the window with an event status, straight from KiviCare."""
    listed = runtime.kivicare().list_appointments(*[d.date() for d in runtime.bridge.window()], doctor_id=ANNA)
    return {a.id for a in listed.appointments if a.status in (1, 2, 3, 4)}


def busy_day(google, calendar_id: str) -> None:
    """Two busy events and a free one in the doctor's calendar (the free one blocks nothing)."""
    day = at(5, 0, 0)
    for hour, transparency in ((13, "opaque"), (15, "opaque"), (16, "transparent")):
        google.user_insert(calendar_id, {"summary": "Private", "transparency": transparency,
                                         "start": {"dateTime": (day + timedelta(hours=hour)).isoformat()},
                                         "end": {"dateTime": (day + timedelta(hours=hour + 1)).isoformat()}})


def test_a_new_connection_writes_nothing_until_its_preview_is_confirmed(runtime, kivicare, google):
    connection = connect(runtime, google, ANNA, confirm=False)
    assert connection.awaiting_confirmation and preview.display_state(connection) == preview.HELD
    assert [c.id for c in preview.held_connections()] == [connection.id]
    runtime.bridge.startup()
    busy_day(google, connection.calendar_id)
    google.reset_requests()
    booked = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 8, 10),
                                         service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])
    runtime.bridge.sync_once()
    runtime.bridge.on_hint(booked)  # a hint from the companion plugin is held too
    runtime.bridge.run_due_jobs()
    assert event_writes(google) == [] and event_reads(google, connection.calendar_id) == []
    assert not BusyBlock.select().exists() and Connection.get_by_id(connection.id).last_sync_at is None

    view = preview.compute(runtime, connection)
    expected = expected_events(runtime)
    assert booked in expected
    assert (view.create, view.update, view.remove, view.busy_blocks) == (len(expected), 0, 0, 2)
    assert view.calendar_name == "Clinic appointments" and view.busy_calendars == ("Clinic appointments",)
    assert event_writes(google) == []  # the preview only reads

    assert preview.confirm(runtime, connection, by="admin (admin)") is True
    assert preview.confirm(runtime, connection, by="someone else") is False  # once
    stored = Connection.get_by_id(connection.id)
    assert stored.sync_confirmed_by == "admin (admin)" and not stored.awaiting_confirmation
    assert runtime.poll_requested.is_set()
    runtime.bridge.sync_once()
    created = {e["extendedProperties"]["private"]["kcAppointmentId"] for e in our_events(google, connection.calendar_id)}
    assert created == expected and len(created) == view.create
    assert BusyBlock.select().count() == view.busy_blocks


def test_the_preview_applies_the_filter_and_skips_cancelled_appointments(make_runtime, kivicare, google):
    runtime = make_runtime(**{"sync.services": [EXTENDED]})
    connection = connect(runtime, google, ANNA, confirm=False)
    runtime.bridge.startup()
    extended = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=at(3, 8, 10),
                                           service_mapping_ids=[mapping_id(runtime, ANNA, EXTENDED)])
    cancelled = kivicare.create_appointment(doctor_id=ANNA, patient_id=6, start_utc=at(4, 8, 10), status=0,
                                            service_mapping_ids=[mapping_id(runtime, ANNA, EXTENDED)])
    view = preview.compute(runtime, connection)  # the cache is empty: the preview polls KiviCare first
    in_filter = {a for a in expected_events(runtime)  # service ids as the poll learnt them
                 if EXTENDED in (AppointmentRow.get_by_id(a).data["service_ids"] or ())}
    assert extended in in_filter and cancelled not in in_filter
    assert view.create == len(in_filter) and view.outside_filter == len(expected_events(runtime)) - len(in_filter)
    assert view.filters == {"sync.services": [EXTENDED], "sync.clinics": []}
    preview.confirm(runtime, connection)
    runtime.bridge.sync_once()
    assert len(our_events(google, connection.calendar_id)) == view.create


def test_a_reset_holds_the_sync_again_and_the_preview_counts_the_events_kept(runtime, kivicare, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    events = our_events(google, connection.calendar_id)
    assert events
    assert runtime.bridge.reset_sync(connection) == len(events)
    held = Connection.get_by_id(connection.id)
    assert held.awaiting_confirmation and held.sync_confirmed_by == ""
    google.reset_requests()
    runtime.bridge.sync_once()
    assert event_writes(google) == []
    view = preview.compute(runtime, held)
    assert (view.create, view.update) == (0, len(events))  # linked again, brought up to date on confirm
    preview.confirm(runtime, held, by="admin")
    runtime.bridge.sync_once()
    assert sorted(e["id"] for e in our_events(google, connection.calendar_id)) == sorted(e["id"] for e in events)
    assert MeetMapping.select().where(MeetMapping.pushed_hash != "").count() == len(events)


def test_confirming_needs_a_calendar(runtime, google):
    connection = connect(runtime, google, ANNA, confirm=False)
    Connection.update(state="disconnected").where(Connection.id == connection.id).execute()
    try:
        preview.confirm(runtime, Connection.get_by_id(connection.id))
    except ValueError as exc:
        assert "no calendar to sync to" in str(exc)
    else:
        raise AssertionError("a disconnected connection was confirmed")


def test_migration_6_keeps_existing_connections_syncing(kivicare, google, tmp_path):
    settings = sandbox_settings(kivicare, google, tmp_path)
    runtime = Runtime(Config(None, environ={}, overrides=settings))
    Doctor.create(id=ANNA, name="Anna Schmidt", email=EMAILS[ANNA])
    Doctor.create(id=4, name="Marc Dubois")
    Connection.create(doctor=ANNA, calendar_id="anna-cal", state="active")
    Connection.create(doctor=4, state="pending")  # no calendar yet: its first sync is still to come
    # The database as version 5 left it: no confirmation columns, migration 6 not applied.
    db = runtime.db
    db.execute_sql("ALTER TABLE calendar_connections DROP COLUMN sync_confirmed_at")
    db.execute_sql("ALTER TABLE calendar_connections DROP COLUMN sync_confirmed_by")
    SchemaVersion.delete().where(SchemaVersion.version == 6).execute()

    Runtime(Config(None, environ={}, overrides=settings))  # the next start migrates
    assert SchemaVersion.get_or_none(SchemaVersion.version == 6) is not None
    anna, marc = Connection.get(Connection.doctor == ANNA), Connection.get(Connection.doctor == 4)
    assert not anna.awaiting_confirmation and anna.sync_confirmed_by == "migration"
    assert anna.sync_confirmed_at > utcnow() - timedelta(minutes=1)
    assert marc.awaiting_confirmation
