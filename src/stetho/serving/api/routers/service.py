"""``/healthz`` and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

import stetho
from stetho.serving.api.deps import MetricsDep, ServiceDep
from stetho.serving.api.models import Health

__all__ = ["router"]

router = APIRouter(tags=["service"])

_METRICS_EXAMPLE = (
    "# HELP stetho_last_normalised_score Latest normalised score (0 = median normal clip, "
    "1 = threshold)\n# TYPE stetho_last_normalised_score gauge\n"
    'stetho_last_normalised_score{machine="fan",section="00"} 0.31\n'
    'stetho_alarm_open{machine="fan",section="00"} 0.0\n'
    'stetho_http_requests_total{method="POST",route="/v1/score",status="200"} 12.0\n'
)


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz(service: ServiceDep) -> Health:
    """The process answers; lists what it serves."""
    return Health(
        status="ok",
        detectors=service.registry.names,
        store=service.store is not None,
        stetho_version=stetho.__version__,
    )


@router.get("/health", include_in_schema=False)
def health_legacy() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain; version=0.0.4": {"example": _METRICS_EXAMPLE}},
            "description": "Prometheus text exposition format",
        }
    },
)
def metrics(metrics: MetricsDep) -> Response:
    """Per machine/section: latest raw and normalised score, threshold, decision, time, alarm
    state and ``stetho_machine_state``; requests by route template and status (counter and
    latency histogram); scores, refusals, requests in progress; ``stetho_build_info``; the
    process, platform and GC collectors. See docs/service.md."""
    body, ctype = metrics.exposition()
    return Response(body, media_type=ctype)
