"""Feature-space and score normalisation fitted on a small bank of normal embeddings (plain arrays).

* :class:`Standardiser` maps features to the bank's frame of reference: ``"std"`` divides each
  dimension by the bank's standard deviation after removing its mean; ``"whiten"`` multiplies by
  the inverse square root of the Ledoit-Wolf-shrunk covariance (:func:`ledoit_wolf`), so that
  Euclidean distances become Mahalanobis distances. With tens of clips and hundreds of dimensions
  the sample covariance is singular; shrinkage keeps it invertible.
* :class:`ZNorm` turns raw scores into z-scores with the mean and standard deviation of the
  bank's own *leave-one-out* scores, so that scores of different banks (domains) and different
  back-ends share one scale (label-free; the common thread of the strongest training-free
  few-shot systems, see ``docs/fewshot.md``).

Everything is float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Standardiser", "ZNorm", "ledoit_wolf"]

#: Relative floor of per-dimension standard deviations (a constant dimension would divide by 0).
_STD_FLOOR = 1e-3
#: Leave-one-out scores needed before their standard deviation is trusted.
MIN_LOO_FOR_STD = 3


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of the rows of ``x`` (N, D) and the shrinkage used.

    ``Σ = (1 - s) S + s μ I`` with ``S`` the maximum-likelihood covariance (divided by N) and
    ``μ = tr(S) / D``; ``s`` is the Ledoit-Wolf (2004) estimate of the optimal intensity.
    """
    a = _as_2d(x, "x")
    n, d = a.shape
    if n < 1:
        raise ValueError("ledoit_wolf needs at least one sample")
    xc = a - a.mean(0)
    s = xc.T @ xc / n
    mu = float(np.trace(s)) / d
    if n < 2 or mu == 0.0:
        return np.eye(d) * (mu if mu > 0 else 1.0), 1.0
    # squared Frobenius distance of S to μI, and the mean squared distance of x xᵀ to S
    delta = float(((s - mu * np.eye(d)) ** 2).sum()) / d
    x2 = xc**2
    beta_sum = float((x2.T @ x2).sum()) / n - float((s**2).sum())
    beta = min(beta_sum / (n * d), delta)
    shrink = 0.0 if delta == 0.0 else beta / delta
    return (1.0 - shrink) * s + shrink * mu * np.eye(d), float(shrink)


@dataclass
class Standardiser:
    """Per-dimension standardisation or whitening fitted on a bank.

    Args:
        mode: ``"none"``, ``"std"`` (mean and std per dimension) or ``"whiten"`` (mean and the
            inverse square root of the Ledoit-Wolf covariance).
    """

    mode: Literal["none", "std", "whiten"] = "std"
    mean: np.ndarray | None = None
    transform: np.ndarray | None = None  # (D,) scales for "std", (D, D) matrix for "whiten"

    def fit(self, x: np.ndarray) -> Standardiser:
        """Fit on the bank ``x`` (N, D)."""
        a = _as_2d(x, "bank")
        d = a.shape[1]
        if self.mode == "none":
            self.mean, self.transform = np.zeros(d), np.ones(d)
            return self
        self.mean = a.mean(0)
        if self.mode == "std":
            sd = a.std(0) if a.shape[0] > 1 else np.ones(d)
            floor = _STD_FLOOR * float(np.median(sd)) if np.any(sd > 0) else 1.0
            self.transform = 1.0 / np.maximum(sd, max(floor, 1e-12))
        elif self.mode == "whiten":
            cov, _ = ledoit_wolf(a)
            vals, vecs = np.linalg.eigh(cov)
            vals = np.maximum(vals, 1e-12 * max(float(vals.max()), 1e-300))
            self.transform = (vecs / np.sqrt(vals)) @ vecs.T  # symmetric Σ^(-1/2)
        else:
            raise ValueError(f"unknown standardisation {self.mode!r}; use none, std or whiten")
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to features ``x`` (M, D)."""
        if self.mean is None or self.transform is None:
            raise RuntimeError("the standardiser has not been fitted")
        a = _as_2d(x, "features") - self.mean
        return a * self.transform if self.transform.ndim == 1 else a @ self.transform


@dataclass
class ZNorm:
    """Score z-normalisation with the statistics of a bank's leave-one-out scores.

    With fewer than ``MIN_LOO_FOR_STD`` finite leave-one-out scores (or zero spread) the scale is
    the mean itself (scores become relative deviations); with none, the identity.
    """

    mean: float = 0.0
    scale: float = 1.0

    @classmethod
    def fit(cls, loo: np.ndarray) -> ZNorm:
        """Statistics of the leave-one-out scores ``loo`` (non-finite values are ignored)."""
        v = np.asarray(loo, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(0.0, 1.0)
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if v.size >= MIN_LOO_FOR_STD else 0.0
        if sd <= 1e-12 * max(abs(mean), 1e-300):
            sd = abs(mean) if abs(mean) > 0 else 1.0
        return cls(mean, sd)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """z-scores of raw ``scores``."""
        return (np.asarray(scores, dtype=np.float64) - self.mean) / self.scale
