"""What the API and the server-rendered dashboard show, as the API's Pydantic models.

::

    machines_view(service)                                  # every known machine/section
    windows_view(service, "fan", "00", since, until)        # stored windows, newest first
    window_view(service, 42)                                # one window + nearest clip + URLs
    alarms_view(service, machine="fan")                     # alarms, newest first

The routers of :mod:`stetho.serving.api` answer with exactly these, so the dashboard and the
JSON API never disagree. Unknown machines raise :class:`~stetho.utils.errors.NotFoundError`
(404); history without a store raises a 503 naming ``--db``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from stetho.data.names import normalize_section
from stetho.serving.api.models import (
    Alarm,
    Machine,
    StoredScore,
    WindowDetail,
    WindowSummary,
)
from stetho.store.rows import AlarmRow, MachineState, ScoreRow
from stetho.utils.errors import NotFoundError

if TYPE_CHECKING:
    from stetho.serving.service import ScoringService
    from stetho.store import ScoreStore

__all__ = [
    "alarm_model",
    "alarms_view",
    "check_machine",
    "machines_view",
    "stored_score",
    "window_detail",
    "window_summary",
    "window_view",
    "windows_view",
]


def _has(service: ScoringService, name: str | None) -> bool:
    return service.audio is not None and service.audio.exists(name)


def window_summary(service: ScoringService, row: ScoreRow) -> WindowSummary:
    """The summary of a stored (or in-memory) window."""
    return WindowSummary(
        id=row.id,
        time=row.time,
        machine=row.machine,
        section=row.section,
        score=row.score,
        normalised=row.normalised,
        threshold=row.threshold,
        decision=row.decision,
        source=row.source,
        detector_name=row.detector_name,
        detector_version=row.detector_version,
        has_audio=row.id is not None and _has(service, row.audio),
    )


def window_detail(service: ScoringService, row: ScoreRow) -> WindowDetail:
    """A window with its nearest bank clip and the URLs of its kept audio (None: not kept)."""
    base = window_summary(service, row)
    near = row.id is not None and _has(service, row.nearest_audio)
    return WindowDetail(
        **base.model_dump(),
        detector_id=row.detector_id,
        window_start=row.window_start,
        window_end=row.window_end,
        nearest_ref=row.nearest_ref,
        audio_url=f"/v1/windows/{row.id}/audio" if base.has_audio else None,
        nearest_audio_url=f"/v1/windows/{row.id}/nearest.wav" if near else None,
    )


def stored_score(row: ScoreRow) -> StoredScore:
    """A window as the score history lists it (the row's fields of the same names)."""
    return StoredScore.model_validate(row, from_attributes=True)


def alarm_model(row: AlarmRow, served: str = "") -> Alarm:
    """An alarm as the API shows it (``served``: the name when the row has none)."""
    return Alarm(
        id=row.id,
        machine=row.machine,
        section=row.section,
        opened=row.opened,
        closed=row.closed,
        windows=row.n_windows,
        peak_normalised=row.peak_normalised,
        detector_name=row.detector_name or served,
        acknowledged=row.acknowledged,
        ack_note=row.ack_note,
        ack_time=row.ack_time,
        peak_score=row.peak_score,
        n_windows=row.n_windows,
        detector_id=row.detector_id,
        detector_version=row.detector_version,
    )


def check_machine(service: ScoringService, machine: str) -> None:
    """Nothing when ``machine`` has history or a served detector knows it; else 404."""
    known = {m for m, _ in service.known_keys()}
    if machine in known:
        return
    if service.store is not None and service.store.has_machine(machine):
        return
    if service.store is None and any(m == machine for m, _ in service.recent):
        return
    stored = set() if service.store is None else {st.machine for st in service.store.machines()}
    listed = ", ".join(sorted(stored | known)) or "none"
    raise NotFoundError(
        f"unknown machine {machine!r}: nothing stored and no detector has it; known: {listed}"
    )


def machines_view(service: ScoringService) -> list[Machine]:
    """Every machine/section a served detector knows (never scored: ``"no scores yet"``) and
    every one with stored history, sorted by name."""
    known = service.known_keys()
    states = {(st.machine, st.section): st for st in _store_states(service.store)}
    out = []
    for g in service.machine_states():
        st = states.get((g.machine, g.section))
        last = None if st is None else st.last
        open_alarm = None if st is None or st.open_alarm is None else st.open_alarm
        served = g.detector_name or known.get((g.machine, g.section), "")
        out.append(
            Machine(
                machine=g.machine,
                section=g.section,
                state=g.state,  # type: ignore[arg-type]  # one of MachineState
                detector_name=served,
                last_normalised=g.normalised,
                score=g.score,
                threshold=g.threshold,
                decision=g.decision,
                time=g.time,
                alarm_open=g.alarm_open,
                n_scores=None if service.store is None else (0 if st is None else st.n_scores),
                source=None if last is None else last.source,
                detector_id=None if last is None else last.detector_id,
                detector_version=None if last is None else last.detector_version,
                open_alarm=None if open_alarm is None else alarm_model(open_alarm, served),
            )
        )
    return out


def _store_states(store: ScoreStore | None) -> list[MachineState]:
    return [] if store is None else list(store.machines())


def windows_view(
    service: ScoringService,
    machine: str | None = None,
    section: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    *,
    newest_first: bool = True,
    source: str | None = None,
) -> list[WindowSummary]:
    """Windows with ``since <= time < until`` (the latest ``limit``), newest first by default.

    From the store; without one, the windows this process scored (ids None).

    Raises:
        NotFoundError: ``machine`` is neither stored nor known to a served detector.
    """
    if machine is not None:
        check_machine(service, machine)
    sec = None if section is None else normalize_section(section)
    if service.store is not None:
        rows = service.store.windows(
            machine, sec, since, until, limit, newest_first=newest_first, source=source
        )
    else:
        rows = [
            r
            for (m, s), recent in service.recent.items()
            if (machine is None or m == machine) and (sec is None or s == sec)
            for r in recent
            if (since is None or r.time >= since)
            and (until is None or r.time < until)
            and (source is None or r.source == source)
        ]
        rows.sort(key=lambda r: r.time, reverse=True)
        rows = rows[: max(0, limit)]
        if not newest_first:
            rows.reverse()
    return [window_summary(service, r) for r in rows]


def window_view(service: ScoringService, window_id: int) -> WindowDetail:
    """One stored window.

    Raises:
        NotFoundError: no window has this id.
    """
    row = service.require_store().window(window_id)
    if row is None:
        raise NotFoundError(f"no stored window has id {window_id}")
    return window_detail(service, row)


def alarms_view(
    service: ScoringService,
    machine: str | None = None,
    section: str | None = None,
    *,
    open_only: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[Alarm]:
    """Alarms (open at some time in ``[since, until)``), newest first.

    Raises:
        NotFoundError: ``machine`` is neither stored nor known to a served detector.
    """
    store = service.require_store()
    if machine is not None:
        check_machine(service, machine)
    rows = store.alarms(
        machine=machine,
        section=None if section is None else normalize_section(section),
        open_only=open_only,
        start=since,
        end=until,
        newest_first=True,
    )
    if limit is not None:
        rows = rows[: max(0, limit)]
    known = service.known_keys()
    return [alarm_model(r, known.get((r.machine, r.section), "")) for r in rows]
