"""The dashboard's pieces without a browser: ticks, gaps, the fitted period, spectrogram levels,
the overview's content, and the pages served in-process (status codes, CSP, recording names)."""

from __future__ import annotations

import io
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from stetho.detector import Detector
from stetho.serving import BackgroundServer, DetectorEntry, DetectorRegistry, ScoringService
from stetho.serving import create_app as make_app
from stetho.serving.api.models import Alarm, Machine, MachineState, WindowSummary
from stetho.serving.charts import (
    ChartAlarm,
    ChartSeries,
    ChartWindow,
    db_range,
    log_spectrogram,
    nice_ticks,
    split_at_gaps,
    time_ticks,
    timeline_svg,
)
from stetho.serving.dashboard import CSP, page, render_overview
from stetho.serving.dashboard_data import choose_period
from stetho.serving.dashboard_pages import spectrogram_pair
from stetho.store import ScoreStore
from stetho.utils.errors import InputError

T0 = datetime(2026, 12, 7, 23, 58, 30, tzinfo=UTC)


# -- ticks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lo", "hi"), [(-11.6, 247.0), (0.0, 1.5), (-0.43, 1.37), (0.1, 0.13), (-3.0, 10.0), (5, 5)]
)
def test_y_ticks_are_round_and_cover_the_range(lo: float, hi: float) -> None:
    ticks, decimals = nice_ticks(lo, hi, 6)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(abs(mantissa - m) < 1e-9 for m in (1.0, 2.0, 2.5, 5.0)), step
    assert all(abs(t / step - round(t / step)) < 1e-9 for t in ticks)  # multiples of the step
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 10
    for t in ticks:  # printed exactly with the decimals returned
        assert abs(float(f"{t:.{decimals}f}") - t) < 1e-12


def test_time_ticks_are_round_dated_and_never_cut() -> None:
    start, end = T0, T0 + timedelta(minutes=3)  # crosses midnight
    ticks = time_ticks(start, end)
    times = [t for t, _, _ in ticks]
    assert all(start <= t <= end for t in times) and times == sorted(times)
    step = (times[1] - times[0]).total_seconds()
    assert step in (15, 30, 60) and all(t.second % step == 0 for t in times if step < 60)
    assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", clock) for _, clock, _ in ticks)
    dates = [(t, d) for t, _, d in ticks if d]
    assert dates[0][0] == times[0] and dates[0][1] == "Mon 07 Dec 2026"
    assert [d for _, d in dates[1:]] == ["Tue 08 Dec"]  # where the day changes, and only there
    assert dates[1][0] == datetime(2026, 12, 8, tzinfo=UTC)
    week = time_ticks(T0, T0 + timedelta(days=7))
    assert 4 <= len(week) <= 8 and all(d for _, _, d in week)  # one tick a day, each dated


# -- gaps and the timeline -------------------------------------------------------------------------
def _series(times: list[datetime], values: list[float]) -> ChartSeries:
    return ChartSeries(
        "fan/00", "#0072b2", [ChartWindow(t, v, v > 1) for t, v in zip(times, values, strict=True)]
    )


def test_gaps_are_left_open() -> None:
    times = [T0 + timedelta(seconds=10 * i) for i in range(20)]
    times += [times[-1] + timedelta(minutes=5, seconds=10 * i) for i in range(1, 11)]
    assert split_at_gaps(times) == [(0, 20), (20, 30)]
    assert split_at_gaps(times[:20]) == [(0, 20)]
    assert split_at_gaps(times[:1]) == [(0, 1)] and split_at_gaps([]) == []
    svg = timeline_svg([_series(times, [0.2] * 30)], [], times[0], times[-1], "t")
    lines = re.findall(r'<polyline class="scores"[^>]* points="([^"]+)"', svg)
    assert len(lines) == 2
    xs = [[float(p.split(",")[0]) for p in line.split()] for line in lines]
    assert max(xs[0]) < min(xs[1])  # nothing drawn across the hole


