"""Recurring busy events (NOTES.md E #6 "Recurring exceptions"), end to end.

The sidecar creates no recurring events, but a doctor's recurring events in a busy calendar are busy
time. Every ``events.list`` asks for ``singleEvents=true``, so Google sends the instances, each an
event of its own (``<masterId>_<YYYYMMDDTHHMMSSZ>``, ``recurringEventId``, ``originalStartTime``); a
moved or cancelled instance is an exception standing in its place. The Google sandbox expands
recurrences as Google does (``sandbox/google.py``, "Recurrence"); the doctor edits with its ``user_*``
helpers, as in Google's UI ("only this event", "this and following events").
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sidecar.storage.models import BusyBlock
from tests.conftest import ANNA, connect

PARIS = ZoneInfo("Europe/Paris")
SECRET = "test-companion-secret-0123456789abcdef"
HORIZON = 30  # days: a short synced window, so the bound on expansion is visible


@pytest.fixture
def doctor(make_runtime, kivicare, google):
    """Anna connected to "Clinic appointments" (her busy calendar by default), the companion plugin on."""
    kivicare.install_companion(SECRET)

    def make(horizon=HORIZON):
        runtime = make_runtime(**{"companion.secret": SECRET, "bridge.horizon_days": horizon})
        connection = connect(runtime, google, ANNA)
        runtime.bridge.startup()
        runtime.bridge.sync_once()
        return runtime, connection
    return make


def local_day(days: int) -> date:
    return datetime.now(PARIS).date() + timedelta(days=days)


def weekly(google, calendar_id, first: date, hour: int, *, rule="RRULE:FREQ=WEEKLY", summary="Team meeting",
           minutes=60):
    """The doctor creates a weekly event in Google's UI, in Paris wall-clock time (as Google's UI writes it)."""
    start = datetime.combine(first, time(hour))
    return google.user_insert(calendar_id, {
        "summary": summary, "recurrence": [rule],
        "start": {"dateTime": start.isoformat(), "timeZone": "Europe/Paris"},
        "end": {"dateTime": (start + timedelta(minutes=minutes)).isoformat(), "timeZone": "Europe/Paris"}})


def instance_id(master_id: str, local_start: datetime) -> str:
    return f"{master_id}_{local_start.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"


def blocks(master_id: str | None = None) -> dict[str, tuple[datetime, datetime]]:
    """``{event_id: (start UTC, end UTC)}`` of the stored busy blocks (of one series when named)."""
    rows = BusyBlock.select()
    return {b.event_id: (b.start_utc, b.end_utc) for b in rows
            if master_id is None or b.event_id.startswith(master_id + "_")}


def pushed(kivicare) -> list[tuple[datetime, datetime]]:
    return sorted((b["start"], b["end"]) for b in kivicare.companion.busy_blocks(ANNA))


def local_starts(found: dict) -> list[datetime]:
    return sorted(start.astimezone(PARIS) for start, _ in found.values())


def expected_weeks(runtime, first: date, hour: int) -> list[datetime]:
    """Paris-local starts of a weekly 1-hour series from ``first`` that overlap the synced window."""
    window_start, window_end = runtime.bridge.window()
    out, day = [], first
    while True:
        start = datetime.combine(day, time(hour), PARIS)
        if start >= window_end:
            return out
        if start + timedelta(hours=1) > window_start:
            out.append(start)
        day += timedelta(weeks=1)


# ---- the sandbox expands as Google does ---------------------------------------------------------------

def test_sandbox_lists_instances_with_single_events_and_the_series_without(doctor, google):
    runtime, connection = doctor()
    cal, first = connection.calendar_id, local_day(3)
    master = weekly(google, cal, first, 9, rule="RRULE:FREQ=WEEKLY;COUNT=3")
    service = runtime.google_for(connection).service
    series = service.events().list(calendarId=cal).execute()["items"]
    assert [e["id"] for e in series if e.get("recurrence")] == [master["id"]]
    items = [e for e in service.events().list(calendarId=cal, singleEvents=True, orderBy="startTime").execute()["items"]
             if e.get("recurringEventId")]
    starts = [datetime.combine(first + timedelta(weeks=n), time(9), PARIS) for n in range(3)]
    assert [e["id"] for e in items] == [instance_id(master["id"], s) for s in starts]
    for event, start in zip(items, starts):
        assert event["recurringEventId"] == master["id"] and event["iCalUID"] == master["iCalUID"]
        assert datetime.fromisoformat(event["originalStartTime"]["dateTime"]) == start
        assert datetime.fromisoformat(event["start"]["dateTime"]) == start and "recurrence" not in event
    # One instance cancelled: omitted, or a tombstone naming its series with showDeleted.
    google.user_delete(cal, items[1]["id"])
    live = service.events().list(calendarId=cal, singleEvents=True).execute()["items"]
    assert items[1]["id"] not in {e["id"] for e in live}
    shown = {e["id"]: e for e in service.events().list(calendarId=cal, singleEvents=True,
                                                        showDeleted=True).execute()["items"]}
    assert shown[items[1]["id"]]["status"] == "cancelled"
    assert shown[items[1]["id"]]["recurringEventId"] == master["id"]
    # An instance can be read by its id; a made-up occurrence cannot.
    assert service.events().get(calendarId=cal, eventId=items[2]["id"]).execute()["recurringEventId"] == master["id"]
    from googleapiclient.errors import HttpError
    with pytest.raises(HttpError) as missing:
        service.events().get(calendarId=cal, eventId=master["id"] + "_20000101T000000Z").execute()
    assert missing.value.resp.status == 404


def test_sandbox_all_day_instances_and_bad_rules(doctor, google):
    runtime, connection = doctor()
    cal, first = connection.calendar_id, local_day(2)
    master = google.user_insert(cal, {"summary": "On call", "recurrence": ["RRULE:FREQ=DAILY;COUNT=2"],
                                      "start": {"date": first.isoformat()},
                                      "end": {"date": (first + timedelta(days=1)).isoformat()}})
    service = runtime.google_for(connection).service
    items = [e for e in service.events().list(calendarId=cal, singleEvents=True).execute()["items"]
             if e.get("recurringEventId")]
    assert sorted(e["id"] for e in items) == [f"{master['id']}_{first + timedelta(days=n):%Y%m%d}" for n in range(2)]
    assert sorted(e["start"]["date"] for e in items) == [(first + timedelta(days=n)).isoformat() for n in range(2)]
    # A rule RFC 5545 refuses (local UNTIL with a timed start) is a clear 400, nothing stored.
    before = len(google.events(cal))
    with pytest.raises(Exception) as bad:
        weekly(google, cal, first, 9, rule="RRULE:FREQ=WEEKLY;UNTIL=20990101T000000")
    assert "Invalid recurrence rule" in str(bad.value)
    assert len(google.events(cal)) == before


# ---- the engine, end to end -------------------------------------------------------------------------

def test_weekly_busy_event_blocks_each_instance_inside_the_horizon_and_none_beyond(doctor, google, kivicare):
    runtime, connection = doctor()
    first = local_day(2)
    master = weekly(google, connection.calendar_id, first, 9)  # no end: bounded by the synced window only
    runtime.bridge.sync_once()
    found = blocks(master["id"])
    expected = expected_weeks(runtime, first, 9)
    assert len(expected) >= 4
    assert local_starts(found) == expected
    assert set(found) == {instance_id(master["id"], s) for s in expected}
    assert all(end - start == timedelta(hours=1) for start, end in found.values())
    assert max(start for start, _ in found.values()) < runtime.bridge.window()[1]
    assert pushed(kivicare) == sorted(found.values())  # KiviCare's slot generator sees each instance


def test_moving_one_instance_moves_exactly_that_block(doctor, google, kivicare):
    runtime, connection = doctor()
    first = local_day(2)
    master = weekly(google, connection.calendar_id, first, 9)
    runtime.bridge.sync_once()
    before = blocks(master["id"])
    second = instance_id(master["id"], datetime.combine(first + timedelta(weeks=1), time(9), PARIS))
    moved_start = datetime.combine(first + timedelta(weeks=1, days=1), time(15), PARIS)
    google.user_patch(connection.calendar_id, second, {
        "start": {"dateTime": moved_start.replace(tzinfo=None).isoformat(), "timeZone": "Europe/Paris"},
        "end": {"dateTime": (moved_start + timedelta(hours=1)).replace(tzinfo=None).isoformat(),
                "timeZone": "Europe/Paris"}})
    runtime.bridge.sync_once()
    after = blocks(master["id"])
    assert set(after) == set(before)  # the moved instance keeps its id: one block, moved, none added
    assert after[second] == (moved_start.astimezone(timezone.utc), (moved_start + timedelta(hours=1)).astimezone(timezone.utc))
    assert {k: v for k, v in after.items() if k != second} == {k: v for k, v in before.items() if k != second}
    assert pushed(kivicare) == sorted(after.values())


def test_cancelling_one_instance_removes_exactly_that_block(doctor, google, kivicare):
    runtime, connection = doctor()
    first = local_day(2)
    master = weekly(google, connection.calendar_id, first, 9)
    runtime.bridge.sync_once()
    before = blocks(master["id"])
    third = instance_id(master["id"], datetime.combine(first + timedelta(weeks=2), time(9), PARIS))
    google.user_delete(connection.calendar_id, third)
    runtime.bridge.sync_once()
    after = blocks(master["id"])
    assert after == {k: v for k, v in before.items() if k != third}
    assert pushed(kivicare) == sorted(after.values())


def test_this_and_following_leaves_the_old_series_before_and_the_new_one_after(doctor, google, kivicare):
    runtime, connection = doctor()
    cal, first = connection.calendar_id, local_day(2)
    master = weekly(google, cal, first, 9)
    runtime.bridge.sync_once()
    # Google's "this and following events" from the third week: the series ends the day before
    # (UNTIL in UTC, RFC 5545) and a new series starts at a new time.
    split = first + timedelta(weeks=2)
    until = datetime.combine(split, time(0), PARIS).astimezone(timezone.utc) - timedelta(seconds=1)
    google.user_patch(cal, master["id"], {"recurrence": [f"RRULE:FREQ=WEEKLY;UNTIL={until:%Y%m%dT%H%M%SZ}"]})
    following = weekly(google, cal, split, 14, summary="Team meeting (new time)")
    runtime.bridge.sync_once()
    old, new = blocks(master["id"]), blocks(following["id"])
    assert local_starts(old) == [datetime.combine(first + timedelta(weeks=n), time(9), PARIS) for n in range(2)]
    assert local_starts(new) == expected_weeks(runtime, split, 14)
    assert set(blocks()) == set(old) | set(new)  # nothing left of the old series past its UNTIL
    assert pushed(kivicare) == sorted([*old.values(), *new.values()])


def test_no_duplicates_across_full_and_incremental_syncs(doctor, google, kivicare):
    runtime, connection = doctor()
    cal, first = connection.calendar_id, local_day(2)
    master = weekly(google, cal, first, 9)
    runtime.bridge.sync_once()  # incremental after the first full list
    settled = blocks()
    kept = pushed(kivicare)
    google.user_insert(cal, {"summary": "Dentist", "start": {"dateTime": f"{local_day(4)}T11:00:00",
                                                             "timeZone": "Europe/Paris"},
                             "end": {"dateTime": f"{local_day(4)}T12:00:00", "timeZone": "Europe/Paris"}})
    google.user_patch(cal, master["id"], {"summary": "Team meeting (room 2)"})  # the whole series changes
    runtime.bridge.sync_once()
    runtime.bridge.sync_once()
    assert set(blocks(master["id"])) == set(settled)
    assert len(blocks()) == len(settled) + 1
    google.invalidate_sync_tokens()  # Google forgets our place: a full list of the window again (410)
    runtime.bridge.sync_once()
    assert len(blocks()) == len(settled) + 1 and set(blocks(master["id"])) == set(settled)
    assert len(pushed(kivicare)) == len(kept) + 1
    assert len(set(pushed(kivicare))) == len(pushed(kivicare))


def next_autumn_change(after: date) -> date:
    """The last Sunday of October (Europe/Paris leaves summer time) after ``after``."""
    year = after.year if after < date(after.year, 10, 20) else after.year + 1
    day = date(year, 10, 31)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def test_a_weekly_event_across_the_autumn_dst_change_keeps_its_paris_wall_clock_time(doctor, google, kivicare):
    change = next_autumn_change(local_day(16))
    runtime, connection = doctor(horizon=(change - date.today()).days + 30)
    first = change - timedelta(days=12)  # a Tuesday, two weeks of summer time then two of winter time
    master = weekly(google, connection.calendar_id, first, 9, rule="RRULE:FREQ=WEEKLY;COUNT=4")
    runtime.bridge.sync_once()
    found = blocks(master["id"])
    starts = sorted(start for start, _ in found.values())
    assert [s.astimezone(PARIS).time() for s in starts] == [time(9)] * 4
    assert [s.hour for s in starts] == [7, 7, 8, 8]  # UTC+2 before the change, UTC+1 after
    assert set(found) == {instance_id(master["id"], datetime.combine(first + timedelta(weeks=n), time(9), PARIS))
                          for n in range(4)}
    assert pushed(kivicare) == sorted(found.values())


def test_a_series_tombstone_alone_also_removes_its_instances_blocks(doctor, google, kivicare):
    """Should a pull name only the cancelled series (not each instance), its blocks still go; a
    look-alike id (the series id plus more characters) keeps its block."""
    from sidecar.calendars.base import CalendarEvent
    runtime, connection = doctor()
    master = weekly(google, connection.calendar_id, local_day(2), 9)
    runtime.bridge.sync_once()
    assert blocks(master["id"])
    start = datetime.now(timezone.utc) + timedelta(days=3)
    look_alike = CalendarEvent(id=master["id"] + "x1", status="confirmed", start=start, end=start + timedelta(hours=1))
    runtime.bridge.inbound._busy_blocks(connection, connection.calendar_id, [look_alike], full=False)
    runtime.bridge.inbound._busy_blocks(connection, connection.calendar_id,
                                        [CalendarEvent(id=master["id"], status="cancelled")], full=False)
    assert blocks(master["id"]) == {}
    assert look_alike.id in blocks()
