"""``index="auto"`` takes the path measured faster on this machine, measured once (#22 item 12).

The probe's timings are replaced by fixed ones where a test needs a given winner, so no test
depends on the machine's speed; one test runs the real probe and checks only that it decides
and that the results stay exact.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stetho.scoring import knn_auto
from stetho.scoring.knn import KNNConfig, MemoryBank

N = knn_auto.AUTO_MIN_ROWS  # the smallest bank that is probed
DIM = 16


@pytest.fixture(autouse=True)
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty disk cache and no decisions in memory (before and after)."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    monkeypatch.setenv("STETHO_CACHE", str(tmp_path / "cache"))
    knn_auto.clear_decisions()
    yield tmp_path / "cache" / knn_auto.CACHE_NAME
    knn_auto.clear_decisions()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.standard_normal((N, DIM), dtype=np.float32), rng.standard_normal(
        (30, DIM), dtype=np.float32
    )


def _fixed_timings(
    monkeypatch: pytest.MonkeyPatch, torch_s: float, faiss_s: float
) -> list[dict[str, object]]:
    """Replace the probe's timer by fixed timings; returns the list of probes made."""
    calls: list[dict[str, object]] = []

    def fake(fns: dict[str, object], repeats: int = 3) -> dict[str, float]:
        calls.append(fns)
        return {"torch": torch_s, "faiss": faiss_s}

    monkeypatch.setattr(knn_auto, "time_paths", fake)
    return calls


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_auto_takes_faiss_where_faiss_is_faster(
    monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray], metric: str
) -> None:
    x, q = data
    probes = _fixed_timings(monkeypatch, torch_s=1.0, faiss_s=0.5)
    auto = MemoryBank(KNNConfig(k=3, metric=metric)).fit(x)  # type: ignore[arg-type]
    exact = MemoryBank(KNNConfig(k=3, metric=metric, index="exact")).fit(x)  # type: ignore[arg-type]
    got = auto.search(q).numpy()
    assert auto._faiss_index is not None  # the faiss path ran
    assert len(probes) == 1
    np.testing.assert_allclose(got, exact.search(q).numpy(), atol=3e-6, rtol=1e-5)


def test_auto_keeps_torch_where_torch_is_faster_or_faiss_barely_wins(
    monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    _fixed_timings(monkeypatch, torch_s=1.0, faiss_s=0.95)  # within the margin: torch
    auto = MemoryBank(KNNConfig()).fit(x)
    auto.search(q)
    assert auto._faiss_index is None


def test_decision_is_measured_once_per_process_and_cached_on_disk(
    monkeypatch: pytest.MonkeyPatch,
    data: tuple[np.ndarray, np.ndarray],
    fresh: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    x, q = data
    probes = _fixed_timings(monkeypatch, torch_s=2.0, faiss_s=1.0)
    with caplog.at_level(logging.INFO, logger="stetho.scoring.knn_auto"):
        MemoryBank(KNNConfig()).fit(x).search(q)
        MemoryBank(KNNConfig()).fit(x[::-1].copy()).search(q[:25])  # same size/query class
    assert len(probes) == 1
    assert "faiss path (measured" in caplog.text
    doc = json.loads(fresh.read_text())
    ((key, entry),) = doc.items()
    assert knn_auto.cpu_model() in key and "d=16" in key and "q=many" in key
    assert entry["path"] == "faiss" and entry["torch_ms"] == 2000.0
    # another process on the same machine: read from the disk cache, no probe
    knn_auto.clear_decisions()
    bank = MemoryBank(KNNConfig()).fit(x)
    bank.search(q)
    assert len(probes) == 1 and bank._faiss_index is not None
    # another query class is measured separately
    MemoryBank(KNNConfig()).fit(x).search(q[:2])
    assert len(probes) == 2 and len(json.loads(fresh.read_text())) == 2
    # another CPU model does not reuse this machine's decision
    knn_auto.clear_decisions()
    monkeypatch.setattr(knn_auto, "cpu_model", lambda: "Some Other CPU")
    MemoryBank(KNNConfig()).fit(x).search(q)
    assert len(probes) == 3


def test_small_banks_and_missing_faiss_never_probe(
    monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray], fresh: Path
) -> None:
    x, q = data
    probes = _fixed_timings(monkeypatch, torch_s=1.0, faiss_s=0.1)
    small = MemoryBank(KNNConfig()).fit(x[: N - 1])
    small.search(q)
    assert probes == [] and small._faiss_index is None
    from stetho.scoring import knn

    monkeypatch.setattr(knn, "_faiss_available", lambda: False)
    big = MemoryBank(KNNConfig()).fit(x)
    big.search(q)
    assert probes == [] and big._faiss_index is None and not fresh.exists()


def test_damaged_disk_cache_is_measured_again(
    monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray], fresh: Path
) -> None:
    x, q = data
    fresh.parent.mkdir(parents=True)
    fresh.write_text("{not json")
    probes = _fixed_timings(monkeypatch, torch_s=0.5, faiss_s=1.0)
    MemoryBank(KNNConfig()).fit(x).search(q)
    assert len(probes) == 1
    assert next(iter(json.loads(fresh.read_text()).values()))["path"] == "torch"


def test_real_probe_decides_and_stays_exact(
    data: tuple[np.ndarray, np.ndarray], fresh: Path
) -> None:
    x, q = data
    auto = MemoryBank(KNNConfig(k=2)).fit(x)
    exact = MemoryBank(KNNConfig(k=2, index="exact")).fit(x)
    ex = np.arange(0, N, N // q.shape[0])[: q.shape[0]]
    got = auto.search(x[ex], exclude=ex).numpy()  # leave-one-out through the chosen path
    np.testing.assert_allclose(got, exact.search(x[ex], exclude=ex).numpy(), atol=3e-6, rtol=1e-5)
    entry = next(iter(json.loads(fresh.read_text()).values()))
    assert entry["path"] in ("torch", "faiss") and entry["torch_ms"] > 0 and entry["faiss_ms"] > 0
    assert (auto._faiss_index is not None) == (entry["path"] == "faiss")
