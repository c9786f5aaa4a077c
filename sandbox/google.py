"""A faithful local stand-in for Google OAuth 2.0 and Google Calendar API v3.

What it is
----------
A Flask app served by werkzeug on loopback (``GoogleSandbox.start()``), stateful in
memory and thread-safe (one lock around all state). Tests and the demo talk to it
through the *production* client stack, never by patching our code:

* google-api-python-client::

      build("calendar", "v3", credentials=creds, static_discovery=True,
            cache_discovery=False, client_options={"api_endpoint": sb.api_endpoint})

  ``api_endpoint`` must end in ``/calendar/v3/`` (NOTES.md 2.2).
* google-auth-oauthlib::

      Flow.from_client_config({"web": {"client_id": sb.client_id, "client_secret": sb.client_secret,
                                       "auth_uri": sb.auth_uri, "token_uri": sb.token_uri,
                                       "redirect_uris": [REDIRECT]}}, scopes=..., redirect_uri=REDIRECT)

  over plain http, so ``OAUTHLIB_INSECURE_TRANSPORT=1`` (and, for granular consent,
  ``OAUTHLIB_RELAX_TOKEN_SCOPE=1``) must be set by the caller.

Which facts of /work/shared/google/NOTES.md it follows
-------------------------------------------------------
OAuth ("OAuth flow against a local server"):

* ``GET /o/oauth2/auth`` takes ``response_type=code, client_id, redirect_uri, scope, state,
  code_challenge, code_challenge_method (S256|plain), access_type, prompt,
  include_granted_scopes, login_hint``. Bad client/redirect/scope → an HTML error page
  (400, or 401 invalid_client) as Google shows, never a redirect. Otherwise a plain HTML
  consent page (no JavaScript; account radio buttons, one checkbox per requested scope,
  "Allow"/"Cancel"), or an immediate 302 when ``auto_approve(email)`` is set. The callback
  carries ``code, state, scope, authuser, prompt`` like Google's; Cancel →
  ``error=access_denied&state=…``.
* ``POST /token`` accepts client authentication by HTTP Basic (requests-oauthlib's
  ``fetch_token``) *and* by form fields (google-auth's refresh). PKCE is enforced when the
  authorization request carried a ``code_challenge``: a missing verifier is 400
  ``{"error":"invalid_grant","error_description":"Missing code verifier."}`` (what Google
  answers, and what a Flow rebuilt without the saved verifier runs into). Codes are
  single-use and expire after 10 minutes; ``redirect_uri`` must match.
  Response: ``{access_token, expires_in, scope, token_type:"Bearer"[, refresh_token]}``.
* A refresh token is issued only with ``access_type=offline`` *and* only when the user
  consents again (``prompt=consent``) or has no live offline grant for this client yet —
  the real "no refresh_token on the second connect" trap. An account keeps at most 100
  live refresh tokens per client; the oldest is silently invalidated.
* ``grant_type=refresh_token`` → a new access token (no new refresh token). A ``scope``
  parameter may name only scopes of the original authorization request: scopes that were
  requested but not granted (granular consent) are dropped, as Google does (google-auth
  then only logs a warning); a scope never requested → 400 ``invalid_scope: Bad Request``.
  Revoked/dead → 400 ``{"error":"invalid_grant","error_description":"Token has been
  expired or revoked."}`` which google-auth raises as ``google.auth.exceptions.RefreshError``.
* Wrong client secret → 401 ``{"error":"invalid_client","error_description":"Unauthorized"}``.
* ``POST /revoke?token=…`` (or form ``token``) revokes the whole grant (refresh token
  and every access token minted from it) → 200 ``{}``; unknown → 400 ``invalid_token``.
* Granular consent: unchecking scopes on the consent page, or ``grant_only([...])``, grants
  a subset; the token response ``scope`` says what was granted. ``include_granted_scopes``
  adds what the account granted this client before (a superset, NOTES 3.1).

Calendar API v3 (NOTES section C and 2.1; paths exactly as the client sends them):

* ``Authorization: Bearer`` (or ``oauth_token=``) is required. Missing → 401 reason
  ``required`` ("Login Required."), unknown/expired/revoked → 401 reason ``authError``
  ("Invalid Credentials"), both with ``WWW-Authenticate``; googleapiclient then refreshes
  once and retries (NOTES 2.2). Scopes are checked per method against the scopes the
  discovery document lists (e.g. ``calendar`` or ``calendar.events`` for writes,
  ``calendar.readonly`` for reads) → 403 ``insufficientPermissions``.
* Error bodies: ``{"error": {"code", "message", "errors": [{"domain", "reason",
  "message"[, "location", "locationType"]}], "status"}}``. ``status`` is the canonical
  gRPC name where one maps (400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403
  PERMISSION_DENIED, 404 NOT_FOUND, 409 ALREADY_EXISTS, 429 RESOURCE_EXHAUSTED, 500
  INTERNAL, 503 UNAVAILABLE) and is left out for 410 and 412, which have none. No
  ``details`` key is sent, so ``HttpError.error_details`` is the ``errors`` list (real
  Google sometimes adds ``details``, which googleapiclient then prefers: read the
  reason from the body, not only from ``error_details``).
* Routes: ``users/me/calendarList`` (list, get), ``calendars/{id}`` (get),
  ``calendars/{id}/events`` (list, insert), ``calendars/{id}/events/{eventId}`` (get,
  patch, update, delete), ``calendars/{id}/events/watch``, ``channels/stop``,
  ``freeBusy``. ``primary`` is the account's email, as on Google.
  Other paths → 404 notFound.
* Strict request checks from the Calendar discovery document that ships with
  google-api-python-client (``googleapiclient/discovery_cache/documents/calendar.v3.json``),
  because the client library validates no bodies (NOTES 2.2): an unknown property of
  Event (top level or nested), a JSON value of the wrong type, or a query parameter
  the method does not declare → 400 with a clear message. Real Google ignores some of
  these; being stricter here catches our typos. Enum parameters (``sendUpdates``,
  ``orderBy``, ``minAccessRole``) and integer ranges are checked too.
* Event ids: client ids must be base32hex ``[a-v0-9]``, 5..1024 chars, else 400 reason
  ``invalid`` "Invalid resource id value."; an id that exists on the calendar (even
  cancelled) → 409 reason ``duplicate`` "The requested identifier already exists."
  Generated ids are 26 base32hex chars.
* Every event carries ``kind, etag`` (quoted, changes on every write), ``id, status,
  htmlLink, created, updated`` (RFC 3339 UTC with milliseconds), ``creator, organizer
  {email, self}``, ``iCalUID`` (``id@google.com``), ``sequence``, ``reminders``
  (default ``{"useDefault": true}``), ``eventType`` ("default").
* ``If-Match`` on patch/update/delete → 412 ``conditionNotMet`` when it differs (``*``
  matches); ``If-None-Match`` equal to the etag on get → 304.
* Delete → 204 with an empty body. The event stays as a tombstone with status
  ``cancelled``: get still returns it (full data, status cancelled); insert of that id →
  409; patch/update can set status back to ``confirmed``; a second delete → 410 reason
  ``deleted`` "Resource has been deleted"; an unknown id → 404 ``notFound``.
  events.list returns tombstones only with ``showDeleted=true``, ``updatedMin`` or a
  ``syncToken``, and then — like Google often does — as a bare
  ``{kind, etag, id, status:"cancelled", updated}``: parsers must not need start/end.
* Patch: top-level fields merge; nested objects merge key-wise (so
  ``extendedProperties.private`` keys merge, and turning a timed event into an all-day one
  needs ``"dateTime": null``); ``null`` deletes a field or key; lists replace. Update
  replaces every writable field. Read-only fields in a body (etag, created, htmlLink …)
  are ignored, so a body copied from a get can be sent back.
* start/end: ``{dateTime (RFC 3339 with offset, or local time + timeZone), timeZone?}``
  or ``{date}``; both of one kind; ``end > start`` else 400 reason ``timeRangeEmpty``
  "The specified time range is empty."; a local dateTime without ``timeZone`` → 400
  "Missing time zone definition for start time.". Responses render ``dateTime`` the way
  Google does: the same instant, written in the event's ``timeZone`` if it has one,
  else in the calendar's time zone (or the ``timeZone`` query parameter of get/list),
  ``Z`` for UTC, seconds precision. So ``"…T09:00:00Z"`` may come back as
  ``"…T11:00:00+02:00"``: compare instants, never strings. ``date`` comes back as given.
* Meet (NOTES "Meet creation"): with ``conferenceDataVersion=1`` and
  ``conferenceData.createRequest{requestId, conferenceSolutionKey{type:"hangoutsMeet"}}``
  the event gets a *pending* conference (``createRequest.status.statusCode`` "pending",
  no entryPoints). After ``conference_pending_reads`` reads of that event (get, or a
  list page containing it) it becomes ``success``: ``conferenceId`` "abc-defg-hij",
  ``entryPoints[{entryPointType:"video", uri:"https://meet.google.com/abc-defg-hij",
  label}]``, ``conferenceSolution{key{type}, name:"Google Meet", iconUri}`` and
  top-level ``hangoutLink``. That completion is a change (new etag/updated, seen by
  incremental sync), as Google finishing the conference asynchronously is.
  ``conference_pending_reads=0`` → ready in the insert response. ``conference_outcome
  ("failure")`` makes the next ones end in ``failure`` (no entry points). Without
  ``conferenceDataVersion=1`` any conferenceData in a body is ignored (a classic bug).
  The same ``requestId`` as the event's last one → the request is ignored. Patch with
  ``conferenceData: null`` (version 1), or update without conferenceData (version 1),
  removes the conference and ``hangoutLink``. Another solution type → 400 "Invalid
  conference type value.".
* events.list: ``timeMin``/``timeMax`` (overlap: end > timeMin and start < timeMax; both
  must carry an offset), ``showDeleted``, ``singleEvents`` (recurring events expanded,
  see "Recurrence" below), ``orderBy`` (``startTime`` needs ``singleEvents=true``), ``q``,
  ``iCalUID``, ``updatedMin``, ``eventTypes``, ``privateExtendedProperty`` /
  ``sharedExtendedProperty`` ("key=value", repeatable; constraints of one parameter are
  OR'ed as NOTES.md says — the events.list reference says AND, so never send two and
  rely on either), ``maxResults`` (default 250, at most 2500), ``pageToken`` /
  ``nextPageToken`` (the rest of the query must stay the same, else 400),
  ``nextSyncToken`` only on the last page; ``syncToken`` returns what changed since (always
  with tombstones), may not be combined with iCalUID/orderBy/*ExtendedProperty/q/timeMin/
  timeMax/updatedMin (400) nor ``showDeleted=false``, and an unknown or invalidated token
  → 410 reason ``fullSyncRequired``. Response: ``kind, etag, summary, description,
  updated, timeZone, accessRole, defaultReminders, items, nextPageToken|nextSyncToken``.
* ``fields=`` partial responses (``items(id,status),nextSyncToken``) are applied.
* ``sendUpdates`` (all/externalOnly/none) is accepted and logged; attendees are stored
  (``responseStatus`` defaults to "needsAction"; the calendar owner gets
  ``self``/``organizer``); no invitations are sent and no attendee copies are made.
* Faults: ``set_down(True)`` → API and token endpoint answer 503 (API: reason
  ``backendError``); ``fail_next(n, status, reason)`` → the next n API requests fail
  (500/503 backendError, 429 or 403 rateLimitExceeded / userRateLimitExceeded /
  quotaExceeded with domain ``usageLimits``, anything else with domain ``global``).
  ``fault_rate(rate, kinds=None, *, seed=None, hold=31.0, token_endpoint=True)`` →
  each Calendar API request (and token request) fails with probability ``rate``, of
  a kind drawn from ``kinds`` (names, equal weights, or ``{name: weight}``):
  ``403_rate_limit`` (403 rateLimitExceeded), ``429``, ``500``, ``503`` (backendError),
  ``timeout`` (a slow answer: the request is held ``hold`` seconds — beyond the
  client's timeout — and then carried out, so a write may land after the client gave
  up), ``hang`` (held ``hold`` seconds, then dropped unanswered and not carried out),
  ``reset`` (connection reset before the request is carried out) and ``reset_after``
  (carried out, then the connection is reset instead of answering). The token
  endpoint only gets 500/503/timeouts/resets (403/429 become 503 there). Seeded
  (``seed``) for repeatable runs; ``fault_rate(0)`` switches it off;
  ``fault_counts()`` → ``{kind: n, "requests": eligible requests seen}``. Resets
  and holds happen in a WSGI middleware outside Flask and outside the state lock.
  ``lose_answers(n, method=None)`` is ``reset_after`` on demand: the next n API requests
  (of that HTTP method) are carried out and their answer lost. ``kill_on_insert(pid)`` /
  ``kill_on_patch(pid)``: after the next insert / patch is stored, SIGKILL the client
  before it sees the answer.
* Busy or free (NOTES C "Busy vs free"): events keep what was written —
  ``transparency`` (absent = opaque = busy; Google leaves the default out), ``visibility``,
  ``eventType`` ("default" when not given; "outOfOffice", "focusTime", "workingLocation"
  with their ``*Properties``; the type cannot change later) and ``attendees[]`` with
  ``responseStatus``, ``self`` (the calendar's owner) and ``organizer``. ``user_insert``
  may carry an ``organizer`` (an invitation from someone else, e.g. one the doctor
  declined); the API ignores it, as Google does. *Busy* below = not cancelled, not
  transparent, not a workingLocation event, not declined by the calendar's own attendee
  entry; tentative and unanswered invitations are busy.

Recurrence (NOTES E #6; RFC 5545 through python-dateutil's ``rrulestr``)
----------------------------------------------------------------------
* ``recurrence`` (``RRULE:``/``EXRULE:``/``RDATE``/``EXDATE`` lines) is checked on write: a
  rule dateutil refuses (e.g. a local ``UNTIL`` with a timed start, which RFC 5545 wants in
  UTC) → 400 "Invalid recurrence rule." and nothing is stored.
* ``singleEvents`` absent/false: the recurring event itself is listed (with its
  ``recurrence``), and its exceptions as events of their own, as Google does.
* ``singleEvents=true``: the recurring event is replaced by its instances overlapping
  ``timeMin``/``timeMax`` (without ``timeMax``: up to 730 days ahead; at most 2500 per
  series). Each instance: id ``<masterId>_<YYYYMMDDTHHMMSSZ>`` (UTC basic format of the
  original start; all-day ``<masterId>_<YYYYMMDD>``), ``recurringEventId``,
  ``originalStartTime``, the master's ``iCalUID`` and other fields, no ``recurrence``.
  Instances recur on the wall clock of the start's ``timeZone`` (else the calendar's), so
  09:00 Paris stays 09:00 across DST. ``freeBusy`` counts every instance too.
* An instance id can be read (get), patched/updated (→ a stored exception: "only this
  event"; it keeps its id and ``originalStartTime``) and deleted (→ a cancelled exception:
  omitted from lists, a tombstone with ``recurringEventId``/``originalStartTime`` under
  ``showDeleted``, ``updatedMin`` or a ``syncToken``). A stored exception stands in place of
  the generated instance. Deleting the series cancels its exceptions too. The same through
  ``user_patch``/``user_delete``. An id that is not an occurrence → 404.
* Guessed (Google documents none of it): a ``syncToken`` list with ``singleEvents=true``
  returns every instance of a series changed since the token — within the ``timeMin``/
  ``timeMax`` of the full list the token chain began with — and changed exceptions; a rule
  change that removes instances ("this and following": the master gets an ``UNTIL``) makes
  the next incremental list return each removed instance as a bare cancelled instance
  (``{id, status, recurringEventId, etag, updated}``), and cancels exceptions among them.
  A deleted series lists its instances as tombstones (incremental / ``showDeleted``).

Push notifications (NOTES C "Push: …", E #11)
---------------------------------------------
* ``events.watch`` (``POST calendars/{id}/events/watch``, body Channel ``{id, type,
  address, token?, expiration?, params?}``; every events.list query parameter is accepted
  and ignored). Checks: ``id`` required, ≤64 chars of ``[A-Za-z0-9-_+/=]`` (400
  ``push.channelIdInvalid``) and unique in the project — among *all* channels ever made
  here, stopped or expired too — else 400 ``channelIdNotUnique`` "Channel id … not unique";
  ``type`` "web_hook" (or "webhook") else 400 ``push.channelTypeNotSupported``;
  ``address`` an absolute URL (400 ``push.webhookUrlNoHostOrAddress``) and HTTPS (400
  ``push.webhookUrlNotHttps`` "WebHook callback must be HTTPS: …"). Real Google requires
  HTTPS with a valid, not self-signed certificate; here ``allow_http_webhooks=True``
  (default) also accepts ``http://`` on loopback so tests need no TLS. ``token`` ≤256
  chars (400 ``invalid``). ``expiration`` (ms since the epoch, string or number) is
  clamped to now + ``channel_ttl`` (604800 s, the default lifetime); an expiration in the
  past — typically seconds sent instead of milliseconds — → 400 "Invalid ttl value for
  channel -N" (what Google said for Drive). ``params.ttl`` (seconds) also shortens it.
  Answer: ``{kind:"api#channel", id, resourceId, resourceUri, token?, expiration}`` with
  ``expiration`` a ms *string*; ``resourceId`` is opaque and the same for every channel on
  that calendar; ``resourceUri`` is this sandbox's events URL of the calendar as the
  request named it (``primary`` stays ``primary``), with the request's query.
* Delivery, from one background thread (API calls never wait for it): right after the
  watch a ``sync`` message (``X-Goog-Message-Number: 1``) — it may reach the receiver
  before the client has the watch response, as on Google — then after every change to an
  event of the calendar (insert/patch/update/delete through the API or ``user_*``, and a
  Meet conference completing) one ``exists`` message per live channel, message numbers
  increasing by 1–3 (never assume consecutive). A ``POST`` to ``address`` with *no body*
  (``Content-Length: 0``, ``Content-Type: application/json; charset=UTF-8``,
  ``User-Agent: APIs-Google …``) and headers ``X-Goog-Channel-ID``,
  ``X-Goog-Channel-Token`` (only if set), ``X-Goog-Channel-Expiration`` (RFC 1123, e.g.
  "Tue, 19 Nov 2013 01:13:52 GMT"), ``X-Goog-Message-Number``, ``X-Goog-Resource-ID``,
  ``X-Goog-Resource-State``, ``X-Goog-Resource-URI``. Redirects are not followed.
  102/200/201/202/204 = delivered; 500/502/503/504 — and no answer at all (refused,
  timeout after ``push_timeout``) — are retried after each of ``push_retry_delays``
  (default 1, 2, 4, 8, 16 s) then given up; any other status = failed, not retried.
  Channels are never stopped for failures. Stopped or expired channels (sandbox clock:
  ``advance()`` moves it; ``expire_channels()`` forces it) send nothing more, not even
  queued retries. ``drop_notifications(n)`` silently loses the next n messages (their
  numbers are used up, leaving a gap), as Google warns delivery is "not 100% reliable".
  Every attempt is logged in ``notifications``; ``flush_notifications()`` waits for the
  queue. ``channels()`` lists channels with their state.
* ``channels.stop`` (``POST channels/stop``, body ``{id, resourceId}``) → 204, empty body.
  Only the user and OAuth client that created the channel may stop it; another user, a
  wrong ``resourceId``, an unknown, stopped or expired channel → 404 ``notFound``
  "Channel '…' not found for project '…'".

Batch requests (NOTES.md C "Batch"; the Calendar batch guide; format in ``sandbox.google_batch``)
------------------------------------------------------------------------------------------------
* ``POST /batch/calendar/v3``, ``multipart/mixed``: each part ``Content-Type: application/http``
  with a ``Content-ID`` and one HTTP request (request line, headers, JSON body). The answer is 200
  ``multipart/mixed`` with a ``Content-ID: <response-…>`` part per call (HTTP status line, headers,
  JSON), whatever the calls answered; a malformed body or more than 1000 parts → 400 for the batch.
* Each call runs through the same handlers as a direct request (auth from the outer
  ``Authorization`` unless the part has its own; If-Match, 409, ``fail_next``, ``set_down``, kills),
  counts against ``user_rate_limit`` (a refusal answers 403/429 ``rateLimitExceeded`` in its part,
  not carried out) and draws the answer kinds of ``fault_rate`` (403/429/500/503). The connection
  kinds (timeout, hang, reset, reset_after) and ``lose_answers`` (method POST) befall the batch HTTP
  request as a whole. Only ``/calendar/v3/`` paths are served inside a batch (else 404).
* ``requests``: the batch HTTP request is one entry (``path`` "/batch/calendar/v3", ``calls`` n,
  ``batch`` False), each call one entry with ``batch`` True, so HTTP requests and API calls can be
  counted apart. ``latency`` holds the batch HTTP request once, not each call.

Free/busy and sharing
---------------------
* ``freebusy.query`` (``POST freeBusy``, body ``{timeMin, timeMax, timeZone?, items:
  [{id}], calendarExpansionMax?, groupExpansionMax?}``) → ``{kind:"calendar#freeBusy",
  timeMin, timeMax, calendars: {id: {busy: [{start, end}]}}}``: the busy events (above)
  overlapping the window, clipped to it, overlapping or touching periods merged, rendered
  in ``timeZone`` (default UTC, ``Z``); ``timeMin``/``timeMax`` echoed in UTC with
  milliseconds. All-day events block from midnight to midnight in the calendar's zone.
  ``primary`` may be named; the key is the id as sent. A calendar the user cannot see (not
  its own, not shared with it, unknown) → ``{errors: [{domain:"global",
  reason:"notFound"}], busy: []}`` — no implicit domain-wide sharing here. Errors:
  missing time → 400 ``required`` "Missing timeMin parameter."; ``timeMax <= timeMin`` →
  400 ``timeRangeEmpty``; a range longer than ``freebusy_max_days`` (90: Google's limit
  is undocumented, cal.com chunks at 90 days after hitting it) → 400 ``timeRangeTooLong``
  "The requested time range is too long."; more than 50 items → 400
  ``tooManyCalendarsRequested``; ``calendarExpansionMax`` outside 1..50 or
  ``groupExpansionMax`` outside 1..100 → 400 ``invalid``; items beyond
  ``calendarExpansionMax`` get ``errors [{reason:"tooManyCalendarsRequested"}]``. Groups
  are not expanded (a group address is just an unknown calendar). The scope must be one
  the discovery document lists (``calendar``, ``calendar.readonly``, ``calendar.freebusy``,
  ``calendar.events.freebusy`` — not ``calendar.events``).
* ``share_calendar(calendar_id, with_email, role="freeBusyReader")`` adds an ACL rule and
  the grantee's calendarList entry (``accessRole`` = role, not primary; ``minAccessRole``
  honours it). A freeBusyReader ("See only free/busy (hide details)") can call freeBusy on
  it and — as Google does: clients get events with no title — events.list/get, which
  return only busy events reduced to ``{kind, etag, id, status, start, end, updated}``
  (``accessRole: "freeBusyReader"``; a free event's get → 404); writes → 403
  ``requiredAccessLevel``. It can watch the calendar. ``unshare_calendar`` removes both;
  sharing changes invalidate that calendar's sync tokens.

Public API (Python)
-------------------
``GoogleSandbox(*, client_id=…, client_secret=…, token_ttl=3600, conference_pending_reads=1,
now=None, redirect_uris=None, seed=True, allow_http_webhooks=True, channel_ttl=604800,
push_retry_delays=(1, 2, 4, 8, 16), push_timeout=5.0, freebusy_max_days=90, latency=0.0,
user_rate_limit=0, rate_limit_status=403)`` (the last three are benchmark knobs, off by
default: a per-request delay and Google's per-user limit, e.g. 600/min; ``limit_counts()``); ``app``;
``start(host, port) -> base_url``;
``stop()``; ``base_url, auth_uri, token_uri, revoke_uri, api_endpoint``;
``client_config(redirect_uri)``; ``add_account(email, *, calendars, timezone, name)``;
``add_calendar(email, summary, role, timezone) -> id``; ``calendar_id(email, summary)``;
``calendars(email)``; ``auto_approve(email|None)``; ``grant_only(scopes|None)``;
``revoke(email)``; ``expire_access_tokens()``; ``advance(seconds)``;
``events(calendar_id, include_cancelled=True)``; ``event(calendar_id, event_id)``;
``user_insert / user_patch / user_delete`` (the doctor editing in Google's UI);
``kill_on_insert(pid|None)``; ``kill_on_patch(pid|None)``; ``kill_armed``; ``set_down(down)``;
``fail_next(n, status, reason)``; ``lose_answers(n, method)``;
``fault_rate(rate, kinds, *, seed, hold, token_endpoint)``; ``fault_counts()``;
``conference_outcome(outcome)``; ``invalidate_sync_tokens()``; ``requests``;
``reset_requests()``; ``reset()``; ``share_calendar(calendar_id, with_email, role)``;
``unshare_calendar(calendar_id, with_email)``; ``channels()``; ``notifications``;
``reset_notifications()``; ``flush_notifications(timeout) -> bool``;
``drop_notifications(n)``; ``expire_channels()``.

The same admin actions over HTTP (JSON bodies, no auth; answers ``{"ok": true}`` unless
said otherwise; a bad body → 400 ``{"ok": false, "error"}``), for subprocesses and the demo:

=========================================  ==============================================
``GET    /__sandbox__/state``                urls, client id/secret, knobs, ``accounts``
                                             ``[{email, name, timeZone, calendars[...]}]``
``POST   /__sandbox__/accounts``             ``{email, calendars?: [[summary, role]],
                                             timezone?, name?}`` → ``{calendars}``
``POST   /__sandbox__/calendars``            ``{email, summary, role?, timezone?}`` → ``{id}``
``POST   /__sandbox__/auto_approve``         ``{email: str | null}``
``POST   /__sandbox__/grant_only``           ``{scopes: [str] | null}``
``POST   /__sandbox__/revoke``               ``{email}``
``POST   /__sandbox__/expire_access_tokens``
``POST   /__sandbox__/advance``              ``{seconds}``
``GET    /__sandbox__/events``               ``?calendar_id=…&include_cancelled=true`` →
                                             ``{items}``
``POST   /__sandbox__/user_events/{cal}``    Event body → the event (owner edits in Google)
``PATCH  /__sandbox__/user_events/{cal}/{id}``  patch body → the event
``DELETE /__sandbox__/user_events/{cal}/{id}``
``POST   /__sandbox__/kill_on_insert``       ``{pid}``
``POST   /__sandbox__/down``                 ``{down: bool}``
``POST   /__sandbox__/fail_next``            ``{n, status?, reason?}``
``POST   /__sandbox__/conference_outcome``   ``{outcome: "success" | "failure"}``
``POST   /__sandbox__/invalidate_sync_tokens``
``GET    /__sandbox__/requests``             ``{requests: [...]}``; ``DELETE`` clears the log
``POST   /__sandbox__/share_calendar``       ``{calendar_id, email, role?}`` → ``{calendars}``
                                             (the grantee's list)
``POST   /__sandbox__/unshare_calendar``     ``{calendar_id, email}``
``GET    /__sandbox__/channels``             ``{channels: [...]}``
``POST   /__sandbox__/expire_channels``
``POST   /__sandbox__/drop_notifications``   ``{n}``
``GET    /__sandbox__/notifications``        ``{notifications: [...]}``; ``DELETE`` clears it
``POST   /__sandbox__/reset``                back to a freshly seeded sandbox (channels and
                                             queued notifications are forgotten)
=========================================  ==============================================

Standalone: ``python -m sandbox.google --port 8089`` prints the URLs, client id/secret and
seeded accounts, then serves until interrupted.

Not reproduced: ``events.instances``, ``maxAttendees``-style trims and Google's own limits on
recurrence expansion (the bounds above are guesses), ``not_exists``
messages and watches on calendarList/settings, duplicate or post-stop pings, freeBusy
groups, attendee copies on other calendars, ``id_token`` for ``openid``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import email.utils
import hashlib
import heapq
import html
import http.client
import importlib.util
import ipaddress
import itertools
import json
import os
import random
import re
import secrets
import signal
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit, parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr
from flask import Flask, Response, g, redirect, request

from werkzeug.datastructures import EnvironHeaders
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wsgi import get_input_stream

from sandbox import google_batch
from sandbox.faults import connection_fault, read_body

__all__ = ["GoogleSandbox", "SEEDED_ACCOUNTS", "SCOPE_CALENDAR", "SCOPE_EVENTS", "SCOPE_READONLY"]

SCOPE_CALENDAR = "https://www.googleapis.com/auth/calendar"
SCOPE_EVENTS = "https://www.googleapis.com/auth/calendar.events"
SCOPE_READONLY = "https://www.googleapis.com/auth/calendar.readonly"

#: (email, time zone) of the accounts every sandbox starts with (``seed=True``).
SEEDED_ACCOUNTS = (
    ("anna.schmidt@riverside-clinic.test", "Europe/Paris"),
    ("marc.dubois@riverside-clinic.test", "Europe/Paris"),
    ("sofia.rossi@riverside-clinic.test", "America/New_York"),
)

# Sign-in scopes Google accepts besides the API scopes of the discovery document; the
# short forms come back expanded in the token response, as on Google.
_SIGNIN_SCOPES = {
    "openid": "openid",
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/userinfo.email": "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile": "https://www.googleapis.com/auth/userinfo.profile",
}

_BASE32HEX = set("abcdefghijklmnopqrstuv0123456789")
_CODE_TTL = 600  # seconds an authorization code lives
_MAX_REFRESH_TOKENS = 100  # per account and client, oldest silently invalidated
_ROLE_RANK = {"freeBusyReader": 0, "reader": 1, "writerWithoutPrivateAccess": 2, "writer": 2, "owner": 3}
_COLORS = [("14", "#9fe1e7"), ("11", "#fbe983"), ("7", "#42d692"), ("3", "#f83a22"), ("9", "#7bd148")]
_MEET_ICON = ("https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/"
              "logo_meet_2020q4_color_2x_web_512dp.png")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# Fields the server owns: ignored when a client sends them back.
_READ_ONLY = {"kind", "etag", "id", "htmlLink", "created", "updated", "creator", "organizer",
              "iCalUID", "sequence", "hangoutLink", "recurringEventId", "privateCopy", "locked",
              "conferenceData", "attendeesOmitted"}
_SYNC_EXCLUSIVE = ("iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty",
                   "timeMin", "timeMax", "updatedMin")
# Push notifications (NOTES C "Push: …").
_CHANNEL_ID_RE = re.compile(r"[A-Za-z0-9\-_+/=]+")   # Google's push channel id alphabet
_CHANNEL_ID_MAX = 64
_CHANNEL_TOKEN_MAX = 256
_PUSH_OK = {102, 200, 201, 202, 204}                 # anything else is a failed delivery
_PUSH_RETRY = {500, 502, 503, 504}                   # retried with exponential backoff
_PUSH_USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"
# freebusy.query limits (discovery document; the range limit is undocumented, see docstring).
_FREEBUSY_MAX_CALENDARS = 50
_FREEBUSY_MAX_GROUP = 100
# Recurrence expansion (singleEvents=true): how far a list without timeMax expands, and at most
# how many instances of one recurring event (guessed bounds; Google's are undocumented).
_EXPAND_DAYS = 730
_EXPAND_MAX = 2500


# --------------------------------------------------------------------------- errors

class ApiError(Exception):
    """A Calendar API error, rendered as Google's JSON error body.

    ``code`` is the HTTP status; ``reason``/``message``/``domain`` fill ``errors[0]``.
    """

    def __init__(self, code: int, reason: str, message: str, *, domain: str = "global",
                 location: str | None = None, location_type: str | None = None,
                 top_message: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.domain = code, reason, message, domain
        self.location, self.location_type = location, location_type
        self.top_message = top_message or message
        self.headers = headers or {}

    def body(self) -> dict:
        err = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location:
            err["location"] = self.location
            err["locationType"] = self.location_type or "parameter"
        out: dict[str, Any] = {"code": self.code, "message": self.top_message, "errors": [err]}
        if self.code in _STATUS_NAMES:
            out["status"] = _STATUS_NAMES[self.code]
        return {"error": out}

    def response(self) -> Response:
        resp = Response(json.dumps(self.body(), indent=2), status=self.code,
                        mimetype="application/json")
        for k, v in self.headers.items():
            resp.headers[k] = v
        return resp


class OAuthError(Exception):
    """A token/revoke endpoint error: ``{"error", "error_description"}``."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> Response:
        return Response(json.dumps({"error": self.error, "error_description": self.description}),
                        status=self.status, mimetype="application/json")


