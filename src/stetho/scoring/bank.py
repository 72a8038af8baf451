"""One normal bank, one back-end: standardise → k-NN / Gaussian / GMM → held-out z-norm.

The few-shot back-end for a single (machine, section, domain) bank of feature vectors::

    be = BankBackend(BackendConfig(kind="knn", k=1, standardise="std")).fit(bank)   # (N, D)
    z = be.score(test)            # (M,) z-scores: (raw - mean_held) / sd_held of the bank
    z_bank = be.loo_scores()      # (N,) each bank row scored as a new clip would be (z-scored)

**Held-out scores** (not in the paper; they carry the conformal threshold's promise). A new clip
is scored by everything fitted on the bank: the standardiser (mean, per-dimension scale or
Ledoit-Wolf whitening), the k-NN bank or density model. For the held-out score of a bank row to be
exchangeable with the score of a new normal clip, *all* of that is refitted without the row:

* banks of up to ``loo_refit_max`` rows: exact leave-one-out, each row scored by a standardiser
  and back-end fitted on the other N − 1 rows;
* larger banks: ``cv_folds``-fold cross-fitting (row i in fold ``i mod K``), each fold scored by
  a standardiser and back-end fitted on the other folds (a bank ``(K − 1)/K`` as large: slightly
  larger held-out scores, i.e. a slightly conservative threshold).

The z-norm (mean and standard deviation) is fitted on these held-out raw scores and applied to
held-out and new scores alike. Scores of new clips are those of the back-end fitted on all rows,
unchanged by any of this.

Cost: the diagonal standardiser's leave-one-out refit is vectorised (O(N² D), two matrix
products); the whitened Euclidean k-NN uses the Woodbury form of the Ledoit-Wolf inverse on the
Gram matrix (O(N² D) once, then O(N³) per left-out row, no D × D matrix); every other
combination (cosine, density back-ends) refits per fold. ``docs/fewshot.md`` has the timings.
Before this (stetho ≤ the 2026-12 ensemble), the standardiser and whitening were fitted on the
whole bank including the left-out row, which made held-out scores far smaller than those of new
normal clips in D ≫ N (whitened mn04: every normal clip flagged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from stetho.scoring.gaussian import DiagonalGMM, GaussianModel, lw_shrinkage_gram
from stetho.scoring.normalise import _STD_FLOOR, Standardiser, ZNorm
from stetho.utils.config import ConfigBase, ConfigError
from stetho.utils.errors import InputError

__all__ = ["BackendConfig", "BankBackend", "knn_distances"]


@dataclass
class BackendConfig(ConfigBase):
    """Settings of a few-shot back-end on one bank.

    Attributes:
        kind: ``"knn"`` (mean distance to the k nearest bank rows), ``"mahalanobis"``
            (Ledoit-Wolf Gaussian) or ``"gmm"`` (diagonal Gaussian mixture, negative
            log-likelihood).
        k: Neighbours for ``knn``.
        metric: ``"euclidean"`` or ``"cosine"`` for ``knn``.
        standardise: Feature-space normalisation fitted on the bank: ``"none"``, ``"std"``
            (per dimension) or ``"whiten"`` (Ledoit-Wolf).
        znorm: Divide scores by the statistics of the bank's held-out scores.
        gmm_components: Mixture components for ``gmm``.
        loo_refit_max: Largest bank whose held-out scores are exact leave-one-out refits;
            larger banks are cross-fitted with ``cv_folds`` folds.
        cv_folds: Folds of the cross-fitting of banks larger than ``loo_refit_max``.
    """

    kind: Literal["knn", "mahalanobis", "gmm"] = "knn"
    k: int = 1
    metric: Literal["euclidean", "cosine"] = "euclidean"
    standardise: Literal["none", "std", "whiten"] = "std"
    znorm: bool = True
    gmm_components: int = 2
    loo_refit_max: int = 200
    cv_folds: int = 10

    def __post_init__(self) -> None:
        if self.cv_folds < 2:
            raise ConfigError(f"backend cv_folds must be >= 2, got {self.cv_folds}")
        if self.k < 1:
            raise ConfigError(f"backend k must be >= 1, got {self.k}")
        if self.gmm_components < 1:
            raise ConfigError(f"gmm_components must be >= 1, got {self.gmm_components}")

    def label(self) -> str:
        """Short name, e.g. ``knn1-euclidean/std``."""
        core = f"knn{self.k}-{self.metric}" if self.kind == "knn" else self.kind
        return f"{core}/{self.standardise}"


def knn_distances(
    q: np.ndarray, bank: np.ndarray, k: int, metric: str, exclude_self: bool = False
) -> np.ndarray:
    """Mean distance (M,) of each query to its ``k`` nearest bank rows (float64, exact).

    With ``exclude_self`` the queries are the bank itself and row i skips entry i. Fewer than
    ``k`` available neighbours: the mean of those available (``inf`` when there are none).
    """
    a = np.asarray(q, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        dist = np.clip(1.0 - a @ b.T, 0.0, 2.0)
    else:
        sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2.0 * a @ b.T
        dist = np.sqrt(np.maximum(sq, 0.0))
    if exclude_self:
        np.fill_diagonal(dist, np.inf)
    kk = min(k, dist.shape[1] - (1 if exclude_self else 0))
    if kk < 1:
        return np.full(a.shape[0], np.inf)
    part = np.sort(dist, axis=1)[:, :kk]
    return part.mean(1)


class BankBackend:
    """Standardiser + back-end + z-norm for one bank (see the module docstring)."""

    def __init__(self, cfg: BackendConfig | None = None) -> None:
        self.cfg = cfg or BackendConfig()
        self.std = Standardiser(self.cfg.standardise)
        self.bank = np.zeros((0, 0))  # standardised bank rows
        self.model: GaussianModel | DiagonalGMM | None = None
        self.norm = ZNorm()
        self._loo_raw = np.zeros(0)
        self._raw: np.ndarray | None = None  # the bank's features as given (for refits)
        self._gram: _WhitenedGram | None = None

    def _new_model(self) -> GaussianModel | DiagonalGMM:
        if self.cfg.kind == "mahalanobis":
            return GaussianModel()
        return DiagonalGMM(components=self.cfg.gmm_components)

    def _fit_core(self, a: np.ndarray) -> BankBackend:
        """Standardiser and back-end on rows ``a`` (what scores new clips); no held-out scores."""
        self.std = Standardiser(self.cfg.standardise).fit(a)
        z = self.std(a)
        self.bank = z
        self.model = None if self.cfg.kind == "knn" else self._new_model().fit(z)
        return self

    def fit(self, x: np.ndarray) -> BankBackend:
        """Fit on the bank's features ``x`` (N, D), N >= 1."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"a bank needs a (N >= 1, D) feature array, got shape {a.shape}")
        self._fit_core(a)
        self._raw, self._gram = a, None
        self._loo_raw = self._held_out_raw(a)
        self.norm = ZNorm.fit(self._loo_raw) if self.cfg.znorm else ZNorm()
        return self

    # -- held-out scores ---------------------------------------------------------------------
    def folds(self, n: int | None = None) -> np.ndarray:
        """Fold of each bank row (N,): ``arange(N)`` (leave-one-out) or ``i mod cv_folds``."""
        n = self.bank.shape[0] if n is None else n
        if n <= self.cfg.loo_refit_max:
            return np.arange(n)
        return np.arange(n) % self.cfg.cv_folds

    def _raw_bank(self) -> np.ndarray:
        """The bank's features as given to :meth:`fit` (rebuilt from the standardised rows)."""
        if self._raw is None:
            assert self.std.mean is not None and self.std.transform is not None
            tr = self.std.transform
            rows = self.bank / tr if tr.ndim == 1 else np.linalg.solve(tr, self.bank.T).T
            self._raw = rows + self.std.mean
        return self._raw

    def _whitened(self) -> _WhitenedGram | None:
        """The Gram-matrix shortcut, where it applies (whitened Euclidean k-NN)."""
        cfg = self.cfg
        if cfg.kind != "knn" or cfg.metric != "euclidean" or cfg.standardise != "whiten":
            return None
        if self._gram is None:
            self._gram = _WhitenedGram(self._raw_bank())
        return self._gram

    def _refit_raw(self, rest: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Raw scores of features ``q`` by a standardiser and back-end fitted on bank rows ``rest``."""
        raw = self._raw_bank()
        core = BankBackend(self.cfg.replace(znorm=False))._fit_core(raw[rest])
        return core.raw_score(q)

    def _held_out_raw(self, a: np.ndarray) -> np.ndarray:
        n = a.shape[0]
        if n < 2:
            return np.full(n, np.inf)
        fold = self.folds(n)
        cfg = self.cfg
        exact = cfg.kind == "knn" and cfg.metric == "euclidean"
        if exact and cfg.standardise in ("none", "std") and n > 2 and fold.max() == n - 1:
            return _loo_knn_diagonal(a, cfg.k, cfg.standardise)
        out = np.empty(n)
        gram = self._whitened()
        for f in np.unique(fold):
            rows = np.flatnonzero(fold == f)
            rest = np.flatnonzero(fold != f)
            got = None if gram is None else gram.knn(rest, a[rows], self.cfg.k)
            out[rows] = self._refit_raw(rest, a[rows]) if got is None else got
        return out

    def raw_score(self, q: np.ndarray) -> np.ndarray:
        """Scores (M,) before z-normalisation."""
        z = self.std(q)
        if self.model is None:
            return knn_distances(z, self.bank, self.cfg.k, self.cfg.metric)
        return self.model.score(z)

    def score_without(self, q: np.ndarray, own: np.ndarray) -> np.ndarray:
        """z-normalised scores (M,) of ``q`` (M, D), row j scored without bank row ``own[j]``.

        For copies of bank clips (e.g. pseudo-anomalies made from them): row j is scored by the
        same refitted standardiser and back-end that gave bank row ``own[j]`` its held-out score
        (its leave-one-out or cross-fitting fold), so it compares with :meth:`loo_scores`.
        ``own[j] < 0`` leaves nothing out (the back-end fitted on every row).
        """
        own = np.asarray(own, dtype=np.int64).reshape(-1)
        q = np.asarray(q, dtype=np.float64)
        out = np.empty(q.shape[0])
        n = self.bank.shape[0]
        fold = self.folds(n)
        which = np.where(own >= 0, fold[np.clip(own, 0, max(n - 1, 0))], -1) if n else own
        for f in np.unique(which):
            rows = np.flatnonzero(which == f)
            rest = np.flatnonzero(fold != f)
            if f < 0 or rest.size == 0:
                out[rows] = self.raw_score(q[rows]) if f < 0 else np.inf
                continue
            gram = self._whitened()
            got = None if gram is None else gram.knn(rest, q[rows], self.cfg.k)
            out[rows] = self._refit_raw(rest, q[rows]) if got is None else got
        return self.norm(out)

    def score(self, q: np.ndarray) -> np.ndarray:
        """z-normalised scores (M,) of features ``q`` (M, D); higher = more anomalous."""
        return self.norm(self.raw_score(q))

    def loo_scores(self) -> np.ndarray:
        """z-normalised held-out scores (N,) of the bank's own rows (see the module docstring)."""
        return self.norm(self._loo_raw)

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild this back-end exactly (safetensors-ready after ``torch.from_numpy``)."""
        assert self.std.mean is not None and self.std.transform is not None
        out = {
            "std_mean": self.std.mean,
            "std_transform": self.std.transform,
            "bank": self.bank,
            "loo_raw": self._loo_raw,
            "norm": np.array([self.norm.mean, self.norm.scale]),
        }
        if self.model is not None:
            out.update({f"model_{k}": v for k, v in self.model.state().items()})
        return out

    @property
    def dim(self) -> int:
        """Feature size D the back-end takes (0 before fitting)."""
        return 0 if self.std.mean is None else int(np.asarray(self.std.mean).shape[0])

    def check_dim(self, expected: int, what: str = "the feature extractor") -> None:
        """Refuse a back-end fitted on features of another size than ``expected``.

        Raises:
            InputError: the sizes differ (the message names both).
        """
        if self.dim != int(expected):
            raise InputError(
                f"the bank holds {self.dim}-d features but {what} gives {int(expected)}-d ones: "
                "the bank belongs to another feature setting; refit it"
            )

    @classmethod
    def from_state(cls, cfg: BackendConfig, state: dict[str, np.ndarray]) -> BankBackend:
        """Rebuild from :meth:`state`.

        Raises:
            InputError: a missing array, arrays of inconsistent shapes, or NaN / infinite values
                (a NaN bank row would score every clip ``inf``); the message names the array
                (the caller adds the file).
        """
        arrays = _checked_state(cfg, state)
        be = cls(cfg)
        be.std = Standardiser(cfg.standardise, arrays["std_mean"], arrays["std_transform"])
        be.bank = arrays["bank"]
        be._loo_raw = arrays["loo_raw"]
        mean, scale = (float(v) for v in arrays["norm"])
        be.norm = ZNorm(mean, scale)
        model_state = {k[6:]: v for k, v in arrays.items() if k.startswith("model_")}
        if cfg.kind == "mahalanobis":
            be.model = GaussianModel.from_state(model_state)
        elif cfg.kind == "gmm":
            be.model = DiagonalGMM.from_state(model_state)
        return be


def _loo_knn_diagonal(a: np.ndarray, k: int, mode: str) -> np.ndarray:
    """Exact leave-one-out Euclidean k-NN distances with the diagonal standardiser refitted.

    Row i is scored with :class:`Standardiser` (``"none"`` or ``"std"``) fitted on the other rows,
    against those rows: the same numbers as a refit per row, in two (N, D) × (D, N) products.
    """
    n, d = a.shape
    c = a - a.mean(0)  # distances and standard deviations do not depend on the offset
    if mode == "none":
        w2 = np.ones((n, d))
    else:
        m = (c.sum(0)[None] - c) / (n - 1)  # (N, D) means without row i
        var = ((c**2).sum(0)[None] - c**2) / (n - 1) - m**2
        sd = np.sqrt(np.maximum(var, 0.0))
        med = np.median(sd, axis=1)
        floor = np.where((sd > 0).any(1), _STD_FLOOR * med, 1.0)
        w2 = 1.0 / np.maximum(sd, np.maximum(floor, 1e-12)[:, None]) ** 2
    c2 = c**2
    sq = (w2 * c2).sum(1)[:, None] - 2.0 * (w2 * c) @ c.T + w2 @ c2.T  # row i's metric
    np.fill_diagonal(sq, np.inf)
    dist = np.sqrt(np.maximum(sq, 0.0))
    kk = min(k, n - 1)
    return np.sort(dist, axis=1)[:, :kk].mean(1)


class _WhitenedGram:
    """Whitened Euclidean k-NN of a bank subset, from the Gram matrix (no D × D matrix).

    For rest rows R the Ledoit-Wolf covariance is ``Σ = a I + b Xcᵀ Xc`` (``Xc`` the rows of R
    centred on their mean), and the whitened squared distance of q to row r is
    ``(q − x_r)ᵀ Σ⁻¹ (q − x_r)`` with ``Σ⁻¹ = (I − Xcᵀ (a/b I + Xc Xcᵀ)⁻¹ Xc) / a`` (Woodbury).
    Same numbers as :class:`Standardiser` ``"whiten"`` refitted on R, up to rounding.
    """

    def __init__(self, raw: np.ndarray) -> None:
        self.offset = raw.mean(0)
        self.c = raw - self.offset
        self.gram = self.c @ self.c.T
        self.d = raw.shape[1]

    def knn(self, rest: np.ndarray, q: np.ndarray, k: int) -> np.ndarray | None:
        """Mean whitened distance (M,) of queries ``q`` (M, D) to their k nearest rows of ``rest``.

        ``None`` where the shortcut does not apply (no shrinkage: the covariance may be singular).
        """
        m = rest.size
        g = self.gram[np.ix_(rest, rest)]
        col = g.mean(0)  # x_r · μ_R
        gc = g - col[:, None] - col[None, :] + col.mean()  # centred Gram of R
        shrink, mu = lw_shrinkage_gram(gc, self.d)
        if m < 2 or mu <= 0.0:
            shrink, mu = 1.0, (mu if mu > 0 else 1.0)
        if not shrink > 1e-6:
            return None
        a_, b_ = shrink * mu, (1.0 - shrink) / m
        cq = np.asarray(q, dtype=np.float64) - self.offset
        qg = cq @ self.c[rest].T  # (M, m) q · x_r
        qq = (cq**2).sum(1)
        sq = qq[:, None] - 2.0 * qg + np.diag(g)[None]  # plain squared distances
        if b_ > 0:
            yq = qg - qg.mean(1, keepdims=True)  # (M, m): rows Xc q
            yr = g - col[None, :]  # (m, m): column r is Xc x_r
            mat = (a_ / b_) * np.eye(m) + gc
            sol_q = np.linalg.solve(mat, yq.T)  # (m, M)
            sol_r = np.linalg.solve(mat, yr)  # (m, m)
            quad = (
                np.einsum("ij,ji->i", yq, sol_q)[:, None]
                - 2.0 * yq @ sol_r
                + np.einsum("ij,ij->j", yr, sol_r)[None]
            )
            sq = sq - quad
        dist = np.sqrt(np.maximum(sq / a_, 0.0))
        kk = min(k, m)
        return np.sort(dist, axis=1)[:, :kk].mean(1)


_REQUIRED = ("std_mean", "std_transform", "bank", "loo_raw", "norm")
_MODEL_KEYS = {
    "mahalanobis": ("mean", "basis", "inner", "coef"),
    "gmm": ("weights", "means", "vars"),
}


def _checked_state(cfg: BackendConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of a saved back-end, checked: present, consistent shapes, finite values."""
    needed = [*_REQUIRED, *(f"model_{k}" for k in _MODEL_KEYS.get(cfg.kind, ()))]
    missing = [k for k in needed if k not in state]
    if missing:
        raise InputError(f"bank state lacks {missing} (kind {cfg.kind!r}); fit the bank again")
    out = {k: np.asarray(v) for k, v in state.items()}
    bank, mean, tr = out["bank"], out["std_mean"], out["std_transform"]
    if bank.ndim != 2 or mean.ndim != 1 or bank.shape[1] != mean.shape[0]:
        raise InputError(
            f"bank rows {bank.shape} do not match the standardiser's mean {mean.shape}: "
            "the bank state is damaged; fit it again"
        )
    if tr.shape not in ((mean.shape[0],), (mean.shape[0], mean.shape[0])):
        raise InputError(
            f"standardiser transform {tr.shape} does not fit {mean.shape[0]}-d features"
        )
    if out["norm"].shape != (2,):
        raise InputError(f"norm must hold (mean, scale), got shape {out['norm'].shape}")
    for name, arr in out.items():
        # leave-one-out scores may be inf (a one-row bank has no other row): NaN only there
        bad = np.isnan(arr) if name == "loo_raw" else ~np.isfinite(arr)
        if arr.dtype.kind == "f" and bad.any():
            where = ""
            if name == "bank":
                rows = np.flatnonzero(bad.any(axis=1))
                where = f" ({len(rows)} of {arr.shape[0]} rows, first: row {int(rows[0])})"
            raise InputError(
                f"bank state {name!r} holds NaN or infinite values{where}; such a bank scores "
                "every clip NaN or inf. The file is damaged: fit the bank again"
            )
    if not out["norm"][1] > 0:
        raise InputError(f"bank state 'norm' has scale {out['norm'][1]!r}; expected > 0")
    return out
