"""Fuzzing Google events through the real parsing and pull code (issue 6, item 5).

hypothesis with ``deadline=None`` and ``derandomize=True`` (a fixed seed: the same examples in every run):

1. ``parse_event`` on tombstones (only id + status), all-day events, timed events with odd offsets and
   ``timeZone``s, recurring instances (``recurringEventId``, ``originalStartTime``), missing start/end,
   unknown fields, attendees of odd shapes and junk ``extendedProperties``: it never raises and gives
   aware UTC times or None. ``_state`` (our own writes read back) likewise.
2. ``Inbound.blocks_time`` and ``Inbound._busy_blocks`` never raise for any parsed event.
3. A pull through the real client against the Google sandbox, with generated foreign events (those the
   sandbox accepts) in the destination calendar: it never raises, never cancels or deletes an
   appointment or our events, and stores exactly the busy blocks the rules give.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from sidecar.calendars.base import CalendarEvent, EventState
from sidecar.calendars.google import PRIVATE_KEY, _state, parse_event

from ..conftest import ANNA, EMAILS, connect

# No "explain" phase: it replays a failure many times over and made a found crash take minutes to report.
FUZZ = settings(deadline=None, derandomize=True, database=None, phases=[p for p in Phase if p != Phase.explain],
                max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])
# Fixtures (sandboxes, runtime, a connected doctor) are shared by the examples of one test on purpose.
SHARED = settings(FUZZ, max_examples=200,
                  suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture])
SANDBOX = settings(SHARED, max_examples=25)

SITE = "http://127.0.0.1:8000"  # what kcSite holds for this site's events (the sandbox's base URL varies)

# ---- strategies -------------------------------------------------------------------------------------------

HTML = st.sampled_from(["<b>Lunch</b>", "<script>alert(1)</script>", "&amp;&lt;", "Zoë 🦷 \u202eevil", "a\x00b"])
TEXT = st.one_of(st.text(max_size=30), HTML,
                 st.builds(lambda piece, n: piece * n, st.text(min_size=1, max_size=3), st.integers(1000, 10000)))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 64), 2 ** 64), st.floats(), TEXT)
JUNK = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=6)

TIME_ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
              "Pacific/Chatham", "Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns"]
BAD_ZONES = ["Nope/Zone", "../etc/passwd", "", "UTC+2", "/abs", "Europe/Paris\x00", "Europe", "z" * 300]
ZONE = st.one_of(st.sampled_from(TIME_ZONES), st.sampled_from(BAD_ZONES), JUNK)
OFFSETS = ["Z", "+00:00", "+05:30", "+05:45", "-03:30", "+13:45", "+14:00", "-12:00", "-00:00", "+23:59", ""]
NOW = datetime(2026, 11, 26, 10, 20)


@st.composite
def local_times(draw) -> datetime:
    """Naive times: mostly around now, sometimes anywhere in years 1..9999 (the edges overflow easily)."""
    if draw(st.booleans()):
        return NOW + draw(st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(days=400)))
    return draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))


def _rfc3339(value: datetime, offset: str, fraction: bool = False) -> str:
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}{'.123' if fraction else ''}{offset}")


DATE_TIMES = st.one_of(
    st.builds(_rfc3339, local_times(), st.sampled_from(OFFSETS), st.booleans()),
    st.sampled_from(["2026-11-26", "2026-11-26T10:20", "26/11/2026 10:20", "2026-02-30T10:00:00Z", "now", ""]),
    JUNK)
DATES = st.one_of(st.builds(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}", local_times()),
                  st.sampled_from(["2026-11-26T10:20:00+05:30", "20261126", "2026/11/26", "2026-13-01", ""]), JUNK)
WHEN = st.one_of(
    st.fixed_dictionaries({"dateTime": DATE_TIMES}, optional={"timeZone": ZONE}),
    st.fixed_dictionaries({"date": DATES}, optional={"timeZone": ZONE}),
    st.fixed_dictionaries({}, optional={"date": DATES, "dateTime": DATE_TIMES, "timeZone": ZONE}),
    JUNK)
ATTENDEE = st.one_of(
    st.fixed_dictionaries({"email": st.sampled_from(list(EMAILS.values()) + ["x@example.test"])},
                          optional={"self": st.one_of(st.booleans(), JUNK),
                                    "responseStatus": st.one_of(st.sampled_from(
                                        ["declined", "accepted", "tentative", "needsAction"]), JUNK),
                                    "organizer": JUNK, "resource": st.booleans()}),
    JUNK)
PRIVATE = st.one_of(
    st.fixed_dictionaries({}, optional={PRIVATE_KEY: st.one_of(st.sampled_from(["36", "1", ""]), JUNK),
                                        "kcSite": st.one_of(st.just(SITE), JUNK)}),
    JUNK)
EXTENDED = st.one_of(st.fixed_dictionaries({}, optional={"private": PRIVATE, "shared": JUNK}), JUNK)
EVENT_IDS = st.one_of(st.from_regex(r"[a-v0-9]{5,40}", fullmatch=True), JUNK)


@st.composite
def google_events(draw) -> dict:
    """Tombstones, timed and all-day events, recurring instances, and junk, as ``events.list`` items."""
    kind = draw(st.sampled_from(["tombstone", "event", "event", "event", "instance"]))
    if kind == "tombstone":
        event = {"id": draw(EVENT_IDS), "status": "cancelled"}
        event.update(draw(st.fixed_dictionaries({}, optional={"etag": JUNK, "updated": DATE_TIMES,
                                                              "kind": st.just("calendar#event")})))
        return event
    event = draw(st.fixed_dictionaries(
        {"id": EVENT_IDS},
        optional={"status": st.one_of(st.sampled_from(["confirmed", "tentative", "cancelled", "weird"]), JUNK),
                  "start": WHEN, "end": WHEN, "etag": JUNK, "updated": DATE_TIMES, "summary": TEXT,
                  "description": TEXT, "location": TEXT,
                  "transparency": st.one_of(st.sampled_from(["opaque", "transparent"]), JUNK),
                  "visibility": st.one_of(st.sampled_from(["default", "public", "private", "confidential"]), JUNK),
                  "eventType": st.one_of(st.sampled_from(["default", "outOfOffice", "focusTime", "workingLocation",
                                                          "birthday", "fromGmail", "newKind"]), JUNK),
                  "attendees": st.one_of(st.lists(ATTENDEE, max_size=4), JUNK),
                  "extendedProperties": EXTENDED, "conferenceData": JUNK, "hangoutLink": JUNK,
                  "recurrence": st.one_of(st.just(["RRULE:FREQ=WEEKLY;COUNT=3"]), JUNK),
                  "reminders": JUNK, "colorId": JUNK, "organizer": JUNK, "creator": JUNK}))
    if kind == "instance":
        event["recurringEventId"] = draw(st.one_of(EVENT_IDS, JUNK))
        event["originalStartTime"] = draw(WHEN)
    for key, value in draw(st.dictionaries(st.text(max_size=12), JUNK, max_size=3)).items():
        event.setdefault(key, value)  # fields Google may add one day
    return event


def check_instant(value) -> None:
    assert value is None or (isinstance(value, datetime) and value.tzinfo is not None
                             and value.utcoffset() == timedelta(0))


def check_event(parsed: CalendarEvent) -> None:
    assert isinstance(parsed, CalendarEvent)
    for instant in (parsed.start, parsed.end, parsed.updated):
        check_instant(instant)
    for text in (parsed.id, parsed.status, parsed.etag, parsed.event_type, parsed.summary, parsed.description,
                 parsed.location, parsed.appointment_id, parsed.site):
        assert isinstance(text, str)
    for flag in (parsed.all_day, parsed.busy, parsed.declined, parsed.private):
        assert isinstance(flag, bool)


# ---- the parser -------------------------------------------------------------------------------------------

@FUZZ
@given(item=google_events(), zone=ZONE)
def test_parse_event_never_raises_and_gives_utc_or_none(item, zone):
    parsed = parse_event(item, zone)
    check_event(parsed)
    if item.get("status") == "cancelled" and set(item) <= {"id", "status", "etag", "updated", "kind"}:
        assert parsed.cancelled and parsed.start is None and parsed.end is None  # a bare tombstone


@pytest.mark.parametrize("item", [
    {"id": "a1", "start": "2026-11-26", "end": ["x"]},  # start/end not objects
    {"id": "a2", "start": {"dateTime": 5}, "end": {"dateTime": ["2026-11-26T10:00:00Z"]}},
    {"id": "a3", "start": {"dateTime": "9999-12-31T23:00:00-05:00"}, "end": {"dateTime": "0001-01-01T00:00:00+05:00"}},
    {"id": "a4", "start": {"date": "2026-11-26", "timeZone": "Nope/Zone"}, "end": {"date": 20261127}},
    {"id": "a5", "start": {"date": "2026-11-26", "timeZone": "../etc"}, "end": {"date": "0001-01-01",
                                                                             "timeZone": "Asia/Tokyo"}},
    {"id": "a6", "extendedProperties": {"private": "kcAppointmentId=36"}, "attendees": 5, "updated": 17},
    {"id": "a7", "extendedProperties": ["private"], "attendees": {"self": True}},
])
def test_shapes_that_once_crashed_parse_event(item):
    parsed = parse_event(item, "Europe/Paris")
    check_event(parsed)
    assert parsed.appointment_id == "" and parsed.declined is False


def test_all_day_date_in_an_unknown_zone_falls_back_to_the_calendars():
    parsed = parse_event({"id": "b1", "start": {"date": "2026-11-26", "timeZone": "Nope/Zone"},
                          "end": {"date": "2026-11-27"}}, "Europe/Paris")
    assert parsed.all_day and parsed.start == datetime(2026, 11, 25, 23, 0, tzinfo=timezone.utc)
    assert parse_event({"id": "b2", "start": {"date": "2026-11-26"}}, "Bad/Zone").start == \
        datetime(2026, 11, 26, tzinfo=timezone.utc)


CONFERENCE = st.one_of(
    st.fixed_dictionaries({}, optional={
        "createRequest": st.one_of(st.fixed_dictionaries({}, optional={"status": st.one_of(
            st.fixed_dictionaries({}, optional={"statusCode": st.one_of(
                st.sampled_from(["pending", "success", "failure"]), JUNK)}), JUNK)}), JUNK),
        "entryPoints": st.one_of(st.lists(st.one_of(st.fixed_dictionaries({}, optional={
            "entryPointType": st.one_of(st.sampled_from(["video", "phone", "more"]), JUNK),
            "uri": st.one_of(st.just("https://meet.google.com/abc-defg-hij"), JUNK)}), JUNK), max_size=3), JUNK)}),
    JUNK)


@FUZZ
@given(item=st.fixed_dictionaries({}, optional={
    "id": EVENT_IDS, "etag": JUNK, "status": JUNK, "updated": DATE_TIMES, "hangoutLink": st.one_of(TEXT, JUNK),
    "conferenceData": CONFERENCE}))
def test_state_of_a_written_event_never_raises(item):
    state = _state(item)
    assert isinstance(state, EventState)
    check_instant(state.updated)
    for text in (state.event_id, state.etag, state.status, state.hangout_link, state.conference_status):
        assert isinstance(text, str)


# ---- busy blocks from any parsed event --------------------------------------------------------------------------

@pytest.fixture
def anna(runtime, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    return connection


@SHARED
@given(item=google_events(), zone=ZONE, ours=st.booleans())
def test_busy_rules_never_raise_for_any_parsed_event(runtime, anna, item, zone, ours):
    from sidecar.storage.models import Appointment as AppointmentRow, BusyBlock

    parsed = parse_event(item, zone)
    if ours and parsed.appointment_id:  # claims to be one of this site's events
        parsed = replace(parsed, site=runtime.bridge.site)
    inbound = runtime.bridge.inbound
    blocks = inbound.blocks_time(anna, parsed)
    assert isinstance(blocks, bool)
    if blocks:
        assert parsed.start is not None and parsed.end is not None and parsed.end > parsed.start
        assert not parsed.cancelled and not parsed.declined
    if parsed.appointment_id and parsed.site == runtime.bridge.site:
        row = AppointmentRow.get_or_none(AppointmentRow.id == parsed.appointment_id)
        if row is None or row.doctor_id == ANNA:
            assert not blocks  # KiviCare knows its own appointments
    inbound._busy_blocks(anna, "fuzz-calendar", [parsed], full=False)
    stored = BusyBlock.get_or_none((BusyBlock.calendar_id == "fuzz-calendar") & (BusyBlock.event_id == parsed.id))
    assert (stored is not None) == blocks
    if stored is not None:
        assert (stored.start_utc, stored.end_utc) == (parsed.start, parsed.end)
        assert stored.name == ("Busy" if parsed.private else (parsed.summary or "Busy")[:255])


# ---- a pull against the Google sandbox -----------------------------------------------------------------------------

@st.composite
def accepted_shapes(draw, appointment_ids: list[str], site: str) -> dict:
    """Foreign events of the kinds Google really stores (the sandbox validates them as the API does)."""
    day = draw(st.integers(-2, 60))
    start = (datetime.now(timezone.utc) + timedelta(days=day)).replace(
        hour=draw(st.integers(0, 23)), minute=draw(st.sampled_from([0, 7, 15, 30, 45])), second=0, microsecond=0)
    length = timedelta(minutes=draw(st.sampled_from([5, 30, 60, 24 * 60, 3 * 24 * 60])))
    event: dict = {"summary": draw(st.one_of(st.text(max_size=20), HTML))}
    if draw(st.integers(0, 4)) == 0:  # all day
        first = start.date()
        event["start"] = {"date": first.isoformat()}
        event["end"] = {"date": (first + timedelta(days=draw(st.integers(1, 3)))).isoformat()}
    else:
        zone = draw(st.sampled_from(TIME_ZONES))
        offset = timedelta(minutes=draw(st.sampled_from([0, 330, 345, -210, 825, 840, -720])))

        def stamp(instant: datetime) -> str:
            local = instant.astimezone(timezone(offset))
            text = local.isoformat(timespec="seconds")
            return text.replace("+00:00", "Z") if offset == timedelta(0) and draw(st.booleans()) else text

        spelling = draw(st.sampled_from(["offset", "offset and zone", "local time and zone"]))
        if spelling == "local time and zone":  # no offset: the instant comes from timeZone
            def stamp(instant: datetime) -> str:  # noqa: F811 - this spelling's stamp
                return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None).isoformat(timespec="seconds")
        event["start"] = {"dateTime": stamp(start)}
        event["end"] = {"dateTime": stamp(start + length)}
        if spelling != "offset":
            event["start"]["timeZone"] = event["end"]["timeZone"] = zone
    extra = draw(st.fixed_dictionaries({}, optional={
        "status": st.sampled_from(["confirmed", "tentative", "cancelled"]),
        "transparency": st.sampled_from(["opaque", "transparent"]),
        "visibility": st.sampled_from(["default", "public", "private", "confidential"]),
        "eventType": st.sampled_from(["default", "outOfOffice", "focusTime"]),
        "description": st.one_of(st.text(max_size=50), HTML),
        "location": st.text(max_size=20),
        "attendees": st.lists(st.fixed_dictionaries({"email": st.sampled_from(list(EMAILS.values()) + [
            "someone@example.test"])}, optional={"responseStatus": st.sampled_from(
                ["declined", "accepted", "tentative", "needsAction"])}), max_size=3,
            unique_by=lambda a: a["email"]),
        # Look-alikes of our own events: this site's private properties on someone else's event.
        "extendedProperties": st.fixed_dictionaries({"private": st.fixed_dictionaries(
            {}, optional={PRIVATE_KEY: st.sampled_from(appointment_ids + ["0", "junk"]),
                          "kcSite": st.sampled_from([site, "https://other.example", ""])})}),
        "recurrence": st.just(["RRULE:FREQ=DAILY;COUNT=3"]),
        "originalStartTime": st.just(event["start"]),
        "colorId": st.sampled_from(["1", "11"]),
    }))
    event.update(extra)
    return event


@SANDBOX
@given(data=st.data())
def test_pull_with_foreign_events_never_cancels_or_deletes(runtime, kivicare, google, anna, data):
    from sandbox.google import ApiError
    from sidecar.storage.models import BusyBlock, Conflict, MeetMapping

    calendar = anna.calendar_id
    site = runtime.bridge.site
    zone = next(c["timeZone"] for c in google.calendars(EMAILS[ANNA]) if c["id"] == calendar)
    ours = {m.event_id: m.appointment_id for m in MeetMapping.select().where(MeetMapping.state == "active")}
    assert ours
    statuses = {i: kivicare.get_appointment(i)["status"] for i in set(ours.values())}
    before = {e["id"]: e for e in google.events(calendar) if e["id"] in ours}

    inserted, refused = [], 0
    for _ in range(data.draw(st.integers(1, 6), label="events")):
        body = data.draw(accepted_shapes(sorted(statuses), site), label="event")
        try:
            inserted.append(google.user_insert(calendar, body)["id"])
        except ApiError:
            refused += 1  # a shape the API refuses never reaches the sidecar; the parser tests cover it
    for event_id in inserted:
        action = data.draw(st.sampled_from(["keep", "keep", "delete", "move"]), label="then")
        if action == "delete":
            google.user_delete(calendar, event_id)
        elif action == "move":
            try:
                google.user_patch(calendar, event_id, {"summary": "moved", "transparency": "opaque"})
            except ApiError:
                pass

    kivicare.reset_requests()
    assert runtime.bridge.pull_all() == 1  # never raises
    runtime.bridge.sync_once()

    # Nothing cancelled or deleted: KiviCare got no write, our events are as they were.
    writes = [r for r in kivicare.requests if r["method"] in ("PUT", "POST", "DELETE")
              and "/appointments" in r["path"]]
    assert writes == []
    assert {i: kivicare.get_appointment(i)["status"] for i in statuses} == statuses
    after = {e["id"]: e for e in google.events(calendar) if e["id"] in ours}
    for event_id, was in before.items():
        assert after[event_id]["status"] == was["status"] and after[event_id]["etag"] == was["etag"]
    assert MeetMapping.select().where(MeetMapping.state != "active").count() == 0
    assert Conflict.select().count() == 0
    # Nothing lost: exactly the calendar's events that block time are busy blocks.
    # Recurring events block time instance by instance, within the synced window (singleEvents=true).
    start, end = runtime.bridge.window()
    expected = {e["id"] for e in google.events(calendar, include_cancelled=False, single_events=True,
                                               time_min=start, time_max=end)
                if runtime.bridge.inbound.blocks_time(anna, parse_event(e, zone))}
    stored = {b.event_id for b in BusyBlock.select().where(BusyBlock.calendar_id == calendar)}
    assert stored == expected
    event(f"sandbox refused {min(refused, 1)}+ shapes")
    event(f"busy blocks {'none' if not stored else 'some'}")
