"""The database handle: one peewee ``DatabaseProxy`` bound at start from ``[database] url``.

SQLite (the default) runs in WAL mode with a busy timeout so the web threads and the bridge
workers can share the file; PostgreSQL and MySQL/MariaDB URLs go through ``playhouse.db_url``.
"""

from __future__ import annotations

from pathlib import Path

import peewee
from playhouse.db_url import connect

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 10000,  # ms: writers queue instead of failing with "database is locked"
    "synchronous": "normal",  # safe with WAL; a crash loses at most the last transaction
}


def open_database(url: str) -> peewee.Database:
    """Open ``url`` (``sqlite:///path``, ``postgresql://…``, ``mysql://…``), bind the proxy, run migrations.

    Returns the concrete database. Raises ``peewee.OperationalError`` when it cannot be reached.
    """
    from .migrations import migrate

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        db = peewee.SqliteDatabase(url[len("sqlite:///"):], pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    else:
        db = connect(url)
    database.initialize(db)
    db.connect(reuse_if_open=True)
    migrate(db)
    return db


def close_database() -> None:
    """Close this thread's connection (others close when their threads finish)."""
    if database.obj is not None and not database.is_closed():
        database.close()


def transaction():
    """A write transaction. On SQLite it starts with BEGIN IMMEDIATE so two writers never deadlock."""
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()
