"""The shared signing vectors (signing_vectors.json) match PROTOCOL.md's algorithm written in Python.

The PHP plugin's unit tests check the same file, so both sides agree byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

VECTORS = json.loads((Path(__file__).with_name("signing_vectors.json")).read_text(encoding="utf-8"))


def protocol_signature(secret: str, method: str, path: str, timestamp: str, body: bytes) -> str:
    message = method.upper().encode() + b"\n" + path.encode() + b"\n" + timestamp.encode() + b"\n" + body
    return "v1=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def test_request_vectors():
    assert len(VECTORS["requests"]) >= 4
    for vector in VECTORS["requests"]:
        body = vector["body"].encode("utf-8")
        assert protocol_signature(VECTORS["secret"], vector["method"], vector["path"], vector["timestamp"], body) \
            == vector["signature"], vector["path"]


def test_sso_vector():
    payload = VECTORS["sso"]["payload_json"]
    encoded = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    mac = hmac.new(VECTORS["secret"].encode(), ("sso\n" + encoded).encode(), hashlib.sha256).hexdigest()
    assert VECTORS["sso"]["token"] == f"{encoded}.{mac}"
    assert json.loads(payload)["jti"] and "=" not in encoded
