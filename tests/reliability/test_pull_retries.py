"""Incremental pulls (``events.list`` with a syncToken) get the same retries as every other call.

Soak finding 6: ``list_changes`` ran its requests bare, so under 20 % faults about a fifth of pulls
failed and waited for the next round. Now brief outages (5xx, a dropped connection) and rate limits
(429, 403 rateLimitExceeded/userRateLimitExceeded) are tried again with backoff and jitter inside the
pull, while 410 still surfaces at once as the signal for a bounded full sync, and quotaExceeded is
left to the long pause (never hammered).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from sidecar.calendars.base import CalendarRateLimited, CalendarSyncTokenExpired
from sidecar.storage.models import BusyBlock, SyncCursor

from ..conftest import ANNA, connect
from ..test_sync_engine import at


@pytest.fixture
def anna(runtime, google):
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # a sync token is stored: the next pull is incremental
    return connection


def list_requests(google) -> list[dict]:
    return [r for r in google.requests if r["method"] == "GET" and r["path"].endswith("/events")]


def busy_event(google, connection, hour: int) -> dict:
    return google.user_insert(connection.calendar_id, {
        "summary": "Dentist", "start": {"dateTime": at(6, hour, 0).isoformat()},
        "end": {"dateTime": (at(6, hour, 0) + timedelta(hours=1)).isoformat()}})


@pytest.mark.parametrize("status,reason", [(503, "backendError"), (500, "backendError"), (429, "rateLimitExceeded"),
                                           (403, "rateLimitExceeded"), (403, "userRateLimitExceeded")])
def test_an_incremental_pull_rides_out_outages_and_rate_limits(runtime, google, anna, status, reason):
    event = busy_event(google, anna, 13)
    google.reset_requests()
    google.fail_next(2, status, reason)
    report = runtime.bridge.pull_connection(anna)
    assert report is not None and report.full_syncs == 0 and report.events >= 1
    assert [r["status"] for r in list_requests(google)] == [status, status, 200]
    assert BusyBlock.select().where(BusyBlock.event_id == event["id"]).exists()


def test_an_incremental_pull_whose_answer_is_lost_is_asked_again(runtime, google, anna):
    event = busy_event(google, anna, 14)
    google.reset_requests()
    google.lose_answers(2, "GET")  # httplib2 resends once by itself; tenacity asks the second time
    report = runtime.bridge.pull_connection(anna)
    assert report is not None and report.events >= 1
    assert BusyBlock.select().where(BusyBlock.event_id == event["id"]).exists()


def test_an_expired_sync_token_is_not_retried_but_starts_a_full_sync(runtime, google, anna):
    event = busy_event(google, anna, 15)
    google.invalidate_sync_tokens()
    google.reset_requests()
    client = runtime.google_for(anna)
    token = SyncCursor.get(SyncCursor.calendar_id == anna.calendar_id).sync_token
    with pytest.raises(CalendarSyncTokenExpired):
        client.list_changes(anna.calendar_id, token)
    assert [r["status"] for r in list_requests(google)] == [410]  # at once, not tried again
    report = runtime.bridge.pull_connection(anna)
    assert report is not None and report.full_syncs == 1
    assert BusyBlock.select().where(BusyBlock.event_id == event["id"]).exists()


def test_quota_exceeded_on_a_pull_is_left_to_the_long_pause(runtime, google, anna):
    google.reset_requests()
    google.fail_next(1, 403, "quotaExceeded")
    client = runtime.google_for(anna)
    token = SyncCursor.get(SyncCursor.calendar_id == anna.calendar_id).sync_token
    with pytest.raises(CalendarRateLimited) as limited:
        client.list_changes(anna.calendar_id, token)
    assert limited.value.long_pause and len(list_requests(google)) == 1
