"""``/v1/windows``: stored windows, one window, its kept audio and its nearest normal clip."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse

from stetho.serving.api.deps import ServiceDep, TimeRange, time_range
from stetho.serving.api.models import ErrorBody, Responses, WindowDetail, WindowList
from stetho.serving.views import window_view, windows_view
from stetho.utils.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["windows"])

_404: Responses = {
    404: {"model": ErrorBody, "description": "unknown machine or window, or no audio kept"}
}
_WAV: Responses = {200: {"content": {"audio/wav": {}}, "description": "16-bit PCM WAV"}}
WindowId = Annotated[int, Path(ge=1, description="the window's id")]


@router.get(
    "/v1/windows",
    response_model=WindowList,
    summary="Stored windows (newest first)",
    responses=_404,
)
def windows(
    service: ServiceDep,
    span: Annotated[TimeRange, Depends(time_range)],
    machine: Annotated[str | None, Query(max_length=200)] = None,
    section: Annotated[str | None, Query(max_length=64)] = None,
    source: Annotated[
        str | None, Query(max_length=1024, description="only windows of this source")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    order: Annotated[Literal["newest", "oldest"], Query()] = "newest",
) -> WindowList:
    """The latest ``limit`` windows in [from, to): time, machine, section, raw and normalised
    score, threshold, decision, source (recording name or path), served detector name and
    version, and whether their audio is kept; 404 for an unknown machine."""
    rows = windows_view(
        service,
        machine,
        section,
        span[0],
        span[1],
        limit,
        newest_first=order == "newest",
        source=source,
    )
    return WindowList(windows=rows)


@router.get(
    "/v1/windows/{window_id}",
    response_model=WindowDetail,
    summary="One window",
    responses=_404,
)
def window(window_id: WindowId, service: ServiceDep) -> WindowDetail:
    """One stored window with the path of its nearest normal bank clip and the URLs of its
    kept audio and of the copy of that clip (null when not kept)."""
    return window_view(service, window_id)


@router.get(
    "/v1/windows/{window_id}/audio",
    response_class=FileResponse,
    summary="The window's audio",
    responses={**_WAV, **_404},
)
def window_audio(window_id: WindowId, service: ServiceDep) -> FileResponse:
    """The kept audio of an anomalous window (WAV); 404 when none was kept or it was dropped."""
    return _kept_wav(service, window_id, nearest=False)


@router.get(
    "/v1/windows/{window_id}/nearest.wav",
    response_class=FileResponse,
    summary="The nearest normal bank clip",
    responses={**_WAV, **_404},
)
def window_nearest(window_id: WindowId, service: ServiceDep) -> FileResponse:
    """The copy of the normal bank clip nearest to the window, as the detector recorded it
    when it scored the window (never a path from the request); 404 when none was kept."""
    return _kept_wav(service, window_id, nearest=True)


def _kept_wav(service: ServiceDep, window_id: int, *, nearest: bool) -> FileResponse:
    """The window's kept audio, or the kept copy of its nearest normal clip (404: none kept)."""
    row = window_view(service, window_id)
    url = row.nearest_audio_url if nearest else row.audio_url
    if service.audio is None or url is None:
        what = "nearest normal clip" if nearest else "audio"
        raise NotFoundError(f"no {what} is kept for window {window_id}")
    stored = service.require_store().window(window_id)
    assert stored is not None
    name = stored.nearest_audio if nearest else stored.audio
    suffix = "_nearest" if nearest else ""
    return FileResponse(
        service.audio.path(name), media_type="audio/wav", filename=f"window_{window_id}{suffix}.wav"
    )
