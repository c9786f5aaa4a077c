"""The audit trail: who changed which setting (names only for secrets), who signed in or failed to, who
created links, disconnected doctors and resolved conflicts; the admin-only ``/audit`` page, newest first,
paginated, filterable, and inert against markup in what it shows."""

from __future__ import annotations

import re
from datetime import timedelta

from sidecar.storage.models import AuditEntry, Conflict, Connection, Doctor, utcnow
from sidecar.web import audit

from .conftest import ADMIN, PASSWORD, csrf, sign_in, text_of
from .test_sso import ROLES, SECRET, signed_in

CLIENT_SECRET = "GOCSPX-audit-secret-value-QRST"


def post_section(client, section: str, **fields):
    page = client.get("/settings")
    return client.post("/settings", data={"csrf_token": csrf(page.text), "section": section, **fields})


def entries(action: str | None = None) -> list[AuditEntry]:
    query = AuditEntry.select().order_by(AuditEntry.id)
    return list(query.where(AuditEntry.action == action) if action else query)


def everything_stored() -> str:
    return "\n".join(f"{e.actor} {e.action} {e.target} {e.detail}" for e in entries())


def test_setting_changes_name_the_setting_and_never_a_secrets_value(admin_client, rt):
    answer = post_section(admin_client, "google", **{"google.client_id": "1234-abc.apps.googleusercontent.com",
                                                     "google.client_secret": CLIENT_SECRET,
                                                     "google.app_name": "KiviCare Calendar Sidecar"})
    assert answer.status_code == 302
    changed = {e.target: e for e in entries("setting_changed")}
    assert set(changed) == {"google.client_id", "google.client_secret"}  # the unchanged app name is not listed
    assert changed["google.client_id"].detail == '(empty) → "1234-abc.apps.googleusercontent.com"'
    assert changed["google.client_secret"].detail == "set"
    assert all(e.actor == ADMIN and e.role == "admin" and e.ip == "127.0.0.1" for e in changed.values())
    post_section(admin_client, "google", **{"google.client_id": "1234-abc.apps.googleusercontent.com",
                                            "google.client_secret": CLIENT_SECRET[:-4] + "WXYZ",
                                            "google.app_name": "KiviCare Calendar Sidecar"})
    assert [e.detail for e in entries("setting_changed")][-1] == "changed"
    stored = everything_stored()
    assert "audit-secret-value" not in stored and "QRST" not in stored and "WXYZ" not in stored
    page = admin_client.get("/audit")
    assert "audit-secret-value" not in page.text and "google.client_secret" in page.text


def test_typed_values_are_shown_old_to_new(admin_client, rt):
    post_section(admin_client, "sync", **{"sync.direction": "both", "sync.conflict_rule": "manual",
                                          "bridge.horizon_days": "90", "bridge.poll_seconds": "60",
                                          "bridge.near_days": "14", "bridge.far_poll_seconds": "600",
                                          "sync.mass_cancel_share": "30", "google.push_over_http": "on"})
    changed = {e.target: e.detail for e in entries("setting_changed")}
    assert changed == {"sync.conflict_rule": '"kivicare" → "manual"', "bridge.poll_seconds": "30 → 60",
                       "google.push_over_http": "off → on"}


def test_a_refused_save_records_nothing(admin_client, rt):
    answer = post_section(admin_client, "google", **{"google.client_id": "x", "google.client_secret": CLIENT_SECRET,
                                                     "google.app_name": ""})
    assert answer.status_code == 400
    assert entries("setting_changed") == []


def test_sign_ins_and_failed_sign_ins(app, rt):
    from sidecar.web import create_admin
    create_admin(rt, ADMIN, PASSWORD)
    client = app.test_client()
    assert sign_in(client, ADMIN, "not the password at all").status_code == 401
    assert sign_in(client).status_code == 302
    failed, = entries("sign_in_failed")
    assert (failed.actor, failed.target) == ("", ADMIN) and "wrong user name or password" in failed.detail
    signed, = entries("signed_in")
    assert (signed.actor, signed.target, signed.detail) == (ADMIN, ADMIN, "local account")
    assert "not the password" not in everything_stored()
    text = text_of(client.get("/audit").text)
    assert "Failed sign-in" in text and "not signed in" in text and "Signed in" in text


def test_sso_sign_ins_and_refusals(make_rt):
    from sidecar.web import create_app
    rt = make_rt(**{"companion.secret": SECRET})
    app = create_app(rt)
    from sidecar.web import create_admin
    create_admin(rt, ADMIN, PASSWORD)
    signed_in(app, ROLES["doctor"], name="Anna Schmidt")
    refused = app.test_client().get("/sso?token=forged.token")
    assert refused.status_code in (400, 403)
    signed, = entries("signed_in")
    assert signed.actor == "Anna Schmidt (WordPress user 3)" and signed.role == "doctor"
    assert signed.detail == "from WordPress as doctor"
    refusal, = entries("sign_in_refused")
    assert refusal.actor == "" and refusal.detail == "This sign-in link is not valid"


