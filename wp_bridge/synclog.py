"""The sync log: what the sidecar did, for the dashboard and the log page. Ids and outcomes, no patient data."""

from __future__ import annotations

from sidecar.storage.models import SyncLog, utcnow
from sidecar.storage.prepared import PreparedWrite

KIVICARE_TO_GOOGLE = "kivicare→google"
GOOGLE_TO_KIVICARE = "google→kivicare"
_COLUMNS = (SyncLog.at, SyncLog.doctor_id, SyncLog.appointment_id, SyncLog.action, SyncLog.outcome, SyncLog.direction,
            SyncLog.error_class, SyncLog.message)
# Built once (sidecar/storage/prepared.py): every push writes a row, and peewee would build each INSERT anew.
_INSERT = PreparedWrite(lambda *values: SyncLog.insert(dict(zip(_COLUMNS, values))), *_COLUMNS)


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
    _INSERT.run(**sync_row(action, outcome, doctor_id=doctor_id, appointment_id=appointment_id, error=error,
                           message=message, direction=direction))


def log_many(rows: list[dict]) -> None:
    """Rows made by ``sync_row`` (e.g. the outcomes of one batch of pushes): one INSERT each, its SQL built once."""
    _INSERT.run_many(rows)