class _AuthPageError(Exception):
    """An error Google shows on its own page instead of redirecting (bad client, redirect …)."""

    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _bad(message: str, reason: str = "invalid", **kw) -> ApiError:
    return ApiError(400, reason, message, **kw)


def _not_found() -> ApiError:
    return ApiError(404, "notFound", "Not Found")


_FAULT_MESSAGES = {
    "backendError": ("global", "Backend Error"),
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "forbiddenForNonOrganizer": ("calendar", "Shared properties can only be changed by the organizer of the event."),
    "internalError": ("global", "Internal Error"),
}


def _fault(status: int, reason: str) -> ApiError:
    domain, message = _FAULT_MESSAGES.get(reason, ("global", reason))
    return ApiError(status, reason, message, domain=domain)


#: Kinds ``GoogleSandbox.fault_rate`` can inject (see the module docstring, "Faults").
FAULT_KINDS = ("403_rate_limit", "429", "500", "503", "timeout", "hang", "reset", "reset_after")
_TOKEN_FAULT_KINDS = ("500", "503", "timeout", "hang", "reset", "reset_after")
_FAULT_ANSWERS = {"403_rate_limit": (403, "rateLimitExceeded"), "429": (429, "rateLimitExceeded"),
                  "500": (500, "backendError"), "503": (503, "backendError")}
# What can befall a connection rather than one call: for a batch, the whole batch HTTP request.
_CONNECTION_FAULT_KINDS = ("timeout", "hang", "reset", "reset_after")


