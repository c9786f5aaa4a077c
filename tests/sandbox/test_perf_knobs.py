"""The sandboxes' benchmark knobs (issue 7): simulated latency and Google's per-user rate limit.

Counts are asserted exactly; timings only against a generous lower bound (the machine may be slow,
never faster than a sleep). Both knobs default to off, which the rest of the suite relies on.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
import requests

from sandbox.google import GoogleSandbox
from sandbox.kivicare import KiviCareSandbox
from tests.sandbox.test_google_sandbox import ANNA, MARC, connect

NOW = datetime(2027, 3, 20, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _oauthlib_env(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")


def _google(**knobs) -> GoogleSandbox:
    sandbox = GoogleSandbox(**knobs)
    sandbox.start()
    return sandbox


def _list_calendars(sb: GoogleSandbox, token: str) -> requests.Response:
    return requests.get(sb.api_endpoint + "users/me/calendarList", headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


def test_knobs_default_off():
    sb = GoogleSandbox()
    kc = KiviCareSandbox(now=lambda: NOW)
    assert (sb.latency, sb.user_rate_limit, sb.limit_counts()) == (0.0, 0, {"served": 0, "refused": 0})
    assert (kc.latency, kc.latency_per_row) == (0.0, 0.0)


@pytest.mark.parametrize("status", [403, 429])
def test_google_per_user_limit_refuses_beyond_the_window(status):
    sb = _google(user_rate_limit=5, rate_limit_status=status)
    try:
        anna, marc = connect(sb, ANNA).token, connect(sb, MARC).token
        answers = [_list_calendars(sb, anna).status_code for _ in range(7)]
        assert answers == [200] * 5 + [status] * 2
        refused = _list_calendars(sb, anna)
        error = refused.json()["error"]
        assert error["code"] == status
        assert error["errors"][0]["reason"] == "rateLimitExceeded"
        assert error["errors"][0]["domain"] == "usageLimits"
        assert _list_calendars(sb, marc).status_code == 200  # the limit is per user
        assert sb.limit_counts() == {"served": 6, "refused": 3}
        # Refused requests were not carried out: only the served ones reached the request log.
        assert len([r for r in sb.requests if r["path"].endswith("calendarList")]) == 6
    finally:
        sb.stop()


def test_google_latency_holds_every_api_request():
    sb = _google(latency=0.2)
    try:
        token = connect(sb, ANNA).token
        began = time.monotonic()
        for _ in range(3):
            assert _list_calendars(sb, token).status_code == 200
        assert time.monotonic() - began >= 3 * 0.2
    finally:
        sb.stop()


def test_kivicare_latency_grows_with_the_appointments_listed():
    kc = KiviCareSandbox(now=lambda: NOW, latency=0.05, latency_per_row=0.02)
    kc.start()
    try:
        auth = requests.auth.HTTPBasicAuth(kc.username, kc.app_password)
        url = kc.rest_url + "/appointments"
        everything = {"timezone": "UTC", "date_from": "2027-01-01", "date_to": "2027-12-31", "perPage": "all"}
        began = time.monotonic()
        answer = requests.get(url, params=everything, auth=auth, timeout=30)
        elapsed = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        rows = len(answer.json()["data"]["appointments"])
        assert rows >= 5  # the seeded clinic
        assert elapsed >= 0.05 + 0.02 * rows
        began = time.monotonic()
        requests.get(kc.base_url + "/__sandbox__/state", timeout=10)  # staff/admin actions are not held
        assert time.monotonic() - began < 0.05 + 0.02 * rows
    finally:
        kc.stop()