def test_companion_secret_generated_and_shown_are_recorded_without_the_secret(admin_client, rt):
    page = admin_client.get("/settings")
    admin_client.post("/settings/companion/secret", data={"csrf_token": csrf(page.text)})
    admin_client.post("/settings/companion/reveal", data={"csrf_token": csrf(page.text)})
    assert [e.action for e in entries()][-2:] == ["secret_generated", "secret_shown"]
    secret = rt.cfg.get("companion.secret")
    assert secret[4:-4] not in everything_stored()


def test_connect_links_disconnects_and_conflicts_are_recorded(admin_client, rt):
    Doctor.create(id=3, name="Anna Schmidt", email="anna@clinic.test")
    page = admin_client.get("/connect")
    assert admin_client.post("/connect/3/link", data={"csrf_token": csrf(page.text)}).status_code == 303
    link, = entries("connect_link_created")
    assert link.target == "Anna Schmidt (doctor 3)" and link.actor == ADMIN
    conn = Connection.create(doctor=3, calendar_id="cal@group.calendar.google.com", state="active")
    assert admin_client.post("/connect/3/disconnect", data={"csrf_token": csrf(page.text)}).status_code == 303
    assert entries("disconnected")[0].target == "Anna Schmidt (doctor 3)"
    # A mass deletion in KiviCare resolved by keeping Google's events: no remote call needed.
    conflict = Conflict.create(kind="mass_delete", doctor_id=3, connection=conn.id,
                               kivicare={"appointments": ["41", "42"]})
    answer = admin_client.post(f"/conflicts/{conflict.id}/resolve", data={"csrf_token": csrf(page.text),
                                                                          "choice": "google"})
    assert answer.status_code == 303
    resolved, = entries("conflict_resolved")
    assert resolved.target == f"conflict {conflict.id}" and resolved.detail.startswith("google")


def test_page_is_newest_first_paginated_and_filterable(admin_client):
    AuditEntry.delete().execute()  # the admin's own sign-in
    start = utcnow() - timedelta(days=1)
    for number in range(120):
        AuditEntry.create(at=start + timedelta(minutes=number), actor=ADMIN, role="admin",
                          action="setting_changed" if number % 2 else "connect_link_created", target=f"item {number:03}")
    first = admin_client.get("/audit")
    assert first.status_code == 200
    targets = re.findall(r"item (\d{3})", first.text)
    assert targets[0] == "119" and targets == sorted(targets, reverse=True) and len(targets) == audit.PER_PAGE
    text = text_of(first.text)
    assert "Page 1 of 3" in text and "Older entries" in text and "Newer entries" not in text
    last = admin_client.get("/audit?page=3")
    assert "Page 3 of 3" in text_of(last.text) and "item 000" in last.text
    assert "Page 3 of 3" in text_of(admin_client.get("/audit?page=99").text)  # past the end: the last page
    assert "Page 1 of 3" in text_of(admin_client.get("/audit?page=-2").text)
    only = admin_client.get("/audit?action=connect_link_created")
    numbers = [int(n) for n in re.findall(r"item (\d{3})", only.text)]
    assert numbers and all(n % 2 == 0 for n in numbers) and "Page 1 of 2" in text_of(only.text)
    assert re.search(r'<option value="connect_link_created" selected>', only.text)
    assert 'href="/audit?page=2&amp;action=connect_link_created"' in only.text
    assert "Page 1 of 3" in text_of(admin_client.get("/audit?action=nonsense").text)  # unknown filter: all


def test_markup_in_an_entry_is_inert_and_the_settings_page_links_here(admin_client):
    audit_entry = AuditEntry.create(actor="<b>x</b>", action="signed_in", target="<script>alert(1)</script>",
                                    detail='"><img src=x onerror=alert(1)>')
    page = admin_client.get("/audit")
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text and "<b>x</b>" not in page.text
    assert audit_entry.id
    assert 'href="/audit"' in admin_client.get("/settings").text


def test_record_cleans_and_shortens(admin_client):
    with admin_client.application.test_request_context("/"):
        entry = audit.record("signed_in", "line one\nline two\x00", "x" * 5000)
    assert entry.target == "line one line two" and len(entry.detail) == audit.MAX_DETAIL
    assert entry.actor == ""  # no session in this request


def test_only_admins_see_the_audit_trail(make_rt):
    from sidecar.web import create_admin, create_app
    rt = make_rt(**{"companion.secret": SECRET})
    app = create_app(rt)
    create_admin(rt, ADMIN, PASSWORD)
    doctor, _ = signed_in(app, ROLES["doctor"])
    desk, _ = signed_in(app, ROLES["receptionist"], uid=2, name="Claire Martin")
    assert doctor.get("/audit").status_code == 403
    assert desk.get("/audit").status_code == 403
    assert app.test_client().get("/audit").headers["Location"] == "/login?next=/audit"
    boss, _ = signed_in(app, ROLES["clinic_admin"], uid=9, name="Clara Admin")
    assert boss.get("/audit").status_code == 200
