"""The DCASE Task 2 metrics, numpy only (protocol §2.3–§2.4).

* :func:`auc_score` — ROC AUC = Mann–Whitney U / (N⁺·N⁻) with half credit for ties.
* :func:`pauc_score` — McClish-standardised partial AUC on FPR ∈ [0, p] (p = 0.1), the value
  ``sklearn.metrics.roc_auc_score(y, s, max_fpr=p)`` returns and the official evaluators report.
* :func:`precision_recall_f1` — from 0/1 decisions with the evaluator's ε guards.
* :func:`official_score` — the ε-clipped flat harmonic mean Ω; :func:`arithmetic_mean`.

Both AUCs are computed from the grouped ROC curve (one point per distinct score, ties grouped)
with the same point set, interpolation and trapezoid sums as the official tool, so the floats
are bit-identical to ``roc_auc_score`` and not just equal to ~1e-16.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from stetho.utils.errors import StethoError

__all__ = [
    "EPS",
    "MAX_FPR",
    "MetricError",
    "arithmetic_mean",
    "auc_score",
    "harmonic_mean",
    "leave_one_out",
    "official_score",
    "pauc_score",
    "precision_recall_f1",
    "roc_curve",
]

#: ε of the official evaluators: ``sys.float_info.epsilon`` = 2.220446049250313e-16.
EPS: float = sys.float_info.epsilon
#: FPR limit of the official pAUC.
MAX_FPR: float = 0.1


class MetricError(StethoError, ValueError):
    """A metric cannot be computed (one-class subset, non-finite scores, bad labels)."""


def _check_inputs(y_true: Any, y_score: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels (0/1) and scores (finite) → (int8 labels (N,), float64 scores (N,))."""
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise MetricError(
            f"{what}: labels and scores must be 1-D, got shapes {y.shape} and {s.shape}"
        )
    if y.shape != s.shape:
        raise MetricError(f"{what}: {y.shape[0]} labels but {s.shape[0]} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = sorted({str(v) for v in np.unique(y) if v not in (0, 1)})
        raise MetricError(f"{what}: labels must be 0 (normal) or 1 (anomaly), found {bad}")
    if not np.isfinite(s).all():
        idx = np.flatnonzero(~np.isfinite(s))
        raise MetricError(
            f"{what}: {idx.size} non-finite score(s) (NaN/inf), first at position {int(idx[0])}: "
            f"{s[idx[0]]!r}; scores must be finite floats"
        )
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise MetricError(
            f"{what}: AUC needs both classes, got {n_neg} normal and {n_pos} anomalous clip(s)"
        )
    return y.astype(np.int8), s


def roc_curve(
    y_true: Any, y_score: Any, *, what: str = "roc_curve"
) -> tuple[np.ndarray, np.ndarray]:
    """Grouped ROC curve: one point per distinct score threshold, starting at (0, 0).

    Collinear intermediate points are dropped exactly as the official tool does (this does not
    change the area mathematically, only keeps the floating-point sums identical).

    Args:
        y_true: Labels (N,), 0 = normal, 1 = anomaly.
        y_score: Anomaly scores (N,), higher = more anomalous; finite.
        what: Context for error messages.

    Returns:
        ``(fpr, tpr)``, each (K,) float64, non-decreasing, from (0, 0) to (1, 1).

    Raises:
        MetricError: One class only, non-finite scores, labels other than 0/1, shape mismatch.
    """
    y, s = _check_inputs(y_true, y_score, what)
    order = np.argsort(s, kind="stable")[::-1]  # (N,) descending score
    return _roc_sorted(y[order].astype(np.float64), s[order])


def _roc_sorted(y_sorted: np.ndarray, s_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grouped ROC of labels/scores already sorted by descending score (no validation)."""
    # last index of every group of equal scores (+ the final one)
    thr = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]  # (K,)
    tps = np.cumsum(y_sorted)[thr]  # (K,) anomalies at or above each threshold
    fps = 1.0 + thr.astype(np.float64) - tps  # (K,) normals at or above each threshold
    if fps.shape[0] > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    return fps / fps[-1], tps / tps[-1]


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under y(x), summed as ``Σ dx·(y₁+y₀)/2``."""
    d = x[1:] - x[:-1]
    return float(np.sum(d * (y[1:] + y[:-1]) / 2.0))


def _pauc_from_roc(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """McClish-standardised area of the ROC on [0, max_fpr] (interpolated point at max_fpr)."""
    if max_fpr == 1.0:
        return _trapezoid(fpr, tpr)
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    tpr_p = np.interp(max_fpr, [fpr[stop - 1], fpr[stop]], [tpr[stop - 1], tpr[stop]])
    area = _trapezoid(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], tpr_p))
    min_area = 0.5 * max_fpr**2
    return float(0.5 * (1 + (area - min_area) / (max_fpr - min_area)))


def auc_score(y_true: Any, y_score: Any, *, what: str = "AUC") -> float:
    """ROC AUC = P(s_anomaly > s_normal) + ½·P(tie) (Mann–Whitney with half credit for ties).

    Args:
        y_true: Labels (N,), 0 = normal, 1 = anomaly; both classes must occur.
        y_score: Anomaly scores (N,), finite, higher = more anomalous.
        what: Context for error messages (e.g. ``"fan section 00 AUC (source)"``).

    Returns:
        AUC in [0, 1], bit-identical to ``sklearn.metrics.roc_auc_score``.

    Raises:
        MetricError: One class only, non-finite scores, labels other than 0/1.
    """
    fpr, tpr = roc_curve(y_true, y_score, what=what)
    return _trapezoid(fpr, tpr)


def pauc_score(y_true: Any, y_score: Any, max_fpr: float = MAX_FPR, *, what: str = "pAUC") -> float:
    """McClish-standardised partial AUC over FPR ∈ [0, ``max_fpr``] (protocol §2.3).

    The grouped ROC gets one extra point at FPR = p, linearly interpolated between the last point
    with FPR ≤ p and the next one; A = trapezoidal area on [0, p];
    pAUC = ½·(1 + (A − p²/2) / (p − p²/2)). Range [(1 − p)/(2 − p), 1], i.e. [9/19, 1] for
    p = 0.1; 0.5 = chance. Equal to ``roc_auc_score(y, s, max_fpr=p)`` (bit-identical).

    Args:
        y_true: Labels (N,), 0/1, both classes present.
        y_score: Anomaly scores (N,), finite.
        max_fpr: p in (0, 1]; p = 1 gives the plain AUC.
        what: Context for error messages.

    Raises:
        MetricError: As :func:`auc_score`, or ``max_fpr`` outside (0, 1].
    """
    if not 0.0 < max_fpr <= 1.0:
        raise MetricError(f"{what}: max_fpr must be in (0, 1], got {max_fpr!r}")
    fpr, tpr = roc_curve(y_true, y_score, what=what)
    return _pauc_from_roc(fpr, tpr, max_fpr)


def leave_one_out(
    y_true: Any, y_score: Any, max_fpr: float | None = None, *, what: str = "jackknife"
) -> np.ndarray:
    """AUC (``max_fpr=None``) or McClish pAUC of every leave-one-out subset.

    Element i of the result equals ``auc_score(np.delete(y, i), np.delete(s, i))`` (resp.
    :func:`pauc_score`) bit for bit, but the scores are sorted once, which makes the N
    evaluations cheap enough for the evaluator's jackknife on ~1000s of pooled clips.

    Returns:
        (N,) float64.

    Raises:
        MetricError: As :func:`auc_score`; also when removing one clip leaves a single class.
    """
    y, s = _check_inputs(y_true, y_score, what)
    if min(int(y.sum()), int(y.size - y.sum())) < 2:
        raise MetricError(f"{what}: leave-one-out needs at least 2 clips of each class")
    if max_fpr is not None and not 0.0 < max_fpr <= 1.0:
        raise MetricError(f"{what}: max_fpr must be in (0, 1], got {max_fpr!r}")
    order = np.argsort(s, kind="stable")[::-1]  # (N,) descending
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)  # (N,) rank of each original element
    y_sorted = y[order].astype(np.float64)
    s_sorted = s[order]
    out = np.empty(y.size, dtype=np.float64)  # (N,)
    keep = np.ones(y.size, dtype=bool)
    for i in range(y.size):
        keep[pos[i]] = False
        fpr, tpr = _roc_sorted(y_sorted[keep], s_sorted[keep])
        out[i] = _trapezoid(fpr, tpr) if max_fpr is None else _pauc_from_roc(fpr, tpr, max_fpr)
        keep[pos[i]] = True
    return out


