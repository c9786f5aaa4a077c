"""The settings page's "Companion plugin" block: the shared secret (generated here, masked, shown in
full only on request), whether the plugin answers and its version, and which features are on
because of it versus what happens without it."""

from __future__ import annotations

import re
from html import unescape

import pytest

from sidecar.storage.models import SettingRow

from .conftest import csrf, text_of

WITHOUT = ("Changes reach Google within the poll interval (30 seconds).",
           "Busy times in Google don't block booking in KiviCare.", "Meet links are only in Google.")


def companion_block(html: str) -> str:
    start = html.index('id="companion"')
    return html[start:html.index("</section>", start)]


def shown_secret(html: str) -> str | None:
    found = re.search(r'id="companion-secret-value" type="text" value="([^"]+)"', html)
    return unescape(found.group(1)) if found else None


def states(html: str) -> dict[str, str]:
    rows = re.findall(r'<th scope="row">([^<]+)</th>\s*<td data-label="State"><span[^>]*>(on|off)</span>', html)
    return dict(rows)


def test_block_before_any_secret(admin_client):
    page = admin_client.get("/settings")
    block = text_of(companion_block(page.text))
    assert "Not set yet" in block and "Generate the secret" in block and "Show the secret" not in block
    assert "Not checked yet." in block
    for sentence in WITHOUT:
        assert sentence in block
    assert set(states(page.text).values()) == {"off"} and len(states(page.text)) == 6
    assert "Companion plugin: not set up: changes reach Google by polling" in text_of(admin_client.get("/").text)
    assert '<a href="#companion">Companion plugin</a>' in page.text


def test_generate_shows_the_secret_once_then_only_its_mask(admin_client, rt):
    page = admin_client.get("/settings")
    answer = admin_client.post("/settings/companion/secret", data={"csrf_token": csrf(page.text)})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    secret = shown_secret(answer.text)
    assert secret == rt.cfg.get("companion.secret")
    assert len(secret) == 43 and re.fullmatch(r"[A-Za-z0-9_-]+", secret)  # 32 bytes, base64url, no padding
    assert "New secret generated." in text_of(answer.text)
    row = SettingRow.get(SettingRow.key == "companion.secret")
    assert row.encrypted and secret not in row.value
    again = admin_client.get("/settings")
    assert secret not in again.text and shown_secret(again.text) is None
    assert "••••" + secret[-4:] in again.text
    assert "Show the secret" in again.text and "Generate new secret" in again.text

    shown = admin_client.post("/settings/companion/reveal", data={"csrf_token": csrf(again.text)})
    assert shown.status_code == 200 and shown_secret(shown.text) == secret
    assert "New secret generated." not in text_of(shown.text)

    newer = admin_client.post("/settings/companion/secret", data={"csrf_token": csrf(again.text)})
    assert shown_secret(newer.text) == rt.cfg.get("companion.secret") != secret


def test_reveal_and_generate_need_a_post_with_csrf(admin_client, rt):
    rt.cfg.set("companion.secret", "x" * 43)
    assert admin_client.get("/settings/companion/reveal").status_code == 405
    assert admin_client.post("/settings/companion/reveal").status_code == 400  # no CSRF token
    assert admin_client.post("/settings/companion/secret").status_code == 400
    assert rt.cfg.get("companion.secret") == "x" * 43


def test_check_when_the_plugin_answers(admin_client, rt, kivicare):
    secret = "check-secret-0123456789abcdef0123456789abcdef"
    kivicare.install_companion(secret)
    rt.cfg.set("kivicare.base_url", kivicare.base_url)
    rt.cfg.set("companion.secret", secret)
    page = admin_client.get("/settings")
    answer = admin_client.post("/settings/companion/test", data={"csrf_token": csrf(page.text)})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/settings#companion")
    page = admin_client.get("/settings")
    block = text_of(companion_block(page.text))
    assert "The plugin answers: version 1.0.0." in block and "4.3.0" in block and "Europe/Paris" in block
    assert states(page.text) == {"Instant updates": "on", "Busy times block booking": "on",
                                 "Meet links in KiviCare": "on", "Moves from Google": "on", "Alert e-mails": "on",
                                 "Sign-in from KiviCare": "on"}
    assert rt.get_state("companion_check")["features"] == ["hints", "busy", "meet", "reschedule", "mail", "sso"]
    assert "Companion plugin: answers (version 1.0.0)" in text_of(admin_client.get("/").text)

    # Switched off: outgoing features stop, the plugin's hints and sign-ins still work.
    answer = admin_client.post("/settings", data={"csrf_token": csrf(page.text), "section": "companion"})
    assert answer.status_code == 302 and rt.cfg.get("companion.enabled") is False
    page = admin_client.get("/settings")
    assert states(page.text) == {"Instant updates": "on", "Busy times block booking": "off",
                                 "Meet links in KiviCare": "off", "Moves from Google": "off", "Alert e-mails": "off",
                                 "Sign-in from KiviCare": "on"}
    assert "using the plugin is switched off below" in text_of(page.text)


@pytest.mark.parametrize("situation, message", [
    ("absent", "it is not installed or not active"),
    ("other secret", "The plugin has a different secret."),
    ("no secret in plugin", "The plugin is active but has no secret yet"),
    ("no site", "Enter and save the KiviCare site URL first"),
    ("no secret here", "Generate the shared secret first"),
])
def test_check_explains_what_is_wrong(admin_client, rt, kivicare, situation, message):
    if situation == "other secret":
        kivicare.install_companion("the plugin's own secret")
    elif situation == "no secret in plugin":
        kivicare.install_companion("")
    if situation != "no site":
        rt.cfg.set("kivicare.base_url", kivicare.base_url)
    if situation != "no secret here":
        rt.cfg.set("companion.secret", "the sidecar's secret 0123456789")
    page = admin_client.get("/settings")
    admin_client.post("/settings/companion/test", data={"csrf_token": csrf(page.text)})
    page = admin_client.get("/settings")
    block = text_of(companion_block(page.text))
    assert message in block
    assert "the sidecar's secret" not in page.text
    assert set(states(page.text).values()) == {"off"}
    for sentence in WITHOUT:
        assert sentence in block


def test_a_secret_fixed_in_the_environment_is_read_only(make_rt, tmp_path):
    from sidecar.web import create_admin, create_app

    from .conftest import sign_in
    rt = make_rt(environ={"SIDECAR_COMPANION_SECRET": "from-the-environment-0123456789abcdef"})
    create_admin(rt, "admin", "a long enough passphrase")
    client = create_app(rt).test_client()
    sign_in(client)
    page = client.get("/settings")
    block = text_of(companion_block(page.text))
    assert "Read-only: set by SIDECAR_COMPANION_SECRET." in block
    assert "Generate" not in block and "Show the secret" not in block
    assert "from-the-environment" not in page.text
    answer = client.post("/settings/companion/secret", data={"csrf_token": csrf(page.text)})
    assert answer.status_code == 302
    assert rt.cfg.get("companion.secret") == "from-the-environment-0123456789abcdef"
    assert client.post("/settings/companion/reveal", data={"csrf_token": csrf(page.text)}).status_code == 302
