"""Google's batch format for the Calendar API sandbox: one multipart/mixed HTTP request, many calls.

Follows the Calendar batch guide (https://developers.google.com/calendar/api/guides/batch, NOTES.md
"Batch"): ``POST /batch/calendar/v3`` with ``Content-Type: multipart/mixed; boundary=…``; each part is
``Content-Type: application/http`` with a ``Content-ID`` and holds one HTTP request (request line,
headers, blank line, JSON body). The outer request's headers, except the ``Content-*`` ones, apply to
every inner call unless the part sets its own. The answer is ``200 multipart/mixed``; each part has
``Content-ID: <response-…>`` (the request's id, prefixed) and holds an HTTP status line, headers and the
JSON body. At most 1000 calls per batch. The sandbox itself (``GoogleSandbox``) dispatches the calls;
this module only reads and writes the format, so it can be tested on its own.
"""

from __future__ import annotations

import email.parser
import email.policy
import secrets
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

BATCH_PATH = "/batch/calendar/v3"
MAX_CALLS = 1000  # Calendar batch guide: "limited to 1000 calls in a single batch request"


class BatchFormatError(ValueError):
    """The outer request is not a batch Google would accept (→ 400 for the whole batch)."""


@dataclass
class InnerRequest:
    """One call of a batch: ``path`` is the raw (still percent-encoded) path, ``query`` the raw query."""

    content_id: str | None
    method: str
    path: str
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def parse(content_type: str, body: bytes) -> list[InnerRequest]:
    """The calls of a multipart/mixed batch body, in order. Raises BatchFormatError."""
    if not content_type.lower().startswith("multipart/mixed") or "boundary=" not in content_type.lower():
        raise BatchFormatError("Invalid multipart request with 0 mime parts.")
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise BatchFormatError("Invalid multipart request with 0 mime parts.")
    parts = message.get_payload()
    if not parts:
        raise BatchFormatError("Invalid multipart request with 0 mime parts.")
    if len(parts) > MAX_CALLS:
        raise BatchFormatError(f"A batch may hold at most {MAX_CALLS} calls; this one has {len(parts)}.")
    return [_inner(part) for part in parts]


def _inner(part) -> InnerRequest:
    if part.get_content_type() != "application/http":
        raise BatchFormatError(f"Each part must be application/http, not {part.get_content_type()}.")
    raw = part.get_payload(decode=True) or b""
    # The client library writes "\n" line ends, Google's own examples "\r\n": accept both.
    head, _, payload = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    lines = head.replace(b"\r\n", b"\n").decode("latin-1").split("\n")
    words = lines[0].split()
    if len(words) < 2:
        raise BatchFormatError(f"Bad request line in a batch part: {lines[0]!r}")
    target = urlsplit(words[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BatchFormatError(f"Bad header line in a batch part: {line!r}")
        headers[name.strip().title()] = value.strip()
    # A JSON body written with "\n" line ends by the client keeps them; trailing newlines are the MIME's.
    return InnerRequest(content_id=part.get("Content-ID"), method=words[0].upper(), path=target.path,
                        query=target.query, headers=headers, body=payload.rstrip(b"\r\n"))


def response_id(content_id: str | None) -> str | None:
    """``<abc + 1>`` → ``<response-abc + 1>``, as Google answers."""
    if not content_id:
        return None
    inner = content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
    return f"<response-{inner}>"


def render(answers: list[tuple[str | None, int, list[tuple[str, str]], bytes]]) -> tuple[str, bytes]:
    """``(content_type, body)`` of the outer answer; ``answers``: (Content-ID, status, headers, body)."""
    boundary = "batch_" + secrets.token_hex(12)
    out: list[bytes] = []
    for content_id, status, headers, body in answers:
        out.append(f"--{boundary}\r\nContent-Type: application/http\r\n".encode())
        rid = response_id(content_id)
        if rid:
            out.append(f"Content-ID: {rid}\r\n".encode())
        out.append(b"\r\n")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        out.append(f"HTTP/1.1 {status} {phrase}\r\n".encode())
        kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
        # Always a header: the client splits the part's headers from its body at the first blank line.
        for name, value in kept + [("Content-Length", str(len(body)))]:
            out.append(f"{name}: {value}\r\n".encode("latin-1"))
        out.append(b"\r\n" + body + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return f"multipart/mixed; boundary={boundary}", b"".join(out)
