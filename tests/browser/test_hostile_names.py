"""Names typed in KiviCare that are markup (``<script>alert(1)</script>``, ``"><img src=x onerror=…>``) are shown
as text in a real browser: no dialog opens, no element is made from them, and the Content-Security-Policy
has nothing to block (a blocked inline script would show as a console error, which fails the test too).
tests/web/test_security.py checks the same pages' HTML for every route."""

from __future__ import annotations

import re

from .conftest import sign_in
from .site import IMG_NAME, SCRIPT_NAME

_INJECTED = """() => ({
  images: document.querySelectorAll('img[src="x"], img[onerror]').length,
  scripts: Array.from(document.scripts).filter(s => s.textContent.includes('alert')).length,
})"""


def assert_shown_as_text(page, where: str) -> None:
    page.wait_for_load_state("load")
    assert page.evaluate(_INJECTED) == {"images": 0, "scripts": 0}, where
    assert page.get_by_text(SCRIPT_NAME).count() >= 1, f"the name is not shown on {where}"
    assert page.get_by_text(IMG_NAME).count() >= 1, f"the name is not shown whole on {where}"


def test_markup_in_names_from_kivicare_stays_text_in_the_browser(site, new_page, watch):
    doctor_id = site.add_hostile_names()
    site.install_companion()

    admin = new_page()
    sign_in(admin, site)
    for path in ("/", "/connect", f"/doctors/{doctor_id}", "/conflicts", "/log"):
        admin.goto(site.url + path)
        assert_shown_as_text(admin, path)

    doctor = new_page()  # the doctor, signed in from WordPress: the name is in the header too
    doctor.goto(site.kivicare.companion.sso_url(doctor_id))
    doctor.wait_for_url(re.compile(r"/me$"))
    assert_shown_as_text(doctor, "/me")
    watch.check()
