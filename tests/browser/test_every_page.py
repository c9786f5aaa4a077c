"""Every page of the app, opened in the browser by each role that may open it (the routes are enumerated
from ``app.url_map``, so a new page is checked the day it is added): every control has a label, no id is
used twice, the Content-Security-Policy blocks nothing (no inline script or style, no outside asset: chromium
reports a blocked one as a console error), and no stylesheet, script or image is missing."""

from __future__ import annotations

from sidecar.storage.models import Conflict
from tests.conftest import ANNA, EMAILS, MARC

from .conftest import assert_labelled, sign_in
from .site import path_for, rules

# Not pages: the plugin's and Google's signed hooks, static files, JSON and CSV answers.
NOT_PAGES = ("hooks.", "google_hooks.", "static", "health.", "dashboard.api_status", "synclog_page.export_csv")


def test_every_page_is_labelled_and_keeps_to_the_content_security_policy(site, new_page, watch):
    site.install_companion()
    site.connect(ANNA, EMAILS[ANNA])
    site.connect(MARC, EMAILS[MARC], confirm=False)  # a connection waiting for its first-sync preview
    site.runtime.bridge.startup()
    site.runtime.bridge.sync_once()
    conflict = Conflict.create(kind="both_changed", doctor_id=ANNA, appointment_id="6", kivicare={}, google={})

    admin = new_page()
    sign_in(admin, site)
    admin.goto(site.url + "/connect")  # the doctors are known from KiviCare
    opened = []
    for rule in rules(site.app, "GET"):
        if rule.endpoint.startswith(NOT_PAGES):
            continue
        doctor_id = MARC if rule.endpoint == "connect.preview" else ANNA
        path = path_for(site.app, rule, doctor_id=doctor_id, conflict_id=conflict.id)
        answer = admin.goto(site.url + path)
        assert answer.status < 500, f"{path}: {answer.status}"
        assert_labelled(admin)
        opened.append(admin.url)
    assert len(opened) >= 10

    doctor = new_page()
    doctor.goto(site.kivicare.companion.sso_url(ANNA))
    for path in ("/me", "/log", "/conflicts", f"/connect/{ANNA}/calendar", "/settings"):
        doctor.goto(site.url + path)
        assert_labelled(doctor)
    receptionist = new_page()
    receptionist.goto(site.kivicare.companion.sso_url(2, roles=["kiviCare_receptionist"]))
    for path in ("/", "/log", "/conflicts"):
        receptionist.goto(site.url + path)
        assert_labelled(receptionist)
    watch.check()