class _FaultPlan:
    """Probabilistic faults (``GoogleSandbox.fault_rate``): rate, weighted kinds, a seeded RNG, counts."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.kinds: list[str] = list(FAULT_KINDS)
        self.weights: list[float] = [1.0] * len(FAULT_KINDS)
        self.hold = 31.0
        self.token_endpoint = True
        self.rng = random.Random()
        self.counts: dict[str, int] = {"requests": 0}
        self.lock = threading.Lock()

    def configure(self, rate: float, kinds, seed, hold: float, token_endpoint: bool) -> None:
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if kinds is None:
            kinds = FAULT_KINDS
        pairs = list(kinds.items()) if isinstance(kinds, dict) else [(k, 1.0) for k in kinds]
        unknown = [k for k, _ in pairs if k not in FAULT_KINDS]
        if unknown or not pairs or any(float(w) < 0 for _, w in pairs):
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        with self.lock:
            self.rate = float(rate)
            self.kinds = [k for k, _ in pairs]
            self.weights = [float(w) for _, w in pairs]
            self.hold = float(hold)
            self.token_endpoint = bool(token_endpoint)
            if seed is not None:
                self.rng = random.Random(seed)

    def pick(self, token: bool, among: tuple[str, ...] | None = None) -> str | None:
        """The fault for one eligible request, or None (counted either way). ``among``: only these kinds
        can befall it (a draw of another kind is no fault), so a batch HTTP request and the calls inside it
        each get their share of the configured kinds at the configured rate."""
        with self.lock:
            self.counts["requests"] += 1
            if self.rate <= 0 or self.rng.random() >= self.rate:
                return None
            kind = self.rng.choices(self.kinds, weights=self.weights)[0]
            if among is not None and kind not in among:
                return None
            if token and kind not in _TOKEN_FAULT_KINDS:
                kind = "503"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            return kind


# --------------------------------------------------------------------------- time helpers

def _rfc3339_ms(ts: float) -> str:
    """UTC RFC 3339 with milliseconds, as Google writes ``updated``/``created``."""
    dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _parse_rfc3339(value: str) -> datetime | None:
    """Parse an RFC 3339 timestamp; returns an aware datetime, a naive one when the
    string has no offset, or None when it is not a timestamp at all."""
    if not isinstance(value, str) or not re.fullmatch(
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2})?", value):
        return None
    try:
        return datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return None


def _render_instant(ts: float, tz_name: str) -> str:
    """Write an instant the way Google does: in ``tz_name``, seconds precision, Z for UTC."""
    dt = datetime.fromtimestamp(int(ts), _zone(tz_name) or timezone.utc)
    if dt.utcoffset() == timedelta(0):
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.isoformat(timespec="seconds")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _random_base32hex(n: int) -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuv"
    return "".join(secrets.choice(alphabet) for _ in range(n))


# --------------------------------------------------------------------------- discovery document

def _load_discovery() -> dict | None:
    """The Calendar v3 discovery document shipped with google-api-python-client."""
    spec = importlib.util.find_spec("googleapiclient")
    if not spec or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "discovery_cache/documents/calendar.v3.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        return None


class _Discovery:
    """Method parameters, scopes and schema checks from the discovery document."""

    _TYPE_NAMES = {"string": "TYPE_STRING", "integer": "TYPE_INT32", "boolean": "TYPE_BOOL",
                   "number": "TYPE_DOUBLE", "array": "TYPE_MESSAGE", "object": "TYPE_MESSAGE"}

    def __init__(self, doc: dict | None):
        self.doc = doc
        self.schemas = doc["schemas"] if doc else {}
        self.global_params = doc["parameters"] if doc else {}
        self.scope_descriptions = ({k: v["description"] for k, v in doc["auth"]["oauth2"]["scopes"].items()}
                                   if doc else {SCOPE_CALENDAR: "Google Calendar", SCOPE_EVENTS: "Events",
                                                SCOPE_READONLY: "Read-only"})

    def method(self, resource: str, name: str) -> dict | None:
        if not self.doc:
            return None
        return self.doc["resources"][resource]["methods"][name]

    def check_query(self, method_id: str, method: dict | None, args) -> None:
        """400 for undeclared query parameters and badly typed values."""
        if method is None:
            return
        declared = {k: v for k, v in method.get("parameters", {}).items() if v.get("location") == "query"}
        declared.update(self.global_params)
        for key in args.keys():
            spec = declared.get(key)
            if spec is None:
                raise _bad(f"Unknown query parameter '{key}' for {method_id}.", "invalidParameter",
                           location=key, location_type="parameter")
            values = args.getlist(key)
            if len(values) > 1 and not spec.get("repeated"):
                raise _bad(f"Parameter '{key}' may be given only once.", "invalidParameter",
                           location=key, location_type="parameter")
            for v in values:
                self._check_param_value(key, spec, v)

    @staticmethod
    def _check_param_value(key: str, spec: dict, v: str) -> None:
        kind = spec.get("type")
        if kind == "integer":
            if not re.fullmatch(r"[-+]?\d+", v):
                raise _bad(f"Invalid value '{v}'. Values must match the following regular expression: "
                           "'[-+]?\\d+'", "invalidParameter", location=key, location_type="parameter")
            lo, hi = spec.get("minimum"), spec.get("maximum")
            if (lo is not None and int(v) < int(lo)) or (hi is not None and int(v) > int(hi)):
                raise _bad(f"Invalid value '{v}'. Values must be within the range: [{lo}, {hi}]",
                           "invalidParameter", location=key, location_type="parameter")
        elif kind == "boolean" and v not in ("true", "false"):
            raise _bad(f"Invalid boolean value: '{v}'.", "invalidBoolean", location=key,
                       location_type="parameter")
        if "enum" in spec and v not in spec["enum"]:
            raise _bad(f"Invalid value '{v}' for parameter '{key}'. Allowed: {', '.join(spec['enum'])}.",
                       "invalidParameter", location=key, location_type="parameter")

    def check_body(self, value: Any, schema_name: str) -> None:
        """400 for unknown properties and wrong JSON types (``null`` is always allowed)."""
        if not self.doc:
            return
        self._check(value, {"$ref": schema_name}, "resource")

    def _check(self, value: Any, schema: dict, path: str) -> None:
        if value is None:
            return
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type", "object")
        if kind == "any":
            return
        if kind == "object":
            if not isinstance(value, dict):
                raise self._type_error(path, "TYPE_MESSAGE", value)
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for k, v in value.items():
                if k in props:
                    self._check(v, props[k], f"{path}.{k}")
                elif extra is not None:
                    self._check(v, extra, f"{path}[{k}]")
                else:
                    raise _bad(f"Invalid JSON payload received. Unknown name \"{k}\" at '{path}': "
                               "Cannot find field.", "invalid", location=f"{path}.{k}",
                               location_type="body")
        elif kind == "array":
            if not isinstance(value, list):
                raise self._type_error(path, "TYPE_MESSAGE", value)
            for i, item in enumerate(value):
                self._check(item, schema.get("items", {"type": "any"}), f"{path}[{i}]")
        elif kind == "string":
            # int64 fields travel as JSON strings, but Google's JSON parser (proto3 mapping)
            # accepts plain numbers for them too, e.g. Channel.expiration.
            if schema.get("format") in ("int64", "uint64") and isinstance(value, int) \
                    and not isinstance(value, bool):
                return
            if not isinstance(value, str):
                raise self._type_error(path, "TYPE_STRING", value)
        elif kind == "integer":
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and re.fullmatch(r"-?\d+", value))
            if not ok:
                raise self._type_error(path, "TYPE_INT32", value)
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise self._type_error(path, "TYPE_BOOL", value)
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._type_error(path, "TYPE_DOUBLE", value)

    @staticmethod
    def _type_error(path: str, type_name: str, value: Any) -> ApiError:
        return _bad(f"Invalid value at '{path}' ({type_name}), {json.dumps(value)}", "invalid",
                    location=path, location_type="body")


# --------------------------------------------------------------------------- fields= partial responses

def _parse_fields(spec: str) -> dict:
    """Parse a ``fields`` selector into a tree {name: subtree | None (= everything)}."""
    pos = 0

    def merge(tree: dict, parts: list[str], sub: dict | None) -> None:
        head, rest = parts[0].strip(), parts[1:]
        if not head:
            raise ValueError("empty field name")
        if head in tree and tree[head] is None:
            return  # already selected whole
        if rest:
            merge(tree.setdefault(head, {}), rest, sub)
        elif sub is None:
            tree[head] = None
        elif head in tree:
            for k, v in sub.items():
                merge(tree[head], [k], v)
        else:
            tree[head] = sub

    def parse_list() -> dict:
        nonlocal pos
        tree: dict = {}
        while True:
            start = pos
            while pos < len(spec) and spec[pos] not in ",()":
                pos += 1
            path = spec[start:pos].strip()
            sub = None
            if pos < len(spec) and spec[pos] == "(":
                pos += 1
                sub = parse_list()
                if pos >= len(spec) or spec[pos] != ")":
                    raise ValueError("unbalanced parentheses")
                pos += 1
            merge(tree, path.split("/"), sub)
            if pos < len(spec) and spec[pos] == ",":
                pos += 1
                continue
            return tree

    tree = parse_list()
    if pos != len(spec):
        raise ValueError("unexpected character")
    return tree


def _apply_fields(obj: Any, tree: dict | None) -> Any:
    if tree is None:
        return obj
    if isinstance(obj, list):
        return [_apply_fields(x, tree) for x in obj]
    if isinstance(obj, dict):
        if "*" in tree:
            return obj
        return {k: _apply_fields(obj[k], sub) for k, sub in tree.items() if k in obj}
    return obj


# --------------------------------------------------------------------------- state

@dataclass
class _Event:
    data: dict                      # stored resource (start/end as given; conference as it is now)
    seq: int                        # global change counter at the last write
    start_ts: float
    end_ts: float
    updated_ts: float
    pending_reads: int = 0          # reads left before a pending conference completes
    last_request_id: str | None = None
    virtual: bool = False           # an instance generated from a recurring event, not stored
    gone: dict[str, int] = field(default_factory=dict)  # recurring: instance id -> change counter
                                                        # when a rule change removed it


@dataclass
class _Calendar:
    id: str
    owner: str
    summary: str
    time_zone: str
    access_role: str                # the owner's role (its calendarList accessRole)
    primary: bool
    color: tuple[str, str]
    events: dict[str, _Event] = field(default_factory=dict)
    updated_ts: float = 0.0
    shared: dict[str, str] = field(default_factory=dict)   # other account email -> role


@dataclass
class _Channel:
    """A push notification channel of events.watch."""
    id: str
    resource_id: str
    resource_uri: str
    calendar_id: str
    address: str
    token: str | None
    expiration_ms: int
    email: str                      # the user who created it
    client_id: str                  # and through which OAuth client
    created: float
    last_number: int = 0            # X-Goog-Message-Number of the last message queued
    stopped: bool = False
    expired: bool = False           # forced by expire_channels()


@dataclass
class _Account:
    email: str
    name: str
    time_zone: str
    calendar_ids: list[str] = field(default_factory=list)


@dataclass
class _Grant:
    id: str
    email: str
    client_id: str
    requested: list[str]
    granted: list[str]
    refresh_token: str | None
    created: float
    revoked: bool = False


@dataclass
class _AccessToken:
    token: str
    grant_id: str
    email: str
    scopes: list[str]
    expires_at: float
    expired: bool = False


def _merge_patch(target: dict, patch: dict) -> None:
    """Patch semantics: dicts merge key-wise, ``None`` deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        elif isinstance(value, dict):
            fresh: dict = {}
            _merge_patch(fresh, value)
            target[key] = fresh
        else:
            target[key] = copy.deepcopy(value)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


class _QuietHandler(WSGIRequestHandler):
    """werkzeug handler without the per-request access log line (tests stay readable)."""

    def log_request(self, *args, **kwargs) -> None:  # noqa: D401
        pass


# --------------------------------------------------------------------------- the sandbox

