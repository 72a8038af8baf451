"""The faiss path: identical k-NN results to the torch path; used when asked for (index=faiss)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from stetho.scoring import DomainKNNScorer, KNNConfig, MemoryBank
from stetho.scoring import knn as knn_module


def _real_faiss() -> None:
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")


def _brute(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """(M, N) distances in float64, independent of the library."""
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        return 1.0 - qn @ xn.T
    return np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 4])
def test_faiss_torch_and_float64_agree(metric: str, k: int) -> None:
    _real_faiss()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(700, 48)).astype(np.float32)
    q = rng.normal(size=(57, 48)).astype(np.float32)
    ref = np.sort(_brute(q.astype(np.float64), x.astype(np.float64), metric), axis=1)[:, :k]
    got = {}
    for index in ("exact", "faiss", "auto"):
        bank = MemoryBank(KNNConfig(k=k, metric=metric, index=index)).fit(x)  # type: ignore[arg-type]
        got[index] = bank.search(q).numpy()
        np.testing.assert_allclose(got[index], ref, atol=3e-6, rtol=1e-5)
    np.testing.assert_allclose(got["faiss"], got["exact"], atol=3e-6, rtol=1e-5)
    # leave-one-out with a few rows of the bank itself as queries
    ex = np.array([0, 699, -1, 350, 7])
    a = MemoryBank(KNNConfig(k=k, metric=metric, index="exact")).fit(x)  # type: ignore[arg-type]
    b = MemoryBank(KNNConfig(k=k, metric=metric, index="faiss")).fit(x)  # type: ignore[arg-type]
    da, db = a.search(x[ex], exclude=ex).numpy(), b.search(x[ex], exclude=ex).numpy()
    np.testing.assert_allclose(da, db, atol=3e-6, rtol=1e-5)
    assert (da[[0, 1, 3, 4], 0] > 1e-3).all()  # their own entries were left out
    assert da[2, 0] < 1e-3  # -1 excludes nothing: the query finds itself


def test_auto_takes_the_faster_torch_path_and_faiss_only_when_asked() -> None:
    _real_faiss()
    auto = MemoryBank(KNNConfig()).fit(np.eye(4, 3))
    auto.search(np.ones((2, 3)))
    assert auto._faiss_index is None  # measured 4x faster than faiss (docs/benchmarks.md)
    asked = MemoryBank(KNNConfig(index="faiss")).fit(np.eye(4, 3))
    asked.search(np.ones((2, 3)))
    assert asked._faiss_index is not None  # the faiss index was built


def test_auto_falls_back_to_torch_without_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    knn_module._faiss_available.cache_clear()
    try:
        x = np.random.default_rng(0).normal(size=(20, 6))
        bank = MemoryBank(KNNConfig(k=2)).fit(x)
        d = bank.search(x[:3], exclude=[0, 1, 2]).numpy()
        assert bank._faiss_index is None
        ref = np.sort(_brute(x[:3], x, "cosine"), axis=1)[:, 1:3]  # self (0) left out
        np.testing.assert_allclose(d, ref, atol=2e-6)
    finally:
        knn_module._faiss_available.cache_clear()


def test_exclusion_of_the_only_entry_gives_inf_on_both_paths() -> None:
    for index in ("exact", "auto"):
        for metric in ("cosine", "euclidean"):
            cfg = KNNConfig(k=2, metric=metric, index=index)  # type: ignore[arg-type]
            d = MemoryBank(cfg).fit(np.ones((1, 3))).search(np.ones((1, 3)), exclude=[0])
            assert torch.isinf(d).all(), (index, metric, d)


def test_domain_scores_identical_across_paths() -> None:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(60, 16))
    keys = [("fan", "00")] * 30 + [("pump", "01")] * 30
    doms = (["source"] * 27 + ["target"] * 3) * 2
    q = rng.normal(size=(9, 16))
    scores = {}
    for index in ("exact", "auto"):
        sc = DomainKNNScorer(KNNConfig(index=index)).fit(emb, keys, doms)  # type: ignore[arg-type]
        scores[index] = (sc.score(q, ("pump", "01")), sc.score_fitted())
    np.testing.assert_allclose(scores["auto"][0], scores["exact"][0], atol=3e-6)
    np.testing.assert_allclose(scores["auto"][1], scores["exact"][1], atol=3e-6)
