"""The monitoring API (FastAPI): scoring, machines, windows and their audio, alarms, metrics.

::

    app = create_app(ScoringService(registry, ServiceLimits(), store=ScoreStore.open("plant.db")))
    run_server(app, bind_socket("127.0.0.1", 8000, backlog=1024), limits)   # stetho serve

One router per resource (:mod:`stetho.serving.api.routers`): ``score``, ``machines``,
``windows``, ``alarms``, ``detectors``, ``service`` (``/healthz``, ``/metrics``) and the
dashboard's mount point; dependencies give them the service, its store and registry
(:mod:`stetho.serving.api.deps`); every answer is a Pydantic model
(:mod:`stetho.serving.api.models`). ``/docs`` is Swagger UI and ``/redoc`` ReDoc, both served
from the assets of the installed ``fastapi-offline`` package (no CDN: a plant network has no
internet); ``/openapi.json`` is the schema.

Every error is JSON ``{"error": "…"}`` with its status (400, 404, 405, 408, 413, 415, 422, 500,
503), mapped in one handler from :class:`~stetho.utils.errors.StethoError`'s ``http_status``; a
500 (a bug) and every error that leaves a body unread also say ``Connection: close``.
"""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import stetho
from stetho.serving.api.admission import ScoreEndpoint
from stetho.serving.api.routers import alarms, detectors, machines, score, windows
from stetho.serving.api.routers import service as service_routes
from stetho.serving.api.routers.dashboard import dashboard_router
from stetho.serving.decode import RequestError
from stetho.serving.metrics import ServiceMetrics
from stetho.serving.service import ScoringService
from stetho.utils.errors import StethoError, error_message

__all__ = ["DOCS_STATIC", "create_app"]

logger = logging.getLogger(__name__)

#: Where the docs pages load their scripts and styles from (this server).
DOCS_STATIC = "/static/docs"

_ENDPOINTS = (
    "POST /v1/score, GET /v1/detectors, GET /v1/machines, GET /v1/machines/{machine}/scores, "
    "GET /v1/machines/{machine}/daily, GET /v1/windows, GET /v1/windows/{id}, "
    "GET /v1/windows/{id}/audio, GET /v1/windows/{id}/nearest.wav, GET /v1/alarms, "
    "POST /v1/alarms/{id}/ack, GET /healthz, GET /metrics, GET / (dashboard), GET /docs"
)

_TAGS = [
    {"name": "scoring", "description": "Score a recording with a served detector."},
    {"name": "machines", "description": "Every machine/section, its history and summary."},
    {"name": "windows", "description": "Stored windows: source, scores, audio, nearest clip."},
    {"name": "alarms", "description": "Alarm events (k of n windows anomalous), newest first."},
    {"name": "detectors", "description": "The served detectors."},
    {"name": "service", "description": "Liveness and Prometheus metrics."},
]


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


def _docs_assets() -> Path:
    """The Swagger UI / ReDoc assets shipped by the ``fastapi-offline`` package."""
    return Path(str(files("fastapi_offline") / "static"))


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI, "try it out") and ``/redoc``, scripts served by this server."""
    app.mount(DOCS_STATIC, StaticFiles(directory=_docs_assets()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title="stetho API",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            # no validator badge: it would send the schema to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title="stetho API",
            redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def create_app(service: ScoringService) -> FastAPI:
    """The FastAPI application of ``service`` (routers, JSON errors, metrics, docs, dashboard)."""
    metrics = ServiceMetrics(service.machine_states)
    app = FastAPI(
        title="stetho",
        version=stetho.__version__,
        summary="Anomalous sound detection of machines: scoring, history, alarms",
        description="Scores are raw (`score`) and normalised (`normalised`: 0 = the median "
        'normal clip, 1.0 = the threshold). Every error is JSON `{"error": "…"}`. '
        "Dashboard at `/`, Prometheus metrics at `/metrics`.",
        openapi_tags=_TAGS,
        docs_url=None,  # FastAPI's own pages load scripts from a CDN: see _add_docs
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app)
    endpoint = ScoreEndpoint(service, metrics)
    app.state.score_endpoint = endpoint
    app.state.admission = endpoint.admission  # requests admitted and bytes held (introspection)
    for module in (score, detectors, machines, windows, alarms, service_routes):
        app.include_router(module.router)
    _add_docs(app)
    app.include_router(dashboard_router())
    return app


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
