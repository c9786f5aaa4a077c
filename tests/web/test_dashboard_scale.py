"""The dashboard at clinic scale (issue 7, scenario e): its work stays fixed as the sync log grows, and the
per-doctor words translated once per page (``dashboard.CountWords``, ``common.relative``) still say each
doctor's own figures. The benchmark itself is bench/perf/pages.py (500 doctors, 1,000,000 log rows)."""

from __future__ import annotations

import re
from datetime import timedelta

from sidecar.storage import database
from sidecar.storage.models import Conflict, Connection, Doctor, SyncLog, utcnow

from .conftest import count_queries, text_of


def _row(page: str, doctor_id: int) -> str:
    return text_of(re.search(rf'<tr id="doctor-row-{doctor_id}".*?</tr>', page, re.S).group(0))


def _doctor(doctor_id: int, name: str, last_sync_at, **counts) -> None:
    Doctor.create(id=doctor_id, name=name)
    Connection.create(doctor=doctor_id, calendar_id=f"c{doctor_id}", calendar_name="Clinic", state="active",
                      last_sync_at=last_sync_at, sync_confirmed_at=utcnow() - timedelta(days=2), **counts)


def _log(doctor_id: int, outcome: str, n: int, *, at=None, direction="kivicare→google", action="create") -> None:
    at = at or utcnow() - timedelta(minutes=5)
    SyncLog.insert_many([{"at": at, "doctor_id": doctor_id, "action": action, "outcome": outcome,
                          "direction": direction} for _ in range(n)]).execute()


def test_each_doctor_row_says_its_own_figures(admin_client):
    """Counts and "last sync" words are translated once per distinct value: rows sharing a value share the
    words, and rows with other values are not given them."""
    now = utcnow()
    _doctor(3, "Anna Schmidt", now - timedelta(minutes=3))
    _doctor(4, "Marc Dubois", now - timedelta(minutes=3, seconds=20))  # the same words as Anna's
    _doctor(8, "Sofia Rossi", now - timedelta(hours=2, minutes=5))
    _doctor(9, "Lena Weber", now + timedelta(minutes=3))  # a clock ahead: "in 3 minutes", not "3 minutes ago"
    _log(3, "ok", 2)
    _log(3, "error", 1)
    _log(4, "ok", 2)
    _log(8, "ok", 5)
    _log(8, "ok", 1, direction="google→kivicare", action="reschedule")
    for doctor_id, n in ((3, 1), (8, 2)):
        for _ in range(n):
            Conflict.create(kind="both-changed", doctor_id=doctor_id, state="open")
    page = admin_client.get("/").text
    anna, marc, sofia, lena = (_row(page, d) for d in (3, 4, 8, 9))
    assert "KiviCare → Google: 2 synced, 1 failed" in anna and "Google → KiviCare: 0 synced" in anna
    assert "KiviCare → Google: 2 synced" in marc and "failed" not in marc
    assert "KiviCare → Google: 5 synced" in sofia and "Google → KiviCare: 1 synced" in sofia
    assert "1 open conflict" in anna and "open conflict" not in marc and "2 open conflicts" in sofia
    assert "3 minutes ago" in anna and "3 minutes ago" in marc and "2 hours ago" in sofia
    assert "in 3 minutes" in lena and "ago" not in lena


def test_the_dashboard_reads_the_same_queries_whatever_the_size_of_the_log(admin_client):
    """The log is read by grouped queries bounded to the last day, never a query per row or per hour."""
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    _doctor(3, "Anna Schmidt", now)
    _log(3, "ok", 3, at=hour)
    admin_client.get("/")
    few = count_queries(admin_client, "/")
    with database.obj.atomic():
        for hours_ago in range(1, 30):
            _log(3, "ok", 40, at=hour - timedelta(hours=hours_ago) + timedelta(minutes=10))
            _log(3, "error", 5, at=hour - timedelta(hours=hours_ago) + timedelta(minutes=20))
    assert count_queries(admin_client, "/") == few
    hours = admin_client.get("/api/status").json["hours"]
    # The hour is cut from the stored text in SQL: each of the last 24 hours gets its own rows, older ones none.
    assert [(h["ok"], h["error"]) for h in hours] == [(40, 5)] * 23 + [(3, 0)]


def test_a_log_entry_on_the_hour_counts_in_that_hour(admin_client):
    """SQLite stores a time with no microseconds as "YYYY-MM-DD HH:MM:SS": the hour is still its first 13
    characters."""
    now = utcnow()
    _doctor(3, "Anna Schmidt", now)
    on_the_hour = now.replace(minute=0, second=0, microsecond=0)
    _log(3, "ok", 2, at=on_the_hour)
    _log(3, "ok", 1, at=on_the_hour - timedelta(microseconds=1))  # the hour before
    hours = admin_client.get("/api/status").json["hours"]
    assert hours[-1]["ok"] == 2 and hours[-2]["ok"] == 1
