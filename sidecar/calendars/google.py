"""Google Calendar API v3 through the real google-api-python-client (../shared/google/NOTES.md).

One parsed discovery document and one built service per ``api_endpoint`` serve the whole process
(``_SharedApi``): building googleapiclient's resources (``service.events()`` makes every method and its
docstring anew) cost ~11 ms a call. Each request is bound to its account's ``AuthorizedHttp`` before it is
sent, over one ``httplib2.Http`` per thread (``_thread_http``: httplib2 is not thread-safe), which keeps its
connections to Google open from one job to the next. ``api_endpoint`` comes from the settings so the
sandbox and Google are the same code path.
Writes follow the NOTES: deterministic base32hex event ids make a repeated insert answer 409,
which becomes get + patch; ``conferenceDataVersion=1`` on every write; we PATCH only the fields
we own, so a doctor's own reminders or colour survive. ``upsert_many`` sends several writes in Google
batch requests (``<root>/batch/calendar/v3``, derived from ``api_endpoint``; the client's batch with its
multipart body made by hand, ``google_batch.LeanBatchHttpRequest``). HTTP failures become the
named errors of ``sidecar.calendars.base`` here and nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.auth.transport.requests import Request as AuthRequest
from google.oauth2.credentials import Credentials
from googleapiclient import discovery_cache
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from tenacity import Retrying, retry_if_exception, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from .base import (CalendarAuthError, CalendarChanged, CalendarEvent, CalendarInfo, CalendarNotFound, CalendarRateLimited,
                   CalendarRequestError, CalendarSyncTokenExpired, CalendarUnavailable, EventSpec, EventState)
from .google_batch import LeanBatchHttpRequest

log = logging.getLogger(__name__)

SCOPE_CALENDAR = "https://www.googleapis.com/auth/calendar"
SCOPE_EVENTS = "https://www.googleapis.com/auth/calendar.events"
REQUIRED_SCOPES = (SCOPE_CALENDAR,)
PRIVATE_KEY = "kcAppointmentId"
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_QUOTA_REASONS = {"quotaExceeded", "dailyLimitExceeded"}
MAX_BATCH_CALLS = 1000  # Calendar batch guide: at most 1000 calls in one batch request (NOTES.md C)

_doc_lock = threading.Lock()
_doc: dict | None = None


def _discovery_doc() -> dict:
    """The Calendar v3 discovery document shipped with the client, parsed once per process."""
    global _doc
    with _doc_lock:
        if _doc is None:
            _doc = json.loads(discovery_cache.get_static_doc("calendar", "v3"))
        return _doc


class _Unbound:
    """The http of the shared service: never used, because every request is bound to an account's http first."""

    def request(self, *args, **kwargs):
        raise RuntimeError("a Calendar request was sent without an account's http (GoogleCalendar._bind)")


class _SharedApi:
    """The Calendar v3 resources for one ``api_endpoint``, built once per process (``_shared_api``).

    Thread-safe: making a request only reads the resource; the request is then bound to the calling
    account's http (``GoogleCalendar._bind``), so no account's credentials live here."""

    def __init__(self, api_endpoint: str):
        service = build_from_document(_discovery_doc(), http=_Unbound(), client_options={"api_endpoint": api_endpoint})
        self.events = service.events()
        self.calendar_list = service.calendarList()
        self.calendars = service.calendars()
        self.freebusy = service.freebusy()
        self.channels = service.channels()


_apis_lock = threading.Lock()
_apis: dict[str, _SharedApi] = {}
_thread = threading.local()


def _shared_api(api_endpoint: str) -> _SharedApi:
    """The process's ``_SharedApi`` for ``api_endpoint`` (built on first use)."""
    with _apis_lock:
        api = _apis.get(api_endpoint)
        if api is None:
            api = _apis[api_endpoint] = _SharedApi(api_endpoint)
        return api