def precision_recall_f1(
    y_true: Any, decisions: Any, *, what: str = "decisions"
) -> tuple[float, float, float]:
    """Precision, recall and F1 of 0/1 decisions (1 = anomalous) with the evaluator's ε guards.

    precision = tp / max(tp + fp, ε); recall = tp / max(tp + fn, ε);
    F1 = 2·P·R / max(P + R, ε). Defined (no error) when a class is absent.

    Args:
        y_true: Labels (N,), 0/1.
        decisions: Decisions (N,), 0/1.
        what: Context for error messages.

    Raises:
        MetricError: Shape mismatch or values other than 0/1.
    """
    y = np.asarray(y_true)
    d = np.asarray(decisions)
    if y.ndim != 1 or y.shape != d.shape:
        raise MetricError(
            f"{what}: labels {y.shape} and decisions {d.shape} must be 1-D of equal length"
        )
    for arr, name in ((y, "labels"), (d, "decisions")):
        if arr.size and not np.isin(arr, (0, 1)).all():
            bad = sorted({str(v) for v in np.unique(arr) if v not in (0, 1)})
            raise MetricError(f"{what}: {name} must be 0 or 1, found {bad}")
    tp = float(np.sum((y == 1) & (d == 1)))
    fp = float(np.sum((y == 0) & (d == 1)))
    fn = float(np.sum((y == 1) & (d == 0)))
    precision = tp / max(tp + fp, EPS)
    recall = tp / max(tp + fn, EPS)
    f1 = 2.0 * precision * recall / max(precision + recall, EPS)
    return precision, recall, f1


