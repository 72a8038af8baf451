"""Decision thresholds fitted on held-out anomaly scores of normal clips.

A clip is declared anomalous iff ``score > threshold``. Three rules (``ThresholdConfig.method``):

* ``"conformal"`` (default): split-conformal order statistic. With ``n`` held-out normal scores
  (leave-one-out scores of the bank) and a target false-alarm rate ``alpha``, the threshold is the
  ``k``-th smallest score, ``k = ceil((n + 1) * (1 - alpha))``. For exchangeable normal clips
  ``P(false alarm) <= alpha``, and ``>= alpha - 1 / (n + 1)`` for continuous scores. When
  ``k > n`` (``n < 1 / alpha - 1``) no finite threshold keeps the promise: the largest score is
  returned with ``achievable=False`` and the ``n`` that would be needed.
* ``"gamma"``: the DCASE baseline's 3-parameter gamma fit (protocol §3.4,
  ``scipy.stats.gamma.fit`` + ``ppf(quantile)``), **stabilised** (not in the DCASE baseline): the
  fitted value is clamped into ``[x_(k), x_(k+1))``, the gap of sorted scores at the conformal rank
  for ``alpha = 1 - quantile`` (``x_(n+1) = +inf``). The gamma tail only places the threshold
  inside that gap, or above the largest score when ``n`` is too small for ``alpha``.
* ``"gamma-dcase"``: the DCASE baseline's gamma fit exactly as the official code computes it
  (``gamma.ppf(quantile)``, unclamped; the empirical ``quantile`` when the fit is degenerate).
  The autoencoder baseline uses it to reproduce the published baseline; it is *not* stable under
  rounding-level changes of the scores (see below) and promises no false-alarm rate.
* ``"percentile"``: the empirical ``quantile`` (linear interpolation, ``numpy.quantile``); no
  finite-sample promise.

Stability. Rounding-level changes of the scores (a different BLAS, faiss vs torch search) must
not move a threshold across the clips it was fitted on. For well-separated scores this can only
hold if the number of held-out clips the threshold keeps normal depends on ``n`` and ``alpha``
alone (``docs/thresholds.md``): order statistics satisfy it by construction; the raw gamma fit
does not (a 1.2e-7 change of two scores moved it below 4 of 6 clips), hence the clamp.

:func:`fit_threshold_info` returns a :class:`ThresholdFit` (value, alpha, n, rank, whether the
rate is achievable, the clips needed, the 90 % band of the actual false-alarm rate) and refuses
too few or degenerate scores with an :class:`~stetho.utils.errors.InputError`;
:func:`fit_threshold` is its lenient float-valued form for existing callers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from stetho.data.names import Key, as_key
from stetho.utils.config import ConfigBase
from stetho.utils.errors import InputError

__all__ = [
    "RATE_BAND_LEVELS",
    "ThresholdConfig",
    "ThresholdFit",
    "conformal_rank",
    "decide",
    "decide_for_key",
    "fit_threshold",
    "fit_threshold_info",
    "gamma_fit_threshold",
    "min_clips_below_maximum",
    "min_clips_for",
    "rate_band",
]

logger = logging.getLogger(__name__)

ThresholdMethod = Literal["conformal", "gamma", "gamma-dcase", "percentile"]

#: Lower and upper probability of the reported band of the actual false-alarm rate (a 90 % band).
RATE_BAND_LEVELS = (0.05, 0.95)
#: Scores whose spread is at most this fraction of their largest magnitude are degenerate: their
#: order is rounding noise (identical or silent recordings).
DEGENERATE_RTOL = 1e-6


@dataclass
class ThresholdConfig(ConfigBase):
    """How the per-(machine, section) decision threshold is fitted.

    ``false_alarm`` governs ``"conformal"``; ``quantile`` governs ``"gamma"`` and
    ``"percentile"``. They describe the same thing from two sides: ``quantile = 1 - alpha``.
    :meth:`with_false_alarm` sets both consistently; :attr:`alpha` is the one in effect.

    Attributes:
        method: ``"conformal"`` (order statistic ``ceil((n+1)(1-alpha))`` of the held-out
            scores, default), ``"gamma"`` (DCASE baseline gamma fit + ``ppf(quantile)``, clamped
            into the gap at the conformal rank) or ``"percentile"`` (empirical ``quantile``).
        quantile: Fraction of normal scores expected below the threshold, for gamma and
            percentile (DCASE baseline 0.9).
        false_alarm: Target false-alarm rate ``alpha`` of the conformal rule (default 0.1: at
            most 10 false alarms per 100 normal clips on average; a choice, not in the paper).
    """

    method: ThresholdMethod = "conformal"
    quantile: float = 0.9
    false_alarm: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"ThresholdConfig.quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 < self.false_alarm < 1.0:
            raise ValueError(
                f"ThresholdConfig.false_alarm must be in (0, 1), got {self.false_alarm}"
            )

    @property
    def alpha(self) -> float:
        """Target false-alarm rate of the method in effect (``1 - quantile`` for gamma/percentile)."""
        return float(_alpha_of(self))

    def with_false_alarm(self, alpha: float) -> ThresholdConfig:
        """A copy with ``false_alarm = alpha`` and ``quantile = 1 - alpha`` (any method)."""
        return dataclasses.replace(
            self, false_alarm=float(alpha), quantile=float(1 - _exact(float(alpha)))
        )


@dataclass(frozen=True)
class ThresholdFit:
    """A fitted threshold and what it promises.

    Attributes:
        value: The threshold; decide ``score > value``.
        method: The rule that produced it.
        alpha: Target false-alarm rate (``false_alarm``, or ``1 - quantile`` for gamma/percentile).
        n: Number of finite held-out scores it was fitted on.
        rank: Held-out scores ``<= value`` (the clips it keeps normal); ``value`` lies in
            ``[x_(rank), x_(rank+1))`` of the sorted scores.
        achievable: True when the finite-sample promise ``P(false alarm) <= alpha`` holds for
            exchangeable normal clips (``value >= x_(k)`` with ``k = ceil((n+1)(1-alpha)) <= n``).
        n_needed: Smallest number of held-out clips for which the conformal rule can promise
            ``alpha`` (``ceil(1/alpha - 1)``).
        rate_band: 5 % and 95 % quantiles of the actual false-alarm rate on new normal clips
            (Beta distribution of order-statistic coverage, :func:`rate_band`; ties make it
            conservative).
    """

    value: float
    method: str
    alpha: float
    n: int
    rank: int
    achievable: bool
    n_needed: int
    rate_band: tuple[float, float]

    @property
    def expected_rate(self) -> float:
        """Mean false-alarm rate of a threshold at ``x_(rank)``: ``(n + 1 - rank) / (n + 1)``.

        An upper bound of the mean when ``value`` lies above ``x_(rank)``.
        """
        return (self.n + 1 - self.rank) / (self.n + 1)

    @property
    def advice(self) -> str | None:
        """What to do when the promise does not hold (None when it does)."""
        if self.achievable:
            return None
        if self.n < self.n_needed:
            return (
                f"with {self.n} normal clips the smallest false-alarm rate that can be promised is "
                f"1/{self.n + 1} = {100 / (self.n + 1):.0f} %; add {self.n_needed - self.n} "
                f"clip(s) (n >= {self.n_needed}) for a false-alarm rate of {self.alpha:g}"
            )
        return (
            f"the {self.method} threshold keeps {self.rank} of {self.n} held-out normals normal, "
            f"fewer than the {conformal_rank(self.n, self.alpha)} needed to promise a false-alarm "
            f"rate of {self.alpha:g}; use method 'conformal' for a guaranteed rate"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``value`` may be a float ``inf`` only if set so by a caller)."""
        d = dataclasses.asdict(self)
        d["rate_band"] = list(self.rate_band)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThresholdFit:
        """Rebuild from :meth:`to_dict`."""
        lo, hi = d["rate_band"]
        return cls(
            value=float(d["value"]),
            method=str(d["method"]),
            alpha=float(d["alpha"]),
            n=int(d["n"]),
            rank=int(d["rank"]),
            achievable=bool(d["achievable"]),
            n_needed=int(d["n_needed"]),
            rate_band=(float(lo), float(hi)),
        )


