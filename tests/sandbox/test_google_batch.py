"""Contract tests of the sandbox's batch endpoint (``POST /batch/calendar/v3``), driven through the real
google-api-python-client ``BatchHttpRequest`` (Calendar batch guide; NOTES.md "Batch": the client ignores
``api_endpoint`` for batches, so ``batch_uri`` is given).
"""

from __future__ import annotations

import time

import httplib2
import pytest
import requests
from googleapiclient.http import BatchHttpRequest

from sandbox.google import GoogleSandbox

from .test_google_sandbox import ANNA, MARC, connect, event_body, service


@pytest.fixture(autouse=True)
def _oauthlib_env(monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")


@pytest.fixture
def sb():
    sandbox = GoogleSandbox()
    sandbox.start()
    yield sandbox
    sandbox.stop()


def batch_uri(sb: GoogleSandbox) -> str:
    return sb.base_url + "/batch/calendar/v3"


def run_batch(sb, requests_: list) -> dict:
    """Send ``requests_`` in one batch; ``{request_id: (response, exception)}`` in order of adding."""
    answers: dict = {}
    batch = BatchHttpRequest(callback=lambda rid, resp, exc: answers.__setitem__(rid, (resp, exc)),
                             batch_uri=batch_uri(sb))
    for n, req in enumerate(requests_):
        batch.add(req, request_id=str(n))
    batch.execute()
    return answers


def cal_id(sb: GoogleSandbox, email: str = ANNA) -> str:
    return sb.calendar_id(email, "Clinic appointments")


def eid(n: int) -> str:
    return f"kcbatch{n:05d}"


def test_inserts_in_one_batch_land_and_answer_per_call(sb):
    svc = service(sb, connect(sb))
    sb.reset_requests()
    reqs = [svc.events().insert(calendarId=cal_id(sb), body={**event_body(summary=f"n{n}"), "id": eid(n)},
                                conferenceDataVersion=1) for n in range(5)]
    answers = run_batch(sb, reqs)
    assert [answers[str(n)][0]["summary"] for n in range(5)] == [f"n{n}" for n in range(5)]
    assert all(exc is None for _, exc in answers.values())
    assert {e["id"] for e in sb.events(cal_id(sb))} >= {eid(n) for n in range(5)}
    log = sb.requests
    outer = [r for r in log if r["path"] == "/batch/calendar/v3"]
    inner = [r for r in log if r.get("batch")]
    assert len(outer) == 1 and outer[0]["calls"] == 5 and outer[0]["status"] == 200 and not outer[0]["batch"]
    assert len(inner) == 5 and all(r["method"] == "POST" and r["status"] == 200 for r in inner)
    assert all(r["auth_email"] == ANNA for r in inner)  # the outer Authorization applies
    assert inner[0]["query"]["conferenceDataVersion"] == "1" and inner[0]["json"]["summary"] == "n0"


def test_errors_stay_inside_their_part_and_the_batch_answers_200(sb):
    svc = service(sb, connect(sb))
    first = svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(1)}).execute()
    patch = svc.events().patch(calendarId=cal_id(sb), eventId=eid(1), body={"summary": "stale"})
    patch.headers["If-Match"] = '"not-the-etag"'
    reqs = [svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(1)}),   # 409
            patch,                                                                             # 412
            svc.events().get(calendarId=cal_id(sb), eventId="kcmissing000"),                   # 404
            svc.events().patch(calendarId=cal_id(sb), eventId=eid(1), body={"bogusField": 1}),  # 400
            svc.events().delete(calendarId=cal_id(sb), eventId=eid(1))]                        # 204
    answers = run_batch(sb, reqs)
    statuses = [answers[str(n)][1].resp.status if answers[str(n)][1] else 200 for n in range(5)]
    assert statuses == [409, 412, 404, 400, 200]
    assert b"duplicate" in answers["0"][1].content and b"conditionNotMet" in answers["1"][1].content
    assert answers["4"] == ("", None)  # 204: empty body, as a direct delete
    assert sb.event(cal_id(sb), eid(1))["status"] == "cancelled"
    assert first["summary"] == "Consultation"
    assert [r["status"] for r in sb.requests if r.get("batch")] == [409, 412, 404, 400, 204]


def test_if_match_with_the_current_etag_applies(sb):
    svc = service(sb, connect(sb))
    event = svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(2)}).execute()
    patch = svc.events().patch(calendarId=cal_id(sb), eventId=eid(2), body={"summary": "moved"})
    patch.headers["If-Match"] = event["etag"]
    answers = run_batch(sb, [patch])
    assert answers["0"][0]["summary"] == "moved"
    assert [r["if_match"] for r in sb.requests if r.get("batch")] == [event["etag"]]


