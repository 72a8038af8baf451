"""Server-side charts as self-contained SVG (no script, nothing fetched): the normalised-score
timeline of all machines on one axis, and spectrograms with a colour bar (a PNG written here,
embedded as a data URI).

Axis choices a plant engineer reads at a glance: y ticks at round steps (1, 2, 2.5 or 5 × 10^k),
time ticks at round clock steps with the date under the first tick and wherever the day changes,
every time in UTC, the decision threshold as a labelled line at normalised score 1.0, and a line
broken wherever a machine was not scored for a while (a gap is never bridged).
"""

from __future__ import annotations

import base64
import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape

import numpy as np

__all__ = [
    "ChartAlarm",
    "ChartSeries",
    "ChartWindow",
    "TimelinePoint",
    "db_range",
    "log_spectrogram",
    "nice_ticks",
    "png_bytes",
    "series_colour",
    "spectrogram_svg",
    "split_at_gaps",
    "time_ticks",
    "timeline_svg",
]

# Okabe–Ito / Tableau-like palette that stays distinct for colour-blind readers (not in the paper)
_PALETTE = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#8c564b",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#000000",
)
_THRESHOLD = 1.0  # the normalised score of the decision threshold (docs/thresholds.md)
_Y_CAP = (-3.0, 10.0)  # the normalised axis never spans more (beyond: marked off scale)
# colour stops of the spectrogram map (dark blue → teal → yellow; not in the paper)
_STOPS = np.array(
    [[0.0, 20, 12, 60], [0.35, 30, 90, 140], [0.65, 40, 170, 130], [1.0, 250, 230, 60]]
)


@dataclass(frozen=True)
class TimelinePoint:
    """One score kept in memory by the service (raw score, threshold, decision)."""

    time: datetime
    score: float
    threshold: float | None
    decision: int | None


@dataclass(frozen=True)
class ChartWindow:
    """One scored window on the timeline."""

    time: datetime
    normalised: float
    anomalous: bool = False
    href: str | None = None
    label: str = ""


@dataclass
class ChartSeries:
    """The windows of one machine/section, oldest first, and the colour they are drawn in."""

    name: str
    colour: str
    windows: list[ChartWindow] = field(default_factory=list)


@dataclass(frozen=True)
class ChartAlarm:
    """An alarm span (``closed=None``: still open) and its acknowledgement, if any."""

    name: str
    colour: str
    opened: datetime
    closed: datetime | None
    href: str | None = None
    ack_time: datetime | None = None
    ack_note: str | None = None


def series_colour(i: int) -> str:
    """The colour of the ``i``-th machine/section (stable for a sorted list of machines)."""
    return _PALETTE[i % len(_PALETTE)]


