"""An admin sets the sidecar up from a fresh database, in a real browser: the one-time setup link the
server prints, the admin account, the Google client and the KiviCare site in Settings, the connection
test, the audit trail of it. Screenshots: setup, settings, audit."""

from __future__ import annotations

import re

from sidecar.storage.models import AdminUser, SettingRow
from sidecar.web import create_setup_link

from .conftest import shot
from .site import ADMIN, PASSWORD


def test_admin_configures_a_fresh_site(fresh_site, page, watch):
    site = fresh_site
    # Before anyone has the setup link, every page leads to the page asking for it.
    page.goto(site.url + "/settings")
    assert page.url.startswith(site.url + "/setup")
    assert not page.get_by_label("User name").count()

    page.goto(create_setup_link(site.runtime))  # what `python -m sidecar serve` prints on first run
    page.get_by_role("heading", name="Create the admin account").wait_for()
    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    shot(page, "setup", watch)
    page.get_by_role("button", name="Create account and sign in").click()

    # Straight to Settings, signed in.
    page.wait_for_url(re.compile(r"/settings"))
    assert AdminUser.select().count() == 1
    page.get_by_text("Your admin account is ready").wait_for()
    redirect_uri = page.get_by_label(re.compile("Authorized redirect URI"))
    assert redirect_uri.input_value() == site.url + "/oauth/google/callback"

    page.get_by_label("OAuth client ID").fill(site.google.client_id)
    page.get_by_label("OAuth client secret").fill(site.google_secret)
    page.get_by_role("button", name=re.compile("^Save Google")).click()
    page.get_by_text("Google settings saved.").wait_for()

    page.get_by_label("KiviCare site URL").fill(site.kivicare.base_url)
    page.get_by_label("WordPress user").fill(site.kivicare.username)
    page.get_by_label("Application password").fill(site.kivicare_password)
    page.get_by_role("button", name=re.compile("^Save KiviCare")).click()
    page.get_by_text("KiviCare site settings saved.").wait_for()

    page.get_by_role("button", name="Test connection").click()
    page.get_by_text("Connected to KiviCare.").wait_for()
    shot(page, "settings", watch)

    # Saving a section again without retyping its secret keeps the stored one.
    page.get_by_label("App name").fill("Riverside Clinic Calendar")
    page.get_by_role("button", name=re.compile("^Save Google")).click()
    page.get_by_text("Google settings saved.").wait_for()
    assert site.runtime.cfg.get("google.app_name") == "Riverside Clinic Calendar"

    cfg = site.runtime.cfg
    assert cfg.get("google.client_id") == site.google.client_id
    assert cfg.get("google.client_secret") == site.google_secret
    assert cfg.get("kivicare.base_url") == site.kivicare.base_url
    assert cfg.get("kivicare.app_password") == site.kivicare_password
    # Stored encrypted, and never sent back to the browser.
    for name in ("google.client_secret", "kivicare.app_password"):
        row = SettingRow.get_by_id(name)
        assert row.encrypted and site.google_secret not in row.value and site.kivicare_password not in row.value
    html = page.content()
    assert site.google_secret not in html and site.kivicare_password not in html

    # Who changed what, and when: the audit trail names the settings, never a secret's value.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit trail").click()
    page.get_by_role("heading", name="Audit trail").wait_for()
    trail = page.get_by_role("main").inner_text()
    assert "google.client_secret" in trail and "kivicare.base_url" in trail
    assert site.google_secret not in page.content() and site.kivicare_password not in page.content()
    shot(page, "audit", watch)