def _as_values(values: Iterable[float], what: str) -> np.ndarray:
    v = np.asarray([float(x) for x in values], dtype=np.float64)  # (K,)
    if v.size == 0:
        raise MetricError(f"{what}: no values to average")
    if not np.isfinite(v).all():
        raise MetricError(
            f"{what}: non-finite value(s) {[x for x in v.tolist() if not np.isfinite(x)]}"
        )
    return v


def harmonic_mean(values: Iterable[float], *, what: str = "harmonic mean") -> float:
    """ε-clipped harmonic mean: 1 / mean(1 / max(vᵢ, ε)) (order as given).

    Same float as ``scipy.stats.hmean(np.maximum(v, ε), axis=None)`` of the official evaluator.

    Raises:
        MetricError: Empty input or non-finite values.
    """
    v = np.maximum(_as_values(values, what), EPS)
    return float(1.0 / np.mean(1.0 / v))


def official_score(values: Iterable[float]) -> float:
    """Official score Ω: the ε-clipped harmonic mean over the flat list of values (§2.4).

    For 2022–2025 pass all AUC_source, then all AUC_target, then all pAUC values (machines in
    ``sorted()`` order) — the evaluator's order, which reproduces the published totals to the bit.

    Raises:
        MetricError: Empty input or non-finite values.
    """
    return harmonic_mean(values, what="official score")


def arithmetic_mean(values: Iterable[float], *, what: str = "arithmetic mean") -> float:
    """Plain arithmetic mean (``numpy.mean``) of the values.

    Raises:
        MetricError: Empty input or non-finite values.
    """
    return float(np.mean(_as_values(values, what)))