# -- ticks ---------------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], int]:
    """Round ticks covering ``[lo, hi]`` and the decimals that print them exactly.

    The step is 1, 2, 2.5 or 5 × 10^k, chosen so that about ``target`` intervals cover the range;
    the ticks start at the last multiple of the step at or below ``lo`` and end at the first at or
    above ``hi``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got [{lo}, {hi}]")
    if hi - lo <= 0:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1.0, 2.0, 2.5, 5.0, 10.0) if s * mag >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals, 9) % 1:  # 2.5 × 10^k needs one more
        decimals += 1
    return ticks, decimals


_TIME_STEPS = [
    timedelta(seconds=s)
    for s in (
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
        86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400,
    )
]  # fmt: skip


def time_ticks(start: datetime, end: datetime, target: int = 7) -> list[tuple[datetime, str, str]]:
    """Round UTC clock ticks in ``[start, end]``: ``(time, clock label, date label)``.

    The date label is set on the first tick and wherever the day changes, else ``""``; clock labels
    show seconds only when the step is shorter than a minute, and are empty for ticks at midnight
    with steps of a day or more (the date says it all).
    """
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    span = max((end - start).total_seconds(), 1.0)
    step = next((s for s in _TIME_STEPS if span / s.total_seconds() <= target), _TIME_STEPS[-1])
    sec = step.total_seconds()
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    k = math.ceil((start - day0).total_seconds() / sec - 1e-9)
    t = day0 + k * step
    out: list[tuple[datetime, str, str]] = []
    last_day = None
    while t <= end:
        clock = t.strftime("%H:%M:%S" if sec < 60 else "%H:%M")
        if sec >= 86400 and (t.hour, t.minute) == (0, 0):
            clock = ""
        day = t.date()
        date = t.strftime("%a %d %b %Y") if last_day is None else t.strftime("%a %d %b")
        out.append((t, clock, date if day != last_day else ""))
        last_day = day
        t += step
    return out


def split_at_gaps(times: Sequence[datetime], factor: float = 3.0) -> list[tuple[int, int]]:
    """Index ranges ``[a, b)`` of runs without a gap.

    A gap is a spacing longer than ``factor`` times the median spacing of the series (the
    cadence it is usually scored at) and longer than 1 s. Not in the paper.
    """
    n = len(times)
    if n == 0:
        return []
    dts = np.array([(b - a).total_seconds() for a, b in itertools.pairwise(times)])
    if dts.size == 0:
        return [(0, 1)]
    limit = max(factor * float(np.median(dts)), 1.0)
    cuts = [int(i) + 1 for i in np.flatnonzero(dts > limit)]
    bounds = [0, *cuts, n]
    return list(itertools.pairwise(bounds))


# -- the timeline --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Frame:
    x0: float
    x1: float
    y0: float  # bottom
    y1: float  # top
    start: datetime
    end: datetime
    lo: float
    hi: float

    def x(self, t: datetime) -> float:
        span = max((self.end - self.start).total_seconds(), 1e-9)
        f = (t - self.start).total_seconds() / span
        return self.x0 + (self.x1 - self.x0) * min(max(f, 0.0), 1.0)

    def y(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.y0 + (self.y1 - self.y0) * (v - self.lo) / (self.hi - self.lo)


def _y_range(series: Sequence[ChartSeries]) -> tuple[float, float]:
    values = [w.normalised for s in series for w in s.windows if math.isfinite(w.normalised)]
    lo = min([0.0, *values])
    hi = max([1.5, *values])
    lo, hi = max(lo, _Y_CAP[0]), min(hi, _Y_CAP[1])
    pad = 0.04 * (hi - lo)
    return lo - (pad if lo < 0 else 0.0), hi + pad


def _axes(f: _Frame, width: int, height: int) -> list[str]:
    out = [
        f'<rect x="{f.x0}" y="{f.y1}" width="{f.x1 - f.x0}" height="{f.y0 - f.y1}" '
        'fill="#fcfcfc" stroke="#bbb"/>',
        # above the threshold: the anomalous zone, tinted
        f'<rect class="anomalous-zone" x="{f.x0}" y="{f.y1}" width="{f.x1 - f.x0}" '
        f'height="{max(f.y(_THRESHOLD) - f.y1, 0):.1f}" fill="#fff6f5"/>',
    ]
    ticks, dec = nice_ticks(f.lo, f.hi, 6)
    for v in ticks:
        if not f.lo - 1e-9 <= v <= f.hi + 1e-9:
            continue
        y = f.y(v)
        out.append(
            f'<line x1="{f.x0}" x2="{f.x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>'
            f'<text class="ytick" x="{f.x0 - 6}" y="{y + 4:.1f}" font-size="12" '
            f'text-anchor="end" fill="#444">{v:.{dec}f}</text>'
        )
    for t, clock, date in time_ticks(f.start, f.end):
        x = f.x(t)
        anchor = "start" if x - f.x0 < 40 else "end" if f.x1 - x < 40 else "middle"
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{f.y1}" y2="{f.y0 + 4}" stroke="#ececec"/>'
            f'<text class="xtick" x="{x:.1f}" y="{f.y0 + 17}" font-size="12" '
            f'text-anchor="{anchor}" fill="#444">{clock}</text>'
        )
        if date:
            out.append(
                f'<text class="xdate" x="{x:.1f}" y="{f.y0 + 32}" font-size="12" '
                f'text-anchor="{anchor}" fill="#444" font-weight="600">{date}</text>'
            )
    ty = f.y(_THRESHOLD)
    mid = (f.y0 + f.y1) / 2
    out.append(
        f'<line class="threshold" x1="{f.x0}" x2="{f.x1}" y1="{ty:.1f}" y2="{ty:.1f}" '
        'stroke="#c62828" stroke-width="1.6" stroke-dasharray="7 4"/>'
        f'<text x="{f.x1 + 6}" y="{ty - 3:.1f}" font-size="12" fill="#c62828">threshold</text>'
        f'<text x="{f.x1 + 6}" y="{ty - 18:.1f}" font-size="11" fill="#c62828">anomalous ↑</text>'
        f'<text x="{f.x1 + 6}" y="{ty + 14:.1f}" font-size="11" fill="#2e7d32">normal ↓</text>'
        f'<text x="16" y="{mid:.1f}" font-size="12" text-anchor="middle" fill="#444" '
        f'transform="rotate(-90 16 {mid:.1f})">normalised score</text>'
        f'<text x="{width - 4}" y="{height - 4}" font-size="11" text-anchor="end" fill="#777">'
        "times in UTC</text>"
    )
    return out


def _alarm_marks(f: _Frame, alarms: Sequence[ChartAlarm]) -> list[str]:
    out = []
    for a in alarms:
        closed = a.closed or f.end
        if closed < f.start or a.opened > f.end:
            continue
        xa, xb = f.x(a.opened), f.x(closed)
        acked = a.ack_time is not None
        state = "acknowledged" if acked else "not acknowledged"
        until = "still open" if a.closed is None else f"closed {_utc(a.closed)}"
        tip = f"alarm {a.name}: opened {_utc(a.opened)}, {until}, {state}"
        if acked and a.ack_note:
            tip += f" ({a.ack_note})"
        body = (
            f'<rect class="alarm-span{" acked" if acked else ""}" x="{xa:.1f}" y="{f.y1}" '
            f'width="{max(xb - xa, 3):.1f}" height="{f.y0 - f.y1}" '
            f'fill="{"#9e9e9e" if acked else "#e53935"}" fill-opacity="0.16"/>'
            f'<rect x="{xa:.1f}" y="{f.y1}" width="{max(xb - xa, 3):.1f}" height="5" '
            f'fill="{a.colour}"/><title>{escape(tip)}</title>'
        )
        out.append(_link(a.href, body, "alarm"))
        if acked and a.ack_time is not None:
            x = f.x(a.ack_time)
            note = f": {a.ack_note}" if a.ack_note else ""
            out.append(
                f'<g class="ack-mark"><path d="M{x - 6:.1f},{f.y1 + 16} l4,5 l8,-10" '
                f'fill="none" stroke="#2e7d32" stroke-width="2.4"/>'
                f"<title>{escape(f'{a.name} acknowledged {_utc(a.ack_time)}{note}')}</title></g>"
            )
    return out


def _series_marks(f: _Frame, s: ChartSeries) -> list[str]:
    out = [f'<g class="series" data-series="{escape(s.name)}">']
    wins = [w for w in s.windows if math.isfinite(w.normalised)]
    for a, b in split_at_gaps([w.time for w in wins]):
        if b - a > 1:
            pts = " ".join(f"{f.x(w.time):.1f},{f.y(w.normalised):.1f}" for w in wins[a:b])
            out.append(
                f'<polyline class="scores" fill="none" stroke="{s.colour}" '
                f'stroke-width="1.5" points="{pts}"/>'
            )
    for w in wins:
        x, y = f.x(w.time), f.y(w.normalised)
        tip = f"{s.name} {_utc(w.time)}: {w.normalised:.2f}{' ANOMALOUS' if w.anomalous else ''}"
        if w.label:
            tip += f" — {w.label}"
        if w.normalised > f.hi:  # off scale: a triangle at the top edge
            mark = (
                f'<path class="offscale" d="M{x:.1f},{f.y1 + 1} l-5,8 h10 z" fill="#c62828"/>'
                f"<title>{escape(tip)} (off scale)</title>"
            )
        elif w.anomalous:
            mark = (
                f'<circle class="anomalous" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{s.colour}" '
                f'stroke="#c62828" stroke-width="2"/><title>{escape(tip)}</title>'
            )
        else:
            mark = (
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{s.colour}"/>'
                f"<title>{escape(tip)}</title>"
            )
        out.append(_link(w.href, mark, "window"))
    out.append("</g>")
    return out


def timeline_svg(
    series: Sequence[ChartSeries],
    alarms: Sequence[ChartAlarm],
    start: datetime,
    end: datetime,
    title: str,
    width: int = 1100,
    height: int = 340,
) -> str:
    """Normalised scores of every machine on one axis, the threshold line at 1.0, alarm spans
    (grey once acknowledged, a green tick at the acknowledgement) and gaps left open.

    Args:
        series: One per machine/section; windows oldest first.
        alarms: Alarm spans to shade; ``closed=None`` runs to ``end``.
        start, end: The time axis (aware datetimes).
        title: Accessible title.
        width, height: The SVG's user units (it scales to its container).
    """
    lo, hi = _y_range(series)
    f = _Frame(64.0, width - 86.0, height - 48.0, 10.0, start, end, lo, hi)
    out = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        *_axes(f, width, height),
        *_alarm_marks(f, alarms),
    ]
    for s in series:
        out.extend(_series_marks(f, s))
    if not any(s.windows for s in series):
        out.append(
            f'<text x="{(f.x0 + f.x1) / 2}" y="{(f.y0 + f.y1) / 2}" text-anchor="middle" '
            'fill="#888" font-size="14">no scores in this period</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _link(href: str | None, body: str, cls: str) -> str:
    if not href:
        return f"<g>{body}</g>"
    return f'<a class="{cls}-link" href="{escape(href)}">{body}</a>'


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- spectrograms --------------------------------------------------------------------------------
def _colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) → RGB uint8 (..., 3)."""
    v = np.clip(v, 0.0, 1.0)
    rgb = np.stack([np.interp(v, _STOPS[:, 0], _STOPS[:, c]) for c in (1, 2, 3)], axis=-1)
    return rgb.round().astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB image (H, W, 3) uint8 as PNG."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def log_spectrogram(wave: np.ndarray, n_fft: int = 512, max_cols: int = 400) -> np.ndarray:
    """Spectrogram in dBFS (F, T), low frequencies first; at most ``max_cols`` frames.

    Scaled so that a full-scale sine (amplitude 1) reads 0 dBFS at its frequency (Hann window).
    """
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if wave.shape[0] < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.shape[0]))
    hop = max(n_fft // 4, (wave.shape[0] - n_fft) // max_cols + 1)
    n = 1 + (wave.shape[0] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]  # (T, n_fft)
    win = np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(wave[idx] * win[None, :], axis=1)) * (2.0 / win.sum())  # (T, F)
    return (20.0 * np.log10(mag + 1e-10)).T  # (F, T)


