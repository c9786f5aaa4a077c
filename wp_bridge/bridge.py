"""The sync engine, KiviCare → Google: snapshot → diff → jobs → calendar provider → mapping table.

``poll()`` lists the appointment window (yesterday … ``horizon_days`` ahead, UTC) with
``GET /appointments?timezone=UTC&perPage=all``. The window has two parts (issue 7): the near window
(yesterday … ``near_days`` ahead), listed at every poll, and the far window (the rest of the horizon),
listed only every ``far_poll_seconds``, because KiviCare's list costs ~70 ms + 1.4 ms per appointment
(kivicare/API.md, "Measured cost"). ``poll()`` learns a new or changed row's service ids from its names
(one cached ``GET /doctor-services``), reading ``GET /appointments/{id}`` only when a name is unknown or
ambiguous, caches what it saw, and enqueues a job wherever an
event's desired content differs from what Google last confirmed. Rows that vanished from the
window are confirmed with ``GET /appointments/{id}`` (404 = deleted) before anything is deleted
(DESIGN invariant 3); only rows of the part actually listed are looked for. Workers run the jobs
(``run_due_jobs``): insert/patch/delete events with deterministic ids (invariant 1), fetch pending Meet
conferences, and record the outcome. Up to ``google.batch_size`` due pushes of one connection share one
Google batch request (``run_push_batch``), each still prepared, recorded and retried on its own.

Rules (issue 2): events exist for booked (1), pending (2, tentative), checked-in (4) and checked-out
(3) appointments. A future appointment that is cancelled or deleted loses its event; a past one
keeps it (KiviCare's nightly cron cancels every past booked appointment). Telemedicine appointments
(a service in the admin's list) get a Google Meet conference; the appointment never waits for it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from peewee import IntegrityError, fn

from sidecar.calendars.base import (CalendarAuthError, CalendarChanged, CalendarError, CalendarRateLimited,
                                    CalendarUnavailable, EventSpec, EventState)
from sidecar.calendars.google import MAX_BATCH_CALLS, GoogleCalendar, Upsert, event_body, event_id_for
from sidecar.config import SETTINGS
from sidecar.storage import close_database, database, transaction
from sidecar.storage.prepared import Prepared, PreparedWrite
from sidecar.storage.models import (Appointment as AppointmentRow, Conflict, Connection, Doctor, Job, MeetMapping,
                                    PendingWrite, RejectedRow, SyncCursor, utcnow)

from . import alerts, event_text, filters, jobs, pending_writes
from .companion import CompanionError, CompanionNotInstalled, CompanionUnavailable
from .kivicare import AppointmentPage, KiviCareClient, KiviCareError, KiviCareNotFound, KiviCareUnavailable
from .models import CANCELLED, EVENT_STATUSES, PENDING, Appointment, BadAppointment, DoctorService
from .inbound import Inbound
from .prefetch import prefetched
from .synclog import log_many, log_sync, sync_row

log = logging.getLogger(__name__)

PLAN_CHUNK = 200  # listed rows written and planned per transaction
FIRST_SYNC_PAGE = 250  # rows of a first sync's first list request; the next ones grow to bridge.list_page_size
CONFIRM_CONCURRENCY = 4  # rows missing from a list confirmed with GET /appointments/{id} at once
MAX_ATTEMPTS = 5  # counted failures (permanent errors) before a job is given up and shown to the admin
OUTAGE_BACKOFF_CAP = 60.0  # seconds: the longest wait between two tries during an outage
CONFERENCE_RECHECK = timedelta(seconds=3)
# A timed poll is put off while more pushes than this are due (a first sync of thousands): what it would find
# would only queue behind them, and each listing costs KiviCare's server ~1.4 ms per row. Never for longer
# than BACKLOG_LONGEST_WAIT after the last poll, so a change still shows within that time.
BACKLOG_PUT_OFF = 1000
BACKLOG_LONGEST_WAIT = timedelta(seconds=60)
REFERENCE_TTL = timedelta(hours=1)


def push_key(appointment_id: str, connection_id: int) -> str:
    """The ``jobs`` key of the push of one appointment to one connection's calendar."""
    return f"push:{appointment_id}:{connection_id}"


def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return False
    return True


NOT_FOUND = object()  # ``_job_connection``'s ``connection`` when the caller looked and found no row


def _in_pool(call, items: list, *, workers: int, name: str) -> list:
    """``[call(item) for item in items]``, up to ``workers`` at once in pool threads (in order; an exception
    is raised here). Each call's database connection is closed after it: a pool thread's must not leak."""
    def run(item):
        try:
            return call(item)
        finally:
            close_database()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix=name) as pool:
        return list(pool.map(run, items))


class RefuseToRun(RuntimeError):
    """Another Google integration is active in KiviCare; running both would duplicate events."""


@dataclass
class PollReport:
    """What one poll saw and did (counts only; no patient data)."""

    listed: int = 0
    fetched: int = 0
    rejected: int = 0
    missing_checked: int = 0
    deleted: int = 0
    enqueued: int = 0
    put_off: int = 0  # a timed poll put off (``Bridge.backlogged``): the pushes due, counted up to BACKLOG_PUT_OFF + 1
    windows: tuple[str, ...] = ()  # the parts listed: "near", "far" (both after a start or when asked)
    errors: list[str] = field(default_factory=list)

    def add(self, other: "PollReport") -> None:
        """Count ``other`` (another window's listing of the same poll) in: its counts summed, its errors."""
        for f in fields(self):
            if isinstance(getattr(self, f.name), int):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.errors += other.errors


