"""``sidecar.calendars.google_batch.LeanBatchHttpRequest`` against the client's own ``BatchHttpRequest``: the
same calls give the same text on the wire (but for the random boundary and Content-ID base), and the same
answer bytes give every callback the same response or error.

The answers are the Google sandbox's, on loopback: the client's batch is sent to it and its answer
recorded; the lean batch is then given that very answer. A lean batch is also sent to the sandbox itself.
"""

from __future__ import annotations

import re

import google_auth_httplib2
import httplib2
import pytest
from googleapiclient.discovery import build
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest

from sidecar.calendars.google_batch import LeanBatchHttpRequest

from .sandbox.test_google_sandbox import ANNA, _oauthlib_env, connect, event_body, sb  # noqa: F401 - fixtures


class Wire:
    """An httplib2 transport that records each request and either sends it on (``replay`` None) or answers
    with a recorded ``(response, content)``."""

    def __init__(self):
        self.http = httplib2.Http()
        self.sent: list[tuple[str, str, str, dict]] = []
        self.replay: tuple | None = None
        self.last_answer: tuple | None = None

    def request(self, uri, method="GET", body=None, headers=None, **kwargs):
        self.sent.append((uri, method, body, dict(headers or {})))
        if self.replay is not None:
            return self.replay
        self.last_answer = self.http.request(uri, method=method, body=body, headers=headers, **kwargs)
        return self.last_answer


def calls(svc, calendar_id: str, existing: str) -> list:
    """One of each call the sidecar batches: an insert (non-ASCII text), a patch with If-Match, a patch of a
    missing event, an insert of an id that exists (409)."""
    insert = svc.events().insert(calendarId=calendar_id, body={**event_body(summary="Zoë ✓ consultation"),
                                                                "id": "kcpair00001"},
                                 conferenceDataVersion=1, sendUpdates="none")
    patch = svc.events().patch(calendarId=calendar_id, eventId=existing, body={"summary": "moved"},
                               conferenceDataVersion=1, sendUpdates="all")
    patch.headers["If-Match"] = '"not-the-etag"'
    missing = svc.events().patch(calendarId=calendar_id, eventId="kcpair00404", body={"summary": "x"},
                                 conferenceDataVersion=1, sendUpdates="none")
    twice = svc.events().insert(calendarId=calendar_id, body={**event_body(), "id": existing},
                                conferenceDataVersion=1, sendUpdates="none")
    return [insert, patch, missing, twice]


def run(batch_class, requests_, http, batch_uri: str) -> tuple[object, dict]:
    answers: dict = {}
    batch = batch_class(callback=lambda rid, resp, exc: answers.__setitem__(rid, (resp, exc)), batch_uri=batch_uri)
    for n, request in enumerate(requests_):
        batch.add(request, request_id=str(n))
    batch.execute(http=http)
    return batch, answers


def normalised(text: str, base_id: str) -> str:
    text = re.sub(r"={5,}[0-9A-Za-z]+==", "BOUNDARY", text)
    return text.replace(base_id, "BASE")


def outcome(answer: tuple) -> tuple:
    response, exc = answer
    if exc is None:
        return ("ok", response)
    assert isinstance(exc, HttpError)
    # The client keeps the status line's \r in ``reason`` (it splits the part at \n); the lean batch does not.
    return ("error", exc.resp.status, exc.resp.reason.rstrip("\r"), dict(exc.resp), exc.content, exc.uri)


def test_the_same_calls_make_the_same_text_and_the_same_answers_make_the_same_results(sb):
    creds = connect(sb)
    wire = Wire()
    http = google_auth_httplib2.AuthorizedHttp(creds, http=wire)
    svc = build("calendar", "v3", http=http, static_discovery=True, cache_discovery=False,
                client_options={"api_endpoint": sb.api_endpoint})
    calendar_id = sb.calendar_id(ANNA, "Clinic appointments")
    existing = svc.events().insert(calendarId=calendar_id, body={**event_body(), "id": "kcpair00002"}).execute()["id"]
    batch_uri = sb.base_url + "/batch/calendar/v3"

    wire.sent.clear()
    theirs, their_answers = run(BatchHttpRequest, calls(svc, calendar_id, existing), http, batch_uri)
    (uri, method, their_body, their_headers), = wire.sent
    assert {k: outcome(v)[0] for k, v in their_answers.items()} == {"0": "ok", "1": "error", "2": "error",
                                                                      "3": "error"}  # 412, 404, 409

    # The lean batch, given the sandbox's very answer to the client's (its Content-IDs named for the lean batch).
    ours_answers: dict = {}
    lean = LeanBatchHttpRequest(callback=lambda rid, resp, exc: ours_answers.__setitem__(rid, (resp, exc)),
                                batch_uri=batch_uri)
    for n, request in enumerate(calls(svc, calendar_id, existing)):
        lean.add(request, request_id=str(n))
    lean._id_to_header("0")  # makes its Content-ID base (the client makes it on first use)
    response, content = wire.last_answer
    wire.replay = (response, content.replace(str(theirs._base_id).encode(), str(lean._base_id).encode()))
    wire.sent.clear()
    lean.execute(http=http)
    (our_uri, our_method, our_body, our_headers), = wire.sent

    assert (our_uri, our_method) == (uri, method) == (batch_uri, "POST")
    assert normalised(our_body, str(lean._base_id)) == normalised(their_body, str(theirs._base_id))
    assert {k: normalised(v, "") for k, v in our_headers.items()} == \
        {k: normalised(v, "") for k, v in their_headers.items()}
    assert {k: outcome(v) for k, v in ours_answers.items()} == {k: outcome(v) for k, v in their_answers.items()}


