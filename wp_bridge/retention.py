"""Log retention: old rows of the tables that only grow are deleted daily, in small batches.

``sync.log_retention_days`` (default 90) bounds:
- ``sync_log`` rows older than that;
- resolved conflicts resolved longer ago than that (open ones stay, however old);
- finished jobs (``done``) not touched for that long (a job row is reused by its dedupe key, so a
  later change of the same appointment simply creates it again);
- malformed KiviCare rows not seen for that long;
and, whatever the setting, what is useless once expired: one-time links (setup, Connect) expired or
used more than a day ago, OAuth states older than their 30 minutes, seen single-use keys past expiry.

Each table is purged ``BATCH`` rows at a time (primary keys read first, then deleted by key), so no
single DELETE holds a big lock on SQLite, PostgreSQL or MariaDB while workers write. The audit trail
of admin actions is not touched here: it is a record, not a log to rotate.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import peewee

from sidecar.calendars.google_oauth import STATE_TTL
from sidecar.storage import transaction
from sidecar.storage.models import (Conflict, Job, OAuthState, OneTimeToken, RejectedRow, SeenKey, SyncLog,
                                    utcnow)

log = logging.getLogger(__name__)

BATCH = 500
USED_LINK_GRACE = timedelta(days=1)  # a just-used link may be released again if its step failed
MAX_BATCHES = 10_000  # per table per run: a bound, not an expected number


def retention_days(cfg) -> int | None:
    """``sync.log_retention_days`` as a number of days, or None when it is not a whole number ≥ 1
    (then nothing is purged: a bad value must never mean "delete everything")."""
    try:
        days = int(cfg.get("sync.log_retention_days"))
    except (TypeError, ValueError):
        return None
    return days if days >= 1 else None


def _purge(model: type[peewee.Model], condition, batch: int, pause: float) -> int:
    """Delete the rows of ``model`` matching ``condition``, ``batch`` primary keys at a time."""
    key = model._meta.primary_key
    removed = 0
    for _ in range(MAX_BATCHES):
        ids = [row[0] for row in model.select(key).where(condition).order_by(key).limit(batch).tuples()]
        if not ids:
            break
        with transaction():
            removed += model.delete().where(key.in_(ids)).execute()
        if len(ids) < batch:
            break
        if pause:
            time.sleep(pause)  # let the workers' writes in between batches
    return removed


def purge(cfg, *, now: datetime | None = None, batch: int = BATCH, pause: float = 0.05) -> dict[str, int]:
    """Delete what retention allows. Returns ``{table: rows deleted}``; {} when the setting is invalid.

    ``now``: aware UTC (tests pass a fixed time). Raises peewee errors when the database fails (the
    caller logs them and tries again the next day).
    """
    days = retention_days(cfg)
    if days is None:
        log.warning("sync.log_retention_days is not a whole number of days of at least 1: nothing purged")
        return {}
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    removed = {
        "sync_log": _purge(SyncLog, SyncLog.at < cutoff, batch, pause),
        "conflicts": _purge(Conflict, (Conflict.state == "resolved") & (Conflict.resolved_at < cutoff), batch, pause),
        "jobs": _purge(Job, (Job.state == "done") & (Job.updated_at < cutoff), batch, pause),
        "kc_rejected_rows": _purge(RejectedRow, RejectedRow.last_seen_at < cutoff, batch, pause),
        "one_time_tokens": _purge(OneTimeToken, (OneTimeToken.expires_at < now)
                                  | (OneTimeToken.used_at < now - USED_LINK_GRACE), batch, pause),
        "oauth_states": _purge(OAuthState, OAuthState.created_at < now - STATE_TTL, batch, pause),
    }
    # Composite primary key: deleted in one statement, bounded by remember_once's own cleanup.
    removed["seen_keys"] = SeenKey.delete().where(SeenKey.expires_at < now).execute()
    return removed


__all__ = ["purge", "retention_days", "BATCH"]
