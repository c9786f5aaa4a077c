"""Versioned schema migrations, run at every start (``open_database``).

Each migration is ``(version, name, function(db))`` and runs once, inside a transaction, in order;
``schema_version`` records what ran. Migrations must be idempotent (create tables ``safe=True``,
add columns only when missing) because migration 1 creates tables from the live models: a later
migration that adds a column to a model finds it already there on a fresh database.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

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


def _v4_audit(db: peewee.Database) -> None:
    db.create_tables([m.AuditEntry], safe=True)


def _v5_pending_writes(db: peewee.Database) -> None:
    db.create_tables([m.PendingWrite], safe=True)


def _v6_first_sync_confirmation(db: peewee.Database) -> None:
    add_column_if_missing(db, "calendar_connections", "sync_confirmed_at", m.Connection.sync_confirmed_at)
    add_column_if_missing(db, "calendar_connections", "sync_confirmed_by", m.Connection.sync_confirmed_by)
    # Connections that already had a calendar were syncing: they stay confirmed. Only new connections
    # (and resets) wait for someone to confirm the first-sync preview.
    m.Connection.update(sync_confirmed_at=m.utcnow(), sync_confirmed_by="migration").where(
        m.Connection.calendar_id.is_null(False) & m.Connection.sync_confirmed_at.is_null()).execute()


def _v7_sync_log_outcome_index(db: peewee.Database) -> None:
    # Only this index, and only when missing (MySQL/MariaDB have no CREATE INDEX IF NOT EXISTS in peewee).
    existing = {index.name for index in db.get_indexes("sync_log")}
    for index in m.SyncLog._meta.fields_to_index():
        if index._name == "sync_log_outcome_at" and index._name not in existing:
            db.execute(m.SyncLog._schema._create_index(index, safe=False))


MIGRATIONS = (
    (1, "initial: settings, accounts, doctors, connections, appointments, meet mappings, jobs, sync log",
     _v1_initial),
    (2, "seen keys: single-use SSO tokens from the companion plugin", _v2_seen_keys),
    (3, "two-way sync: sync cursors, busy blocks, conflicts", _v3_two_way),
    (4, "audit trail of admin actions", _v4_audit),
    (5, "pending writes: Google writes sent but not yet confirmed (echoes, lost answers)", _v5_pending_writes),
    (6, "first-sync confirmation: sync waits until someone confirms the preview", _v6_first_sync_confirmation),
    (7, "sync log index on (outcome, at) for failure filters and counts", _v7_sync_log_outcome_index),
)


def add_column_if_missing(db: peewee.Database, table: str, column: str, field: peewee.Field) -> None:
    """For later migrations: add ``column`` to ``table`` unless it exists already."""
    if column not in {c.name for c in db.get_columns(table)}:
        run_operations(SchemaMigrator.from_database(db).add_column(table, column, field))


def migrate(db: peewee.Database) -> list[int]:
    """Apply pending migrations; returns the versions applied now. Safe to call from several processes.

    Processes that start together on a fresh database take turns: a lock held for the whole run
    (PostgreSQL: an advisory lock; MySQL/MariaDB: ``GET_LOCK``; SQLite: each migration in a
    ``BEGIN IMMEDIATE`` transaction), so each migration runs once and the others find it done.
    """
    with db.bind_ctx([m.SchemaVersion]), _migration_lock(db):
        db.create_tables([m.SchemaVersion], safe=True)
        applied_now = []
        for version, name, function in MIGRATIONS:
            with _write_transaction(db):
                if m.SchemaVersion.get_or_none(m.SchemaVersion.version == version):
                    continue
                function(db)
                m.SchemaVersion.create(version=version, name=name)
                applied_now.append(version)
                log.info("database migration %d applied: %s", version, name)
        return applied_now


MIGRATION_LOCK = 0x6B63_5369_6465  # an arbitrary PostgreSQL advisory lock key ("kcSide")


@contextmanager
def _migration_lock(db: peewee.Database):
    """One process at a time migrates (this connection holds the lock until the end)."""
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    elif isinstance(db, peewee.MySQLDatabase):
        name = f"kc_sidecar_migrate:{db.database}"[:64]  # GET_LOCK names are server-wide
        if db.execute_sql("SELECT GET_LOCK(%s, %s)", (name, 300)).fetchone()[0] != 1:
            raise peewee.OperationalError("another process has been migrating this database for 5 minutes")
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK(%s)", (name,))
    else:
        yield


def _write_transaction(db: peewee.Database):
    # SQLite: take the write lock first, so a second process waits (busy timeout) instead of failing
    # with "database is locked" when both try to upgrade a read transaction to a write.
    return db.atomic("IMMEDIATE") if isinstance(db, peewee.SqliteDatabase) else db.atomic()


def current_version(db: peewee.Database) -> int:
    """The highest applied migration version (0 for an empty database)."""
    with db.bind_ctx([m.SchemaVersion]):
        row = m.SchemaVersion.select(peewee.fn.MAX(m.SchemaVersion.version)).scalar()
        return int(row or 0)
