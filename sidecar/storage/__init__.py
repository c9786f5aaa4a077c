"""Storage: peewee models on SQLite (default, WAL) or any peewee database URL; versioned migrations."""

from .db import database, open_database, close_database, transaction  # noqa: F401
