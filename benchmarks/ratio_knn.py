"""k-NN search: stetho (torch path, auto/faiss path) vs faiss IndexFlatIP vs numpy, and the peak.

Usage::

    python benchmarks/ratio_knn.py [--quick] [--dim 768] [--queries 1000]

For each bank size: time of 1,000 cosine queries (k = 1) by ``MemoryBank(index="exact")`` (torch),
``MemoryBank()`` (auto: the path its once-per-process probe found faster on this machine, named in
``auto_path``; torch under 20,000 rows), raw ``faiss.IndexFlatIP`` and a numpy matmul + argmax,
interleaved in one process; the physical limit is ``2·N·D·M`` FLOPs at the measured float32
matmul rate. The 1e6-row bank is searched with 20 queries only (3 GiB of float32 at D = 768).
The auto decisions are measured afresh (a temporary ``$STETHO_CACHE``), not read from an earlier
run's cache. The last line names the machine: CPU model, cores, threads and the 1-minute load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

import numpy as np
import torch
from _common import emit, interleaved, machine, matmul_peak_gflops

from stetho.scoring import knn_auto
from stetho.scoring.knn import KNNConfig, MemoryBank


def _one(n: int, m: int, dim: int, peak: float, faiss: Any, rng: np.random.Generator) -> dict:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    q = rng.standard_normal((m, dim), dtype=np.float32)
    exact = MemoryBank(KNNConfig(index="exact")).fit(x)
    del x
    xn = exact.embeddings.numpy()
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    fns = {
        "stetho_exact": lambda: exact.search(q),
        "numpy": lambda: (qn @ xn.T).max(1),
    }
    if faiss is not None:
        auto = MemoryBank(KNNConfig()).load_embeddings(exact.embeddings)
        index = faiss.IndexFlatIP(dim)
        index.add(xn)
        fns["stetho_auto"] = lambda: auto.search(q)
        fns["faiss"] = lambda: index.search(qn, 1)
    t = interleaved(fns, repeats=3)
    at_peak = 2 * n * dim * m / (peak * 1e9)
    row = {
        "bench": "knn",
        "bank": n,
        "dim": dim,
        "queries": m,
        "matmul_peak_gflops": round(peak, 1),
        "ms": {k: round(v * 1e3, 2) for k, v in t.items()},
        "exact_fraction_of_peak": round(at_peak / t["stetho_exact"], 3),
        "exact_vs_numpy": round(t["stetho_exact"] / t["numpy"], 2),
    }
    if faiss is not None:
        row["exact_vs_faiss"] = round(t["stetho_exact"] / t["faiss"], 2)
        row["auto_vs_faiss"] = round(t["stetho_auto"] / t["faiss"], 2)
        row["auto_fraction_of_peak"] = round(at_peak / t["stetho_auto"], 3)
        row["auto_path"] = "faiss" if auto._faiss_index is not None else "torch"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1e3..1e5 rows, 200 queries")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    sizes = [1000, 10_000, 100_000] if args.quick else [1000, 10_000, 100_000, 1_000_000]
    m_default = 200 if args.quick else args.queries
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        faiss = None
    rng = np.random.default_rng(0)
    peak = matmul_peak_gflops()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["STETHO_CACHE"] = cache  # decide afresh, as a new machine would
        knn_auto.clear_decisions()
        for n in sizes:
            emit(_one(n, 20 if n >= 1_000_000 else m_default, args.dim, peak, faiss, rng))
    emit(
        {
            "bench": "machine",
            **machine(),
            "cpu_model": knn_auto.cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "command": "python benchmarks/ratio_knn.py" + (" --quick" if args.quick else ""),
        }
    )


if __name__ == "__main__":
    main()
