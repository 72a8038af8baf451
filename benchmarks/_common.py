"""Helpers shared by the ratio benchmarks: timing, the float32 matmul peak, peak memory, machine.

Absolute times move by tens of percent between runs on a shared machine; the ratio benchmarks
therefore time every configuration and its reference in the same process, interleaved, best of
``repeats``, and report ratios first.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

# best wall time of each function, round-robin so load changes hit all alike: the same timing
# the library uses to choose its k-NN path (one implementation)
from stetho.scoring.knn_auto import time_paths as interleaved  # noqa: F401  (re-exported)


def best_of(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> float:
    """Smallest wall time (s) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GEMM rate (GFLOP/s) of torch on this machine: the physical reference."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_of(lambda: a @ b, repeats=repeats) / 1e9


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory (MiB) of this process (plus its finished children)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        r += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def emit(row: dict[str, Any]) -> None:
    """Print one JSON result line (run_all.py collects them)."""
    print("RESULT " + json.dumps(row), flush=True)


@contextmanager
def without_fast_path() -> Iterator[None]:
    """mn04 runs its plain modules (no BatchNorm folding, NCHW) inside this block."""
    import stetho.backbones.efficientat as eat

    can_fold = eat._can_fold
    eat._can_fold = lambda bn: False
    try:
        yield
    finally:
        eat._can_fold = can_fold