def _exact(x: float) -> Fraction:
    """The decimal a user typed (``0.1`` is 1/10, not the nearest binary float)."""
    return Fraction(repr(float(x)))


def _alpha_of(cfg: ThresholdConfig) -> Fraction:
    return _exact(cfg.false_alarm) if cfg.method == "conformal" else 1 - _exact(cfg.quantile)


def _rank_for(n: int, alpha: Fraction) -> int:
    """``ceil((n + 1)(1 - alpha))`` in exact arithmetic (may exceed ``n``)."""
    return math.ceil((n + 1) * (1 - alpha))


def conformal_rank(n: int, alpha: float) -> int:
    """1-based rank ``k = ceil((n + 1)(1 - alpha))`` of the conformal threshold (``> n``: none).

    Exact for decimal ``alpha`` (``0.1`` is treated as 1/10).
    """
    return _rank_for(int(n), _exact(alpha))


def _min_clips(alpha: Fraction) -> int:
    return max(1, math.ceil(1 / alpha - 1))


def min_clips_below_maximum(alpha: float) -> int:
    """Fewest held-out normal clips whose conformal threshold lies *below* the largest of them.

    With fewer, the rank ``ceil((n + 1)(1 - alpha))`` is ``n``: the threshold is the largest
    held-out score and only clips beyond every normal recording so far raise an alarm (fewer
    faults caught). ``ceil(2/alpha - 1)``: 19 for 0.1, 39 for 0.05.
    """
    a = _exact(alpha)
    n = _min_clips(a)
    while _rank_for(n, a) > n - 1:
        n += 1
    return n


