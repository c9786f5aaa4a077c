"""The sync log page counts matching rows exactly up to ``synclog_page.COUNT_CAP`` and says "more than" beyond
(issue 7, scenario e: counting a million rows exactly cost more than the rest of the page)."""

from __future__ import annotations

from datetime import timedelta

from sidecar.storage import database
from sidecar.storage.models import SyncLog, utcnow
from sidecar.web.synclog_page import COUNT_CAP

from .conftest import text_of


def _log(n: int, outcome: str = "ok") -> None:
    at = utcnow() - timedelta(minutes=5)
    with database.obj.atomic():
        for start in range(0, n, 2000):
            SyncLog.insert_many([{"at": at, "doctor_id": 3, "action": "create", "outcome": outcome,
                                  "direction": "kivicare→google"} for _ in range(min(2000, n - start))]).execute()


def test_the_total_is_exact_up_to_the_cap_then_more_than(admin_client):
    SyncLog.delete().execute()
    _log(COUNT_CAP)
    assert f"{COUNT_CAP} entries match" in text_of(admin_client.get("/log").text)
    _log(1)
    page = text_of(admin_client.get("/log").text)
    assert "More than 10,000 entries match" in page and "50 per page" in page
    # A filter that matches fewer rows is counted exactly again.
    _log(3, outcome="error")
    assert "3 entries match" in text_of(admin_client.get("/log?outcome=error").text)
