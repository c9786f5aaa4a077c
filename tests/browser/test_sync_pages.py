"""What the admin sees once doctors are connected, in a real browser: an appointment booked in KiviCare
appears on the dashboard and in the sync log after a sync; a conflict is resolved with one click.
And a doctor who tries the admin's pages is refused. Screenshots: dashboard (wide and phone), sync log, a
doctor's page as the admin sees it, conflicts, the refusal."""

from __future__ import annotations

import re
from datetime import datetime

from sidecar.storage.models import Conflict, SyncLog
from tests.conftest import ANNA, EMAILS, MARC
from tests.test_sync_engine import GENERAL, at, instant, mapping_id, our_events

from .conftest import PHONE, shot, sign_in, tab_to


def book(site, start: datetime, doctor_id: int = ANNA) -> str:
    """Staff books a General Consultation for patient 5 in KiviCare; returns the appointment id."""
    return site.kivicare.create_appointment(doctor_id=doctor_id, patient_id=5, start_utc=start,
                                            service_mapping_ids=[mapping_id(site.runtime, doctor_id, GENERAL)])


def test_an_appointment_booked_in_kivicare_shows_on_the_dashboard_and_in_the_log(site, new_page, watch):
    site.connect(ANNA, EMAILS[ANNA])
    site.connect(MARC, EMAILS[MARC])
    site.runtime.bridge.startup()
    site.runtime.bridge.sync_once()  # the seeded appointments
    appointment_id = book(site, at(2, 8, 10))
    site.runtime.bridge.sync_once()  # the loop's next round, run here in-process
    assert len(our_events(site.google, site.google.calendar_id(EMAILS[ANNA], "Clinic appointments"),
                          appointment_id)) == 1

    admin = new_page()
    sign_in(admin, site)
    navigation = admin.get_by_role("navigation", name="Main")
    navigation.get_by_role("link", name="Connect doctors").click()  # loads every doctor from KiviCare
    admin.get_by_role("heading", name=re.compile("Connect doctors")).wait_for()
    navigation.get_by_role("link", name="Dashboard").click()
    admin.get_by_role("heading", name="Dashboard").wait_for()
    assert "Sofia Rossi" in admin.get_by_role("main").inner_text()  # known, not connected
    anna_row = admin.get_by_role("row").filter(has=admin.get_by_role("link", name="Anna Schmidt"))
    assert "connected" in anna_row.inner_text() and EMAILS[ANNA] in anna_row.inner_text()
    activity = admin.get_by_role("region", name="Recent activity")
    assert activity.get_by_role("cell", name=appointment_id, exact=True).count() >= 1
    shot(admin, "dashboard", watch)

    navigation.get_by_role("link", name="Sync log").click()
    admin.wait_for_url(re.compile(r"/log"))
    entry = admin.get_by_role("row").filter(has=admin.get_by_role("cell", name=appointment_id, exact=True))
    assert entry.count() >= 1 and "Anna Schmidt" in entry.first.inner_text()
    assert SyncLog.select().where((SyncLog.appointment_id == appointment_id) & (SyncLog.outcome == "ok")).exists()
    shot(admin, "log", watch)

    admin.goto(f"{site.url}/doctors/{ANNA}")
    admin.get_by_role("heading", name="Anna Schmidt").first.wait_for()
    shot(admin, "doctor-page-admin", watch)

    phone = new_page(PHONE)  # the same dashboard on a phone
    sign_in(phone, site)
    phone.get_by_role("heading", name="Dashboard").wait_for()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the page scrolls sideways"
    shot(phone, "dashboard-phone", watch)


def test_a_conflict_is_resolved_with_one_click(site, new_page, watch):
    connection = site.connect(ANNA, EMAILS[ANNA])
    site.runtime.bridge.startup()
    appointment_id = book(site, at(3, 10, 10))
    site.runtime.bridge.sync_once()
    # The doctor drags the event in Google; without the companion plugin KiviCare cannot follow safely.
    event = our_events(site.google, connection.calendar_id, appointment_id)[0]
    site.google.user_patch(connection.calendar_id, event["id"], {
        "start": {"dateTime": at(5, 10, 10).isoformat()}, "end": {"dateTime": at(5, 10, 40).isoformat()}})
    site.runtime.bridge.sync_once()
    conflict = Conflict.get(Conflict.appointment_id == appointment_id)

    admin = new_page()
    sign_in(admin, site)
    admin.get_by_role("link", name=re.compile("^Conflicts")).first.click()
    admin.wait_for_url(re.compile(r"/conflicts$"))
    card = admin.locator(f"#conflict-{conflict.id}")
    assert f"Appointment {appointment_id}" in card.inner_text()
    shot(admin, "conflicts", watch)

    keep_kivicare = card.get_by_role("button", name=re.compile("KiviCare's version"))
    tab_to(admin, keep_kivicare)  # reachable with the keyboard too
    keep_kivicare.click()
    admin.get_by_text(f"Conflict resolved. KiviCare's version of appointment {appointment_id} was kept").wait_for()
    admin.get_by_text("No open conflicts.").wait_for()
    assert Conflict.get_by_id(conflict.id).state != "open"

    site.runtime.bridge.sync_once()  # Google's event is put back where KiviCare has the appointment
    event = our_events(site.google, connection.calendar_id, appointment_id)[0]
    assert instant(event["start"]["dateTime"]) == at(3, 10, 10)

    # The admin's choice is in the audit trail.
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Audit trail").click()
    admin.get_by_role("heading", name="Audit trail").wait_for()
    assert f"conflict {conflict.id}" in admin.get_by_role("main").inner_text()


def test_a_doctor_cannot_open_another_doctors_page_or_the_settings(site, new_page, watch):
    site.install_companion()
    site.connect(MARC, EMAILS[MARC])
    doctor = new_page()
    doctor.goto(site.kivicare.companion.sso_url(ANNA))
    doctor.wait_for_url(re.compile(r"/me$"))
    navigation = doctor.get_by_role("navigation", name="Main")
    assert not navigation.get_by_role("link", name="Settings").count()
    assert not navigation.get_by_role("link", name="Dashboard").count()

    for path in (f"/doctors/{MARC}", "/settings", "/", f"/connect/{MARC}/calendar", "/audit"):
        answer = doctor.goto(site.url + path)
        assert answer.status == 403, path
        doctor.get_by_role("heading", name="Not allowed").wait_for()
        assert "marc.dubois" not in doctor.content(), path
    shot(doctor, "forbidden", watch)
    doctor.get_by_role("link", name="Back to my calendar").click()
    doctor.wait_for_url(re.compile(r"/me$"))
