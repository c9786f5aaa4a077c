"""The dashboard, /api/status and /healthz: doctors' states and counts, health notes, recent activity, the
24-hour chart, first-sync progress, and a query count that does not grow with the number of doctors."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

from sidecar.storage.models import Appointment, Connection, Doctor, Job, MeetMapping, SyncLog, utcnow

from .conftest import count_queries, text_of


def _seed():
    now = utcnow()
    Doctor.create(id=3, name="Anna Schmidt", email="anna@example.test")
    Doctor.create(id=4, name="Marc Dubois")
    Doctor.create(id=8, name="Sofia Rossi")
    Doctor.create(id=9, name="Lena Weber")
    anna = Connection.create(doctor=3, account_email="anna@gmail.test", calendar_id="c1",
                             calendar_name="Clinic appointments", state="active",
                             last_sync_at=now - timedelta(minutes=3), synced_count=12, failed_count=1,
                             sync_confirmed_at=now - timedelta(days=3))
    Connection.create(doctor=4, account_email="marc@gmail.test", calendar_id="c2", calendar_name="Work",
                      state="needs_reconnect", last_error="invalid_grant")
    Connection.create(doctor=8, account_email="old@gmail.test", state="disconnected")
    for key, state in ((f"push:101:{anna.id}", "pending"), (f"conference:101:{anna.id}", "running"),
                       (f"push:102:{anna.id}", "done"), (f"push:103:{anna.id}1", "pending"),
                       (f"push:104:{anna.id + 1}", "pending")):
        Job.create(kind="push", dedupe_key=key, state=state)
    for i in range(25):
        SyncLog.create(at=now - timedelta(minutes=i), doctor_id=3, appointment_id=str(500 + i),
                       action="create", outcome="ok" if i else "error", error_class="" if i else "CalendarUnavailable")
    return anna


def test_api_status_reports_every_doctor(admin_client):
    anna = _seed()
    data = admin_client.get("/api/status").json
    by_id = {d["id"]: d for d in data["doctors"]}
    assert by_id[3]["state_label"] == "connected" and by_id[3]["pending_jobs"] == 2
    assert by_id[3]["synced"] == 12 and by_id[3]["failed"] == 1
    assert by_id[3]["calendar_name"] == "Clinic appointments" and by_id[3]["last_sync_at"].endswith("+00:00")
    assert by_id[4]["state_label"] == "needs reconnect"
    assert by_id[8]["state_label"] == "disconnected" and by_id[8]["account_email"] == ""
    assert by_id[9]["state_label"] == "not connected" and by_id[9]["connection_id"] is None
    assert len(data["recent"]) == 20 and data["recent"][0]["appointment_id"] == "500"
    assert data["recent"][0]["outcome"] == "error" and data["recent"][0]["error_class"] == "CalendarUnavailable"
    assert anna.id == by_id[3]["connection_id"]


def test_dashboard_page(admin_client, rt):
    _seed()
    rt.cfg.set("kivicare.base_url", "https://clinic.example")
    rt.cfg.set("kivicare.username", "sidecar")
    rt.set_state("site_timezone", "Europe/Paris")
    rt.set_state("poll", {"ok": False, "at": utcnow().isoformat(), "error": "KiviCare did not answer in time"})
    rt.set_state("e2ee", {"event": "encrypted", "at": utcnow().isoformat()})
    rt.set_state("addons", ["KiviCare Pro is active: turn its Google Calendar sync off."])
    page = admin_client.get("/")
    text = text_of(page.text)
    assert "KiviCare: not reachable: KiviCare did not answer in time" in text
    assert "its answers are encrypted" in text and "give it a WordPress user nobody logs in with" in text
    assert "KiviCare Pro is active" in text
    assert "Anna Schmidt" in text and "3 minutes ago" in text and "Times are in Europe/Paris" in text
    assert "needs reconnect" in text and "Reconnect" in text
    assert "CalendarUnavailable" in text
    health = admin_client.get("/api/status").json["health"]
    assert health["kivicare_ok"] is False and health["e2ee"] is True
    assert health["addon_warnings"] == ["KiviCare Pro is active: turn its Google Calendar sync off."]


def test_dashboard_when_nothing_is_set_up(admin_client):
    text = text_of(admin_client.get("/").text)
    assert "KiviCare: not set up yet" in text and "Google: not set up yet" in text
    assert "No doctors yet" in text and "Nothing synced yet." in text


def test_api_status_needs_sign_in(app, rt):
    from sidecar.web import create_admin
    create_admin(rt, "admin", "a long enough passphrase")
    answer = app.test_client().get("/api/status")
    assert answer.status_code == 401 and answer.json == {"error": "sign in required"}


def test_healthz(app):
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 200 and answer.json == {"status": "ok", "database": "ok"}


def test_healthz_when_the_database_is_gone(app, monkeypatch, tmp_path):
    import peewee

    from sidecar.storage import database
    monkeypatch.setattr(database, "obj", peewee.SqliteDatabase(str(tmp_path / "missing" / "x.db")))
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 503 and answer.json["status"] == "error"


def test_two_way_counts_busy_blocks_removed_doctors_and_missing_scopes(admin_client, rt):
    from sidecar.storage.models import BusyBlock, Conflict

    anna = _seed()
    now = utcnow()
    SyncLog.delete().execute()
    for direction, action, outcome, minutes_ago in (
            ("kivicare→google", "create", "ok", 5), ("kivicare→google", "update", "ok", 50),
            ("kivicare→google", "push", "error", 70), ("google→kivicare", "reschedule", "ok", 10),
            ("google→kivicare", "pull", "error", 20), ("google→kivicare", "cancel", "error", 30),
            ("google→kivicare", "conflict", "skipped", 30), ("google→kivicare", "cancel", "ok", 60 * 25),
            ("kivicare→google", "push", "error", 60 * 30),
            # about the connection, not a change: never counted
            ("kivicare→google", "connect", "ok", 6), ("kivicare→google", "confirm-first-sync", "ok", 6)):
        SyncLog.create(at=now - timedelta(minutes=minutes_ago), doctor_id=3, direction=direction, action=action,
                       outcome=outcome)
    for n in range(3):
        BusyBlock.create(connection=anna, doctor_id=3, calendar_id="c1", event_id=f"busy{n}",
                         start_utc=now + timedelta(hours=n), end_utc=now + timedelta(hours=n, minutes=30))
    Connection.update(refresh_token=rt.box.encrypt("1//anna"), scopes="openid email").where(
        Connection.id == anna.id).execute()
    Connection.update(state="removed").where(Connection.doctor == 4).execute()
    Conflict.create(kind="both_changed", doctor_id=3, appointment_id="501", connection=anna)

    data = {d["id"]: d for d in admin_client.get("/api/status").json["doctors"]}
    assert data[3]["activity_24h"] == {"kivicare_to_google": {"ok": 2, "error": 1},
                                       "google_to_kivicare": {"ok": 1, "error": 2}}
    assert data[3]["busy_blocks"] == 3 and data[3]["open_conflicts"] == 1
    assert data[3]["missing_scopes"] == ["https://www.googleapis.com/auth/calendar"]
    assert data[4]["state_label"] == "removed from KiviCare" and data[4]["missing_scopes"] == []
    assert data[9]["activity_24h"]["google_to_kivicare"] == {"ok": 0, "error": 0}

    text = text_of(admin_client.get("/").text)
    assert "KiviCare → Google: 2 synced, 1 failed Google → KiviCare: 1 synced, 2 failed" in text
    assert "Google did not grant access to the calendars" in text and "Reconnect" in text
    assert "removed from KiviCare" in text and "Keep or remove the events" in text
    assert "1 open conflict" in text and "Conflicts: 1 open" in text
    page = admin_client.get("/doctors/3")
    assert 'id="scope-warning"' in page.text and "Busy blocks 3" in text_of(page.text)
    # With the calendar scope granted, the warning goes.
    Connection.update(scopes="https://www.googleapis.com/auth/calendar openid").where(
        Connection.id == anna.id).execute()
    assert admin_client.get("/api/status").json["doctors"][0]["missing_scopes"] == []
    assert "Google did not grant access" not in text_of(admin_client.get("/").text)


# ---- states, health, chart, progress ----------------------------------------------------------------

def test_a_connection_waiting_for_confirmation_links_to_its_preview(admin_client, app):
    from tests.conftest import ANNA

    from .test_sso import ROLES, SECRET, signed_in

    Doctor.create(id=ANNA, name="Anna Schmidt")
    Connection.create(doctor=ANNA, account_email="anna@gmail.test", calendar_id="c1", calendar_name="Clinic",
                      state="active", sync_confirmed_at=None)
    data = {d["id"]: d for d in admin_client.get("/api/status").json["doctors"]}
    assert data[ANNA]["state"] == "held" and data[ANNA]["state_label"] == "waiting for confirmation"
    assert data[ANNA]["awaiting_confirmation"] is True and data[ANNA]["progress"] is None
    page = admin_client.get("/").text
    assert "waiting for confirmation" in text_of(page)
    link = re.search(r'<a href="([^"]+)">Review and confirm the first sync</a>', page)
    assert link and link.group(1) == f"/connect/{ANNA}/preview"
    # A receptionist sees the state, not a link to a page that changes anything.
    app.extensions["sidecar_runtime"].cfg.set("companion.secret", SECRET)
    desk, _ = signed_in(app, ROLES["receptionist"], uid=2, name="Claire Martin")
    page = desk.get("/").text
    assert "waiting for confirmation" in page and "An administrator confirms the first sync." in text_of(page)
    assert "/preview" not in page and "/connect" not in page


def test_health_strip_counts_google_errors_of_the_last_hour(admin_client, rt):
    rt.cfg.set("google.client_id", "id.apps.googleusercontent.com")
    now = utcnow()
    for minutes, outcome, cls in ((5, "error", "CalendarAuthError"), (20, "retry", "CalendarUnavailable"),
                                  (30, "error", "KiviCareAuthError"), (50, "ok", ""), (90, "error", "CalendarNotFound")):
        SyncLog.create(at=now - timedelta(minutes=minutes), doctor_id=3, action="push", outcome=outcome, error_class=cls)
    assert admin_client.get("/api/status").json["health"]["google_errors_1h"] == 2
    page = admin_client.get("/").text
    google = text_of(re.search(r'<li[^>]*id="health-google".*?</li>', page, re.S).group(0))
    assert google == "Google: 2 errors in the last hour"
    assert 'href="/log?outcome=problems&amp;period=1h"' in page
    SyncLog.delete().execute()
    assert "Google: no errors in the last hour" in text_of(admin_client.get("/").text)


def test_chart_of_the_last_24_hours_with_its_table(admin_client, rt):
    rt.set_state("site_timezone", "Asia/Kolkata")  # a half-hour offset: hours are labelled as they are there
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    for outcome, n, hours_ago in (("ok", 3, 0), ("error", 1, 0), ("ok", 5, 2), ("retry", 2, 2), ("ok", 7, 23),
                                  ("ok", 9, 24), ("skipped", 4, 0)):
        for _ in range(n):
            SyncLog.create(at=hour - timedelta(hours=hours_ago) + timedelta(minutes=1), doctor_id=3, action="create",
                           outcome=outcome)
    hours = admin_client.get("/api/status").json["hours"]
    assert len(hours) == 24 and hours[-1]["start"].startswith(hour.isoformat()[:13])
    assert (hours[-1]["ok"], hours[-1]["error"], hours[-1]["retry"]) == (3, 1, 0)
    assert (hours[-3]["ok"], hours[-3]["retry"]) == (5, 2) and hours[0]["ok"] == 7  # 24 hours ago is out
    summary = admin_client.get("/api/status").json["summary"]
    assert (summary["synced_24h"], summary["failed_24h"], summary["retried_24h"]) == (15, 1, 2)
    page = admin_client.get("/").text
    svg = re.search(r"<svg class=\"chart-svg\".*?</svg>", page, re.S).group(0)
    assert 'role="img"' in svg and 'aria-labelledby="chart-svg-title chart-svg-desc"' in svg
    assert "15 changes synced, 2 retried and 1 failed in the last 24 hours" in text_of(svg)
    assert svg.count('class="chart-bar"') == 24 and svg.count('class="bar-error"') == 1
    assert "style=" not in svg  # the Content-Security-Policy forbids inline styles: classes only
    table = re.search(r'<div class="visually-hidden">[^<]*<table id="chart-table">.*?</table>', page, re.S).group(0)
    local = hour.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
    last = f"{local:%H:%M}–{local + timedelta(hours=1):%H:%M}"
    assert last.endswith(":30") and f"{last} 3 0 1" in text_of(table)
    assert len(re.findall(r"<tr>", table)) == 25


def _initial_sync(rt, *, done: int, total: int, waiting: int, started_minutes_ago: int = 4, action: str = "connect"):
    now = utcnow()
    Doctor.create(id=5, name="Sofia Rossi")
    conn = Connection.create(doctor=5, account_email="sofia@gmail.test", calendar_id="sofia-cal", state="active",
                             calendar_name="Clinic", sync_confirmed_at=now - timedelta(days=2))
    SyncLog.create(at=now - timedelta(minutes=started_minutes_ago), doctor_id=5, action=action, outcome="ok")
    for n in range(total):
        Appointment.create(id=str(700 + n), doctor_id=5, start_utc=now + timedelta(days=1 + n), status=1,
                           end_utc=now + timedelta(days=1 + n, minutes=30), list_hash="h", data={})
        if n < done:
            MeetMapping.create(appointment_id=str(700 + n), doctor_id=5, connection=conn, calendar_id="sofia-cal",
                               event_id=f"e{n}", pushed_hash="sent")
        elif n < done + waiting:
            Job.create(kind="push", dedupe_key=f"push:{700 + n}:{conn.id}", state="pending")
    # Not counted: a cancelled appointment, another calendar's event, one beyond the horizon.
    Appointment.create(id="799", doctor_id=5, start_utc=now + timedelta(days=2), end_utc=now + timedelta(days=2),
                       status=0, list_hash="h", data={})
    Appointment.create(id="798", doctor_id=5, start_utc=now + timedelta(days=400), end_utc=now + timedelta(days=400),
                       status=1, list_hash="h", data={})
    return conn


def test_progress_while_a_first_sync_runs(admin_client, rt):
    _initial_sync(rt, done=26, total=40, waiting=14)
    sofia = {d["id"]: d for d in admin_client.get("/api/status").json["doctors"]}[5]
    assert sofia["progress"]["kind"] == "initial" and sofia["pending_jobs"] == 14
    assert (sofia["progress"]["done"], sofia["progress"]["total"], sofia["progress"]["percent"]) == (26, 40, 65)
    page = admin_client.get("/").text
    assert '<progress id="progress-5" max="40" value="26"' in page
    assert '<label for="progress-5">' in page  # the bar has a label
    assert "Sofia Rossi · first sync" in text_of(page) and "26 of 40 appointments" in text_of(page)
    assert 'src="/static/dashboard.js"' in page  # moves the bar without reloading (progressive enhancement)


def test_progress_after_a_reset_and_when_it_is_over(admin_client, rt):
    conn = _initial_sync(rt, done=3, total=5, waiting=2, action="reset-sync")
    assert admin_client.get("/api/status").json["doctors"][0]["progress"]["kind"] == "reset"
    # Every event confirmed: no bar.
    for n in range(3, 5):
        MeetMapping.create(appointment_id=str(700 + n), doctor_id=5, connection=conn, calendar_id="sofia-cal",
                           event_id=f"e{n}", pushed_hash="sent")
    assert admin_client.get("/api/status").json["doctors"][0]["progress"] is None
    assert "<progress" not in admin_client.get("/").text


def test_no_progress_without_waiting_work_or_long_after_the_start(admin_client, rt):
    # Two events never made (outside the services the admin syncs, say) and nothing waiting: no bar stuck at 60%.
    _initial_sync(rt, done=3, total=5, waiting=0, started_minutes_ago=30)
    assert admin_client.get("/api/status").json["doctors"][0]["progress"] is None
    SyncLog.update(at=utcnow() - timedelta(days=2)).where(SyncLog.action == "connect").execute()
    Job.create(kind="push", dedupe_key="push:703:1", state="pending")
    assert admin_client.get("/api/status").json["doctors"][0]["progress"] is None  # a day later: ordinary work


def test_waiting_jobs_are_counted_per_doctor_from_their_keys(admin_client):
    anna = _seed()
    Appointment.create(id="101", doctor_id=3, start_utc=utcnow(), end_utc=utcnow(), status=1, list_hash="h", data={})
    for key in ("busy:3", "fetch:101", "meet:101", f"pull:{anna.id}", "busy:4", "fetch:999", f"conference:9:{anna.id}"):
        Job.create(kind="x", dedupe_key=key, state="pending")
    by_id = {d["id"]: d for d in admin_client.get("/api/status").json["doctors"]}
    # push:101 and conference:101 (seeded) + busy:3, two reads of appointment 101, pull, conference:9; not
    # push:103:<another id ending in Anna's>, nor a read of an appointment the sidecar does not know.
    assert by_id[3]["pending_jobs"] == 2 + 5
    assert by_id[4]["pending_jobs"] == 2  # push:104 on Marc's connection, busy:4


def test_queries_do_not_grow_with_the_number_of_doctors(admin_client, rt):
    _seed()
    now = utcnow()

    def add_doctors(first: int, count: int):
        for n in range(first, first + count):
            Doctor.create(id=100 + n, name=f"Doctor {n}")
            conn = Connection.create(doctor=100 + n, calendar_id=f"cal{n}", state="active", last_sync_at=now,
                                     sync_confirmed_at=now - timedelta(days=1))
            Appointment.create(id=f"9{n}", doctor_id=100 + n, start_utc=now + timedelta(days=1), status=1,
                               end_utc=now + timedelta(days=1), list_hash="h", data={})
            Job.create(kind="push", dedupe_key=f"push:9{n}:{conn.id}", state="pending")  # a first sync running
            Job.create(kind="fetch", dedupe_key=f"fetch:9{n}", state="pending")
            SyncLog.create(doctor_id=100 + n, action="connect", outcome="ok")
            SyncLog.create(doctor_id=100 + n, action="create", outcome="error", error_class="CalendarUnavailable")

    add_doctors(0, 2)
    admin_client.get("/")
    few = count_queries(admin_client, "/")
    add_doctors(2, 60)
    assert sum(1 for d in admin_client.get("/api/status").json["doctors"] if d["progress"]) == 62
    assert count_queries(admin_client, "/") == few <= 25
    assert count_queries(admin_client, "/api/status") <= 25


def test_dashboard_page_structure(admin_client):
    _seed()
    page = admin_client.get("/").text
    assert page.count("<h1") == 1 and 'class="skip-link" href="#main"' in page and '<main id="main"' in page
    assert "style=" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert '<a href="/" id="nav-dashboard" aria-current="page">Dashboard</a>' in page
    assert 'href="/log"' in page  # the full sync log is one click away
    for name in ("Site health", "The last 24 hours", "Sync activity, last 24 hours", "Doctors", "Recent activity"):
        assert f">{name}</h2>" in page, name


# ---- figures that agree, the site icon ------------------------------------------------------------------

def test_synced_figures_agree_and_connecting_is_not_a_change(admin_client):
    """A doctor's "Synced", their last-24-hours tally, the figure above the chart and the chart count the same
    event writes; connecting the calendar and confirming its first sync are logged but not counted."""
    now = utcnow()
    Doctor.create(id=3, name="Anna Schmidt")
    Connection.create(doctor=3, account_email="anna@gmail.test", calendar_id="c1", calendar_name="Clinic",
                      state="active", last_sync_at=now, synced_count=4, sync_confirmed_at=now)
    for action in ("connect", "confirm-first-sync", "create", "create", "update", "delete", "meet-link"):
        SyncLog.create(at=now - timedelta(minutes=2), doctor_id=3, action=action, outcome="ok")
    SyncLog.create(at=now - timedelta(minutes=1), doctor_id=None, action="alert", outcome="error",
                   error_class="SMTPException")  # an e-mail that failed is not a failed sync
    data = admin_client.get("/api/status").json
    anna = data["doctors"][0]
    assert anna["synced"] == 4 and anna["activity_24h"]["kivicare_to_google"] == {"ok": 4, "error": 0}
    assert data["summary"]["synced_24h"] == 4 and sum(h["ok"] for h in data["hours"]) == 4
    assert data["summary"]["failed_24h"] == 0
    page = admin_client.get("/").text
    row = text_of(re.search(r'<tr id="doctor-row-3".*?</tr>', page, re.S).group(0))
    assert "KiviCare → Google: 4 synced" in row and "failed" not in row
    assert "Connecting a calendar or confirming its first sync is not a change." in text_of(page)
    recent = text_of(re.search(r'<section aria-labelledby="activity-title".*?</section>', page, re.S).group(0))
    assert "First sync confirmed" in recent and "Calendar connected" in recent and "confirm-first-sync" not in recent
    doctor_page = text_of(admin_client.get("/doctors/3").text)
    assert "Synced 4 (events written in Google)" in doctor_page and "KiviCare → Google: 4 synced" in doctor_page


def test_the_site_icon_is_served_and_linked(app, rt):
    from sidecar.web import create_admin

    client = app.test_client()
    icon = client.get("/favicon.ico")  # before the first admin exists too: no redirect to /setup
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert icon.data.lstrip().startswith(b"<svg") and b"<script" not in icon.data
    assert "no-store" not in icon.headers.get("Cache-Control", "")  # cached like every static file
    create_admin(rt, "admin", "a long enough passphrase")
    page = client.get("/login").text
    # Inline, made from the same file: no request of its own that a quick click could cut short.
    inline = re.search(r'<link rel="icon" type="image/svg\+xml" href="data:image/svg\+xml;base64,([^"]+)">', page)
    assert inline and base64.b64decode(inline.group(1)) == icon.data
    assert client.get("/static/favicon.svg", follow_redirects=True).data == icon.data  # one icon, one address
