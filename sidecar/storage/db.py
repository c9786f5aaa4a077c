"""The database handle: one peewee ``DatabaseProxy`` bound at start from ``[database] url``.

SQLite (the default) runs in WAL mode with a busy timeout so the web threads and the bridge
workers can share the file; PostgreSQL and MySQL/MariaDB URLs go through ``playhouse.db_url``
(drivers: psycopg2 and PyMySQL). On MySQL/MariaDB new tables get ``DATETIME(6)`` columns, so times
keep their microseconds as they do on SQLite and PostgreSQL (plain ``DATETIME`` drops them).
Create a MySQL/MariaDB database with ``CHARACTER SET utf8mb4``.
"""

from __future__ import annotations

import time
from pathlib import Path

import peewee
from playhouse.db_url import connect

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {  # applied in this order at every connect
    "busy_timeout": 10000,  # ms: writers queue instead of failing with "database is locked"; first, so
    # that switching a new file to WAL while another process opens it waits too
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",  # safe with WAL; a crash loses at most the last transaction
}

MYSQL_SCHEMES = ("mysql", "mysqlconnector", "mariadbconnector")


def open_database(url: str) -> peewee.Database:
    """Open ``url`` (``sqlite:///path``, ``postgresql://…``, ``mysql://…``), bind the proxy, run migrations.

    Returns the concrete database. Raises ``peewee.OperationalError`` when it cannot be reached.
    """
    from .migrations import migrate

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        db = peewee.SqliteDatabase(url[len("sqlite:///"):], pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    elif url.split(":", 1)[0].split("+", 1)[0] in MYSQL_SCHEMES:
        db = connect(url, field_types={"DATETIME": "DATETIME(6)"})
    else:
        db = connect(url)
    database.initialize(db)
    _connect(db)
    migrate(db)
    return db


def _connect(db: peewee.Database, patience: float = 10.0) -> None:
    # Switching a new SQLite file to WAL needs it to itself for a moment, and SQLite answers "database
    # is locked" at once (no busy wait) when another process opens it just then: try again shortly.
    deadline = time.monotonic() + patience
    while True:
        try:
            db.connect(reuse_if_open=True)
            return
        except peewee.OperationalError as exc:
            if not isinstance(db, peewee.SqliteDatabase) or "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
