"""Google → KiviCare: incremental pulls, the doctor's moves and deletions, conflicts, busy blocks.

Per connection and calendar, ``events.list`` with the stored syncToken (all pages, tombstones);
a 410 starts a bounded full sync of the window that never deletes anything by absence. Our own
events (private property ``kcAppointmentId`` of this site) are compared with what we last wrote:
the etag first (our own write coming back is not a change), then times, status and texts.

What a doctor's change does depends on ``sync.direction`` and ``sync.conflict_rule`` (issue 4):
a deletion cancels the appointment (``PUT /appointments/{id}/status`` 0, so KiviCare e-mails the
patient); a move reschedules it through the companion plugin (duration kept; without the plugin
it becomes a conflict for the admin); edits of texts we own are put back. When KiviCare changed
the same appointment since our last write, the rule decides; ``manual`` opens a conflict.
Everything else that makes the doctor busy in a busy calendar becomes a busy block for KiviCare.
Google events never create KiviCare appointments.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sidecar.calendars.base import (CalendarAuthError, CalendarError, CalendarEvent, CalendarNotFound,
                                    CalendarRequestError, CalendarSyncTokenExpired)
from sidecar.calendars.google import event_body
from sidecar.storage import transaction
from sidecar.storage.models import (Appointment as AppointmentRow, BusyBlock, Conflict, Connection, MeetMapping,
                                    SyncCursor, utcnow)

from . import jobs, pending_writes
from .companion import CompanionNotInstalled, CompanionRefused
from .models import EVENT_STATUSES, Appointment
from .synclog import GOOGLE_TO_KIVICARE, KIVICARE_TO_GOOGLE, log_sync

log = logging.getLogger(__name__)

MASS_CANCEL_MINIMUM = 3
RENEW_BEFORE = timedelta(days=1)
# What a put-back rewrites: the appointment's time, status and texts (not colour or reminders).
REVERTED_FIELDS = frozenset({"summary", "description", "location", "start", "end", "status"})  # open a new channel this long before the old one expires


@dataclass
class PullReport:
    """Counts of one pull of one connection (no patient data)."""

    calendars: int = 0
    events: int = 0
    full_syncs: int = 0
    cancelled: int = 0
    rescheduled: int = 0
    reverted: int = 0
    conflicts: int = 0
    busy_changed: bool = False


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _pushed_times(mapping: MeetMapping) -> tuple[datetime | None, datetime | None]:
    body = mapping.pushed_body or {}
    out = []
    for key in ("start", "end"):
        text = (body.get(key) or {}).get("dateTime")
        out.append(datetime.fromisoformat(text) if text else None)
    return out[0], out[1]


class Inbound:
    """Google → KiviCare for one bridge (``wp_bridge.bridge.Bridge``)."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.rt = bridge.rt
        self.cfg = bridge.cfg

    # ---- pulling ------------------------------------------------------------------------------

    def busy_calendars(self, connection: Connection) -> list[str]:
        """The calendars whose busy time blocks booking (default: the destination calendar)."""
        chosen = connection.busy_calendars
        if chosen is None:
            return [connection.calendar_id] if connection.calendar_id else []
        return [c for c in chosen if isinstance(c, str) and c]

    def pull(self, connection: Connection) -> PullReport:
        """Pull every watched calendar of ``connection``; raises CalendarError (nothing half-applied)."""
        report = PullReport()
        google = self.rt.google_for(connection)
        start, end = self.bridge.window()
        zone = self.bridge.doctor_timezone(connection.doctor_id)
        busy = set(self.busy_calendars(connection))
        for calendar_id in dict.fromkeys([connection.calendar_id, *busy]):
            if not calendar_id:
                continue
            cursor, _ = SyncCursor.get_or_create(connection=connection.id, calendar_id=calendar_id)
            full = not cursor.sync_token
            try:
                events, token = google.list_changes(calendar_id, cursor.sync_token, time_min=start, time_max=end,
                                                    zone=zone)
            except (CalendarAuthError, CalendarNotFound, CalendarRequestError):
                if calendar_id == connection.calendar_id:
                    raise
                # A calendar the doctor may only see as free/busy: its events can't be listed.
                report.calendars += 1
                report.busy_changed |= self._free_busy_blocks(connection, google, calendar_id, start, end)
                continue
            except CalendarSyncTokenExpired:
                # Google forgot our place: list the window again. Absence from it deletes nothing.
                log.info("sync token expired for a calendar of doctor %s; full sync of the window",
                         connection.doctor_id)
                events, token = google.list_changes(calendar_id, None, time_min=start, time_max=end, zone=zone)
                full = True
            report.calendars += 1
            report.events += len(events)
            report.full_syncs += int(full)
            if calendar_id == connection.calendar_id:
                self._our_events(connection, self._ours(connection, events), report)
            if calendar_id in busy:
                report.busy_changed |= self._busy_blocks(connection, calendar_id, events, full)
            now = utcnow()
            SyncCursor.update(sync_token=token or None, last_pull_at=now,
                              full_sync_at=now if full else cursor.full_sync_at).where(
                SyncCursor.id == cursor.id).execute()
        if report.busy_changed:
            self.enqueue_busy_push(connection.doctor_id)
        return report

    def recheck(self, connection: Connection, appointment_id: str) -> None:
        """Read one of our events again (after a 412) and apply the doctor's change by the rules."""
        mapping = MeetMapping.get_or_none((MeetMapping.appointment_id == appointment_id)
                                          & (MeetMapping.calendar_id == connection.calendar_id))
        if mapping is None or mapping.state != "active":
            return
        try:
            event = self.rt.google_for(connection).read_event(mapping.calendar_id, mapping.event_id)
        except CalendarNotFound:
            return
        report = PullReport()
        self._our_events(connection, [replace(event, appointment_id=appointment_id, site=self.bridge.site)], report)

    def _is_ours(self, event: CalendarEvent) -> bool:
        return bool(event.appointment_id) and event.site == self.bridge.site

    def _ours(self, connection: Connection, events: list[CalendarEvent]) -> list[CalendarEvent]:
        """Our events among ``events``: by private property, or (tombstones come back bare) by event id."""
        bare = [e.id for e in events if not e.appointment_id]
        known = {}
        if bare:
            known = {m.event_id: m.appointment_id for m in MeetMapping.select(
                MeetMapping.event_id, MeetMapping.appointment_id).where(
                (MeetMapping.calendar_id == connection.calendar_id) & MeetMapping.event_id.in_(bare))}
        out = []
        for event in events:
            if self._is_ours(event):
                out.append(event)
            elif event.id in known:
                out.append(replace(event, appointment_id=known[event.id], site=self.bridge.site))
        return out

    # ---- our events changed by the doctor ------------------------------------------------------------

    def _our_events(self, connection: Connection, events: list[CalendarEvent], report: PullReport) -> None:
        direction = self.cfg.get("sync.direction")
        cancels: list[tuple[MeetMapping, CalendarEvent, Appointment]] = []
        # This calendar's mappings of the events, read at once (every event we insert comes back in the
        # next pull; most are skipped below on their etag).
        ids = list({event.appointment_id for event in events})
        mappings: dict[str, MeetMapping] = {}
        for n in range(0, len(ids), 500):
            mappings.update((m.appointment_id, m) for m in MeetMapping.select().where(
                (MeetMapping.calendar_id == connection.calendar_id) & MeetMapping.appointment_id.in_(ids[n:n + 500])))
        for event in events:
            mapping = mappings.get(event.appointment_id)
            if mapping is None or mapping.state != "active" or mapping.event_id != event.id:
                continue
            if event.etag and event.etag == mapping.etag:
                continue  # our own write coming back
            if self._own_echo(event, mapping):
                continue  # our own write, back before its answer was recorded
            change = self._classify(event, mapping)
            if change is None:  # e.g. Meet finished, or the doctor's own colour or reminders
                MeetMapping.update(etag=event.etag, google_updated=event.updated).where(
                    MeetMapping.id == mapping.id).execute()
                continue
            row = AppointmentRow.get_or_none(AppointmentRow.id == event.appointment_id)
            if row is None:
                MeetMapping.update(etag=event.etag).where(MeetMapping.id == mapping.id).execute()
                continue
            appointment = Appointment.from_dict(row.data)
            if Conflict.select().where((Conflict.appointment_id == appointment.id)
                                       & (Conflict.state == "open")).exists():
                continue  # the admin decides; nothing moves until then
            if direction == "kivicare_to_google" or (change == "edited" and direction == "both"):
                self._revert(mapping, connection, "revert-google-edit", report)
                continue
            if change == "edited":  # google_to_kivicare: texts are not ours to apply
                MeetMapping.update(etag=event.etag).where(MeetMapping.id == mapping.id).execute()
                continue
            winner = self._winner(appointment, row, mapping, connection, event, direction)
            if winner == "kivicare":
                self._revert(mapping, connection, "conflict-kivicare-wins", report)
            elif winner == "manual":
                self._open_conflict("both_changed", connection, appointment, event,
                                    "Changed in KiviCare and in Google since the last sync.")
                report.conflicts += 1
            elif change == "deleted":
                cancels.append((mapping, event, appointment))
            else:
                self._apply_move(connection, mapping, event, appointment, report)
        self._apply_cancels(connection, cancels, report)

    def _own_echo(self, event: CalendarEvent, mapping: MeetMapping) -> bool:
        """True when ``event`` shows a write we sent whose answer is not recorded yet (lost answer, SIGKILL
        before the commit, or a pull racing the worker): not the doctor's change (soak finding).

        Google's etag and what we wrote are recorded then (only if nobody recorded a newer etag meanwhile),
        so the next pull, and the push's If-Match, start from it; the push itself still runs and finishes.
        """
        entry = pending_writes.echo(event, pending_writes.find(mapping.appointment_id, mapping.calendar_id))
        if entry is None:
            return False
        unchanged = (MeetMapping.id == mapping.id) & (MeetMapping.etag == mapping.etag)
        if entry.get("op") == "write":
            MeetMapping.update(etag=event.etag, google_updated=event.updated, pushed_body=entry.get("body")).where(
                unchanged).execute()
        else:
            # Our deletion landed: record it as the worker would have (a re-booking then writes it again).
            with transaction():
                done = MeetMapping.update(state="deleted", pushed_hash="", etag=event.etag, updated_at=utcnow()).where(
                    unchanged).execute()
                if done:
                    pending_writes.clear(mapping.appointment_id, mapping.calendar_id)
            if done and mapping.hangout_link:
                self.bridge._enqueue_meet_link(mapping.appointment_id)
        log.info("our own %s of appointment %s's event came back before its answer was recorded",
                 entry.get("op"), mapping.appointment_id)
        return True

    def _classify(self, event: CalendarEvent, mapping: MeetMapping) -> str | None:
        if event.cancelled:
            return "deleted"
        start, end = _pushed_times(mapping)
        if event.start and start and (event.start != start or (event.end and end and event.end != end)):
            return "moved"
        body = mapping.pushed_body or {}
        for field in ("summary", "description", "location"):
            if field in body and (getattr(event, field) or "") != (body.get(field) or ""):
                return "edited"
        return None

    def _winner(self, appointment: Appointment, row: AppointmentRow, mapping: MeetMapping,
                connection: Connection, event: CalendarEvent, direction: str) -> str:
        """"google", "kivicare" or "manual" for a doctor's move or deletion."""
        if direction == "google_to_kivicare":
            return "google"
        decision = self.bridge.decide(appointment, connection, mapping)
        # Only a change of time or status in KiviCare competes with the doctor's move or deletion (a new
        # template, clinic address or Meet link does not).
        start, end = _pushed_times(mapping)
        pushed_status = (mapping.pushed_body or {}).get("status")
        kivicare_changed = decision.action == "delete" or (
            decision.action == "upsert" and start is not None
            and (decision.spec.start != start or decision.spec.end != end
                 or (pushed_status and ("tentative" if decision.spec.tentative else "confirmed") != pushed_status)))
        if not kivicare_changed:
            return "google"
        rule = self.cfg.get("sync.conflict_rule")
        if rule == "manual":
            return "manual"
        if rule == "google":
            return "google"
        if rule == "recent":
            # Google's time of the edit against the time the sidecar saw KiviCare's change.
            seen = row.changed_at or row.last_seen_at
            return "google" if (event.updated and seen and event.updated > seen) else "kivicare"
        return "kivicare"

    def _revert(self, mapping: MeetMapping, connection: Connection, action: str, report: PullReport) -> None:
        """Put KiviCare's version back: time, status and texts are written again on the next push.

        Only those fields are forgotten from what we last pushed, so the patch rewrites them and leaves the
        doctor's own colour and reminders alone. Google's current etag is recorded first: the doctor's
        version has been seen and decided on, so the push's If-Match must match it.
        """
        etag = mapping.etag
        try:
            etag = self.rt.google_for(connection).read_event(mapping.calendar_id, mapping.event_id).etag or etag
        except CalendarNotFound:
            pass
        kept = {k: v for k, v in (mapping.pushed_body or {}).items() if k not in REVERTED_FIELDS} or None
        MeetMapping.update(pushed_hash="", pushed_body=kept, etag=etag).where(MeetMapping.id == mapping.id).execute()
        self.bridge._enqueue_push(mapping.appointment_id, connection.id)
        log_sync(action, "ok", doctor_id=connection.doctor_id, appointment_id=mapping.appointment_id, direction=KIVICARE_TO_GOOGLE)
        report.reverted += 1

    def _apply_move(self, connection: Connection, mapping: MeetMapping, event: CalendarEvent,
                    appointment: Appointment, report: PullReport) -> None:
        if appointment.status not in EVENT_STATUSES or event.start is None:
            self._revert(mapping, connection, "revert-google-move", report)
            return
        companion = self.rt.companion()
        if companion is None:
            self._open_conflict("move_without_plugin", connection, appointment, event,
                                "The doctor moved this appointment in Google. Without the companion plugin the "
                                "sidecar cannot reschedule safely in KiviCare: choose a version.")
            report.conflicts += 1
            return
        try:
            start, end = companion.reschedule(appointment.id, event.start)
        except CompanionNotInstalled:
            self._open_conflict("move_without_plugin", connection, appointment, event,
                                "The doctor moved this appointment in Google, but the companion plugin is not "
                                "installed: choose a version.")
            report.conflicts += 1
            return
        except CompanionRefused as exc:
            # Taken slot, or checked in/out: KiviCare keeps its time and the event goes back.
            log_sync("reschedule", "error", doctor_id=connection.doctor_id, appointment_id=appointment.id, error=exc,
                                 direction=GOOGLE_TO_KIVICARE,
                                 message=f"KiviCare refused the move ({exc}); the event was put back.")
            self._revert(mapping, connection, "revert-google-move", report)
            return
        moved = replace(appointment, start=start, end=end)
        AppointmentRow.update(start_utc=start, end_utc=end, data=moved.to_dict(), last_seen_at=utcnow()).where(
            AppointmentRow.id == appointment.id).execute()
        settled = self._as_pushed(mapping, event, moved)
        MeetMapping.update(etag=event.etag, google_updated=event.updated, **settled).where(
            MeetMapping.id == mapping.id).execute()
        if not settled:
            # KiviCare kept the duration (the doctor stretched the event) or the text names the time: push its
            # version back.
            self.bridge._enqueue_push(appointment.id, connection.id)
        log_sync("reschedule", "ok", doctor_id=connection.doctor_id, appointment_id=appointment.id, direction=GOOGLE_TO_KIVICARE)
        report.rescheduled += 1

    def _as_pushed(self, mapping: MeetMapping, event: CalendarEvent, moved: Appointment) -> dict:
        """After a doctor's move was applied in KiviCare: when the event already holds everything the sidecar
        would write for ``moved`` (same instants; no other field differs from what it last wrote, e.g. no
        time in the text), the mapping's "last pushed" values to record instead of a push (issue 7: a move
        cost a patch back). Else {} (a push is needed)."""
        if event.start != moved.start or event.end != moved.end or not mapping.pushed_body:
            return {}
        spec = self.bridge.spec(moved, mapping)
        body = {k: v for k, v in event_body(spec, self.bridge.site, create_conference=False, request_id="").items()
                if k != "conferenceData"}
        expected = {**mapping.pushed_body, "start": body["start"], "end": body["end"]}
        if expected != body:
            return {}
        return {"pushed_hash": spec.fingerprint(), "pushed_body": body}

    def _apply_cancels(self, connection: Connection, cancels: list, report: PullReport) -> None:
        now = utcnow()
        future = [(m, e, a) for m, e, a in cancels if a.start > now and a.status in EVENT_STATUSES]
        for mapping, event, appointment in cancels:
            if (mapping, event, appointment) not in future:
                # A past or already closed appointment: the doctor tidied the calendar; keep it that way.
                MeetMapping.update(state="dismissed", etag=event.etag).where(MeetMapping.id == mapping.id).execute()
        if not future:
            return
        upcoming = AppointmentRow.select().where((AppointmentRow.doctor_id == connection.doctor_id)
                                                 & AppointmentRow.present & (AppointmentRow.start_utc > now)
                                                 & AppointmentRow.status.in_(list(EVENT_STATUSES))).count()
        share = int(self.cfg.get("sync.mass_cancel_share"))
        if len(future) >= MASS_CANCEL_MINIMUM and len(future) * 100 > share * max(upcoming, 1):
            Conflict.create(kind="mass_cancel", doctor_id=connection.doctor_id, connection=connection.id,
                            kivicare={"appointments": [a.id for _, _, a in future], "upcoming": upcoming},
                            google={"deleted_events": len(future)},
                            message=f"{len(future)} of {upcoming} upcoming appointments were deleted in Google at "
                                    f"once (a deleted or unshared calendar?). Nothing was cancelled in KiviCare.")
            log.warning("mass-cancel guard: doctor %s, %d deletions held for the admin", connection.doctor_id,
                        len(future))
            report.conflicts += 1
            return
        client = self.rt.kivicare()
        for mapping, event, appointment in future:
            client.set_status(appointment.id, 0)  # KiviCare e-mails the patient, as for any cancellation
            cancelled = replace(appointment, status=0)
            with transaction():
                # last_seen_at: KiviCare holds this state from now on, so an older list must not undo it.
                AppointmentRow.update(status=0, data=cancelled.to_dict(), changed_at=utcnow(), last_seen_at=utcnow()).where(
                    AppointmentRow.id == appointment.id).execute()
                MeetMapping.update(state="deleted", etag=event.etag, pushed_hash="", pushed_body=None).where(
                    MeetMapping.id == mapping.id).execute()
            log_sync("cancel", "ok", doctor_id=connection.doctor_id, appointment_id=appointment.id, direction=GOOGLE_TO_KIVICARE)
            report.cancelled += 1

    def _open_conflict(self, kind: str, connection: Connection, appointment: Appointment, event: CalendarEvent,
                       message: str) -> Conflict:
        conflict = Conflict.create(
            kind=kind, doctor_id=connection.doctor_id, appointment_id=appointment.id, connection=connection.id,
            kivicare={"start": _iso(appointment.start), "end": _iso(appointment.end), "status": appointment.status,
                      "status_name": appointment.status_name},
            google={"start": _iso(event.start), "end": _iso(event.end), "deleted": event.cancelled,
                    "updated": _iso(event.updated), "event_id": event.id, "etag": event.etag},
            message=message)
        log_sync("conflict", "skipped", doctor_id=connection.doctor_id, appointment_id=appointment.id, direction=GOOGLE_TO_KIVICARE,
                             message=message)
        return conflict

    # ---- resolving conflicts ------------------------------------------------------------------------

    def resolve(self, conflict_id: int, choice: str, by: str = "") -> Conflict:
        """Apply the admin's choice ("kivicare" or "google") to both sides. Raises ValueError."""
        conflict = Conflict.get_or_none(Conflict.id == conflict_id)
        if conflict is None or conflict.state != "open":
            raise ValueError("This conflict does not exist or was already resolved.")
        if choice not in ("kivicare", "google"):
            raise ValueError("Choose KiviCare's or Google's version.")
        connection = Connection.get_or_none(Connection.id == conflict.connection_id)
        if connection is None:
            raise ValueError("The doctor's calendar connection no longer exists.")
        if conflict.kind in ("mass_cancel", "mass_delete"):
            ids = list(conflict.kivicare.get("appointments") or [])
        else:
            ids = [conflict.appointment_id]
        if (choice == "google" and conflict.kind in ("move_without_plugin", "both_changed")
                and not (conflict.google or {}).get("deleted") and self.rt.companion() is None):
            raise ValueError("Keeping Google's time needs the companion plugin, which moves appointments safely "
                             "in KiviCare. Install it, or keep KiviCare's version.")
        report = PullReport()
        if conflict.kind == "mass_delete":
            # kivicare: KiviCare's state stands, the events go; google: the events stay as they are.
            for appointment_id in ids:
                if choice == "kivicare":
                    self.bridge._enqueue_push(appointment_id, connection.id)
                else:
                    MeetMapping.update(state="dismissed").where(
                        (MeetMapping.appointment_id == appointment_id)
                        & (MeetMapping.calendar_id == connection.calendar_id)).execute()
            Conflict.update(state="resolved", resolution=choice, resolved_at=utcnow(), resolved_by=by[:150]).where(
                Conflict.id == conflict.id).execute()
            self.rt.work_available.set()
            return Conflict.get_by_id(conflict.id)
        if choice == "google":
            client = self.rt.kivicare()
            for appointment_id in ids:
                mapping = MeetMapping.get_or_none((MeetMapping.appointment_id == appointment_id)
                                                  & (MeetMapping.calendar_id == connection.calendar_id))
                row = AppointmentRow.get_or_none(AppointmentRow.id == appointment_id)
                if mapping is None or row is None:
                    continue
                appointment = Appointment.from_dict(row.data)
                google = conflict.google or {}
                if conflict.kind == "mass_cancel" or google.get("deleted"):
                    client.set_status(appointment_id, 0)
                    AppointmentRow.update(status=0, data=replace(appointment, status=0).to_dict(), changed_at=utcnow(),
                                          last_seen_at=utcnow()).where(AppointmentRow.id == appointment_id).execute()
                    MeetMapping.update(state="deleted", pushed_hash="", pushed_body=None).where(
                        MeetMapping.id == mapping.id).execute()
                    log_sync("cancel", "ok", doctor_id=connection.doctor_id, appointment_id=appointment_id,
                                         direction=GOOGLE_TO_KIVICARE, message="resolved by the admin")
                else:
                    event = CalendarEvent(id=google.get("event_id", ""), status="confirmed",
                                          etag=google.get("etag", ""),
                                          start=datetime.fromisoformat(google["start"]),
                                          end=datetime.fromisoformat(google["end"]))
                    self._apply_move(connection, mapping, event, appointment, report)
        else:
            for appointment_id in ids:
                mapping = MeetMapping.get_or_none((MeetMapping.appointment_id == appointment_id)
                                                  & (MeetMapping.calendar_id == connection.calendar_id))
                if mapping is not None:
                    self._revert(mapping, connection, "conflict-kivicare-wins", report)
        Conflict.update(state="resolved", resolution=choice, resolved_at=utcnow(), resolved_by=by[:150]).where(
            Conflict.id == conflict.id).execute()
        self.rt.work_available.set()
        return Conflict.get_by_id(conflict.id)

    # ---- push channels ----------------------------------------------------------------------------

    def push_address(self) -> str | None:
        """Where Google may notify us: ``{public_url}/hooks/google`` when it is HTTPS (or explicitly allowed)."""
        public = self.cfg.get("web.public_url").rstrip("/")
        if public.startswith("https://") or self.cfg.get("google.push_over_http"):
            return public + "/hooks/google"
        return None

    def ensure_channels(self, connection: Connection, now: datetime | None = None) -> int:
        """Open or renew (a day before expiry, with a new id) a watch channel per pulled calendar.

        The old channel is stopped after the new one exists, so for a moment both deliver (Google's
        advice); the poll keeps running as a backstop because Google drops some notifications.
        Returns how many channels were opened.
        """
        address = self.push_address()
        if address is None or connection.state != "active":
            return 0
        now = now or utcnow()
        opened = 0
        google = self.rt.google_for(connection)
        for calendar_id in dict.fromkeys([connection.calendar_id, *self.busy_calendars(connection)]):
            if not calendar_id:
                continue
            cursor, _ = SyncCursor.get_or_create(connection=connection.id, calendar_id=calendar_id)
            if cursor.channel_id and cursor.channel_expiration and cursor.channel_expiration > now + RENEW_BEFORE:
                continue
            channel_id, token = uuid.uuid4().hex, secrets.token_urlsafe(32)
            resource_id, expiration = google.watch(calendar_id, channel_id, address, token)
            old = (cursor.channel_id, cursor.channel_resource_id)
            SyncCursor.update(channel_id=channel_id, channel_resource_id=resource_id,
                              channel_token=self.rt.box.encrypt(token), channel_expiration=expiration).where(
                SyncCursor.id == cursor.id).execute()
            opened += 1
            if old[0]:
                try:
                    google.stop_channel(*old)
                except CalendarError as exc:
                    log.info("could not stop an old channel (it expires by itself): %s", exc)
        return opened

    def on_notification(self, channel_id: str, token: str, state: str) -> str:
        """A Google push message. Returns "pulled", "ignored" or "refused" (token mismatch)."""
        cursor = SyncCursor.get_or_none(SyncCursor.channel_id == channel_id) if channel_id else None
        if cursor is None:
            return "ignored"  # unknown or stopped channel: answer 200 so Google stops retrying
        expected = self.rt.box.decrypt(cursor.channel_token) if cursor.channel_token else ""
        if not expected or not hmac.compare_digest(expected.encode(), (token or "").encode()):
            return "refused"
        if state == "sync":
            return "ignored"  # the channel's first message: nothing changed yet
        jobs.enqueue("pull", f"pull:{cursor.connection_id}", {"connection_id": cursor.connection_id})
        self.rt.work_available.set()
        return "pulled"

    # ---- busy blocks -------------------------------------------------------------------------------

    def blocks_time(self, connection: Connection, event: CalendarEvent, doctors: dict[str, int] | None = None) -> bool:
        """RFC 5545 / Google rules: opaque, not cancelled, not declined, not working location, not one of
        this doctor's own appointments; out-of-office always blocks. ``doctors``: appointment id -> doctor id
        of our events' rows when the caller read them at once (``doctors_of``); else read here."""
        if event.cancelled or event.start is None or event.end is None or event.end <= event.start:
            return False
        if event.declined or event.event_type == "workingLocation":
            return False
        if self._is_ours(event):
            if doctors is None:
                doctors = self.doctors_of([event])
            doctor_id = doctors.get(event.appointment_id)
            if doctor_id is None or doctor_id == connection.doctor_id:
                return False  # KiviCare already knows its own appointments
        return event.busy or event.event_type == "outOfOffice"

    def doctors_of(self, events: list[CalendarEvent]) -> dict[str, int]:
        """Appointment id -> doctor id of our events' rows, in one query per 500 (absent: no row)."""
        ids = list({event.appointment_id for event in events if self._is_ours(event)})
        found: dict[str, int] = {}
        for n in range(0, len(ids), 500):
            found.update(AppointmentRow.select(AppointmentRow.id, AppointmentRow.doctor_id).where(
                AppointmentRow.id.in_(ids[n:n + 500])).tuples())
        return found

    def _busy_blocks(self, connection: Connection, calendar_id: str, events: list[CalendarEvent], full: bool) -> bool:
        """Store the busy events of one calendar. Returns True when the doctor's blocks changed.

        Read at once, not per event: the doctors of our own events, and the events holding a block, so the
        echo of our own writes (every event we insert comes back in the next pull) costs no statement."""
        before = self._digest(connection)
        doctors = self.doctors_of(events)
        this_calendar = (BusyBlock.connection == connection.id) & (BusyBlock.calendar_id == calendar_id)
        with transaction():
            if full:
                BusyBlock.delete().where(this_calendar).execute()
                held: set[str] = set()
            else:
                held = {event_id for (event_id,) in BusyBlock.select(BusyBlock.event_id).where(this_calendar).tuples()}
            for event in events:
                if not self.blocks_time(connection, event, doctors):
                    # A cancelled series also takes its instances' blocks (``<seriesId>_<start>``): Google
                    # usually sends each instance's tombstone too; this covers a pull naming only the series.
                    # Compared in Python: ``_`` is a wildcard in SQL ``LIKE``.
                    gone = [event.id] if event.id in held else []
                    if event.cancelled:
                        gone += [event_id for event_id in held if event_id.startswith(event.id + "_")]
                    for n in range(0, len(gone), 500):
                        BusyBlock.delete().where(this_calendar & BusyBlock.event_id.in_(gone[n:n + 500])).execute()
                    held.difference_update(gone)
                    continue
                held.add(event.id)
                name = "Busy" if event.private else (event.summary or "Busy")[:255]
                values = dict(doctor_id=connection.doctor_id, start_utc=event.start, end_utc=event.end, name=name)
                (BusyBlock.insert(connection=connection.id, calendar_id=calendar_id, event_id=event.id, **values)
                 .on_conflict(conflict_target=[BusyBlock.connection, BusyBlock.calendar_id, BusyBlock.event_id],
                              update={getattr(BusyBlock, k): v for k, v in values.items()}).execute())
        return self._digest(connection) != before

    def _free_busy_blocks(self, connection: Connection, google, calendar_id: str, start: datetime,
                          end: datetime) -> bool:
        """Busy blocks of a free/busy-only calendar from ``freebusy.query`` (no titles, no sync token)."""
        spans = google.free_busy([calendar_id], start, end).get(calendar_id)
        if spans is None:
            return False  # not visible at all: keep what we had rather than unblock on a guess
        before = self._digest(connection)
        with transaction():
            BusyBlock.delete().where((BusyBlock.connection == connection.id)
                                     & (BusyBlock.calendar_id == calendar_id)).execute()
            for begin, finish in spans:
                BusyBlock.insert(connection=connection.id, calendar_id=calendar_id, event_id=f"fb:{begin.isoformat()}",
                                 doctor_id=connection.doctor_id, start_utc=begin, end_utc=finish,
                                 name="Busy").on_conflict_ignore().execute()
        return self._digest(connection) != before

    @staticmethod
    def _digest(connection: Connection) -> str:
        rows = (BusyBlock.select(BusyBlock.calendar_id, BusyBlock.event_id, BusyBlock.start_utc, BusyBlock.end_utc,
                                 BusyBlock.name).where(BusyBlock.connection == connection.id)
                .order_by(BusyBlock.calendar_id, BusyBlock.event_id).tuples())
        return hashlib.sha256(json.dumps([list(map(str, r)) for r in rows]).encode()).hexdigest()

    def enqueue_busy_push(self, doctor_id: int) -> None:
        if self.rt.companion() is not None:
            jobs.enqueue("busy_push", f"busy:{doctor_id}", {"doctor_id": doctor_id})
            self.rt.work_available.set()

    def push_busy(self, doctor_id: int) -> int:
        """Send the doctor's busy blocks in the window to the companion plugin; returns how many."""
        from .companion import BusyBlock as WireBlock
        companion = self.rt.companion()
        if companion is None:
            return 0
        start, end = self.bridge.window()
        rows = BusyBlock.select().where((BusyBlock.doctor_id == doctor_id) & (BusyBlock.end_utc > start)
                                        & (BusyBlock.start_utc < end)).order_by(BusyBlock.start_utc)
        blocks = [WireBlock(id=hashlib.sha256(f"{r.calendar_id}|{r.event_id}".encode()).hexdigest()[:40],
                            start=r.start_utc, end=r.end_utc, name=r.name) for r in rows]
        companion.push_busy(doctor_id, start, end, blocks)
        log_sync("busy-blocks", "ok", doctor_id=doctor_id, appointment_id="", direction=GOOGLE_TO_KIVICARE,
                             message=f"{len(blocks)} busy blocks")
        return len(blocks)
