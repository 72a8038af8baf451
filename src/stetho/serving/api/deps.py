"""Dependencies of the routers (``Depends``): the service, its store, registry and metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Query, Request

from stetho.serving.decode import RequestError
from stetho.serving.metrics import ServiceMetrics
from stetho.serving.registry import DetectorRegistry
from stetho.serving.service import ScoringService
from stetho.store import ScoreStore
from stetho.store.rows import as_utc

__all__ = [
    "MetricsDep",
    "RegistryDep",
    "ServiceDep",
    "StoreDep",
    "TimeRange",
    "get_metrics",
    "get_registry",
    "get_service",
    "get_store",
    "parse_time",
    "time_range",
]


def get_service(request: Request) -> ScoringService:
    """The app's :class:`ScoringService`."""
    service: ScoringService = request.app.state.service
    return service


def get_registry(service: Annotated[ScoringService, Depends(get_service)]) -> DetectorRegistry:
    """The served detectors."""
    return service.registry


def get_store(service: Annotated[ScoringService, Depends(get_service)]) -> ScoreStore:
    """The score store (503 naming ``--db`` when the server keeps no history)."""
    return service.require_store()


def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus metrics."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


ServiceDep = Annotated[ScoringService, Depends(get_service)]
RegistryDep = Annotated[DetectorRegistry, Depends(get_registry)]
StoreDep = Annotated[ScoreStore, Depends(get_store)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def parse_time(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 query time as aware UTC (naive: UTC); times beyond years 1..9999 in UTC
    (``0001-01-01T00:00:00+14:00``) are clamped to the first/last representable instant.

    Raises:
        RequestError: 422, not an ISO 8601 time.
    """
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(
            422, f"{name}={text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    return as_utc(t if t.tzinfo else t.replace(tzinfo=UTC), name)


TimeRange = tuple[datetime | None, datetime | None]


def time_range(
    from_: Annotated[
        str | None,
        Query(alias="from", description="ISO 8601 start (inclusive), e.g. 2026-01-31T00:00:00Z"),
    ] = None,
    to: Annotated[str | None, Query(description="ISO 8601 end (exclusive)")] = None,
) -> TimeRange:
    """The ``from``/``to`` query parameters as aware UTC datetimes."""
    return parse_time(from_, "from"), parse_time(to, "to")
