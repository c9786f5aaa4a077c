"""The first-sync preview and its confirmation (issue 5): nothing is written until a person agrees.

A new connection (and a connection after "Reset sync") is held: ``Connection.sync_confirmed_at`` is
None, and the engine neither plans pushes for it nor pulls its calendars (``wp_bridge.bridge``).
The person who chose the calendar (an admin, or the doctor through their Connect link or WordPress
sign-in) sees what the first sync will do, computed with the engine's own rules:

- events to create in the destination calendar: the doctor's appointments from the sync window
  (yesterday … ``bridge.horizon_days`` ahead, UTC) that ``Bridge.decide`` would put there (cancelled
  ones excluded, ``sync.services``/``sync.clinics`` applied), from the appointments the poll cached
  (a poll runs first when the cache is stale);
- events already there (after a reset that kept them) that will be brought up to date;
- busy blocks: the busy events of the calendars that block booking time in the same window, by
  ``Inbound.blocks_time`` (free/busy-only calendars through ``freebusy.query``).

``confirm`` releases the hold: the engine's kept jobs become due and a poll starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sidecar.calendars.base import CalendarAuthError, CalendarNotFound, CalendarRequestError
from sidecar.storage.models import Appointment as AppointmentRow, Connection, Job, MeetMapping, utcnow

from . import filters, jobs
from .kivicare import KiviCareError
from .models import EVENT_STATUSES, Appointment
from .synclog import log_sync

log = logging.getLogger(__name__)

# The state pages and /api/status show for an active connection that waits for its confirmation.
HELD = "held"
STALE_CACHE = timedelta(minutes=2)  # an older poll is refreshed before counting


@dataclass(frozen=True)
class FirstSyncPreview:
    """What confirming will do for one connection. Counts only; times are aware UTC.

    ``busy_calendars`` names the calendars read for busy time; ``unreadable`` those Google would not
    show at all (their busy time is not counted). ``kivicare_problem`` is "" or why KiviCare could not
    be read just now (the counts then come from the appointments seen at ``appointments_as_of``).
    """

    doctor_id: int
    calendar_id: str
    calendar_name: str
    window_start: datetime
    window_end: datetime
    create: int = 0
    update: int = 0
    remove: int = 0
    outside_filter: int = 0
    busy_blocks: int = 0
    busy_calendars: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    appointments_as_of: datetime | None = None
    kivicare_problem: str = ""
    filters: dict = field(default_factory=dict)


def display_state(connection: Connection | None) -> str | None:
    """The state a page shows: ``HELD`` for an active connection whose sync is held,
    else ``connection.state`` (None without a connection)."""
    if connection is None:
        return None
    if connection.state == "active" and connection.calendar_id and connection.awaiting_confirmation:
        return HELD
    return connection.state


def _fresh_appointments(runtime) -> tuple[datetime | None, str]:
    """Poll KiviCare when the cached appointments are older than ``STALE_CACHE``.

    Returns ``(as_of, problem)``: when the cache was last filled and "" or a sentence for the page.
    """
    state = runtime.get_state("poll") or {}
    last = None
    if state.get("ok") and state.get("at"):
        try:
            last = datetime.fromisoformat(state["at"])
        except ValueError:
            last = None
    if last is not None and utcnow() - last < STALE_CACHE:
        return last, ""
    try:
        runtime.bridge.poll()  # held connections are not planned, so this writes nothing for this doctor
    except KiviCareError as exc:
        log.warning("preview: KiviCare could not be read (%s)", type(exc).__name__)
        return last, ("KiviCare could not be read just now, so the counts come from the appointments the "
                      "sidecar saw last.")
    return utcnow(), ""


def _appointment_counts(runtime, connection: Connection, start: datetime, end: datetime) -> dict:
    bridge = runtime.bridge
    counts = {"create": 0, "update": 0, "remove": 0, "outside_filter": 0}
    rows = list(AppointmentRow.select().where((AppointmentRow.doctor_id == connection.doctor_id)
                                              & AppointmentRow.present & (AppointmentRow.start_utc >= start)
                                              & (AppointmentRow.start_utc <= end)))
    for row in rows:
        appointment = Appointment.from_dict(row.data)
        mapping = MeetMapping.get_or_none((MeetMapping.appointment_id == appointment.id)
                                          & (MeetMapping.calendar_id == connection.calendar_id)
                                          & (MeetMapping.state == "active"))
        if appointment.status in EVENT_STATUSES and \
                filters.scope_or_unknown(appointment, runtime.cfg) is filters.Scope.OUT:
            counts["outside_filter"] += 1
        decision = bridge.decide(appointment, connection, mapping)
        if decision.action == "upsert":
            counts["update" if mapping is not None else "create"] += 1
        elif decision.action == "delete" and mapping is not None:
            counts["remove"] += 1
    return counts


def _busy(runtime, connection: Connection, start: datetime, end: datetime) -> tuple[int, list[str], list[str]]:
    """Busy blocks the first pull would store: ``(count, calendar names read, names not readable)``.

    Raises CalendarAuthError when Google refuses the connection, CalendarError when it does not answer.
    """
    bridge = runtime.bridge
    google = runtime.google_for(connection)
    zone = bridge.doctor_timezone(connection.doctor_id)
    chosen = bridge.inbound.busy_calendars(connection)
    names = {connection.calendar_id: connection.calendar_name or connection.calendar_id}
    if any(c not in names for c in chosen):
        names.update({c.id: c.name or c.id for c in google.list_calendars("freeBusyReader")})
    count, read, unreadable = 0, [], []
    for calendar_id in chosen:
        name = names.get(calendar_id, calendar_id)
        try:
            events, _ = google.list_changes(calendar_id, None, time_min=start, time_max=end, zone=zone)
        except (CalendarAuthError, CalendarNotFound, CalendarRequestError):
            if calendar_id == connection.calendar_id:
                raise
            spans = google.free_busy([calendar_id], start, end).get(calendar_id)  # free/busy-only calendar
            if spans is None:
                unreadable.append(name)
                continue
            count += len(spans)
            read.append(name)
            continue
        doctors = bridge.inbound.doctors_of(events)  # our events' doctors, read at once
        count += sum(1 for event in events if bridge.inbound.blocks_time(connection, event, doctors))
        read.append(name)
    return count, read, unreadable


def compute(runtime, connection: Connection) -> FirstSyncPreview:
    """The preview for ``connection`` (a calendar chosen). Reads KiviCare (when the cache is stale) and
    Google (the busy calendars); writes nothing for this connection.

    Raises ValueError when no calendar is chosen, CalendarAuthError when Google refuses the connection
    (the doctor must reconnect), CalendarError when Google does not answer.
    """
    if not connection.calendar_id:
        raise ValueError("Choose the calendar the appointments go to first.")
    start, end = runtime.bridge.window()
    as_of, problem = _fresh_appointments(runtime)
    counts = _appointment_counts(runtime, connection, start, end)
    busy, read, unreadable = _busy(runtime, connection, start, end)
    chosen = {}
    for name in ("sync.services", "sync.clinics"):
        try:
            chosen[name] = sorted(filters.chosen(runtime.cfg, name) or [])
        except filters.FilterError:
            chosen[name] = []
    return FirstSyncPreview(doctor_id=connection.doctor_id, calendar_id=connection.calendar_id,
                            calendar_name=connection.calendar_name or connection.calendar_id,
                            window_start=start, window_end=end, busy_blocks=busy, busy_calendars=tuple(read),
                            unreadable=tuple(unreadable), appointments_as_of=as_of, kivicare_problem=problem,
                            filters=chosen, **counts)


def confirm(runtime, connection: Connection, by: str = "") -> bool:
    """Release the hold on ``connection``: record who confirmed (``by``, a user name, max 150 chars),
    make its kept jobs due and ask for a poll now. Returns False when it was already confirmed (nothing changes).

    Raises ValueError when the connection cannot sync (no calendar chosen, disconnected or removed).
    """
    if not connection.calendar_id or connection.state not in ("active", "needs_reconnect"):
        raise ValueError("This connection has no calendar to sync to. Connect and choose a calendar first.")
    now = utcnow()
    changed = Connection.update(sync_confirmed_at=now, sync_confirmed_by=(by or "")[:150], updated_at=now).where(
        (Connection.id == connection.id) & Connection.sync_confirmed_at.is_null()).execute()
    if not changed:
        stored = Connection.get_by_id(connection.id)
        connection.sync_confirmed_at, connection.sync_confirmed_by = stored.sync_confirmed_at, stored.sync_confirmed_by
        return False
    connection.sync_confirmed_at, connection.sync_confirmed_by = now, (by or "")[:150]
    log_sync("confirm-first-sync", "ok", doctor_id=connection.doctor_id, message="First sync confirmed")
    # The jobs kept while held (push:<appointment>:<connection>, …) run now; the poll plans the rest.
    Job.update(run_after=now, retries=0).where(
        (Job.state == "pending") & jobs.of_connection(connection.id)).execute()
    runtime.request_poll()
    runtime.work_available.set()
    return True


def held_connections():
    """Active connections whose sync waits for a confirmation (a peewee query of ``Connection``)."""
    return Connection.select().where((Connection.state == "active") & Connection.calendar_id.is_null(False)
                                     & Connection.sync_confirmed_at.is_null())


__all__ = ["HELD", "FirstSyncPreview", "compute", "confirm", "display_state", "held_connections"]
