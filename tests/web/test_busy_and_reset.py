"""The calendars that block booking time (on the calendar choice and on the doctor's page) and an
admin's "Reset sync", against the Google and KiviCare sandboxes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sidecar.storage.models import BusyBlock, Connection, MeetMapping, SyncLog
from sidecar.web import create_admin, create_app
from tests.conftest import ANNA, EMAILS, MARC, connect
from tests.test_sync_engine import GENERAL, at, mapping_id, our_events
from wp_bridge import preview

from .conftest import ADMIN, PASSWORD, admin, csrf, text_of
from .test_sso import ROLES, SECRET, signed_in

LEGEND = "Calendars that block booking time"


@pytest.fixture
def site(make_runtime, kivicare, google):
    """Anna connected to "Clinic appointments" (sandbox OAuth), the companion plugin installed, an admin."""
    kivicare.install_companion(SECRET)
    # No telemedicine services: no Meet links to wait for, so every sync_once is quick.
    runtime = make_runtime(**{"companion.secret": SECRET, "sync.telemedicine_services": []})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    app = create_app(runtime)
    create_admin(runtime, ADMIN, PASSWORD)
    app.rt, app.connection = runtime, connection
    return app


def checked_busy(html: str) -> set[str]:
    import re
    from html import unescape
    return {unescape(m) for m in re.findall(r'name="busy_calendar" value="([^"]+)"\s*checked', html)}


def fresh(connection) -> Connection:
    return Connection.get_by_id(connection.id)


# ---- busy calendars ------------------------------------------------------------------------------

def test_calendar_choice_offers_busy_calendars_with_the_destination_ticked(site):
    client = admin(site)
    clinic, primary = site.connection.calendar_id, EMAILS[ANNA]
    page = client.get(f"/connect/{ANNA}/calendar")
    assert page.status_code == 200
    text = text_of(page.text)
    assert LEGEND in text and "the new one blocks time instead" in text
    assert checked_busy(page.text) == {clinic}
    form = {"csrf_token": csrf(page.text), "calendar_id": clinic, "busy_form": "1", "busy_default": clinic}
    site.rt.poll_requested.clear()
    answer = client.post(f"/connect/{ANNA}/calendar", data={**form, "busy_calendar": [clinic, primary]})
    assert answer.status_code == 303
    assert fresh(site.connection).busy_calendars == [clinic, primary]
    assert site.rt.poll_requested.is_set()
    assert checked_busy(client.get(f"/connect/{ANNA}/calendar").text) == {clinic, primary}
    # Exactly the destination is the default again (None: it follows a change of destination).
    client.post(f"/connect/{ANNA}/calendar", data={**form, "busy_calendar": [clinic]})
    assert fresh(site.connection).busy_calendars is None
    # Nothing ticked: no calendar blocks time.
    client.post(f"/connect/{ANNA}/calendar", data=form)
    assert fresh(site.connection).busy_calendars == []


def test_an_untouched_default_follows_a_new_destination(site):
    client = admin(site)
    clinic, primary = site.connection.calendar_id, EMAILS[ANNA]
    page = client.get(f"/connect/{ANNA}/calendar")
    client.post(f"/connect/{ANNA}/calendar", data={"csrf_token": csrf(page.text), "calendar_id": primary,
                                                   "busy_form": "1", "busy_default": clinic,
                                                   "busy_calendar": [clinic]})
    conn = fresh(site.connection)
    assert conn.calendar_id == primary and conn.busy_calendars is None
    assert site.rt.bridge.inbound.busy_calendars(conn) == [primary]


def test_busy_choice_refuses_foreign_calendars_and_forms_without_it_change_nothing(site):
    client = admin(site)
    clinic = site.connection.calendar_id
    page = client.get(f"/connect/{ANNA}/calendar")
    wrong = client.post(f"/connect/{ANNA}/calendar", data={
        "csrf_token": csrf(page.text), "calendar_id": clinic, "busy_form": "1",
        "busy_calendar": [clinic, "someone-else@example.com"]})
    assert wrong.status_code == 400 and "from the list" in text_of(wrong.text)
    assert fresh(site.connection).busy_calendars is None
    Connection.update(busy_calendars=[EMAILS[ANNA]]).where(Connection.id == site.connection.id).execute()
    client.post(f"/connect/{ANNA}/calendar", data={"csrf_token": csrf(page.text), "calendar_id": clinic})
    assert fresh(site.connection).busy_calendars == [EMAILS[ANNA]]  # the older form had no busy fieldset


def test_doctor_chooses_own_busy_calendars_on_their_page_and_the_busy_time_blocks(site, google):
    primary = EMAILS[ANNA]
    day = at(4, 0, 0)
    busy = google.user_insert(primary, {"summary": "Dentist", "start": {"dateTime": (day + timedelta(hours=13)).isoformat()},
                                        "end": {"dateTime": (day + timedelta(hours=14)).isoformat()}})
    doctor, _ = signed_in(site, ROLES["doctor"], uid=ANNA)
    page = doctor.get("/me")
    assert LEGEND in text_of(page.text)
    assert checked_busy(page.text) == {site.connection.calendar_id}
    answer = doctor.post(f"/connect/{ANNA}/busy", data={"csrf_token": csrf(page.text),
                                                        "busy_calendar": [site.connection.calendar_id, primary]})
    assert answer.status_code == 303 and answer.headers["Location"] == "/me#busy"
    assert "Saved. Busy time in Clinic appointments, " in text_of(doctor.get("/me").text)
    assert fresh(site.connection).busy_calendars == [site.connection.calendar_id, primary]
    site.rt.bridge.sync_once()
    assert busy["id"] in {b.event_id for b in BusyBlock.select()}
    assert "Busy blocks 1" in text_of(doctor.get("/me").text)


def test_busy_choice_needs_csrf_and_the_right_person(site):
    doctor, _ = signed_in(site, ROLES["doctor"], uid=ANNA)
    assert doctor.post(f"/connect/{ANNA}/busy", data={"busy_calendar": [EMAILS[ANNA]]}).status_code == 400
    other, _ = signed_in(site, ROLES["doctor"], uid=MARC, name="Marc Dubois")
    page = other.get("/me")
    assert other.post(f"/connect/{ANNA}/busy", data={"csrf_token": csrf(page.text),
                                                     "busy_calendar": [EMAILS[ANNA]]}).status_code == 403
    desk, _ = signed_in(site, ROLES["receptionist"], uid=2, name="Claire Martin")
    page = desk.get("/")
    assert desk.post(f"/connect/{ANNA}/busy", data={"csrf_token": csrf(page.text),
                                                    "busy_calendar": [EMAILS[ANNA]]}).status_code == 403
    assert fresh(site.connection).busy_calendars is None


# ---- reset sync ------------------------------------------------------------------------------------

def book(site, kivicare, start):
    return kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=start,
                                       service_mapping_ids=[mapping_id(site.rt, ANNA, GENERAL)])


def reset(client, page_html, **fields):
    return client.post(f"/doctors/{ANNA}/reset-sync", data={"csrf_token": csrf(page_html), **fields})


def test_reset_sync_needs_a_confirmation_then_reports_the_events_found(site, kivicare, google):
    book(site, kivicare, at(3, 9, 10))
    site.rt.bridge.sync_once()
    events = our_events(google, site.connection.calendar_id)
    assert events
    client = admin(site)
    page = client.get(f"/doctors/{ANNA}")
    text = text_of(page.text)
    assert "Reset sync" in text and "Keep the events in Google" in text
    assert "Remove this site's events from Google and create them again" in text
    answer = reset(client, page.text, events="keep")
    assert answer.status_code == 303 and answer.headers["Location"] == f"/doctors/{ANNA}#reset"
    assert "Nothing was reset: tick the box to confirm." in text_of(client.get(f"/doctors/{ANNA}").text)
    assert not SyncLog.select().where(SyncLog.action == "reset-sync").exists()
    reset(client, page.text, events="keep", confirm="yes")
    assert f"{len(events)} events found in Google. They are kept" in text_of(client.get(f"/doctors/{ANNA}").text)
    assert site.rt.poll_requested.is_set()
    assert MeetMapping.select().where(MeetMapping.calendar_id == site.connection.calendar_id).count() == len(events)
    preview.confirm(site.rt, fresh(site.connection), by=ADMIN)  # a reset waits for its preview to be confirmed
    site.rt.bridge.sync_once()
    assert sorted(e["id"] for e in our_events(google, site.connection.calendar_id)) == sorted(e["id"] for e in events)


def test_reset_sync_removing_the_events_creates_them_again(site, kivicare, google):
    book(site, kivicare, at(3, 9, 10))
    site.rt.bridge.sync_once()
    count = len(our_events(google, site.connection.calendar_id))
    client = admin(site)
    page = client.get(f"/doctors/{ANNA}")
    reset(client, page.text, events="remove", confirm="yes")
    assert (f"{count} events found in Google. They were removed from Google and are created again"
            in text_of(client.get(f"/doctors/{ANNA}").text))
    assert our_events(google, site.connection.calendar_id) == []
    preview.confirm(site.rt, fresh(site.connection), by=ADMIN)
    site.rt.bridge.sync_once()
    assert len(our_events(google, site.connection.calendar_id)) == count


def test_only_admins_reset_and_a_removed_doctors_events_can_be_removed(site):
    doctor, _ = signed_in(site, ROLES["doctor"], uid=ANNA)
    page = doctor.get("/me")
    assert "Reset sync" not in text_of(page.text)
    assert reset(doctor, page.text, events="keep", confirm="yes").status_code == 403
    desk, _ = signed_in(site, ROLES["receptionist"], uid=2, name="Claire Martin")
    assert reset(desk, desk.get("/").text, events="keep", confirm="yes").status_code == 403
    client = admin(site)
    assert client.post(f"/doctors/{ANNA}/reset-sync", data={"events": "keep", "confirm": "yes"}).status_code == 400
    assert not SyncLog.select().where(SyncLog.action == "reset-sync").exists()
    Connection.update(state="removed").where(Connection.id == site.connection.id).execute()
    text = text_of(client.get(f"/doctors/{ANNA}").text)
    assert "removed from KiviCare" in text and "This doctor no longer exists in KiviCare" in text
    assert "Remove this site's events from Google" in text and "create them again" not in text
