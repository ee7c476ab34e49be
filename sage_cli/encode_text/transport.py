"""One HTTP POST with a real deadline and a cap on the answer's size (standard library only).

``urllib``'s timeout bounds each socket operation, so a server that drips one byte a minute, or
hangs after the headers, can hold a request for ever; and ``response.read()`` keeps whatever the
server sends in memory. :func:`post` instead bounds the whole exchange (connect, send, headers,
body) by one deadline, enforced by a watchdog that shuts the socket down, and reads the body in
chunks up to ``max_bytes``.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

_CHUNK = 64 * 1024


class AnswerTooLarge(Exception):
    """The server's answer is over the size limit; it was not read further."""


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    body: bytes  # at most max_bytes


def post(url: str, data: bytes, headers: dict[str, str], deadline: float, max_bytes: int) -> Reply:
    """POST ``data`` to ``url`` and read the reply, all within ``deadline`` seconds.

    Raises ``TimeoutError`` past the deadline, :class:`AnswerTooLarge` for a body over
    ``max_bytes``, and ``OSError`` / ``http.client.HTTPException`` for connection faults (refused,
    reset, a bad status line, an incomplete body).
    """
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=deadline)
    expired = threading.Event()
    # The socket, kept here: a response that closes the connection takes it over (connection.sock
    # becomes None once the headers are read), and the watchdog must still reach it.
    sockets: list[socket.socket] = []
    watchdog = threading.Timer(deadline, _expire, (sockets, expired))
    watchdog.daemon = True
    started = time.monotonic()
    watchdog.start()
    try:
        connection.connect()
        sockets.append(connection.sock)
        if expired.is_set():  # the deadline passed while connecting: the watchdog found no socket
            raise TimeoutError
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection.request("POST", path, body=data, headers=headers)
        response = connection.getresponse()
        body = _read_capped(response, max_bytes)
        if expired.is_set():  # a close-delimited body cut short by the watchdog reads as complete
            raise TimeoutError
        return Reply(response.status, response.reason, body)
    except (OSError, http.client.HTTPException):
        if expired.is_set() or time.monotonic() - started >= deadline:
            raise TimeoutError(f"no complete answer within {deadline:g} s") from None
        raise
    finally:
        watchdog.cancel()
        connection.close()


def _expire(sockets: list[socket.socket], expired: threading.Event) -> None:
    expired.set()
    for sock in sockets:
        try:
            # The plain socket's shutdown (not SSLSocket's, which also tears down TLS state another
            # thread is using): it wakes a thread blocked in recv or send at once.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


def _read_capped(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    header = (response.getheader("Content-Length") or "").strip()
    announced = int(header) if header.isdigit() else None
    if announced is not None and announced > max_bytes:
        raise AnswerTooLarge(f"the server announced {announced:,} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(_CHUNK)
        if not chunk:
            if announced is not None and size < announced:  # read(amt) does not raise it itself
                raise http.client.IncompleteRead(b"".join(chunks), announced - size)
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(f"over {max_bytes:,} bytes")
        chunks.append(chunk)