def test_a_part_may_carry_its_own_authorization(sb):
    anna, marc = connect(sb, ANNA), connect(sb, MARC)
    svc_anna, svc_marc = service(sb, anna), service(sb, marc)
    reqs = [svc_anna.events().insert(calendarId=cal_id(sb, ANNA), body={**event_body(), "id": eid(3)}),
            svc_marc.events().insert(calendarId=cal_id(sb, MARC), body={**event_body(), "id": eid(4)})]
    answers = run_batch(sb, reqs)  # the outer request carries Anna's token; the parts their own
    assert answers["0"][1] is None and answers["1"][1] is None
    assert [r["auth_email"] for r in sb.requests if r.get("batch")] == [ANNA, MARC]


def test_no_token_anywhere_is_401_in_each_part(sb):
    body = ("--b1\r\nContent-Type: application/http\r\nContent-ID: <x + 1>\r\n\r\n"
            "GET /calendar/v3/users/me/calendarList HTTP/1.1\r\n\r\n\r\n--b1--\r\n")
    resp = requests.post(batch_uri(sb), data=body, headers={"Content-Type": "multipart/mixed; boundary=b1"},
                         timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    assert "Content-ID: <response-x + 1>" in resp.text and "HTTP/1.1 401 Unauthorized" in resp.text


def test_each_call_counts_against_the_per_user_limit():
    sb = GoogleSandbox(user_rate_limit=3)
    sb.start()
    try:
        svc = service(sb, connect(sb))
        reqs = [svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(n)}) for n in range(5)]
        answers = run_batch(sb, reqs)
        refused = [n for n in range(5) if answers[str(n)][1] is not None]
        assert refused == [3, 4]
        assert all(answers[str(n)][1].resp.status == 403 and b"rateLimitExceeded" in answers[str(n)][1].content
                   for n in refused)
        assert sb.limit_counts() == {"served": 3, "refused": 2}
        assert {e["id"] for e in sb.events(cal_id(sb))} & {eid(n) for n in range(5)} == {eid(0), eid(1), eid(2)}
    finally:
        sb.stop()


def test_fail_next_and_down_befall_calls_not_the_batch(sb):
    svc = service(sb, connect(sb))
    sb.fail_next(1, 503, "backendError")
    reqs = [svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(n)}) for n in range(3)]
    answers = run_batch(sb, reqs)
    assert answers["0"][1].resp.status == 503 and answers["1"][1] is None and answers["2"][1] is None


def test_one_latency_per_batch_http_request():
    sb = GoogleSandbox(latency=0.3)
    sb.start()
    try:
        svc = service(sb, connect(sb))
        reqs = [svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(n)}) for n in range(8)]
        began = time.monotonic()
        run_batch(sb, reqs)
        took = time.monotonic() - began
        assert 0.3 <= took < 0.3 * 3  # one hold, not eight
    finally:
        sb.stop()


def test_a_lost_batch_answer_was_carried_out(sb):
    svc = service(sb, connect(sb))
    sb.lose_answers(2, "POST")  # httplib2 sends a dropped request once more: both answers lost
    reqs = [svc.events().insert(calendarId=cal_id(sb), body={**event_body(), "id": eid(n)}) for n in range(3)]
    with pytest.raises((httplib2.HttpLib2Error, ConnectionError, OSError)):
        run_batch(sb, reqs)
    assert {e["id"] for e in sb.events(cal_id(sb))} >= {eid(0), eid(1), eid(2)}


def test_more_than_1000_parts_is_400(sb):
    token = connect(sb).token
    part = ("--b1\r\nContent-Type: application/http\r\nContent-ID: <x + {n}>\r\n\r\n"
            "GET /calendar/v3/users/me/calendarList HTTP/1.1\r\n\r\n\r\n")
    body = "".join(part.format(n=n) for n in range(1001)) + "--b1--\r\n"
    resp = requests.post(batch_uri(sb), data=body, timeout=30, headers={
        "Content-Type": "multipart/mixed; boundary=b1", "Authorization": f"Bearer {token}"})
    assert resp.status_code == 400 and "1000" in resp.json()["error"]["message"]
    assert not [r for r in sb.requests if r.get("batch")]  # nothing carried out


@pytest.mark.parametrize("content_type, body", [("application/json", "{}"),
                                                ("multipart/mixed; boundary=b1", "--b1--\r\n"),
                                                ("multipart/mixed; boundary=b1",
                                                 "--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n")])
def test_malformed_batches_are_400(sb, content_type, body):
    resp = requests.post(batch_uri(sb), data=body, headers={"Content-Type": content_type}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 400


def test_admin_and_oauth_paths_are_not_reachable_inside_a_batch(sb):
    body = ("--b1\r\nContent-Type: application/http\r\nContent-ID: <x + 1>\r\n\r\n"
            "POST /__sandbox__/reset HTTP/1.1\r\n\r\n\r\n--b1--\r\n")
    resp = requests.post(batch_uri(sb), data=body, headers={"Content-Type": "multipart/mixed; boundary=b1"},
                         timeout=5)
    assert resp.status_code == 200 and "HTTP/1.1 404 Not Found" in resp.text
