"""Few-shot back-ends: Ledoit-Wolf, standardisation, Mahalanobis, GMM, k-NN, LOO z-norm."""

from __future__ import annotations

import numpy as np
import pytest

from stetho.scoring.bank import BackendConfig, BankBackend, knn_distances
from stetho.scoring.gaussian import DiagonalGMM, GaussianModel
from stetho.scoring.normalise import Standardiser, ZNorm, ledoit_wolf


def _bank(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, size=d) + rng.normal(size=d)


def _lw_reference(x: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf (2004) from its definition, sample by sample (float64)."""
    n, d = x.shape
    xc = x - x.mean(0)
    s = sum(np.outer(r, r) for r in xc) / n
    mu = np.trace(s) / d
    d2 = np.linalg.norm(s - mu * np.eye(d), "fro") ** 2
    b2 = sum(np.linalg.norm(np.outer(r, r) - s, "fro") ** 2 for r in xc) / n**2
    shrink = min(b2, d2) / d2
    return shrink * mu * np.eye(d) + (1 - shrink) * s


@pytest.mark.parametrize("n,d", [(6, 10), (40, 8), (12, 12)])
def test_ledoit_wolf_matches_its_definition(n: int, d: int) -> None:
    x = _bank(n, d)
    cov, shrink = ledoit_wolf(x)
    np.testing.assert_allclose(cov, _lw_reference(x), rtol=1e-10, atol=1e-12)
    assert 0.0 <= shrink <= 1.0


@pytest.mark.parametrize("n,d", [(8, 30), (60, 12)])  # Woodbury path and dense path
def test_mahalanobis_matches_numpy_reference(n: int, d: int) -> None:
    x, q = _bank(n, d), _bank(7, d, seed=1)
    ref_cov = _lw_reference(x)
    diff = q - x.mean(0)
    ref = np.sqrt(np.einsum("ij,jk,ik->i", diff, np.linalg.inv(ref_cov), diff))
    np.testing.assert_allclose(GaussianModel().fit(x).score(q), ref, rtol=1e-8)


def test_standardiser_std_and_whiten() -> None:
    x = _bank(50, 6)
    z = Standardiser("std").fit(x)(x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-12)
    w = Standardiser("whiten").fit(x)
    zw = w(x)
    cov, _ = ledoit_wolf(x)
    # whitened squared norms are Mahalanobis distances under the LW covariance
    diff = x - x.mean(0)
    np.testing.assert_allclose(
        (zw**2).sum(1), np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff), rtol=1e-8
    )


def test_constant_dimension_does_not_blow_up() -> None:
    x = _bank(10, 4)
    x[:, 2] = 3.0
    z = Standardiser("std").fit(x)(x + np.array([0, 0, 1e-9, 0]))
    assert np.isfinite(z).all() and np.abs(z[:, 2]).max() < 1e-3


def test_knn_matches_brute_force() -> None:
    x, q = _bank(9, 5), _bank(4, 5, seed=3)
    for k in (1, 3):
        ref = np.array([np.sort(np.linalg.norm(x - r, axis=1))[:k].mean() for r in q])
        np.testing.assert_allclose(knn_distances(q, x, k, "euclidean"), ref, rtol=1e-10)
        loo = np.array(
            [
                np.sort(np.linalg.norm(np.delete(x, i, 0) - x[i], axis=1))[:k].mean()
                for i in range(9)
            ]
        )
        np.testing.assert_allclose(knn_distances(x, x, k, "euclidean", exclude_self=True), loo)


@pytest.mark.parametrize("kind", ["knn", "mahalanobis", "gmm"])
def test_loo_znorm_matches_brute_force(kind: str) -> None:
    x, q = _bank(12, 5), _bank(3, 5, seed=2) * 3
    cfg = BackendConfig(kind=kind, k=2, standardise="none")  # type: ignore[arg-type]
    be = BankBackend(cfg).fit(x)
    # brute force: each bank row scored by a back-end fitted on the other rows
    loo = np.array(
        [BankBackend(cfg.replace(znorm=False)).fit(np.delete(x, i, 0)).raw_score(x[i : i + 1])[0]
         for i in range(12)]
    )  # fmt: skip
    mean, sd = loo.mean(), loo.std(ddof=1)
    np.testing.assert_allclose(be.loo_scores(), (loo - mean) / sd, rtol=1e-6, atol=1e-9)
    raw = BankBackend(cfg.replace(znorm=False)).fit(x).raw_score(q)
    np.testing.assert_allclose(be.score(q), (raw - mean) / sd, rtol=1e-6)
    # score_without(own=i) on the bank's own rows gives the leave-one-out scores
    np.testing.assert_allclose(be.score_without(x, np.arange(12)), be.loo_scores(), rtol=1e-6)


def test_znorm_small_banks() -> None:
    assert ZNorm.fit(np.array([2.0, 2.0])) == ZNorm(2.0, 2.0)  # relative deviation
    assert ZNorm.fit(np.array([np.inf])) == ZNorm(0.0, 1.0)
    z = ZNorm.fit(np.array([1.0, 2.0, 3.0]))
    assert z.mean == 2.0 and z.scale == pytest.approx(1.0)


def test_gmm_single_component_is_the_diagonal_gaussian() -> None:
    x = _bank(30, 4)
    q = _bank(5, 4, seed=9)
    g = DiagonalGMM(components=1).fit(x)
    var = x.var(0)
    ref = 0.5 * (((q - x.mean(0)) ** 2 / var).sum(1) + np.log(2 * np.pi * var).sum())
    np.testing.assert_allclose(g.score(q), ref, rtol=1e-8)


def test_gmm_finds_two_clusters() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5, 1, (30, 2)), rng.normal(5, 1, (30, 2))])
    g = DiagonalGMM(components=2).fit(x)
    assert sorted(np.round(g.means[:, 0]).tolist()) == [-5.0, 5.0] or np.allclose(
        sorted(g.means[:, 0]), [-5, 5], atol=0.6
    )
    assert g.score(np.array([[0.0, 0.0]]))[0] > g.score(np.array([[5.0, 5.0]]))[0]


@pytest.mark.parametrize("kind", ["knn", "mahalanobis", "gmm"])
def test_state_roundtrip(kind: str) -> None:
    cfg = BackendConfig(kind=kind, standardise="whiten")  # type: ignore[arg-type]
    x, q = _bank(15, 6), _bank(4, 6, seed=5)
    be = BankBackend(cfg).fit(x)
    again = BankBackend.from_state(cfg, be.state())
    np.testing.assert_array_equal(again.score(q), be.score(q))
    np.testing.assert_array_equal(again.loo_scores(), be.loo_scores())


def test_anomalies_score_higher() -> None:
    x = _bank(40, 8)
    far = x[:5] + 6 * x.std(0)
    for kind in ("knn", "mahalanobis", "gmm"):
        be = BankBackend(BackendConfig(kind=kind)).fit(x)  # type: ignore[arg-type]
        assert be.score(far).min() > be.loo_scores().max()
