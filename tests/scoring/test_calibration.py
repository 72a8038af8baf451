"""Normalised score (0 = median normal, 1.0 = threshold), conformal p-values, expected alarms."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stetho.scoring.calibration import (
    ScoreScale,
    expected_false_alarms,
    normalised_score,
    p_value,
)
from stetho.scoring.threshold import ThresholdConfig, conformal_rank, fit_threshold_info
from stetho.utils.errors import InputError


def _bank(seed: int, n: int = 20) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(seed)
    held = rng.gamma(2.0, 0.01, size=n)
    return held, fit_threshold_info(held).value


def test_anchors_median_is_zero_threshold_is_one_and_linear_below() -> None:
    held = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    thr = 10.0
    med = 5.5
    out = normalised_score([med, thr, 8.0, 0.0], held, thr)
    np.testing.assert_allclose(out, [0.0, 1.0, (8.0 - med) / (thr - med), -med / (thr - med)])
    assert out[1] == 1.0  # exactly
    # above the threshold it grows as 1 + ln(l), l = (raw - median) / (threshold - median)
    raw = 100.0
    expected = 1.0 + math.log((raw - med) / (thr - med))
    assert normalised_score(raw, held, thr) == pytest.approx(expected, rel=1e-12)


def test_monotone_finite_and_passes_non_finite_through() -> None:
    held, thr = _bank(0)
    rng = np.random.default_rng(1)
    raw = np.sort(
        np.concatenate(
            [
                rng.normal(thr, 0.05, 2000),
                thr + np.linspace(-1e-12, 1e-12, 101),
                [-1e308, -1e300, -1.0, 0.0, 1e3, 1e300, 1e308, np.finfo(float).max],
            ]
        )
    )
    out = normalised_score(raw, held, thr)
    assert np.all(np.isfinite(out))
    assert np.all(np.diff(out) >= 0.0)
    special = normalised_score([np.nan, np.inf, -np.inf], held, thr)
    assert np.isnan(special[0]) and special[1] == np.inf and special[2] == -np.inf


def test_decision_equivalence_is_exact_at_floating_point_edges() -> None:
    """normalised > 1.0 <=> raw > threshold, for raw at and one ulp around the threshold."""
    rng = np.random.default_rng(2)
    naive_disagrees = 0
    for seed in range(300):
        held = rng.lognormal(rng.normal(0.0, 3.0), 1.0, size=int(rng.integers(2, 40)))
        if seed % 3 == 0:
            held = -held  # negative raw scores too
        thr = fit_threshold_info(held, ThresholdConfig(false_alarm=0.3)).value
        near = [thr, np.nextafter(thr, -np.inf), np.nextafter(thr, np.inf)]
        near += list(thr + np.abs(thr) * np.finfo(float).eps * np.arange(-4, 5))
        raw = np.concatenate([np.array(near), held])
        out = normalised_score(raw, held, thr)
        np.testing.assert_array_equal(out > 1.0, raw > thr)
        assert out[0] == 1.0
        scale = ScoreScale.fit(held, thr)
        np.testing.assert_array_equal(scale.decide(raw), (out > 1.0).astype(np.int64))
        # the plain formula (raw - centre) / scale is not exact at these edges; the clamp is
        naive = (raw - scale.centre) / scale.scale
        naive_disagrees += int(np.any((naive > 1.0) != (raw > thr)))
    assert naive_disagrees > 0


def test_scale_free_across_machines() -> None:
    held, thr = _bank(3)
    raw = np.linspace(0.0, 0.2, 50)
    base = normalised_score(raw, held, thr)
    for a, b in ((1e4, -3.0), (1e-3, 7.0), (250.0, 0.0)):
        # the same machine measured in another unit and offset: the same normalised scores
        np.testing.assert_allclose(
            normalised_score(a * raw + b, a * held + b, a * thr + b), base, rtol=1e-9, atol=1e-9
        )


def test_threshold_at_or_below_the_median_still_anchors_one_at_the_threshold() -> None:
    held = np.array([1.0, 1.0, 1.0, 1.0, 2.0])  # median 1.0
    out = normalised_score([0.5, 1.0, 1.5], held, 1.0)  # threshold == median == minimum
    assert out[1] == 1.0 and out[0] < 1.0 < out[2]
    out2 = normalised_score([0.5, 1.0, 1.5], held, 1.5)  # median 1.0 < threshold: regular case
    np.testing.assert_allclose(out2, [-1.0, 0.0, 1.0])


def test_p_value_counts_normals_that_score_at_least_as_high() -> None:
    held = np.array([0.1, 0.2, 0.2, 0.3, 0.5])
    raw = np.array([0.0, 0.2, 0.25, 0.5, 0.6, np.nan])
    p = p_value(raw, held)
    brute = [(1 + np.sum(held >= r)) / 6 for r in raw[:-1]]
    np.testing.assert_allclose(p[:-1], brute)
    assert np.isnan(p[-1])


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2, 0.3])
def test_p_value_at_most_alpha_is_exactly_the_conformal_decision(alpha: float) -> None:
    rng = np.random.default_rng(int(alpha * 100))
    for n in (5, 9, 10, 19, 20, 37):
        held = np.round(rng.normal(size=n), 2)  # ties included
        if np.ptp(held) == 0:
            continue
        fit = fit_threshold_info(held, ThresholdConfig(false_alarm=alpha))
        raw = np.concatenate([held, rng.normal(size=200), [fit.value]])
        count = np.rint(p_value(raw, held) * (n + 1)).astype(int)  # (n + 1) p is an integer
        allowed = (n + 1) - conformal_rank(n, alpha)  # floor((n + 1) * alpha)
        if fit.achievable:
            np.testing.assert_array_equal(count <= allowed, raw > fit.value)


def test_score_scale_round_trips_through_json() -> None:
    held, thr = _bank(4)
    scale = ScoreScale.fit(held, thr)
    assert scale.n == held.size and list(scale.held_out) == sorted(held)
    again = ScoreScale.from_dict(json.loads(json.dumps(scale.to_dict())))
    assert again == scale
    raw = np.linspace(-0.1, 0.5, 40)
    np.testing.assert_array_equal(again.normalise(raw), normalised_score(raw, held, thr))
    np.testing.assert_array_equal(again.p_value(raw), p_value(raw, held))
    # a key without a finite threshold keeps its p-values; JSON gets null, not Infinity
    never = ScoreScale.fit(held, math.inf, allow_infinite=True)
    d = never.to_dict()
    assert d["threshold"] is None
    assert ScoreScale.from_dict(json.loads(json.dumps(d))).threshold == math.inf
    np.testing.assert_array_equal(never.p_value(raw), p_value(raw, held))
    with pytest.raises(InputError, match="no finite threshold"):
        never.normalise(raw)


def test_invalid_inputs_raise_input_errors() -> None:
    held, thr = _bank(5)
    with pytest.raises(InputError, match="no finite threshold"):
        normalised_score([0.1], held, math.inf)
    with pytest.raises(InputError, match="no finite held-out"):
        normalised_score([0.1], [np.nan], thr)
    with pytest.raises(InputError, match="lacks"):
        ScoreScale.from_dict({"threshold": 1.0})
    with pytest.raises(InputError, match="scale"):
        ScoreScale(threshold=1.0, centre=0.0, scale=0.0, held_out=(0.5,))


def test_expected_false_alarms_per_100_clips_and_per_day() -> None:
    # one 10 s window every minute, alpha 0.1: 10 per 100 clips, 0.1 * 60 * 24 = 144 per day
    exp = expected_false_alarms(0.1, 60)
    assert exp.per_100_clips == pytest.approx(10.0) and exp.per_day == pytest.approx(144.0)
    assert expected_false_alarms(0.01, 6).per_day == pytest.approx(1.44)
    with pytest.raises(InputError):
        expected_false_alarms(1.5, 60)
    with pytest.raises(InputError):
        expected_false_alarms(0.1, -1)
