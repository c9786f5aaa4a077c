"""Connecting and disconnecting a doctor's Google account (used by the web pages, the demo and tests).

``complete_authorization`` stores the grant after the OAuth callback; ``choose_calendar`` makes the
connection active and starts the catch-up sync; ``disconnect`` revokes the grant and stops syncing
(events already in Google stay, as doctors expect).
"""

from __future__ import annotations

from .calendars.base import CalendarError, CalendarInfo
from .calendars.google_oauth import revoke
from .storage.models import Connection, Doctor, utcnow

PREFERRED_CALENDAR_NAMES = ("clinic appointments", "kivicare", "appointments")


def complete_authorization(runtime, doctor_id: int, credentials) -> Connection:
    """Upsert the doctor's Google connection with a fresh grant; state "pending" until a calendar is chosen.

    Raises CalendarError when Google cannot be asked for the account's address.
    """
    Doctor.get_or_create(id=doctor_id)
    connection, _ = Connection.get_or_create(doctor=doctor_id, provider="google")
    runtime.save_credentials(connection, credentials)
    connection.account_email = runtime.google_for(connection).account_email()
    connection.state = "pending" if not connection.calendar_id else "active"
    connection.last_error = ""
    connection.save()
    if connection.state == "active":
        runtime.bridge.on_connected(connection)  # a reconnect: kept jobs run now, catch-up poll
    return connection


WRITABLE = ("owner", "writer")


def calendars(runtime, connection: Connection, *, include_read_only: bool = False) -> list[CalendarInfo]:
    """The account's writable calendars, the preferred default first; with ``include_read_only`` also
    those it may only read or see as free/busy (they can block time, not receive appointments)."""
    found = runtime.google_for(connection).list_calendars("freeBusyReader" if include_read_only else "writer")
    return sorted(found, key=lambda c: (c.name.lower() not in PREFERRED_CALENDAR_NAMES, not c.primary, c.name.lower()))


def choose_calendar(runtime, connection: Connection, calendar_id: str) -> Connection:
    """Make ``calendar_id`` the destination calendar and start syncing. Raises ValueError if not writable."""
    choices = {c.id: c for c in runtime.google_for(connection).list_calendars()}
    if calendar_id not in choices:
        raise ValueError("That calendar is not in this Google account's writable calendars.")
    chosen = choices[calendar_id]
    connection.calendar_id, connection.calendar_name = chosen.id, chosen.name
    connection.calendar_timezone = chosen.timezone
    connection.state = "active"
    connection.updated_at = utcnow()
    connection.save()
    runtime.bridge.on_connected(connection)
    return connection


def disconnect(runtime, connection: Connection) -> None:
    """Revoke the grant (best effort), forget the tokens, stop syncing. Google events stay."""
    if connection.refresh_token:
        try:
            revoke(runtime.cfg, runtime.box.decrypt(connection.refresh_token))
        except Exception:  # the grant may already be gone; disconnecting must still work
            pass
    connection.refresh_token = connection.access_token = None
    connection.token_expiry = None
    connection.state = "disconnected"
    connection.updated_at = utcnow()
    connection.save()
    runtime.bridge.on_disconnected(connection)


__all__ = ["complete_authorization", "calendars", "choose_calendar", "disconnect", "CalendarError"]
