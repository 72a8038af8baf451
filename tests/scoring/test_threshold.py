"""Decision thresholds: conformal order statistic (default), stabilised gamma fit, percentile."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from scipy import stats

from stetho.scoring import ThresholdConfig, decide, fit_threshold
from stetho.scoring.threshold import (
    ThresholdFit,
    conformal_rank,
    fit_threshold_info,
    gamma_fit_threshold,
    min_clips_below_maximum,
    min_clips_for,
    rate_band,
)
from stetho.utils.errors import InputError

GAMMA = ThresholdConfig(method="gamma", quantile=0.9)
PERCENTILE = ThresholdConfig(method="percentile", quantile=0.9)


# -- configuration -------------------------------------------------------------------------------
def test_default_is_conformal_at_ten_percent_and_old_configs_still_load() -> None:
    cfg = ThresholdConfig()
    assert (cfg.method, cfg.false_alarm, cfg.alpha) == ("conformal", 0.1, 0.1)
    assert ThresholdConfig.from_dict(cfg.to_dict()) == cfg
    # a config saved before false_alarm existed keeps its method and quantile
    old = ThresholdConfig.from_dict({"method": "gamma", "quantile": 0.8})
    assert (old.method, old.quantile, old.alpha) == ("gamma", 0.8, pytest.approx(0.2))
    assert ThresholdConfig.from_dict({"method": "percentile", "quantile": 0.9}).method == (
        "percentile"
    )
    both = ThresholdConfig(method="gamma").with_false_alarm(0.05)
    assert (both.method, both.quantile, both.false_alarm) == ("gamma", 0.95, 0.05)
    with pytest.raises(ValueError, match="quantile"):
        ThresholdConfig(quantile=1.5)
    with pytest.raises(ValueError, match="false_alarm"):
        ThresholdConfig(false_alarm=0.0)


def test_conformal_rank_and_clips_needed_are_exact_for_decimal_rates() -> None:
    assert conformal_rank(20, 0.1) == 19  # ceil(21 * 0.9) = ceil(18.9)
    assert conformal_rank(9, 0.1) == 9  # ceil(10 * 0.9) = 9 exactly, not 10 by float rounding
    assert conformal_rank(99, 0.01) == 99
    assert (min_clips_for(0.1), min_clips_for(0.05), min_clips_for(0.01)) == (9, 19, 99)
    for alpha in (0.3, 0.25, 0.2, 0.1, 0.07, 0.05, 0.02, 0.01, 0.001):
        need = min_clips_for(alpha)
        assert conformal_rank(need, alpha) <= need  # enough clips ...
        assert conformal_rank(need - 1, alpha) > need - 1  # ... and not one fewer


def test_fewest_clips_whose_threshold_lies_below_their_largest_score() -> None:
    assert (min_clips_below_maximum(0.1), min_clips_below_maximum(0.05)) == (19, 39)
    for alpha in (0.3, 0.25, 0.2, 0.1, 0.07, 0.05, 0.02):
        m = min_clips_below_maximum(alpha)
        assert all(conformal_rank(n, alpha) < n for n in range(m, m + 50))  # below the maximum
        assert conformal_rank(m - 1, alpha) >= m - 1  # one fewer: the maximum (or none)
        # and the threshold really is the largest score one clip short of it
        x = np.arange(1.0, m)  # m - 1 scores
        if conformal_rank(m - 1, alpha) == m - 1:
            assert fit_threshold_info(x, ThresholdConfig(false_alarm=alpha)).value == x.max()


# -- conformal ----------------------------------------------------------------------------------
def test_conformal_threshold_is_the_order_statistic() -> None:
    rng = np.random.default_rng(3)
    x = rng.permutation(np.arange(1.0, 21.0))  # 20 scores 1..20
    fit = fit_threshold_info(x)
    assert fit.value == 19.0 and fit.rank == 19 and fit.n == 20
    assert fit.achievable and fit.advice is None and fit.n_needed == 9
    assert fit.expected_rate == pytest.approx(2 / 21)
    assert fit_threshold(x) == 19.0
    np.testing.assert_array_equal(decide([19.0, 19.5], fit.value), [0, 1])
    # alpha 0.05 with 20 clips: k = ceil(21 * 0.95) = 20, the largest score
    assert fit_threshold_info(x, ThresholdConfig(false_alarm=0.05)).value == 20.0
    # alpha 0.25: k = ceil(21 * 0.75) = 16
    assert fit_threshold_info(x, ThresholdConfig(false_alarm=0.25)).value == 16.0


def test_too_few_clips_for_the_rate_returns_the_maximum_and_says_what_is_needed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    x = np.array([0.0075, 0.0051, 0.009, 0.004, 0.006, 0.0068])
    fit = fit_threshold_info(x)  # k = ceil(7 * 0.9) = 7 > 6
    assert fit.value == 0.009 and fit.rank == 6
    assert not fit.achievable and fit.n_needed == 9
    assert fit.advice is not None
    assert "6 normal clips" in fit.advice and "1/7 = 14 %" in fit.advice
    assert "add 3 clip(s)" in fit.advice
    # alpha 0.05 needs 19 clips
    fit05 = fit_threshold_info(x, ThresholdConfig(false_alarm=0.05))
    assert fit05.n_needed == 19 and fit05.advice is not None and "add 13" in fit05.advice
    with caplog.at_level(logging.WARNING, logger="stetho.scoring.threshold"):
        assert fit_threshold(x) == 0.009
    assert "1/7 = 14 %" in caplog.text


def test_threshold_fit_round_trips_through_json() -> None:
    fit = fit_threshold_info(np.linspace(0.0, 1.0, 30))
    assert ThresholdFit.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit


# -- gamma --------------------------------------------------------------------------------------
def test_gamma_fit_threshold_is_the_dcase_fit_verbatim() -> None:
    rng = np.random.default_rng(0)
    shape, loc, scale = 3.0, 0.2, 0.05
    x = stats.gamma.rvs(shape, loc=loc, scale=scale, size=4000, random_state=rng)
    raw = gamma_fit_threshold(x, 0.9)
    assert raw is not None
    a, lo, sc = stats.gamma.fit(np.sort(x))  # sorted: the clip order does not matter
    assert raw == pytest.approx(stats.gamma.ppf(0.9, a, loc=lo, scale=sc), rel=1e-12)
    true = stats.gamma.ppf(0.9, shape, loc=loc, scale=scale)
    thr = fit_threshold(x, GAMMA)  # stabilised: still the 0.9 quantile within 1 %
    assert abs(thr - true) < 0.01 * true
    assert 0.08 < decide(x, thr).mean() < 0.12
    assert gamma_fit_threshold(rng.permutation(x), 0.9) == raw
    assert gamma_fit_threshold(np.array([1.0, 1.0, 2.0]), 0.9) is None  # < 3 distinct values


def test_gamma_threshold_lies_in_the_gap_at_the_conformal_rank() -> None:
    rng = np.random.default_rng(1)
    inside = 0
    for n in (6, 12, 25, 40, 40, 40):
        for _ in range(4):
            x = rng.gamma(2.0, 0.01, size=n)
            s = np.sort(x)
            k = conformal_rank(n, 0.1)
            fit = fit_threshold_info(x, GAMMA)
            lo = s[min(k, n) - 1]
            hi = s[k] if k < n else math.inf
            assert lo <= fit.value < hi
            assert fit.achievable == (k <= n)
            raw = gamma_fit_threshold(x, 0.9)
            assert raw is not None
            if lo <= raw < hi:  # the gamma tail places it inside the gap
                assert fit.value == raw
                inside += 1
    assert inside > 0


# -- percentile ---------------------------------------------------------------------------------
def test_percentile_threshold_and_strict_decision() -> None:
    x = np.arange(11, dtype=float)
    fit = fit_threshold_info(x, PERCENTILE)
    assert fit.value == pytest.approx(9.0) and fit.rank == 10
    assert not fit.achievable  # the empirical quantile makes no finite-sample promise
    assert fit.advice is not None and "conformal" in fit.advice
    np.testing.assert_array_equal(decide([8.9, 9.0, 9.1], fit.value), [0, 0, 1])


# -- degenerate input ---------------------------------------------------------------------------
@pytest.mark.parametrize("scores", [[0.3], [np.inf, np.nan, 0.3], [np.inf, np.inf]])
def test_fewer_than_two_finite_scores_are_refused(scores: list[float]) -> None:
    with pytest.raises(InputError, match="at least 2 are needed"):
        fit_threshold_info(scores)


@pytest.mark.parametrize("method", ["conformal", "gamma", "percentile"])
def test_identical_scores_are_refused_as_degenerate_recordings(method: str) -> None:
    cfg = ThresholdConfig(method=method)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"degenerate .*silence"):
        fit_threshold_info(np.zeros(5), cfg)  # five silent recordings: every LOO score 0
    with pytest.raises(InputError, match="identical"):
        fit_threshold_info(np.full(20, 0.3) * (1 + 1e-9 * np.arange(20)), cfg)  # rounding noise
    assert fit_threshold_info([0.3, 0.3, 0.31], cfg).n == 3  # a real spread is fine


def test_lenient_fit_threshold_keeps_old_callers_working(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stetho.scoring.threshold"):
        assert fit_threshold(np.full(20, 0.3)) == pytest.approx(0.3)
        assert fit_threshold([np.inf, 0.7]) == 0.7
    assert "degenerate" in caplog.text
    with pytest.raises(InputError, match="none of the 2 scores is finite"):
        fit_threshold([np.inf, np.nan])
    with pytest.raises(ValueError):  # InputError is a ValueError: callers' handlers still work
        fit_threshold([np.nan])


def test_non_finite_scores_are_ignored() -> None:
    x = np.concatenate([np.linspace(0.0, 1.0, 101), [np.inf]])
    assert fit_threshold(x, ThresholdConfig("percentile", 0.5)) == pytest.approx(0.5)
    assert fit_threshold_info(x).n == 101


# -- stability ----------------------------------------------------------------------------------
def _bank_sets(seed: int, count: int) -> list[np.ndarray]:
    """Random score sets (positive, several shapes) whose neighbours differ by > 1e-4 relative."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < count:
        n = int(rng.integers(4, 40))
        kind = len(out) % 3
        if kind == 0:
            x = rng.gamma(2.0, 0.01, size=n)
        elif kind == 1:
            x = rng.lognormal(0.0, 1.0, size=n)
        else:
            x = 1.0 + rng.standard_t(3, size=n) ** 2
        s = np.sort(x)
        if np.all(np.diff(s) > 1e-4 * s[1:]):
            out.append(x)
    return out


