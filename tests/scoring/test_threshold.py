"""Decision thresholds: gamma fit (DCASE baseline) and percentile."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import stats

from stetho.scoring import ThresholdConfig, decide, fit_threshold


def test_gamma_threshold_recovers_the_true_quantile() -> None:
    rng = np.random.default_rng(0)
    shape, loc, scale = 3.0, 0.2, 0.05
    x = stats.gamma.rvs(shape, loc=loc, scale=scale, size=4000, random_state=rng)
    thr = fit_threshold(x, ThresholdConfig(method="gamma", quantile=0.9))
    true = stats.gamma.ppf(0.9, shape, loc=loc, scale=scale)
    assert abs(thr - true) < 0.01 * true
    # identical to scipy's own 3-parameter fit + ppf
    a, lo, sc = stats.gamma.fit(x)
    assert thr == pytest.approx(stats.gamma.ppf(0.9, a, loc=lo, scale=sc), rel=1e-12)
    # about 10 % of normal scores are declared anomalous
    assert 0.08 < decide(x, thr).mean() < 0.12


def test_percentile_threshold_and_strict_decision() -> None:
    x = np.arange(11, dtype=float)
    thr = fit_threshold(x, ThresholdConfig(method="percentile", quantile=0.9))
    assert thr == pytest.approx(9.0)
    np.testing.assert_array_equal(decide([8.9, 9.0, 9.1], thr), [0, 0, 1])  # score > threshold


def test_degenerate_scores_fall_back_to_percentile(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stetho.scoring.threshold"):
        thr = fit_threshold(np.full(20, 0.3))
    assert thr == pytest.approx(0.3)
    assert "degenerate" in caplog.text


def test_non_finite_scores_are_ignored() -> None:
    x = np.concatenate([np.linspace(0.0, 1.0, 101), [np.inf]])
    assert fit_threshold(x, ThresholdConfig("percentile", 0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="none of the 2 scores is finite"):
        fit_threshold([np.inf, np.nan])
    with pytest.raises(ValueError, match="quantile"):
        ThresholdConfig(quantile=1.5)


def test_decide_for_key_accepts_tuple_and_string_keys_and_names_fitted_ones() -> None:
    from stetho.scoring.threshold import decide_for_key

    thresholds = {("fan", "00"): 0.5, ("pump", "01"): 2.0}
    np.testing.assert_array_equal(decide_for_key(thresholds, [0.4, 0.5, 0.6], "fan/00"), [0, 0, 1])
    np.testing.assert_array_equal(decide_for_key(thresholds, [1.0, 3.0], ("pump", "01")), [0, 1])
    with pytest.raises(KeyError, match="fan/00, pump/01"):
        decide_for_key(thresholds, [1.0], "valve/00")
    with pytest.raises(ValueError, match="machine/section"):
        decide_for_key(thresholds, [1.0], "fan")
