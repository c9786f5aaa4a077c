"""Queries whose SQL is built once per database and then run with other values (the push path's reads and
writes).

Peewee builds a query's SQL from its expression tree on every run: ~0.2 ms for a lookup by key and ~0.5 ms
for an upsert of a dozen columns, against ~0.01 ms for SQLite to run either, and every push makes several.
``Prepared`` (reads) and ``PreparedWrite`` (INSERT, UPDATE, DELETE) build the SQL once per database
(placeholders and quoting differ between SQLite, PostgreSQL and MariaDB) with sample values standing for
the caller's, note where each sample landed among the parameters, and put the caller's values there.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Callable

import peewee

from .db import database

_samples = itertools.count(1)


def _sample() -> str:
    return f"\x00prepared-{next(_samples)}"


class _BuiltOnce:
    """The SQL of ``self._make()`` (``(query, samples)``), built once per database: (query, SQL, parameters,
    positions of each sample among the parameters). Raises ValueError when a sample is not a parameter."""

    def __init__(self):
        self._built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _make(self) -> tuple[peewee.Node, list]:
        raise NotImplementedError

    def _sql(self):
        db = database.obj
        built = self._built.get(db)
        if built is None:
            query, samples = self._make()
            sql, params = self._render(query)
            where = [[i for i, p in enumerate(params) if isinstance(p, (str, int)) and p == sample]
                     for sample in samples]
            if any(not w for w in where):
                raise ValueError(f"a sample value is not a parameter of {sql!r}")
            self._check(sql, params, samples)
            built = (query, sql, list(params), where)
            with self._lock:
                self._built[db] = built
        return built

    @staticmethod
    def _render(query) -> tuple[str, list]:
        try:
            return query.sql()
        except (AttributeError, TypeError, ValueError) as exc:  # a field converting the sample
            raise ValueError(f"cannot prepare this query: a field converts its value ({exc})") from exc

    def _check(self, sql: str, params: list, samples: list) -> None:
        """Further checks of a first build (none for reads)."""

    @staticmethod
    def _filled(params: list, where: list, values) -> list:
        params = list(params)
        for positions, value in zip(where, values):
            for i in positions:
                params[i] = value
        return params


class Prepared(_BuiltOnce):
    """``Prepared(build, str, int, …)``: ``build(*samples)`` returns the peewee SELECT, the samples standing
    for the values of those types; ``rows(*values)`` runs it with ``values`` in their place and returns the
    model instances (``Model.raw``, which converts each column as the model's fields do).

    Only plain values may vary (``str`` and ``int`` columns, compared as they are); constants written into
    the query (a state name, a limit) stay as built. Raises ValueError at the first run when a sample does
    not reach the SQL as a parameter of its own (a value the field converts, such as a datetime).
    """

    def __init__(self, build: Callable[..., peewee.ModelSelect], *types: type):
        super().__init__()
        self._build, self._types = build, types

    def _make(self):
        samples = [_sample() if kind is str else -(10 ** 12 + next(_samples)) for kind in self._types]
        return self._build(*samples), samples

    def rows(self, *values) -> list:
        """The rows for ``values`` (in the order of the types given), as model instances."""
        query, sql, params, where = self._sql()
        return list(query.model.raw(sql, *self._filled(params, where, values)))

    def first(self, *values):
        """The first row for ``values``, or None."""
        found = self.rows(*values)
        return found[0] if found else None


class PreparedWrite(_BuiltOnce):
    """``PreparedWrite(build, field, …)``: ``build(*placeholders)`` returns a peewee INSERT, UPDATE or DELETE
    with a placeholder wherever a varying value goes (one per field given, in that order); ``run(*values)``
    executes its SQL with each value converted by its field's ``db_value``, as peewee itself would (a
    ``None`` field: the value goes as it is), and returns the rows written (the cursor's rowcount).

    Raises ValueError at the first run when a placeholder does not reach the SQL, or when a second build
    gives other constants: a callable default (``created_at=utcnow``) would be frozen at the first build, so
    such a column must be given a placeholder. Database errors are raised as peewee raises them
    (``IntegrityError`` …), and the statement joins the caller's transaction as ``execute`` does.
    """

    def __init__(self, build: Callable[..., peewee.Node], *fields: peewee.Field | None):
        super().__init__()
        self._build, self._fields = build, fields

    def _make(self):
        samples = [_sample() for _ in self._fields]
        return self._build(*[peewee.Value(sample, converter=False) for sample in samples]), samples

    def _check(self, sql, params, samples):
        again, again_samples = self._make()
        sql_again, params_again = self._render(again)
        if sql_again != sql or _constants(params, samples) != _constants(params_again, again_samples):
            raise ValueError(f"a constant of {sql!r} changes from one build to the next (a callable default?): "
                             "give that column a placeholder")

    def run(self, *values, **named) -> int:
        """Execute with ``values`` (one per field given, in order; or by field name: ``run(**row)``); returns
        the cursor's rowcount. Raises TypeError when a value is missing or named twice."""
        _query, sql, params, where = self._sql()
        return database.execute_sql(sql, self._filled(params, where, self._converted(values, named))).rowcount

    def run_many(self, rows: list[dict]) -> None:
        """``run(**row)`` for each row (``{field name: value}``), the SQL built once for all."""
        for row in rows:
            self.run(**row)

    def _converted(self, values: tuple, named: dict) -> list:
        if named:
            rest = self._fields[len(values):]
            try:
                values = (*values, *[named.pop(f.name) for f in rest])
            except (KeyError, AttributeError) as exc:
                raise TypeError(f"no value for {exc}") from None
            if named:
                raise TypeError(f"unexpected values: {', '.join(named)}")
        if len(values) != len(self._fields):
            raise TypeError(f"{len(self._fields)} values expected, {len(values)} given")
        return [value if f is None else f.db_value(value) for f, value in zip(self._fields, values)]


def _constants(params: list, samples: list) -> list:
    placeholders = set(samples)
    return [p for p in params if not (isinstance(p, str) and p in placeholders)]
