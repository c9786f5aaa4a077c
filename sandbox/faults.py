"""Connection-level faults shared by both sandboxes' fault middleware (a dropped or reset connection)."""

from __future__ import annotations

import socket
import struct
import time


class DropConnection(ConnectionResetError):
    """Raised by the fault middleware: werkzeug's server drops the connection without an answer
    (``ConnectionError`` is what it treats as a dropped connection)."""


def drop_connection(environ: dict) -> None:
    """Reset the client's connection: SO_LINGER 0 makes the server's close send a RST. Always raises."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)  # else the handler waits for a next request on it
        except OSError:
            pass
    raise DropConnection("sandbox fault: connection reset")


def read_body(environ: dict) -> None:
    """Read the request body a dropped connection leaves unread (else werkzeug reads it as the next request)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    while length > 0 and stream is not None:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        length -= len(chunk)


def connection_fault(kind: str, hold: float, wsgi_app, environ: dict, start_response):
    """Carry out one connection-level fault around ``wsgi_app`` (both sandboxes' middleware):

    ``timeout`` holds the request ``hold`` seconds, then answers (long after the client gave up); ``hang``
    reads the body and holds it, then drops the connection; ``reset_after`` lets the app carry the request out,
    then drops the connection before the answer; ``reset`` (anything else) drops it at once. Returns the
    app's answer for ``timeout``; otherwise raises DropConnection.
    """
    if kind in ("timeout", "hang"):
        if kind == "hang":
            read_body(environ)
        time.sleep(hold)
        if kind == "timeout":
            return wsgi_app(environ, start_response)  # answered after the client gave up
    elif kind == "reset_after":
        answer = wsgi_app(environ, lambda *a, **k: (lambda data: None))
        try:
            for _ in answer:
                pass
        finally:
            if hasattr(answer, "close"):
                answer.close()
    else:
        read_body(environ)  # else werkzeug reads the unread body as the next request
    drop_connection(environ)
