"""The dashboard at ``/``: one self-contained HTML page rendered on the server.

Machines with their current state, a score timeline per machine (threshold line, alarm spans),
the alarm list, and the spectrogram of the latest abnormal window scored by this process. No
JavaScript and nothing fetched from elsewhere (plant networks have no internet); the page
reloads itself every 30 s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any

import stetho
from stetho.serving.charts import TimelinePoint, spectrogram_svg, timeline_svg

if TYPE_CHECKING:
    from stetho.serving.metrics import MachineGauge
    from stetho.serving.service import ScoringService

__all__ = ["render_dashboard"]

_MAX_POINTS = 3000  # timeline points per machine (evenly thinned beyond)
_MAX_ALARMS = 100
_MAX_ROWS = 50_000  # latest scores read per machine for a timeline

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em 2em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em}
h3{font-size:1em;margin:1em 0 .2em}.muted{color:#777;font-size:.9em}
table{border-collapse:collapse;font-size:.92em}th,td{padding:.3em .8em;text-align:left;
border-bottom:1px solid #e4e4e4}th{background:#f3f3f3}
.state{font-weight:600;padding:.1em .5em;border-radius:.3em}
.alarm{background:#e53935;color:#fff}.anomalous{background:#ffb74d}.normal{background:#81c784}
.unknown{background:#ddd}.legend span{margin-right:1.2em}
"""


def _state(g: MachineGauge) -> tuple[str, str]:
    if g.alarm_open:
        return "alarm", "ALARM"
    if g.decision == 1:
        return "anomalous", "anomalous"
    if g.decision == 0:
        return "normal", "normal"
    return "unknown", "no threshold" if g.score is not None else "no scores"


def _when(t: datetime | None) -> str:
    return "–" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _thin(points: list[TimelinePoint]) -> list[TimelinePoint]:
    if len(points) <= _MAX_POINTS:
        return points
    step = len(points) / _MAX_POINTS
    keep = {int(i * step) for i in range(_MAX_POINTS)} | {len(points) - 1}
    # anomalous points are always kept so that no alarm-worthy score disappears from view
    return [p for i, p in enumerate(points) if i in keep or p.decision == 1]


def _history(
    service: ScoringService, g: MachineGauge, start: datetime, end: datetime
) -> tuple[list[TimelinePoint], list[tuple[datetime, datetime | None]]]:
    key = (g.machine, g.section)
    if service.store is None:
        pts = [p for p in service.recent.get(key, ()) if start <= p.time <= end]
        return pts, []
    rows = service.store.scores(g.machine, section=g.section, start=start, end=end, limit=_MAX_ROWS)
    pts = [TimelinePoint(r.time, r.score, r.threshold, r.decision) for r in rows]
    spans = [
        (a.opened, a.closed)
        for a in service.store.alarms(machine=g.machine, section=g.section, start=start, end=end)
    ]
    return pts, spans


def _machines_table(states: list[MachineGauge]) -> str:
    rows = []
    for g in states:
        cls, label = _state(g)
        rows.append(
            f"<tr><td>{escape(g.machine)}</td><td>{escape(g.section)}</td>"
            f'<td><span class="state {cls}">{label}</span></td><td>{_num(g.score)}</td>'
            f"<td>{_num(g.threshold)}</td><td>{_when(g.time)}</td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="6" class="muted">no machine has been scored yet</td></tr>')
    return (
        '<table id="machines"><thead><tr><th>machine</th><th>section</th><th>state</th>'
        "<th>last score</th><th>threshold</th><th>last scored</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _alarms_table(service: ScoringService, start: datetime) -> str:
    if service.store is None:
        return (
            '<table id="alarms"><tbody><tr><td class="muted">alarms need a score store: start '
            "<code>stetho serve</code> with <code>--db PATH_OR_URL</code></td></tr></tbody>"
            "</table>"
        )
    alarms = sorted(service.store.alarms(start=start), key=lambda a: a.opened, reverse=True)
    alarms = alarms[:_MAX_ALARMS]
    rows = [
        f"<tr><td>{escape(a.machine)}</td><td>{escape(a.section)}</td>"
        f"<td>{'open' if a.closed is None else 'closed'}</td><td>{_when(a.opened)}</td>"
        f"<td>{_when(a.closed)}</td><td>{_num(a.peak_score)}</td><td>{a.n_windows}</td>"
        f"<td>{escape(str(a.detector_id))} v{a.detector_version}</td></tr>"
        for a in alarms
    ]
    if not rows:
        rows.append('<tr><td colspan="8" class="muted">no alarms</td></tr>')
    return (
        '<table id="alarms"><thead><tr><th>machine</th><th>section</th><th>status</th>'
        "<th>opened</th><th>closed</th><th>peak score</th><th>windows</th><th>detector</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _machine_section(
    service: ScoringService, g: MachineGauge, start: datetime, end: datetime
) -> str:
    points, spans = _history(service, g, start, end)
    title = f"{g.machine}/{g.section}"
    parts = [
        f'<section class="machine" id="m-{escape(g.machine)}-{escape(g.section)}">'
        f"<h3>{escape(title)} <span class='muted'>{len(points)} scores</span></h3>",
        timeline_svg(_thin(points), spans, start, end, f"score timeline of {title}"),
    ]
    window = service.latest_abnormal(g.machine, g.section)
    if window is not None:
        parts.append(
            f'<p class="muted">latest abnormal window: {_when(window.time)}, score '
            f"{_num(window.score)} (threshold {_num(window.threshold)})</p>"
            + spectrogram_svg(
                window.wave,
                window.sample_rate,
                f"spectrogram of the latest abnormal window of {title}",
            )
        )
    parts.append("</section>")
    return "".join(parts)


def render_dashboard(service: ScoringService, hours: float = 24.0, now: Any = None) -> str:
    """The dashboard page (HTML with inline SVG) for the last ``hours`` hours."""
    end = now or datetime.now(UTC)
    start = end - timedelta(hours=hours)
    states = service.machine_states()
    store = "no store (memory only)" if service.store is None else "score store connected"
    detectors = ", ".join(service.registry.names) or "none"
    sections = "".join(_machine_section(service, g, start, end) for g in states)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='30'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>stetho monitor</title><style>{_CSS}</style></head><body>"
        f"<h1>stetho monitor</h1><p class='muted'>{_when(end)} · detectors: "
        f"{escape(detectors)} · {store} · stetho {stetho.__version__} · last {hours:g} h · "
        "<a href='/docs'>API</a> · <a href='/metrics'>metrics</a></p>"
        f"<h2>Machines</h2>{_machines_table(states)}"
        "<h2>Score timelines</h2><p class='legend muted'><span>— score</span>"
        "<span style='color:#f57c00'>- - threshold</span>"
        "<span style='color:#e53935'>▮ alarm</span><span style='color:#d32f2f'>● anomalous"
        f"</span></p><div id='timelines'>{sections or '<p class=muted>no scores yet</p>'}</div>"
        f"<h2>Alarms</h2>{_alarms_table(service, start)}</body></html>"
    )
