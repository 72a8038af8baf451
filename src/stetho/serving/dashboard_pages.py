"""The dashboard's alarm and window pages: what the window sounded like, next to the nearest normal
clip of the bank, as spectrograms on one colour scale and as audio players, and the
acknowledgement form of the alarm."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Any

import numpy as np

from stetho.serving.api.models import Alarm, WindowDetail, WindowSummary
from stetho.serving.charts import db_range, log_spectrogram, spectrogram_svg, timeline_svg
from stetho.serving.dashboard import (
    alarm_href,
    chart_alarms,
    chart_series,
    page,
    recording_name,
    when,
    window_href,
    windows_table,
)
from stetho.serving.dashboard_source import DashboardSource

__all__ = [
    "ack_form",
    "alarm_windows",
    "render_alarm_page",
    "render_window_page",
    "spectrogram_pair",
]


def _e(v: Any) -> str:
    return escape(str(v))


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def ack_form(alarm: Alarm) -> str:
    """The acknowledgement status and form (``POST /v1/alarms/{id}/ack`` with ``{"note": …}``)."""
    if alarm.acknowledged or alarm.ack_time:
        status = (
            f"<p class='ack-yes' id='ack-status'>✓ acknowledged {when(alarm.ack_time)}"
            f"{': ' + _e(alarm.ack_note) if alarm.ack_note else ''}</p>"
        )
        button = "update the note"
    else:
        status = "<p class='ack-no' id='ack-status'>not acknowledged yet</p>"
        button = "acknowledge"
    return (
        f"<div class='card'><h3>Acknowledge alarm #{alarm.id}</h3>{status}"
        f"<form class='ack' id='ack-form' data-alarm='{alarm.id}' "
        f"data-url='/v1/alarms/{alarm.id}/ack'><label>note (what was found or done)<br>"
        "<textarea name='note' maxlength='2000' placeholder='e.g. bearing noise, maintenance "
        f"booked'>{_e(alarm.ack_note or '')}</textarea></label><br><button type='submit'>"
        f"{button}</button> <span class='ack-result muted'></span></form></div>"
    )


def spectrogram_pair(
    window: tuple[np.ndarray, int] | None,
    nearest: tuple[np.ndarray, int] | None,
    titles: tuple[str, str],
) -> tuple[str, str]:
    """SVG spectrograms of a window and of its nearest normal clip on one colour scale (the
    loudest bin of both, rounded up to 10 dB, down 80 dB); ``""`` for a missing recording."""
    specs = [
        None if w is None else (log_spectrogram(w[0]), w[1], w[0].shape[0] / w[1])
        for w in (window, nearest)
    ]
    present = [s[0] for s in specs if s is not None]
    if not present:
        return "", ""
    rng = db_range(*present)
    return tuple(  # type: ignore[return-value]
        "" if s is None else spectrogram_svg(s[0], s[1], s[2], t, rng)
        for s, t in zip(specs, titles, strict=True)
    )


def _facts(w: WindowDetail) -> str:
    decision = {1: "anomalous", 0: "normal"}.get(w.decision, "no threshold")  # type: ignore[arg-type]
    full = w.source if recording_name(w.source) != w.source else ""
    where = f" <span class='muted'>{_e(full)}</span>" if full else ""
    rows = [
        ("time", when(w.time)),
        ("machine", f"{_e(w.machine)}/{_e(w.section)}"),
        ("recording", f"<span id='recording'>{_e(recording_name(w.source))}</span>{where}"),
        ("normalised score", f"<b>{_num(w.normalised)}</b> (threshold 1.0) → {decision}"),
        ("raw score", f"{w.score:.4g} (threshold {_num(w.threshold)})"),
        ("detector", f"{_e(w.detector_name or '–')} (version {w.detector_version})"),
        ("nearest normal clip", _e(w.nearest_ref or "–")),
    ]
    return "<dl class='facts'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def listen_and_look(source: DashboardSource, w: WindowDetail) -> str:
    """Spectrograms and audio players of a window and of its nearest normal clip."""
    window = source.audio(w)
    nearest = source.audio(w, nearest=True)
    near_name = recording_name(w.nearest_ref or "") if w.nearest_ref else "not recorded"
    left, right = spectrogram_pair(
        window,
        nearest,
        (f"spectrogram of window {w.id}", f"spectrogram of the nearest normal clip {near_name}"),
    )
    kept = (
        "<p class='muted'>audio not kept: only anomalous windows are kept, within the store's "
        "size and age bounds</p>"
    )

    def player(url: str | None, ident: str) -> str:
        if not url:
            return ""
        return f"<audio id='{ident}' controls preload='auto' src='{_e(url)}'></audio>"

    return (
        "<div class='pair'>"
        f"<div class='card'><h3>This window: {_e(recording_name(w.source))}</h3>"
        f"{left or kept}{player(w.audio_url, 'window-audio')}</div>"
        f"<div class='card'><h3>Nearest normal clip of the bank: {_e(near_name)}</h3>"
        f"{right or kept if w.nearest_ref else '<p class=muted>no nearest clip recorded</p>'}"
        f"{player(w.nearest_audio_url, 'nearest-audio')}</div></div>"
        "<p class='muted'>Both spectrograms share one colour scale (dBFS): brighter is louder on "
        "either side. The detector scores how far this window lies from the normal clips of its "
        "bank; the nearest of them is on the right, to compare by eye and by ear.</p>"
    )


def _alarm_of(alarms: list[Alarm], w: WindowSummary) -> Alarm | None:
    key = (w.machine, w.section)
    for a in alarms:
        if (a.machine, a.section) == key and a.opened <= w.time <= (a.closed or w.time):
            return a
    return None


def render_window_page(source: DashboardSource, window_id: int) -> tuple[str, int]:
    """The page of one window (and its status code: 404 when unknown)."""
    w = source.window(window_id)
    if w is None:
        why = "" if source.has_store else " (this server keeps no store: start it with --db)"
        body = (
            f"<p class='warn'>no stored window has id {window_id}{why}</p><a href='/'>overview</a>"
        )
        return page("unknown window", body, source), 404
    alarm = _alarm_of(source.alarms(w.machine), w)
    crumbs = f"<div class='crumbs'><a href='/'>overview</a> › {_e(w.machine)}/{_e(w.section)}"
    if alarm is not None:
        crumbs += f" › <a href='{alarm_href(alarm.id)}'>alarm #{alarm.id}</a>"
    crumbs += f" › window #{w.id}</div>"
    body = (
        crumbs
        + f"<h2>Window #{w.id} of {_e(w.machine)}/{_e(w.section)}</h2><div class='card'>"
        + _facts(w)
        + "</div>"
        + listen_and_look(source, w)
        + (ack_form(alarm) if alarm is not None else "")
    )
    return page(f"window {w.id}", body, source), 200


def _alarm_facts(a: Alarm) -> str:
    closed = "still open" if a.closed is None else when(a.closed)
    end = a.closed
    length = "" if end is None else f" ({(end - a.opened).total_seconds() / 60:.1f} min)"
    rows = [
        ("machine", f"{_e(a.machine)}/{_e(a.section)}"),
        ("opened", when(a.opened)),
        ("closed", closed + length),
        ("anomalous windows", str(a.windows)),
        ("peak normalised score", f"{_num(a.peak_normalised)} (threshold 1.0)"),
        ("detector", _e(a.detector_name or "–")),
    ]
    return "<dl class='facts'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def render_alarm_page(source: DashboardSource, alarm_id: int) -> tuple[str, int]:
    """The page of one alarm (and its status code: 404 when unknown)."""
    a = source.alarm(alarm_id) if source.has_store else None
    if a is None:
        body = f"<p class='warn'>no alarm has id {alarm_id}</p><a href='/'>overview</a>"
        return page("unknown alarm", body, source), 404
    counted, last = alarm_windows(source, a)
    first = min([a.opened, *(w.time for w in counted)])
    span = max(last - first, timedelta(minutes=1))
    start, end = first - span * 0.3, last + span * 0.3
    windows = source.windows(a.machine, a.section, start, end + _EPS)
    series = chart_series([(a.machine, a.section)], {(a.machine, a.section): windows})
    chart = timeline_svg(
        series,
        chart_alarms([a], series),
        start,
        end,
        f"normalised scores of {a.machine}/{a.section} around alarm {a.id}",
        height=260,
    )
    inside = [w for w in windows if first <= w.time <= last]
    strongest = max(
        (w for w in counted if w.has_audio and w.normalised is not None),
        key=lambda w: w.normalised or 0.0,
        default=None,
    )
    hear = "<p class='muted'>no window of this alarm has its audio kept</p>"
    if strongest is not None and strongest.id is not None:
        detail = source.window(strongest.id)
        if detail is not None:
            hear = (
                f"<p>The strongest window of the alarm: <a href='{window_href(strongest.id)}'>"
                f"{when(detail.time)}</a>, normalised score {_num(detail.normalised)}.</p>"
                + listen_and_look(source, detail)
            )
    body = (
        f"<div class='crumbs'><a href='/'>overview</a> › {_e(a.machine)}/{_e(a.section)} › "
        f"alarm #{a.id}</div><h2>Alarm #{a.id} of {_e(a.machine)}/{_e(a.section)}</h2>"
        f"<div class='card'>{_alarm_facts(a)}</div>{ack_form(a)}"
        f"<div class='card' id='timeline'>{chart}</div><h2>What it sounded like</h2>{hear}"
        f"<h2>Windows of the alarm</h2><p class='muted'>from the first anomalous window it "
        f"counted to {'its close' if a.closed else 'the latest'}, newest first</p>"
        f"{windows_table(inside[::-1], 'alarm-windows')}"
    )
    return page(f"alarm {a.id}", body, source), 200


def alarm_windows(source: DashboardSource, a: Alarm) -> tuple[list[WindowSummary], datetime]:
    """The anomalous windows an alarm counted and the time it ends (closed, else the latest
    window): the latest ``a.windows`` anomalous windows up to then, the opening history that
    precedes ``opened`` included (the alarm rule counts those too)."""
    recent = source.windows(a.machine, a.section, a.opened, None)
    last = a.closed or max([a.opened, *(w.time for w in recent)])
    before = source.windows(a.machine, a.section, a.opened - _HISTORY, last + _EPS)
    anomalous = [w for w in before if w.decision == 1]
    return (anomalous[-a.windows :] if a.windows > 0 else []), last


_EPS = timedelta(microseconds=1)
_HISTORY = timedelta(days=1)  # how far before its opening an alarm's first window is looked for
