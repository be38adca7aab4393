"""A gunicorn worker that slow or stalled clients cannot hold: threads with read and request timeouts.

in: the settings in ``serving/gunicorn.conf.py`` (threads) and two environment variables,
``SERVE_READ_TIMEOUT`` (seconds a request may go without sending a byte, default 10) and
``SERVE_REQUEST_TIMEOUT`` (seconds to receive a whole request, headers and body, default 30).
out: a ``worker_class`` for gunicorn.

Gunicorn's ``gthread`` worker answers from a pool of threads, and its main loop keeps the
worker's heartbeat, so a thread waiting on a client never gets the worker killed. But a
client that sends headers and part of a body, then stops, holds its thread for ever: the
socket has no timeout. This worker adds three things:

- Every read of a client socket is bounded by the read timeout and by the request's deadline
  (request timeout after its first byte), so a stalled client, or one trickling a byte at a
  time, is cut off. While the app reads the body it gets a ``TimeoutError`` and answers 408
  (serving/app.py); a stall in the headers closes the connection. The socket is closed by
  the thread that timed out, without lingering, so the main loop never waits on such a client.
- A worker whose threads are all busy stops accepting connections until one is free, so a
  new request goes to a worker that can answer it, or waits in the kernel's queue, instead
  of queueing behind stalled clients inside a saturated worker.
- A timed-out client is one log line, not a traceback.
- A graceful reload or stop (HUP, TERM) no longer closes a keep-alive connection just after
  answering on it, under the client's next request: that request is answered, with
  ``Connection: close``.

TLS is not handled here (terminate it at the reverse proxy): the timeouts wrap plain sockets.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import time
from functools import partial

from gunicorn.workers.gthread import ThreadWorker, TConn

READ_TIMEOUT = ("SERVE_READ_TIMEOUT", 10.0)        # seconds without a byte from the client
REQUEST_TIMEOUT = ("SERVE_REQUEST_TIMEOUT", 30.0)  # seconds from a request's first byte to its last


def timeout_setting(setting: tuple[str, float]) -> float:
    """The environment variable's value in seconds (positive), or its default; SystemExit naming it."""
    variable, default = setting
    raw = os.environ.get(variable, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SystemExit(f"error: environment variable {variable}={raw!r} must be a positive number of seconds.")
    return value


class ClientTimeout(TimeoutError):
    """The client sent nothing for the read timeout, or not its whole request within the request timeout."""


class DeadlineSocket(socket.socket):
    """A client socket whose reads give up after the read timeout or at the request's deadline."""

    read_timeout: float
    request_timeout: float
    deadline: float | None   # monotonic time the current request must be received by; set at its first read
    timed_out: str | None    # why a read gave up; the connection is then closed

    @classmethod
    def adopt(cls, plain: socket.socket, read_timeout: float, request_timeout: float) -> "DeadlineSocket":
        sock = cls(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.read_timeout, sock.request_timeout = read_timeout, request_timeout
        sock.deadline, sock.timed_out = None, None
        return sock

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._bounded(super().recv, bufsize, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        return self._bounded(super().recv_into, buffer, nbytes, flags)

    def _bounded(self, read, *args):
        if self.timed_out:
            raise ClientTimeout(self.timed_out)
        prior = self.gettimeout()
        if prior == 0.0:  # non-blocking use (gunicorn's poller side): not a wait on the client
            return read(*args)
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.request_timeout
        remaining = self.deadline - now
        limit = min(self.read_timeout, remaining, *(() if prior is None else (prior,)))
        if remaining <= 0:
            return self._give_up(f"the request was not received within {self.request_timeout:g} s")
        super().settimeout(limit)
        try:
            return read(*args)
        except TimeoutError:
            if limit == prior and limit < min(self.read_timeout, remaining):
                raise  # the caller's own shorter timeout (gunicorn's drain), not ours
            if limit == self.read_timeout:
                return self._give_up(f"no data from the client for {self.read_timeout:g} s")
            return self._give_up(f"the request was not received within {self.request_timeout:g} s")
        finally:
            super().settimeout(prior)

    def _give_up(self, reason: str):
        self.timed_out = reason
        raise ClientTimeout(reason)


class _QuietClientTimeouts(logging.Filter):
    """Drop gunicorn's traceback for a socket error that is our own timeout; the worker logs one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ClientTimeout))


class DeadlineThreadWorker(ThreadWorker):
    """gunicorn's gthread worker with read and request timeouts, and no accepting while saturated."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = timeout_setting(READ_TIMEOUT)
        self.request_timeout = timeout_setting(REQUEST_TIMEOUT)
        self.busy_threads = 0  # connections handed to the pool and not finished; main thread only

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            raise SystemExit("error: serving.worker does not terminate TLS; put a reverse proxy with TLS in front.")
        self.log.error_log.addFilter(_QuietClientTimeouts())
        super().init_process()

    def accept(self, listener) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        client.setblocking(True)
        sock = DeadlineSocket.adopt(client, self.read_timeout, self.request_timeout)
        self.nr_conns += 1
        self.enqueue_req(TConn(self.cfg, sock, address, listener.getsockname()))

    def enqueue_req(self, conn) -> None:
        self.busy_threads += 1
        if self.busy_threads >= self.cfg.threads:
            self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs) -> None:
        self.busy_threads -= 1  # the run loop re-enables accepting on its next turn
        if not self.alive and not fs.cancelled() and fs.exception() is None and fs.result() is True:
            # Shutting down (HUP, TERM) right after a keep-alive answer: the client may be sending its
            # next request on this connection already. gthread would close it under that request (a
            # dropped request); keep it like any idle keep-alive connection instead, so the request is
            # answered with "Connection: close", or the connection closes after the keep-alive time.
            conn.sock.setblocking(False)
            conn.set_timeout()
            self.keepalived_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
            return
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.busy_threads < self.cfg.threads)

    def handle(self, conn):
        sock = conn.sock
        if isinstance(sock, DeadlineSocket):
            sock.deadline = None  # a new request (or a keepalive one): its clock starts at its first byte
        try:
            return super().handle(conn)
        finally:
            if isinstance(sock, DeadlineSocket) and sock.timed_out:
                self.log.info("closed the connection from %s: %s", _peer(conn.client), sock.timed_out)
                # Close here, in the pool: gunicorn's graceful close lingers on the main loop for a
                # client that never reads; nothing is left unsent (the 408 went out before).
                try:
                    sock.close()
                except OSError:
                    pass


def _peer(address) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
