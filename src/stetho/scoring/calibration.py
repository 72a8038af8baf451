"""One normalised anomaly score, conformal p-values and expected false-alarm counts (plain numpy).

Raw anomaly scores differ by orders of magnitude between machines and detector kinds (a fan's
cosine distances of 0.01, an autoencoder's MSE of 40, negative z-scores). The **normalised score**
puts every (machine, section) on one scale anchored at two points of its own held-out normal
scores: the median normal clip (0.0) and the decision threshold (1.0)::

    l = (raw - centre) / scale          centre = median of held-out normals, scale = thr - centre
    normalised = l                      if raw <= threshold   (linear; 0 = typical normal clip)
    normalised = 1 + ln(l)              if raw >  threshold   (grows logarithmically)

It is monotone in the raw score, exactly 1.0 at the threshold, unchanged by any positive affine
change of the raw scores (scale-free), finite for every finite raw score, and

    normalised > 1.0  <=>  raw > threshold   (exactly, also at floating-point edges).

Above the threshold the logarithm keeps extreme anomalies (raw 1000 times the normal spread) on
a chart next to borderline ones; ``1 + ln(l)`` is continuous with slope 1 at the threshold. The
raw score is always kept beside it. The alternative conventions (anomalib's [0, 1] with 0.5 at
the threshold, conformal p-values) are compared in ``docs/thresholds.md``; :func:`p_value` gives
the latter. A choice of stetho, not in the paper.

:class:`ScoreScale` holds what is needed per (machine, section) to compute both at serve time and
saves to JSON. :func:`expected_false_alarms` turns a false-alarm rate into counts a plant can plan
with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from stetho.utils.errors import InputError

__all__ = [
    "ExpectedFalseAlarms",
    "ScoreScale",
    "expected_false_alarms",
    "normalised_score",
    "p_value",
]

_FMAX = float(np.finfo(np.float64).max)
_ABOVE_ONE = float(np.nextafter(1.0, 2.0))


def _as_held_out(held_out_scores: np.ndarray | Sequence[float]) -> np.ndarray:
    """Sorted finite held-out scores (float64), or InputError when there is none."""
    x = np.asarray(held_out_scores, dtype=np.float64).reshape(-1)
    x = np.sort(x[np.isfinite(x)])
    if x.size == 0:
        raise InputError(
            "no finite held-out normal score to calibrate against; fit the detector on at least "
            "2 normal clips of this machine and section"
        )
    return x


def _anchor(sorted_held_out: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(centre, scale)`` with ``centre + scale == threshold`` in intent and ``scale > 0``.

    ``centre`` is the median held-out score; when the threshold is not above it (ties, tiny or
    odd banks) the lowest held-out score, and failing that a unit-magnitude step below.
    """
    if not math.isfinite(threshold):
        raise InputError(
            f"cannot normalise scores against threshold {threshold}: the detector has no finite "
            "threshold for this machine and section; refit it on normal clips"
        )
    for centre in (float(np.median(sorted_held_out)), float(sorted_held_out[0])):
        scale = threshold - centre
        if scale > 0 and math.isfinite(scale):
            return centre, scale
    scale = max(abs(threshold), 1.0)
    return threshold - scale, scale


def _normalise(raw: np.ndarray, threshold: float, centre: float, scale: float) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        half = raw / 2 - centre / 2  # no overflow for finite raw and centre
        lin = np.clip(half / (scale / 2), -_FMAX, _FMAX)
        log_branch = 1.0 + (np.log(np.maximum(half, 0.0)) - math.log(scale / 2))
    above = raw > threshold
    out = np.where(above, log_branch, lin)
    # The decision is the raw comparison; clamp so that `out > 1` agrees with it exactly.
    out = np.where(above, np.maximum(out, _ABOVE_ONE), np.minimum(out, 1.0))
    out = np.where(raw == threshold, 1.0, out)
    out = np.where(np.isposinf(raw), np.inf, out)
    out = np.where(np.isneginf(raw), -np.inf, out)
    return np.where(np.isnan(raw), np.nan, out)


def normalised_score(
    raw: np.ndarray | Sequence[float] | float,
    held_out_scores: np.ndarray | Sequence[float],
    threshold: float,
) -> np.ndarray:
    """Threshold-normalised scores: 0 = median normal clip, 1.0 = the threshold.

    Args:
        raw: Raw anomaly scores (any shape).
        held_out_scores: Held-out (leave-one-out) scores of the normal clips of the same key.
        threshold: The key's decision threshold (finite).

    Returns:
        float64 array of ``raw``'s shape; ``> 1.0`` exactly where ``raw > threshold``. NaN stays
        NaN, ``±inf`` stays ``±inf``.

    Raises:
        InputError: no finite held-out score, or a non-finite threshold.
    """
    return ScoreScale.fit(held_out_scores, threshold).normalise(raw)


