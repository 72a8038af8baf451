"""The dashboard: server-rendered HTML pages with inline SVG charts, nothing fetched from elsewhere.

* ``GET /`` — every machine the service knows with its state (also those with no scores yet),
  the normalised scores of all machines on one axis (threshold at 1.0, alarm spans and
  acknowledgements, gaps left open), the alarms and the latest windows with their recordings'
  names. ``?range=fit`` (default: fitted to the data), ``1h``, ``1d``, ``7d`` or
  ``range=custom&from=…&to=…`` (UTC).
* ``GET /dashboard/alarms/{id}`` — an alarm: its windows, the timeline around it, the spectrogram
  of its strongest window beside the nearest normal clip's, both playable, and the
  acknowledgement form.
* ``GET /dashboard/windows/{id}`` — one window: spectrograms (shared colour bar) and audio of the
  window and of the nearest normal clip.

Every page comes with a Content-Security-Policy that lets the browser load nothing from another
origin. Times are UTC.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

import stetho
from stetho.serving.api.models import Alarm, Machine, WindowSummary
from stetho.serving.charts import ChartAlarm, ChartSeries, ChartWindow, series_colour, timeline_svg
from stetho.serving.dashboard_assets import CSS, SCRIPT
from stetho.serving.dashboard_data import PRESETS, Period, choose_period, parse_time
from stetho.serving.dashboard_source import DashboardSource
from stetho.utils.errors import InputError

if TYPE_CHECKING:
    from stetho.serving.service import ScoringService

__all__ = [
    "CSP",
    "ago",
    "alarm_href",
    "page",
    "recording_name",
    "render_dashboard",
    "render_overview",
    "router",
    "when",
    "window_href",
    "windows_table",
]

logger = logging.getLogger(__name__)

#: Nothing but this server: scripts and styles inline, images as data URIs, audio from here.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self'; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'self'; base-uri 'self'"
)
_REFRESH_S = 30
_MAX_POINTS = 3000  # drawn per machine (evenly thinned beyond; anomalous ones always kept)
_LATEST_WINDOWS = 40


# -- small formatters ----------------------------------------------------------------------------
def _e(v: Any) -> str:
    return escape(str(v))


def when(t: datetime | None) -> str:
    """``2026-12-07 14:05:31 UTC`` (``–`` for None)."""
    return "–" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(t: datetime | None, now: datetime) -> str:
    """``3 min ago`` style age of ``t``."""
    if t is None:
        return ""
    s = (now - t).total_seconds()
    if s < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def recording_name(source: str) -> str:
    """The file name of a recording path or upload (``/data/in/pump_0042.wav`` → its name);
    other sources (``stdin``, ``soundcard:hw:1``) as they are."""
    if not source:
        return "–"
    tail = source.rsplit("/", 1)[-1]
    if ":" in source and "/" not in source:
        return source
    return tail or source


_STATE_CLASS = {"alarm": "s-alarm", "anomalous": "s-anomalous", "normal": "s-normal"}


def _state_badge(state: str) -> str:
    cls = _STATE_CLASS.get(state.lower(), "s-none")
    label = "ALARM" if state.lower() == "alarm" else state
    return f'<span class="state {cls}">{_e(label)}</span>'


def _key(machine: str, section: str) -> str:
    return f"{machine}/{section}"


def window_href(window_id: int) -> str:
    """The dashboard page of a window."""
    return f"/dashboard/windows/{int(window_id)}"


def alarm_href(alarm_id: int) -> str:
    """The dashboard page of an alarm."""
    return f"/dashboard/alarms/{int(alarm_id)}"


# -- page frame ----------------------------------------------------------------------------------
def page(title: str, body: str, source: DashboardSource | None, refresh: int = 0) -> str:
    """A whole HTML page: header (detectors served, store, version, links), body, script."""
    meta = ""
    if source is not None:
        names = ", ".join(source.detector_names()) or "none"
        meta = f"detectors: {_e(names)} · {'score store' if source.has_store else 'no store'} · "
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)} · stetho</title><style>{CSS}</style></head>"
        f"<body data-refresh='{refresh}'><header><h1><a href='/' style='color:#fff;"
        f"text-decoration:none'>stetho monitor</a></h1><span class='meta'>{meta}stetho "
        f"{_e(stetho.__version__)} · <a href='/docs'>API</a> · <a href='/metrics'>metrics</a>"
        f"</span></header><main>{body}</main><script>{SCRIPT}</script></body></html>"
    )


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": CSP})


# -- overview ------------------------------------------------------------------------------------
def _range_control(period: Period) -> str:
    links = []
    for name, (label, _) in PRESETS.items():
        active = " active" if period.preset == name else ""
        href = "/" if name == "fit" else f"/?range={name}"
        links.append(f'<a class="preset{active}" data-range="{name}" href="{href}">{label}</a>')
    fmt = "%Y-%m-%d %H:%M:%S"
    lo, hi = period.start.astimezone(UTC), period.end.astimezone(UTC)
    active = " style='font-weight:600'" if period.preset == "custom" else ""
    box = "type='text' size='19' placeholder='YYYY-MM-DD HH:MM' required"
    custom = (
        "<form id='custom-range' method='get' action='/'><input type='hidden' name='range' "
        f"value='custom'><span{active}>from</span> <input {box} name='from' "
        f"value='{lo:{fmt}}'> to <input {box} name='to' value='{hi:{fmt}}'> UTC "
        "<button type='submit'>show</button></form>"
    )
    note = f" <span class='muted'>{_e(period.note)}</span>" if period.note else ""
    return (
        f"<div class='range card' id='range' data-start='{lo.isoformat()}' "
        f"data-end='{hi.isoformat()}'><b>Period:</b> {''.join(links)}{custom}"
        f"<div style='flex-basis:100%'>Showing <b id='period'>{when(lo)} – {when(hi)}</b> "
        f"· {_e(period.label)}{note}</div></div>"
    )


def _machines_table(machines: list[Machine], alarms: list[Alarm], now: datetime) -> str:
    open_alarm = {(a.machine, a.section): a for a in alarms if a.closed is None}
    rows = []
    for m in machines:
        a = open_alarm.get((m.machine, m.section))
        alarm = f"<a href='{alarm_href(a.id)}'>open alarm #{a.id}</a>" if a else ""
        last = f"{when(m.time)} <span class='muted'>{ago(m.time, now)}</span>"
        rows.append(
            f"<tr><td>{_e(m.machine)}</td><td>{_e(m.section)}</td><td>{_state_badge(m.state)}"
            f"</td><td class='num'>{_num(m.last_normalised)}</td>"
            f"<td>{last if m.time else '–'}</td><td>{_e(m.detector_name or '–')}</td>"
            f"<td>{alarm}</td></tr>"
        )
    if not rows:
        rows.append("<tr><td colspan='7' class='muted'>no detector loaded and nothing stored</td>")
    return (
        "<table id='machines'><thead><tr><th>machine</th><th>section</th><th>state</th>"
        "<th>last normalised score</th><th>last scored</th><th>detector</th><th></th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _thin(windows: list[WindowSummary]) -> list[WindowSummary]:
    if len(windows) <= _MAX_POINTS:
        return windows
    step = len(windows) / _MAX_POINTS
    keep = {int(i * step) for i in range(_MAX_POINTS)} | {len(windows) - 1}
    return [w for i, w in enumerate(windows) if i in keep or w.decision == 1]


def chart_series(
    keys: list[tuple[str, str]], windows: dict[tuple[str, str], list[WindowSummary]]
) -> list[ChartSeries]:
    """One chart series per (machine, section) of ``keys`` (colours by position in ``keys``)."""
    out = []
    for i, (machine, section) in enumerate(keys):
        ws = [w for w in windows.get((machine, section), []) if w.normalised is not None]
        points = [
            ChartWindow(
                w.time,
                float(w.normalised),  # type: ignore[arg-type]
                w.decision == 1,
                None if w.id is None else window_href(w.id),
                recording_name(w.source),
            )
            for w in _thin(ws)
        ]
        out.append(ChartSeries(_key(machine, section), series_colour(i), points))
    return out


def chart_alarms(alarms: list[Alarm], series: list[ChartSeries]) -> list[ChartAlarm]:
    """The alarms as chart spans, in the colour of their machine's series."""
    colour = {s.name: s.colour for s in series}
    return [
        ChartAlarm(
            _key(a.machine, a.section),
            colour.get(_key(a.machine, a.section), "#c62828"),
            a.opened,
            a.closed,
            alarm_href(a.id),
            a.ack_time if a.acknowledged or a.ack_time else None,
            a.ack_note,
        )
        for a in alarms
    ]


