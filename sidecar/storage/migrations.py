"""Versioned schema migrations, run at every start (``open_database``).

Each migration is ``(version, name, function(db))`` and runs once, inside a transaction, in order;
``schema_version`` records what ran. Migrations must be idempotent (create tables ``safe=True``,
add columns only when missing) because migration 1 creates tables from the live models: a later
migration that adds a column to a model finds it already there on a fresh database.
"""

from __future__ import annotations

import logging

import peewee
from playhouse.migrate import SchemaMigrator, migrate as run_operations  # noqa: F401  (used by later migrations)

from . import models as m

log = logging.getLogger(__name__)


def _v1_initial(db: peewee.Database) -> None:
    db.create_tables([m.SettingRow, m.AdminUser, m.OneTimeToken, m.OAuthState, m.Doctor, m.Connection,
                      m.Appointment, m.RejectedRow, m.MeetMapping, m.Job, m.SyncLog], safe=True)


def _v2_seen_keys(db: peewee.Database) -> None:
    db.create_tables([m.SeenKey], safe=True)


def _v3_two_way(db: peewee.Database) -> None:
    db.create_tables([m.SyncCursor, m.BusyBlock, m.Conflict], safe=True)
    add_column_if_missing(db, "calendar_connections", "busy_calendars", m.Connection.busy_calendars)
    add_column_if_missing(db, "kc_appointments", "changed_at", m.Appointment.changed_at)


MIGRATIONS = (
    (1, "initial: settings, accounts, doctors, connections, appointments, meet mappings, jobs, sync log",
     _v1_initial),
    (2, "seen keys: single-use SSO tokens from the companion plugin", _v2_seen_keys),
    (3, "two-way sync: sync cursors, busy blocks, conflicts", _v3_two_way),
)


def add_column_if_missing(db: peewee.Database, table: str, column: str, field: peewee.Field) -> None:
    """For later migrations: add ``column`` to ``table`` unless it exists already."""
    if column not in {c.name for c in db.get_columns(table)}:
        run_operations(SchemaMigrator.from_database(db).add_column(table, column, field))


def migrate(db: peewee.Database) -> list[int]:
    """Apply pending migrations; returns the versions applied now. Safe to call from several processes."""
    with db.bind_ctx([m.SchemaVersion]):
        db.create_tables([m.SchemaVersion], safe=True)
        applied_now = []
        for version, name, function in MIGRATIONS:
            with db.atomic():
                if m.SchemaVersion.get_or_none(m.SchemaVersion.version == version):
                    continue
                function(db)
                m.SchemaVersion.create(version=version, name=name)
                applied_now.append(version)
                log.info("database migration %d applied: %s", version, name)
        return applied_now


def current_version(db: peewee.Database) -> int:
    """The highest applied migration version (0 for an empty database)."""
    with db.bind_ctx([m.SchemaVersion]):
        row = m.SchemaVersion.select(peewee.fn.MAX(m.SchemaVersion.version)).scalar()
        return int(row or 0)
