"""Label-free choice of ensemble members per machine: leave-one-out normals vs pseudo-anomalies.

A user has normal clips only. For each candidate member (feature + back-end) this module measures
how well it separates the bank's own clips, each scored leave-one-out, from *pseudo-anomalies*:
copies of the same bank clips with a small synthetic fault (an added tone, clicks, a spectral
notch, a speed/pitch shift). The proxy AUC of a member is the mean over the fault kinds.

Rule (not in the paper): a member is dropped only when it is clearly blind to faults the others
see — its proxy AUC is more than ``tolerance`` *and* more than two standard errors (Hanley-McNeil,
from the numbers of held-out normals and pseudo-anomalies) below the best member's. When the proxy
saturates (every member at ``saturation`` or above, as the literature reports for pretrained
embeddings) it cannot rank the members and all are kept. Kept members get equal weights (plain
fusion of normalised scores, the documented robust choice). Banks smaller than ``min_bank`` keep
all members (too little evidence). The normals are the bank's *held-out* scores (each clip scored
with everything refitted without it, :mod:`stetho.scoring.bank`): with the standardiser fitted on
the clip itself, whitened members' normals looked far closer than any new clip, and their proxy
AUC saturated at 0.98-1.00 for that reason alone.

``weighting="robust"`` (not in the paper) needs no pseudo-anomalies: every member is kept and
weighted by ``1 / MAD`` of its leave-one-out z-scores, i.e. the mean fusion of *robust* z-scores
(median/MAD; the median shift is the same for every clip of a key and changes no ranking). A
member whose held-out normals are consistent (small MAD) counts more than one where a few
normals look far away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stetho.utils.config import ConfigBase, ConfigError

__all__ = [
    "PSEUDO_KINDS",
    "SelectionConfig",
    "auc_se",
    "choose_members",
    "pseudo_anomaly",
    "rank_auc",
]


@dataclass
class SelectionConfig(ConfigBase):
    """Settings of the label-free member choice.

    Attributes:
        enabled: Choose members per machine/section (``False``: keep all, equal weights).
        kinds: Pseudo-anomaly kinds (see :data:`PSEUDO_KINDS`).
        tolerance: Keep members whose proxy AUC is at least ``best - tolerance`` (or within two
            standard errors of the best).
        saturation: When every member's proxy AUC is at least this, all are kept (the proxy
            cannot rank them).
        min_bank: Smallest bank on which members are dropped.
        max_clips: At most this many bank clips are perturbed (evenly spread; bounds the cost).
        seed: Seed of the perturbations.
        weighting: ``"proxy"`` (keep members within ``tolerance`` of the best proxy AUC, equal
            weights) or ``"robust"`` (keep all, weights ∝ 1 / MAD of the leave-one-out
            z-scores; no pseudo-anomalies needed).
    """

    enabled: bool = True
    kinds: list[str] = field(default_factory=lambda: ["tone", "clicks", "notch", "speed"])
    tolerance: float = 0.05
    saturation: float = 0.95
    min_bank: int = 4
    max_clips: int = 16
    seed: int = 0
    weighting: Literal["proxy", "robust"] = "proxy"

    def __post_init__(self) -> None:
        if self.weighting not in ("proxy", "robust"):
            raise ConfigError(
                f"selection.weighting must be 'proxy' or 'robust', got {self.weighting!r}"
            )
        unknown = sorted(set(self.kinds) - set(PSEUDO_KINDS))
        if unknown:
            raise ConfigError(
                f"unknown pseudo-anomaly kinds {unknown}; known: {list(PSEUDO_KINDS)}"
            )
        if not 0.5 <= self.saturation <= 1.0:
            raise ConfigError(f"selection.saturation must be in [0.5, 1], got {self.saturation}")
        if not 0.0 <= self.tolerance <= 1.0:
            raise ConfigError(f"selection.tolerance must be in [0, 1], got {self.tolerance}")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def _tone(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    freq = float(np.exp(rng.uniform(np.log(300.0), np.log(min(6000.0, 0.4 * sr)))))
    t = np.arange(x.size) / sr
    amp = _rms(x) * 10 ** (-12 / 20) * np.sqrt(2.0)  # a tone 12 dB below the clip's RMS
    return x + amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _clicks(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    y = x.astype(np.float64).copy()
    n_burst = max(1, round(4 * x.size / sr))  # 4 per second
    length = max(1, int(0.002 * sr))
    env = np.exp(-np.arange(length) / (0.3 * length))
    for start in rng.integers(0, max(1, x.size - length), size=n_burst):
        y[start : start + length] += 4 * _rms(x) * env * rng.standard_normal(length)
    return y


def _notch(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    centre = float(np.exp(rng.uniform(np.log(300.0), np.log(0.35 * sr))))
    lo, hi = centre * 2 ** (-1 / 4), centre * 2 ** (1 / 4)  # half an octave removed
    spec = np.fft.rfft(x.astype(np.float64))
    f = np.fft.rfftfreq(x.size, 1.0 / sr)
    spec[(f >= lo) & (f <= hi)] = 0.0
    return np.fft.irfft(spec, n=x.size)


def _speed(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    factor = 1.0 + float(rng.choice([-1.0, 1.0])) * 0.03  # ±3 % speed (and pitch)
    pos = np.arange(x.size) * factor
    return np.interp(np.mod(pos, x.size - 1), np.arange(x.size), x.astype(np.float64))


#: Pseudo-anomaly generators ``f(wave, sample_rate, rng) -> wave`` (same length).
PSEUDO_KINDS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "tone": _tone,
    "clicks": _clicks,
    "notch": _notch,
    "speed": _speed,
}


def pseudo_anomaly(wave: np.ndarray, sr: int, kind: str, seed: int = 0) -> np.ndarray:
    """A copy of ``wave`` with a synthetic fault of ``kind`` (float32, same length)."""
    if kind not in PSEUDO_KINDS:
        raise ValueError(f"unknown pseudo-anomaly kind {kind!r}; known: {list(PSEUDO_KINDS)}")
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    y = PSEUDO_KINDS[kind](x, sr, np.random.default_rng(seed))
    return np.asarray(y, dtype=np.float32)


def rank_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(positive > negative) + ½ P(tie) over all pairs (the Mann-Whitney AUC)."""
    neg = np.asarray(negatives, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives, dtype=np.float64).reshape(-1)
    if neg.size == 0 or pos.size == 0:
        raise ValueError("rank_auc needs at least one score of each class")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def choose_members(
    names: Sequence[str],
    loo: Sequence[np.ndarray],
    pseudo: Sequence[dict[str, np.ndarray]],
    cfg: SelectionConfig,
) -> dict[str, object]:
    """Choose members of one bank from their proxy AUCs.

    Args:
        names: Member names.
        loo: Per member, the bank's leave-one-out scores (N,).
        pseudo: Per member, ``{kind: scores of the perturbed bank clips}``.
        cfg: Selection settings.

    Returns:
        ``{"weights": {name: w}, "proxy_auc": {name: {kind: auc, "mean": auc}}, "reason": str}``
        (JSON-ready); weights sum to 1.
    """
    proxy: dict[str, dict[str, float]] = {}
    for name, neg, by_kind in zip(names, loo, pseudo):
        finite = np.asarray(neg)[np.isfinite(neg)]
        per = {k: rank_auc(finite, v) for k, v in by_kind.items() if finite.size and len(v)}
        if per:
            per["mean"] = float(np.mean(list(per.values())))
        proxy[name] = per
    n_bank = min((int(np.isfinite(v).sum()) for v in loo), default=0)
    means = {n: p.get("mean") for n, p in proxy.items()}
    if cfg.enabled and cfg.weighting == "robust" and len(names) > 1:
        return {"weights": _robust_weights(names, loo), "proxy_auc": proxy,
                "reason": _ROBUST_REASON.format(n=n_bank)}  # fmt: skip
    kept = list(names)
    if not cfg.enabled:
        reason = "no label-free choice (selection disabled): every member kept with equal weight"
    elif len(names) < 2:
        reason = f"one member on a bank of {n_bank} clip(s): nothing to choose"
    elif n_bank < cfg.min_bank:
        reason = f"bank of {n_bank} clip(s) < {cfg.min_bank}: all members kept, equal weights"
    elif any(m is None for m in means.values()):
        missing = ", ".join(n for n, m in means.items() if m is None)
        reason = (
            f"no pseudo-anomaly scores for {missing} (bank of {n_bank} clip(s)): all members "
            "kept, equal weights"
        )
    elif min(float(m or 0.0) for m in means.values()) >= cfg.saturation:
        low = min(float(m or 0.0) for m in means.values())
        reason = (
            f"proxy AUC saturated (every member >= {cfg.saturation}, lowest {low:.3f}): it cannot "
            "rank the members; all kept, equal weights"
        )
    else:
        kept, reason = _kept_by_proxy(names, loo, pseudo, means, cfg)
    weights = {n: (1.0 / len(kept) if n in kept else 0.0) for n in names}
    return {"weights": weights, "proxy_auc": proxy, "reason": reason}