def _thread_http(timeout: float) -> httplib2.Http:
    """This thread's ``httplib2.Http`` for ``timeout`` (seconds): its connection pool, shared by every account
    the thread works for (the Authorization header is added per request by ``AuthorizedHttp``)."""
    pool = getattr(_thread, "http", None)
    if pool is None:
        pool = _thread.http = {}
    http = pool.get(timeout)
    if http is None:
        http = pool[timeout] = httplib2.Http(timeout=timeout)
    return http


def event_id_for(site: str, appointment_id: str, calendar_id: str) -> str:
    """Deterministic Google event id: base32hex (``[a-v0-9]``) of SHA-256(site|appointment|calendar).

    The same appointment in the same calendar always gets the same id, so an insert repeated after a
    crash answers 409 instead of creating a duplicate (DESIGN invariant 1).
    """
    digest = hashlib.sha256(f"{site}|{appointment_id}|{calendar_id}".encode("utf-8")).digest()
    return "kc" + base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()[:30]


def _rfc3339_to_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return None


def event_body(spec: EventSpec, site: str, *, create_conference: bool, request_id: str,
               drop_conference: bool = False) -> dict:
    """The JSON fields we own for ``spec`` (Google Event resource). Times carry the doctor's zone."""
    zone = ZoneInfo(spec.timezone)
    body: dict = {
        "summary": spec.title,
        "description": spec.description,
        "location": spec.location,
        "start": {"dateTime": spec.start.astimezone(zone).isoformat(), "timeZone": spec.timezone},
        "end": {"dateTime": spec.end.astimezone(zone).isoformat(), "timeZone": spec.timezone},
        "status": "tentative" if spec.tentative else "confirmed",
        "extendedProperties": {"private": {PRIVATE_KEY: spec.appointment_id, "kcSite": site}},
    }
    if spec.color_id:
        body["colorId"] = spec.color_id
    if spec.reminder_minutes is not None:
        body["reminders"] = {"useDefault": False, "overrides": [
            {"method": "popup", "minutes": int(m)} for m in spec.reminder_minutes[:5]]}
    if spec.attendee_email:
        body["attendees"] = [{"email": spec.attendee_email}]
    if create_conference:
        body["conferenceData"] = {"createRequest": {"requestId": request_id,
                                                    "conferenceSolutionKey": {"type": "hangoutsMeet"}}}
    elif drop_conference:
        body["conferenceData"] = None
    return body


def _state(event: dict) -> EventState:
    # Fuzzing fix (tests/reliability/test_fuzz_google.py): every level is checked to be an object/list
    # before use and the texts are strings, so an odd answer cannot raise AttributeError/TypeError here.
    def obj(value) -> dict:
        return value if isinstance(value, dict) else {}

    conference = obj(event.get("conferenceData"))
    status = obj(obj(conference.get("createRequest")).get("status")).get("statusCode", "")
    status = status if isinstance(status, str) else ""
    link = event.get("hangoutLink") or ""
    link = link if isinstance(link, str) else ""
    if not link:
        entries = conference.get("entryPoints")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("entryPointType") == "video":
                uri = entry.get("uri", "")
                link = uri if isinstance(uri, str) else ""
    if link and not status:
        status = "success"
    return EventState(event_id=str(event.get("id", "")), etag=str(event.get("etag", "")),
                      updated=_when({"dateTime": event.get("updated")}, "UTC")[0],
                      status=str(event.get("status", "")), hangout_link=link, conference_status=status)


