"""Google push channels (events.watch): open, renew with a new id, stop the old one; notifications
trigger a pull without waiting for the poll; forged tokens and unknown channels are handled."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from werkzeug.serving import make_server

from sidecar.storage.models import SyncCursor, utcnow
from sidecar.web import create_app
from wp_bridge.loop import BridgeLoop

from .conftest import ANNA, connect
from .test_sync_engine import at, our_events


@pytest.fixture
def served(make_runtime, kivicare, google):
    """The sidecar's pages on a free loopback port, with push notifications allowed over http."""
    holder = {}

    def make(**settings):
        server = make_server("127.0.0.1", 0, None, threaded=True)
        port = server.server_port
        server.server_close()
        runtime = make_runtime(**{"web.public_url": f"http://127.0.0.1:{port}", "google.push_over_http": True,
                                  "bridge.poll_seconds": 3600, **settings})
        server = make_server("127.0.0.1", port, create_app(runtime), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        holder["server"] = server
        return runtime
    yield make
    if "server" in holder:
        holder["server"].shutdown()


def wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_change_in_google_is_pulled_on_notification_without_waiting_for_the_poll(served, kivicare, google):
    runtime = served()
    connection = connect(runtime, google, ANNA)
    runtime.bridge.startup()
    runtime.bridge.sync_once()  # first sync opens the channel
    cursor = SyncCursor.get(SyncCursor.calendar_id == connection.calendar_id)
    assert cursor.channel_id and cursor.channel_resource_id and cursor.channel_expiration > utcnow()
    loop = BridgeLoop(runtime, workers=1)
    loop.start()  # poll interval is an hour: only a notification can make this fast
    try:
        time.sleep(1.0)
        busy = google.user_insert(connection.calendar_id, {
            "summary": "Dentist", "start": {"dateTime": at(6, 13, 0).isoformat()},
            "end": {"dateTime": at(6, 14, 0).isoformat()}})
        from sidecar.storage.models import BusyBlock
        assert wait_for(lambda: BusyBlock.select().where(BusyBlock.event_id == busy["id"]).exists())
    finally:
        loop.stop()


def test_forged_token_is_refused_and_unknown_channels_get_200(served, kivicare, google):
    import requests
    runtime = served()
    connection = connect(runtime, google, ANNA)
    runtime.bridge.sync_once()
    cursor = SyncCursor.get(SyncCursor.calendar_id == connection.calendar_id)
    url = runtime.cfg.get("web.public_url") + "/hooks/google"
    forged = requests.post(url, headers={"X-Goog-Channel-ID": cursor.channel_id, "X-Goog-Channel-Token": "guess",
                                         "X-Goog-Resource-State": "exists"}, timeout=5)
    assert forged.status_code == 403
    unknown = requests.post(url, headers={"X-Goog-Channel-ID": "nope", "X-Goog-Resource-State": "exists"}, timeout=5)
    assert unknown.status_code == 200


def test_channels_are_renewed_with_a_new_id_before_expiry_and_the_old_one_stopped(served, kivicare, google):
    runtime = served()
    connection = connect(runtime, google, ANNA)
    runtime.bridge.sync_once()
    first = SyncCursor.get(SyncCursor.calendar_id == connection.calendar_id)
    assert runtime.bridge.inbound.ensure_channels(connection) == 0  # still valid: nothing to do
    later = first.channel_expiration - timedelta(hours=12)
    assert runtime.bridge.inbound.ensure_channels(connection, now=later) == 1
    renewed = SyncCursor.get(SyncCursor.calendar_id == connection.calendar_id)
    assert renewed.channel_id != first.channel_id
    stops = [r for r in google.requests if r["path"].endswith("/channels/stop")]
    assert stops and (stops[-1].get("json") or {}).get("id") == first.channel_id
