"""``/v1/detectors``: the served detectors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from stetho.serving.api.deps import RegistryDep
from stetho.serving.api.models import DetectorInfo, DetectorList, ErrorBody
from stetho.serving.decode import RequestError

__all__ = ["router"]

router = APIRouter(tags=["detectors"])


@router.get("/v1/detectors", response_model=DetectorList, summary="The served detectors")
def detectors(registry: RegistryDep) -> DetectorList:
    """Name, id, version, folder, kind, keys and thresholds of every served detector."""
    return DetectorList(detectors=[DetectorInfo(**e.describe()) for e in registry])


@router.get(
    "/v1/detectors/{name}",
    response_model=DetectorInfo,
    summary="One served detector",
    responses={404: {"model": ErrorBody, "description": "unknown detector"}},
)
def detector(name: str, registry: RegistryDep) -> DetectorInfo:
    """One served detector by name; 404 names the known ones."""
    try:
        return DetectorInfo(**registry.get(name).describe())
    except LookupError as err:
        raise RequestError(404, str(err.args[0])) from None


@router.get("/info", include_in_schema=False)
def info_legacy(registry: RegistryDep) -> dict[str, Any]:
    try:
        return dict(registry.get(None).current().scorer.describe())
    except LookupError as err:
        raise RequestError(404, str(err.args[0])) from None