def min_clips_for(alpha: float) -> int:
    """Fewest held-out normal clips for which the conformal rule can promise ``alpha``.

    ``ceil(1/alpha - 1)``: 9 for 0.1, 19 for 0.05, 99 for 0.01.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return _min_clips(_exact(alpha))


def rate_band(n: int, rank: int, *, at_rank: bool = False) -> tuple[float, float]:
    """90 % band of the false-alarm rate on new normals of a threshold fitted on ``n`` scores.

    For continuous exchangeable scores the false-alarm rate of the order statistic ``x_(j)`` is
    ``Beta(n + 1 - j, j)`` distributed. With ``at_rank`` the threshold is ``x_(rank)`` itself and
    the band is that distribution's 5 % and 95 % quantiles; otherwise it lies somewhere in
    ``[x_(rank), x_(rank+1))`` and the band spans the 5 % quantile at ``j = rank + 1`` to the 95 %
    quantile at ``j = rank`` (``x_(0) = -inf``, ``x_(n+1) = +inf``).
    """
    from scipy import stats

    q_lo, q_hi = RATE_BAND_LEVELS
    j_lo = rank if at_rank else rank + 1
    lo = float(stats.beta.ppf(q_lo, n + 1 - j_lo, j_lo)) if j_lo <= n else 0.0
    hi = float(stats.beta.ppf(q_hi, n + 1 - rank, rank)) if rank >= 1 else 1.0
    return lo, hi


def gamma_fit_threshold(scores: np.ndarray, quantile: float) -> float | None:
    """The DCASE baseline threshold: ``gamma.ppf(quantile, *gamma.fit(scores))``.

    Fitted on the sorted scores, so that the order of the clips does not change the optimiser's
    result (it does by ~1e-11 otherwise). Not stabilised (see the module docstring); None when the
    fit is degenerate (fewer than three distinct values), fails or is not finite.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    if np.unique(x).size < 3:
        return None
    from scipy import stats

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            shape, loc, scale = stats.gamma.fit(x)
            threshold = float(stats.gamma.ppf(quantile, shape, loc=loc, scale=scale))
    except (ValueError, RuntimeError, FloatingPointError) as err:
        logger.warning("gamma threshold fit failed (%s)", err)
        return None
    return threshold if np.isfinite(threshold) else None


def _finite_scores(scores: np.ndarray | Sequence[float]) -> tuple[np.ndarray, int]:
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = x[np.isfinite(x)]
    if 0 < finite.size < x.size:
        logger.warning("threshold fit ignores %d non-finite score(s)", x.size - finite.size)
    return finite, x.size


def _is_degenerate(finite: np.ndarray) -> bool:
    spread = float(finite.max() - finite.min())
    return spread <= DEGENERATE_RTOL * float(np.abs(finite).max())


def _check_scores(finite: np.ndarray, total: int) -> None:
    """Raise InputError for fewer than 2 finite scores or degenerate (identical) ones."""
    if finite.size < 2:
        raise InputError(
            f"cannot fit a threshold: {finite.size} of the {total} held-out score(s) are finite, "
            "at least 2 are needed (a bank of one clip has no leave-one-out score); record more "
            "normal clips of this machine and section"
        )
    if _is_degenerate(finite):
        raise InputError(
            f"cannot fit a threshold: all {finite.size} held-out scores are identical "
            f"({float(np.median(finite)):.6g}): the normal recordings are degenerate (identical "
            "copies or silence); record the machine running, with its real sound"
        )


