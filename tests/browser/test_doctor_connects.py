"""A doctor signs in from WordPress (the companion plugin's "Google Calendar" link) and connects their
Google Calendar through Google's consent screen (the sandbox's), picks the calendar and confirms the
first-sync preview. Screenshots: the consent screen, the calendar choice, the preview, the doctor's page,
the admin's "Connect doctors" page."""

from __future__ import annotations

import re

from sidecar.storage.models import Connection
from tests.conftest import ANNA, EMAILS

from .conftest import shot, sign_in


def test_doctor_signs_in_from_wordpress_and_connects_google(site, new_page, watch):
    site.install_companion()
    doctor = new_page()

    # The link in KiviCare's menu carries a signed, single-use token made by the plugin.
    doctor.goto(site.kivicare.companion.sso_url(ANNA))
    doctor.wait_for_url(re.compile(r"/me$"))
    doctor.get_by_role("heading", name="My Google Calendar").wait_for()
    assert not doctor.get_by_role("link", name="Settings").count()  # a doctor's menu: their calendar only
    doctor.get_by_role("button", name="Connect my Google Calendar").click()

    # Google's consent screen (the sandbox serves it like accounts.google.com): account, permissions, Allow.
    doctor.wait_for_url(site.google.base_url + "/**")
    doctor.get_by_label(re.compile(re.escape(EMAILS[ANNA]))).check()
    assert doctor.get_by_role("checkbox", name=re.compile("calendar", re.I)).first.is_checked()
    shot(doctor, "google-consent", watch)
    doctor.get_by_role("button", name="Allow").click()

    # Back at the sidecar: which calendar receives the appointments.
    doctor.wait_for_url(re.compile(rf"/connect/{ANNA}/calendar"))
    doctor.get_by_label(re.compile("^Clinic appointments")).first.check()
    shot(doctor, "calendar-choice", watch)
    doctor.get_by_role("button", name="Use this calendar").click()

    # Nothing is written before the person connecting has seen what the first sync will do.
    doctor.wait_for_url(re.compile(rf"/connect/{ANNA}/preview"))
    doctor.get_by_role("heading", name=re.compile("Check the first sync")).wait_for()
    assert Connection.get(Connection.doctor == ANNA).awaiting_confirmation
    assert not site.google.events(site.google.calendar_id(EMAILS[ANNA], "Clinic appointments"))
    shot(doctor, "first-sync-preview", watch)
    doctor.get_by_role("button", name="Start syncing").click()
    doctor.get_by_text("Connected. Appointments will appear in Clinic appointments").wait_for()

    connection = Connection.get(Connection.doctor == ANNA)
    assert connection.state == "active" and connection.account_email == EMAILS[ANNA]
    assert not connection.awaiting_confirmation
    assert connection.calendar_id == site.google.calendar_id(EMAILS[ANNA], "Clinic appointments")

    doctor.get_by_role("link", name="Back to my calendar").click()
    doctor.wait_for_url(re.compile(r"/me$"))
    doctor.get_by_role("button", name="Reconnect").wait_for()
    assert EMAILS[ANNA] in doctor.get_by_role("main").inner_text()
    shot(doctor, "doctor-page", watch)

    # The admin sees the new connection among the doctors read from KiviCare.
    admin = new_page()
    sign_in(admin, site)
    admin.get_by_role("link", name="Connect doctors").click()
    admin.get_by_role("heading", name=re.compile("Connect doctors")).wait_for()
    assert EMAILS[ANNA] in admin.get_by_role("main").inner_text()
    shot(admin, "connect-doctors", watch)
