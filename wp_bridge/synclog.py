"""The sync log: what the sidecar did, for the dashboard and the log page. Ids and outcomes, no patient data."""

from __future__ import annotations

import peewee

from sidecar.storage.models import SyncLog, utcnow

KIVICARE_TO_GOOGLE = "kivicare→google"
GOOGLE_TO_KIVICARE = "google→kivicare"
CHUNK = 100  # rows per INSERT: 100 × 8 columns stays far below SQLite's limit on bound variables


def sync_row(action: str, outcome: str, *, doctor_id: int | None = None, appointment_id: str = "",
             error: Exception | None = None, message: str = "", direction: str = KIVICARE_TO_GOOGLE) -> dict:
    """The row ``log_sync`` writes, stamped now (UTC), for ``log_many``: ``{column: value}``."""
    return dict(at=utcnow(), doctor_id=doctor_id, appointment_id=appointment_id or "", action=action,
                outcome=outcome, direction=direction, error_class=type(error).__name__ if error else "",
                message=(message or str(error or ""))[:500])


def log_sync(action: str, outcome: str, *, doctor_id: int | None = None, appointment_id: str = "",
             error: Exception | None = None, message: str = "", direction: str = KIVICARE_TO_GOOGLE) -> None:
    """One row: ``action`` (create, update, delete, cancel, reschedule, …), ``outcome`` (ok, retry, error,
    skipped), the error's class name and a message meant for the admin (never event or patient text)."""
    SyncLog.insert(sync_row(action, outcome, doctor_id=doctor_id, appointment_id=appointment_id, error=error,
                            message=message, direction=direction)).execute()


def log_many(rows: list[dict]) -> None:
    """Rows made by ``sync_row`` (e.g. the outcomes of one batch of pushes), in a few INSERT statements."""
    for chunk in peewee.chunked(rows, CHUNK):
        SyncLog.insert_many(chunk).execute()
