"""The monitoring API (FastAPI): scoring, detectors, score history, alarms, metrics, dashboard.

::

    app = create_app(ScoringService(registry, ServiceLimits(), store=ScoreStore.open("plant.db")))
    run_server(app, bind_socket("127.0.0.1", 8000, backlog=1024), limits)   # stetho serve

Endpoints (OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /v1/score?machine=&section=&detector=`` — a WAV/FLAC file as the body or as a
  ``multipart/form-data`` file field, or raw PCM with ``rate`` (and ``format``, ``channels``,
  ``channel``) → ``{score, decision, threshold, machine, section, seconds, detector, …}``;
* ``GET /v1/detectors``, ``GET /v1/machines``, ``GET /v1/machines/{machine}/scores?from=&to=``,
  ``GET /v1/alarms``, ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /`` (dashboard);
* the first server's routes stay as aliases: ``POST /score``, ``GET /info``, ``GET /health``.

Every error is JSON ``{"error": "…"}`` with its status (400, 404, 405, 408, 413, 415, 422, 500,
503); a 500 (a bug) and every error that leaves a body unread also say ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import stetho
from stetho.serving.body import (
    BodyPace,
    ClientGone,
    check_content_type,
    drain,
    form_file,
    read_body,
)
from stetho.serving.decode import RequestError, decode_pcm, decode_upload
from stetho.serving.files import normalize_section
from stetho.serving.metrics import ServiceMetrics
from stetho.store.rows import as_utc
from stetho.utils.errors import NotFoundError, StethoError, error_message

if TYPE_CHECKING:
    from stetho.serving.service import ScoringService
    from stetho.store import ScoreStore

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_ENDPOINTS = (
    "POST /v1/score, GET /v1/detectors, GET /v1/machines, GET /v1/machines/{machine}/scores, "
    "GET /v1/machines/{machine}/daily, "
    "GET /v1/alarms, GET /healthz, GET /metrics, GET / (dashboard), GET /docs"
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class _MetricsMiddleware:
    """Counts and times every request by its route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "other"
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"  # bounded label values
            self.metrics.observe_request(method, label, status, time.perf_counter() - start)


