"""The sync log: what the sidecar did, for the dashboard and the log page. Ids and outcomes, no patient data."""

from __future__ import annotations

from sidecar.storage.models import SyncLog

KIVICARE_TO_GOOGLE = "kivicare→google"
GOOGLE_TO_KIVICARE = "google→kivicare"


def log_sync(action: str, outcome: str, *, doctor_id: int | None = None, appointment_id: str = "",
             error: Exception | None = None, message: str = "", direction: str = KIVICARE_TO_GOOGLE) -> None:
    """One row: ``action`` (create, update, delete, cancel, reschedule, …), ``outcome`` (ok, retry, error,
    skipped), the error's class name and a message meant for the admin (never event or patient text)."""
    SyncLog.create(doctor_id=doctor_id, appointment_id=appointment_id or "", action=action, outcome=outcome,
                   direction=direction, error_class=type(error).__name__ if error else "",
                   message=(message or str(error or ""))[:500])
