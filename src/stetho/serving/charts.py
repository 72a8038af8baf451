"""Server-side charts as self-contained SVG (no JavaScript, no CDN): score timelines and
spectrograms (a PNG written here, embedded as a data URI)."""

from __future__ import annotations

import base64
import itertools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

import numpy as np

__all__ = ["TimelinePoint", "png_bytes", "spectrogram_svg", "timeline_svg"]

_W, _H = 900, 200
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 60, 16, 12, 28
# colour stops of the spectrogram map (dark blue → teal → yellow; not in the paper)
_STOPS = np.array(
    [[0.0, 20, 12, 60], [0.35, 30, 90, 140], [0.65, 40, 170, 130], [1.0, 250, 230, 60]]
)


@dataclass(frozen=True)
class TimelinePoint:
    """One score of the timeline."""

    time: datetime
    score: float
    threshold: float | None
    decision: int | None


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _x_ticks(t0: datetime, t1: datetime, n: int = 6) -> list[tuple[datetime, str]]:
    span = (t1 - t0).total_seconds()
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 2 * 86400 else "%m-%d %H:%M"
    ticks = (t0 + (t1 - t0) * (i / (n - 1)) for i in range(n))
    return [(t, t.strftime(fmt)) for t in ticks]


def timeline_svg(
    points: Sequence[TimelinePoint],
    alarms: Sequence[tuple[datetime, datetime | None]],
    start: datetime,
    end: datetime,
    title: str,
) -> str:
    """A score timeline: scores (line, anomalous ones red), threshold (dashed) and alarm spans.

    Args:
        points: Scores, oldest first.
        alarms: ``(opened, closed)`` spans; ``closed=None`` is still open (drawn to ``end``).
        start, end: The time axis.
        title: Accessible title (machine/section).
    """
    x0, x1 = _PAD_L, _W - _PAD_R
    y0, y1 = _H - _PAD_B, _PAD_T
    span = max((end - start).total_seconds(), 1e-9)
    values = [p.score for p in points] + [p.threshold for p in points if p.threshold is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)

    def px(t: datetime) -> float:
        return x0 + (x1 - x0) * min(max((t - start).total_seconds() / span, 0.0), 1.0)

    def py(v: float) -> float:
        return y0 + (y1 - y0) * (v - lo) / (hi - lo)

    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'width="100%" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" '
        'stroke="#bbb"/>',
    ]
    for opened, closed in alarms:
        a, b = px(max(opened, start)), px(min(closed or end, end))
        if b >= a and (closed or end) >= start:
            out.append(
                f'<rect class="alarm-span" x="{a:.1f}" y="{y1}" width="{max(b - a, 2):.1f}" '
                f'height="{y0 - y1}" fill="#e53935" fill-opacity="0.15"/>'
            )
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(
            f'<line x1="{x0}" x2="{x1}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#e6e6e6"/>'
            f'<text x="{x0 - 4}" y="{py(v) + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#555">{_fmt(v)}</text>'
        )
    for t, label in _x_ticks(start, end):
        out.append(
            f'<text x="{px(t):.1f}" y="{_H - 8}" font-size="11" text-anchor="middle" '
            f'fill="#555">{label}</text>'
        )
    thr = [(px(p.time), py(p.threshold)) for p in points if p.threshold is not None]
    if thr:  # step line: a threshold holds until the next score
        steps = [(x0, thr[0][1]), thr[0]] + [
            q for a, b in itertools.pairwise(thr) for q in ((b[0], a[1]), b)
        ]
        steps.append((x1, thr[-1][1]))
        out.append(
            '<polyline class="threshold" fill="none" stroke="#f57c00" stroke-width="1.5" '
            f'stroke-dasharray="6 4" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in steps)}"/>'
        )
    if points:
        line = " ".join(f"{px(p.time):.1f},{py(p.score):.1f}" for p in points)
        out.append(
            f'<polyline class="scores" fill="none" stroke="#1565c0" stroke-width="1.2" '
            f'points="{line}"/>'
        )
        for p in points:
            if p.decision == 1:
                out.append(
                    f'<circle cx="{px(p.time):.1f}" cy="{py(p.score):.1f}" r="2.5" fill="#d32f2f"/>'
                )
    else:
        out.append(
            f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" text-anchor="middle" fill="#888">'
            "no scores in this period</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) → RGB uint8 (H, W, 3)."""
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


def log_spectrogram(
    wave: np.ndarray, sample_rate: int, n_fft: int = 512, max_cols: int = 400
) -> np.ndarray:
    """Power spectrogram in dB (F, T), low frequencies first; at most ``max_cols`` frames."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.shape[0] < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.shape[0]))
    hop = max(n_fft // 4, (wave.shape[0] - n_fft) // max_cols + 1)
    n = 1 + (wave.shape[0] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]  # (T, n_fft)
    frames = wave[idx] * np.hanning(n_fft)[None, :]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, F)
    return (10.0 * np.log10(power + 1e-12)).T  # (F, T)


def spectrogram_svg(wave: np.ndarray, sample_rate: int, title: str) -> str:
    """The spectrogram of a window as SVG (an embedded PNG plus frequency/time axes)."""
    db = log_spectrogram(wave, sample_rate)  # (F, T)
    top = float(db.max())
    img = _colormap((db - (top - 80.0)) / 80.0)[::-1]  # 80 dB range, high frequencies on top
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")
    seconds = wave.shape[0] / sample_rate
    x0, x1, y0, y1 = _PAD_L, _W - _PAD_R, _H - _PAD_B, _PAD_T
    parts = [
        f'<svg class="spectrogram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'width="100%" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<image x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" '
        f'preserveAspectRatio="none" href="{uri}"/>',
    ]
    nyq = sample_rate / 2000.0
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(
            f'<text x="{x0 - 4}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#555">{nyq * i / 4:.1f} kHz</text>'
        )
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        parts.append(
            f'<text x="{x:.1f}" y="{_H - 8}" font-size="11" text-anchor="middle" '
            f'fill="#555">{seconds * i / 5:.2f} s</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def clamp_period(end: datetime, hours: float) -> tuple[datetime, datetime]:
    """``(end - hours, end)``."""
    return end - timedelta(hours=hours), end