def _when(value: dict | None, zone: str) -> tuple[datetime | None, bool]:
    """An event's start or end as aware UTC; all-day ``date`` values are local midnights in ``zone``."""
    # Fuzzing fixes (tests/reliability/test_fuzz_google.py): a start/end that is not an object, a
    # dateTime or date that is not a string, an unknown or malformed timeZone (falls back to ``zone``, then
    # UTC) and instants that overflow near years 1 and 9999 give None instead of raising.
    if not value or not isinstance(value, dict):
        return None, False
    if value.get("dateTime"):
        text = value["dateTime"]
        try:
            return (_rfc3339_to_utc(text) if isinstance(text, str) else None), False
        except OverflowError:
            return None, False
    if value.get("date"):
        text = value["date"]
        try:
            day = datetime.fromisoformat(text) if isinstance(text, str) else None
        except ValueError:
            day = None
        if day is None:
            return None, True
        local = None
        for name in (value.get("timeZone"), zone, "UTC"):
            try:
                local = ZoneInfo(name) if name and isinstance(name, str) else None
            except (ValueError, KeyError, OSError):  # not found: KeyError; "../x": ValueError; "Europe": OSError
                local = None
            if local is not None:
                break
        try:
            return day.replace(tzinfo=local).astimezone(timezone.utc), True
        except OverflowError:
            return None, True
    return None, False


def parse_event(item: dict, zone: str = "UTC") -> CalendarEvent:
    """A Google Event resource → CalendarEvent. Tombstones (only id + status) parse too; never raises
    for a missing field (``zone``: the calendar's timezone, for all-day dates)."""
    start, all_day = _when(item.get("start"), zone)
    end, _ = _when(item.get("end"), zone)
    # Fuzzing fix (tests/reliability/test_fuzz_google.py): extendedProperties, private and attendees of
    # the wrong type count as absent, and ``updated`` goes through _when's guarded parsing.
    properties = item.get("extendedProperties")
    private = properties.get("private") if isinstance(properties, dict) else None
    private = private if isinstance(private, dict) else {}
    attendees = item.get("attendees")
    declined = any(a.get("self") and a.get("responseStatus") == "declined"
                   for a in (attendees if isinstance(attendees, list) else []) if isinstance(a, dict))
    return CalendarEvent(
        id=str(item.get("id", "")), status=str(item.get("status") or "confirmed"), etag=str(item.get("etag", "")),
        updated=_when({"dateTime": item.get("updated")}, zone)[0], start=start, end=end, all_day=all_day,
        busy=item.get("transparency", "opaque") != "transparent", declined=declined,
        event_type=str(item.get("eventType") or "default"),
        private=item.get("visibility") in ("private", "confidential"),
        summary=str(item.get("summary") or ""), description=str(item.get("description") or ""),
        location=str(item.get("location") or ""),
        appointment_id=str(private.get(PRIVATE_KEY, "")), site=str(private.get("kcSite", "")))


def batch_uri_for(api_endpoint: str) -> str:
    """The batch endpoint that goes with ``api_endpoint`` (``…/calendar/v3/``, or the root ``…/``):
    ``https://www.googleapis.com/calendar/v3/`` → ``https://www.googleapis.com/batch/calendar/v3``.

    Derived here because google-api-python-client ignores ``api_endpoint`` for batches (NOTES.md 2.2)."""
    root = api_endpoint.rstrip("/")
    if root.endswith("/calendar/v3"):
        root = root[:-len("/calendar/v3")]
    return root + "/batch/calendar/v3"


@dataclass(frozen=True)
class Upsert:
    """The arguments of one ``GoogleCalendar.upsert_event`` call, for ``GoogleCalendar.upsert_many``."""

    calendar_id: str
    event_id: str
    body: dict
    known: bool
    send_updates: str = "none"
    changes: dict | None = None
    if_match: str | None = None


class _SendAgain(Exception):
    """Some calls of a batch met a brief outage or a short rate limit: send them again in a new batch."""


def _retry_policy(retries: int, retry) -> Retrying:
    """Tries and waits for one request or one batch: ``retries`` attempts, exponential backoff with jitter."""
    return Retrying(stop=stop_after_attempt(max(1, retries)), wait=wait_random_exponential(multiplier=0.5, max=8),
                    retry=retry, reraise=True)


