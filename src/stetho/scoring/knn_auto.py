"""``KNNConfig.index="auto"``: which exact k-NN path is faster on *this* machine, measured once.

Both paths are exact (the torch path: matrix product + max/top-k; faiss: ``IndexFlatIP`` /
``IndexFlatL2``) and agree to float32 rounding, so the choice changes speed only. Which one is
faster depends on the CPU, its BLAS and the load: on one 2-core AMD EPYC the torch path took
0.21-0.25x faiss's time, on another 1.3-1.8x (issue 22 item 12). So ``auto``

* keeps the torch path for banks under :data:`AUTO_MIN_ROWS` rows or when faiss is not
  importable (no probe: the absolute difference is small there);
* otherwise times both paths once on the bank itself (its first :data:`PROBE_ROWS` rows, the
  query count class of the call: under :data:`FAISS_BLAS_QUERIES` queries faiss scans, from it on
  it uses BLAS), best of 3 interleaved, and takes faiss only when it is at least
  :data:`FAISS_MARGIN` faster (the torch path needs no second copy of the bank);
* caches the decision per process, and on disk in ``$STETHO_CACHE/knn_auto.json`` keyed by the
  CPU model, thread count, torch and faiss versions, metric, dimension, bank size class (half
  decades) and query class, and logs it (INFO).

Not in the paper: an engineering choice for speed only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from stetho.utils.io import atomic_write_text

__all__ = [
    "AUTO_MIN_ROWS",
    "CACHE_NAME",
    "FAISS_BLAS_QUERIES",
    "FAISS_MARGIN",
    "PROBE_ROWS",
    "choose_path",
    "clear_decisions",
    "cpu_model",
    "decision_key",
    "time_paths",
]

logger = logging.getLogger(__name__)

#: Banks with fewer rows stay on the torch path without a probe.
AUTO_MIN_ROWS = 20_000
#: Rows of the bank the probe searches (larger banks: their first rows).
PROBE_ROWS = 65_536
#: faiss's flat indexes switch from a SIMD scan to BLAS at this many queries.
FAISS_BLAS_QUERIES = 20
#: Queries of a probe for the "many queries" class.
PROBE_QUERIES = 64
#: faiss is chosen only when its time is below this fraction of the torch path's.
FAISS_MARGIN = 0.9
#: File of measured decisions in ``$STETHO_CACHE``.
CACHE_NAME = "knn_auto.json"

_decisions: dict[str, str] = {}
_lock = threading.Lock()


def clear_decisions() -> None:
    """Forget this process's decisions (the disk cache stays)."""
    with _lock:
        _decisions.clear()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _faiss_version() -> str:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        return "none"
    return str(getattr(faiss, "__version__", "?"))


def decision_key(n: int, dim: int, queries: int, k: int, metric: str) -> str:
    """The cache key of a search: machine, libraries and the search's size classes."""
    size = round(2 * math.log10(max(n, 1))) / 2  # half decades: 4.5 = 31,623 rows
    qclass = "many" if queries >= FAISS_BLAS_QUERIES else "few"
    return (
        f"{cpu_model()}|cores={os.cpu_count()}|threads={torch.get_num_threads()}"
        f"|torch={torch.__version__}|faiss={_faiss_version()}|{metric}|d={dim}|n=1e{size:g}"
        f"|q={qclass}|k={'1' if k == 1 else '>1'}"
    )


def time_paths(fns: dict[str, Callable[[], Any]], repeats: int = 3) -> dict[str, float]:
    """Best wall time (s) of each function, after one warm-up call each, interleaved."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _cache_file() -> Path:
    root = os.environ.get("STETHO_CACHE") or Path.home() / ".cache" / "stetho"
    return Path(root).expanduser() / CACHE_NAME


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("%s: unreadable k-NN auto cache (%s); measuring again", path, err)
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    try:
        doc = _read_cache(path)
        doc[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except OSError as err:  # a read-only cache is no reason to fail a search
        logger.debug("cannot write the k-NN auto cache %s: %s", path, err)


def choose_path(
    n: int,
    dim: int,
    queries: int,
    k: int,
    metric: str,
    *,
    faiss_available: bool,
    probe: Callable[[], dict[str, float]],
) -> str:
    """``"torch"`` or ``"faiss"``: the faster exact path for this search on this machine.

    Args:
        n, dim: Bank rows and dimension.
        queries, k: The search's query count and neighbours.
        metric: ``"cosine"`` or ``"euclidean"``.
        faiss_available: Whether ``import faiss`` works.
        probe: Times both paths on the bank: ``{"torch": s, "faiss": s}`` (called at most once
            per decision key and process, and not at all when the disk cache has the key).
    """
    if n < AUTO_MIN_ROWS or not faiss_available:
        return "torch"
    key = decision_key(n, dim, queries, k, metric)
    known = _decisions.get(key)
    if known is not None:
        return known
    with _lock:  # one probe at a time; concurrent searches wait for it
        known = _decisions.get(key)
        if known is not None:
            return known
        path = _cache_file()
        cached = _read_cache(path).get(key)
        if isinstance(cached, dict) and cached.get("path") in ("torch", "faiss"):
            choice = str(cached["path"])
            logger.info("k-NN index=auto: %s path (cached in %s for %s)", choice, path, key)
        else:
            t = probe()
            choice = "faiss" if t["faiss"] < FAISS_MARGIN * t["torch"] else "torch"
            logger.info(
                "k-NN index=auto: %s path (measured: torch %.2f ms, faiss %.2f ms; %s)",
                choice,
                t["torch"] * 1e3,
                t["faiss"] * 1e3,
                key,
            )
            _write_cache(
                path,
                key,
                {
                    "path": choice,
                    "torch_ms": round(t["torch"] * 1e3, 3),
                    "faiss_ms": round(t["faiss"] * 1e3, 3),
                    "load_avg_1min": round(os.getloadavg()[0], 2)
                    if hasattr(os, "getloadavg")
                    else None,
                    "measured": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        _decisions[key] = choice
    return choice
