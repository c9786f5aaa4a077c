"""The settings page's store: values in the ``settings`` table, secrets encrypted with the key file.

Every ``Config.get`` of a setting the page may change lands here, about ten per pushed event, so the
table (a few dozen rows) is read whole at most once per ``ttl`` seconds (1 by default) instead of once
per call (issue 7: a tenth of a push's time went to these reads). A change made through this store is
seen at once by this process; one made by another process (a ``worker``, the web pages of another
``serve``) within ``ttl`` seconds.
"""

from __future__ import annotations

import threading
import time

from .crypto import SecretBox
from .storage.models import SettingRow, utcnow


class SettingsStore:
    """``get(name) -> str | None`` and ``set(name, text, secret)``; plugs into ``Config.attach_store``."""

    def __init__(self, box: SecretBox, ttl: float = 1.0):
        self.box = box
        self.ttl = ttl
        self._rows: dict[str, tuple[str, bool]] | None = None  # key -> (stored value, encrypted)
        self._read_at = 0.0  # time.monotonic() of the last read of the table
        self._lock = threading.Lock()

    def _snapshot(self) -> dict[str, tuple[str, bool]]:
        rows = self._rows
        if rows is None or time.monotonic() - self._read_at > self.ttl:
            with self._lock:
                read_at = time.monotonic()
                rows = {r.key: (r.value, bool(r.encrypted)) for r in SettingRow.select()}
                self._rows, self._read_at = rows, read_at
        return rows

    def get(self, name: str) -> str | None:
        value, encrypted = self._snapshot().get(name, (None, False))
        if value is None or value == "":
            return None
        return self.box.decrypt(value) if encrypted else value

    def set(self, name: str, text: str, secret: bool = False) -> None:
        value = self.box.encrypt(text) if (secret and text) else text
        (SettingRow.insert(key=name, value=value, encrypted=bool(secret and text), updated_at=utcnow())
         .on_conflict(conflict_target=[SettingRow.key],
                      update={SettingRow.value: value, SettingRow.encrypted: bool(secret and text),
                              SettingRow.updated_at: utcnow()})
         .execute())
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the snapshot: the next ``get`` reads the table (after a change made outside ``set``)."""
        self._rows = None
