"""The settings page's store: values in the ``settings`` table, secrets encrypted with the key file."""

from __future__ import annotations

from .crypto import SecretBox
from .storage.models import SettingRow, utcnow


class SettingsStore:
    """``get(name) -> str | None`` and ``set(name, text, secret)``; plugs into ``Config.attach_store``."""

    def __init__(self, box: SecretBox):
        self.box = box

    def get(self, name: str) -> str | None:
        row = SettingRow.get_or_none(SettingRow.key == name)
        if row is None or row.value is None or row.value == "":
            return None
        return self.box.decrypt(row.value) if row.encrypted else row.value

    def set(self, name: str, text: str, secret: bool = False) -> None:
        value = self.box.encrypt(text) if (secret and text) else text
        (SettingRow.insert(key=name, value=value, encrypted=bool(secret and text), updated_at=utcnow())
         .on_conflict(conflict_target=[SettingRow.key],
                      update={SettingRow.value: value, SettingRow.encrypted: bool(secret and text),
                              SettingRow.updated_at: utcnow()})
         .execute())
