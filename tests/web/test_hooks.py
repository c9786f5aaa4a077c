"""The companion plugin's signed calls into the sidecar: ``POST /hooks/kivicare`` (hints) and
``POST /hooks/ping``. Signature, age, configuration and body checks answer JSON (never a page or a
stack trace) and change nothing; an accepted hint is answered at once and handed to
``runtime.bridge.on_hint`` in the background. End to end: a booking in the KiviCare sandbox (plugin
emulated) reaches Google through the hint, without waiting for a poll."""

from __future__ import annotations

import json
import threading
import time

import pytest

from sidecar.config import Config
from sidecar.runtime import Runtime
from sidecar.web import create_admin, create_app
from sidecar.web.hooks import SIDECAR_VERSION, HintDispatcher
from tests.conftest import ANNA, connect, sandbox_settings
from wp_bridge.signing import signed_headers

from .conftest import ADMIN, PASSWORD

SECRET = "hooks-test-secret-4f1c2b7a9d0e3f5a6b8c9d0e1f2a3b4c"


def hint_body(appointment_id="36", event="kc_appointment_updated") -> bytes:
    return json.dumps({"event": event, "appointment_id": appointment_id, "site": "https://clinic.example",
                       "sent_at": int(time.time())}, separators=(",", ":")).encode()


def signed_post(client, path: str, body: bytes, secret: str = SECRET, timestamp: int | None = None,
                sign_path: str | None = None):
    headers = {"Content-Type": "application/json", **signed_headers(secret, "POST", sign_path or path, body, timestamp)}
    return client.post(path, data=body, headers=headers)


@pytest.fixture
def hooked(rt, monkeypatch):
    """An app with a secret and an admin; ``hooked.calls`` records what reached ``on_hint``."""
    rt.cfg.set("companion.secret", SECRET)
    create_admin(rt, ADMIN, PASSWORD)
    app = create_app(rt)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(rt.bridge, "on_hint", lambda appointment_id, event="": calls.append((appointment_id, event)))
    app.calls = calls
    return app


def drain(app) -> None:
    assert app.extensions["sidecar_hints"].drain(5)


def test_a_signed_hint_is_accepted_at_once_and_handed_to_the_engine(hooked):
    client = hooked.test_client()
    answer = signed_post(client, "/hooks/kivicare", hint_body())
    assert answer.status_code == 202 and answer.json == {"ok": True, "queued": True}
    assert "Set-Cookie" not in answer.headers  # no session, no CSRF token needed
    drain(hooked)
    assert hooked.calls == [("36", "kc_appointment_updated")]
    # An integer id and every event of the protocol are fine.
    for event in ("kc_after_create_appointment", "kc_appointment_status_update", "kc_appointment_cancelled",
                  "kc_appointment_deleted", "kc_sidecar_rescheduled"):
        body = json.dumps({"event": event, "appointment_id": 40, "site": "x", "sent_at": 1}).encode()
        assert signed_post(client, "/hooks/kivicare", body).status_code == 202
        drain(hooked)
    assert [c[1] for c in hooked.calls[1:]] == ["kc_after_create_appointment", "kc_appointment_status_update",
                                                "kc_appointment_cancelled", "kc_appointment_deleted",
                                                "kc_sidecar_rescheduled"]
    assert hooked.extensions["sidecar_runtime"].get_state("companion_hint")["event"] == "kc_appointment_updated"


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "other path", "unsigned", "garbage signature",
                                  "stale", "future"])
