"""``/v1/alarms``: alarm events, newest first, and their acknowledgement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from stetho.serving.api.deps import ServiceDep, StoreDep, TimeRange, time_range
from stetho.serving.api.models import AckRequest, Alarm, AlarmList, ErrorBody, Responses
from stetho.serving.views import alarm_model, alarms_view
from stetho.utils.errors import NotFoundError

__all__ = ["router"]

router = APIRouter(tags=["alarms"])

_ERR: Responses = {
    404: {"model": ErrorBody, "description": "unknown machine or alarm"},
    503: {"model": ErrorBody, "description": "no store (--db) or the store is unreadable"},
}


@router.get("/v1/alarms", response_model=AlarmList, summary="Alarms, newest first", responses=_ERR)
def alarms(
    service: ServiceDep,
    span: Annotated[TimeRange, Depends(time_range)],
    machine: Annotated[str | None, Query(max_length=200)] = None,
    section: Annotated[str | None, Query(max_length=64)] = None,
    open_only: bool = False,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> AlarmList:
    """Alarm events open at some time in [from, to), newest first: opened/closed, windows
    counted, peak normalised score, served detector name, acknowledgement."""
    rows = alarms_view(
        service,
        machine,
        section,
        open_only=open_only,
        since=span[0],
        until=span[1],
        limit=limit,
    )
    return AlarmList(alarms=rows)


@router.post(
    "/v1/alarms/{alarm_id}/ack",
    response_model=Alarm,
    summary="Acknowledge an alarm",
    responses=_ERR,
)
def acknowledge(
    alarm_id: Annotated[int, Path(ge=1)], body: AckRequest, service: ServiceDep, store: StoreDep
) -> Alarm:
    """Mark an alarm acknowledged with a note (again: the latest note and time count)."""
    row = store.acknowledge_alarm(alarm_id, body.note)
    if row is None:
        raise NotFoundError(f"no alarm has id {alarm_id}")
    return alarm_model(row, service.known_keys().get((row.machine, row.section), ""))