def _transient(error: BaseException) -> bool:
    """Worth another try within the same job: outages and short rate limits, not quotaExceeded."""
    if isinstance(error, CalendarRateLimited):
        return not error.long_pause
    return isinstance(error, CalendarUnavailable)


def _reason(error: HttpError) -> str:
    try:
        details = json.loads(error.content.decode("utf-8"))["error"]
        return (details.get("errors") or [{}])[0].get("reason", "") or details.get("status", "")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return ""


def translate(error: Exception, what: str) -> Exception:
    """Map a client-library exception to our named errors (the one place that knows HTTP)."""
    if isinstance(error, HttpError):
        status, reason = error.resp.status, _reason(error)
        if status == 412:
            return CalendarChanged(f"{what}: changed in the calendar since our last write")
        if status == 404 or status == 410:
            return CalendarNotFound(f"{what}: {status} {reason}")
        if status == 429 or (status == 403 and reason in _RATE_REASONS):
            return CalendarRateLimited(f"{what}: rate limited ({status} {reason})")
        if status == 403 and (reason in _QUOTA_REASONS or b"usage limits" in (error.content or b"")):
            return CalendarRateLimited(f"{what}: Calendar usage limits ({reason})", long_pause=True)
        if status == 401:
            return CalendarAuthError(f"{what}: Google refused the access token after a refresh")
        if status == 403 and reason in ("insufficientPermissions", "forbidden", "accessNotConfigured"):
            return CalendarAuthError(f"{what}: permission denied ({reason}); reconnect to grant calendar access")
        if status >= 500:
            return CalendarUnavailable(f"{what}: Google answered {status} {reason}")
        return CalendarRequestError(f"{what}: Google refused ({status} {reason})", status, reason)
    if isinstance(error, RefreshError):
        text = str(error)
        if "invalid_grant" in text or "invalid_client" in text or "unauthorized_client" in text:
            return CalendarAuthError(f"{what}: Google refused the refresh token ({text.split(':')[0]})")
        return CalendarUnavailable(f"{what}: token refresh failed")
    if isinstance(error, (TransportError, httplib2.HttpLib2Error, socket.timeout, TimeoutError,
                          ConnectionError, OSError)):
        return CalendarUnavailable(f"{what}: cannot reach Google ({type(error).__name__})")
    return error


