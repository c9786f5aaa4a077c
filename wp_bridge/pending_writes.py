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

import peewee

from sidecar.calendars.base import CalendarEvent
from sidecar.storage import database, transaction
from sidecar.storage.models import PendingWrite, utcnow
from sidecar.storage.prepared import Prepared, PreparedWrite

#: Entries kept per (appointment, calendar): a burst of changes during an outage sends a few versions.
KEEP = 10
UNREAD = object()  # ``record``'s ``current`` when the caller did not read the row


def record(appointment_id: str, connection_id: int, calendar_id: str, event_id: str, op: str,
           body: dict | None = None, *, current: PendingWrite | None | object = UNREAD) -> None:
    """Commit, before the call, that ``op`` ("write" with the fields we own, or "delete") goes to Google.

    ``current``: the row of (``appointment_id``, ``calendar_id``) the caller just read (None: there was
    none), so the usual case is one statement. If a pull cleared that row meanwhile, or created one, the
    statement finds so (no row updated, or the unique key refused the insert) and the row is read again.
    Only the job holding the lease of this push writes ``sent``, so nobody else adds entries in between."""
    entry = {"op": op, "body": body} if op == "write" else {"op": op}
    now = utcnow()
    if current is None:
        values = dict(appointment_id=appointment_id, connection=connection_id, calendar_id=calendar_id,
                      event_id=event_id, sent=[entry], started_at=now, updated_at=now)
        try:
            if database.obj.in_transaction():
                with transaction():  # a savepoint, so a refusal leaves the caller's transaction usable
                    _INSERT.run(**values)
            else:
                _INSERT.run(**values)  # one statement commits on its own
            return
        except peewee.IntegrityError:
            pass  # created meanwhile: read it below
    elif current is not UNREAD:
        if _APPEND.run(_appended(current.sent, entry), event_id, connection_id, now, current.id):
            return
    with transaction():
        row = PendingWrite.get_or_none((PendingWrite.appointment_id == appointment_id)
                                       & (PendingWrite.calendar_id == calendar_id))
        if row is None:
            PendingWrite.create(appointment_id=appointment_id, connection=connection_id, calendar_id=calendar_id,
                                event_id=event_id, sent=[entry], started_at=now, updated_at=now)
            return
        PendingWrite.update(sent=_appended(row.sent, entry), event_id=event_id, connection=connection_id,
                            updated_at=now).where(PendingWrite.id == row.id).execute()


def _appended(sent: list | None, entry: dict) -> list:
    sent = list(sent or [])
    if not sent or sent[-1] != entry:  # a retry of the same version adds nothing
        sent = (sent + [entry])[-KEEP:]
    return sent


def clear(appointment_id: str, calendar_id: str) -> None:
    """Google's answer is recorded: nothing is pending any more. Call inside the recording transaction."""
    _CLEAR.run(appointment_id, calendar_id)


def find(appointment_id: str, calendar_id: str) -> PendingWrite | None:
    """The unconfirmed writes for ``appointment_id`` in ``calendar_id``, or None."""
    return PendingWrite.get_or_none((PendingWrite.appointment_id == appointment_id)
                                    & (PendingWrite.calendar_id == calendar_id))


def of_appointment(appointment_id: str) -> list[PendingWrite]:
    """Every pending row of ``appointment_id`` (one per calendar), in one query: a push reads them once and
    filters with ``inserts_among`` and by calendar."""
    return _OF_APPOINTMENT.rows(appointment_id)


# Built once (sidecar/storage/prepared.py): every push makes these.
_OF_APPOINTMENT = Prepared(lambda key: PendingWrite.select().where(PendingWrite.appointment_id == key), str)
_COLUMNS = (PendingWrite.appointment_id, PendingWrite.connection, PendingWrite.calendar_id, PendingWrite.event_id,
            PendingWrite.sent, PendingWrite.started_at, PendingWrite.updated_at)
_INSERT = PreparedWrite(lambda *values: PendingWrite.insert(dict(zip(_COLUMNS, values))), *_COLUMNS)
_APPEND = PreparedWrite(lambda sent, event_id, connection, at, row_id: PendingWrite.update(
    {PendingWrite.sent: sent, PendingWrite.event_id: event_id, PendingWrite.connection: connection,
     PendingWrite.updated_at: at}).where(PendingWrite.id == row_id),
    PendingWrite.sent, PendingWrite.event_id, PendingWrite.connection, PendingWrite.updated_at, PendingWrite.id)
_CLEAR = PreparedWrite(lambda key, calendar: PendingWrite.delete().where(
    (PendingWrite.appointment_id == key) & (PendingWrite.calendar_id == calendar)),
    PendingWrite.appointment_id, PendingWrite.calendar_id)


def inserts_among(rows: list[PendingWrite], connection_id: int | None = None) -> list[PendingWrite]:
    """Of ``rows``, those (optionally of one connection) that sent a write: an event may exist in Google
    that no mapping knows of."""
    return [row for row in rows if (connection_id is None or row.connection_id == connection_id)
            and any(e.get("op") == "write" for e in row.sent or [])]


def unconfirmed_inserts(appointment_id: str, connection_id: int | None = None) -> list[PendingWrite]:
    """Pending rows of ``appointment_id`` (optionally of one connection) that sent a write: an event may
    exist in Google that no mapping knows of."""
    return inserts_among(of_appointment(appointment_id), connection_id)


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
