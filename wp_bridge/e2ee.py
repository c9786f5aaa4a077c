"""KiviCare's transport encryption ("E2EE", API.md 1.5), from the client's side.

Once a browser opens the KiviCare dashboard as a WordPress user, KiviCare registers that browser's
X25519 key for the user and encrypts every response to that user: the body becomes the JSON string
``base64(nonce[24] || crypto_box(json))`` and the header ``X-KiviCare-Encrypted: true`` is set.
The sidecar copes by registering its own key (``POST /server-key``, ``POST /config/register-key``)
and decrypting with PyNaCl. The last registration wins, so a person still using the sidecar's
account keeps breaking this; the admin is told to give the sidecar a user nobody logs in with.
"""

from __future__ import annotations

import base64
import json

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey


class DecryptError(ValueError):
    """The body was encrypted for a key other than ours."""


class ClientKey:
    """Our key pair plus the server's public key. ``public_key_b64`` is what register-key receives."""

    def __init__(self, server_public_key_b64: str):
        self._secret = PrivateKey.generate()
        self._box = Box(self._secret, PublicKey(base64.b64decode(server_public_key_b64)))

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(bytes(self._secret.public_key)).decode("ascii")

    def decrypt_body(self, body: str):
        """Decode an encrypted response body (the JSON string) into the JSON value. Raises DecryptError."""
        try:
            blob = base64.b64decode(json.loads(body))
            plain = self._box.decrypt(blob[24:], blob[:24])
            return json.loads(plain)
        except (CryptoError, ValueError, TypeError) as exc:
            raise DecryptError("response encrypted for another key") from exc
