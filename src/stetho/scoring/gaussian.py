"""Density back-ends on a small bank: Ledoit-Wolf Gaussian (Mahalanobis) and a diagonal GMM.

The Gaussian back-end is the one-bank form of the DCASE baseline's selective Mahalanobis score
(one mean and covariance per domain bank; the detector takes the minimum over domains). With tens
of clips the sample covariance is singular, so it is shrunk (:func:`~stetho.scoring.normalise.
ledoit_wolf`). Scores are plain float64 arrays, higher = more anomalous.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stetho.scoring.normalise import ledoit_wolf

__all__ = ["DiagonalGMM", "GaussianModel", "lw_shrinkage_gram"]


class GaussianModel:
    """Mahalanobis distance to a bank's mean under its Ledoit-Wolf-shrunk covariance.

    ``Σ = a I + b Xcᵀ Xc`` (``Xc`` the centred bank, ``a = s μ``, ``b = (1 - s) / N``). For banks
    smaller than the dimension the inverse is applied through the Woodbury identity with an
    N × N matrix, so a fit costs O(N² D) instead of O(D³).
    """

    def __init__(self) -> None:
        self.mean = np.zeros(0)
        self.basis = np.zeros((0, 0))  # Woodbury: (N, D) centred bank; dense: (D, D) precision
        self.inner = np.zeros((0, 0))  # Woodbury: (N, N); dense: empty
        self.coef = np.zeros(2)  # (a, b)
        self.shrinkage = 0.0

    def fit(self, x: np.ndarray) -> GaussianModel:
        """Fit on bank features ``x`` (N, D)."""
        a_ = np.asarray(x, dtype=np.float64)
        n, d = a_.shape
        cov, self.shrinkage = ledoit_wolf(a_) if n >= d else (None, 0.0)
        self.mean = a_.mean(0)
        xc = a_ - self.mean
        if n >= d:
            assert cov is not None
            self.basis = np.linalg.inv(cov)
            self.basis = 0.5 * (self.basis + self.basis.T)
            self.inner = np.zeros((0, 0))
            self.coef = np.zeros(2)
            return self
        s, mu = _lw_shrinkage(xc)
        s = min(max(s, 0.0), 1.0)
        self.shrinkage = s
        a, b = s * mu, (1.0 - s) / n
        if a <= 0:  # no shrinkage and a singular covariance: fall back to a tiny ridge
            a = 1e-6 * max(mu, 1e-12)
        self.basis = xc
        self.inner = np.linalg.pinv(a * np.eye(n) + b * (xc @ xc.T), hermitian=True)
        self.coef = np.array([a, b])
        return self

    def score(self, q: np.ndarray) -> np.ndarray:
        """Mahalanobis distances (M,) of queries ``q`` (M, D)."""
        d = np.asarray(q, dtype=np.float64) - self.mean
        if self.inner.size == 0:
            sq = np.einsum("ij,jk,ik->i", d, self.basis, d)
        else:
            a, b = self.coef
            g = d @ self.basis.T  # (M, N)
            sq = ((d**2).sum(1) - b * np.einsum("ij,jk,ik->i", g, self.inner, g)) / a
        return np.sqrt(np.maximum(sq, 0.0))

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save."""
        return {"mean": self.mean, "basis": self.basis, "inner": self.inner, "coef": self.coef}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> GaussianModel:
        """Rebuild from :meth:`state`."""
        m = cls()
        m.mean, m.basis = np.asarray(state["mean"]), np.asarray(state["basis"])
        m.inner, m.coef = np.asarray(state["inner"]), np.asarray(state["coef"])
        if m.inner.ndim != 2:
            m.inner = np.zeros((0, 0))
        return m


def _lw_shrinkage(xc: np.ndarray) -> tuple[float, float]:
    """Ledoit-Wolf shrinkage and ``μ = tr(S)/D`` of a centred bank, without forming D × D."""
    d = xc.shape[1]
    gram = xc @ xc.T  # (N, N); ||S||_F² = ||Xc Xcᵀ||_F² / N²
    return lw_shrinkage_gram(gram, d, lambda: (xc**2).sum(1))


