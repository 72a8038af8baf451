"""``/v1/machines``: every machine/section, its score history and daily summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from stetho.data.names import normalize_section
from stetho.serving.api.deps import ServiceDep, StoreDep, TimeRange, time_range
from stetho.serving.api.models import (
    DailyList,
    Day,
    ErrorBody,
    MachineList,
    Responses,
    ScoreHistory,
)
from stetho.serving.views import check_machine, machines_view, stored_score

__all__ = ["router"]

router = APIRouter(tags=["machines"])

_404: Responses = {404: {"model": ErrorBody, "description": "unknown machine"}}
_503: Responses = {
    503: {"model": ErrorBody, "description": "no store (--db) or the store is unreadable"}
}


def _section(section: str | None) -> str | None:
    return None if section is None else normalize_section(section)


@router.get("/v1/machines", response_model=MachineList, summary="Every machine and its state")
def machines(service: ServiceDep) -> MachineList:
    """Every machine/section a served detector knows (never scored: state ``no scores yet``)
    and every one with stored history: state (``alarm``, ``anomalous``, ``normal``, ``no
    threshold``, ``no scores yet``), latest raw and normalised score, served detector name, the
    stored count, the latest window's source and the open alarm."""
    return MachineList(machines=machines_view(service))


@router.get(
    "/v1/machines/{machine}/scores",
    response_model=ScoreHistory,
    summary="Score history of a machine",
    responses={**_404, **_503},
)
def machine_scores(
    machine: str,
    service: ServiceDep,
    store: StoreDep,
    span: Annotated[TimeRange, Depends(time_range)],
    section: Annotated[str | None, Query(description="one section (default: all)")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="latest rows kept")] = 10_000,
) -> ScoreHistory:
    """Stored windows of a machine, oldest first, within [from, to); 404 for a machine with
    no history that no detector knows."""
    check_machine(service, machine)
    rows = store.scores(machine, section=_section(section), start=span[0], end=span[1], limit=limit)
    return ScoreHistory(machine=machine, scores=[stored_score(r) for r in rows])


@router.get(
    "/v1/machines/{machine}/daily",
    response_model=DailyList,
    summary="Daily summary of a machine",
    responses={**_404, **_503},
)
def machine_daily(
    machine: str,
    service: ServiceDep,
    store: StoreDep,
    span: Annotated[TimeRange, Depends(time_range)],
    section: str | None = None,
) -> DailyList:
    """Per UTC day: number of windows, mean and max raw score, anomalous count."""
    check_machine(service, machine)
    days = store.daily_summary(machine, section=_section(section), start=span[0], end=span[1])
    return DailyList(machine=machine, days=[Day(**d) for d in days])
