"""Two-way sync (issue 4): the doctor's moves and deletions in Google, conflicts, busy blocks.

The doctor's own edits are made with the Google sandbox's ``user_*`` helpers (as Google's UI would);
the companion plugin is the KiviCare sandbox's faithful emulation of PROTOCOL.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sidecar.storage.models import Appointment as AppointmentRow, BusyBlock, Conflict, MeetMapping, SyncLog

from wp_bridge import preview
from wp_bridge.kivicare import KiviCareRequestError

from .conftest import ANNA, connect
from .test_sync_engine import GENERAL, at, instant, mapping_id, our_events, writes

SECRET = "test-companion-secret-0123456789abcdef"


@pytest.fixture
def with_plugin(kivicare):
    kivicare.install_companion(SECRET)
    return kivicare.companion


def setup(make_runtime, google, kivicare, *, plugin: bool, **settings):
    if plugin:
        settings["companion.secret"] = SECRET
    runtime = make_runtime(**settings)
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    return runtime, connection


def book(runtime, kivicare, start, minutes_service=GENERAL, patient=5):
    return kivicare.create_appointment(doctor_id=ANNA, patient_id=patient, start_utc=start,
                                       service_mapping_ids=[mapping_id(runtime, ANNA, minutes_service)])


def event_of(google, connection, appointment_id, live=True):
    found = our_events(google, connection.calendar_id, appointment_id, live=live)
    return found[0] if found else None


def move_in_google(google, connection, event, new_start, minutes=None):
    old_start, old_end = instant(event["start"]["dateTime"]), instant(event["end"]["dateTime"])
    new_end = new_start + (timedelta(minutes=minutes) if minutes else old_end - old_start)
    google.user_patch(connection.calendar_id, event["id"], {
        "start": {"dateTime": new_start.isoformat(), "timeZone": event["start"].get("timeZone", "UTC")},
        "end": {"dateTime": new_end.isoformat(), "timeZone": event["end"].get("timeZone", "UTC")}})


def test_deletion_in_google_cancels_the_appointment_once(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    appointment_id = book(runtime, kivicare, at(3, 8, 10))
    runtime.bridge.sync_once()
    google.user_delete(connection.calendar_id, event_of(google, connection, appointment_id)["id"])
    runtime.bridge.sync_once()
    assert kivicare.get_appointment(appointment_id)["status"] == 0
    assert SyncLog.select().where((SyncLog.action == "cancel") & (SyncLog.direction == "google→kivicare")).count() == 1
    google.reset_requests()
    kivicare.reset_requests()
    runtime.bridge.sync_once()  # no loop back: nothing written anywhere
    assert writes(google) == []
    assert not [r for r in kivicare.requests if r["method"] != "GET"]
    assert event_of(google, connection, appointment_id) is None


def test_move_in_google_reschedules_through_the_plugin_keeping_the_length(make_runtime, kivicare, google, with_plugin):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=True)
    appointment_id = book(runtime, kivicare, at(3, 9, 10))
    runtime.bridge.sync_once()
    event = event_of(google, connection, appointment_id)
    move_in_google(google, connection, event, at(4, 13, 10), minutes=50)  # the doctor also stretched it
    runtime.bridge.sync_once()
    row = AppointmentRow.get_by_id(appointment_id)
    assert row.start_utc == at(4, 13, 10) and row.end_utc == at(4, 13, 40)  # 30-minute service kept
    event = event_of(google, connection, appointment_id)
    assert instant(event["start"]["dateTime"]) == at(4, 13, 10)
    assert instant(event["end"]["dateTime"]) == at(4, 13, 40)  # KiviCare's length put back
    listed = runtime.kivicare().get_appointment(appointment_id)
    assert listed.start == at(4, 13, 10) and listed.end == at(4, 13, 40)


def test_a_plain_move_in_google_is_not_written_back_to_google(make_runtime, kivicare, google, with_plugin):
    """Issue 7, scenario d: the event already holds what KiviCare now says (same length, no time in the
    text): the sidecar records it as written instead of patching it again."""
    runtime, connection = setup(make_runtime, google, kivicare, plugin=True)
    appointment_id = book(runtime, kivicare, at(3, 9, 10))
    runtime.bridge.sync_once()
    move_in_google(google, connection, event_of(google, connection, appointment_id), at(4, 13, 10))
    google.reset_requests()
    runtime.bridge.sync_once()
    assert AppointmentRow.get_by_id(appointment_id).start_utc == at(4, 13, 10)
    assert writes(google) == []
    runtime.bridge.sync_once()  # and nothing later either
    assert writes(google) == []


def test_a_move_is_written_back_when_the_text_names_the_time(make_runtime, kivicare, google, with_plugin):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=True,
                                **{"sync.description_template": "At {{appointment_time}}"})
    appointment_id = book(runtime, kivicare, at(3, 9, 10))
    runtime.bridge.sync_once()
    before = event_of(google, connection, appointment_id)["description"]
    move_in_google(google, connection, event_of(google, connection, appointment_id), at(4, 13, 10))
    runtime.bridge.sync_once()
    assert event_of(google, connection, appointment_id)["description"] != before


def test_move_without_the_plugin_is_a_conflict_for_the_admin(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    appointment_id = book(runtime, kivicare, at(3, 10, 10))
    runtime.bridge.sync_once()
    move_in_google(google, connection, event_of(google, connection, appointment_id), at(5, 10, 10))
    runtime.bridge.sync_once()
    conflict = Conflict.get(Conflict.appointment_id == appointment_id)
    assert conflict.kind == "move_without_plugin" and conflict.state == "open"
    assert instant(conflict.google["start"]) == at(5, 10, 10) and instant(conflict.kivicare["start"]) == at(3, 10, 10)
    runtime.bridge.sync_once()  # held: nothing overwrites the doctor's version meanwhile
    assert instant(event_of(google, connection, appointment_id)["start"]["dateTime"]) == at(5, 10, 10)
    runtime.bridge.inbound.resolve(conflict.id, "kivicare", by="admin")
    runtime.bridge.sync_once()
    assert instant(event_of(google, connection, appointment_id)["start"]["dateTime"]) == at(3, 10, 10)
    assert Conflict.get_by_id(conflict.id).state == "resolved"


def test_title_edit_is_put_back_and_other_fields_are_left_alone(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    appointment_id = book(runtime, kivicare, at(3, 11, 10))
    runtime.bridge.sync_once()
    event = event_of(google, connection, appointment_id)
    google.user_patch(connection.calendar_id, event["id"], {"summary": "edited by the doctor", "colorId": "3"})
    runtime.bridge.sync_once()
    event = event_of(google, connection, appointment_id)
    assert event["summary"] == "General Consultation"
    assert event["colorId"] == "3"  # the doctor's own colour is theirs


@pytest.mark.parametrize("direction", ["kivicare_to_google"])
def test_kivicare_to_google_only_reverts_a_deletion(make_runtime, kivicare, google, direction):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False, **{"sync.direction": direction})
    appointment_id = book(runtime, kivicare, at(3, 12, 10))
    runtime.bridge.sync_once()
    google.user_delete(connection.calendar_id, event_of(google, connection, appointment_id)["id"])
    runtime.bridge.sync_once()
    assert kivicare.get_appointment(appointment_id)["status"] == 1
    assert event_of(google, connection, appointment_id) is not None  # back in Google


@pytest.mark.parametrize("rule,expected_status,event_back", [
    ("kivicare", 1, True), ("google", 0, False), ("recent", 0, False)])
def test_both_sides_changed_follows_the_conflict_rule(make_runtime, kivicare, google, rule, expected_status,
                                                      event_back):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False, **{"sync.conflict_rule": rule})
    appointment_id = book(runtime, kivicare, at(4, 8, 10))
    runtime.bridge.sync_once()
    event = event_of(google, connection, appointment_id)
    kivicare.reschedule(appointment_id, at(4, 9, 10))  # KiviCare changes first (seen by a poll)...
    runtime.bridge.poll()
    google.advance(5)  # ...then the doctor deletes the event in Google, later
    google.user_delete(connection.calendar_id, event["id"])
    runtime.bridge.sync_once()
    assert kivicare.get_appointment(appointment_id)["status"] == expected_status
    back = event_of(google, connection, appointment_id)
    assert (back is not None) == event_back
    if event_back:
        assert instant(back["start"]["dateTime"]) == at(4, 9, 10)  # KiviCare's new time


def test_manual_rule_shows_both_versions_and_resolving_applies_the_choice(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False, **{"sync.conflict_rule": "manual"})
    appointment_id = book(runtime, kivicare, at(4, 10, 10))
    runtime.bridge.sync_once()
    event = event_of(google, connection, appointment_id)
    kivicare.reschedule(appointment_id, at(4, 11, 10))
    runtime.bridge.poll()
    google.user_delete(connection.calendar_id, event["id"])
    runtime.bridge.sync_once()
    conflict = Conflict.get((Conflict.appointment_id == appointment_id) & (Conflict.state == "open"))
    assert conflict.google["deleted"] is True and instant(conflict.kivicare["start"]) == at(4, 11, 10)
    assert kivicare.get_appointment(appointment_id)["status"] == 1  # nothing applied yet
    runtime.bridge.inbound.resolve(conflict.id, "google", by="admin")
    runtime.bridge.sync_once()
    assert kivicare.get_appointment(appointment_id)["status"] == 0


def test_busy_events_block_and_free_declined_working_location_and_own_events_do_not(
        make_runtime, kivicare, google, with_plugin):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=True)
    appointment_id = book(runtime, kivicare, at(5, 8, 10))
    runtime.bridge.sync_once()
    cal = connection.calendar_id
    day = at(5, 0, 0)

    def timed(hour, **extra):
        return {"summary": extra.pop("summary", "Dentist"), "start": {"dateTime": (day + timedelta(hours=hour)).isoformat()},
                "end": {"dateTime": (day + timedelta(hours=hour + 1)).isoformat()}, **extra}

    busy = google.user_insert(cal, timed(13))
    google.user_insert(cal, timed(14, transparency="transparent"))
    google.user_insert(cal, timed(15, attendees=[{"email": "anna.schmidt@riverside-clinic.test", "self": True,
                                                  "responseStatus": "declined"}]))
    google.user_insert(cal, timed(16, eventType="workingLocation", summary="Office",
                                  workingLocationProperties={"type": "officeLocation"}))
    private = google.user_insert(cal, timed(17, visibility="private", summary="Therapy"))
    ooo = google.user_insert(cal, timed(18, eventType="outOfOffice", summary="Out of office"))
    all_day = google.user_insert(cal, {"summary": "Conference", "start": {"date": (day + timedelta(days=1)).date().isoformat()},
                                       "end": {"date": (day + timedelta(days=2)).date().isoformat()},
                                       "transparency": "opaque"})
    runtime.bridge.sync_once()
    blocks = {b.event_id: b for b in BusyBlock.select()}
    assert set(blocks) == {busy["id"], private["id"], ooo["id"], all_day["id"]}
    assert blocks[private["id"]].name == "Busy"
    paris = ZoneInfo("Europe/Paris")
    assert blocks[all_day["id"]].start_utc == datetime.combine((day + timedelta(days=1)).date(), datetime.min.time(),
                                                               paris).astimezone(timezone.utc)
    pushed = with_plugin.busy_blocks(ANNA)
    assert len(pushed) == 4
    # KiviCare now refuses a booking over the busy hour (the plugin feeds kc_external_busy_slots_single).
    local = (day + timedelta(hours=13)).astimezone(paris)
    with pytest.raises(KiviCareRequestError) as refused:
        runtime.kivicare().request("POST", "/appointments", body={
            "appointmentStartDate": local.strftime("%Y-%m-%d"), "appointmentStartTime": local.strftime("%H:%M"),
            "doctorId": ANNA, "patientId": 6, "serviceId": [mapping_id(runtime, ANNA, GENERAL)], "status": 1})
    assert refused.value.status == 409
    assert not any(b.event_id == event_of(google, connection, appointment_id)["id"] for b in BusyBlock.select())
    # The doctor frees the hour: the block goes.
    google.user_patch(cal, busy["id"], {"transparency": "transparent"})
    runtime.bridge.sync_once()
    assert busy["id"] not in {b.event_id for b in BusyBlock.select()}
    assert len(with_plugin.busy_blocks(ANNA)) == 3


def test_expired_sync_token_recovers_without_duplicates_or_deletions(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    runtime.bridge.sync_once()
    before = sorted(e["id"] for e in our_events(google, connection.calendar_id))
    google.invalidate_sync_tokens()
    google.reset_requests()
    runtime.bridge.sync_once()
    assert sorted(e["id"] for e in our_events(google, connection.calendar_id)) == before
    assert not [r for r in writes(google) if r["method"] in ("POST", "DELETE")]
    assert not MeetMapping.select().where(MeetMapping.state != "active").exists()


def test_mass_cancel_guard_holds_a_calendar_emptied_in_google(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    ids = [book(runtime, kivicare, at(6, 8 + n, 10)) for n in range(4)]
    runtime.bridge.sync_once()
    for event in our_events(google, connection.calendar_id):
        if instant(event["start"]["dateTime"]) > datetime.now(timezone.utc):
            google.user_delete(connection.calendar_id, event["id"])
    runtime.bridge.sync_once()
    assert all(kivicare.get_appointment(i)["status"] == 1 for i in ids)
    conflict = Conflict.get(Conflict.kind == "mass_cancel")
    assert set(ids) <= set(conflict.kivicare["appointments"])


def last_sunday(year: int, month: int) -> datetime:
    day = datetime(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def first_sunday(year: int, month: int) -> datetime:
    day = datetime(year, month, 1)
    return day + timedelta(days=(6 - day.weekday()) % 7)


@pytest.mark.parametrize("doctor,zone,switch", [
    (ANNA, "Europe/Paris", lambda y: last_sunday(y, 10)),  # summer time ends on the last Sunday of October
    (8, "America/New_York", lambda y: first_sunday(y, 11)),  # and on the first Sunday of November in New York
])
def test_dst_wall_clock_kept_both_ways(make_runtime, kivicare, google, with_plugin, doctor, zone, switch):
    runtime = make_runtime(**{"bridge.horizon_days": 400, "companion.secret": SECRET})
    connection = connect(runtime, google, doctor)
    runtime.bridge.startup()
    local = ZoneInfo(zone)
    now = datetime.now(timezone.utc)
    year = now.year if switch(now.year) - timedelta(days=3) > now.replace(tzinfo=None) else now.year + 1
    sunday = switch(year)
    before = datetime.combine((sunday - timedelta(days=2)).date(), datetime.min.time().replace(hour=10), local)
    if (before.astimezone(timezone.utc) - now).days > 395:
        pytest.skip("beyond the horizon")
    appointment_id = kivicare.create_appointment(doctor_id=doctor, patient_id=5, start_utc=before.astimezone(timezone.utc),
                                                 service_mapping_ids=[mapping_id(runtime, doctor, GENERAL)])
    runtime.bridge.sync_once()
    event = event_of(google, connection, appointment_id)
    assert event["start"]["timeZone"] == zone
    assert instant(event["start"]["dateTime"]).astimezone(local).hour == 10  # KiviCare → Google
    # The doctor moves it one week later in Google, at the same wall-clock time (after the switch).
    after = before + timedelta(days=7)  # aware arithmetic in the zone: same wall-clock time
    move_in_google(google, connection, event, after.astimezone(timezone.utc))
    runtime.bridge.sync_once()
    moved = runtime.kivicare().get_appointment(appointment_id)  # Google → KiviCare
    assert moved.start == after.astimezone(timezone.utc)
    assert moved.start.astimezone(local).hour == 10
    assert moved.start - before.astimezone(timezone.utc) == timedelta(days=7, hours=1)  # an hour more in UTC


def test_switching_the_destination_calendar_moves_upcoming_events(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    appointment_id = book(runtime, kivicare, at(3, 13, 10))
    runtime.bridge.sync_once()
    old_calendar = connection.calendar_id
    from sidecar.connections import choose_calendar
    connection = choose_calendar(runtime, connection, "anna.schmidt@riverside-clinic.test")  # primary
    runtime.bridge.sync_once()
    assert our_events(google, old_calendar, appointment_id) == []
    assert len(our_events(google, connection.calendar_id, appointment_id)) == 1


def test_reset_sync_rebuilds_the_mapping_from_private_properties_without_duplicates(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    runtime.bridge.sync_once()
    before = sorted(e["id"] for e in our_events(google, connection.calendar_id))
    MeetMapping.delete().execute()  # a lost database, say
    assert runtime.bridge.reset_sync(connection) == len(before)
    preview.confirm(runtime, connection, by="admin")  # a reset waits for its preview to be confirmed
    runtime.bridge.sync_once()
    assert sorted(e["id"] for e in our_events(google, connection.calendar_id)) == before
    runtime.bridge.reset_sync(connection, remove_events=True)
    preview.confirm(runtime, connection, by="admin")
    runtime.bridge.sync_once()
    assert len(our_events(google, connection.calendar_id)) == len(before)  # created again, once each


def test_disconnect_changes_on_both_sides_then_reconnect_converges(make_runtime, kivicare, google):
    from sidecar.connections import disconnect
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    moved = book(runtime, kivicare, at(4, 14, 10))
    deleted_in_google = book(runtime, kivicare, at(4, 15, 10))
    runtime.bridge.sync_once()
    disconnect(runtime, connection)
    kivicare.reschedule(moved, at(5, 14, 10))
    new = book(runtime, kivicare, at(5, 15, 10))
    google.user_delete(connection.calendar_id, event_of(google, connection, deleted_in_google)["id"])
    runtime.bridge.sync_once()  # disconnected: nothing happens in Google
    assert event_of(google, connection, new) is None
    connection = connect(runtime, google, ANNA)
    runtime.bridge.sync_once()
    assert instant(event_of(google, connection, moved)["start"]["dateTime"]) == at(5, 14, 10)
    assert event_of(google, connection, new) is not None
    assert kivicare.get_appointment(deleted_in_google)["status"] == 0
    ids = [e["extendedProperties"]["private"]["kcAppointmentId"] for e in our_events(google, connection.calendar_id)]
    assert len(ids) == len(set(ids))


def test_a_doctor_removed_from_kivicare_stops_syncing_and_keeps_the_events(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    runtime.bridge.sync_once()
    before = len(our_events(google, connection.calendar_id))
    kivicare.delete_doctor(ANNA)
    runtime.bridge.sync_once()
    from sidecar.storage.models import Connection
    assert Connection.get_by_id(connection.id).state == "removed"
    assert len(our_events(google, connection.calendar_id)) == before


def test_a_calendar_shared_free_busy_only_blocks_time_without_titles(make_runtime, kivicare, google, with_plugin):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=True)
    marc = "marc.dubois@riverside-clinic.test"
    google.share_calendar(marc, "anna.schmidt@riverside-clinic.test", role="freeBusyReader")
    connection.busy_calendars = [connection.calendar_id, marc]
    connection.save()
    meeting = google.user_insert(marc, {"summary": "Board meeting", "start": {"dateTime": at(7, 9, 0).isoformat()},
                                        "end": {"dateTime": at(7, 11, 0).isoformat()}})
    runtime.bridge.sync_once()
    blocks = [b for b in BusyBlock.select() if b.calendar_id == marc]
    assert len(blocks) == 1 and blocks[0].start_utc == at(7, 9, 0) and blocks[0].end_utc == at(7, 11, 0)
    assert blocks[0].name == "Busy" and meeting["summary"] not in blocks[0].name
    assert any(b["start"] == at(7, 9, 0) for b in with_plugin.busy_blocks(ANNA))


def test_mass_delete_guard_keeps_events_when_kivicare_loses_many_appointments_at_once(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    ids = [book(runtime, kivicare, at(8, 8 + n, 10)) for n in range(4)]
    runtime.bridge.sync_once()
    upcoming = len([e for e in our_events(google, connection.calendar_id)
                    if instant(e["start"]["dateTime"]) > datetime.now(timezone.utc)])
    gone = [e["extendedProperties"]["private"]["kcAppointmentId"] for e in our_events(google, connection.calendar_id)
            if instant(e["start"]["dateTime"]) > datetime.now(timezone.utc)]
    for appointment_id in gone:
        kivicare.delete_appointment(appointment_id)
    runtime.bridge.sync_once()
    assert len([e for e in our_events(google, connection.calendar_id)
                if instant(e["start"]["dateTime"]) > datetime.now(timezone.utc)]) == upcoming  # nothing deleted
    conflict = Conflict.get(Conflict.kind == "mass_delete")
    assert set(ids) <= set(conflict.kivicare["appointments"])
    runtime.bridge.sync_once()
    assert Conflict.select().where(Conflict.kind == "mass_delete").count() == 1  # asked once, not every poll
    runtime.bridge.inbound.resolve(conflict.id, "kivicare", by="admin")  # the admin confirms the deletions
    runtime.bridge.sync_once()
    assert all(our_events(google, connection.calendar_id, i) == [] for i in ids)


def test_a_few_deletions_are_not_held(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    ids = [book(runtime, kivicare, at(8, 8 + n, 10)) for n in range(2)]
    runtime.bridge.sync_once()
    for appointment_id in ids:
        kivicare.delete_appointment(appointment_id)
    runtime.bridge.sync_once()
    assert all(our_events(google, connection.calendar_id, i) == [] for i in ids)
    assert not Conflict.select().exists()


def test_a_deletion_just_before_the_sync_token_expires_is_still_seen(make_runtime, kivicare, google):
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    appointment_id = book(runtime, kivicare, at(3, 15, 10))
    runtime.bridge.sync_once()
    runtime.bridge.sync_once()
    google.user_delete(connection.calendar_id, event_of(google, connection, appointment_id)["id"])
    google.invalidate_sync_tokens()
    runtime.bridge.sync_once()
    assert kivicare.get_appointment(appointment_id)["status"] == 0


def test_many_changes_come_in_several_pages_full_and_incremental_and_none_is_lost(make_runtime, kivicare, google):
    """NOTES E #13: ``events.list`` is followed page by page (250 a page here, as on Google) until the
    ``nextSyncToken``, for the full list after a 410 as for incremental pulls."""
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    runtime.bridge.sync_once()
    cal, day = connection.calendar_id, at(10, 0, 0)
    made = [google.user_insert(cal, {"summary": "Block",
                                     "start": {"dateTime": (day + timedelta(minutes=5 * n)).isoformat()},
                                     "end": {"dateTime": (day + timedelta(minutes=5 * n + 5)).isoformat()}})
            for n in range(300)]

    def lists(incremental: bool) -> list[dict]:
        return [r["query"] for r in google.requests if r["method"] == "GET" and r["path"].endswith(f"{cal}/events")
                and ("syncToken" in r["query"]) == incremental]

    def pulled(incremental: bool) -> int:
        return len(lists(incremental))

    google.reset_requests()
    runtime.bridge.sync_once()
    assert pulled(incremental=True) == 2  # 300 changes: two pages
    # The full list's parameters repeated (Google's sync guide), so recurring events stay expanded.
    assert all(q.get("singleEvents") == "true" and q.get("showDeleted") == "true" for q in lists(incremental=True))
    assert {e["id"] for e in made} <= {b.event_id for b in BusyBlock.select()}

    for event in made[:260]:
        google.user_delete(cal, event["id"])
    google.invalidate_sync_tokens()
    google.reset_requests()
    runtime.bridge.sync_once()
    assert pulled(incremental=False) >= 2  # the full list of the window after the 410, also in pages
    assert {b.event_id for b in BusyBlock.select() if b.event_id in {e["id"] for e in made}} == \
        {e["id"] for e in made[260:]}


def test_free_busy_over_more_than_90_days_is_asked_in_chunks(make_runtime, kivicare, google):
    """NOTES E #3: ``freebusy.query`` refuses ranges over about 90 days ("time range is too long"); the
    synced window is longer, so it is asked in chunks and busy time at both ends is seen."""
    runtime, connection = setup(make_runtime, google, kivicare, plugin=False)
    marc = "marc.dubois@riverside-clinic.test"
    google.share_calendar(marc, "anna.schmidt@riverside-clinic.test", role="freeBusyReader")
    for when in (at(2, 9, 0), at(89, 9, 0)):
        google.user_insert(marc, {"summary": "Board meeting", "start": {"dateTime": when.isoformat()},
                                  "end": {"dateTime": (when + timedelta(hours=1)).isoformat()}})
    start, end = runtime.bridge.window()
    assert end - start > timedelta(days=90)
    google.reset_requests()
    spans = runtime.google_for(connection).free_busy([marc], start, end)[marc]
    assert (at(2, 9, 0), at(2, 10, 0)) in spans and (at(89, 9, 0), at(89, 10, 0)) in spans
    assert len([r for r in google.requests if r["path"].endswith("/freeBusy")]) == 2
