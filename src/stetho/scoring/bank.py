"""One normal bank, one back-end: standardise → k-NN / Gaussian / GMM → leave-one-out z-norm.

The few-shot back-end for a single (machine, section, domain) bank of feature vectors::

    be = BankBackend(BackendConfig(kind="knn", k=1, standardise="std")).fit(bank)   # (N, D)
    z = be.score(test)            # (M,) z-scores: (raw - mean_LOO) / sd_LOO of the bank
    z_bank = be.loo_scores()      # (N,) each bank row scored without itself (z-scored)

Leave-one-out scores are computed with the row removed from the k-NN search, or with the density
model refitted without it (banks up to ``loo_refit_max`` rows; larger banks use the in-sample
score, which matters little there). The standardiser is fitted once on the whole bank (not in
the paper; a refit per left-out row changes little and costs D² per row for whitening).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from stetho.scoring.gaussian import DiagonalGMM, GaussianModel
from stetho.scoring.normalise import Standardiser, ZNorm
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
        znorm: Divide scores by the statistics of the bank's leave-one-out scores.
        gmm_components: Mixture components for ``gmm``.
        loo_refit_max: Largest bank whose density model is refitted per left-out row.
    """

    kind: Literal["knn", "mahalanobis", "gmm"] = "knn"
    k: int = 1
    metric: Literal["euclidean", "cosine"] = "euclidean"
    standardise: Literal["none", "std", "whiten"] = "std"
    znorm: bool = True
    gmm_components: int = 2
    loo_refit_max: int = 200

    def __post_init__(self) -> None:
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
        self.bank = np.zeros((0, 0))  # standardised bank rows (knn) or raw rows (density refits)
        self.model: GaussianModel | DiagonalGMM | None = None
        self.norm = ZNorm()
        self._loo_raw = np.zeros(0)

    def _new_model(self) -> GaussianModel | DiagonalGMM:
        if self.cfg.kind == "mahalanobis":
            return GaussianModel()
        return DiagonalGMM(components=self.cfg.gmm_components)

    def fit(self, x: np.ndarray) -> BankBackend:
        """Fit on the bank's features ``x`` (N, D), N >= 1."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"a bank needs a (N >= 1, D) feature array, got shape {a.shape}")
        self.std = Standardiser(self.cfg.standardise).fit(a)
        z = self.std(a)
        self.bank = z
        if self.cfg.kind == "knn":
            self.model = None
            self._loo_raw = knn_distances(z, z, self.cfg.k, self.cfg.metric, exclude_self=True)
        else:
            self.model = self._new_model().fit(z)
            self._loo_raw = self._density_loo(z)
        self.norm = ZNorm.fit(self._loo_raw) if self.cfg.znorm else ZNorm()
        return self

    def _density_loo(self, z: np.ndarray) -> np.ndarray:
        n = z.shape[0]
        assert self.model is not None
        if n < 2:
            return np.full(n, np.inf)
        if n > self.cfg.loo_refit_max:
            return self.model.score(z)
        out = np.empty(n)
        for i in range(n):
            rest = np.delete(z, i, axis=0)
            out[i] = self._new_model().fit(rest).score(z[i : i + 1])[0]
        return out

    def raw_score(self, q: np.ndarray) -> np.ndarray:
        """Scores (M,) before z-normalisation."""
        z = self.std(q)
        if self.model is None:
            return knn_distances(z, self.bank, self.cfg.k, self.cfg.metric)
        return self.model.score(z)

    def score_without(self, q: np.ndarray, own: np.ndarray) -> np.ndarray:
        """z-normalised scores (M,) of ``q`` (M, D), row j scored with bank row ``own[j]`` left out.

        For copies of bank clips (e.g. pseudo-anomalies made from them), comparable with
        :meth:`loo_scores`. ``own[j] < 0`` leaves nothing out.
        """
        own = np.asarray(own, dtype=np.int64).reshape(-1)
        z = self.std(q)
        out = np.empty(z.shape[0])
        for i in np.unique(own):
            rows = np.flatnonzero(own == i)
            keep = np.arange(self.bank.shape[0]) != i
            if self.model is None:
                out[rows] = knn_distances(z[rows], self.bank[keep], self.cfg.k, self.cfg.metric)
            elif i < 0 or self.bank.shape[0] > self.cfg.loo_refit_max or keep.sum() < 1:
                out[rows] = self.model.score(z[rows])
            else:
                out[rows] = self._new_model().fit(self.bank[keep]).score(z[rows])
        return self.norm(out)

    def score(self, q: np.ndarray) -> np.ndarray:
        """z-normalised scores (M,) of features ``q`` (M, D); higher = more anomalous."""
        return self.norm(self.raw_score(q))

    def loo_scores(self) -> np.ndarray:
        """z-normalised leave-one-out scores (N,) of the bank's own rows."""
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
