"""Queries whose SQL is built once per database and then run with other values (the push path's reads).

Peewee builds a query's SQL from its expression tree on every run: ~0.2 ms for a lookup by key, against
~0.01 ms for SQLite to answer it, and a push makes several. ``Prepared`` builds the SQL once per database
(placeholders and quoting differ between SQLite, PostgreSQL and MariaDB) with sample values standing for
the caller's, and runs it through ``Model.raw``, which still converts each column as the model's fields do.

Only plain values may vary (``str`` and ``int`` columns, compared as they are); constants written into the
query (a state name, a limit) stay as built.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Callable

import peewee

from .db import database

_samples = itertools.count(1)


class Prepared:
    """``Prepared(build, str, int, …)``: ``build(*samples)`` returns the peewee SELECT, the samples standing
    for the values of those types; ``rows(*values)`` runs it with ``values`` in their place and returns the
    model instances (``Model.raw``).

    Raises ValueError at the first run when a sample does not reach the SQL as a parameter of its own (a
    value the field converts, such as a datetime, cannot be prepared this way).
    """

    def __init__(self, build: Callable[..., peewee.ModelSelect], *types: type):
        self._build, self._types = build, types
        # database -> (model, SQL, parameters, positions of each value): built once per database
        self._built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _sql(self):
        db = database.obj
        built = self._built.get(db)
        if built is None:
            samples = [f"\x00prepared-{next(_samples)}" if kind is str else -(10 ** 12 + next(_samples))
                       for kind in self._types]
            query = self._build(*samples)
            try:
                sql, params = query.sql()
            except (AttributeError, TypeError, ValueError) as exc:  # a field converting the sample
                raise ValueError(f"cannot prepare this query: a field converts its value ({exc})") from exc
            where = [[i for i, p in enumerate(params) if p == sample] for sample in samples]
            if any(not w for w in where):
                raise ValueError(f"a sample value is not a parameter of {sql!r}")
            built = (query.model, sql, list(params), where)
            with self._lock:
                self._built[db] = built
        return built

    def rows(self, *values) -> list:
        """The rows for ``values`` (in the order of the types given), as model instances."""
        model, sql, params, where = self._sql()
        params = list(params)
        for positions, value in zip(where, values):
            for i in positions:
                params[i] = value
        return list(model.raw(sql, *params))

    def first(self, *values):
        """The first row for ``values``, or None."""
        found = self.rows(*values)
        return found[0] if found else None
