"""Pseudo-anomalies and the label-free member choice."""

from __future__ import annotations

import numpy as np
import pytest

from stetho.scoring.ensemble import EnsembleConfig, MemberConfig, combine_scores
from stetho.scoring.selection import (
    PSEUDO_KINDS,
    SelectionConfig,
    choose_members,
    pseudo_anomaly,
    rank_auc,
)
from stetho.utils.config import ConfigError

SR = 16000


def _noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(SR * seconds))).astype(np.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f <= hi)].sum())


@pytest.mark.parametrize("kind", list(PSEUDO_KINDS))
def test_pseudo_anomaly_changes_the_clip_and_keeps_its_length(kind: str) -> None:
    x = _noise()
    y = pseudo_anomaly(x, SR, kind, seed=3)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all()
    assert np.abs(y - x).max() > 1e-3
    np.testing.assert_array_equal(y, pseudo_anomaly(x, SR, kind, seed=3))  # seeded


def test_tone_adds_a_narrow_peak_and_notch_removes_a_band() -> None:
    x = _noise(seconds=2.0)
    y = pseudo_anomaly(x, SR, "tone", seed=1)
    spec = np.abs(np.fft.rfft(y - x))
    f = np.fft.rfftfreq(x.size, 1 / SR)
    peak = f[np.argmax(spec)]
    assert _band_energy(y - x, peak - 5, peak + 5) > 0.99 * _band_energy(y - x, 0, SR / 2)
    z = pseudo_anomaly(x, SR, "notch", seed=1)
    removed = np.abs(np.fft.rfft(z.astype(np.float64))) < 1e-6 * np.abs(np.fft.rfft(x)).max()
    assert removed.sum() > 0.01 * removed.size  # a band of bins is zeroed


def test_speed_shift_moves_a_tone() -> None:
    t = np.arange(SR * 2) / SR
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = pseudo_anomaly(x, SR, "speed", seed=0)
    f = np.fft.rfftfreq(x.size, 1 / SR)
    moved = f[np.argmax(np.abs(np.fft.rfft(y)))]
    assert abs(moved - 1000) == pytest.approx(30, abs=3)


def test_rank_auc() -> None:
    assert rank_auc(np.array([0, 1]), np.array([2, 3])) == 1.0
    assert rank_auc(np.array([0, 1]), np.array([1, 1])) == 0.75
    with pytest.raises(ValueError):
        rank_auc(np.array([]), np.array([1.0]))


def test_choice_drops_a_blind_member_and_reports_why() -> None:
    rng = np.random.default_rng(0)
    loo = [rng.normal(size=20), rng.normal(size=20)]
    seeing = {"tone": rng.normal(3, 1, 8), "notch": rng.normal(3, 1, 8)}
    blind = {"tone": rng.normal(0, 1, 8), "notch": rng.normal(0, 1, 8)}
    out = choose_members(["good", "blind"], loo, [seeing, blind], SelectionConfig())
    assert out["weights"] == {"good": 1.0, "blind": 0.0}
    assert "dropped blind" in str(out["reason"])
    proxy = out["proxy_auc"]
    assert isinstance(proxy, dict) and proxy["good"]["mean"] > 0.9 > 0.7 > proxy["blind"]["mean"]


def test_choice_keeps_all_when_saturated_or_bank_small_or_disabled() -> None:
    loo = [np.zeros(10) - 1, np.zeros(10) - 1]
    sat = {"tone": np.ones(5)}
    out = choose_members(["a", "b"], loo, [sat, sat], SelectionConfig())
    assert out["weights"] == {"a": 0.5, "b": 0.5}
    small = [np.zeros(2), np.zeros(2)]
    out = choose_members(["a", "b"], small, [sat, {"tone": np.zeros(5) - 9}], SelectionConfig())
    assert out["weights"] == {"a": 0.5, "b": 0.5} and "all members kept" in str(out["reason"])
    out = choose_members(["a", "b"], loo, [sat, {"tone": -np.ones(5)}],
                         SelectionConfig(enabled=False))  # fmt: skip
    assert out["weights"] == {"a": 0.5, "b": 0.5}


def test_combine_scores() -> None:
    s = np.array([[1.0, 2.0], [3.0, -2.0], [100.0, 100.0]])
    w = np.array([0.5, 0.5, 0.0])
    np.testing.assert_allclose(combine_scores(s, w, "mean"), [2.0, 0.0])
    np.testing.assert_allclose(combine_scores(s, w, "max"), [3.0, 2.0])
    np.testing.assert_allclose(combine_scores(s, w, "min"), [1.0, -2.0])
    with pytest.raises(ValueError):
        combine_scores(s, np.zeros(3))


def test_fisher_combination_is_the_mean_of_minus_log_gaussian_tails() -> None:
    from scipy.stats import norm

    s = np.array([[0.3, -1.0, 8.0, 40.0], [1.2, 0.5, 0.0, -3.0], [9.0, 9.0, 9.0, 9.0]])
    w = np.array([0.25, 0.75, 0.0])  # weight 0: ignored
    ref = (w[:2, None] * -norm.logsf(s[:2])).sum(0) / w[:2].sum()  # scipy's own tail
    np.testing.assert_allclose(combine_scores(s, w, "fisher"), ref, rtol=1e-12)
    assert np.isfinite(combine_scores(s, w, "fisher")).all()  # z = 40: no log(0)


