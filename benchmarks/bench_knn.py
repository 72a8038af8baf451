"""Exact k-NN search speed of ``stetho.scoring.MemoryBank`` (matrix product, chunked).

Usage::

    python benchmarks/bench_knn.py [--dim 128] [--queries 1000] [--sizes 1000 10000 100000]

A DCASE 2023 section has 1000 training clips (990 source + 10 target) and 200 test clips, so the
first row is the realistic case; larger banks correspond to segment-level banks or pooled sections.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from stetho.scoring.knn import KNNConfig, MemoryBank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--k", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    for n in args.sizes:
        bank = MemoryBank(KNNConfig(k=args.k)).fit(
            rng.standard_normal((n, args.dim)).astype(np.float32)
        )
        bank.search(queries[:10])  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            bank.search(queries)
            times.append(time.perf_counter() - t0)
        best = min(times)
        print(
            json.dumps(
                {
                    "bank": n,
                    "dim": args.dim,
                    "queries": args.queries,
                    "k": args.k,
                    "ms_total": round(best * 1e3, 2),
                    "us_per_query": round(best / args.queries * 1e6, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