def _legend(series: list[ChartSeries], windows: dict[tuple[str, str], list[WindowSummary]]) -> str:
    items = []
    for s in series:
        n = len(windows.get(tuple(s.name.split("/", 1)), []))  # type: ignore[arg-type]
        items.append(
            f"<label><input type='checkbox' checked data-series-toggle value='{_e(s.name)}'>"
            f"<span class='swatch' style='background:{s.colour}'></span>{_e(s.name)} "
            f"<span class='muted'>({n} windows)</span></label>"
        )
    items.append(
        "<span class='muted'><span class='swatch' style='background:#c62828;height:2px'></span>"
        "threshold · <span class='swatch' style='background:#e53935;opacity:.3;height:.9em'>"
        "</span>alarm · <span class='swatch' style='background:#9e9e9e;opacity:.4;height:.9em'>"
        "</span>acknowledged alarm · <span style='color:#2e7d32'>✓</span> acknowledgement · "
        "click a point or an alarm to open it</span>"
    )
    return "<div class='legend'>" + "".join(items) + "</div>"


def _alarms_table(alarms: list[Alarm], now: datetime) -> str:
    rows = []
    for a in alarms:
        status = "open" if a.closed is None else f"closed {when(a.closed)}"
        ack = (
            f"<span class='ack-yes'>✓ {when(a.ack_time)}</span> {_e(a.ack_note or '')}"
            if a.acknowledged or a.ack_time
            else "<span class='ack-no'>not acknowledged</span>"
        )
        rows.append(
            f"<tr><td><a href='{alarm_href(a.id)}'>#{a.id}</a></td><td>{_e(a.machine)}/"
            f"{_e(a.section)}</td><td>{when(a.opened)} <span class='muted'>"
            f"{ago(a.opened, now)}</span></td><td>{status}</td><td class='num'>"
            f"{_num(a.peak_normalised)}</td><td class='num'>{a.windows}</td>"
            f"<td>{_e(a.detector_name or '–')}</td><td>{ack}</td></tr>"
        )
    if not rows:
        rows.append("<tr><td colspan='8' class='muted'>no alarms in this period</td></tr>")
    return (
        "<table id='alarms'><thead><tr><th>alarm</th><th>machine</th><th>opened</th>"
        "<th>status</th><th>peak normalised</th><th>anomalous windows</th><th>detector</th>"
        "<th>acknowledged</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def windows_table(windows: list[WindowSummary], table_id: str = "windows") -> str:
    """Windows (as given) with time, machine, recording name, scores and links."""
    rows = []
    for w in windows:
        verdict = (
            "<span class='state s-anomalous'>anomalous</span>"
            if w.decision == 1
            else "normal"
            if w.decision == 0
            else "no threshold"
        )
        audio = " <span class='muted'>(audio)</span>" if w.has_audio else ""
        link = when(w.time) if w.id is None else f"<a href='{window_href(w.id)}'>{when(w.time)}</a>"
        rows.append(
            f"<tr><td>{link}</td>"
            f"<td>{_e(w.machine)}/{_e(w.section)}</td><td class='recording' "
            f"title='{_e(w.source)}'>{_e(recording_name(w.source))}{audio}</td>"
            f"<td class='num'>{_num(w.normalised)}</td><td>{verdict}</td>"
            f"<td>{_e(w.detector_name or '–')} v{w.detector_version}</td></tr>"
        )
    if not rows:
        rows.append("<tr><td colspan='6' class='muted'>no windows in this period</td></tr>")
    return (
        f"<table id='{table_id}'><thead><tr><th>time</th><th>machine</th><th>recording</th>"
        "<th>normalised score</th><th>decision</th><th>detector</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def render_overview(
    machines: list[Machine],
    windows: dict[tuple[str, str], list[WindowSummary]],
    alarms: list[Alarm],
    period: Period,
    now: datetime,
) -> str:
    """The overview's body (everything but the page frame) from plain data.

    Args:
        machines: Every known machine/section, in display order.
        windows: The windows of each (machine, section) within the period, oldest first.
        alarms: Alarms overlapping the period and every open one, newest first.
        period: What is shown.
        now: The current time (for ages).
    """
    series = chart_series([(m.machine, m.section) for m in machines], windows)
    chart = timeline_svg(
        series,
        chart_alarms(alarms, series),
        period.start,
        period.end,
        "normalised scores of all machines; threshold at 1.0",
    )
    latest = sorted((w for ws in windows.values() for w in ws), key=lambda w: w.time)
    latest = latest[::-1][:_LATEST_WINDOWS]
    n = sum(len(ws) for ws in windows.values())
    return (
        _range_control(period)
        + f"<h2>Machines</h2>{_machines_table(machines, alarms, now)}"
        + "<h2>Normalised scores</h2><div class='card' id='timeline'>"
        + f"{_legend(series, windows)}{chart}<p class='muted'>{n} windows in the period. "
        "0 is a typical normal clip of the machine's bank, 1.0 its decision threshold "
        "(docs/thresholds.md); every machine on one scale."
        "</p></div>"
        + f"<h2>Alarms</h2>{_alarms_table(alarms, now)}"
        + f"<h2>Latest windows</h2><p class='muted'>the {len(latest)} latest of the period, "
        "newest first; open one to see and hear it</p>" + windows_table(latest)
    )


def render_dashboard(
    service: ScoringService,
    preset: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> str:
    """The overview page of ``service`` for a range preset or a custom ``[start, end]``.

    Raises:
        InputError: an unknown preset or an empty custom range.
    """
    now = now or datetime.now(UTC)
    source = DashboardSource(service)
    machines = source.machines()
    recent = source.recent_windows(machines, now)
    period = choose_period(preset, start, end, now, (w.time for ws in recent.values() for w in ws))
    if period.preset == "fit":
        windows = {
            k: [w for w in ws if period.start <= w.time <= period.end] for k, ws in recent.items()
        }
    else:
        windows = source.windows_in(machines, period.start, period.end)
    alarms = [
        a
        for a in source.alarms()
        if a.closed is None or (a.opened <= period.end and a.closed >= period.start)
    ]
    body = render_overview(machines, windows, alarms, period, now)
    refresh = 0 if period.preset == "custom" else _REFRESH_S
    return page("overview", body, source, refresh)


#: The dashboard's routes, mounted by :func:`stetho.serving.api.create_app`; the service is
#: ``request.app.state.service``.
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request,
    range: Annotated[str | None, Query(max_length=16)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    hours: Annotated[float | None, Query(gt=0, le=24 * 366)] = None,
) -> HTMLResponse:
    """The overview (``range``: fit, 1h, 1d, 7d or custom with ``from``/``to`` in UTC)."""
    service = request.app.state.service
    now = datetime.now(UTC)
    try:
        if hours is not None and range is None:  # the first dashboard's ?hours=
            return _html(render_dashboard(service, "custom", now - timedelta(hours=hours)))
        start = parse_time(from_, "from") if from_ else None
        end = parse_time(to, "to") if to else None
        return _html(render_dashboard(service, range, start, end, now))
    except InputError as err:
        body = f"<p class='warn'>{_e(err)}</p><p><a href='/'>back to the overview</a></p>"
        return _html(page("bad range", body, None), 400)


@router.get("/dashboard/alarms/{alarm_id}", response_class=HTMLResponse)
def alarm_page(request: Request, alarm_id: int) -> HTMLResponse:
    """One alarm: facts, acknowledgement, timeline, its strongest window seen and heard."""
    from stetho.serving.dashboard_pages import render_alarm_page

    source = DashboardSource(request.app.state.service)
    text, status = render_alarm_page(source, alarm_id)
    return _html(text, status)


@router.get("/dashboard/windows/{window_id}", response_class=HTMLResponse)
def window_page(request: Request, window_id: int) -> HTMLResponse:
    """One window beside its nearest normal clip, seen and heard."""
    from stetho.serving.dashboard_pages import render_window_page

    source = DashboardSource(request.app.state.service)
    text, status = render_window_page(source, window_id)
    return _html(text, status)