class GoogleSandbox:
    """Google OAuth 2.0 + Calendar API v3 on loopback, in memory.

    Args:
        client_id / client_secret: the only OAuth client the server knows.
        token_ttl: access-token lifetime in seconds (``expires_in`` of token responses).
        conference_pending_reads: reads of an event (get, or a list page holding it) after
            which a pending Meet conference completes; 0 = ready in the insert response.
        now: optional clock, a callable returning epoch seconds (float) or an aware
            datetime; defaults to ``time.time``. ``advance(seconds)`` adds to it.
        redirect_uris: allowed redirect URIs; None accepts any absolute http(s) URI.
        seed: add the three SEEDED_ACCOUNTS (each with primary + "Clinic appointments").
        allow_http_webhooks: accept ``http://`` watch addresses on loopback hosts
            (127.0.0.0/8, ::1, localhost). Real Google accepts only HTTPS with a valid
            certificate; ``False`` enforces that here too.
        channel_ttl: longest (and default) channel lifetime in seconds (604800 = 7 days).
        push_retry_delays: seconds to wait before each retry of a notification answered
            500/502/503/504 (or not answered at all); its length is the number of retries.
        push_timeout: seconds a notification POST may take before it counts as failed.
        freebusy_max_days: longest freebusy.query range (days) before 400 timeRangeTooLong.
        latency: seconds every Calendar API and token request is held before it is served
            (a benchmark knob: 0.1 is Google's typical round trip; default 0 = off); a batch HTTP
            request is held once, however many calls it carries.
        user_rate_limit: Calendar API requests per user per 60 s sliding window (Google's
            per-user-per-project quota is 600/min, NOTES.md "Quotas"); beyond it a request is
            refused with ``rate_limit_status`` (403 or 429) reason ``rateLimitExceeded``
            (domain ``usageLimits``) and not carried out. Refusals do not count towards the
            window. The user is the access token's account (else the raw token). 0 = off.

    Calendar ids: an account's primary calendar id is its email; other calendars get
    ``calendar_id(email, summary)`` = ``c_<26 hex>@group.calendar.google.com``
    (deterministic, so tests and the demo can name them).
    """

    def __init__(self, *, client_id: str = "sandbox-client-id.apps.googleusercontent.com",
                 client_secret: str = "sandbox-client-secret", token_ttl: int = 3600,
                 conference_pending_reads: int = 1, now: Callable[[], Any] | None = None,
                 redirect_uris: list[str] | None = None, seed: bool = True,
                 allow_http_webhooks: bool = True, channel_ttl: int = 604800,
                 push_retry_delays=(1.0, 2.0, 4.0, 8.0, 16.0), push_timeout: float = 5.0,
                 freebusy_max_days: int = 90, latency: float = 0.0, user_rate_limit: int = 0,
                 rate_limit_status: int = 403):
        if rate_limit_status not in (403, 429):
            raise ValueError("rate_limit_status must be 403 or 429")
        self.latency = max(0.0, float(latency))
        self.user_rate_limit = max(0, int(user_rate_limit))
        self.rate_limit_status = int(rate_limit_status)
        self._limit_lock = threading.Lock()
        self._limit_windows: dict[str, collections.deque] = {}
        self._limit_counts = {"served": 0, "refused": 0}
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = int(token_ttl)
        self.conference_pending_reads = int(conference_pending_reads)
        self.redirect_uris = list(redirect_uris) if redirect_uris else None
        self._clock = now or time.time
        self._offset = 0.0
        self._lock = threading.RLock()
        self._disc = _Discovery(_load_discovery())
        self._server = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._seed = seed
        self.allow_http_webhooks = bool(allow_http_webhooks)
        self.channel_ttl = int(channel_ttl)
        self.push_retry_delays = tuple(float(d) for d in push_retry_delays)
        self.push_timeout = float(push_timeout)
        self.freebusy_max_days = int(freebusy_max_days)
        # Notification delivery: a heap of (due monotonic time, n, job) served by one
        # background thread; its own condition, never held together with self._lock.
        self._push_cv = threading.Condition()
        self._push_heap: list[tuple[float, int, dict]] = []
        self._push_counter = itertools.count()
        self._push_pending = 0           # jobs queued or being sent
        self._push_thread: threading.Thread | None = None
        self._push_closing = False
        self._init_state()
        self.app = self._build_app()
        self._flask_wsgi = self.app.wsgi_app  # the calls inside a batch go straight to it (no second latency)
        self.app.wsgi_app = self._fault_middleware(self.app.wsgi_app)

    # ------------------------------------------------------------------ state & lifecycle

    def _init_state(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._calendars: dict[str, _Calendar] = {}
        self._grants: dict[str, _Grant] = {}
        self._refresh: dict[str, str] = {}          # refresh token -> grant id
        self._access: dict[str, _AccessToken] = {}
        self._codes: dict[str, dict] = {}
        self._consents: dict[str, dict] = {}        # pending consent pages, by txn id
        self._seq = 0
        self._sync_tokens: dict[str, tuple[str, int]] = {}
        self._token_windows: dict[str, tuple[float | None, float | None] | None] = {}
        self._auto_email: str | None = None
        self._grant_only: list[str] | None = None
        self._down = False
        self._fail: list[tuple[int, str]] = []
        self._kill_pid: int | None = None
        self._kill_patch_pid: int | None = None
        self._lose: list[str | None] = []  # lose_answers: HTTP methods (None = any) whose answer is lost
        self._conference_outcome = "success"
        self._log: list[dict] = []
        self._channels: dict[str, _Channel] = {}
        self._notifications: list[dict] = []
        self._drop_next = 0
        self._faults = _FaultPlan()
        with self._push_cv:
            self._push_pending -= len(self._push_heap)
            self._push_heap.clear()
            self._push_cv.notify_all()
        if self._seed:
            for email, tz in SEEDED_ACCOUNTS:
                self.add_account(email, timezone=tz)

    def _now(self) -> float:
        value = self._clock()
        if isinstance(value, datetime):
            value = value.timestamp()
        return float(value) + self._offset

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port) in a daemon thread; returns base_url."""
        if self._server is not None:
            return self._base_url  # type: ignore[return-value]
        self._server = make_server(host, port, self.app, threaded=True, request_handler=_QuietHandler)
        self._base_url = f"http://{host}:{self._server.server_port}"
        # A short poll interval keeps stop() fast (shutdown waits for one poll).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="google-sandbox", daemon=True)
        self._thread.start()
        with self._push_cv:
            if self._push_heap:
                self._ensure_push_worker()
        return self._base_url

    def stop(self) -> None:
        """Stop serving (idempotent) and the notification sender. State is kept
        (notifications still queued are sent after the next ``start()``)."""
        with self._push_cv:
            self._push_closing = True
            self._push_cv.notify_all()
            worker = self._push_thread
        if worker is not None:
            worker.join(timeout=self.push_timeout + 1)
        with self._push_cv:
            self._push_closing = False
            self._push_thread = None
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "GoogleSandbox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started (RuntimeError before)."""
        if not self._base_url:
            raise RuntimeError("GoogleSandbox not started")
        return self._base_url

    @property
    def auth_uri(self) -> str:
        return self.base_url + "/o/oauth2/auth"

    @property
    def token_uri(self) -> str:
        return self.base_url + "/token"

    @property
    def revoke_uri(self) -> str:
        return self.base_url + "/revoke"

    @property
    def api_endpoint(self) -> str:
        """What to pass as ``client_options={"api_endpoint": …}`` to ``build()``."""
        return self.base_url + "/calendar/v3/"

    def client_config(self, redirect_uri: str) -> dict:
        """A ``Flow.from_client_config`` dict pointing at this sandbox."""
        return {"web": {"client_id": self.client_id, "client_secret": self.client_secret,
                        "auth_uri": self.auth_uri, "token_uri": self.token_uri,
                        "redirect_uris": [redirect_uri]}}

    # ------------------------------------------------------------------ accounts & calendars

    @staticmethod
    def calendar_id(email: str, summary: str) -> str:
        """Deterministic id of a secondary calendar ``summary`` of ``email``."""
        digest = hashlib.sha256(f"{email.lower()}/{summary}".encode()).hexdigest()[:26]
        return f"c_{digest}@group.calendar.google.com"

    def add_account(self, email: str, *, calendars=(("Clinic appointments", "writer"),),
                    timezone: str = "Europe/Paris", name: str | None = None) -> None:
        """Add (or extend) a Google account: its primary calendar (id = email, role owner)
        plus ``calendars``, a sequence of ``(summary, access_role)``."""
        if _zone(timezone) is None:
            raise ValueError(f"unknown time zone {timezone!r}")
        with self._lock:
            acct = self._accounts.get(email)
            if acct is None:
                local = email.split("@")[0]
                acct = _Account(email, name or " ".join(p.capitalize() for p in re.split(r"[._-]", local)),
                                timezone)
                self._accounts[email] = acct
                self._new_calendar(acct, email, email, "owner", timezone, primary=True)
            for summary, role in calendars:
                self.add_calendar(email, summary, role)

    def add_calendar(self, email: str, summary: str, role: str = "writer",
                     timezone: str | None = None) -> str:
        """Add a secondary calendar to an account; returns its id (idempotent)."""
        if role not in _ROLE_RANK:
            raise ValueError(f"unknown access role {role!r}")
        with self._lock:
            acct = self._accounts[email]
            cid = self.calendar_id(email, summary)
            if cid not in self._calendars:
                self._new_calendar(acct, cid, summary, role, timezone or acct.time_zone, primary=False)
            return cid

    def _new_calendar(self, acct: _Account, cid: str, summary: str, role: str, tz: str,
                      primary: bool) -> None:
        color = _COLORS[len(acct.calendar_ids) % len(_COLORS)]
        self._calendars[cid] = _Calendar(cid, acct.email, summary, tz, role, primary, color,
                                         updated_ts=self._now())
        acct.calendar_ids.append(cid)

    def calendars(self, email: str) -> list[dict]:
        """``[{id, summary, timeZone, accessRole, primary}]`` of an account's calendar list
        (its own calendars, then those shared with it)."""
        with self._lock:
            return [{"id": c.id, "summary": c.summary, "timeZone": c.time_zone,
                     "accessRole": self._role(c, email), "primary": c.primary and c.owner == email}
                    for c in (self._calendars[i] for i in self._accounts[email].calendar_ids)]

    def share_calendar(self, calendar_id: str, with_email: str, role: str = "freeBusyReader") -> None:
        """The owner shares ``calendar_id`` with another account (an ACL rule plus the
        calendarList entry Google adds for the grantee). ``role`` is ``freeBusyReader``
        ("See only free/busy"), ``reader``, ``writer`` or ``owner``. Sharing again changes
        the role. Sync tokens of that calendar are invalidated (an ACL change, NOTES C)."""
        if role not in _ROLE_RANK:
            raise ValueError(f"unknown access role {role!r}")
        with self._lock:
            cal = self._calendars[calendar_id]
            acct = self._accounts[with_email]
            if cal.owner == with_email:
                raise ValueError(f"{with_email} owns {calendar_id}")
            cal.shared[with_email] = role
            if calendar_id not in acct.calendar_ids:
                acct.calendar_ids.append(calendar_id)
            self._drop_sync_tokens(calendar_id)

    def unshare_calendar(self, calendar_id: str, with_email: str) -> None:
        """Remove the ACL rule and the grantee's calendarList entry."""
        with self._lock:
            cal = self._calendars[calendar_id]
            cal.shared.pop(with_email, None)
            acct = self._accounts[with_email]
            if calendar_id in acct.calendar_ids:
                acct.calendar_ids.remove(calendar_id)
            self._drop_sync_tokens(calendar_id)

    def _drop_sync_tokens(self, calendar_id: str) -> None:
        for tok in [t for t, (cid, _s) in self._sync_tokens.items() if cid == calendar_id]:
            del self._sync_tokens[tok]

    @staticmethod
    def _role(cal: _Calendar, email: str) -> str | None:
        """The access role ``email`` has on ``cal`` (None = cannot see it)."""
        if cal.owner == email:
            return cal.access_role
        return cal.shared.get(email)

    # ------------------------------------------------------------------ admin knobs

    def auto_approve(self, email: str | None) -> None:
        """When set, GET /o/oauth2/auth redirects at once with a code for ``email``
        (all requested scopes, minus what ``grant_only`` withholds). None = consent page."""
        with self._lock:
            if email is not None and email not in self._accounts:
                raise KeyError(email)
            self._auto_email = email

    def grant_only(self, scopes: list[str] | None) -> None:
        """Granular consent: approvals from now on grant only ``scopes`` (∩ requested).
        None restores "grant what was asked"."""
        with self._lock:
            self._grant_only = list(scopes) if scopes is not None else None

    def revoke(self, email: str) -> None:
        """The user removed our access: every grant of ``email`` dies — refresh gets 400
        invalid_grant "Token has been expired or revoked.", access tokens get 401."""
        with self._lock:
            for grant in self._grants.values():
                if grant.email == email:
                    grant.revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far now gets 401 from the API."""
        with self._lock:
            for tok in self._access.values():
                tok.expired = True

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward (token expiry, ``updated`` stamps)."""
        with self._lock:
            self._offset += float(seconds)

    def kill_on_insert(self, pid: int | None) -> None:
        """One-shot: after the next events.insert is stored, SIGKILL ``pid`` before replying.
        ``None`` disarms a kill that has not happened yet."""
        with self._lock:
            self._kill_pid = int(pid) if pid is not None else None

    def kill_on_patch(self, pid: int | None) -> None:
        """One-shot: after the next events.patch/update is stored, SIGKILL ``pid`` before replying (the
        write landed; the client never records it). ``None`` disarms it."""
        with self._lock:
            self._kill_patch_pid = int(pid) if pid is not None else None

    def lose_answers(self, n: int = 1, method: str | None = None) -> None:
        """The next ``n`` Calendar API requests (only those with HTTP ``method`` when given, e.g.
        "POST" for inserts, "PATCH") are carried out, then the connection is reset instead of answering:
        ``reset_after`` on demand, for a deterministic lost answer. httplib2 sends a request again once
        when the connection drops before an answer, so one lost call takes two. ``n`` 0 cancels the rest."""
        with self._lock:
            if int(n) <= 0:
                self._lose.clear()
            self._lose.extend([method.upper() if method else None] * int(n))

    def _answer_lost(self, method: str) -> bool:
        with self._lock:
            for i, wanted in enumerate(self._lose):
                if wanted is None or wanted == method:
                    del self._lose[i]
                    return True
            return False

    @property
    def kill_armed(self) -> bool:
        """True while a ``kill_on_insert`` is armed and has not fired yet."""
        with self._lock:
            return self._kill_pid is not None

    def set_down(self, down: bool) -> None:
        """Outage: API → 503 backendError, token endpoint → 503 while ``down``."""
        with self._lock:
            self._down = bool(down)

    def fail_next(self, n: int, status: int = 500, reason: str = "backendError") -> None:
        """The next ``n`` API requests fail with ``status``/``reason`` (e.g. 403 or 429
        ``rateLimitExceeded``, 403 ``quotaExceeded``, 503 ``backendError``)."""
        with self._lock:
            self._fail.extend([(int(status), reason)] * int(n))

    def conference_outcome(self, outcome: str) -> None:
        """How conferences created from now on end: "success" (default) or "failure"."""
        if outcome not in ("success", "failure"):
            raise ValueError(outcome)
        with self._lock:
            self._conference_outcome = outcome

    def invalidate_sync_tokens(self) -> None:
        """Every sync token issued so far now answers 410 fullSyncRequired."""
        with self._lock:
            self._sync_tokens.clear()

    def fault_rate(self, rate: float, kinds=None, *, seed: int | None = None, hold: float = 31.0,
                   token_endpoint: bool = True) -> None:
        """Chaos: each Calendar API request (and, with ``token_endpoint``, each ``POST /token``) fails
        with probability ``rate`` (0 switches it off). ``kinds``: names from ``FAULT_KINDS`` (equal
        weights) or ``{name: weight}``; default all. ``hold``: seconds a ``timeout``/``hang`` request
        is held (default 31, just beyond the sidecar's 30 s Google timeout). ``seed`` reseeds the
        random draw so a run can be repeated. Counts are kept across calls (``fault_counts``)."""
        self._faults.configure(rate, kinds, seed, hold, token_endpoint)

    def fault_counts(self) -> dict:
        """``{kind: injected, "requests": eligible requests seen}`` since start (or ``reset()``)."""
        with self._faults.lock:
            return dict(self._faults.counts)

    def limit_counts(self) -> dict:
        """``{"served": n, "refused": n}``: Calendar API requests the per-user limit let through or
        refused (both 0 while ``user_rate_limit`` is off)."""
        with self._limit_lock:
            return dict(self._limit_counts)

    def _over_user_limit(self, environ: dict) -> bool:
        """Count this API request in its user's 60 s window; True when it must be refused."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self._lock:
            known = self._access.get(token)
            user = known.email if known else token
        now = time.monotonic()
        with self._limit_lock:
            window = self._limit_windows.setdefault(user, collections.deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self.user_rate_limit:
                self._limit_counts["refused"] += 1
                return True
            window.append(now)
            self._limit_counts["served"] += 1
            return False

    def _fault_middleware(self, wsgi_app: Callable) -> Callable:
        """WSGI middleware around the Flask app: simulated latency, the per-user rate limit, and
        ``fault_rate`` faults on API and token requests."""
        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            token = path == "/token"
            api = path.startswith("/calendar/v3/")
            batch = path == google_batch.BATCH_PATH
            if self.latency > 0 and (api or token or batch):
                time.sleep(self.latency)  # outside every lock: concurrent requests overlap, as on Google
            if batch:  # connection faults hit the batch HTTP request; the rest befalls each call in it
                return self._faulty(self._batch_app, environ, start_response, path, False, True,
                                    among=_CONNECTION_FAULT_KINDS)
            if api and self.user_rate_limit > 0 and self._over_user_limit(environ):
                read_body(environ)
                return _fault(self.rate_limit_status, "rateLimitExceeded").response()(environ, start_response)
            return self._faulty(wsgi_app, environ, start_response, path, token, api)
        return app

    def _faulty(self, wsgi_app: Callable, environ: dict, start_response: Callable, path: str, token: bool,
                api: bool, among: tuple[str, ...] | None = None):
        """The ``fault_rate`` / ``lose_answers`` part of the middleware."""
        plan = self._faults
        lost = api and bool(self._lose) and self._answer_lost(environ.get("REQUEST_METHOD", ""))
        if not lost and (plan.rate <= 0 or not (api or (token and plan.token_endpoint))):
            return wsgi_app(environ, start_response)
        kind = "reset_after" if lost else plan.pick(token, among)
        if kind is None:
            return wsgi_app(environ, start_response)
        if kind in _FAULT_ANSWERS:
            if token:
                status = _FAULT_ANSWERS[kind][0]
                answer = OAuthError(status, "temporarily_unavailable" if status == 503 else "internal_failure",
                                    "Backend Error").response()
            else:
                answer = _fault(*_FAULT_ANSWERS[kind]).response()
            return answer(environ, start_response)
        return connection_fault(kind, plan.hold, wsgi_app, environ, start_response)

    # ------------------------------------------------------------------ batch requests

    def _batch_app(self, environ: dict, start_response: Callable):
        """``POST /batch/calendar/v3`` (Calendar batch guide, ``sandbox.google_batch``): up to 1000 calls
        in one multipart/mixed request, each run through the same handlers as a direct request, in order.

        Logged once in ``requests`` as ``{path: "/batch/calendar/v3", calls: n, batch: False}``; each call
        is logged as a direct request would be, with ``batch: True``. One ``latency`` sleep per batch HTTP
        request (the middleware's), none per call. A malformed body or more than 1000 parts → 400 for
        the whole batch; otherwise 200, whatever the calls answered."""
        entry = {"method": environ.get("REQUEST_METHOD", ""), "path": google_batch.BATCH_PATH, "query": {},
                 "json": None, "form": None, "auth_email": self._email_for_token(environ), "client_auth": None,
                 "if_match": None, "status": None, "time": self._now(), "batch": False, "calls": 0}
        with self._lock:
            self._log.append(entry)
        body = get_input_stream(environ).read()
        if entry["method"] != "POST":
            answer = _not_found()
        else:
            try:
                calls = google_batch.parse(environ.get("CONTENT_TYPE", ""), body)
            except google_batch.BatchFormatError as exc:
                answer = _bad(str(exc), "badRequest")
            else:
                answers = [self._batch_call(environ, call) for call in calls]
                content_type, data = google_batch.render(answers)
                with self._lock:
                    entry["status"], entry["calls"] = 200, len(calls)
                start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data)))])
                return [data]
        with self._lock:
            entry["status"] = answer.code
        return answer.response()(environ, start_response)

    def _batch_call(self, outer: dict, call: google_batch.InnerRequest) -> tuple:
        """One call of a batch → ``(Content-ID, status, headers, body)``. The outer request's headers
        (not its ``Content-*``) apply unless the part sets its own; the per-user limit counts the call
        (a refusal answers inside its part, not carried out); ``fault_rate`` answer faults befall it."""
        def refused(error: ApiError) -> tuple:
            resp = error.response()
            return call.content_id, resp.status_code, list(resp.headers.items()), resp.get_data()

        if not call.path.startswith("/calendar/v3/"):
            return refused(_not_found())
        headers = {k: v for k, v in EnvironHeaders(outer).items()
                   if not k.lower().startswith("content-") and k.lower() != "host"}
        headers.update({k: v for k, v in call.headers.items() if k.lower() != "content-length"})
        host = outer.get("HTTP_HOST") or f"{outer.get('SERVER_NAME', '127.0.0.1')}:{outer.get('SERVER_PORT', '80')}"
        environ = EnvironBuilder(path=call.path, query_string=call.query, method=call.method, headers=headers,
                                 data=call.body or None,
                                 base_url=f"{outer.get('wsgi.url_scheme', 'http')}://{host}").get_environ()
        environ["sandbox.batch"] = True
        environ["REMOTE_ADDR"] = outer.get("REMOTE_ADDR", "127.0.0.1")
        if self.user_rate_limit > 0 and self._over_user_limit(environ):
            return refused(_fault(self.rate_limit_status, "rateLimitExceeded"))
        if self._faults.rate > 0:
            kind = self._faults.pick(False, tuple(_FAULT_ANSWERS))
            if kind is not None:
                return refused(_fault(*_FAULT_ANSWERS[kind]))
        app_iter, status, answer_headers = run_wsgi_app(self._flask_wsgi, environ)
        try:
            data = b"".join(app_iter)
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        return call.content_id, int(status.split()[0]), list(answer_headers.items()), data

    def _email_for_token(self, environ: dict) -> str | None:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self._lock:
            known = self._access.get(token)
            return known.email if known else None

    # ------------------------------------------------------------------ push notification knobs

    def drop_notifications(self, n: int) -> None:
        """The next ``n`` notifications (any channel, sync or exists) are silently not sent,
        as Google warns happens ("not 100% reliable"). Their message numbers are still used
        up, and each appears in ``notifications`` with ``dropped: true``."""
        with self._lock:
            self._drop_next += int(n)

    def expire_channels(self) -> None:
        """Every live channel expires now: no more notifications on it."""
        with self._lock:
            now_ms = int(self._now() * 1000)
            for ch in self._channels.values():
                if not ch.stopped and not ch.expired:
                    ch.expired = True
                    ch.expiration_ms = min(ch.expiration_ms, now_ms)

    def channels(self) -> list[dict]:
        """Every channel created so far: ``{id, resourceId, resourceUri, calendarId, address,
        token, expiration (ms str), email, state ("live"|"stopped"|"expired"),
        lastMessageNumber}``."""
        with self._lock:
            return [{"id": ch.id, "resourceId": ch.resource_id, "resourceUri": ch.resource_uri,
                     "calendarId": ch.calendar_id, "address": ch.address, "token": ch.token,
                     "expiration": str(ch.expiration_ms), "email": ch.email,
                     "state": self._channel_state(ch), "lastMessageNumber": ch.last_number}
                    for ch in self._channels.values()]

    @property
    def notifications(self) -> list[dict]:
        """Copy of the delivery log, one entry per attempt: ``{time (RFC 3339, sandbox
        clock), channel_id, resource_id, message_number, state ("sync"|"exists"), address,
        attempt (1 = first try, 0 = dropped), status (HTTP status or None), ok, retry (another
        attempt is scheduled), dropped, error}``."""
        with self._lock:
            return copy.deepcopy(self._notifications)

    def reset_notifications(self) -> None:
        with self._lock:
            self._notifications.clear()

    def flush_notifications(self, timeout: float = 5.0) -> bool:
        """Wait until every queued notification (retries included) has been sent or given
        up; True when the queue drained within ``timeout`` seconds."""
        with self._push_cv:
            return self._push_cv.wait_for(lambda: self._push_pending <= 0, timeout)

    @property
    def requests(self) -> list[dict]:
        """Copy of the request log: ``{method, path, query, json, form, auth_email,
        client_auth, if_match, status, time, batch}``; ``query`` maps a name to a string, or to a
        list when repeated; ``batch`` True for a call made inside a batch, whose HTTP request is an
        entry of its own (path "/batch/calendar/v3", ``calls``). /__sandbox__ calls are not logged."""
        with self._lock:
            return copy.deepcopy(self._log)

    def reset_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def reset(self) -> None:
        """Forget everything (accounts re-seeded, tokens, events, knobs, log)."""
        with self._lock:
            self._offset = 0.0
            self._init_state()

    # ------------------------------------------------------------------ event inspection / user edits

    def events(self, calendar_id: str, include_cancelled: bool = True, *, single_events: bool = False,
               time_min: datetime | None = None, time_max: datetime | None = None) -> list[dict]:
        """Stored events of a calendar as the API would render them (deep copies; full data
        even for tombstones; reading them here does not advance pending conferences).

        ``single_events``: recurring events replaced by their instances overlapping
        [``time_min``, ``time_max``) (aware datetimes), as ``events.list(singleEvents=true)``."""
        with self._lock:
            cal = self._calendars[calendar_id]
            pool = sorted(cal.events.values(), key=lambda e: e.seq)
            if single_events:
                lo = time_min.timestamp() if time_min else None
                hi = time_max.timestamp() if time_max else None
                pool = self._single_events(cal, pool, lo, hi, None, None)
            return [self._render(cal, ev) for ev in pool
                    if include_cancelled or ev.data.get("status") != "cancelled"]

    def count_events(self, calendar_ids: list[str], include_cancelled: bool = True) -> int:
        """How many events ``calendar_ids`` hold, without rendering them: for probes that ask every half
        second (a benchmark waiting for a sync) and must not hold the sandbox's lock for long."""
        with self._lock:
            return sum(1 for calendar_id in calendar_ids for ev in self._calendars[calendar_id].events.values()
                       if include_cancelled or ev.data.get("status") != "cancelled")

    def event(self, calendar_id: str, event_id: str) -> dict | None:
        """One stored event (as ``events`` renders it) or None."""
        with self._lock:
            ev = self._calendars[calendar_id].events.get(event_id)
            return self._render(self._calendars[calendar_id], ev) if ev else None

    def user_insert(self, calendar_id: str, event: dict) -> dict:
        """The account owner creates an event in Google's UI (no auth, not logged).

        Unlike the API, an ``organizer`` in the body is kept: that is how an invitation
        from someone else lands on the calendar (e.g. with the owner's attendee entry
        ``responseStatus: "declined"``)."""
        with self._lock:
            cal = self._calendars[calendar_id]
            self._disc.check_body(event, "Event")
            return self._render(cal, self._insert(cal, event, conf_version=1,
                                                  organizer=event.get("organizer")))

    def user_patch(self, calendar_id: str, event_id: str, changes: dict) -> dict:
        """The owner edits an event in Google's UI (patch semantics). An instance id of a
        recurring event (``<masterId>_<YYYYMMDDTHHMMSSZ>``) edits that instance only."""
        with self._lock:
            cal = self._calendars[calendar_id]
            self._disc.check_body(changes, "Event")
            ev = self._lookup(cal, event_id, materialize=True)
            if ev is None:
                raise KeyError(event_id)
            return self._render(cal, self._modify(cal, ev, changes, 1, "patch"))

    def user_delete(self, calendar_id: str, event_id: str) -> None:
        """The owner deletes an event in Google's UI (it becomes a tombstone). An instance id
        cancels that instance only; a recurring event's own id cancels the whole series."""
        with self._lock:
            cal = self._calendars[calendar_id]
            ev = self._lookup(cal, event_id, materialize=True)
            if ev is None:
                raise KeyError(event_id)
            self._delete(cal, ev)

    # ------------------------------------------------------------------ Flask app

    def _build_app(self) -> Flask:
        app = Flask("sandbox.google")

        @app.before_request
        def _log_request():
            g.log = None
            if request.path.startswith("/__sandbox__") or request.path == "/favicon.ico":
                return
            body = None
            if request.data:
                try:
                    body = json.loads(request.data)
                except ValueError:
                    body = None
            args: dict[str, Any] = {}
            for k in request.args.keys():
                vals = request.args.getlist(k)
                args[k] = vals if len(vals) > 1 else vals[0]
            entry = {"method": request.method, "path": request.path, "query": args, "json": body,
                     "form": request.form.to_dict() if request.form else None,
                     "auth_email": self._email_for_header(), "client_auth": None,
                     "if_match": request.headers.get("If-Match"), "status": None,
                     "time": self._now(), "batch": bool(request.environ.get("sandbox.batch"))}
            g.log = entry
            with self._lock:
                self._log.append(entry)

        @app.after_request
        def _log_status(resp):
            if getattr(g, "log", None) is not None:
                with self._lock:
                    g.log["status"] = resp.status_code
            return resp

        # OAuth
        app.add_url_rule("/o/oauth2/auth", "auth", self._h_auth, methods=["GET"])
        app.add_url_rule("/o/oauth2/consent", "consent", self._h_consent, methods=["POST"])
        app.add_url_rule("/token", "token", self._h_token, methods=["POST"])
        app.add_url_rule("/revoke", "revoke", self._h_revoke, methods=["POST", "GET"])

        # Calendar API
        api = "/calendar/v3"
        app.add_url_rule(f"{api}/users/me/calendarList", "cl_list",
                         self._api("calendarList", "list", self._h_calendar_list), methods=["GET"])
        app.add_url_rule(f"{api}/users/me/calendarList/<cal_id>", "cl_get",
                         self._api("calendarList", "get", self._h_calendar_list_get), methods=["GET"])
        app.add_url_rule(f"{api}/calendars/<cal_id>", "cal_get",
                         self._api("calendars", "get", self._h_calendar_get), methods=["GET"])
        app.add_url_rule(f"{api}/calendars/<cal_id>/events", "ev_list",
                         self._api("events", "list", self._h_events_list), methods=["GET"])
        app.add_url_rule(f"{api}/calendars/<cal_id>/events", "ev_insert",
                         self._api("events", "insert", self._h_events_insert), methods=["POST"])
        app.add_url_rule(f"{api}/calendars/<cal_id>/events/watch", "ev_watch",
                         self._api("events", "watch", self._h_events_watch), methods=["POST"])
        app.add_url_rule(f"{api}/channels/stop", "ch_stop",
                         self._api("channels", "stop", self._h_channels_stop), methods=["POST"])
        app.add_url_rule(f"{api}/freeBusy", "freebusy",
                         self._api("freebusy", "query", self._h_freebusy), methods=["POST"])
        for verb, name in (("GET", "get"), ("PATCH", "patch"), ("PUT", "update"), ("DELETE", "delete")):
            app.add_url_rule(f"{api}/calendars/<cal_id>/events/<event_id>", f"ev_{name}",
                             self._api("events", name, getattr(self, f"_h_events_{name}")),
                             methods=[verb])

        @app.route(f"{api}/", defaults={"rest": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        @app.route(f"{api}/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        def _api_unknown(rest):
            return _not_found().response()

        @app.errorhandler(405)
        def _method_not_allowed(_e):
            if request.path.startswith(api):
                return ApiError(404, "notFound", "Not Found").response()
            return Response("Method Not Allowed", status=405)

        self._register_admin(app)
        return app

    # ------------------------------------------------------------------ OAuth: authorization endpoint

    def _h_auth(self):
        a = request.args
        try:
            params = self._validate_auth_request(a)
        except _AuthPageError as e:
            return self._error_page(e)
        with self._lock:
            if a.get("prompt") == "none" and self._auto_email is None:
                return self._redirect_back(params, {"error": "interaction_required"})
            if self._auto_email is not None:
                email = a.get("login_hint") if a.get("login_hint") in self._accounts else self._auto_email
                granted = self._limit(params["scopes"], params["scopes"])
                return self._approve(params, email, granted)
            txn = secrets.token_urlsafe(16)
            self._consents[txn] = params
            accounts = list(self._accounts.values())
            checked = set(self._limit(params["scopes"], params["scopes"]))
        hint = a.get("login_hint")
        selected = hint if hint in {x.email for x in accounts} else (accounts[0].email if accounts else "")
        return self._consent_page(txn, params, accounts, selected, checked)

    def _validate_auth_request(self, a) -> dict:
        client_id = a.get("client_id")
        if not client_id:
            raise _AuthPageError(400, "invalid_request", "Missing required parameter: client_id")
        if client_id != self.client_id:
            raise _AuthPageError(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = a.get("redirect_uri")
        if not redirect_uri:
            raise _AuthPageError(400, "invalid_request", "Missing required parameter: redirect_uri")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or (
                self.redirect_uris is not None and redirect_uri not in self.redirect_uris):
            raise _AuthPageError(400, "redirect_uri_mismatch",
                                 f"redirect_uri={redirect_uri} is not registered for this client.")
        response_type = a.get("response_type")
        if not response_type:
            raise _AuthPageError(400, "invalid_request", "Missing required parameter: response_type")
        if response_type != "code":
            raise _AuthPageError(400, "unsupported_response_type",
                                 f"Invalid response_type: {response_type}")
        scope = a.get("scope", "").split()
        if not scope:
            raise _AuthPageError(400, "invalid_request", "Missing required parameter: scope")
        scopes = []
        for s in scope:
            full = _SIGNIN_SCOPES.get(s) or (s if s in self._disc.scope_descriptions else None)
            if full is None:
                raise _AuthPageError(400, "invalid_scope",
                                     f"Some requested scopes were invalid. {{invalid=[{s}]}}")
            if full not in scopes:
                scopes.append(full)
        challenge = a.get("code_challenge")
        method = a.get("code_challenge_method")
        if method and not challenge:
            raise _AuthPageError(400, "invalid_request", "Missing required parameter: code_challenge")
        if challenge:
            method = method or "plain"
            if method not in ("S256", "plain"):
                raise _AuthPageError(400, "invalid_request", f"Invalid code_challenge_method: {method}")
            if not re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", challenge):
                raise _AuthPageError(400, "invalid_request", "Invalid code_challenge.")
        access_type = a.get("access_type", "online")
        if access_type not in ("online", "offline"):
            raise _AuthPageError(400, "invalid_request", f"Invalid access_type: {access_type}")
        prompt = a.get("prompt", "").split()
        if any(p not in ("none", "consent", "select_account") for p in prompt) or (
                "none" in prompt and len(prompt) > 1):
            raise _AuthPageError(400, "invalid_request", f"Invalid prompt: {a.get('prompt')}")
        igs = a.get("include_granted_scopes", "false")
        if igs not in ("true", "false"):
            raise _AuthPageError(400, "invalid_request", f"Invalid include_granted_scopes: {igs}")
        return {"client_id": client_id, "redirect_uri": redirect_uri, "scopes": scopes,
                "state": a.get("state"), "challenge": challenge, "method": method,
                "offline": access_type == "offline", "prompt": prompt,
                "include_granted": igs == "true"}

    def _limit(self, requested: list[str], chosen: list[str]) -> list[str]:
        """Scopes actually granted: chosen ∩ requested, minus what grant_only withholds."""
        out = [s for s in requested if s in chosen]
        if self._grant_only is not None:
            out = [s for s in out if s in self._grant_only]
        return out

    def _approve(self, params: dict, email: str, granted: list[str]):
        """Mint a code for ``email`` and 302 back to the client (lock held)."""
        if params["include_granted"]:
            for grant in self._grants.values():
                if grant.email == email and grant.client_id == params["client_id"] and not grant.revoked:
                    granted += [s for s in grant.granted if s not in granted]
        has_live_offline = any(gr.email == email and gr.client_id == params["client_id"]
                               and gr.refresh_token and not gr.revoked for gr in self._grants.values())
        code = "4/0A" + secrets.token_urlsafe(48)
        self._codes[code] = {
            "client_id": params["client_id"], "redirect_uri": params["redirect_uri"], "email": email,
            "requested": list(params["scopes"]), "granted": granted,
            "challenge": params["challenge"], "method": params["method"],
            # Google mints a refresh token on re-consent or on the first offline grant only.
            "issue_refresh": params["offline"] and ("consent" in params["prompt"] or not has_live_offline),
            "expires_at": self._now() + _CODE_TTL, "used": False,
        }
        authuser = list(self._accounts).index(email) if email in self._accounts else 0
        return self._redirect_back(params, {"code": code, "scope": " ".join(granted),
                                            "authuser": str(authuser),
                                            "prompt": "consent" if "consent" in params["prompt"] else "none"})

    @staticmethod
    def _redirect_back(params: dict, extra: dict):
        query: list[tuple[str, str]] = []
        if params.get("state") is not None:
            query.append(("state", params["state"]))
        query += list(extra.items())
        parts = urlsplit(params["redirect_uri"])
        existing = parse_qsl(parts.query, keep_blank_values=True)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(existing + query), ""))
        return redirect(url, code=302)

    def _consent_page(self, txn: str, params: dict, accounts: list[_Account], selected: str,
                      checked: set[str]) -> Response:
        esc = html.escape
        rows = []
        for i, acct in enumerate(accounts):
            sel = " checked" if acct.email == selected else ""
            rows.append(f'<div><input type="radio" id="account-{i}" name="account" value="{esc(acct.email)}"'
                        f'{sel}> <label for="account-{i}">{esc(acct.name)} ({esc(acct.email)})</label></div>')
        scope_rows = []
        for i, s in enumerate(params["scopes"]):
            desc = self._disc.scope_descriptions.get(s) or {
                "openid": "Associate you with your personal info on Google",
                "https://www.googleapis.com/auth/userinfo.email": "See your primary Google Account email address",
                "https://www.googleapis.com/auth/userinfo.profile": "See your personal info",
            }.get(s, s)
            c = " checked" if s in checked else ""
            scope_rows.append(f'<div><input type="checkbox" id="scope-{i}" name="scope" value="{esc(s)}"{c}>'
                              f' <label for="scope-{i}">{esc(desc)} <code>{esc(s)}</code></label></div>')
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Google Accounts (sandbox)</title></head>
<body>
<main>
<h1>Sign in with Google</h1>
<p>The application <strong>{esc(params["client_id"])}</strong> wants to access your Google Account.</p>
<form method="post" action="/o/oauth2/consent">
<input type="hidden" name="txn" value="{esc(txn)}">
<fieldset><legend>Choose an account</legend>
{''.join(rows)}
</fieldset>
<fieldset><legend>Select what the application can access</legend>
{''.join(scope_rows)}
</fieldset>
<button type="submit" name="action" value="cancel">Cancel</button>
<button type="submit" name="action" value="allow">Allow</button>
</form>
</main>
</body></html>"""
        return Response(page, mimetype="text/html")

    def _h_consent(self):
        f = request.form
        with self._lock:
            params = self._consents.pop(f.get("txn", ""), None)
            if params is None:
                return self._error_page(_AuthPageError(400, "invalid_request",
                                                       "This consent request is unknown or was already used."))
            if f.get("action") != "allow":
                return self._redirect_back(params, {"error": "access_denied"})
            email = f.get("account")
            if email not in self._accounts:
                self._consents[f["txn"]] = params  # let the user pick again
                return self._error_page(_AuthPageError(400, "invalid_request", "Choose an account."))
            granted = self._limit(params["scopes"], f.getlist("scope"))
            return self._approve(params, email, granted)

    @staticmethod
    def _error_page(e: _AuthPageError) -> Response:
        esc = html.escape
        page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error {e.status}: "
                f"{esc(e.error)}</title></head><body><main><h1>Access blocked: authorization error</h1>"
                f"<p>Error {e.status}: <strong>{esc(e.error)}</strong></p><p>{esc(e.description)}</p>"
                f"</main></body></html>")
        return Response(page, status=e.status, mimetype="text/html")

    # ------------------------------------------------------------------ OAuth: token & revoke

    def _client_auth(self, form) -> str:
        """Authenticate the client by HTTP Basic or form fields; returns the method used."""
        cid = secret = None
        method = None
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
                cid, _, secret = raw.partition(":")
                cid, secret = unquote(cid), unquote(secret)  # RFC 6749 2.3.1 form-encodes them
                method = "basic"
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "Unauthorized")
        if form.get("client_id"):
            if cid is not None and form["client_id"] != cid:
                raise OAuthError(400, "invalid_request", "Client id in header and body differ.")
            cid = form["client_id"]
            if "client_secret" in form:
                secret = form["client_secret"]
            method = method or "form"
        if not cid:
            raise OAuthError(400, "invalid_request", "Could not determine client ID from request.")
        if cid != self.client_id:
            raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
        if secret != self.client_secret:
            raise OAuthError(401, "invalid_client", "Unauthorized")
        return method or "form"

    def _h_token(self):
        try:
            with self._lock:
                if self._down:
                    raise OAuthError(503, "temporarily_unavailable", "Backend Error")
                form = request.form
                method = self._client_auth(form)
                if g.log is not None:
                    g.log["client_auth"] = method
                grant_type = form.get("grant_type", "")
                if grant_type == "authorization_code":
                    body = self._token_from_code(form)
                elif grant_type == "refresh_token":
                    body = self._token_from_refresh(form)
                else:
                    raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        except OAuthError as e:
            return e.response()
        resp = Response(json.dumps(body), mimetype="application/json")
        resp.headers["Cache-Control"] = "no-cache, no-store, max-age=0, must-revalidate"
        return resp

    def _token_from_code(self, form) -> dict:
        code = form.get("code")
        if not code:
            raise OAuthError(400, "invalid_request", "Missing required parameter: code")
        rec = self._codes.get(code)
        if rec is None:
            raise OAuthError(400, "invalid_grant", "Malformed auth code.")
        if rec["used"] or rec["expires_at"] < self._now() or rec["client_id"] != self.client_id:
            raise OAuthError(400, "invalid_grant", "Bad Request")
        if not form.get("redirect_uri"):
            raise OAuthError(400, "invalid_request", "Missing parameter: redirect_uri")
        if form["redirect_uri"] != rec["redirect_uri"]:
            raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier")
        if rec["challenge"]:
            if not verifier:
                raise OAuthError(400, "invalid_grant", "Missing code verifier.")
            if rec["method"] == "S256":
                expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            else:
                expected = verifier
            if expected != rec["challenge"]:
                raise OAuthError(400, "invalid_grant", "Invalid code verifier.")
        elif verifier:
            raise OAuthError(400, "invalid_request", "code_verifier or verifier is not needed.")
        rec["used"] = True
        grant = _Grant(secrets.token_hex(8), rec["email"], rec["client_id"], rec["requested"],
                       rec["granted"], None, self._now())
        if rec["issue_refresh"]:
            grant.refresh_token = "1//0" + secrets.token_urlsafe(64)
            self._refresh[grant.refresh_token] = grant.id
        self._grants[grant.id] = grant
        self._enforce_token_limit(grant.email, grant.client_id)
        body = self._mint_access(grant, grant.granted)
        if grant.refresh_token:
            body["refresh_token"] = grant.refresh_token
        return body

    def _enforce_token_limit(self, email: str, client_id: str) -> None:
        live = sorted((gr for gr in self._grants.values() if gr.email == email and gr.client_id == client_id
                       and gr.refresh_token and not gr.revoked), key=lambda gr: gr.created)
        for gr in live[:-_MAX_REFRESH_TOKENS] if len(live) > _MAX_REFRESH_TOKENS else []:
            gr.revoked = True

    def _token_from_refresh(self, form) -> dict:
        rt = form.get("refresh_token")
        if not rt:
            raise OAuthError(400, "invalid_request", "Missing required parameter: refresh_token")
        grant = self._grants.get(self._refresh.get(rt, ""))
        if grant is None:
            raise OAuthError(400, "invalid_grant", "Bad Request")
        if grant.client_id != self.client_id:
            raise OAuthError(401, "unauthorized_client", "Unauthorized")
        if grant.revoked:
            raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        scopes = grant.granted
        if form.get("scope"):
            asked = [_SIGNIN_SCOPES.get(s, s) for s in form["scope"].split()]
            # Scopes never part of the authorization → invalid_scope; requested but not
            # granted (granular consent) → silently dropped, as Google does.
            if any(s not in grant.requested and s not in grant.granted for s in asked):
                raise OAuthError(400, "invalid_scope", "Bad Request")
            scopes = [s for s in asked if s in grant.granted]
        return self._mint_access(grant, scopes)

    def _mint_access(self, grant: _Grant, scopes: list[str]) -> dict:
        token = "ya29.a0" + secrets.token_urlsafe(48)
        self._access[token] = _AccessToken(token, grant.id, grant.email, list(scopes),
                                           self._now() + self.token_ttl)
        return {"access_token": token, "expires_in": self.token_ttl, "scope": " ".join(scopes),
                "token_type": "Bearer"}

    def _h_revoke(self):
        token = request.args.get("token") or request.form.get("token")
        with self._lock:
            grant_id = self._refresh.get(token or "")
            if grant_id is None and token in self._access:
                grant_id = self._access[token].grant_id
            grant = self._grants.get(grant_id or "")
            if grant is None or grant.revoked:
                return OAuthError(400, "invalid_token", "Token expired or revoked").response()
            grant.revoked = True
        return Response("{}", mimetype="application/json")

    # ------------------------------------------------------------------ API plumbing

    def _email_for_header(self) -> str | None:
        token = self._bearer()
        with self._lock:
            tok = self._access.get(token or "")
            return tok.email if tok else None

    @staticmethod
    def _bearer() -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.args.get("oauth_token")

    def _api(self, resource: str, name: str, handler: Callable):
        """Wrap a Calendar handler: faults, auth, scopes, query checks, error rendering,
        ``fields=``; all under the state lock."""
        method_id = f"calendar.{resource}.{name}"
        method = self._disc.method(resource, name)

        def view(**kwargs):
            try:
                with self._lock:
                    if self._down:
                        raise _fault(503, "backendError")
                    if self._fail:
                        raise _fault(*self._fail.pop(0))
                    ctx = self._authenticate(method)
                    self._disc.check_query(method_id, method, request.args)
                    result = handler(ctx, **kwargs)
                    if isinstance(result, Response):
                        return result
                    if request.args.get("fields"):
                        try:
                            result = _apply_fields(result, _parse_fields(request.args["fields"]))
                        except ValueError:
                            raise _bad(f"Invalid field selection {request.args['fields']}",
                                       "invalidParameter", location="fields", location_type="parameter")
                    return Response(json.dumps(result, indent=1), mimetype="application/json")
            except ApiError as e:
                return e.response()
            finally:
                self._maybe_kill()

        view.__name__ = f"api_{resource}_{name}"
        return view

    def _authenticate(self, method: dict | None) -> _AccessToken:
        token = self._bearer()
        www = 'Bearer realm="https://accounts.google.com/"'
        if not token:
            raise ApiError(401, "required", "Login Required.", location="Authorization",
                           location_type="header",
                           top_message="Request is missing required authentication credential. Expected "
                                       "OAuth 2 access token, login cookie or other valid authentication "
                                       "credential. See https://developers.google.com/identity/sign-in/web/"
                                       "devconsole-project.", headers={"WWW-Authenticate": www})
        tok = self._access.get(token)
        grant = self._grants.get(tok.grant_id) if tok else None
        if tok is None or tok.expired or tok.expires_at <= self._now() or grant is None or grant.revoked:
            raise ApiError(401, "authError", "Invalid Credentials", location="Authorization",
                           location_type="header",
                           top_message="Request had invalid authentication credentials. Expected OAuth 2 "
                                       "access token, login cookie or other valid authentication credential. "
                                       "See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                           headers={"WWW-Authenticate": www + ', error="invalid_token"'})
        needed = method.get("scopes", []) if method else [SCOPE_CALENDAR, SCOPE_EVENTS, SCOPE_READONLY]
        if not set(needed) & set(tok.scopes):
            raise ApiError(403, "insufficientPermissions", "Insufficient Permission",
                           top_message="Request had insufficient authentication scopes.",
                           headers={"WWW-Authenticate": www + ', error="insufficient_scope"'})
        return tok

    def _maybe_kill(self) -> None:
        pid = getattr(g, "kill_pid", None)
        if pid:
            g.kill_pid = None
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _calendar(self, ctx: _AccessToken, cal_id: str, *, write: bool = False) -> _Calendar:
        if cal_id == "primary":
            cal_id = ctx.email
        cal = self._calendars.get(cal_id)
        role = self._role(cal, ctx.email) if cal is not None else None
        if role is None:
            raise _not_found()
        if write and _ROLE_RANK[role] < _ROLE_RANK["writer"]:
            raise ApiError(403, "requiredAccessLevel", "You need to have writer access to this calendar.")
        return cal

    def _json_body(self, schema: str = "Event") -> dict:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            raise _bad("Parse Error", "parseError")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise _bad("Invalid JSON payload received. Expected an object.", "parseError")
        self._disc.check_body(body, schema)
        return body

    @staticmethod
    def _conf_version() -> int:
        v = int(request.args.get("conferenceDataVersion", "0"))
        if v not in (0, 1):
            raise _bad("Invalid conference data version value.", "invalidParameter",
                       location="conferenceDataVersion", location_type="parameter")
        return v

    def _tz_param(self) -> str | None:
        tz = request.args.get("timeZone")
        if tz is not None and _zone(tz) is None:
            raise _bad("Invalid time zone definition.", "invalidParameter", location="timeZone",
                       location_type="parameter")
        return tz

    @staticmethod
    def _check_if_match(ev: _Event) -> None:
        want = request.headers.get("If-Match")
        if want is not None and want.strip() != "*" and want.strip() != ev.data["etag"]:
            raise ApiError(412, "conditionNotMet", "Precondition Failed", location="If-Match",
                           location_type="header")

    # ------------------------------------------------------------------ calendarList / calendars

    def _calendar_entry(self, cal: _Calendar, email: str) -> dict:
        role = self._role(cal, email)
        primary = cal.primary and cal.owner == email
        entry = {
            "kind": "calendar#calendarListEntry",
            "etag": f'"{int(cal.updated_ts * 1000)}000"',
            "id": cal.id, "summary": cal.summary, "timeZone": cal.time_zone,
            "colorId": cal.color[0], "backgroundColor": cal.color[1], "foregroundColor": "#000000",
            "selected": True, "accessRole": role,
            "defaultReminders": [{"method": "popup", "minutes": 10}] if primary else [],
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
        if primary:
            entry["primary"] = True
            entry["notificationSettings"] = {"notifications": [
                {"type": "eventCreation", "method": "email"}, {"type": "eventChange", "method": "email"},
                {"type": "eventCancellation", "method": "email"}, {"type": "eventResponse", "method": "email"}]}
        return entry

    def _h_calendar_list(self, ctx: _AccessToken):
        a = request.args
        min_role = a.get("minAccessRole")
        cals = [self._calendars[i] for i in self._accounts[ctx.email].calendar_ids]
        if min_role:
            cals = [c for c in cals if _ROLE_RANK[self._role(c, ctx.email)] >= _ROLE_RANK[min_role]]
        size = min(int(a.get("maxResults", "100")), 250)
        start = 0
        if a.get("pageToken"):
            try:
                start = int(json.loads(base64.urlsafe_b64decode(a["pageToken"] + "==")).get("o"))
            except (ValueError, TypeError, AttributeError):
                raise _bad("Invalid page token value.", "invalid", location="pageToken",
                           location_type="parameter")
        if a.get("syncToken") and a["syncToken"] not in self._sync_tokens:
            raise ApiError(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")
        page = cals[start:start + size]
        out = {"kind": "calendar#calendarList", "etag": f'"p{self._seq}"',
               "items": [self._calendar_entry(c, ctx.email) for c in page]}
        if start + size < len(cals):
            out["nextPageToken"] = base64.urlsafe_b64encode(json.dumps({"o": start + size}).encode()).decode().rstrip("=")
        else:
            token = "CL" + secrets.token_urlsafe(18)
            self._sync_tokens[token] = ("__calendarList__:" + ctx.email, self._seq)
            out["nextSyncToken"] = token
        return out

    def _h_calendar_list_get(self, ctx: _AccessToken, cal_id: str):
        return self._calendar_entry(self._calendar(ctx, cal_id), ctx.email)

    def _h_calendar_get(self, ctx: _AccessToken, cal_id: str):
        cal = self._calendar(ctx, cal_id)
        return {"kind": "calendar#calendar", "etag": f'"{int(cal.updated_ts * 1000)}000"', "id": cal.id,
                "summary": cal.summary, "timeZone": cal.time_zone,
                "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}}

    # ------------------------------------------------------------------ events: handlers

    def _h_events_insert(self, ctx: _AccessToken, cal_id: str):
        cal = self._calendar(ctx, cal_id, write=True)
        body = self._json_body()
        ev = self._insert(cal, body, self._conf_version())
        if self._kill_pid:
            # The event is stored; the client dies before it sees the reply.
            g.kill_pid, self._kill_pid = self._kill_pid, None
        return self._render(cal, ev, self._tz_param())

    def _h_events_get(self, ctx: _AccessToken, cal_id: str, event_id: str):
        cal = self._calendar(ctx, cal_id)
        ev = self._lookup(cal, event_id, materialize=False)
        if ev is None:
            raise _not_found()
        if self._role(cal, ctx.email) == "freeBusyReader":
            if ev.data.get("status") != "cancelled" and not self._is_busy(cal, ev):
                raise _not_found()  # free time is not visible to a free/busy reader
            return self._busy_only(self._render(cal, ev, self._tz_param()))
        if not ev.virtual:
            self._count_read(cal, ev)
        inm = request.headers.get("If-None-Match")
        if inm is not None and inm.strip() == ev.data["etag"]:
            return Response(status=304)
        return self._render(cal, ev, self._tz_param())

    def _h_events_patch(self, ctx: _AccessToken, cal_id: str, event_id: str):
        return self._h_write(ctx, cal_id, event_id, "patch")

    def _h_events_update(self, ctx: _AccessToken, cal_id: str, event_id: str):
        return self._h_write(ctx, cal_id, event_id, "update")

    def _h_write(self, ctx, cal_id, event_id, mode):
        cal = self._calendar(ctx, cal_id, write=True)
        ev = self._lookup(cal, event_id, materialize=True)
        if ev is None:
            raise _not_found()
        self._check_if_match(ev)
        body = self._json_body()
        rendered = self._render(cal, self._modify(cal, ev, body, self._conf_version(), mode), self._tz_param())
        if self._kill_patch_pid:
            # The change is stored; the client dies before it sees the reply.
            g.kill_pid, self._kill_patch_pid = self._kill_patch_pid, None
        return rendered

    def _h_events_delete(self, ctx: _AccessToken, cal_id: str, event_id: str):
        cal = self._calendar(ctx, cal_id, write=True)
        ev = self._lookup(cal, event_id, materialize=True)
        if ev is None:
            raise _not_found()
        if ev.data.get("status") == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        self._check_if_match(ev)
        self._delete(cal, ev)
        return Response(status=204)

    def _h_events_list(self, ctx: _AccessToken, cal_id: str):
        cal = self._calendar(ctx, cal_id)
        role = self._role(cal, ctx.email)
        busy_only = role == "freeBusyReader"
        a = request.args
        tz = self._tz_param()
        sync_token = a.get("syncToken")
        since: int | None = None
        if sync_token is not None:
            clash = [p for p in _SYNC_EXCLUSIVE if p in a]
            if clash:
                raise _bad(f"The parameter {clash[0]} cannot be used together with syncToken.",
                           "invalidParameter", location=clash[0], location_type="parameter")
            if a.get("showDeleted") == "false":
                raise _bad("showDeleted cannot be set to false together with syncToken.",
                           "invalidParameter", location="showDeleted", location_type="parameter")
            rec = self._sync_tokens.get(sync_token)
            if rec is None or rec[0] != cal.id:
                raise ApiError(410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required.")
            since = rec[1]
        order = a.get("orderBy")
        if order == "startTime" and a.get("singleEvents") != "true":
            raise _bad("The requested ordering is not available for the particular query.", "badRequest")
        tmin = self._time_param("timeMin")
        tmax = self._time_param("timeMax")
        if tmin is not None and tmax is not None and tmin >= tmax:
            raise _bad("The specified time range is empty.", "timeRangeEmpty", location="timeMax",
                       location_type="parameter")
        updated_min = self._time_param("updatedMin")
        show_deleted = a.get("showDeleted") == "true" or since is not None or updated_min is not None
        priv = [self._prop_constraint(v, "privateExtendedProperty") for v in a.getlist("privateExtendedProperty")]
        shared = [self._prop_constraint(v, "sharedExtendedProperty") for v in a.getlist("sharedExtendedProperty")]
        q = (a.get("q") or "").lower()
        event_types = a.getlist("eventTypes")
        ical = a.get("iCalUID")
        size = min(int(a.get("maxResults", "250")), 2500)

        # The page token pins the query and the change counter at its first page.
        fingerprint = hashlib.sha1(json.dumps(sorted(
            (k, a.getlist(k)) for k in a.keys() if k not in ("pageToken", "maxResults", "fields"))
        ).encode()).hexdigest()[:16]
        snapshot, after = self._seq, None
        if a.get("pageToken"):
            try:
                pt = json.loads(base64.urlsafe_b64decode(a["pageToken"] + "=="))
                snapshot, after, pt_cal, pt_fp = int(pt["s"]), pt["k"], pt["c"], pt["f"]
            except (ValueError, KeyError, TypeError):
                raise _bad("Invalid page token value.", "invalid", location="pageToken",
                           location_type="parameter")
            if pt_cal != cal.id or pt_fp != fingerprint:
                raise _bad("The page token belongs to a different query: repeat the same query "
                           "parameters with pageToken.", "invalid", location="pageToken",
                           location_type="parameter")

        def matches(ev: _Event) -> bool:
            d = ev.data
            cancelled = d.get("status") == "cancelled"
            if busy_only and not cancelled and not self._is_busy(cal, ev):
                return False
            if since is not None:
                return ev.seq > since
            if cancelled and not show_deleted:
                return False
            if updated_min is not None and ev.updated_ts < updated_min:
                return False
            if tmin is not None and ev.end_ts <= tmin:
                return False
            if tmax is not None and ev.start_ts >= tmax:
                return False
            if ical and d.get("iCalUID") != ical:
                return False
            if event_types and d.get("eventType", "default") not in event_types:
                return False
            if priv and not any(d.get("extendedProperties", {}).get("private", {}).get(k) == v for k, v in priv):
                return False
            if shared and not any(d.get("extendedProperties", {}).get("shared", {}).get(k) == v
                                  for k, v in shared):
                return False
            if q and not any(q in str(d.get(f, "")).lower() for f in ("summary", "description", "location")):
                return False
            return True

        def key(ev: _Event) -> list:
            if order == "startTime":
                return [ev.start_ts, ev.data["id"]]
            if order == "updated":
                return [ev.updated_ts, ev.data["id"]]
            return [ev.seq, ev.data["id"]]

        pool = list(cal.events.values())
        window = self._token_windows.get(sync_token) if since is not None else (tmin, tmax)
        if a.get("singleEvents") == "true":
            pool = self._single_events(cal, pool, tmin, tmax, since, window)
        candidates = sorted((ev for ev in pool if matches(ev)), key=key)
        if after is not None:
            candidates = [ev for ev in candidates if key(ev) > after]
        page, more = candidates[:size], len(candidates) > size
        # The resume key is taken before reads can complete conferences (which re-stamps them).
        last = key(page[-1]) if page else after
        if not busy_only:
            for ev in page:
                if not ev.virtual:
                    self._count_read(cal, ev)
        items = [self._render(cal, ev, tz, tombstone=ev.data.get("status") == "cancelled") for ev in page]
        if busy_only:
            items = [self._busy_only(it) for it in items]
        out: dict[str, Any] = {
            "kind": "calendar#events", "etag": f'"p{self._seq}"', "summary": cal.summary, "description": "",
            "updated": _rfc3339_ms(max([cal.updated_ts] + [e.updated_ts for e in cal.events.values()])),
            "timeZone": cal.time_zone, "accessRole": role,
            "defaultReminders": [{"method": "popup", "minutes": 10}] if cal.primary else [],
        }
        if more:
            out["nextPageToken"] = base64.urlsafe_b64encode(json.dumps(
                {"s": snapshot, "k": last, "c": cal.id, "f": fingerprint}).encode()).decode().rstrip("=")
        else:
            token = "CP" + secrets.token_urlsafe(24)
            self._sync_tokens[token] = (cal.id, snapshot)
            self._token_windows[token] = window  # incremental lists expand changed series in it
            out["nextSyncToken"] = token
        out["items"] = items
        return out

    def _time_param(self, name: str) -> float | None:
        raw = request.args.get(name)
        if raw is None:
            return None
        dt = _parse_rfc3339(raw)
        if dt is None or dt.tzinfo is None:
            raise _bad("Bad Request", "badRequest", location=name, location_type="parameter")
        return dt.timestamp()

    @staticmethod
    def _prop_constraint(value: str, name: str) -> tuple[str, str]:
        k, sep, v = value.partition("=")
        if not sep or not k:
            raise _bad(f"Invalid {name} value: '{value}'. Expected propertyName=value.", "invalidParameter",
                       location=name, location_type="parameter")
        return k, v

    # ------------------------------------------------------------------ busy / free

    @staticmethod
    def _is_busy(cal: _Calendar, ev: _Event) -> bool:
        """Does this event block time (freeBusy, and what a freeBusyReader sees)?

        Busy = not cancelled, ``transparency`` not "transparent" (absent = opaque), not a
        ``workingLocation`` event (those never block time), and not declined by the
        calendar's own attendee entry (``self``, or the calendar/owner address)."""
        d = ev.data
        if d.get("status") == "cancelled" or d.get("transparency") == "transparent":
            return False
        if d.get("eventType") == "workingLocation":
            return False
        me = {cal.id.lower(), cal.owner.lower()}
        for att in d.get("attendees") or []:
            if (att.get("self") or str(att.get("email", "")).lower() in me) \
                    and att.get("responseStatus") == "declined":
                return False
        return True

    @staticmethod
    def _busy_only(item: dict) -> dict:
        """What a freeBusyReader gets of an event: times only, no details."""
        return {k: item[k] for k in ("kind", "etag", "id", "status", "start", "end", "updated")
                if k in item}

    def _body_time(self, body: dict, name: str) -> float:
        raw = body.get(name)
        if raw is None:
            raise _bad(f"Missing {name} parameter.", "required", location=name)
        dt = _parse_rfc3339(raw)
        if dt is None or dt.tzinfo is None:
            raise _bad(f"Invalid value for {name}: {raw}", "invalid", location=name)
        return dt.timestamp()

    # ------------------------------------------------------------------ freebusy.query

    def _h_freebusy(self, ctx: _AccessToken):
        body = self._json_body("FreeBusyRequest")
        tmin = self._body_time(body, "timeMin")
        tmax = self._body_time(body, "timeMax")
        if tmax <= tmin:
            raise _bad("The specified time range is empty.", "timeRangeEmpty", location="timeMax")
        if tmax - tmin > self.freebusy_max_days * 86400:
            raise _bad("The requested time range is too long.", "timeRangeTooLong", location="timeMax")
        tz = body.get("timeZone") or "UTC"
        if _zone(tz) is None:
            raise _bad("Invalid time zone definition.", "invalid", location="timeZone")
        cal_max = body.get("calendarExpansionMax")
        if cal_max is not None and not 1 <= int(cal_max) <= _FREEBUSY_MAX_CALENDARS:
            raise _bad(f"Invalid value for calendarExpansionMax: {cal_max}. It must be between 1 and "
                       f"{_FREEBUSY_MAX_CALENDARS}.", "invalid", location="calendarExpansionMax")
        group_max = body.get("groupExpansionMax")
        if group_max is not None and not 1 <= int(group_max) <= _FREEBUSY_MAX_GROUP:
            raise _bad(f"Invalid value for groupExpansionMax: {group_max}. It must be between 1 and "
                       f"{_FREEBUSY_MAX_GROUP}.", "invalid", location="groupExpansionMax")
        items = body.get("items") or []
        if len(items) > _FREEBUSY_MAX_CALENDARS:
            raise _bad("Too many calendars requested.", "tooManyCalendarsRequested", location="items")
        limit = int(cal_max) if cal_max is not None else _FREEBUSY_MAX_CALENDARS
        out: dict[str, dict] = {}
        for item in items:
            cid = (item or {}).get("id")
            if not cid:
                raise _bad("Missing calendar id.", "required", location="items.id")
            if cid in out:
                continue
            if len(out) >= limit:
                out[cid] = {"errors": [{"domain": "global", "reason": "tooManyCalendarsRequested"}],
                            "busy": []}
                continue
            real = ctx.email if cid == "primary" else cid
            cal = self._calendars.get(real)
            if cal is None or self._role(cal, ctx.email) is None:
                out[cid] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
                continue
            pool = self._single_events(cal, list(cal.events.values()), tmin, tmax, None, None)
            spans = sorted((max(ev.start_ts, tmin), min(ev.end_ts, tmax)) for ev in pool
                           if ev.end_ts > tmin and ev.start_ts < tmax and self._is_busy(cal, ev))
            merged: list[list[float]] = []
            for start, end in spans:
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            out[cid] = {"busy": [{"start": _render_instant(a, tz), "end": _render_instant(b, tz)}
                                 for a, b in merged]}
        return {"kind": "calendar#freeBusy", "timeMin": _rfc3339_ms(tmin), "timeMax": _rfc3339_ms(tmax),
                "calendars": out}

    # ------------------------------------------------------------------ events.watch / channels.stop

    def _h_events_watch(self, ctx: _AccessToken, cal_id: str):
        cal = self._calendar(ctx, cal_id)
        body = self._json_body("Channel")
        cid = body.get("id")
        if not cid:
            raise _bad("Required parameter: id", "required", location="id")
        if len(cid) > _CHANNEL_ID_MAX or not _CHANNEL_ID_RE.fullmatch(cid):
            raise _bad(f"Channel id must be at most {_CHANNEL_ID_MAX} characters and match the "
                       f"regular expression {_CHANNEL_ID_RE.pattern}", "push.channelIdInvalid",
                       location="id")
        kind = body.get("type")
        if not kind:
            raise _bad("Required parameter: type", "required", location="type")
        if kind not in ("web_hook", "webhook"):
            raise _bad(f"Unknown channel type: {kind}", "push.channelTypeNotSupported", location="type")
        address = body.get("address")
        if not address:
            raise _bad("Required parameter: address", "required", location="address")
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _bad(f"WebHook callback must have a host or address: {address}",
                       "push.webhookUrlNoHostOrAddress", location="address")
        if parts.scheme != "https" and not (self.allow_http_webhooks and _is_loopback(parts.hostname)):
            raise _bad(f"WebHook callback must be HTTPS: {address}", "push.webhookUrlNotHttps",
                       location="address")
        token = body.get("token")
        if token is not None and len(token) > _CHANNEL_TOKEN_MAX:
            raise _bad(f"Channel token must be at most {_CHANNEL_TOKEN_MAX} characters.", "invalid",
                       location="token")
        if cid in self._channels:
            raise _bad(f"Channel id {cid} not unique", "channelIdNotUnique", location="id")
        now_ms = int(self._now() * 1000)
        expiration = now_ms + self.channel_ttl * 1000
        if body.get("expiration") not in (None, ""):
            if not re.fullmatch(r"-?\d+", str(body["expiration"])):
                raise _bad(f"Invalid value at 'resource.expiration' (TYPE_INT64), {body['expiration']!r}",
                           "invalid", location="expiration")
            wanted = int(body["expiration"])
            if wanted <= now_ms:  # e.g. seconds sent where milliseconds are expected
                raise _bad(f"Invalid ttl value for channel {(wanted - now_ms) // 1000}", "invalid",
                           location="expiration")
            expiration = min(expiration, wanted)
        ttl = (body.get("params") or {}).get("ttl")
        if ttl is not None:
            if not re.fullmatch(r"\d+", str(ttl)) or int(ttl) <= 0:
                raise _bad(f"Invalid ttl value for channel {ttl}", "invalid", location="params.ttl")
            expiration = min(expiration, now_ms + int(ttl) * 1000)
        query = urlencode([(k, v) for k in request.args.keys() for v in request.args.getlist(k)])
        uri = (f"{request.host_url.rstrip('/')}/calendar/v3/calendars/{quote(cal_id, safe='@')}/events"
               + (f"?{query}" if query else ""))
        grant = self._grants.get(ctx.grant_id)
        ch = _Channel(id=cid, resource_id=self._resource_id(cal.id), resource_uri=uri, calendar_id=cal.id,
                      address=address, token=token, expiration_ms=expiration, email=ctx.email,
                      client_id=grant.client_id if grant else self.client_id, created=self._now())
        self._channels[cid] = ch
        self._queue_push(ch, "sync")
        out = {"kind": "api#channel", "id": cid, "resourceId": ch.resource_id, "resourceUri": uri}
        if token is not None:
            out["token"] = token
        out["expiration"] = str(expiration)
        return out

    @staticmethod
    def _resource_id(calendar_id: str) -> str:
        """Opaque, stable id of a calendar's events collection (the same for every channel)."""
        digest = hashlib.sha256(f"events/{calendar_id}".encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:27]

    def _h_channels_stop(self, ctx: _AccessToken):
        body = self._json_body("Channel")
        cid, rid = body.get("id"), body.get("resourceId")
        if not cid:
            raise _bad("Required parameter: id", "required", location="id")
        if not rid:
            raise _bad("Required parameter: resourceId", "required", location="resourceId")
        ch = self._channels.get(cid)
        grant = self._grants.get(ctx.grant_id)
        client = grant.client_id if grant else self.client_id
        if (ch is None or ch.resource_id != rid or self._channel_state(ch) != "live"
                or ch.email != ctx.email or ch.client_id != client):
            raise ApiError(404, "notFound", f"Channel '{cid}' not found for project '{self._project_number()}'")
        ch.stopped = True
        return Response(status=204)

    def _project_number(self) -> str:
        return str(int(hashlib.sha256(self.client_id.encode()).hexdigest()[:10], 16) % 10**12)

    # ------------------------------------------------------------------ push delivery

    def _channel_state(self, ch: _Channel) -> str:
        if ch.stopped:
            return "stopped"
        if ch.expired or ch.expiration_ms <= self._now() * 1000:
            return "expired"
        return "live"

    def _notify_change(self, cal: _Calendar) -> None:
        """An event of ``cal`` changed: an ``exists`` message on each live channel (lock held)."""
        for ch in self._channels.values():
            if ch.calendar_id == cal.id and self._channel_state(ch) == "live":
                self._queue_push(ch, "exists")

    def _queue_push(self, ch: _Channel, state: str) -> None:
        """Number a message and queue it for the sender thread (lock held)."""
        if state == "sync":
            ch.last_number = 1
        else:  # increasing, deliberately not consecutive (as on Google)
            ch.last_number += 1 + secrets.randbelow(3)
        number = ch.last_number
        if self._drop_next > 0:
            self._drop_next -= 1
            self._notifications.append(self._push_record(ch, number, state, attempt=0, status=None,
                                                         dropped=True))
            return
        job = {"channel": ch, "number": number, "state": state, "attempt": 0}
        with self._push_cv:
            self._push_pending += 1
            heapq.heappush(self._push_heap, (time.monotonic(), next(self._push_counter), job))
            self._ensure_push_worker()
            self._push_cv.notify_all()

    def _push_record(self, ch: _Channel, number: int, state: str, *, attempt: int, status: int | None,
                     dropped: bool = False, retry: bool = False, error: str | None = None) -> dict:
        return {"time": _rfc3339_ms(self._now()), "channel_id": ch.id, "resource_id": ch.resource_id,
                "message_number": number, "state": state, "address": ch.address, "attempt": attempt,
                "status": status, "ok": status in _PUSH_OK, "retry": retry, "dropped": dropped,
                "error": error}

    def _ensure_push_worker(self) -> None:
        """Start the sender thread if needed (``_push_cv`` held)."""
        if self._push_thread is None or not self._push_thread.is_alive():
            self._push_thread = threading.Thread(target=self._push_loop, name="google-sandbox-push",
                                                 daemon=True)
            self._push_thread.start()

    def _push_loop(self) -> None:
        while True:
            with self._push_cv:
                while True:
                    if self._push_closing:
                        return
                    if self._push_heap:
                        wait = self._push_heap[0][0] - time.monotonic()
                        if wait <= 0:
                            job = heapq.heappop(self._push_heap)[2]
                            break
                        self._push_cv.wait(wait)
                    else:
                        self._push_cv.wait(1.0)
            try:
                self._deliver(job)
            except Exception:  # noqa: BLE001 - never let the sender thread die
                pass
            finally:
                with self._push_cv:
                    self._push_pending -= 1
                    self._push_cv.notify_all()

    def _deliver(self, job: dict) -> None:
        """One attempt at POSTing a notification; schedules the retry if Google would."""
        ch: _Channel = job["channel"]
        with self._lock:
            if self._channels.get(ch.id) is not ch or self._channel_state(ch) != "live":
                return  # stopped, expired or reset meanwhile: Google sends nothing more
            headers = {
                "Content-Type": "application/json; charset=UTF-8",
                "User-Agent": _PUSH_USER_AGENT,
                "X-Goog-Channel-ID": ch.id,
                "X-Goog-Channel-Expiration": email.utils.formatdate(ch.expiration_ms / 1000, usegmt=True),
                "X-Goog-Message-Number": str(job["number"]),
                "X-Goog-Resource-ID": ch.resource_id,
                "X-Goog-Resource-State": job["state"],
                "X-Goog-Resource-URI": ch.resource_uri,
            }
            if ch.token is not None:
                headers["X-Goog-Channel-Token"] = ch.token
            address = ch.address
        status, error = self._post_notification(address, headers)
        attempt = job["attempt"] + 1
        retry = (status is None or status in _PUSH_RETRY) and job["attempt"] < len(self.push_retry_delays)
        with self._lock:
            self._notifications.append(self._push_record(ch, job["number"], job["state"], attempt=attempt,
                                                         status=status, retry=retry, error=error))
        if retry:
            delay = self.push_retry_delays[job["attempt"]]
            again = dict(job, attempt=attempt)
            with self._push_cv:
                self._push_pending += 1
                heapq.heappush(self._push_heap, (time.monotonic() + delay, next(self._push_counter), again))
                self._push_cv.notify_all()

    def _post_notification(self, address: str, headers: dict) -> tuple[int | None, str | None]:
        """POST with an empty body, no redirects followed; (status, None) or (None, error)."""
        parts = urlsplit(address)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.push_timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", path, body=b"", headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status, None
        except (OSError, http.client.HTTPException) as e:
            return None, f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    # ------------------------------------------------------------------ events: core

    def _insert(self, cal: _Calendar, body: dict, conf_version: int,
                organizer: dict | None = None) -> _Event:
        eid = body.get("id")
        if eid is not None:
            if not (5 <= len(eid) <= 1024 and set(eid) <= _BASE32HEX):
                raise _bad("Invalid resource id value.", "invalid")
            if eid in cal.events:
                raise ApiError(409, "duplicate", "The requested identifier already exists.")
        else:
            eid = _random_base32hex(26)
            while eid in cal.events:
                eid = _random_base32hex(26)
        data = {k: copy.deepcopy(v) for k, v in _drop_nulls(body).items() if k not in _READ_ONLY}
        data.setdefault("status", "confirmed")
        owner = self._accounts[cal.owner]
        data["organizer"] = ({"email": cal.id, "self": True} if cal.primary
                             else {"email": cal.id, "displayName": cal.summary, "self": True})
        if organizer:  # an invitation from someone else (user_insert only)
            org = {k: v for k, v in organizer.items() if k in ("email", "displayName") and v}
            if org.get("email") and org["email"].lower() not in (cal.id.lower(), cal.owner.lower()):
                data["organizer"] = org
        start_ts, end_ts = self._check_event(cal, data)
        now = self._now()
        data.update({
            "id": eid, "iCalUID": f"{eid}@google.com", "sequence": 0,
            "created": _rfc3339_ms(now),
            "htmlLink": "https://www.google.com/calendar/event?eid="
                        + base64.urlsafe_b64encode(f"{eid} {cal.id}".encode()).decode().rstrip("="),
            "creator": {"email": owner.email, "self": True} if cal.primary else {"email": owner.email},
        })
        data.setdefault("reminders", {"useDefault": True})
        data.setdefault("eventType", "default")
        ev = _Event(data=data, seq=0, start_ts=start_ts, end_ts=end_ts, updated_ts=now)
        if conf_version == 1 and "conferenceData" in body:
            self._apply_conference(ev, body["conferenceData"])
        cal.events[eid] = ev
        self._touch(cal, ev)
        return ev

    def _modify(self, cal: _Calendar, ev: _Event, body: dict, conf_version: int, mode: str) -> _Event:
        old = ev.data
        writable = {k: v for k, v in body.items() if k not in _READ_ONLY}
        if mode == "patch":
            data = copy.deepcopy(old)
            _merge_patch(data, writable)
        else:
            data = {k: copy.deepcopy(v) for k, v in old.items() if k in _READ_ONLY}
            data.update(_drop_nulls(writable))
            data.setdefault("reminders", {"useDefault": True})
            data.setdefault("eventType", old.get("eventType", "default"))
        data.setdefault("status", "confirmed")
        if "originalStartTime" in old:  # an instance stays the instance it was, even after an update
            data["originalStartTime"] = copy.deepcopy(old["originalStartTime"])
        if data.get("eventType", "default") != old.get("eventType", "default"):
            raise _bad("The event type cannot be modified.", "eventTypeRestriction")
        start_ts, end_ts = self._check_event(cal, data)
        trial = _Event(data=data, seq=ev.seq, start_ts=start_ts, end_ts=end_ts, updated_ts=ev.updated_ts,
                       pending_reads=ev.pending_reads, last_request_id=ev.last_request_id, gone=ev.gone)
        recurring = self._is_master(ev) or self._is_master(trial)
        if recurring:
            lo = min(ev.start_ts, trial.start_ts)
            before = set(self._instance_ids(cal, ev, lo)) if self._is_master(ev) else set()
        if conf_version == 1:
            if "conferenceData" in body:
                self._apply_conference(trial, body["conferenceData"])
            elif mode == "update":
                self._apply_conference(trial, None)
        # Google bumps sequence on significant changes; times compare as instants, since a
        # body copied from a get carries the rendered (re-zoned) dateTime.
        if (start_ts, end_ts) != (ev.start_ts, ev.end_ts) or any(
                data.get(k) != old.get(k) for k in ("recurrence", "location", "status")):
            data["sequence"] = old.get("sequence", 0) + 1
        ev.data, ev.start_ts, ev.end_ts = trial.data, trial.start_ts, trial.end_ts
        ev.pending_reads, ev.last_request_id = trial.pending_reads, trial.last_request_id
        self._touch(cal, ev)
        if recurring:
            self._forget_instances(cal, ev, before - set(self._instance_ids(cal, ev, lo)))
        return ev

    def _delete(self, cal: _Calendar, ev: _Event) -> None:
        ev.data["status"] = "cancelled"
        ev.data["sequence"] = ev.data.get("sequence", 0) + 1
        self._touch(cal, ev)
        if self._is_master(ev):  # a deleted series takes its moved instances with it
            for other in list(cal.events.values()):
                if other.data.get("recurringEventId") == ev.data["id"] and other.data.get("status") != "cancelled":
                    self._delete(cal, other)

    def _touch(self, cal: _Calendar, ev: _Event) -> None:
        """Record a write: new change number, ``updated`` and etag."""
        self._seq += 1
        now = max(self._now(), ev.updated_ts)
        ev.seq, ev.updated_ts = self._seq, now
        ev.data["updated"] = _rfc3339_ms(now)
        ev.data["etag"] = f'"{int(now * 1000)}{self._seq % 1000:03d}000"'
        cal.updated_ts = now
        self._notify_change(cal)

    def _check_event(self, cal: _Calendar, data: dict) -> tuple[float, float]:
        """Validate status, times, attendees, reminders; returns (start, end) epoch seconds."""
        if data.get("status") not in ("confirmed", "tentative", "cancelled"):
            raise _bad("Invalid value for: status", "invalid")
        for fld, allowed in (("transparency", ("opaque", "transparent")),
                             ("visibility", ("default", "public", "private", "confidential")),
                             ("eventType", ("default", "outOfOffice", "focusTime", "workingLocation",
                                            "birthday", "fromGmail"))):
            if fld in data and data[fld] not in allowed:
                raise _bad(f"Invalid value for: {fld}", "invalid")
        if "start" not in data:
            raise _bad("Missing start time.", "required")
        if "end" not in data:
            raise _bad("Missing end time.", "required")
        start_ts, start_kind = self._parse_edt(cal, data["start"], "start")
        end_ts, end_kind = self._parse_edt(cal, data["end"], "end")
        if start_kind != end_kind:
            raise _bad("Start and end times must either both be date or both be dateTime.", "invalid")
        if end_ts <= start_ts:
            raise _bad("The specified time range is empty.", "timeRangeEmpty")
        if data.get("recurrence") is not None:
            if data.get("recurringEventId"):
                raise _bad("An instance of a recurring event cannot have a recurrence.", "invalid")
            lines = data["recurrence"]
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise _bad("Invalid recurrence rule.", "invalid")
            try:
                self._occurrences(cal, data, start_ts, start_ts + 86400)
            except (ValueError, TypeError, KeyError):
                raise _bad("Invalid recurrence rule.", "invalid")
        attendees = data.get("attendees")
        if attendees:
            for att in attendees:
                if not att.get("email"):
                    raise _bad("Missing attendee email.", "required")
                att.setdefault("responseStatus", "needsAction")
                org = str((data.get("organizer") or {}).get("email", cal.id)).lower()
                if att["email"].lower() == org:
                    att["organizer"] = True
                if att["email"].lower() == cal.owner.lower():
                    att["self"] = True
        rem = data.get("reminders")
        if rem:
            overrides = rem.get("overrides") or []
            if rem.get("useDefault") and overrides:
                raise _bad("Cannot specify both default reminders and overrides at the same time.",
                           "cannotUseDefaultRemindersAndSpecifyOverride")
            if len(overrides) > 5:
                raise _bad("The maximum number of override reminders is 5.", "invalid")
            for o in overrides:
                if o.get("method") not in ("email", "popup"):
                    raise _bad("Invalid reminder method.", "invalid")
        return start_ts, end_ts

    @staticmethod
    def _parse_edt(cal: _Calendar, edt: dict, which: str) -> tuple[float, str]:
        if not isinstance(edt, dict) or not (edt.get("date") or edt.get("dateTime")):
            raise _bad(f"Missing {which} time.", "required")
        if edt.get("date") and edt.get("dateTime"):
            raise _bad(f"Invalid {which} time.", "invalid")
        tz_name = edt.get("timeZone")
        if tz_name is not None and _zone(tz_name) is None:
            raise _bad(f"Invalid time zone definition for {which} time.", "invalid")
        if edt.get("date"):
            try:
                d = date.fromisoformat(edt["date"])
            except (ValueError, TypeError):
                raise _bad(f"Invalid {which} date.", "invalid")
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", edt["date"]):
                raise _bad(f"Invalid {which} date.", "invalid")
            midnight = datetime(d.year, d.month, d.day, tzinfo=_zone(cal.time_zone))
            return midnight.timestamp(), "date"
        dt = _parse_rfc3339(edt["dateTime"])
        if dt is None:
            raise _bad(f"Invalid {which} time.", "invalid")
        if dt.tzinfo is None:
            if tz_name is None:
                raise _bad(f"Missing time zone definition for {which} time.", "required")
            dt = dt.replace(tzinfo=_zone(tz_name))
        return dt.timestamp(), "dateTime"

    # ------------------------------------------------------------------ recurrence (singleEvents=true)

    @staticmethod
    def _is_master(ev: _Event) -> bool:
        """A recurring event itself (it has ``recurrence``), as opposed to one of its instances."""
        return bool(ev.data.get("recurrence")) and not ev.data.get("recurringEventId")

    @staticmethod
    def _occurrences(cal: _Calendar, data: dict, lo: float, hi: float) -> list[datetime]:
        """Original starts of a recurring event's instances that overlap [lo, hi) (epoch seconds).

        RFC 5545 via dateutil's ``rrulestr`` (RRULE, EXRULE, RDATE, EXDATE lines). DTSTART is the
        start's wall-clock time in its ``timeZone`` (else the calendar's), so instances keep their
        local time across DST; all-day events recur on dates (naive, midnight in the calendar's
        zone). At most ``_EXPAND_MAX``. Raises ValueError/TypeError for a rule dateutil refuses
        (e.g. a local UNTIL with a timed start: RFC 5545 wants UTC there)."""
        start, end = data["start"], data["end"]
        if start.get("date"):
            zone = _zone(cal.time_zone) or timezone.utc
            first = datetime.combine(date.fromisoformat(start["date"]), datetime.min.time())
            span = (date.fromisoformat(end["date"]) - first.date()).days * 86400
            localize = lambda o: o.replace(tzinfo=zone)  # noqa: E731
        else:
            zone = _zone(start.get("timeZone") or cal.time_zone) or timezone.utc
            dt = _parse_rfc3339(start["dateTime"])
            first = dt.replace(tzinfo=zone) if dt.tzinfo is None else dt.astimezone(zone)
            end_dt = _parse_rfc3339(end["dateTime"])
            end_dt = end_dt.replace(tzinfo=_zone(end.get("timeZone") or cal.time_zone)) \
                if end_dt.tzinfo is None else end_dt
            span = end_dt.timestamp() - first.timestamp()
            localize = lambda o: o  # noqa: E731
        rules = rrulestr("\n".join(data["recurrence"]), dtstart=first, forceset=True)
        out: list[datetime] = []
        for occ in rules:
            occ = localize(occ)
            ts = occ.timestamp()
            if ts >= hi or len(out) >= _EXPAND_MAX:
                break
            if ts + span > lo:
                out.append(occ)
        return out

    @staticmethod
    def _instance_id(master_id: str, occ: datetime, all_day: bool) -> str:
        """``<masterId>_<YYYYMMDDTHHMMSSZ>`` (UTC basic format) or ``<masterId>_<YYYYMMDD>``."""
        if all_day:
            return f"{master_id}_{occ.strftime('%Y%m%d')}"
        return f"{master_id}_{occ.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"

    def _bounds(self, ev: _Event, lo: float | None, hi: float | None) -> tuple[float, float]:
        lo = ev.start_ts if lo is None else lo
        return lo, (max(lo, self._now()) + _EXPAND_DAYS * 86400) if hi is None else hi

    def _instance_ids(self, cal: _Calendar, master: _Event, lo: float) -> list[str]:
        """Ids of the instances a (live) recurring event has from ``lo`` on (expansion bound)."""
        if not self._is_master(master):
            return []
        all_day = bool(master.data["start"].get("date"))
        return [self._instance_id(master.data["id"], occ, all_day)
                for occ in self._occurrences(cal, master.data, *self._bounds(master, lo, None))]

    def _instance(self, cal: _Calendar, master: _Event, occ: datetime) -> _Event:
        """One generated instance: the master's fields, its own id and times, ``recurringEventId``,
        ``originalStartTime``, the same ``iCalUID``; not stored (``virtual``)."""
        d = master.data
        all_day = bool(d["start"].get("date"))
        data = {k: copy.deepcopy(v) for k, v in d.items() if k != "recurrence"}
        data["id"] = self._instance_id(d["id"], occ, all_day)
        data["recurringEventId"] = d["id"]
        if all_day:
            days = date.fromisoformat(d["end"]["date"]) - date.fromisoformat(d["start"]["date"])
            data["start"] = {"date": occ.date().isoformat()}
            data["end"] = {"date": (occ.date() + days).isoformat()}
            start_ts = occ.timestamp()
            end_ts = datetime.combine(occ.date() + days, datetime.min.time(), occ.tzinfo).timestamp()
        else:
            start_ts = occ.timestamp()
            end_ts = start_ts + (master.end_ts - master.start_ts)
            data["start"] = {k: v for k, v in d["start"].items() if k == "timeZone"}
            data["start"]["dateTime"] = occ.isoformat()
            data["end"] = {k: v for k, v in d["end"].items() if k == "timeZone"}
            data["end"]["dateTime"] = datetime.fromtimestamp(end_ts, occ.tzinfo).isoformat()
        data["originalStartTime"] = copy.deepcopy(data["start"])
        return _Event(data=data, seq=master.seq, start_ts=start_ts, end_ts=end_ts,
                      updated_ts=master.updated_ts, virtual=True)

    def _expand(self, cal: _Calendar, master: _Event, lo: float | None, hi: float | None) -> list[_Event]:
        """Generated instances overlapping [lo, hi); those stored as exceptions (moved or cancelled
        instances) are left out, since the stored exception stands in their place."""
        out = []
        for occ in self._occurrences(cal, master.data, *self._bounds(master, lo, hi)):
            inst = self._instance(cal, master, occ)
            if inst.data["id"] not in cal.events:
                out.append(inst)
        return out

    def _single_events(self, cal: _Calendar, pool: list[_Event], tmin: float | None, tmax: float | None,
                       since: int | None, window) -> list[_Event]:
        """``singleEvents=true``: recurring events replaced by their instances.

        A full list expands within ``timeMin``/``timeMax`` (without them: from the series' start,
        up to ``_EXPAND_DAYS`` ahead). An incremental list (``since`` = change counter of the sync
        token) expands only series changed since, within the window of the full list the token
        chain began with, and adds a bare cancelled instance for every instance a rule change
        removed since (guessed: Google's sync guide does not say how it reports them)."""
        out: list[_Event] = []
        for ev in pool:
            if not self._is_master(ev):
                out.append(ev)
                continue
            if since is None:
                out.extend(self._expand(cal, ev, tmin, tmax))
                continue
            if ev.seq <= since:
                continue
            lo, hi = window or (None, None)
            out.extend(self._expand(cal, ev, lo, hi))
            for iid, seq in ev.gone.items():
                if seq > since and iid not in cal.events:
                    data = {"id": iid, "status": "cancelled", "recurringEventId": ev.data["id"],
                            "etag": ev.data["etag"], "updated": ev.data["updated"]}
                    out.append(_Event(data=data, seq=seq, start_ts=ev.start_ts, end_ts=ev.end_ts,
                                      updated_ts=ev.updated_ts, virtual=True))
        return out

    def _lookup(self, cal: _Calendar, event_id: str, *, materialize: bool) -> _Event | None:
        """A stored event, or a generated instance named by its instance id (None if neither).

        ``materialize``: store the instance as an exception first (a patch moves it, a delete
        cancels it, as Google does for "only this event")."""
        ev = cal.events.get(event_id)
        if ev is not None or "_" not in event_id:
            return ev
        master_id, _, stamp = event_id.rpartition("_")
        master = cal.events.get(master_id)
        if master is None or not self._is_master(master) or master.data.get("status") == "cancelled":
            return None
        all_day = bool(master.data["start"].get("date"))
        try:
            if all_day:
                moment = datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=_zone(cal.time_zone))
            else:
                moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return None
        ts = moment.timestamp()
        for occ in self._occurrences(cal, master.data, ts - 1, ts + 1):
            inst = self._instance(cal, master, occ)
            if inst.data["id"] == event_id:
                if materialize:
                    inst.virtual = False
                    cal.events[event_id] = inst
                return inst
        return None

    def _forget_instances(self, cal: _Calendar, master: _Event, removed: set[str]) -> None:
        """A rule change (e.g. "this and following" setting UNTIL) removed these instances: an
        incremental list reports them cancelled; their stored exceptions are cancelled too."""
        for iid in removed:
            master.gone[iid] = self._seq
            exc = cal.events.get(iid)
            if exc is not None and exc.data.get("status") != "cancelled":
                self._delete(cal, exc)
        for iid in self._instance_ids(cal, master, master.start_ts):
            master.gone.pop(iid, None)  # back in the series (the rule changed again)

    # ------------------------------------------------------------------ conferences

    def _apply_conference(self, ev: _Event, conf: dict | None) -> None:
        """conferenceDataVersion=1 semantics for the body's conferenceData (None = remove)."""
        data = ev.data
        if conf is None:
            data.pop("conferenceData", None)
            data.pop("hangoutLink", None)
            ev.pending_reads, ev.last_request_id = 0, None
            return
        create = conf.get("createRequest")
        if create:
            rid = create.get("requestId")
            if not rid:
                raise _bad("Missing conference create request id.", "required")
            if rid == ev.last_request_id:
                return  # same requestId as the previous request: ignored, as documented
            kind = (create.get("conferenceSolutionKey") or {}).get("type")
            if kind != "hangoutsMeet":
                raise _bad("Invalid conference type value.", "invalid")
            ev.last_request_id = rid
            data.pop("hangoutLink", None)
            data["conferenceData"] = {"createRequest": {"requestId": rid,
                                                        "conferenceSolutionKey": {"type": kind},
                                                        "status": {"statusCode": "pending"}}}
            ev.pending_reads = self.conference_pending_reads
            if ev.pending_reads <= 0:
                self._finish_conference(ev)
            return
        current = data.get("conferenceData") or {}
        if conf.get("conferenceId") and conf.get("conferenceId") == current.get("conferenceId"):
            return  # the client sent back what it read: nothing changes
        data["conferenceData"] = _drop_nulls(copy.deepcopy(conf))
        video = [p for p in conf.get("entryPoints") or [] if p.get("entryPointType") == "video"]
        if video and "meet.google.com" in (video[0].get("uri") or ""):
            data["hangoutLink"] = video[0]["uri"]
        else:
            data.pop("hangoutLink", None)
        ev.pending_reads = 0

    def _finish_conference(self, ev: _Event) -> None:
        conf = ev.data.get("conferenceData") or {}
        create = conf.get("createRequest", {})
        if self._conference_outcome == "failure":
            create["status"] = {"statusCode": "failure"}
            ev.data["conferenceData"] = {"createRequest": create}
            return
        letters = string.ascii_lowercase
        code = "-".join("".join(secrets.choice(letters) for _ in range(n)) for n in (3, 4, 3))
        uri = f"https://meet.google.com/{code}"
        create["status"] = {"statusCode": "success"}
        ev.data["conferenceData"] = {
            "createRequest": create,
            "entryPoints": [{"entryPointType": "video", "uri": uri, "label": f"meet.google.com/{code}"}],
            "conferenceSolution": {"key": {"type": "hangoutsMeet"}, "name": "Google Meet",
                                   "iconUri": _MEET_ICON},
            "conferenceId": code,
        }
        ev.data["hangoutLink"] = uri

    def _count_read(self, cal: _Calendar, ev: _Event) -> None:
        """A read of a pending conference brings it closer to completion."""
        status = ((ev.data.get("conferenceData") or {}).get("createRequest") or {}).get("status", {})
        if status.get("statusCode") != "pending":
            return
        ev.pending_reads -= 1
        if ev.pending_reads <= 0:
            self._finish_conference(ev)
            self._touch(cal, ev)  # Google completing the conference is a change of the event

    # ------------------------------------------------------------------ rendering

    def _render(self, cal: _Calendar, ev: _Event, tz: str | None = None, tombstone: bool = False) -> dict:
        d = ev.data
        if tombstone:
            out = {"kind": "calendar#event", "etag": d["etag"], "id": d["id"], "status": "cancelled",
                   "updated": d["updated"]}
            for k in ("recurringEventId", "originalStartTime"):  # a cancelled instance says which
                if k in d:
                    out[k] = copy.deepcopy(d[k])
            return out
        out: dict[str, Any] = {"kind": "calendar#event", "etag": d["etag"], "id": d["id"],
                               "status": d["status"], "htmlLink": d["htmlLink"], "created": d["created"],
                               "updated": d["updated"]}
        for k, v in d.items():
            if k not in out:
                out[k] = copy.deepcopy(v)
        for which in ("start", "end", "originalStartTime"):
            edt = out.get(which)
            if isinstance(edt, dict) and edt.get("dateTime"):
                ts = ev.start_ts if which == "start" else ev.end_ts if which == "end" else None
                if ts is None:
                    dt = _parse_rfc3339(edt["dateTime"])
                    if dt is None or dt.tzinfo is None:
                        continue
                    ts = dt.timestamp()
                edt["dateTime"] = _render_instant(ts, tz or edt.get("timeZone") or cal.time_zone)
        return out

    # ------------------------------------------------------------------ admin over HTTP

    def _register_admin(self, app: Flask) -> None:
        def ok(payload: Any = None) -> Response:
            return Response(json.dumps({"ok": True} if payload is None else payload, indent=1),
                            mimetype="application/json")

        def body() -> dict:
            return request.get_json(silent=True) or {}

        def guarded(fn):
            def wrapper(**kw):
                try:
                    return fn(**kw)
                except (KeyError, ValueError, TypeError) as e:
                    return Response(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}),
                                    status=400, mimetype="application/json")
                except ApiError as e:
                    return e.response()
            wrapper.__name__ = "admin_" + fn.__name__
            return wrapper

        def route(rule, methods):
            def deco(fn):
                app.add_url_rule("/__sandbox__" + rule, view_func=guarded(fn), methods=methods)
                return fn
            return deco

        @route("/state", ["GET"])
        def state():
            with self._lock:
                return ok({
                    "base_url": self._base_url, "auth_uri": self._base_url and self.auth_uri,
                    "token_uri": self._base_url and self.token_uri,
                    "revoke_uri": self._base_url and self.revoke_uri,
                    "api_endpoint": self._base_url and self.api_endpoint,
                    "client_id": self.client_id, "client_secret": self.client_secret,
                    "token_ttl": self.token_ttl, "conference_pending_reads": self.conference_pending_reads,
                    "auto_approve": self._auto_email, "grant_only": self._grant_only, "down": self._down,
                    "fail_next": len(self._fail), "now": _rfc3339_ms(self._now()),
                    "allow_http_webhooks": self.allow_http_webhooks, "channel_ttl": self.channel_ttl,
                    "push_retry_delays": list(self.push_retry_delays), "push_timeout": self.push_timeout,
                    "freebusy_max_days": self.freebusy_max_days, "drop_notifications": self._drop_next,
                    "accounts": [{"email": a.email, "name": a.name, "timeZone": a.time_zone,
                                  "calendars": self.calendars(a.email)} for a in self._accounts.values()],
                })

        @route("/accounts", ["POST"])
        def accounts():
            b = body()
            cals = [tuple(c) for c in b.get("calendars", [["Clinic appointments", "writer"]])]
            self.add_account(b["email"], calendars=cals, timezone=b.get("timezone", "Europe/Paris"),
                             name=b.get("name"))
            return ok({"ok": True, "calendars": self.calendars(b["email"])})

        @route("/calendars", ["POST"])
        def calendars():
            b = body()
            return ok({"ok": True, "id": self.add_calendar(b["email"], b["summary"], b.get("role", "writer"),
                                                           b.get("timezone"))})

        @route("/auto_approve", ["POST"])
        def auto_approve():
            self.auto_approve(body().get("email"))
            return ok()

        @route("/grant_only", ["POST"])
        def grant_only():
            self.grant_only(body().get("scopes"))
            return ok()

        @route("/revoke", ["POST"])
        def revoke():
            self.revoke(body()["email"])
            return ok()

        @route("/expire_access_tokens", ["POST"])
        def expire():
            self.expire_access_tokens()
            return ok()

        @route("/advance", ["POST"])
        def advance():
            self.advance(float(body()["seconds"]))
            return ok()

        @route("/events", ["GET"])
        def events():
            inc = request.args.get("include_cancelled", "true").lower() not in ("0", "false", "no")
            return ok({"items": self.events(request.args["calendar_id"], include_cancelled=inc)})

        @route("/user_events/<path:cal_id>", ["POST"])
        def user_insert(cal_id):
            return ok(self.user_insert(cal_id, body()))

        @route("/user_events/<cal_id>/<event_id>", ["PATCH", "DELETE"])
        def user_edit(cal_id, event_id):
            if request.method == "DELETE":
                self.user_delete(cal_id, event_id)
                return ok()
            return ok(self.user_patch(cal_id, event_id, body()))

        @route("/kill_on_insert", ["POST"])
        def kill():
            self.kill_on_insert(int(body()["pid"]))
            return ok()

        @route("/down", ["POST"])
        def down():
            self.set_down(bool(body().get("down", True)))
            return ok()

        @route("/fail_next", ["POST"])
        def fail_next():
            b = body()
            self.fail_next(int(b.get("n", 1)), int(b.get("status", 500)), b.get("reason", "backendError"))
            return ok()

        @route("/conference_outcome", ["POST"])
        def conference_outcome():
            self.conference_outcome(body().get("outcome", "success"))
            return ok()

        @route("/invalidate_sync_tokens", ["POST"])
        def invalidate():
            self.invalidate_sync_tokens()
            return ok()

        @route("/share_calendar", ["POST"])
        def share_calendar():
            b = body()
            self.share_calendar(b["calendar_id"], b["email"], b.get("role", "freeBusyReader"))
            return ok({"ok": True, "calendars": self.calendars(b["email"])})

        @route("/unshare_calendar", ["POST"])
        def unshare_calendar():
            b = body()
            self.unshare_calendar(b["calendar_id"], b["email"])
            return ok()

        @route("/channels", ["GET"])
        def channels():
            return ok({"channels": self.channels()})

        @route("/expire_channels", ["POST"])
        def expire_channels():
            self.expire_channels()
            return ok()

        @route("/drop_notifications", ["POST"])
        def drop_notifications():
            self.drop_notifications(int(body().get("n", 1)))
            return ok()

        @route("/notifications", ["GET", "DELETE"])
        def notifications():
            if request.method == "DELETE":
                self.reset_notifications()
                return ok()
            return ok({"notifications": self.notifications})

        @route("/requests", ["GET", "DELETE"])
        def requests_log():
            if request.method == "DELETE":
                self.reset_requests()
                return ok()
            return ok({"requests": self.requests})

        @route("/reset", ["POST"])
        def reset():
            self.reset()
            return ok()