class GoogleCalendar:
    """One Google account: ``GoogleCalendar(credentials, api_endpoint, on_tokens=None, timeout=30)``.

    ``credentials``: google.oauth2.credentials.Credentials with refresh token, token_uri and client
    id/secret. ``on_tokens(token, expiry)`` is called after google-auth refreshed the access token, so
    the caller can store it (encrypted). All methods raise ``sidecar.calendars.base`` errors.
    """

    def __init__(self, credentials: Credentials, api_endpoint: str, *,
                 on_tokens: Callable[[str, datetime | None], None] | None = None, timeout: float = 30,
                 bucket=None, retries: int = 3):
        self.credentials = credentials
        self.on_tokens = on_tokens
        self.bucket = bucket  # a ratelimit.TokenBucket shared by every client of the same account
        self.retries = retries
        self._token_seen = credentials.token
        self.timeout = timeout
        self.api_endpoint = api_endpoint
        self.batch_uri = batch_uri_for(api_endpoint)
        self._api = _shared_api(api_endpoint)
        self._service = None

    @property
    def _http(self) -> google_auth_httplib2.AuthorizedHttp:
        """This account's credentials over the calling thread's connection pool (a cheap wrapper)."""
        return google_auth_httplib2.AuthorizedHttp(self.credentials, http=_thread_http(self.timeout))

    def _bind(self, request):
        """``request`` (made from the shared resources) sent with this account's http on this thread."""
        request.http = self._http
        return request

    @property
    def service(self):
        """A googleapiclient service of this account's own, for reads outside this class (tests, tools),
        built on first use over the calling thread's connections. The methods here use the shared one."""
        if self._service is None:
            self._service = build_from_document(_discovery_doc(), http=self._http,
                                                client_options={"api_endpoint": self.api_endpoint})
        return self._service

    def _execute(self, request, what: str, *, sync_token: bool = False) -> dict:
        """Run one request: wait for the account's token bucket, retry brief outages and rate limits a few
        times with exponential backoff and jitter (tenacity), then raise our named error. Long pauses
        (quotaExceeded) and longer outages are left to the job queue, which retries without counting.

        ``sync_token``: the request is an incremental ``events.list``, so 410 means "sync token expired"
        (CalendarSyncTokenExpired, never retried: the caller starts a full sync) rather than "gone"."""
        def attempt() -> dict:
            if self.bucket is not None:
                self.bucket.acquire()
            try:
                return self._bind(request).execute(num_retries=0)
            except HttpError as exc:
                if sync_token and exc.resp.status == 410:
                    raise CalendarSyncTokenExpired(f"{what}: sync token expired ({_reason(exc)})") from exc
                raise translate(exc, what) from exc
            except Exception as exc:  # translated below; anything unknown is re-raised unchanged
                raise translate(exc, what) from exc
            finally:
                self._after_call()

        return _retry_policy(self.retries, retry_if_exception(_transient))(attempt)

    def _after_call(self) -> None:
        """Hand a token google-auth refreshed during the call to the owner, to be stored encrypted."""
        if self.credentials.token != self._token_seen:
            self._token_seen = self.credentials.token
            if self.on_tokens:
                self.on_tokens(self.credentials.token, self.credentials.expiry)

    # ---- account ---------------------------------------------------------------------------------

    def list_calendars(self, min_access_role: str = "writer") -> list[CalendarInfo]:
        """``calendarList.list(minAccessRole=…)``, all pages. "writer" (default): calendars we may write
        events to; "freeBusyReader": every calendar, including those seen only as free/busy."""
        out, token = [], None
        while True:
            page = self._execute(self._api.calendar_list.list(minAccessRole=min_access_role, pageToken=token),
                                 "calendarList.list")
            for item in page.get("items", []):
                out.append(CalendarInfo(id=item["id"], name=item.get("summaryOverride") or item.get("summary", ""),
                                        timezone=item.get("timeZone", "UTC"), access_role=item.get("accessRole", ""),
                                        primary=bool(item.get("primary"))))
            token = page.get("nextPageToken")
            if not token:
                return out

    def account_email(self) -> str:
        """The account's address: the id of its primary calendar (``calendars.get('primary')``)."""
        return self._execute(self._api.calendars.get(calendarId="primary"), "calendars.get")["id"]

    # ---- events --------------------------------------------------------------------------------

    def read_event(self, calendar_id: str, event_id: str, zone: str = "UTC") -> CalendarEvent:
        """``events.get`` parsed as a CalendarEvent (cancelled events included); raises CalendarNotFound."""
        return parse_event(self._execute(self._api.events.get(calendarId=calendar_id, eventId=event_id),
                                         "events.get"), zone)

    def get_event(self, calendar_id: str, event_id: str) -> EventState:
        """``events.get``; raises CalendarNotFound."""
        return _state(self._execute(self._api.events.get(calendarId=calendar_id, eventId=event_id),
                                    "events.get"))

    def upsert_event(self, calendar_id: str, event_id: str, body: dict, *, known: bool,
                     send_updates: str = "none", changes: dict | None = None,
                     if_match: str | None = None) -> EventState:
        """Make ``event_id`` look like ``body`` (the fields we own).

        ``known`` True: patch ``changes`` (default: the whole body) first, insert the whole body if
        Google has no such event. Otherwise insert with the deterministic id, and on 409 (it exists:
        a retry after a crash) patch the whole body.
        """
        if known:
            try:
                return self._patch(calendar_id, event_id, body if changes is None else changes, send_updates,
                                   if_match)
            except CalendarNotFound:
                pass
        try:
            return _state(self._execute(self._insert_request(calendar_id, event_id, body, send_updates),
                                        "events.insert"))
        except CalendarRequestError as exc:
            if exc.status != 409:
                raise
        log.info("event %s already exists in Google (earlier try); patching it", event_id)
        return self._patch(calendar_id, event_id, body, send_updates)

    def _patch(self, calendar_id: str, event_id: str, body: dict, send_updates: str,
               if_match: str | None = None) -> EventState:
        return _state(self._execute(self._patch_request(calendar_id, event_id, body, send_updates, if_match),
                                    "events.patch"))

    def _insert_request(self, calendar_id: str, event_id: str, body: dict, send_updates: str):
        return self._api.events.insert(calendarId=calendar_id, body={**body, "id": event_id},
                                            conferenceDataVersion=1, sendUpdates=send_updates)

    def _patch_request(self, calendar_id: str, event_id: str, body: dict, send_updates: str,
                       if_match: str | None = None):
        patch = self._api.events.patch(calendarId=calendar_id, eventId=event_id, body=body,
                                            conferenceDataVersion=1, sendUpdates=send_updates)
        if if_match:
            patch.headers["If-Match"] = if_match  # not a method parameter (NOTES 2.2)
        return patch

    def upsert_many(self, items: list[Upsert]) -> list[EventState | Exception]:
        """Several ``upsert_event`` calls sent in Google batch requests (Calendar batch guide,
        https://developers.google.com/calendar/api/guides/batch: ``POST <root>/batch/calendar/v3``,
        multipart/mixed, at most ``MAX_BATCH_CALLS`` calls each): ``events.patch`` (with ``changes`` and
        If-Match) for a known event, else ``events.insert`` with the deterministic id.

        Returns one entry per item, in order: the EventState Google answered, or the exception the item
        ended with (our named errors of ``sidecar.calendars.base``, through ``translate``); never raises for
        an item. Per item the semantics of ``upsert_event``: a known event's patch answered 404/410 →
        insert, an insert answered 409 (it exists: an earlier try landed) → patch of the whole body, each
        run singly through ``upsert_event``. Each call takes one token of the account's bucket (Google counts
        n batched calls as n requests). Calls that met a brief outage or short rate limit, and every call of a
        batch HTTP request that failed as a whole, are sent again in a new batch with ``_execute``'s tries and
        backoff; a long pause (quotaExceeded) is left to the caller. One item: a plain ``upsert_event``.
        """
        if len(items) == 1:
            item = items[0]
            try:
                return [self.upsert_event(item.calendar_id, item.event_id, item.body, known=item.known,
                                          send_updates=item.send_updates, changes=item.changes,
                                          if_match=item.if_match)]
            except Exception as exc:  # the caller routes it like any failed upsert
                return [exc]
        results: list[EventState | Exception | None] = [None] * len(items)
        for first in range(0, len(items), MAX_BATCH_CALLS):
            self._upsert_batch(items, list(range(first, min(len(items), first + MAX_BATCH_CALLS))), results)
        return results  # type: ignore[return-value]

    def _upsert_batch(self, items: list[Upsert], indexes: list[int], results: list) -> None:
        """``upsert_many`` for at most one batch of ``indexes``; fills ``results`` at those positions."""
        todo, fallback = list(indexes), []

        def send() -> None:
            nonlocal todo
            answers: dict[int, tuple] = {}
            http = self._http
            batch = LeanBatchHttpRequest(callback=lambda rid, resp, exc: answers.__setitem__(int(rid), (resp, exc)),
                                     batch_uri=self.batch_uri)
            for i in todo:
                item = items[i]
                if item.known:
                    request = self._patch_request(item.calendar_id, item.event_id,
                                                  item.body if item.changes is None else item.changes,
                                                  item.send_updates, item.if_match)
                else:
                    request = self._insert_request(item.calendar_id, item.event_id, item.body, item.send_updates)
                if self.bucket is not None:
                    self.bucket.acquire()
                request.http = http  # each call carries the account's Authorization header, as before
                batch.add(request, request_id=str(i))
            try:
                batch.execute(http=http)
            except Exception as exc:  # the batch HTTP request failed as a whole: every call shares its error
                error = translate(exc, "batch")
                for i in todo:
                    results[i] = error
                if _transient(error):
                    raise _SendAgain() from exc
                return
            finally:
                self._after_call()
            again = []
            for i in todo:
                response, exc = answers.get(i, (None, None))
                if exc is None:
                    results[i] = _state(response or {})
                    continue
                error = translate(exc, "events.patch" if items[i].known else "events.insert")
                if (items[i].known and isinstance(error, CalendarNotFound)) or \
                        (not items[i].known and isinstance(error, CalendarRequestError) and error.status == 409):
                    fallback.append(i)
                    continue
                results[i] = error
                if _transient(error):
                    again.append(i)
            todo = again
            if again:
                raise _SendAgain()

        try:
            for attempt in _retry_policy(self.retries, retry_if_exception_type(_SendAgain)):
                with attempt:
                    send()
        except _SendAgain:
            pass  # out of tries: the last errors stay in ``results`` for the caller's queue
        for i in fallback:
            item = items[i]
            if not item.known:
                log.info("event %s already exists in Google (earlier try); patching it", item.event_id)
            try:
                # Known but gone (404/410) → insert; inserted before (409) → patch the whole body.
                results[i] = self.upsert_event(item.calendar_id, item.event_id, item.body, known=not item.known,
                                               send_updates=item.send_updates)
            except Exception as exc:  # the caller routes it like any failed upsert
                results[i] = exc

    def list_changes(self, calendar_id: str, sync_token: str | None, *, time_min: datetime | None = None,
                     time_max: datetime | None = None, zone: str = "UTC") -> tuple[list[CalendarEvent], str]:
        """``events.list``, every page: incremental with ``sync_token``, else a full list of the window.

        Returns ``(events, next_sync_token)``; tombstones included. Follows Google's sync guide: the same
        query with ``pageToken`` until ``nextSyncToken`` appears on the last page. Each page goes through
        ``_execute`` (token bucket; brief outages and rate limits retried with backoff and jitter). Raises
        CalendarSyncTokenExpired on 410 (the caller then does a bounded full sync), else the named errors.
        """
        events: list[CalendarEvent] = []
        page_token = None
        while True:
            # showDeleted: a doctor's deletion just before a 410 must still be seen in the full list.
            # singleEvents: recurring busy events come as instances (a moved or cancelled one is its own
            # event). Google's sync guide: an incremental list repeats the full list's parameters, except
            # the time bounds, which cannot go with a syncToken.
            params = {"showDeleted": True, "singleEvents": True, "maxResults": 250}
            if sync_token:
                params["syncToken"] = sync_token
            else:
                if time_min:
                    params["timeMin"] = time_min.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
                if time_max:
                    params["timeMax"] = time_max.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
            # The same retries as every other call (soak finding: a fifth of pulls failed under faults);
            # only the page that failed is asked again, with the same pageToken.
            page = self._execute(self._api.events.list(calendarId=calendar_id, pageToken=page_token, **params),
                                 "events.list", sync_token=bool(sync_token))
            zone = page.get("timeZone") or zone
            events.extend(parse_event(item, zone) for item in page.get("items", []) if isinstance(item, dict))
            page_token = page.get("nextPageToken")
            if not page_token:
                return events, page.get("nextSyncToken", "")

    def our_events(self, calendar_id: str, site: str, time_min: datetime, time_max: datetime) -> list[CalendarEvent]:
        """``events.list(privateExtendedProperty=kcSite=<site>)``, every page: this site's events in a window."""
        out, token = [], None
        while True:
            page = self._execute(self._api.events.list(
                calendarId=calendar_id, privateExtendedProperty=f"kcSite={site}", pageToken=token, maxResults=250,
                singleEvents=True, timeMin=time_min.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                timeMax=time_max.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")), "events.list")
            out.extend(parse_event(item) for item in page.get("items", []) if isinstance(item, dict))
            token = page.get("nextPageToken")
            if not token:
                return out

    def free_busy(self, calendar_ids: list[str], start: datetime, end: datetime) -> dict[str, list[tuple]]:
        """``freebusy.query`` in chunks of ≤50 calendars and ≤90 days (Google's limits, NOTES.md C).

        Returns ``{calendar_id: [(start UTC, end UTC), …]}``; a calendar Google reports an error for
        is left out (it is not visible to this account)."""
        out: dict[str, list[tuple]] = {}
        for first in range(0, len(calendar_ids), 50):
            group = calendar_ids[first:first + 50]
            cursor = start
            while cursor < end:
                stop = min(end, cursor + timedelta(days=90))
                body = {"timeMin": cursor.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                        "timeMax": stop.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                        "items": [{"id": c} for c in group]}
                answer = self._execute(self._api.freebusy.query(body=body), "freebusy.query")
                for calendar_id, data in (answer.get("calendars") or {}).items():
                    if data.get("errors"):
                        continue
                    spans = out.setdefault(calendar_id, [])
                    for busy in data.get("busy") or []:
                        begin, finish = _rfc3339_to_utc(busy.get("start")), _rfc3339_to_utc(busy.get("end"))
                        if begin and finish and finish > begin:
                            spans.append((begin, finish))
                cursor = stop
        return out

    def watch(self, calendar_id: str, channel_id: str, address: str, token: str,
              ttl_seconds: int = 7 * 86400) -> tuple[str, datetime | None]:
        """``events.watch``: a push channel to ``address`` (HTTPS). Returns ``(resourceId, expiration UTC)``.

        Google may shorten the expiry; there is no renewal, only a new channel (NOTES.md "Push")."""
        body = {"id": channel_id, "type": "web_hook", "address": address, "token": token,
                "params": {"ttl": str(int(ttl_seconds))}}
        answer = self._execute(self._api.events.watch(calendarId=calendar_id, body=body), "events.watch")
        expiration = answer.get("expiration")
        when = datetime.fromtimestamp(int(expiration) / 1000, timezone.utc) if expiration else None
        return str(answer.get("resourceId", "")), when

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        """``channels.stop``; a channel already gone counts as stopped."""
        try:
            self._execute(self._api.channels.stop(body={"id": channel_id, "resourceId": resource_id}),
                          "channels.stop")
        except CalendarNotFound:
            pass

    def delete_event(self, calendar_id: str, event_id: str, send_updates: str = "none") -> None:
        """``events.delete``; an event already gone (404/410) counts as deleted."""
        try:
            self._execute(self._api.events.delete(calendarId=calendar_id, eventId=event_id,
                                                       sendUpdates=send_updates), "events.delete")
        except CalendarNotFound:
            pass


def credentials_for(*, token: str | None, refresh_token: str, expiry: datetime | None, token_uri: str,
                    client_id: str, client_secret: str, scopes: list[str]) -> Credentials:
    """google-auth Credentials for a stored connection (``expiry`` aware UTC or None)."""
    naive_expiry = expiry.astimezone(timezone.utc).replace(tzinfo=None) if expiry else None
    return Credentials(token=token, refresh_token=refresh_token, token_uri=token_uri, client_id=client_id,
                       client_secret=client_secret, scopes=scopes or list(REQUIRED_SCOPES), expiry=naive_expiry)


def refresh_now(credentials: Credentials) -> None:
    """Force a refresh (used by "test connection"); raises CalendarAuthError / CalendarUnavailable."""
    try:
        credentials.refresh(AuthRequest())
    except Exception as exc:
        raise translate(exc, "token refresh") from exc