@dataclass(frozen=True)
class PollWindow:
    """A part of the synced window: appointment starts in ``[start, end)``, UTC, on whole UTC days.

    KiviCare filters ``date_from``/``date_to`` on the start only, both days inclusive (API.md 2.2), so
    the listing of ``first_day`` … ``last_day`` is exactly this half-open span: consecutive windows
    neither overlap nor leave a gap.
    """

    name: str  # "near" or "far"
    start: datetime  # aware UTC, 00:00 of the first day
    end: datetime  # aware UTC, 00:00 of the day after the last one (excluded)

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()

    def __contains__(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


POLL_SCOPES = ("all", "due", "near", "far")


@dataclass(frozen=True)
class Decision:
    """``action``: "upsert" (with ``spec``), "delete", or "keep" (leave the event as it is)."""

    action: str
    spec: EventSpec | None = None


@dataclass
class PushCall:
    """A prepared ``push``: the Google write to make (``upsert``) and what recording its answer needs.

    ``_prepare_push`` builds it after every read, decision and ``pending_writes.record`` (committed before
    the call); ``_finish_push`` records Google's answer. The single path and the batch path share both."""

    appointment_id: str
    connection: Connection
    spec: EventSpec
    mapping: MeetMapping | None
    request_id: str
    pushed_body: dict
    google: GoogleCalendar  # the client the prepare step used (deletes of stale events included)
    upsert: Upsert


@dataclass
class PlanContext:
    """What planning one poll's rows reads from the database, read once per poll (in chunks of ``CHUNK``
    ids) instead of once per row: the rows cached from earlier polls, the active mappings, the open
    conflicts and the unconfirmed writes of the listed appointments. Rows changed by a worker meanwhile
    can only make a plan enqueue a push that then finds nothing to do (``_prepare_push`` reads afresh)."""

    rows: dict[str, AppointmentRow]
    mappings: dict[str, list[MeetMapping]]
    open_conflicts: set[str]
    pending: set[tuple[str, str]]  # (appointment id, calendar id)
    rejected: set[str]
    queued: dict[str, str | None]  # push job key -> change token, of pushes waiting (due) or running
    pending_ids: set[str] = field(default_factory=set)  # appointment ids of ``pending``

    CHUNK = 500  # ids per IN (...) query: under every database's limit on bound variables

    @classmethod
    def load(cls, ids: list[str], push_keys: list[str] = ()) -> "PlanContext":
        """Read what planning ``ids`` needs; ``push_keys``: the push jobs (``push:<id>:<connection>``) whose
        waiting state to read, so a poll during a long first sync does not ask again for each one."""
        ctx = cls(rows={}, mappings={}, open_conflicts=set(), pending=set(), rejected=set(), queued={})
        for n in range(0, len(push_keys), cls.CHUNK):
            ctx.queued.update(jobs.waiting(push_keys[n:n + cls.CHUNK]))
        for n in range(0, len(ids), cls.CHUNK):
            chunk = ids[n:n + cls.CHUNK]
            ctx.rows.update((r.id, r) for r in AppointmentRow.select().where(AppointmentRow.id.in_(chunk)))
            for m in MeetMapping.select().where(MeetMapping.appointment_id.in_(chunk) & (MeetMapping.state == "active")):
                ctx.mappings.setdefault(m.appointment_id, []).append(m)
            ctx.open_conflicts.update(c.appointment_id for c in Conflict.select(Conflict.appointment_id).where(
                Conflict.appointment_id.in_(chunk) & (Conflict.state == "open")))
            ctx.pending.update((w.appointment_id, w.calendar_id) for w in PendingWrite.select(
                PendingWrite.appointment_id, PendingWrite.calendar_id).where(PendingWrite.appointment_id.in_(chunk)))
            ctx.rejected.update(r.appointment_id for r in RejectedRow.select(RejectedRow.appointment_id).where(
                RejectedRow.appointment_id.in_(chunk)))
        ctx.pending_ids = {appointment_id for appointment_id, _calendar in ctx.pending}
        return ctx


# The push path's reads, their SQL built once (sidecar/storage/prepared.py): every push makes each of them.
_ROW = Prepared(lambda key: AppointmentRow.select().where(AppointmentRow.id == key), str)
_PUSH_MAPPINGS = Prepared(lambda key, calendar, connection: MeetMapping.select().where(
    (MeetMapping.appointment_id == key)
    & ((MeetMapping.calendar_id == calendar) | ((MeetMapping.connection == connection) & (MeetMapping.state == "active")))),
    str, str, int)
_OPEN_CONFLICT = Prepared(lambda key: Conflict.select(Conflict.id).where(
    (Conflict.appointment_id == key) & (Conflict.state == "open")).limit(1), str)


@dataclass
class PushReads:
    """What ``_prepare_push`` reads of its appointments: the stored rows, the mappings (this calendar's and
    any active one of the connection elsewhere: stale events), the pending writes and the open conflicts.

    ``one`` reads them for a single push (prepared queries); ``load`` for a batch of one connection's
    pushes at once (one query per table for up to ``PlanContext.CHUNK`` appointments), read just before
    the batch's pushes are prepared one after the other, as each would read them."""

    calendar_id: str
    connection_id: int
    rows: dict[str, AppointmentRow]
    mappings: dict[str, list[MeetMapping]]  # every appointment read has its list (maybe empty)
    pending: dict[str, list[PendingWrite]]
    conflicts: set[str]

    def cover(self, appointment_id: str, calendar_id: str, connection_id: int) -> bool:
        """True when these reads hold what a push of ``appointment_id`` to ``calendar_id`` of ``connection_id``
        reads (a connection whose calendar changed since they were read is read again)."""
        return (calendar_id, connection_id) == (self.calendar_id, self.connection_id) and appointment_id in self.mappings

    @classmethod
    def one(cls, appointment_id: str, calendar_id: str, connection_id: int) -> "PushReads":
        row = _ROW.first(appointment_id)
        return cls(calendar_id, connection_id, rows={appointment_id: row} if row else {},
                   mappings={appointment_id: _PUSH_MAPPINGS.rows(appointment_id, calendar_id, connection_id)},
                   pending={appointment_id: pending_writes.of_appointment(appointment_id)},
                   conflicts={appointment_id} if _OPEN_CONFLICT.first(appointment_id) else set())

    @classmethod
    def load(cls, ids: list[str], calendar_id: str, connection_id: int) -> "PushReads":
        reads = cls(calendar_id, connection_id, rows={}, mappings={i: [] for i in ids}, pending={i: [] for i in ids},
                    conflicts=set())
        for n in range(0, len(ids), PlanContext.CHUNK):
            chunk = ids[n:n + PlanContext.CHUNK]
            reads.rows.update((r.id, r) for r in AppointmentRow.select().where(AppointmentRow.id.in_(chunk)))
            for m in MeetMapping.select().where(MeetMapping.appointment_id.in_(chunk) & (
                    (MeetMapping.calendar_id == calendar_id)
                    | ((MeetMapping.connection == connection_id) & (MeetMapping.state == "active")))):
                reads.mappings[m.appointment_id].append(m)
            for w in PendingWrite.select().where(PendingWrite.appointment_id.in_(chunk)):
                reads.pending[w.appointment_id].append(w)
            reads.conflicts.update(c.appointment_id for c in Conflict.select(Conflict.appointment_id).where(
                Conflict.appointment_id.in_(chunk) & (Conflict.state == "open")))
        return reads


# The push path's write of Google's answer: the mapping inserted, or every column but the key and created_at updated.
_MAPPING_KEY = (MeetMapping.appointment_id, MeetMapping.calendar_id, MeetMapping.created_at)
_MAPPING_VALUES = (MeetMapping.doctor_id, MeetMapping.connection, MeetMapping.event_id, MeetMapping.etag,
                   MeetMapping.hangout_link, MeetMapping.conference_status, MeetMapping.conference_request,
                   MeetMapping.pushed_hash, MeetMapping.pushed_body, MeetMapping.google_updated, MeetMapping.state,
                   MeetMapping.updated_at)
_UPSERT_MAPPING = PreparedWrite(lambda *values: MeetMapping.insert(
    dict(zip(_MAPPING_KEY + _MAPPING_VALUES, values))).on_conflict(
    conflict_target=[MeetMapping.appointment_id, MeetMapping.calendar_id],
    update=dict(zip(_MAPPING_VALUES, values[len(_MAPPING_KEY):]))), *_MAPPING_KEY, *_MAPPING_VALUES)
# The poll's writes of a listed row (``Bridge._remember``): a new row, or a newer observation of a known one
# (nothing written when the stored row was observed later; its changed_at kept when None is given).
_ROW_COLUMNS = (AppointmentRow.doctor_id, AppointmentRow.start_utc, AppointmentRow.end_utc, AppointmentRow.status,
                AppointmentRow.list_hash, AppointmentRow.data, AppointmentRow.present, AppointmentRow.last_seen_at,
                AppointmentRow.changed_at)
_INSERT_ROW = PreparedWrite(lambda key, first_seen, *values: AppointmentRow.insert(
    {AppointmentRow.id: key, AppointmentRow.first_seen_at: first_seen, **dict(zip(_ROW_COLUMNS, values))}),
    AppointmentRow.id, AppointmentRow.first_seen_at, *_ROW_COLUMNS)
_UPDATE_ROW = PreparedWrite(lambda key, *values: AppointmentRow.update(
    {**dict(zip(_ROW_COLUMNS[:-1], values[:-1])),
     AppointmentRow.changed_at: fn.COALESCE(values[-1], AppointmentRow.changed_at)}).where(
    (AppointmentRow.id == key) & (AppointmentRow.last_seen_at <= values[-2])), AppointmentRow.id, *_ROW_COLUMNS)


@dataclass
class _Listing:
    """What the pages of one poll's listing share (``Bridge._plan_page``)."""

    client: KiviCareClient
    connections: dict[int, Connection]
    seen: set[str] = field(default_factory=set)  # ids listed so far
    rejected_ids: set[str] = field(default_factory=set)  # ids of rows that could not be read
    mappings_fresh: bool = False  # the doctor-service list was re-read for new rows in this poll
    token: tuple = ()  # what every row's plan depends on besides the row: settings, site, zones (``_plan_inputs``)
    quiet_before: dict[str, tuple] = field(default_factory=dict)  # the last listing's quiet rows: id -> inputs
    quiet_now: dict[str, tuple] = field(default_factory=dict)  # this listing's


@dataclass
class PushTally:
    """What the finished pushes of one batch still have to write: the connection's counters (one UPDATE)
    and their sync-log rows (one INSERT), written by ``flush`` before any job of the batch is failed and
    at its end, so the connection's ``last_error`` and the log keep the order of events."""

    connection_id: int
    synced: int = 0
    last_sync_at: datetime | None = None
    logs: list[dict] = field(default_factory=list)

    def flush(self) -> None:
        if self.synced:
            Connection.update(synced_count=Connection.synced_count + self.synced, last_sync_at=self.last_sync_at,
                              last_error="").where(Connection.id == self.connection_id).execute()
        log_many(self.logs)
        self.synced, self.logs = 0, []


class Bridge:
    """The engine for one runtime (``sidecar.runtime.Runtime``). Thread-safe: workers share it."""

    def __init__(self, runtime):
        self.rt = runtime
        self.cfg = runtime.cfg
        self.clock = utcnow
        self._site_tz: str | None = None
        self._site_checked: datetime | None = None
        self._mappings: dict[int, DoctorService] = {}  # doctor-service mapping id -> the mapping
        self._mappings_by_name: dict[tuple[int, int, str], list[int]] = {}  # (doctor, clinic, name) -> ids
        self._services_checked: datetime | None = None
        self._poll_lock = threading.Lock()
        self._far_listed_at: datetime | None = None  # None: not since start, so the first poll lists both
        self._polled_at: datetime | None = None  # when the last poll began (by ``self.clock``)
        self._warned_near_days: int | None = None
        self._doctor_zones: dict[int, tuple[str | None, datetime]] = {}  # doctor id -> (stored zone, read at)
        self._clinic_addresses: dict[int, str] = {}  # clinic id -> address, as the last list rows gave it
        # window name -> {appointment id: the inputs of a plan that found nothing to do} (``_quiet_key``)
        self._quiet: dict[str, dict[str, tuple]] = {}
        self._pull_lock = threading.Lock()  # guards _pull_locks
        self._pull_locks: dict[int, threading.Lock] = {}  # doctor id -> held while that doctor is pulled
        self.inbound = Inbound(self)

    # ---- reference data ------------------------------------------------------------------------

    @property
    def site(self) -> str:
        """Identifies the KiviCare site in event ids and private properties."""
        return self.cfg.get("kivicare.base_url").rstrip("/")

    def site_timezone(self) -> str:
        """The WordPress timezone (``/wp-json/`` ``timezone_string``), refreshed hourly; cached across runs."""
        now = self.clock()
        if self._site_tz is None or self._site_checked is None or now - self._site_checked > REFERENCE_TTL:
            try:
                zone = self.rt.kivicare().site_info().timezone
                self._site_tz = zone if _valid_zone(zone) else "UTC"
                self.rt.set_state("site_timezone", self._site_tz)
            except KiviCareError:
                # Not remembered as checked: a passing failure must not pin events to UTC for an hour.
                return self._site_tz or self.rt.get_state("site_timezone") or "UTC"
            self._site_checked = now
        return self._site_tz

    def doctor_timezone(self, doctor_id: int) -> str:
        """The doctor's IANA zone (``GET /doctors/{id}``), else the site's; a name zoneinfo cannot read
        falls back (to the site's, then UTC) with a warning instead of breaking every poll. The stored zone
        is read at most once a minute per doctor (every event's text needs it; ``refresh_doctor`` forgets it)."""
        now = self.clock()
        known = self._doctor_zones.get(doctor_id)
        if known is None or now - known[1] > timedelta(minutes=1):
            doctor = Doctor.get_or_none(Doctor.id == doctor_id)
            known = self._doctor_zones[doctor_id] = (doctor.timezone if doctor else None, now)
        for zone in (known[0], self.site_timezone(), "UTC"):
            if zone and _valid_zone(zone):
                return zone
            if zone:
                log.warning("ignored an unknown timezone for doctor %s", doctor_id)
        return "UTC"

    def refresh_doctor(self, doctor_id: int) -> None:
        """``GET /doctors/{id}``: name, e-mail and timezone (null = the site's).

        A doctor KiviCare no longer knows (404: deleted, and with them their appointments, without any
        hook) is marked removed: their sync stops and their events stay for the admin to keep or remove.
        """
        try:
            found = self.rt.kivicare().get_doctor(doctor_id)
        except KiviCareNotFound:
            changed = Connection.update(state="removed", last_error="This doctor no longer exists in KiviCare.",
                                        updated_at=utcnow()).where(
                (Connection.doctor == doctor_id) & Connection.state.in_(("active", "needs_reconnect", "pending"))
            ).execute()
            if changed:
                log.warning("doctor %s was removed from KiviCare; their sync stopped", doctor_id)
                log_sync("doctor-removed", "ok", doctor_id=doctor_id,
                         message="Removed from KiviCare: sync stopped; events left in Google for the admin.")
            return
        (Doctor.insert(id=found.id, name=found.name, email=found.email, timezone=found.timezone, updated_at=utcnow())
         .on_conflict(conflict_target=[Doctor.id], update={Doctor.name: found.name, Doctor.email: found.email,
                                                            Doctor.timezone: found.timezone,
                                                            Doctor.updated_at: utcnow()}).execute())
        self._doctor_zones.pop(found.id, None)  # after the write: a read meanwhile may have cached the old zone

    def _doctor_services(self, *, unknown: bool = False) -> dict[int, DoctorService]:
        """Every doctor-service mapping by mapping id (``GET /doctor-services?perPage=all``), re-read hourly,
        or when the caller met one it does not know (at most every 30 s, so a bad id can't hammer KiviCare)."""
        now = self.clock()
        age = None if self._services_checked is None else now - self._services_checked
        if age is None or age > REFERENCE_TTL or (unknown and age > timedelta(seconds=30)):
            mappings = {s.id: s for s in self.rt.kivicare().list_doctor_services()}
            by_name: dict[tuple[int, int, str], list[int]] = {}
            for m in mappings.values():
                by_name.setdefault((m.doctor_id, m.clinic_id, m.name.strip()), []).append(m.id)
            self._mappings, self._mappings_by_name = mappings, by_name
            self._services_checked = now
        return self._mappings

    def _service_ids(self, mapping_ids: tuple[int, ...]) -> tuple[int, ...] | None:
        """kc_services ids for doctor-service mapping ids (``GET /doctor-services``, re-read when unknown)."""
        mappings = self._doctor_services()
        if any(m not in mappings for m in mapping_ids):
            mappings = self._doctor_services(unknown=True)
        if any(m not in mappings for m in mapping_ids):
            return None
        return tuple(mappings[m].service_id for m in mapping_ids)

    def _mapping_ids_by_name(self, appointment: Appointment) -> tuple[int, ...] | None:
        """The doctor-service mapping ids a list row names, without ``GET /appointments/{id}``.

        The list's ``services`` is the names of the appointment's services joined on the mapping of the
        appointment's own doctor and clinic (API.md 2.3), so a name names one mapping of that doctor at
        that clinic. None (the caller reads the detail route) when the row names none, or a name matches
        no mapping or more than one (two services of one name; a name containing a comma)."""
        if not appointment.service_names:
            return None
        for unknown in (False, True):
            self._doctor_services(unknown=unknown)
            found: list[int] = []
            for name in appointment.service_names:
                matches = self._mappings_by_name.get((appointment.doctor_id, appointment.clinic_id, name), ())
                if len(matches) != 1:
                    break
                found.append(matches[0])
            else:
                return tuple(found)
        return None

    def import_kivicare_template(self) -> None:
        """First contact: the sidecar's event template starts as KiviCare's own (title, text, colours)."""
        if self.rt.get_state("template_imported"):
            return
        template = self.rt.kivicare().event_template()
        for name, value in (("sync.title_template", template.title),
                            ("sync.description_template", template.description),
                            ("sync.status_colors", template.status_colors)):
            if self.cfg.source(name) == "default":
                self.cfg.set(name, value)
        self.rt.set_state("template_imported", True)

    def check_addons(self) -> list[str]:
        """``GET /config/addon`` at start. Raises RefuseToRun; returns warnings to show the admin."""
        addons = self.rt.kivicare().addons()
        warnings = []
        if addons.get("googlemeet", (False, None))[0]:
            raise RefuseToRun("KiviCare's Google Meet add-on is active: it creates its own Google events and Meet "
                              "links. Deactivate it in WordPress before running the sidecar.")
        if addons.get("kiviPro", (False, None))[0]:
            # Pro's Google Calendar switch is not visible over REST, so the admin must check it.
            warnings.append("KiviCare Pro is active. If its Google Calendar sync is switched on, every appointment "
                            "will appear twice in Google: turn it off under KiviCare > Settings > Pro Settings.")
        if addons.get("telemed", (False, None))[0]:
            warnings.append("KiviCare's Zoom telemed add-on is active: telemedicine appointments may get a Zoom "
                            "meeting as well as a Google Meet link.")
        for text in warnings:
            log.warning(text)
        self.rt.set_state("addons", warnings)
        return warnings

    # ---- poll: KiviCare snapshot → diff → jobs ---------------------------------------------------------

    def window(self) -> tuple[datetime, datetime]:
        """The synced window in UTC: from yesterday 00:00 to the end of the horizon's last day."""
        today = self.clock().astimezone(timezone.utc).date()
        start = datetime.combine(today - timedelta(days=1), datetime.min.time(), timezone.utc)
        end = datetime.combine(today + timedelta(days=int(self.cfg.get("bridge.horizon_days"))),
                               datetime.max.time(), timezone.utc)
        return start, end

    def near_days(self) -> int:
        """``bridge.near_days`` made usable: at least 1 and at most ``bridge.horizon_days`` (warned once)."""
        wanted = int(self.cfg.get("bridge.near_days"))
        horizon = max(int(self.cfg.get("bridge.horizon_days")), 1)
        days = min(max(wanted, 1), horizon)
        if wanted < 1 and self._warned_near_days != wanted:
            self._warned_near_days = wanted
            log.warning("bridge.near_days is %d; it must be at least 1, so 1 is used", wanted)
        return days

    def poll_windows(self) -> tuple[PollWindow, PollWindow | None]:
        """The near and far windows for today (UTC dates, by ``self.clock``): near is yesterday 00:00 up to
        the end of the day ``near_days`` ahead; far is the rest of the horizon (None when near covers it)."""
        start, end = self.window()
        horizon_end = datetime.combine(end.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
        today = self.clock().astimezone(timezone.utc).date()
        near_end = min(datetime.combine(today + timedelta(days=self.near_days() + 1), datetime.min.time(),
                                        timezone.utc), horizon_end)
        near = PollWindow("near", start, near_end)
        return near, (PollWindow("far", near_end, horizon_end) if near_end < horizon_end else None)

    def page_size(self) -> int:
        """``bridge.list_page_size``: appointments per KiviCare list request; 0 = all in one."""
        return max(0, int(self.cfg.get("bridge.list_page_size")))

    def far_due(self, slack: float = 0.0) -> bool:
        """True when the far window has not been listed since start, or ``bridge.far_poll_seconds`` ago or more
        (by ``self.clock``; a clock that went backwards counts as due). ``slack`` (seconds): due that much
        early, so a loop ticking every ``poll_seconds`` does not list it one whole tick late."""
        if self._far_listed_at is None:
            return True
        elapsed = (self.clock() - self._far_listed_at).total_seconds()
        return elapsed < 0 or elapsed + slack >= int(self.cfg.get("bridge.far_poll_seconds"))

    def backlogged(self) -> int:
        """The pushes due now (counted up to ``BACKLOG_PUT_OFF`` + 1) when there are more than
        ``BACKLOG_PUT_OFF`` and the last poll began less than ``BACKLOG_LONGEST_WAIT`` ago; else 0.

        During a first sync of thousands of appointments the workers are busy for a minute or more: a poll
        then would re-list every row only to find their pushes still waiting, and a change it found would
        queue behind them anyway (jobs run oldest first)."""
        if self._polled_at is None:
            return 0
        elapsed = self.clock() - self._polled_at
        if elapsed < timedelta(0) or elapsed >= BACKLOG_LONGEST_WAIT:
            return 0
        waiting = jobs.backlog("push", BACKLOG_PUT_OFF + 1)
        return waiting if waiting > BACKLOG_PUT_OFF else 0

    def poll(self, scope: str = "all", *, slack: float = 0.0) -> PollReport:
        """One poll of KiviCare. Raises KiviCareError when KiviCare cannot be read (nothing is changed then).

        ``scope``: "all" (near and far windows: the default, for a start, a connect or a settings change),
        "due" (the loop's timer: the near window, plus the far window when ``far_due(slack)``), "near" or
        "far". Each window is its own listing, near first. Raises ValueError for another scope.

        A "due" poll lists nothing while ``backlogged()``: its report's ``put_off`` holds the pushes due.
        """
        if scope not in POLL_SCOPES:
            raise ValueError(f"unknown poll scope {scope!r}; expected one of {', '.join(POLL_SCOPES)}")
        with self._poll_lock:
            if scope == "due":
                waiting = self.backlogged()
                if waiting:
                    return PollReport(put_off=waiting)
            near, far = self.poll_windows()
            windows = {"all": (near, far), "due": (near, far if self.far_due(slack) else None),
                       "near": (near,), "far": (far,)}[scope]
            windows = tuple(w for w in windows if w is not None)
            began = self._polled_at = self.clock()
            try:
                report = self._poll(windows)
            except KiviCareError as exc:
                self.rt.set_state("poll", {"ok": False, "at": utcnow().isoformat(), "error": str(exc)[:300]})
                raise
            if far is None or far in windows:
                self._far_listed_at = began  # measured from the start: the list shows KiviCare as of then
            self.rt.set_state("poll", {"ok": True, "at": utcnow().isoformat(), "error": "",
                                       "windows": list(report.windows)})
            return report

    def _poll(self, windows: tuple[PollWindow, ...]) -> PollReport:
        self._held_deletes: dict[int, list[tuple[str, int]]] = {}  # the mass-delete guard's holding pen
        try:
            if not windows:  # "far" asked while the near window covers the whole horizon
                return PollReport()
            # Near first, then far, each its own listing: the next days' changes (and, on a first sync, the
            # next days' appointments) never wait behind months of rows; a far listing costs one more fixed
            # part (~0.07 s) every bridge.far_poll_seconds.
            report = PollReport()
            for n, window in enumerate(windows):
                report.add(self._poll_window(window.start, window.end, first=n == 0, last=n == len(windows) - 1,
                                             name=window.name))
            report.windows = tuple(w.name for w in windows)
            return report
        finally:
            held, self._held_deletes = self._held_deletes, None
            self._release_or_hold(held)

    def _poll_window(self, start: datetime, end: datetime, *, first: bool = True, last: bool = True,
                     name: str = "") -> PollReport:
        """List appointments starting in ``[start, end)`` (UTC, whole days), plan them, and confirm the rows
        known in that span that the list no longer shows. Rows outside the span are left alone.

        Listed in pages of ``bridge.list_page_size`` rows, the next page asked while this one is planned, so the
        first pushes of a large first sync start after one page instead of the whole list. A page that fails
        fails the poll: the pages before it are planned (they are what KiviCare said), but nothing is taken
        for deleted, since only a whole listing shows what is missing."""
        report = PollReport()
        client = self.rt.kivicare()
        state = _Listing(client=client, connections=self._connections(), token=self._plan_inputs(),
                         quiet_before=self._quiet.get(name, {}))
        # A first sync (no row of this span known yet) starts with a page of FIRST_SYNC_PAGE rows and grows them,
        # so the first events reach Google after ~0.4 s of KiviCare's time instead of a whole page's ~3 s.
        known = AppointmentRow.select(AppointmentRow.id).where(
            (AppointmentRow.start_utc >= start) & (AppointmentRow.start_utc < end)).exists()
        pages = client.list_appointment_pages(start.date(), (end - timedelta(days=1)).date(), self.page_size(),
                                              start_size=0 if known else FIRST_SYNC_PAGE)
        for page in prefetched(pages):
            self._plan_page(page, state, report)
        self._quiet[name] = state.quiet_now  # replaced whole: rows gone from the window are forgotten
        seen, rejected_ids, connections = state.seen, state.rejected_ids, state.connections
        if first:  # once per poll, so no deletion is held twice
            report.enqueued += self._plan_leftovers(connections)
        # Rows we knew in the span listed that the list no longer shows: ask KiviCare before acting. Only
        # this span: a row of a window not listed now is not missing. Materialised: SQLite refuses writes
        # made while a read is still open on this connection.
        # Ids first: the whole rows only of those missing (an idle poll reads no row it does not need).
        missing_ids = [i for (i,) in AppointmentRow.select(AppointmentRow.id).where(
            AppointmentRow.present & (AppointmentRow.start_utc >= start) & (AppointmentRow.start_utc < end)).tuples()
            if i not in seen and i not in rejected_ids]
        missing = [row for n in range(0, len(missing_ids), PlanContext.CHUNK) for row in AppointmentRow.select().where(
            AppointmentRow.id.in_(missing_ids[n:n + PlanContext.CHUNK]))]

        def confirm(row: AppointmentRow) -> tuple[datetime, Appointment | None, Exception | None]:
            """``GET /appointments/{id}`` for one missing row: (when asked, the detail or None, 404/bad)."""
            asked_at = utcnow()
            try:
                return asked_at, client.get_appointment(row.id), None
            except (KiviCareNotFound, BadAppointment) as exc:
                return asked_at, None, exc

        # A few at once (a deletion waits for the poll's end, where the mass-delete guard looks). Another
        # KiviCare error fails the whole poll before any row is acted on, as a failed list does.
        answers = _in_pool(confirm, missing, workers=CONFIRM_CONCURRENCY, name="confirm")
        # Deleting a doctor deletes their appointments without hooks: each doctor with a row KiviCare no longer
        # knows is checked first (``GET /doctors/{id}``, a few at once), so a removed doctor's events are left
        # for the admin, not deleted one by one.
        gone_doctors = list(dict.fromkeys(row.doctor_id for row, (_a, _d, problem) in zip(missing, answers)
                                          if isinstance(problem, KiviCareNotFound)))
        _in_pool(self.refresh_doctor, gone_doctors, workers=CONFIRM_CONCURRENCY, name="confirm")
        removed = {doctor for (doctor,) in Connection.select(Connection.doctor).where(
            Connection.doctor.in_(gone_doctors) & (Connection.state == "removed")).tuples()} if gone_doctors else set()
        for row, (asked_at, detail, problem) in zip(missing, answers):
            report.missing_checked += 1
            if isinstance(problem, KiviCareNotFound):
                if row.doctor_id in removed:
                    continue
                report.deleted += 1
                AppointmentRow.update(present=False, last_seen_at=asked_at).where(AppointmentRow.id == row.id).execute()
                log_sync("deleted-in-kivicare", "ok", doctor_id=row.doctor_id, appointment_id=row.id)
                report.enqueued += self._plan_deleted(row, connections)
                continue
            if isinstance(problem, BadAppointment):
                self._reject(row.id, "", problem.problem)
                continue
            # Still there (moved out of the window, or hidden from the list: e.g. an anonymised patient).
            cached = Appointment.from_dict(row.data)
            detail = replace(detail, clinic_address=detail.clinic_address or cached.clinic_address)
            appointment = self._with_services(detail, detail.service_mapping_ids or ())
            if self._remember(appointment, list_hash=row.list_hash, before=row, observed_at=asked_at):
                report.enqueued += self._plan(appointment, connections)
        active = [c.id for c in connections.values() if c.state == "active" and not c.awaiting_confirmation]
        if active and last:  # the poll's last window listed: the connections are in sync as of now
            Connection.update(last_sync_at=utcnow()).where(Connection.id.in_(active)).execute()
        return report

    def _plan_leftovers(self, connections: dict[int, Connection]) -> int:
        """Deletions KiviCare confirmed earlier whose events are still there (the process stopped before the
        deletion was queued), planned again so nothing decided only in memory is lost. Returns jobs enqueued."""
        enqueued = 0
        leftovers = list(AppointmentRow.select().join(MeetMapping, on=(MeetMapping.appointment_id == AppointmentRow.id))
                         .where(~AppointmentRow.present & (MeetMapping.state == "active")).distinct())
        # ... and upcoming ones whose insert answer was lost (Google may hold an event no mapping knows of).
        leftovers += [row for row in AppointmentRow.select().join(
            PendingWrite, on=(PendingWrite.appointment_id == AppointmentRow.id)).where(
            ~AppointmentRow.present & (AppointmentRow.start_utc > self.clock())).distinct()
            if row.id not in {r.id for r in leftovers}]
        for row in leftovers:
            enqueued += self._plan_deleted(row, connections)
        return enqueued

    def _plan_page(self, page: AppointmentPage, state: "_Listing", report: PollReport) -> None:
        """Store and plan one page of a listing (``_poll_window``); ``state`` carries what the poll's pages share."""
        client, connections = state.client, state.connections
        listed_at = page.asked_at or utcnow()  # rows observed after this (hints, applied moves) are newer than it
        report.listed += len(page.appointments)
        rejected_ids = state.rejected_ids
        rejected_ids.update(appointment_id for appointment_id, _, _ in page.rejected if appointment_id)
        for appointment_id, digest, problem in page.rejected:
            self._reject(appointment_id, digest, problem)
        report.rejected += len(page.rejected)
        # A row shifted onto the next page meanwhile (a booking) comes twice: the first one counts.
        listed_rows = [listed for listed in page.appointments if listed.id not in state.seen]
        context = PlanContext.load([listed.id for listed in listed_rows],
                                   [push_key(listed.id, connections[listed.doctor_id].id)
                                    for listed in listed_rows if listed.doctor_id in connections])
        # (appointment, stored row, unchanged, its plan's inputs when unchanged)
        todo: list[tuple[Appointment, AppointmentRow | None, bool, tuple | None]] = []
        for listed in listed_rows:
            state.seen.add(listed.id)
            quiet = None
            if listed.clinic_address:
                self._clinic_addresses[listed.clinic_id] = listed.clinic_address
            cached = context.rows.get(listed.id)
            if cached is not None and cached.last_seen_at and cached.last_seen_at > listed_at:
                continue  # known in a newer state than this list shows
            unchanged = False
            if cached and cached.list_hash == listed.row_hash and cached.present:
                connection = connections.get(listed.doctor_id)
                if connection is not None and (cached.data or {}).get("service_ids") is not None \
                        and push_key(listed.id, connection.id) in context.queued:
                    continue  # unchanged, and its push is waiting or running: it will write the current state
                quiet = self._quiet_key(cached, connection, context, state.token)
                if state.quiet_before.get(listed.id) == quiet:
                    state.quiet_now[listed.id] = quiet
                    continue  # planned before from these very inputs, and nothing was to be done
                appointment = Appointment.from_dict(cached.data)
                unchanged = appointment.service_ids is not None  # else resolved now, and remembered
                if not unchanged:
                    appointment = self._with_services(appointment, appointment.service_mapping_ids or ())
            else:
                # Named by the row itself when its names are unambiguous; else one detail read. The mapping
                # list is re-read (if older than 30 s) once per poll that meets new rows, so a service added
                # since cannot be mistaken for an older one of the same name.
                if not state.mappings_fresh:
                    self._doctor_services(unknown=True)
                    state.mappings_fresh = True
                mapping_ids = self._mapping_ids_by_name(listed)
                if mapping_ids is None:
                    try:
                        mapping_ids = client.get_service_ids(listed.id)
                    except KiviCareNotFound:
                        continue  # deleted between the list and now; the next poll confirms it
                    except BadAppointment as exc:
                        self._reject(listed.id, listed.row_hash, exc.problem)
                        rejected_ids.add(listed.id)
                        continue
                    report.fetched += 1
                appointment = self._with_services(listed, mapping_ids)
            todo.append((appointment, cached, unchanged, quiet if unchanged else None))
        # Written in chunks of PLAN_CHUNK rows, one transaction each when any row changed: one commit per chunk
        # instead of two per row (a first sync of 10,000 rows spent ~85 s in commits on SQLite). Changed rows
        # first: their jobs are committed and the workers woken before the unchanged rows are checked.
        # Each chunk is planned before its transaction (what each row's write is, which jobs it asks for), so
        # the transaction only runs statements: SQLite's write lock (BEGIN IMMEDIATE) is held a third as long,
        # and the workers recording Google's answers meanwhile are not starved of it.
        todo.sort(key=lambda item: item[2])
        for n in range(0, len(todo), PLAN_CHUNK):
            planned = []
            for appointment, cached, unchanged, quiet in todo[n:n + PLAN_CHUNK]:
                row = None if unchanged else self._row_write(appointment, before=cached, observed_at=listed_at)
                calls: list[Callable[[], int]] = []
                self._plan(appointment, connections, context=context, later=calls)
                planned.append((appointment, row, calls, quiet))
            with (transaction() if any(row is not None for _a, row, _c, _q in planned) else nullcontext()):
                for appointment, row, calls, quiet in planned:
                    if appointment.id in context.rejected:
                        RejectedRow.delete().where(RejectedRow.appointment_id == appointment.id).execute()
                    # An unchanged row is not written again (an idle poll writes nothing); a row stored in a
                    # newer state meanwhile is left as it is, and not planned from this older list.
                    if row is not None and not self._store_row(row):
                        continue
                    enqueued = sum(call() for call in calls)
                    report.enqueued += enqueued
                    if quiet is not None and not enqueued:
                        state.quiet_now[appointment.id] = quiet
            if report.enqueued:
                self.rt.work_available.set()  # the chunk's jobs are committed now: workers may take them

    def _plan_inputs(self) -> tuple:
        """What every row's plan depends on besides the row, its mappings and its jobs: the sync settings
        (texts, colours, direction, filters, telemedicine …), the site and its timezone. Read once per listing."""
        return (tuple(repr(self.cfg.get(s.name)) for s in SETTINGS if s.section == "sync"), self.site,
                self.site_timezone())

    def _quiet_key(self, cached: AppointmentRow, connection: Connection | None, context: PlanContext,
                   token: tuple) -> tuple:
        """Every input of ``_plan`` for an unchanged row: when a row comes again with the same key, planning it
        again would find the same nothing to do (a plan of an unchanged row depends on the clock only
        through "delete a future cancelled one", which the passing time turns into "keep", never into work).
        So an idle poll of thousands of rows does not parse, decide and hash each one again."""
        appointment_id = cached.id
        mappings = tuple((m.id, m.connection_id, m.calendar_id, m.pushed_hash, m.hangout_link, m.conference_status)
                         for m in context.mappings.get(appointment_id, []))
        where = None if connection is None else (connection.id, connection.calendar_id, connection.state,
                                                 connection.awaiting_confirmation)
        return (cached.list_hash, cached.last_seen_at, where, mappings, appointment_id in context.pending_ids,
                appointment_id in context.open_conflicts, token, self.doctor_timezone(cached.doctor_id))

    def _with_services(self, appointment: Appointment, mapping_ids: tuple[int, ...]) -> Appointment:
        return appointment.with_services(tuple(mapping_ids), self._service_ids(tuple(mapping_ids)))

    _UNREAD = object()

    def _remember(self, appointment: Appointment, list_hash: str | None = None, before=_UNREAD, *,
                  observed_at: datetime) -> bool:
        """Store what KiviCare said of ``appointment`` when asked at ``observed_at`` (UTC: the time the list or
        detail request was sent; ``before``: its row as already read, or None if new).

        Returns False, writing nothing, when the stored row was observed later: a hint's fetch or a doctor's
        move applied while an older list was being planned is newer than that list (``last_seen_at`` holds
        the observation time), and must not be overwritten by it.
        """
        if before is Bridge._UNREAD:
            before = AppointmentRow.get_or_none(AppointmentRow.id == appointment.id)
        return self._store_row(self._row_write(appointment, list_hash, before=before, observed_at=observed_at))

    def _row_write(self, appointment: Appointment, list_hash: str | None = None, *, before: AppointmentRow | None,
                   observed_at: datetime) -> tuple:
        """What ``_store_row`` writes for ``appointment`` (no statement): ``(id, new, now, column values)``."""
        now = utcnow()
        # changed_at: when the sidecar saw KiviCare's change (the "most recent" rule); None keeps the stored one
        changed_at = now if before is None or Appointment.from_dict(before.data) != appointment else None
        values = (appointment.doctor_id, appointment.start, appointment.end, appointment.status,
                  list_hash or appointment.row_hash, appointment.to_dict(), True, observed_at, changed_at)
        return appointment.id, before is None, now, values

    def _store_row(self, write: tuple) -> bool:
        """Run a ``_row_write``: insert a new row, or update one not observed later. False: nothing written."""
        appointment_id, new, now, values = write
        if new:
            try:
                with database.atomic():  # a savepoint inside a transaction: PostgreSQL aborts it on the error
                    _INSERT_ROW.run(appointment_id, now, *values)
                return True
            except IntegrityError:
                pass  # stored meanwhile (a hint's fetch): the guarded update below decides
        return bool(_UPDATE_ROW.run(appointment_id, *values))

    def _reject(self, appointment_id: str, digest: str, problem: str) -> None:
        """Log a malformed row once (per content), keep its existing event, carry on."""
        key = appointment_id or f"?{digest[:16]}"
        existing = RejectedRow.get_or_none(RejectedRow.appointment_id == key)
        if existing and existing.row_hash == digest:
            RejectedRow.update(last_seen_at=utcnow()).where(RejectedRow.appointment_id == key).execute()
            return
        (RejectedRow.insert(appointment_id=key, row_hash=digest, error=problem)
         .on_conflict(conflict_target=[RejectedRow.appointment_id],
                      update={RejectedRow.row_hash: digest, RejectedRow.error: problem,
                              RejectedRow.last_seen_at: utcnow()}).execute())
        log.warning("skipped KiviCare appointment %s: %s (its calendar event is left as it is)", key, problem)
        log_sync("read-appointment", "skipped", appointment_id=appointment_id, message=problem)

    def _connections(self) -> dict[int, Connection]:
        """Connections that receive events, by doctor id (active, or waiting for a reconnect)."""
        rows = Connection.select().where(Connection.state.in_(("active", "needs_reconnect"))
                                         & Connection.calendar_id.is_null(False))
        return {row.doctor_id: row for row in rows}

    def _plan(self, appointment: Appointment, connections: dict[int, Connection], *, revive: bool = False,
              context: PlanContext | None = None, later: list[Callable[[], int]] | None = None) -> int:
        """Enqueue a push wherever the event differs from what Google confirmed. Returns jobs enqueued.

        Nothing is pushed under the "Google → KiviCare only" direction, or while the admin has an open
        conflict about the appointment. A push that was given up stays so while the event to write is the
        same (``jobs.enqueue``'s ``change``: the event's fingerprint), unless ``revive`` (a hint).

        ``later``: the enqueues are appended to it (each returns what it enqueued) instead of run, and 0 is
        returned: the caller runs them in its transaction (``_plan_page``).
        """
        def job(enqueue: Callable[..., int], *args, **kwargs) -> int:
            if later is None:
                return enqueue(*args, **kwargs)
            later.append(functools.partial(enqueue, *args, **kwargs))
            return 0

        enqueued = 0
        if self.cfg.get("sync.direction") == "google_to_kivicare":
            return 0
        if context is None:
            context = PlanContext.load([appointment.id])
        if appointment.id in context.open_conflicts:
            return 0
        connection = connections.get(appointment.doctor_id)
        mappings = context.mappings.get(appointment.id, [])
        # A mapping in another doctor's calendar (the appointment changed doctor) must go.
        for mapping in mappings:
            if connection is None or mapping.connection_id != connection.id:
                if mapping.connection_id is not None:
                    enqueued += job(self._enqueue_push, appointment.id, mapping.connection_id, change="delete")
        if connection is None or connection.awaiting_confirmation:  # held until the preview is confirmed
            return enqueued
        mapping = next((m for m in mappings if m.connection_id == connection.id
                        and m.calendar_id == connection.calendar_id), None)
        decision = self.decide(appointment, connection, mapping)
        if decision.action == "upsert":
            fingerprint = decision.spec.fingerprint()  # once: every listed row of every poll comes through here
            if (mapping is None or mapping.pushed_hash != fingerprint
                    or (appointment.id, connection.calendar_id) in context.pending) \
                    and (revive or context.queued.get(push_key(appointment.id, connection.id), "") != fingerprint):
                # (Not asked again when that very version is already waiting: a poll during a long first sync.)
                enqueued += job(self._enqueue_push, appointment.id, connection.id, change=fingerprint, revive=revive)
        elif decision.action == "delete" and (mapping is not None or (
                appointment.id in context.pending_ids
                and pending_writes.unconfirmed_inserts(appointment.id, connection.id))):
            enqueued += job(self._enqueue_delete, appointment.id, appointment.start, connection)
        return enqueued

    def _plan_deleted(self, row: AppointmentRow, connections: dict[int, Connection]) -> int:
        enqueued = 0
        # Connections with an event of this appointment, or with an insert whose answer never came.
        owners = [m.connection_id for m in MeetMapping.select().where((MeetMapping.appointment_id == row.id)
                                                                     & (MeetMapping.state == "active"))]
        owners += [p.connection_id for p in pending_writes.unconfirmed_inserts(row.id)]
        for connection_id in dict.fromkeys(owners):
            connection = Connection.get_or_none(Connection.id == connection_id) if connection_id else None
            if connection is not None:
                enqueued += self._enqueue_delete(row.id, row.start_utc, connection)
        return enqueued

    def _enqueue_delete(self, appointment_id: str, start: datetime, connection: Connection) -> int:
        """Deleting a future event waits for the end of the poll, where the mass-delete guard looks."""
        held = getattr(self, "_held_deletes", None)
        if held is not None and start > self.clock():
            held.setdefault(connection.id, []).append((appointment_id, connection.doctor_id))
            return 1
        return self._enqueue_push(appointment_id, connection.id, change="delete")

    def _release_or_hold(self, held: dict[int, list[tuple[str, int]]] | None) -> None:
        """Enqueue the poll's deletions, unless one doctor would lose an abnormal share of upcoming events
        at once (a KiviCare list gone wrong, a bulk delete): then nothing is deleted and the admin decides."""
        share = int(self.cfg.get("sync.mass_cancel_share"))
        now = self.clock()
        for connection_id, items in (held or {}).items():
            doctor_id = items[0][1]
            upcoming = (MeetMapping.select().join(AppointmentRow, on=(MeetMapping.appointment_id == AppointmentRow.id))
                        .where((MeetMapping.connection == connection_id) & (MeetMapping.state == "active")
                               & (AppointmentRow.start_utc > now)).count())
            if len(items) >= 3 and len(items) * 100 > share * max(upcoming, 1):
                if not Conflict.select().where((Conflict.kind == "mass_delete") & (Conflict.state == "open")
                                               & (Conflict.connection == connection_id)).exists():
                    Conflict.create(kind="mass_delete", doctor_id=doctor_id, connection=connection_id,
                                    kivicare={"appointments": [a for a, _ in items], "upcoming": upcoming},
                                    google={"events": upcoming},
                                    message=f"KiviCare no longer shows {len(items)} of this doctor's {upcoming} "
                                            f"upcoming appointments at once. Their events were kept in Google.")
                    log.warning("mass-delete guard: doctor %s, %d deletions held for the admin", doctor_id, len(items))
                    log_sync("mass-delete-guard", "skipped", doctor_id=doctor_id,
                             message=f"{len(items)} deletions held for the admin")
                continue
            for appointment_id, _ in items:
                self._enqueue_push(appointment_id, connection_id, change="delete")

    def _enqueue_push(self, appointment_id: str, connection_id: int, run_after: datetime | None = None, *,
                      change: str | None = None, revive: bool = False) -> int:
        """1 when the push is due; 0 when it was given up and ``change`` (what it would write) is the same."""
        due = int(jobs.enqueue("push", push_key(appointment_id, connection_id),
                               {"appointment_id": appointment_id, "connection_id": connection_id},
                               run_after=run_after, change=change, revive=revive))
        if due and run_after is None:
            self.rt.work_available.set()  # workers start on it now, not when the poll that queued it ends
        return due

    # ---- the desired event ---------------------------------------------------------------------------

    def decide(self, appointment: Appointment | None, connection: Connection,
               mapping: MeetMapping | None, *, deleted: bool = False) -> Decision:
        """What ``connection``'s calendar should hold for ``appointment`` now."""
        now = self.clock()
        if appointment is None:
            return Decision("keep")
        if deleted or appointment.doctor_id != connection.doctor_id:
            if appointment.doctor_id != connection.doctor_id:
                return Decision("delete")
            return Decision("delete") if appointment.start > now else Decision("keep")
        scope = filters.scope_or_unknown(appointment, self.cfg)
        if scope is not filters.Scope.IN:  # outside the admin's services/clinics: treated like a cancellation
            return Decision("delete") if scope is filters.Scope.OUT and appointment.start > now else Decision("keep")
        if appointment.status in EVENT_STATUSES:
            return Decision("upsert", self.spec(appointment, mapping))
        if appointment.status == CANCELLED and appointment.start > now:
            return Decision("delete")
        return Decision("keep")  # past and cancelled: KiviCare's cron closes past bookings this way

    def is_telemedicine(self, appointment: Appointment) -> bool:
        chosen = {int(s) for s in self.cfg.get("sync.telemedicine_services") if str(s).strip().isdigit()}
        return bool(chosen and appointment.service_ids and chosen.intersection(appointment.service_ids))

    def link_in_text(self) -> bool:
        """Whether events carry the Meet link in their text too (``sync.meet_link_in_text``, or a template
        using ``{{meet_link}}``). Otherwise the link lives in the event's conferenceData / hangoutLink only,
        which Google shows as a Join button and puts in invitations: no second write per event."""
        templates = (self.cfg.get("sync.title_template") or "", self.cfg.get("sync.description_template") or "")
        return bool(self.cfg.get("sync.meet_link_in_text")) or any(
            m.group(1) == "meet_link" for t in templates for m in event_text.PLACEHOLDER.finditer(t))

    def spec(self, appointment: Appointment, mapping: MeetMapping | None) -> EventSpec:
        """The provider-neutral event for ``appointment`` under the current settings."""
        zone = self.doctor_timezone(appointment.doctor_id)
        telemedicine = self.is_telemedicine(appointment)
        link = mapping.hangout_link if (mapping is not None and telemedicine and self.link_in_text()) else ""
        title, description, where = event_text.texts(
            appointment, zone, fmt=self.cfg.get("sync.event_template"),
            title_template=self.cfg.get("sync.title_template"),
            description_template=self.cfg.get("sync.description_template"), meet_link=link,
            privacy=bool(self.cfg.get("sync.privacy_mode")))
        colors = self.cfg.get("sync.status_colors") or {}
        reminders = [int(m) for m in self.cfg.get("sync.reminder_minutes") if str(m).strip().isdigit()]
        invite = (self.cfg.get("sync.invite_patients") and appointment.patient_email
                  and not self.cfg.get("sync.privacy_mode"))  # privacy mode: no patient address in Google
        return EventSpec(appointment_id=appointment.id, start=appointment.start, end=appointment.end, timezone=zone,
                         title=title, description=description, location=where,
                         tentative=appointment.status == PENDING, color_id=colors.get(str(appointment.status)),
                         telemedicine=telemedicine, attendee_email=appointment.patient_email if invite else None,
                         reminder_minutes=tuple(reminders[:5]) if reminders else None)

    # ---- workers: jobs → Google → mapping table -------------------------------------------------------

    def run_due_jobs(self, worker: str | None = None, limit: int | None = None,
                     stop: threading.Event | None = None) -> int:
        """Run due jobs until none is due (or ``limit``, or ``stop`` is set: the job in hand is finished, no
        other is claimed). Returns how many ran. Never raises for a job.

        A ``push`` job claims up to ``google.batch_size - 1`` more due pushes of the same connection, whose
        Google writes then go in one batch request (``run_push_batch``); 1 = one request per job."""
        worker = worker or jobs.worker_id(threading.current_thread().name)
        done = 0
        while (limit is None or done < limit) and not (stop is not None and stop.is_set()):
            job = jobs.claim(worker)
            if job is None:
                return done
            more = []
            if job.kind == "push":
                room = self.batch_size() - 1 if limit is None else min(self.batch_size(), limit - done) - 1
                connection_id = int((job.payload or {}).get("connection_id") or 0)
                more = jobs.claim_many(worker, room, kinds=("push",),
                                       where=jobs.of_connection(connection_id) & (Job.id != job.id))
            if more:
                self.run_push_batch([job, *more])
            else:
                self.run_job(job)
            done += 1 + len(more)
        return done

    def batch_size(self) -> int:
        """``google.batch_size``: Google writes sent in one batch request, 1 … ``MAX_BATCH_CALLS`` (1000)."""
        return max(1, min(MAX_BATCH_CALLS, int(self.cfg.get("google.batch_size"))))

    def _job_connection(self, job: Job, connection: Connection | None | object = None) -> Connection | None:
        """The connection a ``push``/``conference`` job writes to, or None when the job was settled here:
        completed (nothing to write) or put back without counting (reconnect or first-sync confirmation).

        ``connection``: the row when the caller read it already (``run_push_batch``, once per batch); ``NOT_FOUND``
        when it read none."""
        if connection is NOT_FOUND:
            connection = None
        elif connection is None:
            connection = Connection.get_or_none(Connection.id == (job.payload or {}).get("connection_id"))
        if connection is None or connection.state not in ("active", "needs_reconnect") \
                or not connection.calendar_id:
            jobs.complete(job)  # disconnected, removed, or no calendar chosen: nothing to write
            return None
        if connection.state == "needs_reconnect":
            # Kept, not tried: the doctor must reconnect first (on_connected makes it due again).
            jobs.retry_later(job, timedelta(minutes=30), "waiting for the doctor to reconnect Google",
                             counts=False)
            return None
        if connection.awaiting_confirmation:  # kept until the first-sync preview is confirmed
            jobs.retry_later(job, timedelta(minutes=30), "waiting for the first-sync confirmation",
                             counts=False)
            return None
        return connection

    def run_push_batch(self, batch: list[Job]) -> None:
        """Run claimed ``push`` jobs of one connection with their Google writes in one batch request.

        Each job is prepared as a single push is (``_prepare_push``: its reads, decisions and pending
        write, committed before anything is sent); the writes go in ``GoogleCalendar.upsert_many``; each
        job is then finished with its own answer (``_finish_push``) or its error handled as ``run_job``
        handles it (``_job_failed``), so one item's failure never touches the others.

        Read once for the whole batch: the connection row and its Google client. Written once for the
        whole batch: the connection's counters and the sync log (``PushTally``) and the completed jobs
        (``jobs.complete_many``); each mapping is still recorded with its pending write cleared in its own
        transaction, so a crash mid-batch loses no answer Google gave (only counters and log rows)."""
        connection_id = int((batch[0].payload or {}).get("connection_id") or 0)
        row = Connection.get_or_none(Connection.id == connection_id)
        reads = PushReads.load([str((job.payload or {}).get("appointment_id", "")) for job in batch],
                               row.calendar_id, row.id) if row is not None and row.calendar_id else None
        google = None
        prepared: list[tuple[Job, PushCall]] = []
        completed: list[Job] = []
        for job in batch:
            connection = self._job_connection(job, row if row is not None else NOT_FOUND)
            if connection is None:
                continue
            appointment_id = str((job.payload or {}).get("appointment_id", ""))
            try:
                google = google or self.rt.google_for(connection)
                call = self._prepare_push(appointment_id, connection, google, reads)
            except Exception as exc:  # handled as run_job would
                self._job_failed(job, connection, appointment_id, exc)
                row = Connection.get_or_none(Connection.id == connection_id)  # e.g. now waiting for a reconnect
                continue
            if call is None:
                completed.append(job)
            else:
                prepared.append((job, call))
        if not prepared:
            jobs.complete_many(completed)
            return
        try:
            answers = prepared[0][1].google.upsert_many([call.upsert for _, call in prepared])
        except Exception as exc:  # upsert_many answers per item; anything else is a bug, shared by every job
            log.exception("a batch of %d pushes failed unexpectedly", len(prepared))
            answers = [exc] * len(prepared)
        tally = PushTally(connection_id)
        for (job, call), answer in zip(prepared, answers):
            try:
                if isinstance(answer, BaseException):
                    raise answer
                self._finish_push(call, answer, tally)
            except Exception as exc:  # handled as run_job would
                tally.flush()
                self._job_failed(job, call.connection, call.appointment_id, exc)
            else:
                completed.append(job)
        tally.flush()
        jobs.complete_many(completed)

    def run_job(self, job: Job) -> None:
        """Run one claimed job; decides retry, reconnect or give-up from the error's kind (``_job_failed``).

        Kinds: ``push`` and ``conference`` (per appointment and connection, against the calendar),
        ``fetch`` (one appointment from KiviCare, after a hint), ``meet_link`` (to the companion plugin).
        """
        payload = job.payload or {}
        appointment_id = str(payload.get("appointment_id", ""))
        connection = None
        if job.kind in ("push", "conference"):
            connection = self._job_connection(job)
            if connection is None:
                return
        try:
            if job.kind == "push":
                self._push(appointment_id, connection)
            elif job.kind == "conference":
                self._check_conference(appointment_id, connection)
            elif job.kind == "fetch":
                self._fetch(appointment_id)
            elif job.kind == "meet_link":
                self._push_meet_link(appointment_id)
            elif job.kind == "pull":
                target = Connection.get_or_none(Connection.id == payload.get("connection_id"))
                if target is not None and target.state == "active" and not target.awaiting_confirmation:
                    self.pull_connection(target)
            elif job.kind == "busy_push":
                self.inbound.push_busy(int(payload.get("doctor_id", 0)))
            else:
                raise ValueError(f"unknown job kind {job.kind!r}")
        except Exception as exc:  # noqa: BLE001 - every error is handled, by its kind
            self._job_failed(job, connection, appointment_id, exc)
        else:
            jobs.complete(job)

    def _job_failed(self, job: Job, connection: Connection | None, appointment_id: str, exc: Exception) -> None:
        """Retry, reconnect, count a failure or give up, by the kind of ``exc``: for ``run_job`` and for each
        job of a batched push alike. Raising ``exc`` again only picks the clause below that handles it."""
        doctor_id = connection.doctor_id if connection else None
        try:
            raise exc
        except CalendarChanged as exc:
            # Google's copy changed since our last write: read it and apply the rules, then try again.
            delay = timedelta(0) if job.retries < 3 else jobs.backoff(job.retries)
            try:
                self.inbound.recheck(connection, appointment_id)
            except (CalendarError, KiviCareError, CompanionError) as inner:
                log.warning("could not re-read a changed event: %s", inner)
            finally:
                jobs.retry_later(job, delay, str(exc), counts=False)
        except (CalendarUnavailable, KiviCareUnavailable, CompanionUnavailable) as exc:
            # Outages: retried at most a minute apart, so work resumes soon after the other side is back.
            jobs.retry_later(job, jobs.backoff(job.retries, cap=OUTAGE_BACKOFF_CAP), str(exc), counts=False)
            log_sync(job.kind, "retry", doctor_id=doctor_id, appointment_id=appointment_id, error=exc)
        except CalendarRateLimited as exc:
            delay = timedelta(hours=1) if exc.long_pause else jobs.backoff(job.retries, base=10, cap=120)
            jobs.retry_later(job, delay, str(exc), counts=False)
            log_sync(job.kind, "retry", doctor_id=doctor_id, appointment_id=appointment_id, error=exc)
        except CalendarAuthError as exc:
            self._needs_reconnect(connection, exc)
            jobs.retry_later(job, timedelta(minutes=30), str(exc), counts=False)
            log_sync(job.kind, "error", doctor_id=doctor_id, appointment_id=appointment_id, error=exc,
                     message="Google refused this doctor's access. Ask the doctor to reconnect; jobs are kept.")
        except (CalendarError, KiviCareError, CompanionError, BadAppointment, ValueError) as exc:
            self._count_failure(job, connection, appointment_id, exc)
        except Exception as exc:  # a bug must not stop the loop; it is counted and shown
            log.exception("job %s failed unexpectedly", job.id)
            self._count_failure(job, connection, appointment_id, exc)

    def _needs_reconnect(self, connection: Connection, exc: Exception) -> None:
        """Google refused the grant: mark the connection (jobs are kept) and alert the doctor and admins once."""
        changed = Connection.update(state="needs_reconnect", last_error=str(exc)[:300], updated_at=utcnow()).where(
            (Connection.id == connection.id) & (Connection.state != "needs_reconnect")).execute()
        if changed:
            log.warning("doctor %s must reconnect Google: %s", connection.doctor_id, exc)
            doctor = Doctor.get_or_none(Doctor.id == connection.doctor_id)
            alerts.needs_reconnect(self.rt, connection.doctor_id, doctor.name if doctor else "",
                                   doctor.email if doctor else "")

    def _count_failure(self, job: Job, connection: Connection | None, appointment_id: str, exc: Exception) -> None:
        doctor_id = connection.doctor_id if connection else None
        if connection is not None:
            Connection.update(failed_count=Connection.failed_count + 1, last_error=str(exc)[:300]).where(
                Connection.id == connection.id).execute()
        if job.attempts + 1 >= MAX_ATTEMPTS:
            if jobs.give_up(job, f"{type(exc).__name__}: {exc}"):  # False: a newer change arrived meanwhile
                # Once per give-up: a given-up job runs again only once revived, which bumps its generation.
                alerts.job_given_up(self.rt, doctor_id, appointment_id, f"{type(exc).__name__}: {exc}",
                                    occurrence=f"{job.id}.{job.generation}")
                log_sync(job.kind, "error", doctor_id=doctor_id, appointment_id=appointment_id, error=exc,
                         message=f"Gave up after {MAX_ATTEMPTS} tries: {exc}")
        else:
            jobs.retry_later(job, jobs.backoff(job.retries, base=30), f"{type(exc).__name__}: {exc}", counts=True)
            log_sync(job.kind, "retry", doctor_id=doctor_id, appointment_id=appointment_id, error=exc)

    def _push(self, appointment_id: str, connection: Connection) -> None:
        """One ``push`` job on its own: prepare, one Google write, record the answer."""
        call = self._prepare_push(appointment_id, connection)
        if call is None:
            return
        u = call.upsert
        state = call.google.upsert_event(u.calendar_id, u.event_id, u.body, known=u.known,
                                         send_updates=u.send_updates, changes=u.changes, if_match=u.if_match)
        self._finish_push(call, state)

    def _prepare_push(self, appointment_id: str, connection: Connection,
                      google: GoogleCalendar | None = None, reads: PushReads | None = None) -> PushCall | None:
        """Everything of a push before its Google write: reads, the decision, stale and unconfirmed
        cleanups (deletes, sent singly), and ``pending_writes.record`` committed before the write is sent.
        Returns the write to make, or None when nothing is left to write. Raises our named errors.

        ``google``: the connection's client when the caller has one (a batch shares it). ``reads``: what a
        batch read for all its pushes at once (``PushReads.load``), used when it covers this push (the
        connection's calendar unchanged); else read here (``PushReads.one``): the appointment row, its
        mappings (this calendar's and stale ones), its pending writes and open conflict."""
        calendar_id = connection.calendar_id
        if reads is None or not reads.cover(appointment_id, calendar_id, connection.id):
            reads = PushReads.one(appointment_id, calendar_id, connection.id)
        row = reads.rows.get(appointment_id)
        appointment = Appointment.from_dict(row.data) if row else None
        mapping, stale = None, []
        # This calendar's mapping, and any event left in a calendar the doctor no longer uses.
        for found in reads.mappings.get(appointment_id, []):
            if found.calendar_id == calendar_id:
                mapping = found
            else:
                stale.append(found)
        decision = self.decide(appointment, connection, mapping, deleted=bool(row and not row.present))
        for old in stale:
            google = google or self.rt.google_for(connection)
            pending_writes.record(appointment_id, connection.id, old.calendar_id, old.event_id, "delete")
            google.delete_event(old.calendar_id, old.event_id)
            self._mark_deleted(old, connection, "moved-calendar")
        # As read, or read again after stale events went (their rows are cleared then): below, only other
        # calendars' rows are cleared, so this calendar's row (``current``) stays as read here.
        pending_rows = pending_writes.of_appointment(appointment_id) if stale else reads.pending.get(appointment_id, [])
        inserts = pending_writes.inserts_among(pending_rows, connection.id)
        current = next((p for p in pending_rows if p.calendar_id == calendar_id), None)
        # Inserts whose answer never came, in a calendar the doctor no longer uses.
        for pending in inserts:
            if pending.calendar_id != calendar_id:
                google = google or self.rt.google_for(connection)
                self._remove_unconfirmed(pending, connection, google)
        if decision.action == "keep":
            return None
        if mapping is not None and mapping.state == "dismissed":
            pending_writes.clear(appointment_id, calendar_id)  # the event is the doctor's to keep or delete
            return None
        if appointment_id in reads.conflicts:
            return None  # the admin decides first
        if decision.action == "delete":
            if mapping is None or mapping.state != "active":
                # No event we know of, but an insert may have landed unseen (its answer was lost, or the
                # process died before the commit): remove it by its id, or it stays in Google for good.
                for pending in inserts:
                    if pending.calendar_id == calendar_id:
                        google = google or self.rt.google_for(connection)
                        self._remove_unconfirmed(pending, connection, google)
                return None
            if mapping.connection_id != connection.id:
                pending_writes.clear(appointment_id, calendar_id)  # another connection's event: not ours to remove
                return None
            google = google or self.rt.google_for(connection)
            pending_writes.record(appointment_id, connection.id, mapping.calendar_id, mapping.event_id, "delete",
                                  current=current)
            google.delete_event(mapping.calendar_id, mapping.event_id)
            self._mark_deleted(mapping, connection, "delete")
            return None
        spec = decision.spec
        # Nothing to do when Google confirmed this very version, unless a later write is still unconfirmed
        # (it may have landed: the event may hold another version, or be deleted).
        if mapping is not None and mapping.state == "active" and mapping.pushed_hash == spec.fingerprint() \
                and current is None:
            return None
        google = google or self.rt.google_for(connection)
        event_id = mapping.event_id if mapping else event_id_for(self.site, appointment_id, calendar_id)
        has_conference = mapping is not None and mapping.conference_status in ("pending", "success")
        create_conference = spec.telemedicine and not has_conference
        request_id = (mapping.conference_request if mapping and mapping.conference_request else f"{event_id}-meet")
        if create_conference and mapping is not None and mapping.conference_status == "failure":
            request_id = f"{event_id}-meet{int(time.time())}"  # a new id asks Google to try again
        body = event_body(spec, self.site, create_conference=create_conference, request_id=request_id,
                          drop_conference=has_conference and not spec.telemedicine)
        send_updates = "all" if spec.attendee_email else "none"
        known = mapping is not None and mapping.state == "active"
        changes = None
        if known and mapping.pushed_body:
            # Only what changed since our last write, so a doctor's own colour or reminders survive;
            # status always, so an event the doctor deleted in Google comes back.
            changes = {k: v for k, v in body.items()
                       if k in ("status", "conferenceData") or mapping.pushed_body.get(k) != v}
            if "attendees" in mapping.pushed_body and "attendees" not in body:
                changes["attendees"] = []  # the patient we invited goes (privacy mode, invitations off)
        pushed_body = {k: v for k, v in body.items() if k != "conferenceData"}
        # Committed before the call: if the answer is lost or we die before the commit below, a pull still
        # knows this write as ours, and a later removal knows an event may exist (pending_writes).
        pending_writes.record(appointment_id, connection.id, calendar_id, event_id, "write", pushed_body,
                              current=current)
        # If-Match: a doctor's edit in Google since our last write is never silently overwritten (412 →
        # pull first, then decide by direction and conflict rule).
        return PushCall(appointment_id, connection, spec, mapping, request_id, pushed_body, google,
                        Upsert(calendar_id, event_id, body, known, send_updates, changes,
                               mapping.etag if known and mapping.etag else None))

    def _finish_push(self, call: PushCall, state: EventState, tally: PushTally | None = None) -> None:
        """Record Google's answer to a prepared push: the mapping, pending write cleared, counters and sync-log
        row in one transaction, then a conference re-check, the Meet link to KiviCare and the event.

        ``tally`` (a batch): the counters and the log row are left to it, written once for the batch."""
        appointment_id, connection, spec, mapping = call.appointment_id, call.connection, call.spec, call.mapping
        calendar_id, event_id, request_id, pushed_body = (call.upsert.calendar_id, call.upsert.event_id,
                                                          call.request_id, call.pushed_body)
        now = utcnow()
        conference_status = state.conference_status if spec.telemedicine else ""
        link = state.hangout_link if spec.telemedicine else ""
        values = dict(doctor_id=connection.doctor_id, connection=connection.id, event_id=state.event_id or event_id,
                      etag=state.etag, hangout_link=link, conference_status=conference_status,
                      conference_request=request_id if spec.telemedicine else "", pushed_hash=spec.fingerprint(),
                      pushed_body=pushed_body, google_updated=state.updated, state="active", updated_at=now)
        action = "update" if (mapping is not None and mapping.state == "active") else "create"
        with transaction():
            _UPSERT_MAPPING.run(appointment_id, calendar_id, now, **values)
            pending_writes.clear(appointment_id, calendar_id)
            if tally is None:  # the log row too: one commit, not two
                Connection.update(synced_count=Connection.synced_count + 1, last_sync_at=now, last_error="").where(
                    Connection.id == connection.id).execute()
                log_sync(action, "ok", doctor_id=connection.doctor_id, appointment_id=appointment_id)
        if tally is not None:
            tally.synced, tally.last_sync_at = tally.synced + 1, now
            tally.logs.append(sync_row(action, "ok", doctor_id=connection.doctor_id, appointment_id=appointment_id))
        if spec.telemedicine and conference_status == "pending":
            jobs.enqueue("conference", f"conference:{appointment_id}:{connection.id}",
                         {"appointment_id": appointment_id, "connection_id": connection.id},
                         run_after=now + CONFERENCE_RECHECK)
        previous_link = mapping.hangout_link if (mapping is not None and mapping.state == "active") else ""
        if link != previous_link:
            self._enqueue_meet_link(appointment_id)
        if link and link != previous_link:
            log_sync("meet-link", "ok", doctor_id=connection.doctor_id, appointment_id=appointment_id)
            if self.link_in_text():
                self._enqueue_push(appointment_id, connection.id)  # put the link into the description and location

    def _check_conference(self, appointment_id: str, connection: Connection) -> None:
        """A pending Meet conference: read the event again; once ready, store the link and push it."""
        mapping = MeetMapping.get_or_none((MeetMapping.appointment_id == appointment_id)
                                          & (MeetMapping.calendar_id == connection.calendar_id))
        if mapping is None or mapping.state != "active" or mapping.conference_status != "pending":
            return
        state = self.rt.google_for(connection).get_event(mapping.calendar_id, mapping.event_id)
        if state.conference_status == "pending":
            raise CalendarUnavailable("Meet conference still pending")  # retried later, not counted
        MeetMapping.update(conference_status=state.conference_status or "failure", hangout_link=state.hangout_link,
                           etag=state.etag, google_updated=state.updated, updated_at=utcnow()).where(
            MeetMapping.id == mapping.id).execute()
        if state.hangout_link:
            log_sync("meet-link", "ok", doctor_id=connection.doctor_id, appointment_id=appointment_id)
            self._enqueue_meet_link(appointment_id)
        else:
            log_sync("meet-link", "error", doctor_id=connection.doctor_id, appointment_id=appointment_id,
                     message="Google could not create a Meet conference; the sidecar will ask again on the next change")
        self._enqueue_push(appointment_id, connection.id)

    def _remove_unconfirmed(self, pending: PendingWrite, connection: Connection, google) -> None:
        """Delete the event an unconfirmed insert may have created (404/410: it never landed)."""
        google.delete_event(pending.calendar_id, pending.event_id)
        with transaction():
            pending_writes.clear(pending.appointment_id, pending.calendar_id)
            Connection.update(synced_count=Connection.synced_count + 1, last_sync_at=utcnow()).where(
                Connection.id == connection.id).execute()
        log_sync("delete", "ok", doctor_id=connection.doctor_id, appointment_id=pending.appointment_id,
                 message="an event created without a confirmation was removed")

    def _mark_deleted(self, mapping: MeetMapping, connection: Connection, action: str) -> None:
        now = utcnow()
        if mapping.hangout_link:
            self._enqueue_meet_link(mapping.appointment_id)
        with transaction():
            MeetMapping.update(state="deleted", pushed_hash="", updated_at=now).where(MeetMapping.id == mapping.id).execute()
            pending_writes.clear(mapping.appointment_id, mapping.calendar_id)
            Connection.update(synced_count=Connection.synced_count + 1, last_sync_at=now).where(
                Connection.id == connection.id).execute()
        log_sync(action, "ok", doctor_id=connection.doctor_id, appointment_id=mapping.appointment_id)

    # ---- hints and the companion plugin -----------------------------------------------------------

    def on_hint(self, appointment_id: str, event: str = "") -> None:
        """The companion plugin says ``appointment_id`` changed: fetch it now (never trust the hint as data).

        Malformed ids are ignored (a hint is only a reason to look; the poll catches everything anyway).
        """
        appointment_id = str(appointment_id).strip()
        if not appointment_id.isdigit() or len(appointment_id) > 20:
            log.warning("ignored a hint with a malformed appointment id")
            return
        jobs.enqueue("fetch", f"fetch:{appointment_id}", {"appointment_id": appointment_id, "event": event[:60]})
        self.rt.work_available.set()

    def _fetch(self, appointment_id: str) -> None:
        """``GET /appointments/{id}?timezone=UTC`` for one appointment, then plan its events."""
        connections = self._connections()
        row = AppointmentRow.get_or_none(AppointmentRow.id == appointment_id)
        asked_at = utcnow()
        try:
            detail = self.rt.kivicare().get_appointment(appointment_id)
        except KiviCareNotFound:
            if row is not None and row.present:
                AppointmentRow.update(present=False, last_seen_at=asked_at).where(
                    AppointmentRow.id == appointment_id).execute()
                log_sync("deleted-in-kivicare", "ok", doctor_id=row.doctor_id, appointment_id=appointment_id)
                self._plan_deleted(row, connections)
            return
        except BadAppointment as exc:
            self._reject(appointment_id, "", exc.problem)
            return
        # The detail route has no clinic address; the list rows do. Taken from this appointment's last row, or
        # another of its clinic's, so the next poll does not patch the event just to add it.
        cached_address = Appointment.from_dict(row.data).clinic_address if row is not None else ""
        detail = replace(detail, clinic_address=detail.clinic_address or cached_address
                         or self._clinic_addresses.get(detail.clinic_id, ""))
        appointment = self._with_services(detail, detail.service_mapping_ids or ())
        # Keep the list row's hash: the detail is not the list row, and the next poll compares list rows.
        if not self._remember(appointment, list_hash=row.list_hash if row is not None else "hint", before=row,
                              observed_at=asked_at):
            return  # a poll listed it after this read: its state is newer
        if self._plan(appointment, connections, revive=True):  # a hint: someone saved it, so try a given-up push again
            self.rt.work_available.set()

    def _enqueue_meet_link(self, appointment_id: str) -> None:
        if self.rt.companion() is not None:
            jobs.enqueue("meet_link", f"meet:{appointment_id}", {"appointment_id": appointment_id})

    def _push_meet_link(self, appointment_id: str) -> None:
        """Tell the companion plugin the appointment's current Meet link (or that it has none any more)."""
        companion = self.rt.companion()
        if companion is None:
            return
        mapping = (MeetMapping.select().where((MeetMapping.appointment_id == appointment_id)
                                              & (MeetMapping.state == "active") & (MeetMapping.hangout_link != ""))
                   .order_by(MeetMapping.updated_at.desc()).first())
        try:
            if mapping is None:
                companion.remove_meet_link(appointment_id)
                log_sync("meet-link-to-kivicare", "ok", appointment_id=appointment_id, message="removed")
            else:
                companion.set_meet_link(appointment_id, mapping.hangout_link, mapping.event_id, mapping.calendar_id)
                log_sync("meet-link-to-kivicare", "ok", doctor_id=mapping.doctor_id, appointment_id=appointment_id)
        except CompanionNotInstalled:
            log_sync("meet-link-to-kivicare", "skipped", appointment_id=appointment_id,
                     message="The companion plugin is not installed: the Meet link is only in Google.")

    # ---- connections ------------------------------------------------------------------------------

    def on_connected(self, connection: Connection) -> None:
        """A doctor (re)connected or chose a calendar: refresh the doctor, make their kept jobs due, poll."""
        try:
            self.refresh_doctor(connection.doctor_id)
        except KiviCareError as exc:
            log.warning("could not read doctor %s from KiviCare: %s", connection.doctor_id, exc)
        Job.update(run_after=utcnow(), retries=0).where(
            (Job.state == "pending") & jobs.of_connection(connection.id)).execute()
        jobs.retry_failed(connection.id)  # a new grant or calendar may be what they lacked
        log_sync("connect", "ok", doctor_id=connection.doctor_id)
        self.rt.request_poll()

    def reset_sync(self, connection: Connection, remove_events: bool = False) -> int:
        """Rebuild the doctor's mapping from the events' private properties, then (once someone confirms the
        preview again, ``wp_bridge.preview``) resync everything.

        ``remove_events`` deletes this site's events from the destination calendar first (they are then
        created again). Sync tokens are forgotten. Returns how many events were found in Google.
        """
        google = self.rt.google_for(connection)
        start, end = self.window()
        found = google.our_events(connection.calendar_id, self.site, start, end)
        now = utcnow()
        with transaction():
            # Held until someone confirms the preview again (wp_bridge.preview), so no poll races the reset.
            Connection.update(sync_confirmed_at=None, sync_confirmed_by="").where(
                Connection.id == connection.id).execute()
            connection.sync_confirmed_at, connection.sync_confirmed_by = None, ""
            MeetMapping.delete().where(MeetMapping.calendar_id == connection.calendar_id).execute()
            SyncCursor.update(sync_token=None).where(SyncCursor.connection == connection.id).execute()
            jobs.retry_failed(connection.id)  # given-up writes start again from the rebuilt mapping
        for event in found:
            if event.cancelled or not event.appointment_id:
                continue
            if remove_events:
                google.delete_event(connection.calendar_id, event.id)
                continue
            # Known again, with nothing pushed: the next push rewrites every field we own.
            (MeetMapping.insert(appointment_id=event.appointment_id, doctor_id=connection.doctor_id,
                                connection=connection.id, calendar_id=connection.calendar_id, event_id=event.id,
                                etag=event.etag, google_updated=event.updated, state="active", created_at=now,
                                updated_at=now)
             .on_conflict_ignore().execute())
        log_sync("reset-sync", "ok", doctor_id=connection.doctor_id,
                 message=f"{len(found)} events found in Google; {'removed' if remove_events else 'kept'}")
        self.rt.request_poll()
        return len(found)

    def on_disconnected(self, connection: Connection) -> None:
        """Stop syncing this doctor; existing events stay in Google. Pending jobs are dropped."""
        Job.update(state="done").where((Job.state == "pending") & jobs.of_connection(connection.id)).execute()
        log_sync("disconnect", "ok", doctor_id=connection.doctor_id)

    # ---- the loop --------------------------------------------------------------------------------

    def startup(self, stop: threading.Event | None = None) -> list[str]:
        """Checks before the first poll: add-ons (may raise RefuseToRun), template import, dead leases, and
        each connected doctor's name and timezone (``GET /doctors/{id}``, a few at once: one after the other,
        200 doctors held the first poll ~14 s). ``stop`` set: the doctors not read yet are left for later."""
        released = jobs.release_dead_leases()
        if released:
            log.info("released %d jobs left by a stopped process", released)
        warnings = self.check_addons()
        try:
            self.import_kivicare_template()
        except KiviCareError as exc:
            log.warning("could not read KiviCare's Google event template: %s", exc)
        doctors = [connection.doctor_id for connection in self._connections().values()]

        def refresh(doctor_id: int) -> None:
            if stop is not None and stop.is_set():
                return
            try:
                self.refresh_doctor(doctor_id)
            except KiviCareError:
                pass  # read again at the next start; the stored name and zone stand meanwhile

        _in_pool(refresh, doctors, workers=CONFIRM_CONCURRENCY, name="startup")
        return warnings

    def pull_connection(self, connection: Connection):
        """Pull one doctor's calendars from Google; auth problems mark the connection, outages are logged."""
        with self._pull_lock_of(connection.doctor_id):
            try:
                return self.inbound.pull(connection)
            except CalendarAuthError as exc:
                self._needs_reconnect(connection, exc)
                log_sync("pull", "error", doctor_id=connection.doctor_id, error=exc, direction="google→kivicare",
                         message="Google refused this doctor's access. Ask the doctor to reconnect.")
            except (CalendarError, KiviCareError, CompanionError) as exc:
                log.warning("pull for doctor %s failed: %s", connection.doctor_id, exc)
                log_sync("pull", "retry", doctor_id=connection.doctor_id, error=exc, direction="google→kivicare")
            return None

    def pull_all(self) -> int:
        """Pull every active connection and keep its push channels open. Returns how many were pulled.

        Every direction needs the pull: edits of our events are put back under "KiviCare → Google only",
        and busy blocks flow in all directions.
        """
        due = [c for c in self._connections().values() if c.state == "active" and not c.awaiting_confirmation]

        def pull_one(connection: Connection) -> None:
            try:
                self.pull_connection(connection)
                try:
                    self.inbound.ensure_channels(connection)
                except CalendarError as exc:
                    log.warning("could not open a push channel for doctor %s (polling continues): %s",
                                connection.doctor_id, exc)
            except Exception:  # one doctor's bug must not stop the others' pulls
                log.exception("pull for doctor %s failed", connection.doctor_id)

        # Doctors at once (each has its own Google quota); one doctor's pulls never overlap (_pull_lock_of).
        threads = max(1, min(int(self.cfg.get("bridge.pull_concurrency")), len(due)))
        if threads == 1:
            for connection in due:
                pull_one(connection)
        else:
            _in_pool(pull_one, due, workers=threads, name="pull")
        return len(due)

    def _pull_lock_of(self, doctor_id: int) -> threading.Lock:
        with self._pull_lock:
            return self._pull_locks.setdefault(doctor_id, threading.Lock())

    def sync_once(self, max_rounds: int = 20) -> PollReport:
        """Poll KiviCare, pull Google, then run jobs until none is due (Meet re-checks included, bounded).

        The pull comes before the jobs so a doctor's change in Google meets the conflict rule rather
        than being overwritten by a pending push.
        """
        report = self.poll()
        self.pull_all()
        for _ in range(max_rounds):
            ran = self.run_due_jobs()
            upcoming = Job.select().where((Job.state == "pending")
                                          & (Job.run_after <= utcnow() + CONFERENCE_RECHECK * 2)).count()
            if not ran and not upcoming:
                break
            if not ran:
                time.sleep(1)
        return report