def auc_se(auc: float, n_neg: int, n_pos: int) -> float:
    """Hanley-McNeil (1982) standard error of an AUC on ``n_neg`` negatives, ``n_pos`` positives."""
    a = min(max(float(auc), 1e-9), 1.0 - 1e-9)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / max(
        n_pos * n_neg, 1
    )
    return float(np.sqrt(max(var, 0.0)))


def _kept_by_proxy(
    names: Sequence[str],
    loo: Sequence[np.ndarray],
    pseudo: Sequence[dict[str, np.ndarray]],
    means: dict[str, float | None],
    cfg: SelectionConfig,
) -> tuple[list[str], str]:
    """Members not clearly below the best on the proxy (tolerance and two standard errors)."""
    se: dict[str, float] = {}
    for name, neg, by_kind in zip(names, loo, pseudo):
        n_neg = int(np.isfinite(neg).sum())
        n_pos = min((len(v) for v in by_kind.values()), default=1)
        se[name] = auc_se(float(means[name] or 0.0), n_neg, n_pos)
    best_name = max(names, key=lambda n: float(means[n] or 0.0))
    best = float(means[best_name] or 0.0)

    def gap_allowed(n: str) -> float:
        return max(cfg.tolerance, 2.0 * float(np.hypot(se[n], se[best_name])))

    kept = [n for n in names if float(means[n] or 0.0) >= best - gap_allowed(n)]
    dropped = [n for n in names if n not in kept]
    reason = (
        f"proxy AUC (held-out normals vs pseudo-anomalies) best {best:.3f}; kept members within "
        f"{cfg.tolerance} or 2 standard errors of it"
        + (f"; dropped {', '.join(dropped)}" if dropped else "; none dropped")
    )
    return kept, reason


_ROBUST_REASON = (
    "robust weighting on a bank of {n} clip(s): every member kept, weight ∝ 1/MAD of its "
    "leave-one-out z-scores (no pseudo-anomalies)"
)


def _robust_weights(names: Sequence[str], loo: Sequence[np.ndarray]) -> dict[str, float]:
    """Weights ∝ 1 / MAD of each member's finite leave-one-out scores (sum 1).

    A member with fewer than 3 finite scores, or a MAD of 0, gets the median weight of the
    others (equal weights when none is defined).
    """
    inv: list[float | None] = []
    for v in loo:
        a = np.asarray(v, dtype=np.float64)
        a = a[np.isfinite(a)]
        mad = float(np.median(np.abs(a - np.median(a)))) * 1.4826 if a.size >= 3 else 0.0
        inv.append(1.0 / mad if mad > 1e-12 else None)
    known = [x for x in inv if x is not None]
    fill = float(np.median(known)) if known else 1.0
    w = np.array([fill if x is None else x for x in inv])
    return {n: float(x) for n, x in zip(names, w / w.sum())}