# --------------------------------------------------------------------------- standalone

def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.google --port 8089``: serve until Ctrl-C."""
    p = argparse.ArgumentParser(description="Local Google OAuth + Calendar v3 sandbox")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--client-id", default="sandbox-client-id.apps.googleusercontent.com")
    p.add_argument("--client-secret", default="sandbox-client-secret")
    p.add_argument("--token-ttl", type=int, default=3600)
    p.add_argument("--pending-reads", type=int, default=1)
    p.add_argument("--auto-approve", metavar="EMAIL", default=None)
    p.add_argument("--latency", type=float, default=0.0, help="seconds each API/token request is held (0 = off)")
    p.add_argument("--user-rate-limit", type=int, default=0,
                   help="API requests per user per minute before 403/429 rateLimitExceeded (0 = off; Google: 600)")
    p.add_argument("--rate-limit-status", type=int, choices=(403, 429), default=403)
    args = p.parse_args(argv)
    sb = GoogleSandbox(client_id=args.client_id, client_secret=args.client_secret, token_ttl=args.token_ttl,
                       conference_pending_reads=args.pending_reads, latency=args.latency,
                       user_rate_limit=args.user_rate_limit, rate_limit_status=args.rate_limit_status)
    if args.auto_approve:
        sb.auto_approve(args.auto_approve)
    base = sb.start(args.host, args.port)
    print(f"Google sandbox on {base}")
    print(f"  auth_uri      {sb.auth_uri}")
    print(f"  token_uri     {sb.token_uri}")
    print(f"  revoke_uri    {sb.revoke_uri}")
    print(f"  api_endpoint  {sb.api_endpoint}")
    print(f"  client_id     {sb.client_id}")
    print(f"  client_secret {sb.client_secret}")
    print(f"  admin         {base}/__sandbox__/state")
    for email, _tz in SEEDED_ACCOUNTS:
        for c in sb.calendars(email):
            print(f"  {email:40s} {c['accessRole']:7s} {c['id']}  ({c['summary']})")
    print("Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sb.stop()


if __name__ == "__main__":
    main()