def test_fisher_keeps_one_views_evidence_that_the_mean_dilutes() -> None:
    # normals: both views in their usual range; fault: far out in one view, unseen in the other
    normal = np.array([[2.0, 1.0], [1.0, 2.0]])  # two normals (columns), a little high in turn
    fault = np.array([[3.2], [-0.5]])  # one fault: view 1 sees it, view 2 not at all
    w = np.ones(2)
    mean_n, mean_f = combine_scores(normal, w, "mean"), combine_scores(fault, w, "mean")
    fis_n, fis_f = combine_scores(normal, w, "fisher"), combine_scores(fault, w, "fisher")
    assert mean_f[0] <= mean_n.max()  # the mean ranks the fault with the normals
    assert fis_f[0] > fis_n.max()  # Fisher ranks it above both


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        EnsembleConfig(members=[MemberConfig(name="a")], combine="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SelectionConfig(kinds=["thunder"])
    with pytest.raises(ConfigError):
        EnsembleConfig(members=[MemberConfig(name="a"), MemberConfig(name="a")])
    with pytest.raises(ConfigError):
        EnsembleConfig(members=[])


def test_reason_names_the_true_cause_of_keeping_every_member() -> None:
    """A bank of 60 clips without pseudo-anomaly scores is not "a bank < 4" (issue #23)."""
    big = [np.linspace(-1, 1, 60)]
    out = choose_members(["only"], big, [{}], SelectionConfig())
    reason = str(out["reason"])
    assert out["weights"] == {"only": 1.0}
    assert "< 4" not in reason and "one member" in reason
    two = [np.linspace(-1, 1, 60), np.linspace(-1, 1, 60)]
    reason = str(choose_members(["a", "b"], two, [{}, {}], SelectionConfig())["reason"])
    assert "< 4" not in reason and "no pseudo-anomaly scores" in reason
    small = [np.zeros(3), np.zeros(3)]
    sat = {"tone": np.ones(5)}
    reason = str(choose_members(["a", "b"], small, [sat, sat], SelectionConfig())["reason"])
    assert "bank of 3 clip(s) < 4" in reason


def test_robust_weighting_favours_the_consistent_member() -> None:
    rng = np.random.default_rng(3)
    tight = rng.normal(0, 1, 40)
    spread = np.r_[rng.normal(0, 0.3, 36), [6.0, 7.0, -5.0, 8.0]]  # most normals tight, 4 far out
    cfg = SelectionConfig(weighting="robust")
    out = choose_members(["a", "b"], [tight, spread], [{}, {}], cfg)
    w = out["weights"]
    assert isinstance(w, dict)
    mad = [float(np.median(np.abs(x - np.median(x)))) for x in (tight, spread)]
    assert w["b"] / w["a"] == pytest.approx(mad[0] / mad[1], rel=1e-9)  # ∝ 1 / MAD
    assert sum(w.values()) == pytest.approx(1.0) and "1/MAD" in str(out["reason"])
    with pytest.raises(ConfigError):
        SelectionConfig(weighting="vote")  # type: ignore[arg-type]


def _pseudo_for_auc(n_normal: int, above: int, at: float) -> np.ndarray:
    """Pseudo-anomaly scores: ``above`` of them above every normal 0..n-1, one at ``at``."""
    return np.array([n_normal + 0.5] * above + [at])


def test_saturated_proxy_keeps_every_member() -> None:
    loo = [np.arange(20.0), np.arange(20.0)]
    perfect = {"tone": np.full(8, 30.0)}
    near = {"tone": _pseudo_for_auc(20, 7, 15.5)}  # (7 * 20 + 16) / 160 = 0.975
    cfg = SelectionConfig(tolerance=0.01)
    out = choose_members(["mn04", "logmel"], loo, [perfect, near], cfg)
    proxy = out["proxy_auc"]
    assert isinstance(proxy, dict) and proxy["logmel"]["mean"] == pytest.approx(0.975)
    assert out["weights"] == {"mn04": 0.5, "logmel": 0.5}
    assert "saturated" in str(out["reason"])
    # below the saturation level the proxy rule applies again (here: within its noise)
    out = choose_members(["mn04", "logmel"], loo, [perfect, near], cfg.replace(saturation=0.99))
    assert "saturated" not in str(out["reason"]) and "2 standard errors" in str(out["reason"])


def test_a_gap_within_the_proxy_noise_drops_nothing() -> None:
    loo = [np.arange(5.0), np.arange(5.0)]
    perfect = {"tone": np.full(4, 10.0)}
    worse = {"tone": np.array([10.0, 10.0, 10.0, 2.5])}  # AUC 18 / 20 = 0.9: 0.1 below
    out = choose_members(["a", "b"], loo, [perfect, worse], SelectionConfig())
    assert out["weights"] == {"a": 0.5, "b": 0.5}, out["reason"]
    # the same gap on many clips is beyond the noise: dropped
    loo = [np.arange(200.0), np.arange(200.0)]
    worse = {"tone": np.r_[np.full(90, 300.0), np.full(10, -1.0)]}  # AUC 0.9
    out = choose_members(["a", "b"], loo, [{"tone": np.full(100, 300.0)}, worse],
                         SelectionConfig())  # fmt: skip
    assert out["weights"] == {"a": 1.0, "b": 0.0}
    assert "dropped b" in str(out["reason"])


def test_auc_standard_error_matches_hanley_mcneil_table() -> None:
    from stetho.scoring.selection import auc_se

    # Hanley & McNeil (1982), Table 1-style value computed from the formula: A = 0.8, 50 / 50
    a, q1, q2 = 0.8, 0.8 / 1.2, 2 * 0.64 / 1.8
    want = np.sqrt((a * (1 - a) + 49 * (q1 - a * a) + 49 * (q2 - a * a)) / 2500)
    assert auc_se(0.8, 50, 50) == pytest.approx(want, rel=1e-12)
    assert auc_se(0.8, 10, 10) > auc_se(0.8, 100, 100)
