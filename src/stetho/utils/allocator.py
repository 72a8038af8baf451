"""Keep freed tensor memory for reuse (glibc malloc), so batches stop page-faulting afresh.

glibc gives every allocation above its mmap threshold (dynamic, capped at 32 MiB on 64-bit Linux)
its own ``mmap`` and hands it back to the kernel on ``free``. The mn04 front-end of one batch of
16 × 10 s clips allocates temporaries of up to 66 MiB (the complex STFT), so each batch touched
fresh pages again: measured on 2 cores, mn04 at batch 16 took 19 ms per clip with the default and
8.3 ms with the thresholds below, and folder scoring went from 44–48 to 73–78 clips/s
(``docs/benchmarks.md``). Raising the thresholds serves such blocks from the heap and keeps them
after ``free``; the price is that the process keeps its peak (measured: +60 to +140 MiB).

The ``stetho`` command calls :func:`reuse_freed_memory` at start; a program using stetho as a
library may call it too (not in the paper: a process setting, it changes no number).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["reuse_freed_memory"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def reuse_freed_memory(mmap_threshold: int = 256 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from the heap; keep up to ``trim_threshold``
    bytes of freed heap for reuse.

    A no-op (returning False) off glibc, or when the user set glibc's own ``MALLOC_*_``
    variables (their choice stands) or ``STETHO_MALLOC=default``.

    Returns:
        True when both settings were applied.
    """
    if os.environ.get("STETHO_MALLOC", "").lower() == "default":
        return False
    if any(name in os.environ for name in _ENV):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:  # the process's own symbols, glibc among them (no library search at start-up)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )
    logger.debug(
        "malloc thresholds: mmap %d, trim %d bytes (%s)", mmap_threshold, trim_threshold, ok
    )
    return ok
