"""The dashboard, /api/status and /healthz: doctors' states and counts, health notes, recent activity."""

from __future__ import annotations

from datetime import timedelta

from sidecar.storage.models import Connection, Doctor, Job, SyncLog, utcnow

from .conftest import text_of


def _seed():
    now = utcnow()
    Doctor.create(id=3, name="Anna Schmidt", email="anna@example.test")
    Doctor.create(id=4, name="Marc Dubois")
    Doctor.create(id=8, name="Sofia Rossi")
    Doctor.create(id=9, name="Lena Weber")
    anna = Connection.create(doctor=3, account_email="anna@gmail.test", calendar_id="c1",
                             calendar_name="Clinic appointments", state="active",
                             last_sync_at=now - timedelta(minutes=3), synced_count=12, failed_count=1)
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
    assert "Anna Schmidt" in text and "3 minutes ago" in text and "(Europe/Paris)" in text
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
    for direction, outcome, minutes_ago in (("kivicare→google", "ok", 5), ("kivicare→google", "ok", 50),
                                            ("kivicare→google", "error", 70), ("google→kivicare", "ok", 10),
                                            ("google→kivicare", "error", 20), ("google→kivicare", "error", 30),
                                            ("google→kivicare", "skipped", 30), ("google→kivicare", "ok", 60 * 25),
                                            ("kivicare→google", "error", 60 * 30)):
        SyncLog.create(at=now - timedelta(minutes=minutes_ago), doctor_id=3, direction=direction, action="x",
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
    assert "KiviCare → Google: 2 ok, 1 error Google → KiviCare: 1 ok, 2 errors" in text
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
