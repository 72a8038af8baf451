"""Decision thresholds fitted on the anomaly scores of normal training clips.

The DCASE baseline (protocol §3.4) fits a 3-parameter gamma distribution (shape, loc, scale) to
anomaly scores of normal training data with ``scipy.stats.gamma.fit`` and takes the threshold
``gamma.ppf(0.9, shape, loc, scale)``; a clip is declared anomalous iff ``score > threshold``.
``method="percentile"`` uses the empirical quantile instead. A degenerate gamma fit (constant
scores, fewer than three distinct values, or a non-finite result) falls back to the percentile with
a warning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stetho.data.names import Key, as_key
from stetho.utils.config import ConfigBase

__all__ = ["ThresholdConfig", "decide", "decide_for_key", "fit_threshold"]

logger = logging.getLogger(__name__)


@dataclass
class ThresholdConfig(ConfigBase):
    """How the per-(machine, section) decision threshold is fitted.

    Attributes:
        method: ``"gamma"`` (3-parameter gamma fit + ``ppf(quantile)``, as the DCASE baseline)
            or ``"percentile"`` (empirical ``quantile`` of the scores, linear interpolation).
        quantile: Fraction of normal training scores expected below the threshold (baseline 0.9).
    """

    method: Literal["gamma", "percentile"] = "gamma"
    quantile: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"ThresholdConfig.quantile must be in (0, 1), got {self.quantile}")


def fit_threshold(scores: np.ndarray | list[float], cfg: ThresholdConfig | None = None) -> float:
    """Fit a decision threshold on anomaly scores of normal clips.

    Non-finite scores (e.g. leave-one-out scores of a bank with a single clip) are ignored.

    Args:
        scores: Anomaly scores (N,) of normal training clips.
        cfg: Method and quantile.

    Returns:
        The threshold; decide ``score > threshold``.

    Raises:
        ValueError: when there is no finite score.
    """
    cfg = cfg or ThresholdConfig()
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise ValueError(f"cannot fit a threshold: none of the {x.size} scores is finite")
    if finite.size < x.size:
        logger.warning("threshold fit ignores %d non-finite score(s)", x.size - finite.size)
    percentile = float(np.quantile(finite, cfg.quantile))
    if cfg.method == "percentile":
        return percentile
    if np.unique(finite).size < 3:
        logger.warning(
            "gamma threshold fit is degenerate (%d distinct score value(s)); using the %.3g "
            "percentile instead",
            np.unique(finite).size,
            cfg.quantile,
        )
        return percentile
    from scipy import stats

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            shape, loc, scale = stats.gamma.fit(finite)
            threshold = float(stats.gamma.ppf(cfg.quantile, shape, loc=loc, scale=scale))
    except (ValueError, RuntimeError, FloatingPointError) as err:
        logger.warning("gamma threshold fit failed (%s); using the percentile instead", err)
        return percentile
    if not np.isfinite(threshold):
        logger.warning("gamma threshold fit gave %s; using the percentile instead", threshold)
        return percentile
    return threshold


def decide(scores: np.ndarray | list[float], threshold: float) -> np.ndarray:
    """Binary decisions (N,) int: 1 (anomalous) iff ``score > threshold``."""
    return (np.asarray(scores, dtype=np.float64) > threshold).astype(np.int64)


def decide_for_key(
    thresholds: Mapping[Key, float], scores: np.ndarray | Sequence[float], key: Key | str
) -> np.ndarray:
    """Decisions (N,) int with the threshold of ``key`` (a tuple or ``"machine/section"``).

    Raises:
        KeyError: no threshold for ``key`` (the message lists the fitted ones).
    """
    k = as_key(key)
    if k not in thresholds:
        fitted = ", ".join(f"{m}/{s}" for m, s in sorted(thresholds)) or "none"
        raise KeyError(f"no threshold for {k[0]}/{k[1]}; fitted thresholds: {fitted}")
    return decide(np.asarray(scores, dtype=np.float64), thresholds[k])
