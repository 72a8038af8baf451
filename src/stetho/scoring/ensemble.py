"""Configuration of the few-shot ensemble and the combination of its members' scores.

An ensemble member is a feature (:class:`~stetho.backbones.features.FeatureConfig`) and a
back-end (:class:`~stetho.scoring.bank.BackendConfig`); member scores are z-scores normalised by
each bank's leave-one-out scores and combined by :func:`combine_scores`. The detector that
carries an ensemble is :class:`stetho.detector.ensemble.EnsembleDetector`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import log_ndtr

from stetho.backbones.features import FeatureConfig
from stetho.scoring.bank import BackendConfig
from stetho.scoring.selection import SelectionConfig
from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["COMBINATIONS", "EnsembleConfig", "MemberConfig", "combine_scores"]


#: Known ways to combine member scores (:func:`combine_scores`), each in plain words.
COMBINATIONS: dict[str, str] = {
    "mean": "the weighted mean of the members' z-scores.",
    "fisher": "Fisher's method: the weighted mean of -log p, p the Gaussian upper tail of each "
    "member's z-score, so a fault far out in one view keeps a high score although the other "
    "views do not see it.",
    "max": "the highest member z-score.",
    "min": "the lowest member z-score.",
}


@dataclass
class MemberConfig(ConfigBase):
    """One ensemble member: a feature and a back-end.

    Attributes:
        name: Unique name (reported in the choice summary).
        feature: Which backbone layers, pooled how.
        backend: Standardisation, back-end and score normalisation.
    """

    name: str = "logmel-stats"
    feature: FeatureConfig = field(default_factory=FeatureConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)


@dataclass
class EnsembleConfig(ConfigBase):
    """The training-free few-shot detector.

    Attributes:
        members: The candidate members (default: weight-free log-mel statistics).
        combine: ``"mean"`` (weighted mean of z-scores), ``"fisher"`` (weighted mean of
            ``-log p``, ``p`` the Gaussian upper tail of each member's z-score: Fisher's
            combination, :func:`combine_scores`), ``"max"`` or ``"min"``.
        selection: Label-free choice of members per machine/section.
        domain_banks: Separate source/target banks (min over them) when both are large enough.
        min_domain_bank: Smallest domain bank kept separate; smaller domains are pooled.
    """

    members: list[MemberConfig] = field(default_factory=lambda: [MemberConfig()])
    combine: Literal["mean", "fisher", "max", "min"] = "mean"
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    domain_banks: bool = True
    min_domain_bank: int = 3

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("ensemble.members must list at least one member")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ConfigError(f"ensemble member names must be unique, got {names}")
        if self.combine not in COMBINATIONS:
            raise ConfigError(
                f"ensemble.combine must be one of {list(COMBINATIONS)}, got {self.combine!r}"
            )


def combine_scores(scores: np.ndarray, weights: np.ndarray, how: str = "mean") -> np.ndarray:
    """Combine member z-scores ``(K, M)`` with weights ``(K,)`` into ``(M,)``.

    Members with weight 0 are ignored. ``mean`` is the weighted mean of the z-scores.
    ``fisher`` is the weighted mean of ``-log p_k``, ``p_k = 1 - Φ(z_k)`` the Gaussian upper
    tail of member k's z-score: Fisher's method (``-2 Σ log p``, here a weighted mean, the
    same order for equal weights) for tests whose evidence may show in one member only. A
    clip far out in one view keeps a high score (``-log p ≈ z²/2``) instead of being averaged
    with views that do not see it; within the normal range (``z ≲ 0``) it is close to the mean
    (``-log p ≈ log 2 + z·√(2/π)`` near 0). Not in the paper.
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    if not keep.any():
        raise ValueError("at least one member needs a positive weight")
    if how == "mean":
        return np.asarray((w[keep, None] * s[keep]).sum(0) / w[keep].sum())
    if how == "fisher":
        neg_log_p = -log_ndtr(-s[keep])  # -log(1 - Φ(z)), exact in the far tail
        return np.asarray((w[keep, None] * neg_log_p).sum(0) / w[keep].sum())
    if how == "max":
        return np.asarray(s[keep].max(0))
    if how == "min":
        return np.asarray(s[keep].min(0))
    raise ValueError(f"unknown combination {how!r}; use one of {', '.join(COMBINATIONS)}")
