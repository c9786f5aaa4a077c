"""The Conflicts page: both versions side by side in the doctor's timezone, one button per version,
who may see and resolve what, CSRF, the resolved list, the open count in the navigation and the
dashboard; and two end-to-end runs where the engine opens the conflict in the sandboxes and the
admin resolves it from the page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from sidecar.storage.models import Conflict, Connection, Doctor, utcnow
from sidecar.web import create_admin, create_app
from tests.conftest import ANNA, MARC, connect
from tests.test_sync_engine import GENERAL, at, instant, mapping_id, our_events

from .conftest import ADMIN, PASSWORD, admin, count_queries, csrf, sign_in, text_of
from .test_sso import ROLES, SECRET, signed_in

MOVE = "Changed in KiviCare and in Google since the last sync."


def iso(*args) -> str:
    return datetime(*args, tzinfo=timezone.utc).isoformat()


@pytest.fixture
def seeded(rt):
    """An app with the companion secret (for WordPress sign-ins), Anna (Paris) and Marc (the site's
    timezone, New York) and one open conflict each, plus a mass-cancel conflict for Anna."""
    rt.cfg.set("companion.secret", SECRET)
    rt.set_state("site_timezone", "America/New_York")
    create_admin(rt, ADMIN, PASSWORD)
    Doctor.create(id=ANNA, name="Anna Schmidt", timezone="Europe/Paris")
    Doctor.create(id=MARC, name="Marc Dubois")
    anna = Connection.create(doctor=ANNA, calendar_id="anna-cal", state="active")
    marc = Connection.create(doctor=MARC, calendar_id="marc-cal", state="active")
    rows = {
        "anna": Conflict.create(kind="both_changed", doctor_id=ANNA, appointment_id="501", connection=anna,
                                kivicare={"start": iso(2031, 10, 24, 8, 0), "end": iso(2031, 10, 24, 8, 30),
                                          "status": 1, "status_name": "Booked"},
                                google={"start": iso(2031, 10, 24, 12, 0), "end": iso(2031, 10, 24, 12, 30),
                                        "deleted": False, "updated": iso(2031, 10, 20, 9, 0)},
                                message=MOVE),
        "marc": Conflict.create(kind="both_changed", doctor_id=MARC, appointment_id="777", connection=marc,
                                kivicare={"start": iso(2031, 11, 3, 15, 0), "end": iso(2031, 11, 3, 15, 45),
                                          "status": 2, "status_name": "Pending"},
                                google={"start": "", "end": "", "deleted": True, "updated": iso(2031, 11, 1, 9, 0)},
                                message=MOVE),
        "mass": Conflict.create(kind="mass_cancel", doctor_id=ANNA, connection=anna,
                                kivicare={"appointments": ["601", "602", "603"], "upcoming": 5},
                                google={"deleted_events": 3},
                                message="3 of 5 upcoming appointments were deleted in Google at once."),
    }
    app = create_app(rt)
    app.rows = rows
    return app


def article(html: str, conflict_id: int) -> str:
    match = re.search(rf'<article class="card conflict" id="conflict-{conflict_id}".*?</article>', html, re.S)
    assert match, f"conflict {conflict_id} is not listed"
    return match.group(0)


def resolve(client, page_html: str, conflict_id: int, choice: str):
    return client.post(f"/conflicts/{conflict_id}/resolve", data={"csrf_token": csrf(page_html), "choice": choice})


def test_both_versions_side_by_side_in_the_doctors_timezone(seeded):
    client = admin(seeded)
    page = client.get("/conflicts")
    assert page.status_code == 200
    anna = text_of(article(page.text, seeded.rows["anna"].id))
    assert "Appointment 501 · Anna Schmidt" in anna and MOVE in anna
    # 08:00 UTC and 12:00 UTC on 24 October 2031 are 10:00 and 14:00 in Paris (summer time).
    assert "Date Fri 24 Oct 2031 Fri 24 Oct 2031" in anna
    assert "Time (Europe/Paris) 10:00–10:30 14:00–14:30" in anna
    assert "Status Booked" in anna
    assert "Keep KiviCare's version" in anna and "Keep Google's version" in anna
    marc = text_of(article(page.text, seeded.rows["marc"].id))
    # Marc has no timezone of his own: the site's (New York, after the switch to winter time on 2 November).
    assert "Time (America/New_York) 10:00–10:45" in marc
    assert "Deleted in Google" in marc and "Status Pending deleted in Google" in marc
    assert "the appointment is cancelled in KiviCare, and KiviCare e-mails the patient" in marc


def test_what_changed_is_highlighted(seeded):
    page = admin(seeded).get("/conflicts").text
    anna = article(page, seeded.rows["anna"].id)
    rows = dict(re.findall(r'<tr( class="changed")?><th scope="row">(\w+)', anna)[i][::-1] for i in range(3))
    assert rows == {"Date": "", "Time": ' class="changed"', "Status": ""}  # only the time moved
    assert anna.count('class="changed-mark"') == 1 and "14:00–14:30 changed" in text_of(anna)
    marc = article(page, seeded.rows["marc"].id)
    assert marc.count('<tr class="changed">') == 3  # deleted in Google: every row differs
    assert "rows marked changed differ" in text_of(marc)  # said in the table's caption for screen readers


def test_the_page_reads_each_doctors_timezone_once(seeded):
    client = admin(seeded)
    client.get("/conflicts")
    for n in range(30):
        Doctor.create(id=500 + n, name=f"Doctor {n}", timezone="Asia/Tokyo")
        Conflict.create(kind="both_changed", doctor_id=500 + n, appointment_id=str(2000 + n), state="resolved",
                        resolution="google", resolved_at=utcnow())
    assert count_queries(client, "/conflicts") <= 15


def test_mass_cancel_shows_the_count_the_ids_and_its_own_buttons(seeded):
    page = admin(seeded).get("/conflicts")
    mass = text_of(article(page.text, seeded.rows["mass"].id))
    assert "3 appointments · Anna Schmidt" in mass
    assert "Deleted in Google 3 events" in mass and "Appointment ids 601, 602, 603" in mass
    assert "Restore the events" in mass and "Cancel these appointments" in mass
    assert "Keep KiviCare's version" not in mass


def test_nav_and_dashboard_show_the_open_count(seeded):
    client = admin(seeded)
    page = client.get("/")
    nav = re.search(r'<a href="/conflicts" id="nav-conflicts".*?</a>', page.text, re.S).group(0)
    assert text_of(nav) == "Conflicts 3 open"
    assert "Conflicts: 3 open: choose a version" in text_of(page.text)
    assert client.get("/api/status").json["health"]["open_conflicts"] == 3


def test_receptionist_reads_every_conflict_but_cannot_resolve(seeded):
    client, _ = signed_in(seeded, ROLES["receptionist"], uid=2, name="Claire Martin")
    page = client.get("/conflicts")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Appointment 501" in text and "Appointment 777" in text and "3 appointments" in text
    assert "Keep KiviCare's version" not in text and "/resolve" not in page.text
    answer = resolve(client, page.text, seeded.rows["anna"].id, "kivicare")
    assert answer.status_code == 403
    assert Conflict.get_by_id(seeded.rows["anna"].id).state == "open"


def test_doctor_sees_only_own_conflicts_and_cannot_resolve_any(seeded):
    client, _ = signed_in(seeded, ROLES["doctor"], uid=ANNA)
    page = client.get("/conflicts")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "Appointment 501" in text and "3 appointments" in text
    assert "777" not in text and "Marc" not in text
    assert "/resolve" not in page.text
    assert text_of(re.search(r'id="nav-conflicts".*?</a>', page.text, re.S).group(0)).endswith("Conflicts 2 open")
    for row in ("anna", "marc"):
        answer = resolve(client, page.text, seeded.rows[row].id, "google")
        assert answer.status_code == 403
        assert Conflict.get_by_id(seeded.rows[row].id).state == "open"
    assert '<a href="/conflicts">2 open</a>' in client.get("/me").text  # Anna's page links her own


def test_resolving_needs_the_csrf_token(seeded):
    client = admin(seeded)
    answer = client.post(f"/conflicts/{seeded.rows['anna'].id}/resolve", data={"choice": "kivicare"})
    assert answer.status_code == 400 and "This form has expired" in answer.text
    assert Conflict.get_by_id(seeded.rows["anna"].id).state == "open"


def test_refusals_are_plain_messages(seeded):
    client = admin(seeded)
    page = client.get("/conflicts")
    answer = resolve(client, page.text, seeded.rows["anna"].id, "both")
    assert answer.status_code == 303
    assert "Choose KiviCare's or Google's version." in text_of(client.get("/conflicts").text)
    assert resolve(client, page.text, 999, "google").status_code == 404
    Conflict.update(state="resolved").where(Conflict.id == seeded.rows["marc"].id).execute()
    resolve(client, page.text, seeded.rows["marc"].id, "google")
    assert "already resolved" in text_of(client.get("/conflicts").text)


def test_resolved_list_shows_the_last_fifty(seeded):
    base = utcnow() - timedelta(days=1)
    for n in range(55):
        Conflict.create(kind="move_without_plugin", doctor_id=ANNA, appointment_id=str(900 + n), state="resolved",
                        resolution="kivicare" if n % 2 else "google", resolved_by="admin",
                        resolved_at=base + timedelta(minutes=n))
    page = admin(seeded).get("/conflicts")
    resolved = page.text[page.text.index('id="resolved-title"'):]
    rows = re.findall(r'<td data-label="Appointment" class="mono">(\d+)</td>', resolved)
    assert len(rows) == 50 and rows[0] == "954" and "904" not in rows
    text = text_of(resolved)
    assert "KiviCare's version kept" in text and "Google's version kept" in text


# ---- end to end: the engine opens the conflict, the admin resolves it from the page ---------------

def site_for(make_runtime, google, **settings):
    settings.setdefault("sync.telemedicine_services", [])  # no Meet links to wait for: quick syncs
    runtime = make_runtime(**settings)
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    app = create_app(runtime)
    create_admin(runtime, ADMIN, PASSWORD)
    client = app.test_client()
    sign_in(client)
    return runtime, connection, client


def book(runtime, kivicare, start):
    return kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=start,
                                       service_mapping_ids=[mapping_id(runtime, ANNA, GENERAL)])


def test_a_move_without_the_plugin_is_resolved_from_the_page(make_runtime, kivicare, google):
    runtime, connection, client = site_for(make_runtime, google)
    appointment_id = book(runtime, kivicare, at(3, 10, 10))
    runtime.bridge.sync_once()
    event = our_events(google, connection.calendar_id, appointment_id)[0]
    google.user_patch(connection.calendar_id, event["id"], {
        "start": {"dateTime": at(5, 10, 10).isoformat()}, "end": {"dateTime": at(5, 10, 40).isoformat()}})
    runtime.bridge.sync_once()
    conflict = Conflict.get(Conflict.appointment_id == appointment_id)
    page = client.get("/conflicts")
    text = text_of(article(page.text, conflict.id))
    assert "Moved in Google, but KiviCare cannot be changed safely" in text
    assert "Needs the companion plugin" in text  # keeping Google's version would only open it again
    runtime.poll_requested.clear()
    answer = resolve(client, page.text, conflict.id, "kivicare")
    assert answer.status_code == 303 and answer.headers["Location"] == "/conflicts"
    assert runtime.poll_requested.is_set()
    after = client.get("/conflicts")
    assert (f"Conflict resolved. KiviCare's version of appointment {appointment_id} was kept"
            in text_of(after.text))
    assert Conflict.get_by_id(conflict.id).resolved_by == ADMIN
    assert "No open conflicts." in text_of(after.text)
    runtime.bridge.sync_once()
    event = our_events(google, connection.calendar_id, appointment_id)[0]
    assert instant(event["start"]["dateTime"]) == at(3, 10, 10)


def test_a_mass_cancel_is_confirmed_from_the_page(make_runtime, kivicare, google):
    runtime, connection, client = site_for(make_runtime, google)
    ids = [book(runtime, kivicare, at(6, 8 + n, 10)) for n in range(4)]
    runtime.bridge.sync_once()
    for event in our_events(google, connection.calendar_id):
        if instant(event["start"]["dateTime"]) > datetime.now(timezone.utc):
            google.user_delete(connection.calendar_id, event["id"])
    runtime.bridge.sync_once()
    conflict = Conflict.get(Conflict.kind == "mass_cancel")
    page = client.get("/conflicts")
    text = text_of(article(page.text, conflict.id))
    for appointment_id in ids:
        assert appointment_id in text
    assert all(kivicare.get_appointment(i)["status"] == 1 for i in ids)  # nothing cancelled before the choice
    resolve(client, page.text, conflict.id, "google")
    assert "KiviCare e-mails the patients" in text_of(client.get("/conflicts").text)
    assert all(kivicare.get_appointment(i)["status"] == 0 for i in ids)
