"""A gunicorn gthread worker that a slow client cannot exhaust (security review, finding 3).

Stock gthread hands a connection to a worker thread as soon as its first byte arrives; the thread
then blocks until the whole request head has come. Thirty sockets sending a header byte every two
seconds held every thread and other clients waited 30 s. Here the worker's event loop reads each
request head, and up to :data:`PREREAD_BODY_BYTES` of its body, without a thread: a connection
goes to the thread pool only once that much has arrived. A client gets ``header_timeout`` seconds
for its head (whatever its pace) and ``body_timeout`` for what is pre-read of its body, and then
the connection is closed. A slow client costs a socket and a buffer, never a thread.

Also here, because gunicorn writes them itself: errors it answers before the app runs (a bad
request line, headers too large, ...) are JSON like the app's, never echo the request and never
log it (request lines carry ids and search values); and no ``Server`` header announces the
server software.
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers import gthread

__all__ = ["GuardedThreadWorker"]

#: request head (request line and headers) budget, bytes: gunicorn's own limits are checked after
MAX_HEAD_BYTES = 64 * 1024
#: this much of a body is read by the event loop before a thread takes the request
PREREAD_BODY_BYTES = 1024 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r?\n", re.IGNORECASE)
_CHUNKED_END = b"\r\n0\r\n\r\n"
_REASONS = {400: "Bad Request", 403: "Forbidden", 414: "URI Too Long", 417: "Expectation Failed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


class _QuietResponse(wsgi.Response):
    """gunicorn's response without the ``Server`` header (no software banner)."""

    def default_headers(self) -> list[str]:
        return [h for h in super().default_headers() if not h.startswith("Server:")]


def _wanted(buffer: bytes) -> int | None:
    """How many bytes make the request ready for a thread; None while the head is incomplete."""
    end = _HEAD_END.search(buffer)
    if end is None:
        return None
    head = buffer[:end.start()] + b"\n"
    length = _CONTENT_LENGTH.search(b"\n" + head.split(b"\n", 1)[-1])
    if length is not None:
        return end.end() + min(int(length.group(1)), PREREAD_BODY_BYTES)
    if b"chunked" in head.lower() and _CHUNKED_END not in buffer[end.start():]:
        return end.end() + PREREAD_BODY_BYTES  # until the last chunk, or the pre-read budget
    return end.end()


class GuardedThreadWorker(gthread.ThreadWorker):
    """gthread with request heads read by the event loop (module docstring)."""

    #: seconds a client has to send its request head; then seconds for the pre-read part of its body
    #: (set from Settings by service/server.py before gunicorn forks its workers)
    header_timeout = 10.0
    body_timeout = 30.0

    def init_process(self) -> None:
        wsgi.Response = _QuietResponse  # this worker process's responses only
        super().init_process()

    # --- connections waiting for their request, in the event loop ---

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = gthread.TConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._preread(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection's next request: read its head in the loop as well."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._preread(conn)

    def _preread(self, conn: Any) -> None:
        conn.prebuf = b""
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.header_timeout
        self.pending_conns.append(conn)  # murder_pending() closes it at conn.timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: Any, client: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self._drop(conn)
        had_head = _HEAD_END.search(conn.prebuf) is not None
        conn.prebuf += data
        wanted = _wanted(conn.prebuf)
        if wanted is None:
            if len(conn.prebuf) > MAX_HEAD_BYTES:
                self._answer_and_drop(conn, 431, "the request headers are too large")
            return None
        if not had_head:  # the head is in: the body gets its own budget from now
            self._reschedule(conn, time.monotonic() + self.body_timeout)
        if len(conn.prebuf) >= wanted or _CHUNKED_END in conn.prebuf:
            self._dispatch(conn)
        return None

    def _reschedule(self, conn: Any, deadline: float) -> None:
        """Move ``conn`` to its new deadline, keeping ``pending_conns`` sorted for murder_pending()."""
        self.pending_conns.remove(conn)
        conn.timeout = deadline
        later = [c for c in self.pending_conns if c.timeout > deadline]
        for c in later:
            self.pending_conns.remove(c)
        self.pending_conns.append(conn)
        self.pending_conns.extend(later)

    def _release(self, conn: Any) -> None:
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)

    def _drop(self, conn: Any) -> None:
        self._release(conn)
        self.nr_conns -= 1
        conn.close()

    def _answer_and_drop(self, conn: Any, status: int, message: str) -> None:
        self._release(conn)
        self.nr_conns -= 1
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            _write_json_error(conn.sock, status, message)
        except OSError:
            pass
        conn.close()

    def _dispatch(self, conn: Any) -> None:
        self._release(conn)
        conn.data_ready = True
        self.enqueue_req(conn)

    # --- in a worker thread ---

    def handle(self, conn: Any) -> Any:
        buffered = getattr(conn, "prebuf", b"")
        if buffered:
            conn.prebuf = b""
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(buffered)
        # the rest of a large body: no single read may stall the thread longer than the body budget
        conn.sock.settimeout(self.body_timeout)
        return super().handle(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer gunicorn's own errors as JSON, naming only the error's class in the log."""
        status = _status_of(exc)
        if status == 500:
            self.log.error("error handling a request: %s", type(exc).__name__)
        else:
            self.log.warning("invalid request refused (%s %s)", status, type(exc).__name__)
        try:
            _write_json_error(client, status, _MESSAGES.get(status, "the request is not valid HTTP"))
        except OSError:
            self.log.debug("could not send the error answer")


_MESSAGES = {414: "the request line is too long", 431: "the request headers are too large",
             500: "internal error", 501: "this transfer coding is not supported",
             417: "this expectation is not supported"}


def _status_of(exc: BaseException) -> int:
    from gunicorn.http import errors

    table: list[tuple[tuple[type, ...], int]] = [
        ((errors.LimitRequestLine,), 414), ((errors.LimitRequestHeaders,), 431),
        ((errors.UnsupportedTransferCoding,), 501), ((errors.ExpectationFailed,), 417),
        ((errors.ForbiddenProxyRequest,), 403),
        ((errors.InvalidRequestLine, errors.InvalidRequestMethod, errors.InvalidHTTPVersion, errors.InvalidHeader,
          errors.InvalidHeaderName, errors.InvalidProxyLine, errors.InvalidSchemeHeaders, errors.ObsoleteFolding,
          errors.InvalidChunkSize, errors.ChunkMissingTerminator, errors.InvalidChunkExtension,
          errors.NoMoreData), 400),
    ]
    for kinds, status in table:
        if isinstance(exc, kinds):
            return status
    return 500


def _write_json_error(sock: Any, status: int, message: str, write: Callable[[Any, bytes], None] | None = None) -> None:
    """The clinic API's error shape, with the headers every answer of ours carries."""
    body = json.dumps({"message": message, "errors": {"_request": [message]}}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n\r\n").encode()
    from gunicorn import util

    (write or util.write_nonblock)(sock, head + body)