def test_a_lean_batch_sent_to_the_sandbox_lands_every_call(sb):
    creds = connect(sb)
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http())
    svc = build("calendar", "v3", http=http, static_discovery=True, cache_discovery=False,
                client_options={"api_endpoint": sb.api_endpoint})
    calendar_id = sb.calendar_id(ANNA, "Clinic appointments")
    sb.reset_requests()
    requests_ = [svc.events().insert(calendarId=calendar_id, body={**event_body(summary=f"n{n} ✓"), "id": f"kclean{n:05d}"},
                                     conferenceDataVersion=1, sendUpdates="none") for n in range(30)]
    _, answers = run(LeanBatchHttpRequest, requests_, http, sb.base_url + "/batch/calendar/v3")
    assert sorted(answers, key=int) == [str(n) for n in range(30)]
    assert all(exc is None and resp["id"] == f"kclean{int(rid):05d}" for rid, (resp, exc) in answers.items())
    stored = svc.events().list(calendarId=calendar_id, maxResults=100).execute()["items"]
    assert {e["summary"] for e in stored if e["id"].startswith("kclean")} == {f"n{n} ✓" for n in range(30)}


# ---- reading answers the client reads ---------------------------------------------------------------------

def answer(text: str, content_type: str) -> tuple:
    return httplib2.Response({"status": "200", "content-type": content_type}), text.encode("utf-8")


class Canned:
    def __init__(self, reply):
        self.reply = reply

    def request(self, uri, method="GET", body=None, headers=None, **kwargs):
        return self.reply


def read_with(batch_class, reply) -> dict:
    """Both batches, given ``reply``, for two calls whose Content-IDs the reply names as ``<response-BASE + n>``."""
    svc = build("calendar", "v3", http=httplib2.Http(), static_discovery=True, cache_discovery=False,
                client_options={"api_endpoint": "http://127.0.0.1:9/calendar/v3/"})
    answers: dict = {}
    batch = batch_class(callback=lambda rid, resp, exc: answers.__setitem__(rid, (resp, exc)),
                        batch_uri="http://127.0.0.1:9/batch/calendar/v3")
    for n in range(2):
        batch.add(svc.events().get(calendarId="c", eventId=f"e{n}"), request_id=str(n))
    response, content = reply
    batch._id_to_header("0")  # makes its Content-ID base (the client makes it on first use)
    batch.execute(http=Canned((response, content.replace(b"BASE", str(batch._base_id).encode()))))
    return {k: outcome(v) for k, v in answers.items()}


PARTS = ("--{b}{nl}Content-Type: application/http{nl}Content-ID: <response-BASE + 0>{nl}{nl}"
         "HTTP/1.1 200 OK{nl}Content-Type: application/json; charset=UTF-8{nl}Vary: Origin{nl}Vary: X-Origin{nl}"
         "{nl}{{\"id\": \"e0\", \"summary\": \"Zoë\"}}{nl}"
         "--{b}{nl}Content-Type: application/http{nl}Content-ID: <response-BASE + 1>{nl}{nl}"
         "HTTP/1.1 404 Not Found{nl}Content-Type: application/json; charset=UTF-8{nl}"
         "{nl}{{\"error\": {{\"code\": 404, \"message\": \"Not Found\"}}}}{nl}"
         "--{b}--{nl}")


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
@pytest.mark.parametrize("quoted", [True, False])
def test_an_answer_is_read_as_the_client_reads_it_whatever_its_line_ends_and_boundary_quoting(newline, quoted):
    text = "preamble, ignored" + newline + PARTS.format(b="batch_Xy-1", nl=newline) + "epilogue, ignored"
    content_type = 'multipart/mixed; boundary="batch_Xy-1"' if quoted else "multipart/mixed; boundary=batch_Xy-1"
    ours = read_with(LeanBatchHttpRequest, answer(text, content_type))
    if newline == "\r\n":  # the client reads bare \n bodies wrongly (it splits the body at \r\n\r\n)
        assert ours == read_with(BatchHttpRequest, answer(text, content_type))
    assert ours["0"] == ("ok", {"id": "e0", "summary": "Zoë"}) and ours["1"][:2] == ("error", 404)


def test_an_answer_that_is_not_a_whole_multipart_is_a_batch_error():
    whole = PARTS.format(b="b1", nl="\r\n")
    with pytest.raises(BatchError, match="multipart/mixed"):
        read_with(LeanBatchHttpRequest, answer(whole, "application/json"))
    with pytest.raises(BatchError, match="closing boundary"):
        read_with(LeanBatchHttpRequest, answer(whole[:whole.rindex("--b1--")], "multipart/mixed; boundary=b1"))
    with pytest.raises(BatchError, match="status line"):
        read_with(LeanBatchHttpRequest, answer(whole.replace("HTTP/1.1 404 Not Found", "garbage"),
                                               "multipart/mixed; boundary=b1"))
