"""Push channels are only a hint (NOTES E #11): lost or expired channels lose nothing, bursts coalesce.

Google warns that notifications are "not 100% reliable", channels expire, and one change can bring
several messages. The sidecar keeps polling as the backstop, and a burst of messages for one
connection becomes one pull job (the job queue's dedupe key).
"""

from __future__ import annotations

from datetime import timedelta

from sidecar.storage.models import BusyBlock, Job, SyncCursor

from ..conftest import ANNA, connect
from ..test_sync_engine import at

NOBODY = "http://127.0.0.1:9"  # the discard port: every notification to it is lost


def busy(google, connection, hour: int) -> dict:
    return google.user_insert(connection.calendar_id, {
        "summary": "Dentist", "start": {"dateTime": at(8, hour, 0).isoformat()},
        "end": {"dateTime": (at(8, hour, 0) + timedelta(hours=1)).isoformat()}})


def blocked(event: dict) -> bool:
    return BusyBlock.select().where(BusyBlock.event_id == event["id"]).exists()


def test_lost_and_expired_notifications_are_caught_by_the_poll(make_runtime, google):
    runtime = make_runtime(**{"web.public_url": NOBODY, "google.push_over_http": True})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    assert SyncCursor.get(SyncCursor.calendar_id == connection.calendar_id).channel_id  # a channel is open

    google.drop_notifications(5)
    lost = busy(google, connection, 9)
    runtime.bridge.sync_once()  # the regular poll's pull
    assert blocked(lost)

    google.expire_channels()  # the channel died without telling anyone
    unseen = busy(google, connection, 11)
    runtime.bridge.sync_once()
    assert blocked(unseen)


def test_a_burst_of_notifications_becomes_one_pull(make_runtime, google):
    runtime = make_runtime(**{"web.public_url": NOBODY, "google.push_over_http": True})
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()
    cursor = SyncCursor.get(SyncCursor.calendar_id == connection.calendar_id)
    token = runtime.box.decrypt(cursor.channel_token)
    answers = [runtime.bridge.inbound.on_notification(cursor.channel_id, token, "exists") for _ in range(5)]
    assert answers == ["pulled"] * 5
    pulls = Job.select().where(Job.kind == "pull")
    assert pulls.count() == 1 and pulls.get().state == "pending"
    event = busy(google, connection, 13)
    assert runtime.bridge.run_due_jobs() >= 1
    assert blocked(event) and Job.get(Job.kind == "pull").state == "done"