def db_range(*spectrograms: np.ndarray, span: float = 80.0) -> tuple[float, float]:
    """A shared colour range ``(bottom, top)`` in dB: ``top`` the loudest bin of all rounded up
    to 10 dB, ``bottom = top - span`` (so that spectrograms shown side by side compare)."""
    top = max(float(np.max(s)) for s in spectrograms) if spectrograms else 0.0
    top = math.ceil(top / 10.0) * 10.0
    return top - span, top


def spectrogram_svg(
    db: np.ndarray,
    sample_rate: int,
    seconds: float,
    title: str,
    colour_range: tuple[float, float],
    width: int = 560,
    height: int = 260,
) -> str:
    """A spectrogram (from :func:`log_spectrogram`) as SVG: embedded PNG, kHz and seconds axes
    and a colour bar in dBFS over ``colour_range``."""
    bottom, top = colour_range
    img = _colormap((db - bottom) / max(top - bottom, 1e-9))[::-1]  # high frequencies on top
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")
    x0, x1, y0, y1 = 52.0, width - 78.0, height - 34.0, 8.0
    parts = [
        f'<svg class="spectrogram" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>",
        f'<image x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" '
        f'preserveAspectRatio="none" href="{uri}"/>',
    ]
    khz = sample_rate / 2000.0
    ticks, dec = nice_ticks(0.0, khz, 4)
    for v in (v for v in ticks if v <= khz + 1e-9):
        y = y0 + (y1 - y0) * v / khz
        parts.append(
            f'<text x="{x0 - 5}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#444">{v:.{dec}f}</text>'
        )
    parts.append(
        f'<text x="12" y="{(y0 + y1) / 2:.1f}" font-size="11" text-anchor="middle" fill="#444" '
        f'transform="rotate(-90 12 {(y0 + y1) / 2:.1f})">frequency (kHz)</text>'
    )
    ticks, dec = nice_ticks(0.0, max(seconds, 1e-3), 5)
    for v in (v for v in ticks if v <= seconds + 1e-9):
        x = x0 + (x1 - x0) * v / max(seconds, 1e-3)
        parts.append(
            f'<text x="{x:.1f}" y="{y0 + 14}" font-size="11" text-anchor="middle" '
            f'fill="#444">{v:.{dec}f}</text>'
        )
    parts.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle" '
        'fill="#444">time (s)</text>'
    )
    parts.append(_colour_bar(x1 + 14, y1, y0, colour_range))
    parts.append("</svg>")
    return "".join(parts)


def _colour_bar(x: float, top_y: float, bottom_y: float, colour_range: tuple[float, float]) -> str:
    bottom, top = colour_range
    ramp = _colormap(np.linspace(1.0, 0.0, 64))[:, None, :].repeat(4, axis=1)  # (64, 4, 3)
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(ramp)).decode("ascii")
    out = [
        f'<g class="colour-bar"><image x="{x}" y="{top_y}" width="12" '
        f'height="{bottom_y - top_y}" preserveAspectRatio="none" href="{uri}"/>'
        f'<rect x="{x}" y="{top_y}" width="12" height="{bottom_y - top_y}" fill="none" '
        'stroke="#999"/>'
    ]
    ticks, dec = nice_ticks(bottom, top, 4)
    for v in (v for v in ticks if bottom - 1e-9 <= v <= top + 1e-9):
        y = bottom_y + (top_y - bottom_y) * (v - bottom) / (top - bottom)
        out.append(
            f'<text x="{x + 16}" y="{y + 4:.1f}" font-size="11" fill="#444">{v:.{dec}f}</text>'
        )
    out.append(f'<text x="{x + 16}" y="{bottom_y + 14}" font-size="11" fill="#444">dBFS</text></g>')
    return "".join(out)
