"""wp_bridge.signing: the HMAC contract of wp_bridge/wordpress/PROTOCOL.md, both request signatures and
single sign-on tokens. Known answers are computed here independently of the module."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from wp_bridge.signing import (SIGNATURE_HEADER, TIMESTAMP_HEADER, BadSignature, SignatureError, StaleRequest,
                               make_sso_token, read_sso_token, sign, signed_headers, verify)

SECRET = "c2VjcmV0LXNoYXJlZC13aXRoLXRoZS1wbHVnaW4tMTIz"
NOW = 1795000000
BODY = b'{"event":"kc_appointment_updated","appointment_id":"36"}'
VECTORS = Path(__file__).resolve().parents[1] / "wordpress" / "signing_vectors.json"


def test_sign_matches_the_protocol_formula():
    message = b"POST\n/hooks/kivicare\n1795000000\n" + BODY
    expected = "v1=" + hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert sign(SECRET, "post", "/hooks/kivicare", BODY, NOW) == expected
    assert sign(SECRET, "POST", "/hooks/kivicare", BODY.decode(), NOW) == expected  # str bodies are UTF-8
    # GET without a body: the message ends with the newline after the timestamp.
    empty = "v1=" + hmac.new(SECRET.encode(), b"GET\n/wp-json/kc-sidecar/v1/status\n1795000000\n",
                             hashlib.sha256).hexdigest()
    assert sign(SECRET, "GET", "/wp-json/kc-sidecar/v1/status", b"", NOW) == empty
    assert sign(SECRET, "GET", "/wp-json/kc-sidecar/v1/status", None, NOW) == empty


def test_round_trip_and_header_names_in_any_case():
    headers = signed_headers(SECRET, "PUT", "/wp-json/kc-sidecar/v1/busy", BODY, timestamp=NOW)
    assert set(headers) == {TIMESTAMP_HEADER, SIGNATURE_HEADER} and headers[TIMESTAMP_HEADER] == str(NOW)
    assert verify(SECRET, "PUT", "/wp-json/kc-sidecar/v1/busy", BODY, headers, now=NOW + 299) == NOW
    lowered = {k.lower(): v for k, v in headers.items()}
    assert verify(SECRET, "PUT", "/wp-json/kc-sidecar/v1/busy", BODY, lowered, now=NOW - 299) == NOW


@pytest.mark.parametrize("change", ["secret", "method", "path", "body", "timestamp", "signature", "version"])
def test_any_change_is_a_bad_signature(change):
    headers = signed_headers(SECRET, "POST", "/hooks/kivicare", BODY, timestamp=NOW)
    args = {"secret": SECRET, "method": "POST", "path": "/hooks/kivicare", "body": BODY}
    if change == "secret":
        args["secret"] = SECRET + "x"
    elif change == "method":
        args["method"] = "PUT"
    elif change == "path":
        args["path"] = "/hooks/kivicare/"
    elif change == "body":
        args["body"] = BODY.replace(b"36", b"37")
    elif change == "timestamp":
        headers[TIMESTAMP_HEADER] = str(NOW + 1)
    elif change == "signature":
        headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER][:-1] + ("0" if headers[SIGNATURE_HEADER][-1] != "0" else "1")
    elif change == "version":
        headers[SIGNATURE_HEADER] = "v2=" + headers[SIGNATURE_HEADER][3:]
    with pytest.raises(BadSignature) as caught:
        verify(args["secret"], args["method"], args["path"], args["body"], headers, now=NOW)
    assert caught.value.code == "bad_signature" and isinstance(caught.value, SignatureError)


@pytest.mark.parametrize("headers", [
    {},
    {TIMESTAMP_HEADER: str(NOW)},
    {SIGNATURE_HEADER: "v1=00"},
    {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "v1=00"},
    {TIMESTAMP_HEADER: "-5", SIGNATURE_HEADER: "v1=00"},
    {TIMESTAMP_HEADER: "1" * 40, SIGNATURE_HEADER: "v1=00"},
    {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v1=é"},
])
def test_missing_or_malformed_headers(headers):
    with pytest.raises(BadSignature):
        verify(SECRET, "POST", "/hooks/kivicare", BODY, headers, now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 86400])
def test_old_or_future_requests_are_stale(offset):
    headers = signed_headers(SECRET, "POST", "/hooks/kivicare", BODY, timestamp=NOW)
    with pytest.raises(StaleRequest) as caught:
        verify(SECRET, "POST", "/hooks/kivicare", BODY, headers, now=NOW + offset)
    assert caught.value.code == "stale_request"


def test_a_forged_old_request_is_reported_as_forged_not_stale():
    headers = signed_headers("another secret", "POST", "/hooks/kivicare", BODY, timestamp=NOW)
    with pytest.raises(BadSignature):
        verify(SECRET, "POST", "/hooks/kivicare", BODY, headers, now=NOW + 10000)


def test_empty_secret_never_verifies_and_cannot_sign():
    headers = {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "v1=" + "0" * 64}
    with pytest.raises(BadSignature):
        verify("", "POST", "/hooks/kivicare", BODY, headers, now=NOW)
    with pytest.raises(ValueError):
        sign("", "POST", "/hooks/kivicare", BODY, NOW)


# ---- single sign-on tokens ---------------------------------------------------------------------

def payload(**changes) -> dict:
    data = {"uid": 3, "roles": ["kiviCare_doctor"], "name": "Anna Schmidt", "email": "anna@example.test",
            "exp": NOW + 120, "jti": "0123456789abcdef0123456789abcdef", "site": "https://clinic.example"}
    data.update(changes)
    return data


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_sso_token_format_is_the_protocols():
    token = make_sso_token(SECRET, payload())
    encoded, mac = token.split(".")
    assert "=" not in encoded and json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))) == payload()
    assert mac == hmac.new(SECRET.encode(), ("sso\n" + encoded).encode(), hashlib.sha256).hexdigest()
    assert read_sso_token(SECRET, token, now=NOW) == payload()


def test_sso_token_made_elsewhere_is_read():
    # As PHP's json_encode would write it (different key order, spaces don't matter: the bytes are signed).
    encoded = b64url(json.dumps(payload(), indent=1).encode())
    token = encoded + "." + hmac.new(SECRET.encode(), ("sso\n" + encoded).encode(), hashlib.sha256).hexdigest()
    assert read_sso_token(SECRET, token, now=NOW)["uid"] == 3


def test_sso_token_expired():
    token = make_sso_token(SECRET, payload())
    assert read_sso_token(SECRET, token, now=NOW + 120)["jti"]
    with pytest.raises(StaleRequest):
        read_sso_token(SECRET, token, now=NOW + 121)


def test_sso_token_tampered_payload_or_signature_or_secret():
    token = make_sso_token(SECRET, payload())
    encoded, mac = token.split(".")
    forged = b64url(json.dumps(payload(roles=["administrator"])).encode())
    for bad in (forged + "." + mac, encoded + "." + mac.upper(), encoded + "." + mac[:-2], encoded + "x." + mac):
        with pytest.raises(BadSignature):
            read_sso_token(SECRET, bad, now=NOW)
    with pytest.raises(BadSignature):
        read_sso_token("another secret", token, now=NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "é.ü", "." * 2, "x" * 9000 + ".00"])
def test_sso_token_malformed(token):
    with pytest.raises(BadSignature):
        read_sso_token(SECRET, token, now=NOW)


@pytest.mark.parametrize("bad_payload", [[1, 2], "text", {"uid": 3}, {"exp": "soon"}, {"exp": True}])
def test_sso_token_signed_but_unusable(bad_payload):
    encoded = b64url(json.dumps(bad_payload).encode())
    token = encoded + "." + hmac.new(SECRET.encode(), ("sso\n" + encoded).encode(), hashlib.sha256).hexdigest()
    with pytest.raises(BadSignature):
        read_sso_token(SECRET, token, now=NOW)


def test_sso_token_valid_for_hours_is_refused():
    with pytest.raises(BadSignature):
        read_sso_token(SECRET, make_sso_token(SECRET, payload(exp=NOW + 7200)), now=NOW)


def test_sso_with_empty_secret_is_refused():
    with pytest.raises(BadSignature):
        read_sso_token("", make_sso_token(SECRET, payload()), now=NOW)


# ---- the PHP plugin's vectors (written by the plugin's tests; absent until then) ---------------------

@pytest.mark.skipif(not VECTORS.exists(), reason="tests/wordpress/signing_vectors.json not written yet")
def test_php_signing_vectors():
    """The vectors the PHP plugin's tests check too: both sides compute the same bytes."""
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    secret = data["secret"]
    assert data["requests"]
    for case in data["requests"]:
        body = case["body"].encode("utf-8")
        timestamp = int(case["timestamp"])
        assert sign(secret, case["method"], case["path"], body, timestamp) == case["signature"], case["path"]
        headers = {TIMESTAMP_HEADER: case["timestamp"], SIGNATURE_HEADER: case["signature"]}
        assert verify(secret, case["method"], case["path"], body, headers, now=timestamp) == timestamp
    sso = data["sso"]
    expected = json.loads(sso["payload_json"])
    assert read_sso_token(secret, sso["token"], now=expected["exp"] - 60) == expected
    assert make_sso_token(secret, expected) == sso["token"]  # compact JSON in the same key order
    with pytest.raises(StaleRequest):
        read_sso_token(secret, sso["token"], now=expected["exp"] + 1)
