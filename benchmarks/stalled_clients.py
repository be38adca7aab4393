"""Stalled clients, on loopback only: connections that send headers and part of a multipart body, then nothing;
and the front that holds them, nginx with serving/nginx.conf on loopback ports of the caller's choosing.

Used by ``benchmarks/load_test.py`` (a load run with 16 of them open) and by
``tests/test_serving_server.py`` (a valid request must still be answered quickly, and the
stalled connections must be closed by the server's timeout). Every wait here is bounded.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

NGINX_CONF = Path(__file__).resolve().parents[1] / "serving" / "nginx.conf"
BOUNDARY = "stalledclientboundary"
DECLARED_BODY = 200_000  # bytes announced in Content-Length; far fewer are ever sent


def open_stalled(host: str, port: int, path: str = "/predict") -> socket.socket:
    """A connection that sent a complete header block and the start of an ``image`` part, then stalls."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"stalled clients are for loopback only, not {host}")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {DECLARED_BODY}\r\n\r\n")
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"slow.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + b"\xff\xd8\xff\xe0" + b"\0" * 1000
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(head.encode() + part)
    return sock


def wait_closed(sock: socket.socket, timeout: float) -> tuple[str | None, float | None]:
    """Read until the server closes the connection: (its status line or None, seconds waited); (None, None) if it stays open."""
    began = time.monotonic()
    received = bytearray()
    if not read_until_closed(sock, began + timeout, received):
        return None, None
    return status_line(received), time.monotonic() - began


def read_until_closed(sock: socket.socket, deadline: float, received: bytearray) -> bool:
    """Append what the server sends to ``received`` until it closes (True) or ``deadline`` passes (False)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionError:  # reset: closed
            return True
        if not chunk:
            return True
        received += chunk


def status_line(received: bytes) -> str | None:
    return received.split(b"\r\n", 1)[0].decode("latin-1") if received else None


class StalledClients:
    """Keep ``count`` stalled connections open; one the server closes is replaced, so ``count`` stay open.

    ``closed`` records what the server did with each one it closed: its status line (e.g.
    ``HTTP/1.1 408 Request Timeout``) or None for a plain close, and how long it had been open.
    """

    def __init__(self, host: str, port: int, count: int = 16, replace: bool = True) -> None:
        self.host, self.port, self.count, self.replace = host, port, count, replace
        self.closed: list[tuple[str | None, float]] = []
        self.open_errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "StalledClients":
        ready = threading.Barrier(self.count + 1)
        self._threads = [threading.Thread(target=self._hold, args=(ready,), daemon=True) for _ in range(self.count)]
        for thread in self._threads:
            thread.start()
        ready.wait(timeout=30)  # all connections opened (or failed to) before the caller goes on
        return self

    def _hold(self, ready: threading.Barrier) -> None:
        first = True
        while not self._stop.is_set():
            try:
                sock = open_stalled(self.host, self.port)
            except OSError as error:
                self.open_errors.append(type(error).__name__)
                sock = None
            if first:
                first = False
                ready.wait(timeout=30)
            if sock is None:
                self._stop.wait(0.5)
                continue
            opened = time.monotonic()
            received = bytearray()
            with sock:
                while not self._stop.is_set():
                    if read_until_closed(sock, time.monotonic() + 0.5, received):
                        self.closed.append((status_line(received), time.monotonic() - opened))
                        break
            if not self.replace:
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def nginx_binary() -> str | None:
    """nginx, or None (Debian: ``apt-get install -y nginx``); /usr/sbin is not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def start_nginx(prefix: Path, port: int, upstream_port: int, log) -> subprocess.Popen:
    """serving/nginx.conf as it is, but listening on ``port`` and proxying to ``upstream_port``; its files in ``prefix``."""
    text = NGINX_CONF.read_text()
    for documented, chosen in (("listen 127.0.0.1:8000;", f"listen 127.0.0.1:{port};"),
                               ("server 127.0.0.1:8001;", f"server 127.0.0.1:{upstream_port};")):
        if text.count(documented) != 1:
            raise ValueError(f"{NGINX_CONF} no longer has one {documented!r}")
        text = text.replace(documented, chosen)
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(text)
    # Started as root, nginx runs its worker as "nobody", who cannot write the caller's prefix: keep root there.
    as_root = ["-g", "user root;"] if os.geteuid() == 0 else []
    return subprocess.Popen([nginx_binary() or "nginx", "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf"),
                             *as_root], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