class _Ticket:
    """The bytes one admitted request holds (its body as received so far)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0


class _Admission:
    """Bounded admission and a semaphore for decoding + scoring.

    A request is admitted while fewer than ``concurrency + queue`` are in. Its body is then
    reserved as it arrives, chunk by chunk: while the bodies received by the requests in fit in
    ``budget`` bytes it goes on, beyond that it gets 503. A declared Content-Length reserves
    nothing, so clients declaring large bodies and sending them slowly (also cut by the body's
    minimum rate) cannot keep others out; memory stays bounded however many clients connect.
    """

    def __init__(self, concurrency: int, queue: int, timeout: float, budget: int) -> None:
        self.capacity = concurrency + queue
        self.budget = budget
        self.admitted = 0
        self.pending = 0  # bytes received by admitted requests
        self.timeout = timeout
        self.slots = asyncio.Semaphore(concurrency)

    def _busy(self) -> RequestError:
        return RequestError(
            503,
            f"server busy: {self.admitted} scoring requests in progress or waiting "
            f"({self.pending / 2**20:.1f} MiB received; limits {self.capacity} requests, "
            f"{self.budget / 2**20:g} MiB); retry shortly",
            {"Retry-After": "1", "Connection": "close"},
        )

    def enter(self) -> _Ticket:
        """Admit a request (503 when ``concurrency + queue`` are in); give the ticket to
        :meth:`reserve` for each chunk of its body and to :meth:`leave` at the end."""
        if self.admitted >= self.capacity:
            raise self._busy()
        self.admitted += 1
        return _Ticket()

    def reserve(self, ticket: _Ticket, nbytes: int) -> None:
        """Hold ``nbytes`` more for ``ticket`` (503 when the budget is spent)."""
        if self.pending + nbytes > self.budget:
            raise self._busy()
        self.pending += nbytes
        ticket.held += nbytes

    def leave(self, ticket: _Ticket) -> None:
        self.admitted -= 1
        self.pending -= ticket.held
        ticket.held = 0


def _parse_time(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 query time as aware UTC (naive: UTC); times beyond years 1..9999 in UTC
    (``0001-01-01T00:00:00+14:00``) are clamped to the first/last representable instant."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(
            422, f"{name}={text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    return as_utc(t if t.tzinfo else t.replace(tzinfo=UTC), name)


def _section(section: str | None) -> str | None:
    return None if section is None else normalize_section(section)


def _row_json(row: Any) -> dict[str, Any]:
    """A store row (dataclass, possibly nested) as JSON-ready dict; times in ISO 8601."""
    return dict(jsonable_encoder(dataclasses.asdict(row)))


_SCORE_DOC: dict[str, Any] = {
    "requestBody": {
        "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
        "required": True,
    }
}


class _ScoreEndpoint:
    """``POST /v1/score``: admission, body, key, then decoding + scoring in a worker thread."""

    def __init__(self, service: ScoringService, metrics: ServiceMetrics) -> None:
        limits = service.limits
        self.service = service
        self.limits = limits
        self.metrics = metrics
        self.admission = _Admission(
            limits.max_concurrency,
            limits.max_queue,
            limits.queue_timeout,
            max(int(limits.max_pending_mb * 2**20), limits.max_body_bytes),
        )
        self.pace = BodyPace(
            limits.body_timeout, limits.min_body_rate_kib * 1024, limits.body_grace
        )

    async def _refuse_busy(self, request: Request, err: RequestError) -> RequestError:
        """Count a 503 and drop what the client still sends (at the minimum rate), so that it
        reads the reply rather than a reset connection."""
        self.metrics.rejected.labels("busy").inc()
        await drain(request, None, self.pace)
        return err

    async def _read(self, request: Request, ticket: _Ticket) -> bytes:
        def reserve(n: int) -> None:
            self.admission.reserve(ticket, n)

        try:
            return await read_body(request, self.limits.max_body_bytes, self.pace, reserve)
        except RequestError as err:
            if err.status == 503:  # drained by read_body
                self.metrics.rejected.labels("busy").inc()
            raise

    async def _run(self, entry: Any, key: tuple[str, str], *args: Any) -> dict[str, Any]:
        admission = self.admission
        try:
            await asyncio.wait_for(admission.slots.acquire(), admission.timeout)
        except TimeoutError:
            self.metrics.rejected.labels("queue_timeout").inc()
            raise RequestError(
                503, f"no scoring slot free within {admission.timeout:g} s; retry later"
            ) from None
        try:
            self.metrics.in_progress.inc()
            return await run_in_threadpool(_decode_and_score, self.service, entry, key, *args)
        finally:
            self.metrics.in_progress.dec()
            admission.slots.release()

    async def __call__(
        self,
        request: Request,
        key: tuple[str | None, str | None, str | None],
        pcm: tuple[int | None, str, int, int],
    ) -> Response:
        """``key`` = (machine, section, detector) from the query; ``pcm`` = (rate, format,
        channels, channel)."""
        try:
            ticket = self.admission.enter()
        except RequestError as err:
            raise await self._refuse_busy(request, err) from None
        limits = self.limits
        try:
            machine, section, detector = key
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await self._read(request, ticket)
            check_content_type(ctype, pcm[0] is not None)
            if ctype == "multipart/form-data":
                body, fields = await form_file(request, body, limits.max_body_bytes)
                machine = machine or fields.get("machine")
                section = section or fields.get("section")
                detector = detector or fields.get("detector")
            entry, resolved = self.service.resolve(machine, section, detector)
            result = await self._run(entry, resolved, body, *pcm)
            self.metrics.scores.labels(resolved[0], resolved[1], entry.name).inc()
            return JSONResponse(result)
        except ClientGone:
            logger.debug("client disconnected while sending its request")
            return Response(status_code=400)
        except RequestError as err:
            if err.status in (408, 413):
                self.metrics.rejected.labels("timeout" if err.status == 408 else "too_large").inc()
            raise
        finally:
            self.admission.leave(ticket)


def create_app(service: ScoringService) -> FastAPI:
    """The FastAPI application of ``service`` (routes, JSON errors, metrics, dashboard)."""
    metrics = ServiceMetrics(service.machine_states)
    app = FastAPI(
        title="stetho",
        version=stetho.__version__,
        summary="Anomalous sound detection of machines: scoring, history, alarms",
        docs_url=None,  # FastAPI's pages load scripts from a CDN: /docs is rendered here
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app)
    _score = _ScoreEndpoint(service, metrics)
    app.state.admission = _score.admission  # requests admitted and bytes held (introspection)

    @app.post(
        "/v1/score", openapi_extra=_SCORE_DOC, tags=["scoring"], summary="Score one recording"
    )
    async def score_v1(
        request: Request,
        machine: Annotated[
            str | None, Query(max_length=128, description="machine (optional for one key)")
        ] = None,
        section: Annotated[
            str | None, Query(max_length=64, description="section, e.g. 00 (or 0, section_00)")
        ] = None,
        detector: Annotated[
            str | None, Query(max_length=64, description="detector name (default: first fit)")
        ] = None,
        rate: Annotated[int | None, Query(description="raw PCM: sample rate (Hz)")] = None,
        format: Annotated[str, Query(description="raw PCM: int16, int32 or float32")] = "int16",
        channels: Annotated[int, Query(ge=1, le=64, description="raw PCM: channels")] = 1,
        channel: Annotated[int, Query(ge=0, le=63, description="raw PCM: channel scored")] = 0,
    ) -> Response:
        """A WAV/FLAC file as the body or as a multipart file field, or raw PCM with rate=;
        returns score, decision, threshold, detector version and alarm event."""
        return await _score(
            request, (machine, section, detector), (rate, format, channels, channel)
        )

    @app.post("/score", include_in_schema=False)
    async def score_legacy(
        request: Request,
        machine: str | None = None,
        section: str | None = None,
        detector: str | None = None,
    ) -> Response:
        return await _score(request, (machine, section, detector), (None, "int16", 1, 0))

    _add_read_routes(app, service)
    return app


def _decode_and_score(
    service: ScoringService,
    entry: Any,
    key: tuple[str, str],
    body: bytes,
    rate: int | None,
    fmt: str,
    channels: int,
    channel: int,
) -> dict[str, Any]:
    limits = service.limits
    sr = int(entry.scorer.sample_rate)
    if rate is None:
        wave, seconds = decode_upload(body, sr, limits.max_seconds)
    else:
        wave, seconds = decode_pcm(body, rate, fmt, channels, channel, sr, limits.max_seconds)
    return service.score(entry, key, wave, seconds)


def _known_machine(service: ScoringService, machine: str) -> ScoreStore:
    """The store, after checking that ``machine`` has history or a detector (else 404)."""
    store = service.require_store()
    if store.has_machine(machine):
        return store
    known = {m for e in service.registry for m, _ in e.keys}
    if machine in known:
        return store
    stored = sorted({st.machine for st in store.machines()} | known)
    raise NotFoundError(
        f"unknown machine {machine!r}: nothing stored and no detector has it; known: "
        f"{', '.join(stored) or 'none'}"
    )


def _add_read_routes(app: FastAPI, service: ScoringService) -> None:
    metrics: ServiceMetrics = app.state.metrics

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness: the process answers; lists what it serves."""
        return {
            "status": "ok",
            "detectors": service.registry.names,
            "store": service.store is not None,
            "stetho_version": stetho.__version__,
        }

    @app.get("/health", include_in_schema=False)
    def health_legacy() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", include_in_schema=False)
    def info_legacy() -> dict[str, Any]:
        try:
            return service.registry.get(None).scorer.describe()
        except LookupError as err:
            raise RequestError(404, str(err.args[0])) from None

    @app.get("/v1/detectors", tags=["service"])
    def detectors() -> dict[str, Any]:
        """The detectors this server scores with (name, id, version, keys, thresholds, …)."""
        return {"detectors": [e.describe() for e in service.registry]}

    @app.get("/v1/machines", tags=["history"])
    def machines() -> dict[str, Any]:
        """Latest state of every machine/section: score, threshold, decision, time, whether an
        alarm is open; with a store also the number of stored scores, the source and detector of
        the latest one and the open alarm."""
        if service.store is None:
            return {"machines": [_row_json(m) for m in service.machine_states()]}
        out = []
        for st in service.store.machines():
            last = st.last
            out.append(
                {
                    "machine": st.machine,
                    "section": st.section,
                    "score": None if last is None else last.score,
                    "threshold": None if last is None else last.threshold,
                    "decision": None if last is None else last.decision,
                    "time": None if last is None else last.time,
                    "alarm_open": st.open_alarm is not None,
                    "n_scores": st.n_scores,
                    "source": None if last is None else last.source,
                    "detector_id": None if last is None else last.detector_id,
                    "detector_version": None if last is None else last.detector_version,
                    "open_alarm": None if st.open_alarm is None else _row_json(st.open_alarm),
                }
            )
        return {"machines": jsonable_encoder(out)}

    @app.get("/v1/machines/{machine}/scores", tags=["history"])
    def machine_scores(
        machine: str,
        section: str | None = None,
        from_: Annotated[str | None, Query(alias="from", description="ISO 8601 start")] = None,
        to: Annotated[str | None, Query(description="ISO 8601 end")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    ) -> dict[str, Any]:
        """Scores of a machine, oldest first, optionally within [from, to]; 404 for a machine
        with no history that no detector knows."""
        store = _known_machine(service, machine)
        start, end = _parse_time(from_, "from"), _parse_time(to, "to")
        rows = store.scores(machine, section=_section(section), start=start, end=end, limit=limit)
        return {"machine": machine, "scores": [_row_json(r) for r in rows]}

    @app.get("/v1/machines/{machine}/daily", tags=["history"])
    def machine_daily(
        machine: str,
        section: str | None = None,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
    ) -> dict[str, Any]:
        """Per UTC day: number of scores, mean, max and anomalous count."""
        store = _known_machine(service, machine)
        days = store.daily_summary(
            machine,
            section=_section(section),
            start=_parse_time(from_, "from"),
            end=_parse_time(to, "to"),
        )
        return {"machine": machine, "days": jsonable_encoder(days)}

    @app.get("/v1/alarms", tags=["history"])
    def alarms(
        machine: str | None = None,
        section: str | None = None,
        open_only: bool = False,
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
    ) -> dict[str, Any]:
        """Alarm events (opened/closed, peak score, windows, detector), newest first."""
        store = service.require_store()
        rows = store.alarms(
            machine=machine,
            section=_section(section),
            open_only=open_only,
            start=_parse_time(from_, "from"),
            end=_parse_time(to, "to"),
            newest_first=True,
        )
        return {"alarms": [_row_json(r) for r in rows]}

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs() -> HTMLResponse:
        from stetho.serving.apidocs import render_api_docs

        return HTMLResponse(render_api_docs(app.openapi()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24.0) -> HTMLResponse:
        from stetho.serving.dashboard import render_dashboard

        return HTMLResponse(render_dashboard(service, hours=hours))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StethoError)
    async def _stetho_error(request: Request, err: StethoError) -> JSONResponse:
        # one mapping for every error stetho raises: its own HTTP status and message
        if isinstance(err, RequestError):
            return _error(err.status, err.message, err.headers)
        if int(err.http_status) >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, err)
        return _error(int(err.http_status), error_message(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 404:
            msg = f"unknown path {request.url.path!r}; endpoints: {_ENDPOINTS}"
        elif err.status_code == 405:
            allow = headers.get("Allow", "")
            msg = (
                f"{request.url.path} accepts {allow or 'other methods'} only, not {request.method}"
            )
        else:
            msg = str(err.detail)
        return _error(err.status_code, msg, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse(
            {
                "error": "invalid request: " + "; ".join(parts),
                "detail": jsonable_encoder(err.errors()),
            },
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("error while handling %s %s", request.method, request.url.path)
        # the first line only (no SQL, no dumps); Connection: close, as the server closes it
        lines = str(err).strip().splitlines()
        text = f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__
        return _error(500, f"internal error: {text}; see the server log", {"Connection": "close"})