def p_value(
    raw: np.ndarray | Sequence[float] | float, held_out_scores: np.ndarray | Sequence[float]
) -> np.ndarray:
    """Conformal p-values ``(1 + #{held-out >= raw}) / (n + 1)``.

    The fraction of normal clips (the new one included) that score at least as high: small means
    unusual among normals. With the conformal threshold at ``k = ceil((n+1)(1-alpha))``,
    ``raw > threshold`` exactly when ``(n + 1) * p <= floor((n + 1) * alpha)``. Resolution is
    ``1 / (n + 1)``: with 20 clips no p-value is below 1/21.

    Returns:
        float64 array of ``raw``'s shape in ``[1/(n+1), 1]``; NaN for NaN.
    """
    return _p_value(_as_held_out(held_out_scores), np.asarray(raw, dtype=np.float64))


def _p_value(sorted_held_out: np.ndarray, raw: np.ndarray) -> np.ndarray:
    at_least = sorted_held_out.size - np.searchsorted(sorted_held_out, raw, side="left")
    p = (1.0 + at_least) / (sorted_held_out.size + 1.0)
    return np.where(np.isnan(raw), np.nan, p)


@dataclass(frozen=True)
class ScoreScale:
    """What a detector keeps per (machine, section) to normalise scores at serve time.

    Attributes:
        threshold: Decision threshold of the key (``score > threshold`` is anomalous).
        centre: Raw score mapped to 0.0 (median held-out normal score).
        scale: ``threshold - centre`` (> 0): raw distance mapped to 1.0.
        held_out: Sorted finite held-out normal scores (for :meth:`p_value`).
    """

    threshold: float
    centre: float
    scale: float
    held_out: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.centre) and math.isfinite(self.scale) and self.scale > 0):
            raise InputError(
                f"invalid score scale: centre {self.centre}, scale {self.scale} (scale must be "
                "finite and > 0); refit the detector"
            )
        if not self.held_out:
            raise InputError("invalid score scale: no held-out scores; refit the detector")

    @classmethod
    def fit(
        cls,
        held_out_scores: np.ndarray | Sequence[float],
        threshold: float,
        *,
        allow_infinite: bool = False,
    ) -> ScoreScale:
        """Anchor on held-out normal scores and a threshold.

        Args:
            held_out_scores: Held-out (leave-one-out) scores of the key's normal clips.
            threshold: The key's decision threshold.
            allow_infinite: Accept a non-finite threshold (only :meth:`p_value` is then
                meaningful; the scale falls back to a unit step).

        Raises:
            InputError: no finite held-out score, or a non-finite threshold.
        """
        s = _as_held_out(held_out_scores)
        if allow_infinite and not math.isfinite(threshold):
            centre, scale = float(np.median(s)), 1.0
        else:
            centre, scale = _anchor(s, float(threshold))
        return cls(float(threshold), centre, scale, tuple(float(v) for v in s))

    @property
    def n(self) -> int:
        """Number of held-out scores."""
        return len(self.held_out)

    def normalise(self, raw: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Normalised scores (see the module docstring) of raw scores of this key."""
        if not math.isfinite(self.threshold):
            raise InputError(
                f"cannot normalise scores against threshold {self.threshold}: no finite "
                "threshold for this machine and section; refit the detector on normal clips"
            )
        r = np.asarray(raw, dtype=np.float64)
        return _normalise(r, self.threshold, self.centre, self.scale)

    def p_value(self, raw: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Conformal p-values of raw scores (see :func:`p_value`)."""
        return _p_value(
            np.asarray(self.held_out, dtype=np.float64), np.asarray(raw, dtype=np.float64)
        )

    def decide(self, raw: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """Decisions int (1 = anomalous, ``raw > threshold``), equal to ``normalise(raw) > 1``."""
        return (np.asarray(raw, dtype=np.float64) > self.threshold).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``threshold`` ``None`` when not finite)."""
        thr = self.threshold if math.isfinite(self.threshold) else None
        return {
            "threshold": thr,
            "centre": self.centre,
            "scale": self.scale,
            "held_out": list(self.held_out),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreScale:
        """Rebuild from :meth:`to_dict` (validates the fields)."""
        missing = {"threshold", "centre", "scale", "held_out"} - set(d)
        if missing:
            raise InputError(f"score scale lacks {sorted(missing)}; refit the detector")
        thr = math.inf if d["threshold"] is None else float(d["threshold"])
        return cls(thr, float(d["centre"]), float(d["scale"]), tuple(map(float, d["held_out"])))


class ExpectedFalseAlarms(NamedTuple):
    """Expected false alarms on normal operation at a false-alarm rate."""

    per_100_clips: float
    per_day: float


def expected_false_alarms(alpha: float, windows_per_hour: float) -> ExpectedFalseAlarms:
    """Expected false alarms per 100 normal clips and per day of monitoring.

    ``per_day = alpha * windows_per_hour * 24``: the mean count when every scored window is a
    normal clip. Consecutive windows of one machine are correlated, so alarms tend to cluster:
    the mean holds, days with none and days with several are both more frequent than for
    independent windows.

    Args:
        alpha: False-alarm rate per clip (the threshold's ``alpha`` or its ``expected_rate``).
        windows_per_hour: Clips (windows) the monitor scores per hour.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"false-alarm rate must be in [0, 1], got {alpha}")
    if not (math.isfinite(windows_per_hour) and windows_per_hour >= 0):
        raise InputError(f"windows per hour must be a finite number >= 0, got {windows_per_hour}")
    return ExpectedFalseAlarms(100.0 * alpha, alpha * windows_per_hour * 24.0)