@pytest.mark.parametrize(
    ("method", "count"), [("conformal", 300), ("percentile", 300), ("gamma", 40)]
)
def test_rounding_level_changes_never_move_a_threshold_across_bank_clips(
    method: str, count: int
) -> None:
    """1e-6 relative perturbations leave every bank clip's decision unchanged."""
    rng = np.random.default_rng(11)
    for alpha in (0.1, 0.2):
        cfg = ThresholdConfig(method=method).with_false_alarm(alpha)  # type: ignore[arg-type]
        for x in _bank_sets(seed=int(alpha * 100), count=count // 2):
            base = decide(x, fit_threshold(x, cfg))
            for _ in range(2):
                xp = x * (1.0 + rng.uniform(-1e-6, 1e-6, size=x.size))
                np.testing.assert_array_equal(decide(xp, fit_threshold(xp, cfg)), base)


# -- the promise --------------------------------------------------------------------------------
_DISTRIBUTIONS = {
    "normal": lambda rng, size: rng.normal(size=size),
    "exponential": lambda rng, size: rng.exponential(size=size),
    "lognormal": lambda rng, size: rng.lognormal(0.0, 1.5, size=size),
    "student-t2": lambda rng, size: rng.standard_t(2, size=size),
    "uniform": lambda rng, size: rng.uniform(size=size),
}


@pytest.mark.parametrize("dist", sorted(_DISTRIBUTIONS))
def test_conformal_false_alarm_rate_holds_on_fresh_normals(dist: str) -> None:
    """2000 banks of 20 exchangeable normals, alpha 0.1: alpha - 1/21 <= rate <= alpha (3 SE)."""
    rng = np.random.default_rng(sorted(_DISTRIBUTIONS).index(dist))
    draw = _DISTRIBUTIONS[dist]
    n, alpha, reps, fresh = 20, 0.1, 2000, 50
    rates = np.empty(reps)
    for i in range(reps):
        thr = fit_threshold(draw(rng, n), ThresholdConfig(false_alarm=alpha))
        rates[i] = decide(draw(rng, fresh), thr).mean()
    se = rates.std(ddof=1) / np.sqrt(reps)
    assert rates.mean() <= alpha + 3 * se
    assert rates.mean() >= alpha - 1 / (n + 1) - 3 * se


def test_rate_band_matches_the_simulated_false_alarm_rate_of_the_order_statistic() -> None:
    rng = np.random.default_rng(5)
    n, k, reps = 20, 19, 20000
    # uniform normals: the false-alarm rate of x_(k) is exactly 1 - U_(k)
    rates = 1.0 - np.sort(rng.uniform(size=(reps, n)), axis=1)[:, k - 1]
    lo, hi = rate_band(n, k, at_rank=True)
    assert lo == pytest.approx(np.quantile(rates, 0.05), abs=0.005)
    assert hi == pytest.approx(np.quantile(rates, 0.95), abs=0.01)
    fit = fit_threshold_info(rng.uniform(size=n))
    assert fit.rate_band == (lo, hi)
    # a threshold somewhere in the gap [x_(k), x_(k+1)): the band widens on the low side
    gap_lo, gap_hi = rate_band(n, k)
    assert gap_hi == hi and gap_lo < lo


def test_gamma_dcase_is_the_official_unclamped_fit() -> None:
    """The autoencoder baseline's rule: scipy's 3-parameter gamma fit + ppf, as DCASE computes it."""
    from scipy import stats

    from stetho.baselines import AEBaselineConfig

    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.5, size=200)
    want = stats.gamma.ppf(0.9, *stats.gamma.fit(np.sort(x)))
    got = fit_threshold(x, ThresholdConfig(method="gamma-dcase", quantile=0.9))
    assert got == pytest.approx(want, rel=1e-9)
    assert AEBaselineConfig().threshold.method == "gamma-dcase"
