"""k-NN memory banks and the per-domain scorer against brute-force references."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from stetho.scoring import DomainKNNScorer, KNNConfig, MemoryBank
from stetho.scoring import knn as knn_module

# CPU-dependent float32 kernels: re-run by .ci/run under other MKL instruction sets
pytestmark = pytest.mark.float_sensitive


def _brute_cosine(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(M, N) cosine distances in float64, written independently of the library."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1.0 - qn @ xn.T


def _brute_euclid(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("index", ["exact", "auto"])
def test_exact_search_matches_brute_force(metric: str, k: int, index: str) -> None:
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(300, 16)), rng.normal(size=(41, 16))
    bank = MemoryBank(KNNConfig(k=k, metric=metric, index=index)).fit(x)  # type: ignore[arg-type]
    ref = (_brute_cosine if metric == "cosine" else _brute_euclid)(q, x)
    ref_k = np.sort(ref, axis=1)[:, :k]
    got = bank.search(q).numpy()
    assert got.shape == (41, k)
    np.testing.assert_allclose(got, ref_k, atol=2e-6, rtol=1e-5)
    if metric == "cosine":  # stored embeddings are unit length
        np.testing.assert_allclose(bank.embeddings.norm(dim=1).numpy(), 1.0, atol=1e-6)


def test_search_is_chunked_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    x, q = rng.normal(size=(50, 8)), rng.normal(size=(33, 8))
    bank = MemoryBank(KNNConfig(k=2, index="exact")).fit(x)
    full = bank.search(q)
    monkeypatch.setattr(knn_module, "_CHUNK_ELEMENTS", 50 * 4)  # 4 query rows per chunk
    chunked = bank.search(q)
    # a chunk's matmul may use another BLAS kernel: the cosine distance 1 - <u, v> of unit
    # vectors in float32 is exact to about (d + 2)·eps32 (dot-product round-off, Higham §3.1)
    # in each computation, so the two agree to twice that; both match the float64 truth
    tol = 2 * (8 + 2) * float(np.finfo(np.float32).eps)
    torch.testing.assert_close(chunked, full, rtol=0, atol=tol)
    ref = np.sort(_brute_cosine(q, x), axis=1)[:, :2]
    np.testing.assert_allclose(chunked.numpy(), ref, rtol=0, atol=tol)


def test_k_larger_than_bank_pads_with_inf_and_exclude() -> None:
    x = np.eye(3, 4)
    bank = MemoryBank(KNNConfig(k=5)).fit(x)
    d = bank.search(x).numpy()
    assert np.isfinite(d[:, :3]).all() and np.isinf(d[:, 3:]).all()
    np.testing.assert_allclose(d[:, 0], 0.0, atol=1e-6)
    # leave-one-out: the query's own row is excluded; -1 excludes nothing
    d1 = MemoryBank(KNNConfig(k=1)).fit(x).search(x, exclude=[0, 1, -1]).numpy()
    np.testing.assert_allclose(d1[:, 0], [1.0, 1.0, 0.0], atol=1e-6)


def test_domain_scorer_min_over_domains_and_mean_of_k() -> None:
    rng = np.random.default_rng(2)
    src, tgt = rng.normal(size=(30, 6)), rng.normal(size=(4, 6)) + 3.0
    other = rng.normal(size=(10, 6))
    emb = np.concatenate([src, tgt, other])
    keys = [("fan", "00")] * 34 + [("pump", "01")] * 10
    doms = ["source"] * 30 + ["target"] * 4 + [None] * 10
    q = rng.normal(size=(9, 6)) + rng.choice([0.0, 3.0], size=(9, 1))
    for k in (1, 2):
        scorer = DomainKNNScorer(KNNConfig(k=k)).fit(emb, keys, doms)
        ds = np.sort(_brute_cosine(q, src), 1)[:, :k].mean(1)
        dt = np.sort(_brute_cosine(q, tgt), 1)[:, :k].mean(1)
        got = scorer.score(q, ("fan", "00"))
        np.testing.assert_allclose(got, np.minimum(ds, dt), atol=2e-6)
        assert (ds < dt).any() and (dt < ds).any()  # both banks win somewhere
        # per-row keys; the pump key has only a source bank (empty target bank is skipped)
        mixed = scorer.score(q[:2], [("fan", "00"), ("pump", "01")])
        dp = np.sort(_brute_cosine(q[1:2], other), 1)[:, :k].mean(1)
        np.testing.assert_allclose(mixed, [got[0], dp[0]], atol=2e-6)
    assert scorer.keys == [("fan", "00"), ("pump", "01")]


def test_pooled_banks_option() -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(12, 5))
    scorer = DomainKNNScorer(KNNConfig(k=3, domain_banks=False))
    scorer.fit(emb, [("a", "00")] * 12, ["source"] * 6 + ["target"] * 6)
    q = rng.normal(size=(4, 5))
    ref = np.sort(_brute_cosine(q, emb), 1)[:, :3].mean(1)
    np.testing.assert_allclose(scorer.score(q, ("a", "00")), ref, atol=2e-6)


def test_unknown_key_lists_fitted_keys() -> None:
    scorer = DomainKNNScorer().fit(
        np.ones((2, 3)), [("fan", "00"), ("valve", "02")], ["source"] * 2
    )
    with pytest.raises(KeyError, match=r"fitted keys: fan/00, valve/02"):
        scorer.score(np.ones((1, 3)), ("slider", "00"))


def test_leave_one_out_scores() -> None:
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(8, 4))
    keys = [("a", "00")] * 8
    doms = ["source"] * 6 + ["target"] * 2
    scorer = DomainKNNScorer(KNNConfig(k=1)).fit(emb, keys, doms)
    np.testing.assert_allclose(scorer.score_fitted(leave_one_out=False), 0.0, atol=1e-6)
    loo = scorer.score_fitted()
    dist = _brute_cosine(emb, emb)
    np.fill_diagonal(dist, np.inf)
    src, tgt = np.arange(6), np.arange(6, 8)
    ref = np.minimum(dist[:, src].min(1), dist[:, tgt].min(1))
    np.testing.assert_allclose(loo, ref, atol=2e-6)
    assert (loo > 1e-3).all()


def test_state_dict_round_trip_is_exact() -> None:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(20, 7))
    keys = [("ToyCar", "00")] * 10 + [("fan", "01")] * 10
    doms = (["source"] * 8 + ["target"] * 2) * 2
    scorer = DomainKNNScorer(KNNConfig(k=2)).fit(emb, keys, doms)
    sd = scorer.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    from safetensors.torch import load, save

    restored = DomainKNNScorer(KNNConfig(k=2))
    restored.load_state_dict(load(save(sd)))
    q = rng.normal(size=(5, 7))
    for key in (("ToyCar", "00"), ("fan", "01")):
        np.testing.assert_array_equal(restored.score(q, key), scorer.score(q, key))
    with pytest.raises(ValueError, match="bank/<machine>"):
        restored.load_state_dict({"weird": torch.zeros(1, 1)})


def test_faiss_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    bank = MemoryBank(KNNConfig(index="faiss")).fit(np.ones((3, 2)))
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        bank.search(np.ones((1, 2)))


def test_faiss_path_with_a_stand_in_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """The faiss glue (IP → cosine distance, L2² → L2, exclusion) against exact search."""

    class _Flat:
        def __init__(self, d: int, ip: bool) -> None:
            self.x = np.zeros((0, d), np.float32)
            self.ip = ip

        def add(self, x: np.ndarray) -> None:
            self.x = np.concatenate([self.x, x])

        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            if self.ip:
                s = q @ self.x.T
                idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
            else:
                s = ((q[:, None] - self.x[None]) ** 2).sum(-1)
                idx = np.argsort(s, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(s, idx, 1), idx

    fake = types.SimpleNamespace(
        IndexFlatIP=lambda d: _Flat(d, True), IndexFlatL2=lambda d: _Flat(d, False)
    )
    monkeypatch.setitem(sys.modules, "faiss", fake)
    rng = np.random.default_rng(6)
    x, q = rng.normal(size=(40, 5)), rng.normal(size=(6, 5))
    for metric in ("cosine", "euclidean"):
        exact = MemoryBank(KNNConfig(k=3, metric=metric, index="exact")).fit(x)
        fais = MemoryBank(KNNConfig(k=3, metric=metric, index="faiss")).fit(x)
        torch.testing.assert_close(fais.search(q), exact.search(q), atol=2e-6, rtol=1e-5)
        ex = np.array([0, 5, -1, 39, 2, 2])
        torch.testing.assert_close(
            fais.search(x[ex], exclude=ex), exact.search(x[ex], exclude=ex), atol=2e-6, rtol=1e-5
        )


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        KNNConfig(k=0)
    bank = MemoryBank().fit(np.ones((3, 4)))
    with pytest.raises(ValueError, match="dimension 5"):
        bank.search(np.ones((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        MemoryBank().fit(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="same length"):
        DomainKNNScorer().fit(np.ones((3, 2)), [("a", "00")] * 2, ["source"] * 3)
    with pytest.raises(ValueError, match="domain must be one of"):
        DomainKNNScorer().fit(np.ones((1, 2)), [("a", "00")], ["elsewhere"])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_finds_the_closest_bank_row_and_its_ref(metric: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 5))
    doms = ["source"] * 9 + ["target"] * 3
    scorer = DomainKNNScorer(KNNConfig(k=1, metric=metric))  # type: ignore[arg-type]
    refs = [f"clip{i}.wav" for i in range(12)]
    scorer.fit(x, [("fan", "00")] * 12, doms, refs=refs)
    q = rng.normal(size=(4, 5))
    if metric == "cosine":  # independent float64 reference
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T
    else:
        d = np.linalg.norm(q[:, None, :] - x[None, :, :], axis=2)
    got = scorer.nearest(q, ("fan", "00"))
    for i, nb in enumerate(got):
        j = int(np.argmin(d[i]))
        assert nb.ref == refs[j] and nb.domain == doms[j]
        assert nb.distance == pytest.approx(d[i, j], abs=1e-5)
    np.testing.assert_allclose(scorer.score(q, ("fan", "00")), [n.distance for n in got], atol=1e-6)
    # refitting one key without refs drops only that key's refs
    scorer.fit(x[:3], [("pump", "00")] * 3, ["source"] * 3, replace=False)
    assert set(scorer.refs) == {("fan", "00")}
    assert scorer.nearest(q[:1], ("pump", "00"))[0].ref is None
    with pytest.raises(ValueError, match="refs"):
        scorer.fit(x, [("fan", "00")] * 12, doms, refs=refs[:3])