def _gamma_in_gap(s: np.ndarray, k: int, quantile: float) -> float:
    """Gamma ppf clamped into ``[x_(k), x_(k+1))`` of the sorted scores ``s`` (1-based k)."""
    n = s.size
    lo = float(s[min(k, n) - 1])
    hi = float(s[k]) if k < n else math.inf
    fitted = gamma_fit_threshold(s, quantile)
    if fitted is None:
        logger.warning(
            "gamma threshold fit is degenerate or failed (%d distinct score value(s)); using "
            "the conformal order statistic instead",
            np.unique(s).size,
        )
        return lo
    if fitted < lo:
        return lo
    if fitted >= hi:
        return float(np.nextafter(hi, -math.inf)) if hi > lo else lo
    return fitted


def fit_threshold_info(
    scores: np.ndarray | Sequence[float], cfg: ThresholdConfig | None = None
) -> ThresholdFit:
    """Fit a decision threshold on held-out anomaly scores of normal clips, with its promise.

    Non-finite scores are ignored (with a warning).

    Args:
        scores: Held-out (leave-one-out) anomaly scores (N,) of normal clips of one key.
        cfg: Method and target rate (default: conformal, ``false_alarm=0.1``).

    Returns:
        The :class:`ThresholdFit`; decide ``score > fit.value``.

    Raises:
        InputError: fewer than 2 finite scores, or all of them identical (degenerate
            recordings: copies or silence).
    """
    cfg = cfg or ThresholdConfig()
    finite, total = _finite_scores(scores)
    _check_scores(finite, total)
    s = np.sort(finite)
    n = int(s.size)
    alpha = _alpha_of(cfg)
    k = _rank_for(n, alpha)
    if cfg.method == "conformal":
        value = float(s[min(k, n) - 1])
    elif cfg.method == "gamma":
        value = _gamma_in_gap(s, k, cfg.quantile)
    elif cfg.method == "gamma-dcase":  # the official baseline's value, unclamped
        fitted = gamma_fit_threshold(s, cfg.quantile)
        value = float(np.quantile(s, cfg.quantile)) if fitted is None else float(fitted)
    else:
        value = float(np.quantile(s, cfg.quantile))
    rank = int(np.searchsorted(s, value, side="right"))
    return ThresholdFit(
        value=value,
        method=cfg.method,
        alpha=float(alpha),
        n=n,
        rank=rank,
        achievable=bool(k <= n and value >= s[k - 1]),
        n_needed=_min_clips(alpha),
        rate_band=rate_band(n, rank, at_rank=rank >= 1 and value == s[rank - 1]),
    )


def fit_threshold(
    scores: np.ndarray | Sequence[float], cfg: ThresholdConfig | None = None
) -> float:
    """Fit a decision threshold on anomaly scores of normal clips (lenient float form).

    The value of :func:`fit_threshold_info`, except that a single finite score or degenerate
    (identical) scores return the largest score with a warning instead of raising; callers that
    must refuse such input (``stetho calibrate``) use :func:`fit_threshold_info`. A rate that
    cannot be promised with this many scores is logged as a warning.

    Args:
        scores: Held-out anomaly scores (N,) of normal clips.
        cfg: Method and target rate.

    Returns:
        The threshold; decide ``score > threshold``.

    Raises:
        InputError: when there is no finite score (a ``ValueError``).
    """
    cfg = cfg or ThresholdConfig()
    finite, total = _finite_scores(scores)
    if finite.size == 0:
        raise InputError(f"cannot fit a threshold: none of the {total} scores is finite")
    if finite.size == 1 or _is_degenerate(finite):
        logger.warning(
            "threshold fit is degenerate (%d score(s), %d distinct value(s)); using the largest "
            "score %.6g",
            finite.size,
            np.unique(finite).size,
            float(finite.max()),
        )
        return float(finite.max())
    fit = fit_threshold_info(finite, cfg)
    if fit.advice is not None and cfg.method != "percentile":
        logger.warning("threshold: %s", fit.advice)
    return fit.value


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