def test_bad_or_stale_signatures_are_refused_and_nothing_happens(hooked, case):
    client = hooked.test_client()
    body = hint_body()
    if case == "wrong secret":
        answer = signed_post(client, "/hooks/kivicare", body, secret="not-the-secret")
    elif case == "tampered body":
        headers = {"Content-Type": "application/json", **signed_headers(SECRET, "POST", "/hooks/kivicare", body)}
        answer = client.post("/hooks/kivicare", data=body.replace(b'"36"', b'"37"'), headers=headers)
    elif case == "other path":
        answer = signed_post(client, "/hooks/kivicare", body, sign_path="/hooks/ping")
    elif case == "unsigned":
        answer = client.post("/hooks/kivicare", data=body, content_type="application/json")
    elif case == "garbage signature":
        answer = client.post("/hooks/kivicare", data=body, headers={
            "X-KC-Sidecar-Timestamp": str(int(time.time())), "X-KC-Sidecar-Signature": "v1=<script>"})
    elif case == "stale":
        answer = signed_post(client, "/hooks/kivicare", body, timestamp=int(time.time()) - 301)
    else:
        answer = signed_post(client, "/hooks/kivicare", body, timestamp=int(time.time()) + 301)
    assert answer.status_code == 401 and answer.is_json
    expected = "stale_request" if case in ("stale", "future") else "bad_signature"
    assert answer.json["error"] == expected and answer.json["message"]
    assert SECRET not in answer.text
    drain(hooked)
    assert hooked.calls == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"appointment_id": "36"}',
                                  b'{"event": "kc_appointment_updated"}',
                                  b'{"event": "kc_appointment_updated", "appointment_id": "abc"}',
                                  b'{"event": "kc_appointment_updated", "appointment_id": "1/../2"}',
                                  b'{"event": "DROP TABLE", "appointment_id": "36"}',
                                  b'{"event": "kc_appointment_updated", "appointment_id": true}', b""])
def test_malformed_bodies_are_400(hooked, body):
    answer = signed_post(hooked.test_client(), "/hooks/kivicare", body)
    assert answer.status_code == 400 and answer.json["error"] == "bad_request"
    drain(hooked)
    assert hooked.calls == []


def test_too_large_body_is_refused(hooked):
    body = json.dumps({"event": "kc_appointment_updated", "appointment_id": "36", "pad": "x" * 20000}).encode()
    answer = signed_post(hooked.test_client(), "/hooks/kivicare", body)
    assert answer.status_code == 413 and answer.json["error"] == "too_large"


def test_without_a_secret_the_hooks_answer_503_even_before_setup(rt):
    app = create_app(rt)  # no admin yet: the hooks still answer JSON, not the setup redirect
    client = app.test_client()
    for path in ("/hooks/kivicare", "/hooks/ping"):
        answer = signed_post(client, path, hint_body(), secret="anything")
        assert answer.status_code == 503 and answer.json["error"] == "not_configured"


def test_ping_answers_with_the_version_and_is_remembered(hooked):
    body = json.dumps({"site": "https://clinic.example", "plugin_version": "1.0.0"}).encode()
    answer = signed_post(hooked.test_client(), "/hooks/ping", body)
    assert answer.status_code == 200 and answer.json == {"ok": True, "sidecar_version": SIDECAR_VERSION}
    noted = hooked.extensions["sidecar_runtime"].get_state("companion_ping")
    assert noted["plugin_version"] == "1.0.0" and noted["site"] == "https://clinic.example"
    assert signed_post(hooked.test_client(), "/hooks/ping", body, secret="wrong").status_code == 401


def test_wrong_method_is_not_a_stack_trace(hooked):
    answer = hooked.test_client().get("/hooks/kivicare")
    assert answer.status_code == 405


def test_behind_a_proxy_prefix_the_public_path_is_accepted(make_rt, monkeypatch):
    rt = make_rt(**{"web.public_url": "https://clinic.example/calendar"})
    rt.cfg.set("companion.secret", SECRET)
    create_admin(rt, ADMIN, PASSWORD)
    app = create_app(rt)
    calls = []
    monkeypatch.setattr(rt.bridge, "on_hint", lambda appointment_id, event="": calls.append(appointment_id))
    answer = signed_post(app.test_client(), "/hooks/kivicare", hint_body(), sign_path="/calendar/hooks/kivicare")
    assert answer.status_code == 202
    assert app.extensions["sidecar_hints"].drain(5) and calls == ["36"]


