"""HMAC signing between the sidecar and the companion WordPress plugin (wp_bridge/wordpress/PROTOCOL.md).

Every request in either direction carries two headers::

    X-KC-Sidecar-Timestamp: 1795000000          (Unix seconds, as text)
    X-KC-Sidecar-Signature: v1=<lowercase hex>  (HMAC-SHA256(secret, message))

where ``message = METHOD + "\\n" + PATH + "\\n" + TIMESTAMP + "\\n" + BODY``: the method in upper case,
the URL path exactly as requested (no scheme, host or query string), and the raw body bytes (empty
for a GET). The secret is the UTF-8 bytes of its text form. A receiver refuses a signature that
differs (compared in constant time) or a timestamp more than 300 s away from its clock.

Single sign-on tokens (the plugin's "Google Calendar" link) are
``base64url(payload_json) + "." + hex(HMAC-SHA256(secret, "sso\\n" + base64url(payload_json)))``,
base64url without padding; the payload carries ``exp`` (Unix seconds). ``read_sso_token`` checks the
signature and the expiry; that a ``jti`` is used only once is the caller's job (it needs storage).

Errors are ``SignatureError`` subclasses with a ``code`` the sidecar puts in its 401 answers:
``BadSignature`` ("bad_signature": missing, malformed or wrong) and ``StaleRequest``
("stale_request": too old or too far in the future; an expired SSO token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Mapping

TIMESTAMP_HEADER = "X-KC-Sidecar-Timestamp"
SIGNATURE_HEADER = "X-KC-Sidecar-Signature"
VERSION = "v1"
MAX_AGE = 300  # seconds either side of the receiver's clock
SSO_MAX_LIFETIME = 600  # seconds: a token valid longer than this was not made by the plugin (it uses 120)


class SignatureError(Exception):
    """A request or token failed the check. ``code`` is what the sidecar answers in ``{"error": …}``."""

    code = "bad_signature"


class BadSignature(SignatureError):
    """The signature (or token) is missing, malformed, or was not made with this secret."""

    code = "bad_signature"


class StaleRequest(SignatureError):
    """The timestamp is more than ``max_age`` seconds from now, or the SSO token has expired."""

    code = "stale_request"


def _key(secret: str) -> bytes:
    if not secret:
        raise ValueError("the shared secret is empty")
    return secret.encode("utf-8")


def _bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


def sign(secret: str, method: str, path: str, body: bytes | str | None, timestamp: int) -> str:
    """``"v1=" + hex(HMAC-SHA256(secret, METHOD\\nPATH\\nTIMESTAMP\\nBODY))`` for one request.

    ``path``: the URL path only (``/wp-json/kc-sidecar/v1/busy``, ``/hooks/kivicare``); ``body``: the
    exact bytes sent (a str is encoded as UTF-8); ``timestamp``: Unix seconds. ValueError on an empty secret.
    """
    head = f"{method.upper()}\n{path}\n{int(timestamp)}\n".encode("utf-8")
    digest = hmac.new(_key(secret), head + _bytes(body), hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def signed_headers(secret: str, method: str, path: str, body: bytes | str | None,
                   timestamp: int | None = None) -> dict[str, str]:
    """The two headers for a request sent now (or at ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, method, path, body, ts)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict: look the name up without regard to case
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def verify(secret: str, method: str, path: str, body: bytes | str | None, headers: Mapping[str, str],
           now: float | None = None, max_age: int = MAX_AGE) -> int:
    """Check a received request's signature headers; returns the request's timestamp.

    ``headers``: any mapping (Flask/werkzeug headers, requests' headers, a dict; names are matched
    without regard to case). Raises ``BadSignature`` (headers missing or malformed, signature wrong)
    or ``StaleRequest`` (valid signature, but ``|now - timestamp| > max_age``). The signature is
    checked first, so a forged request is always reported as a bad signature.
    """
    raw_ts = (_header(headers, TIMESTAMP_HEADER) or "").strip()
    given = (_header(headers, SIGNATURE_HEADER) or "").strip()
    if not raw_ts or not given:
        raise BadSignature("the request is not signed (X-KC-Sidecar-Timestamp / X-KC-Sidecar-Signature missing)")
    if not raw_ts.isdigit() or len(raw_ts) > 12:
        raise BadSignature("the X-KC-Sidecar-Timestamp header is not a Unix time in seconds")
    if not secret:
        raise BadSignature("no shared secret is set on this side")
    timestamp = int(raw_ts)
    expected = sign(secret, method, path, body, timestamp)
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        raise BadSignature("the signature does not match (wrong secret, or the request was changed on the way)")
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_age:
        raise StaleRequest(f"the request was signed {int(current - timestamp)} s from now; at most {max_age} s "
                           "are accepted (check both servers' clocks)")
    return timestamp


# ---- single sign-on tokens ---------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not text or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for ch in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sso_mac(secret: str, encoded_payload: str) -> str:
    return hmac.new(_key(secret), ("sso\n" + encoded_payload).encode("ascii"), hashlib.sha256).hexdigest()


def make_sso_token(secret: str, payload: Mapping[str, Any]) -> str:
    """A token for ``payload`` (``uid``, ``roles``, ``name``, ``email``, ``exp``, ``jti``, ``site``).

    The plugin makes these in PHP; this one is for tests, the sandbox and tools.
    """
    encoded = _b64url(json.dumps(dict(payload), separators=(",", ":")).encode("utf-8"))
    return f"{encoded}.{_sso_mac(secret, encoded)}"


def read_sso_token(secret: str, token: str, now: float | None = None,
                   max_lifetime: int = SSO_MAX_LIFETIME) -> dict:
    """The payload of a valid, unexpired token.

    Raises ``BadSignature`` (malformed, not made with ``secret``, payload not a JSON object, ``exp``
    missing, or ``exp`` more than ``max_lifetime`` seconds ahead) or ``StaleRequest`` (expired). Does
    not check ``jti`` reuse, roles or ``site``: the caller does.
    """
    if not secret:
        raise BadSignature("no shared secret is set on this side")
    if not isinstance(token, str) or len(token) > 8192 or token.count(".") != 1:
        raise BadSignature("the sign-in token is malformed")
    encoded, given = token.split(".")
    try:
        encoded.encode("ascii")
    except UnicodeEncodeError:
        raise BadSignature("the sign-in token is malformed") from None
    if not hmac.compare_digest(_sso_mac(secret, encoded).encode("ascii"), given.encode("utf-8", "replace")):
        raise BadSignature("the sign-in token's signature does not match")
    try:
        payload = json.loads(_unb64url(encoded).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadSignature("the sign-in token's payload is not JSON") from None
    if not isinstance(payload, dict):
        raise BadSignature("the sign-in token's payload is not an object")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise BadSignature("the sign-in token has no expiry")
    current = time.time() if now is None else now
    if current > exp:
        raise StaleRequest("the sign-in link has expired (it is valid for 2 minutes)")
    if exp - current > max_lifetime:
        raise BadSignature("the sign-in token claims to be valid for too long")
    return payload


__all__ = ["TIMESTAMP_HEADER", "SIGNATURE_HEADER", "MAX_AGE", "SignatureError", "BadSignature", "StaleRequest",
           "sign", "signed_headers", "verify", "make_sso_token", "read_sso_token"]
