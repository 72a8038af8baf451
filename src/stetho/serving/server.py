"""Run the API on uvicorn with limits that hold under abuse.

* the socket is bound here with a real listen backlog (default 1024), so a bad port or an
  address in use is a clear :class:`OSError`/:class:`ValueError` before anything starts;
* a connection must deliver each request's headers within ``header_timeout`` seconds (default
  10 s, separate from the body's deadline; uvicorn itself has no such limit: a client sending a
  byte now and then would hold a connection for ever), idle keep-alive connections close after
  ``keepalive_timeout``; bodies must arrive within ``body_timeout`` and, after ``body_grace``,
  at ``min_body_rate_kib`` or faster (enforced by the API, see :mod:`stetho.serving.body`);
* beyond ``max_connections`` open connections a new one gets a 503 and is closed;
* uvicorn's plain-text replies to malformed requests are JSON here, like every other error.

::

    sock = bind_socket("127.0.0.1", 8000, backlog=1024)
    run_server(create_app(service), sock, service.limits)           # blocks; Ctrl-C stops it

    with BackgroundServer(create_app(service), service.limits) as url:  # tests / notebooks
        httpx.get(url + "/healthz")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stetho.serving.service import ServiceLimits

__all__ = ["BackgroundServer", "bind_socket", "run_server", "serve"]

logger = logging.getLogger(__name__)


def bind_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port).

    Raises:
        ValueError: ``port`` outside 0..65535 or ``backlog`` < 1.
        OSError: the address cannot be bound (in use, not local, no permission); the message
            names it.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535 (0 = any free port), got {port!r}")
    if backlog < 1:
        raise ValueError(f"backlog must be >= 1, got {backlog}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as err:
        raise OSError(err.errno, f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _raw_json(status: int, reason: str, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with a JSON error body."""
    body = json.dumps({"error": message}).encode("utf-8") + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _guarded_protocol(header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol plus a deadline for receiving each request's headers, a cap on
    open connections (503) and JSON instead of uvicorn's plain-text protocol errors."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                logger.debug("closing a connection that sent no complete request headers")
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP; without
                # it every response waits ~40 ms for the client's delayed ACK (Nagle)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self.connections) > max_connections:
                transport.write(
                    _raw_json(
                        503,
                        "Service Unavailable",
                        f"too many open connections (limit {max_connections}); retry shortly",
                    )
                )
                transport.close()
                return
            self._arm()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_raw_json(400, "Bad Request", f"invalid HTTP request: {msg}"))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for_headers():
                self._arm()  # bytes of a request whose headers are not complete yet
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGINT/SIGTERM that stopped it gracefully is not raised
    again afterwards: ``stetho serve`` then closes its store and exits with status 0."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def _config(app: FastAPI, limits: ServiceLimits, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=_guarded_protocol(limits.header_timeout, limits.max_connections),
        lifespan="off",
        timeout_keep_alive=max(1, round(limits.keepalive_timeout)),
        backlog=limits.backlog,
        timeout_graceful_shutdown=5,
        log_config=None,
        log_level=log_level,
        access_log=False,
        server_header=False,
    )


def run_server(
    app: FastAPI, sock: socket.socket, limits: ServiceLimits, log_level: str = "warning"
) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGINT/SIGTERM (graceful shutdown)."""
    server = _Server(_config(app, limits, log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def serve(
    detector: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body_mb: float = 50.0,
    db: str | None = None,
) -> None:
    """Serve one detector (the first server's call, kept for scripts) until interrupted."""
    from stetho.serving.api import create_app
    from stetho.serving.registry import DetectorEntry, DetectorRegistry
    from stetho.serving.service import ScoringService, ServiceLimits

    limits = ServiceLimits(max_body_mb=max_body_mb)
    sock = bind_socket(host, port, limits.backlog)
    store = None
    if db is not None:
        from stetho.store import ScoreStore

        store = ScoreStore.open(db)
    entry = DetectorEntry("default", detector, Path("default"))
    service = ScoringService(DetectorRegistry([entry]), limits, store=store)
    logger.info("stetho service on %s", socket_url(sock))
    try:
        run_server(create_app(service), sock, limits)
    finally:
        service.close()


class BackgroundServer:
    """Serve an app from a thread (tests, notebooks); ``with`` yields its base URL."""

    def __init__(
        self,
        app: FastAPI,
        limits: ServiceLimits,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.sock = bind_socket(host, port, limits.backlog)
        self.url = socket_url(self.sock)
        self.server = _Server(_config(app, limits, log_level))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __repr__(self) -> str:
        return f"BackgroundServer({self.url})"
