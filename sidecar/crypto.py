"""Secrets at rest: Fernet (cryptography) with a key file created 0600 on first run.

The key file sits beside the database by default (``[security] key_file``). Losing it makes the
stored secrets (Google client secret, refresh tokens, KiviCare application password) unreadable;
the admin then re-enters them and doctors reconnect. Nothing here logs a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretError(RuntimeError):
    """A stored secret cannot be decrypted (wrong or replaced key file)."""


class SecretBox:
    """Encrypts and decrypts short strings with the key in ``key_path``.

    ``SecretBox(path)`` creates the key file (mode 0600, exclusive create) if it is missing.
    ``encrypt(str) -> str`` (URL-safe token), ``decrypt(str) -> str`` raising ``SecretError``.
    """

    def __init__(self, key_path: str | os.PathLike):
        self.key_path = Path(key_path)
        self._fernet = Fernet(self._load_or_create())

    def _load_or_create(self) -> bytes:
        try:
            return self.key_path.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        try:
            # O_EXCL: two processes starting at once must not write two different keys.
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.key_path.read_bytes().strip()
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
        return key

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError) as exc:
            raise SecretError(f"cannot decrypt a stored secret with {self.key_path}; re-enter it") from exc


def mask(secret: str | None) -> str:
    """A secret as the UI may show it: the last 4 characters only ("••••wxyz"), or "" when unset."""
    if not secret:
        return ""
    return "••••" + secret[-4:] if len(secret) > 8 else "••••"