def test_engine_errors_only_ask_for_a_poll(hooked, monkeypatch):
    rt = hooked.extensions["sidecar_runtime"]

    def broken(appointment_id, event=""):
        raise RuntimeError("KiviCare exploded")

    monkeypatch.setattr(rt.bridge, "on_hint", broken)
    rt.poll_requested.clear()
    answer = signed_post(hooked.test_client(), "/hooks/kivicare", hint_body())
    assert answer.status_code == 202
    drain(hooked)
    assert rt.poll_requested.is_set()
    monkeypatch.setattr(rt.bridge, "on_hint", lambda appointment_id, event="": hooked.calls.append((appointment_id, event)))
    assert signed_post(hooked.test_client(), "/hooks/kivicare", hint_body("37")).status_code == 202
    drain(hooked)
    assert hooked.calls == [("37", "kc_appointment_updated")]  # the worker survived


class _FakeRuntime:
    def __init__(self):
        self.release = threading.Event()
        self.calls = []
        self.polls = 0
        self.states = {}
        rt = self

        class Bridge:
            def on_hint(self, appointment_id, event=""):
                rt.release.wait(5)
                rt.calls.append((appointment_id, event))

        self.bridge = Bridge()

    def request_poll(self):
        self.polls += 1

    def set_state(self, name, value):
        self.states[name] = value


def test_hints_for_one_appointment_are_merged_while_waiting():
    fake = _FakeRuntime()
    dispatcher = HintDispatcher(fake, idle=0.2, maxsize=3)
    assert dispatcher.submit("1", "kc_after_create_appointment")
    time.sleep(0.05)  # the worker is now inside on_hint("1")
    assert dispatcher.submit("2", "kc_after_create_appointment")
    assert dispatcher.submit("2", "kc_appointment_updated")  # merged with the waiting one
    assert dispatcher.submit("3", "kc_appointment_updated")
    assert dispatcher.submit("4", "kc_appointment_updated")
    assert not dispatcher.submit("5", "kc_appointment_updated")  # queue full: a poll instead
    assert fake.polls == 1
    fake.release.set()
    assert dispatcher.drain(5)
    assert fake.calls == [("1", "kc_after_create_appointment"), ("2", "kc_appointment_updated"),
                          ("3", "kc_appointment_updated"), ("4", "kc_appointment_updated")]
    time.sleep(0.4)  # idle: the worker ends, and a new hint starts a new one
    assert dispatcher.submit("6", "kc_appointment_deleted") and dispatcher.drain(5)
    assert fake.calls[-1] == ("6", "kc_appointment_deleted")


# ---- end to end: the sandbox's plugin emulation -> the live sidecar -> Google -----------------------

def test_a_booking_reaches_google_through_the_hint(live, kivicare, google, tmp_path):
    from tests.test_sync_engine import our_events

    overrides = sandbox_settings(kivicare, google, tmp_path, **{"web.public_url": live.url})
    rt = Runtime(Config(None, environ={}, overrides=overrides))
    rt.cfg.set("companion.secret", SECRET)
    create_admin(rt, ADMIN, PASSWORD)
    live.app = create_app(rt)
    anna = connect(rt, google, ANNA)
    rt.bridge.startup()
    rt.bridge.sync_once()
    kivicare.install_companion(SECRET, live.url)

    new_id = kivicare.create_appointment(doctor_id=ANNA, patient_id=5, start_utc=_tomorrow_at(16, 10),
                                         service_mapping_ids=[1])
    assert kivicare.companion.flush_hints(5)
    assert kivicare.companion.hints[-1] == {"event": "kc_after_create_appointment", "appointment_id": new_id,
                                            "status": 202, "error": ""}
    assert live.app.extensions["sidecar_hints"].drain(5)
    kivicare.reset_requests()
    for _ in range(5):  # what the loop's workers do when woken; no poll of the appointment list
        if not rt.bridge.run_due_jobs():
            break
    assert len(our_events(google, anna.calendar_id, new_id)) == 1
    paths = [r["path"] for r in kivicare.requests]
    assert f"/wp-json/kivicare/v1/appointments/{new_id}" in paths
    assert "/wp-json/kivicare/v1/appointments" not in paths  # the hint was enough: no window listing


def _tomorrow_at(hour: int, minute: int):
    from datetime import datetime, timedelta, timezone
    day = datetime.now(timezone.utc).date() + timedelta(days=2)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)
