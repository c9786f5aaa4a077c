"""Google writes sent but not yet confirmed: our own echoes, and inserts whose answer was lost.

Between a Google write and the commit that records its answer (new etag, what we pushed) there is a
window: the answer may be lost (reset, timeout), the process may be SIGKILLed, or a pull triggered by
Google's push notification may read the event first. Seen from a pull, our own write then looks like
the doctor's edit (a spurious conflict, or a "move" that puts an older time back into KiviCare); seen
from a removal, an event whose insert answer was lost has no mapping and would be left behind.

So before every insert, patch or delete the sidecar commits what it is about to send
(``sidecar.storage.models.PendingWrite``), and removes it in the transaction that records Google's
answer. A pull compares a changed event with what was sent (``echo``) before treating it as the
doctor's change (DESIGN invariant 4); a removal deletes the event id of an unconfirmed insert, where
404/410 means there was nothing to remove (invariant 1). The record survives crashes because it is
committed before the call, as Odoo's ``need_sync`` and the outbox are.
"""

from __future__ import annotations

from datetime import datetime

from sidecar.calendars.base import CalendarEvent
from sidecar.storage import transaction
from sidecar.storage.models import PendingWrite, utcnow

#: Entries kept per (appointment, calendar): a burst of changes during an outage sends a few versions.
KEEP = 10


def record(appointment_id: str, connection_id: int, calendar_id: str, event_id: str, op: str,
           body: dict | None = None) -> None:
    """Commit, before the call, that ``op`` ("write" with the fields we own, or "delete") goes to Google."""
    entry = {"op": op, "body": body} if op == "write" else {"op": op}
    now = utcnow()
    with transaction():
        row = PendingWrite.get_or_none((PendingWrite.appointment_id == appointment_id)
                                       & (PendingWrite.calendar_id == calendar_id))
        if row is None:
            PendingWrite.create(appointment_id=appointment_id, connection=connection_id, calendar_id=calendar_id,
                                event_id=event_id, sent=[entry], started_at=now, updated_at=now)
            return
        sent = list(row.sent or [])
        if not sent or sent[-1] != entry:  # a retry of the same version adds nothing
            sent = (sent + [entry])[-KEEP:]
        PendingWrite.update(sent=sent, event_id=event_id, connection=connection_id, updated_at=now).where(
            PendingWrite.id == row.id).execute()


def clear(appointment_id: str, calendar_id: str) -> None:
    """Google's answer is recorded: nothing is pending any more. Call inside the recording transaction."""
    PendingWrite.delete().where((PendingWrite.appointment_id == appointment_id)
                                & (PendingWrite.calendar_id == calendar_id)).execute()


def find(appointment_id: str, calendar_id: str) -> PendingWrite | None:
    """The unconfirmed writes for ``appointment_id`` in ``calendar_id``, or None."""
    return PendingWrite.get_or_none((PendingWrite.appointment_id == appointment_id)
                                    & (PendingWrite.calendar_id == calendar_id))


def unconfirmed_inserts(appointment_id: str, connection_id: int | None = None) -> list[PendingWrite]:
    """Pending rows of ``appointment_id`` (optionally of one connection) that sent a write: an event may
    exist in Google that no mapping knows of."""
    query = PendingWrite.select().where(PendingWrite.appointment_id == appointment_id)
    if connection_id is not None:
        query = query.where(PendingWrite.connection == connection_id)
    return [row for row in query if any(e.get("op") == "write" for e in row.sent or [])]


def echo(event: CalendarEvent, pending: PendingWrite | None) -> dict | None:
    """The entry of ``pending`` that ``event`` (as read from Google) shows, or None.

    A write matches when the event holds every field we sent that a pull compares (times as UTC
    instants, status, title, description, location); a delete matches a cancelled event (tombstone).
    """
    if pending is None:
        return None
    for entry in reversed(pending.sent or []):
        if entry.get("op") == "delete":
            if event.cancelled:
                return entry
        elif not event.cancelled and _shows(event, entry.get("body") or {}):
            return entry
    return None


def _shows(event: CalendarEvent, body: dict) -> bool:
    for key in ("start", "end"):
        text = (body.get(key) or {}).get("dateTime")
        if text and getattr(event, key) != datetime.fromisoformat(text):
            return False
    if body.get("status") and event.status != body["status"]:
        return False
    return all((getattr(event, name) or "") == (body.get(name) or "")
               for name in ("summary", "description", "location") if name in body)