def _y_of(svg: str, cls: str) -> float:
    return float(re.search(rf'<line class="{cls}"[^>]* y1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]


def test_threshold_line_sits_at_normalised_one_and_outliers_stay_readable() -> None:
    times = [T0 + timedelta(seconds=10 * i) for i in range(6)]
    svg = timeline_svg(
        [_series(times, [0.1, 0.4, -0.2, 0.9, 1.3, 50.0])], [], times[0], times[-1], "t"
    )
    tick_y = {
        float(v): float(y) - 4
        for y, v in re.findall(r'class="ytick" x="[\d.]+" y="([\d.]+)"[^>]*>([-\d.]+)<', svg)
    }
    (v0, y0), (v1, y1) = sorted(tick_y.items())[:2]  # the axis as its labels state it
    expected = y0 + (y1 - y0) * (1.0 - v0) / (v1 - v0)
    assert abs(_y_of(svg, "threshold") - expected) < 0.2
    assert max(tick_y) <= 10.0  # the axis is capped: 50 does not flatten the threshold
    assert svg.count('class="offscale"') == 1 and "50.00" in svg  # marked, value in its tooltip
    assert svg.count('class="anomalous"') == 1  # 1.3


def test_alarm_spans_and_acknowledgements_are_drawn() -> None:
    times = [T0 + timedelta(seconds=10 * i) for i in range(30)]
    alarms = [
        ChartAlarm("fan/00", "#0072b2", times[3], times[8], "/dashboard/alarms/1"),
        ChartAlarm("fan/00", "#0072b2", times[20], None, "/dashboard/alarms/2", times[25], "ok"),
    ]
    svg = timeline_svg([_series(times, [0.5] * 30)], alarms, times[0], times[-1], "t")
    assert svg.count('class="alarm-span"') == 1 and svg.count('class="alarm-span acked"') == 1
    assert svg.count('class="ack-mark"') == 1 and "acknowledged" in svg and ": ok" in svg
    assert 'href="/dashboard/alarms/2"' in svg


# -- the fitted period -----------------------------------------------------------------------------
def test_default_period_is_fitted_to_the_data() -> None:
    times = [T0 + timedelta(seconds=20 * i) for i in range(10)]  # 3 minutes of scores
    later = times[-1] + timedelta(hours=5)
    p = choose_period(None, None, None, later, times)
    assert p.preset == "fit" and p.start <= times[0] and p.end >= times[-1]
    assert p.end - p.start < timedelta(minutes=4)  # not a 24 h axis
    live = choose_period(None, None, None, times[-1] + timedelta(seconds=5), times)
    assert live.end >= times[-1] + timedelta(seconds=5)  # scores still coming: up to now
    old = [T0 - timedelta(days=30), *times]
    assert "older scores" in choose_period("fit", None, None, later, old).note
    one = choose_period(None, None, None, later, times[:1])
    assert timedelta(seconds=20) <= one.end - one.start < timedelta(minutes=1)
    empty = choose_period(None, None, None, later, [])
    assert empty.end == later and "no scores" in empty.note


def test_presets_and_custom_ranges() -> None:
    now = T0
    assert choose_period("1h", None, None, now).start == now - timedelta(hours=1)
    assert choose_period("7d", None, None, now).start == now - timedelta(days=7)
    p = choose_period(None, T0 - timedelta(days=2), T0 - timedelta(days=1), now)
    assert (p.preset, p.end) == ("custom", T0 - timedelta(days=1))
    with pytest.raises(InputError, match="before it starts"):
        choose_period("custom", T0, T0 - timedelta(hours=1), now)
    with pytest.raises(InputError, match="1h, 1d, 7d"):
        choose_period("month", None, None, now)


# -- spectrograms ----------------------------------------------------------------------------------
def test_spectrogram_levels_in_dbfs_on_one_colour_scale() -> None:
    rate = 16000
    t = np.arange(rate * 2) / rate
    sine = 0.5 * np.sin(2 * np.pi * 1000.0 * t)  # bin-centred for n_fft 512 at 16 kHz (bin 32)
    db = log_spectrogram(sine)
    assert abs(float(db.max()) - 20 * math.log10(0.5)) < 0.05  # -6.02 dBFS
    quiet = 0.05 * sine  # 20 dB lower
    assert db_range(log_spectrogram(quiet), db) == (-80.0, 0.0)
    loud, soft = spectrogram_pair((sine, rate), (quiet, rate), ("a", "b"))
    bar = re.compile(r'<g class="colour-bar">.*?</g>')
    assert bar.search(loud).group(0) == bar.search(soft).group(0)  # type: ignore[union-attr]
    assert "dBFS" in loud and ">-80<" in loud and ">0<" in loud
    left, right = spectrogram_pair((sine, rate), None, ("a", "b"))
    assert "spectrogram" in left and right == ""


# -- the overview ----------------------------------------------------------------------------------
def _window(i: int, t: datetime, machine: str, normalised: float, source: str) -> WindowSummary:
    return WindowSummary(
        id=i, time=t, machine=machine, section="00", score=normalised * 2, normalised=normalised,
        threshold=2.0, decision=int(normalised > 1), source=source, detector_name="plant",
        detector_version=3, has_audio=normalised > 1,
    )  # fmt: skip


def _machine(
    machine: str, section: str, state: MachineState, z: float | None, name: str, t: datetime | None
) -> Machine:
    return Machine(
        machine=machine, section=section, state=state, detector_name=name, last_normalised=z,
        score=None, threshold=None, decision=None, time=t, alarm_open=state == "alarm",
        n_scores=None, source=None, detector_id=None, detector_version=None, open_alarm=None,
    )  # fmt: skip


def test_overview_lists_every_machine_recording_and_alarm() -> None:
    times = [T0 + timedelta(seconds=10 * i) for i in range(12)]
    machines = [
        _machine("fan", "00", "alarm", 1.4, "plant", times[-1]),
        _machine("pump", "01", "no scores yet", None, "plant", None),
        _machine("<b>x</b>", "00", "normal", 0.1, "other", times[0]),
    ]
    windows = {
        ("fan", "00"): [
            _window(i, t, "fan", 1.4 if i > 8 else 0.3, f"/data/in/fan_{i:03d}.wav")
            for i, t in enumerate(times)
        ],
        ("pump", "01"): [],
    }
    alarms = [
        Alarm(
            id=5, machine="fan", section="00", opened=times[9], closed=None, windows=3,
            peak_normalised=1.4, detector_name="plant", acknowledged=True,
            ack_note="valve <loose>", ack_time=times[11], peak_score=2.8, n_windows=3,
            detector_id="3f2c9a", detector_version=3,
        )
    ]  # fmt: skip
    period = choose_period(None, None, None, times[-1], times)
    html = page("overview", render_overview(machines, windows, alarms, period, times[-1]), None)
    assert "no scores yet" in html and ">pump<" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # names are escaped
    assert "fan_011.wav" in html and "/data/in/fan_011.wav" in html  # name shown, path on hover
    assert "valve &lt;loose&gt;" in html and 'class="ack-mark"' in html
    assert "href='/dashboard/alarms/5'" in html and "href='/dashboard/windows/11'" in html
    assert ">plant<" in html and "detector v" not in html
    assert not re.search(r"https?://", html)  # nothing from elsewhere, not even a namespace
    assert html.count('<g class="series"') == 3  # one axis, every machine


# -- served in-process -----------------------------------------------------------------------------
def _wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    sf.write(buf, 0.1 * rng.standard_normal(int(seconds * rate)), rate, format="WAV")
    return buf.getvalue()


def test_pages_served_with_csp_and_clear_errors(detector: Detector, tmp_path: Path) -> None:
    entry = DetectorEntry("plantA", detector, tmp_path / "det")
    store = ScoreStore.open(tmp_path / "plant.db")
    service = ScoringService(DetectorRegistry([entry]), store=store)
    with (
        BackgroundServer(make_app(service), service.limits) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        r = client.post(
            "/v1/score",
            params={"machine": "fan", "section": "00"},
            files={"file": ("line2_fan_0930.wav", _wav(), "audio/wav")},
        )
        assert r.status_code == 200, r.text
        home = client.get("/")
        assert home.status_code == 200 and home.headers["content-security-policy"] == CSP
        assert "line2_fan_0930.wav" in home.text and ">valve<" in home.text  # known, unscored
        assert "plantA" in home.text
        for query in ({"range": "1h"}, {"range": "1d"}, {"range": "7d"}, {"hours": "2"}):
            assert client.get("/", params=query).status_code == 200
        bad = client.get("/", params={"range": "month"})
        assert bad.status_code == 400 and "1h, 1d, 7d" in bad.text
        bad = client.get("/", params={"range": "custom", "from": "yesterday"})
        assert bad.status_code == 400 and "ISO 8601" in bad.text
        window = client.get(f"/dashboard/windows/{r.json()['id']}")
        assert window.status_code == 200 and "line2_fan_0930.wav" in window.text
        assert client.get("/dashboard/windows/9999").status_code == 404
        assert client.get("/dashboard/alarms/9999").status_code == 404
    service.close()
    memory = ScoringService(DetectorRegistry([entry]))  # no store: this process's scores only
    with (
        BackgroundServer(make_app(memory), memory.limits) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        files = {"file": ("memory_only.wav", _wav(), "audio/wav")}
        r = client.post("/v1/score", params={"machine": "fan", "section": "00"}, files=files)
        assert r.status_code == 200, r.text
        home = client.get("/")
        assert home.status_code == 200 and "memory_only.wav" in home.text
        assert "no store" in home.text and "/dashboard/windows/None" not in home.text
        missing = client.get("/dashboard/windows/1")
        assert missing.status_code == 404 and "--db" in missing.text