def lw_shrinkage_gram(
    gram: np.ndarray, d: int, row_norms: Callable[[], np.ndarray] | None = None
) -> tuple[float, float]:
    """Ledoit-Wolf shrinkage and ``μ = tr(S)/D`` from the centred Gram matrix ``Xc Xcᵀ`` (N, N).

    Args:
        gram: Gram matrix of the centred bank rows.
        d: Feature dimension D.
        row_norms: Squared norms of the centred rows (default: the Gram diagonal).
    """
    n = gram.shape[0]
    tr_s = float(np.trace(gram)) / n
    mu = tr_s / d
    if n < 2 or mu == 0.0:
        return 1.0, mu if mu > 0 else 1.0
    s_fro2 = float((gram**2).sum()) / n**2
    delta = (s_fro2 - 2 * mu * tr_s + d * mu**2) / d
    row = np.diag(gram).copy() if row_norms is None else row_norms()
    # Σ_ij x_ki² x_kj² = Σ_k (Σ_i x_ki²)²
    beta_sum = float((row**2).sum()) / n - s_fro2
    beta = min(beta_sum / (n * d), delta)
    return (0.0 if delta == 0.0 else beta / delta), mu


class DiagonalGMM:
    """Gaussian mixture with diagonal covariances fitted by EM; score = negative log-likelihood.

    Args:
        components: Mixture components (reduced to ``N // 5``, at least 1, for small banks;
            not in the paper).
        iterations: EM iterations.
        seed: Seed of the initial means (k-means++-style choice among the bank's rows).
        var_floor: Floor of each variance, relative to the bank's overall variance per dimension.
    """

    def __init__(
        self, components: int = 2, iterations: int = 50, seed: int = 0, var_floor: float = 1e-2
    ) -> None:
        self.components = components
        self.iterations = iterations
        self.seed = seed
        self.var_floor = var_floor
        self.weights = np.zeros(0)
        self.means = np.zeros((0, 0))
        self.vars = np.zeros((0, 0))

    def _log_joint(self, a: np.ndarray) -> np.ndarray:
        # (M, K): log w_k + log N(x | mu_k, diag var_k)
        diff = a[:, None, :] - self.means[None]
        ll = -0.5 * ((diff**2) / self.vars[None]).sum(-1)
        ll -= 0.5 * np.log(2 * np.pi * self.vars).sum(-1)[None]
        return ll + np.log(self.weights)[None]

    def fit(self, x: np.ndarray) -> DiagonalGMM:
        """Fit on bank features ``x`` (N, D)."""
        a = np.asarray(x, dtype=np.float64)
        n, d = a.shape
        k = max(1, min(self.components, n // 5))
        rng = np.random.default_rng(self.seed)
        centres = [a[rng.integers(n)]]
        for _ in range(1, k):  # k-means++ seeding
            dist = np.min([((a - c) ** 2).sum(1) for c in centres], axis=0)
            p = dist / dist.sum() if dist.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(a[rng.choice(n, p=p)])
        floor = self.var_floor * np.maximum(a.var(0), 1e-12) if n > 1 else np.ones(d)
        self.means = np.array(centres)
        self.vars = np.tile(np.maximum(a.var(0), floor) if n > 1 else floor, (k, 1))
        self.weights = np.full(k, 1.0 / k)
        for _ in range(self.iterations):
            lj = self._log_joint(a)
            resp = np.exp(lj - lj.max(1, keepdims=True))
            resp /= resp.sum(1, keepdims=True)
            nk = resp.sum(0) + 1e-12
            self.weights = nk / n
            self.means = (resp.T @ a) / nk[:, None]
            sq = (resp.T @ (a**2)) / nk[:, None] - self.means**2
            self.vars = np.maximum(sq, floor[None])
        return self

    def score(self, q: np.ndarray) -> np.ndarray:
        """Negative log-likelihoods (M,) of queries ``q`` (M, D)."""
        lj = self._log_joint(np.asarray(q, dtype=np.float64))
        top = lj.max(1)
        return -(top + np.log(np.exp(lj - top[:, None]).sum(1)))

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save."""
        return {"weights": self.weights, "means": self.means, "vars": self.vars}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> DiagonalGMM:
        """Rebuild from :meth:`state`."""
        m = cls(components=int(np.asarray(state["weights"]).shape[0]))
        m.weights = np.asarray(state["weights"])
        m.means = np.asarray(state["means"])
        m.vars = np.asarray(state["vars"])
        return m
