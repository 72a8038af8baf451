"""``POST /v1/score``: score one recording (and the first server's ``POST /score``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from stetho.serving.api.admission import ScoreEndpoint
from stetho.serving.api.models import ErrorBody, ScoreResult

__all__ = ["router"]

router = APIRouter(tags=["scoring"])

_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "audio/wav": {"schema": {"type": "string", "format": "binary"}},
            "audio/flac": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "machine": {"type": "string"},
                        "section": {"type": "string"},
                        "name": {"type": "string"},
                    },
                    "required": ["file"],
                }
            },
        },
        "required": True,
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what}
    for status, what in (
        (400, "missing machine/section, or audio the model cannot score (too short)"),
        (404, "unknown detector or machine/section"),
        (408, "the body arrived too slowly"),
        (413, "body or audio longer than the limits"),
        (415, "not audio"),
        (503, "server busy (retry after 1 s)"),
    )
}


def _endpoint(request: Request) -> ScoreEndpoint:
    endpoint: ScoreEndpoint = request.app.state.score_endpoint
    return endpoint


@router.post(
    "/v1/score",
    openapi_extra=_BODY,
    summary="Score one recording",
    response_model=ScoreResult,
    responses=_ERRORS,
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
    name: Annotated[
        str | None,
        Query(
            max_length=1024,
            description="the recording's name, stored as the window's source (default: the "
            "multipart file name)",
        ),
    ] = None,
    rate: Annotated[int | None, Query(description="raw PCM: sample rate (Hz)")] = None,
    format: Annotated[str, Query(description="raw PCM: int16, int32 or float32")] = "int16",
    channels: Annotated[int, Query(ge=1, le=64, description="raw PCM: channels")] = 1,
    channel: Annotated[int, Query(ge=0, le=63, description="raw PCM: channel scored")] = 0,
) -> Response:
    """A WAV/FLAC file as the body or as a multipart file field, or raw PCM with ``rate=``.

    Returns the raw and normalised score, the detector's decision and threshold, the stored
    window's id and source, the alarm event it caused, and for an anomalous window the nearest
    normal bank clip and the URL of its kept audio.
    """
    return await _endpoint(request)(
        request, (machine, section, detector), (rate, format, channels, channel), name
    )


@router.post("/score", include_in_schema=False)
async def score_legacy(
    request: Request,
    machine: str | None = None,
    section: str | None = None,
    detector: str | None = None,
) -> Response:
    return await _endpoint(request)(request, (machine, section, detector), (None, "int16", 1, 0))
