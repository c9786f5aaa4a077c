"""Connection-level faults shared by both sandboxes' fault middleware (a dropped or reset connection)."""

from __future__ import annotations

import socket
import struct


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
