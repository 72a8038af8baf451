"""Metrics against sklearn (the official evaluators' implementation) and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from stetho.evaluation import (
    EPS,
    MetricError,
    arithmetic_mean,
    auc_score,
    harmonic_mean,
    leave_one_out,
    official_score,
    pauc_score,
    precision_recall_f1,
)


def brute_force_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def random_case(rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray]:
    n_neg = int(rng.integers(1, 160))
    n_pos = int(rng.integers(1, 160))
    y = rng.permutation(np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)])
    if i % 3 == 0:  # heavy ties: few distinct integer scores
        s = rng.integers(0, int(rng.integers(1, 12)), y.size).astype(float)
    elif i % 3 == 1:  # ties on a coarse grid
        s = np.round(rng.normal(size=y.size) + y * rng.uniform(0, 2), 1)
    else:
        s = rng.normal(size=y.size) + y * rng.uniform(-1, 2)
    return y, s


def test_auc_and_pauc_equal_sklearn_bit_for_bit_on_random_data_with_ties() -> None:
    rng = np.random.default_rng(1234)
    non_integer_pn = 0
    for i in range(150):
        y, s = random_case(rng, i)
        assert auc_score(y, s) == roc_auc_score(y, s)
        assert pauc_score(y, s) == roc_auc_score(y, s, max_fpr=0.1)
        non_integer_pn += (0.1 * (y == 0).sum()) % 1 != 0
    assert non_integer_pn > 75  # most cases interpolate inside an FPR step


def test_auc_is_mann_whitney_with_half_credit_for_ties() -> None:
    rng = np.random.default_rng(7)
    for i in range(200):
        y, s = random_case(rng, i)
        assert abs(auc_score(y, s) - brute_force_auc(y, s)) < 1e-12


@pytest.mark.parametrize(
    ("n_neg", "n_pos"), [(127, 73), (143, 57), (101, 99), (107, 27), (3, 200), (101, 1), (1, 5)]
)
def test_unbalanced_sections_and_non_integer_p_times_n(n_neg: int, n_pos: int) -> None:
    rng = np.random.default_rng(n_neg * 1000 + n_pos)
    for _ in range(5):
        y = rng.permutation(np.r_[np.zeros(n_neg, int), np.ones(n_pos, int)])
        s = np.round(rng.normal(size=y.size) + 0.7 * y, 2)
        assert auc_score(y, s) == roc_auc_score(y, s)
        assert pauc_score(y, s) == roc_auc_score(y, s, max_fpr=0.1)


def test_pauc_interpolates_inside_the_step_at_p() -> None:
    # 15 normals: p·N⁻ = 1.5 → half of the 2nd normal's step counts.
    # 2 anomalies above everything, the 1st normal, 1 anomaly, the 2nd normal, the rest.
    y = np.array([1, 1, 0, 1, 0] + [0] * 13 + [1] * 2)
    s = np.array([10, 9, 8, 7, 6] + [0] * 13 + [-1] * 2, dtype=float)
    n_neg, n_pos = 15, 5
    area = (1 / n_neg) * (2 / n_pos) + (0.1 - 1 / n_neg) * (3 / n_pos)
    expected = 0.5 * (1 + (area - 0.005) / 0.095)
    assert abs(pauc_score(y, s) - expected) < 1e-15
    assert pauc_score(y, s) == roc_auc_score(y, s, max_fpr=0.1)


def test_pauc_range_is_9_over_19_to_1() -> None:
    y = np.r_[np.zeros(37, int), np.ones(23, int)]
    worst = np.r_[np.ones(37), np.zeros(23)]  # every anomaly below every normal
    best = -worst
    assert abs(pauc_score(y, worst) - 9 / 19) < 1e-15
    assert pauc_score(y, best) == 1.0
    assert pauc_score(y, np.zeros(60)) == pytest.approx(0.5, abs=1e-15)  # all tied: chance
    rng = np.random.default_rng(3)
    for i in range(300):
        yy, ss = random_case(rng, i)
        assert 9 / 19 - 1e-15 <= pauc_score(yy, ss) <= 1.0
    assert pauc_score(y, best, max_fpr=1.0) == auc_score(y, best) == 1.0


@pytest.mark.parametrize("fn", [auc_score, pauc_score])
def test_one_class_subsets_are_clear_errors(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError, match=r"both classes.*0 normal and 3 anomalous"):
        fn(np.ones(3, int), np.arange(3.0))
    with pytest.raises(MetricError, match=r"both classes.*4 normal and 0 anomalous"):
        fn(np.zeros(4, int), np.arange(4.0), what="fan section 00 AUC (source)")
    with pytest.raises(MetricError, match=r"fan section 00"):
        fn(np.zeros(4, int), np.arange(4.0), what="fan section 00 AUC (source)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [auc_score, pauc_score])
def test_non_finite_scores_are_rejected(fn, bad: float) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricError, match="non-finite"):
        fn(np.array([0, 1, 0, 1]), np.array([0.1, bad, 0.3, 0.4]))


def test_bad_labels_and_shapes_are_rejected() -> None:
    with pytest.raises(MetricError, match="0 \\(normal\\) or 1"):
        auc_score(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(MetricError, match="3 labels but 2 scores"):
        auc_score(np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(MetricError, match="max_fpr"):
        pauc_score(np.array([0, 1]), np.array([0.1, 0.2]), max_fpr=0.0)


def test_precision_recall_f1_match_the_evaluator_formula() -> None:
    rng = np.random.default_rng(11)
    for i in range(60):
        n = int(rng.integers(1, 60))
        y = rng.integers(0, 2, n)
        d = rng.integers(0, 2, n) if i % 4 else np.zeros(n, int)
        _tn, fp, fn, tp = confusion_matrix(y, d, labels=[0, 1]).ravel()
        prec = tp / np.maximum(tp + fp, EPS)
        rec = tp / np.maximum(tp + fn, EPS)
        f1 = 2.0 * prec * rec / np.maximum(prec + rec, EPS)
        assert precision_recall_f1(y, d) == (float(prec), float(rec), float(f1))


def test_precision_recall_f1_epsilon_guards() -> None:
    # no positive decisions, no anomalies: 0/ε = 0 everywhere (no division error)
    assert precision_recall_f1(np.zeros(5, int), np.zeros(5, int)) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(np.array([1, 1, 0]), np.array([1, 0, 0])) == (1.0, 0.5, 2 / 3)
    with pytest.raises(MetricError, match="decisions must be 0 or 1"):
        precision_recall_f1(np.array([1, 0]), np.array([1, 2]))


def test_official_score_is_the_clipped_flat_harmonic_mean() -> None:
    vals = [0.9, 0.5, 0.7, 0.6]
    assert official_score(vals) == pytest.approx(4 / sum(1 / v for v in vals), abs=1e-15)
    # a zero is clipped to ε: the harmonic mean collapses to ~n·ε instead of dividing by zero
    clipped = official_score([0.0, 0.8])
    assert clipped == pytest.approx(2 / (1 / EPS + 1 / 0.8), rel=1e-12)
    assert 0 < clipped < 1e-15
    assert arithmetic_mean(vals) == pytest.approx(0.675, abs=1e-15)
    assert harmonic_mean([0.5]) == 0.5
    for fn in (official_score, arithmetic_mean):
        with pytest.raises(MetricError, match="no values"):
            fn([])
        with pytest.raises(MetricError, match="non-finite"):
            fn([0.5, float("nan")])


def test_leave_one_out_equals_sklearn_on_each_subset() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 30)
    s = np.round(rng.normal(size=30) + y, 1)
    auc_loo = leave_one_out(y, s)
    pauc_loo = leave_one_out(y, s, 0.1)
    for i in range(30):
        yy, ss = np.delete(y, i), np.delete(s, i)
        assert auc_loo[i] == roc_auc_score(yy, ss)
        assert pauc_loo[i] == roc_auc_score(yy, ss, max_fpr=0.1)
    with pytest.raises(MetricError, match="at least 2"):
        leave_one_out(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]))
