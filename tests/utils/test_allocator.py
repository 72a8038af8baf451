"""reuse_freed_memory: big temporaries stop page-faulting afresh on every batch (glibc)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from stetho.utils.allocator import reuse_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# allocate and free a 64 MiB tensor 20 times (fresh pages each time under glibc's defaults),
# after one warm-up round, and count the minor page faults of those 20 rounds
_PROBE = """
import json, resource, sys
import torch
from stetho.utils.allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else False
def once():
    x = torch.ones(16 << 20)  # 64 MiB, every page written
    return float(x[-1])
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    once()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("STETHO_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        check=True,
        capture_output=True,
        text=True,
        env={**clean, **env},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are a glibc setting")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    off, on = _probe("off"), _probe("on")
    assert on["applied"] is True
    pages = (64 << 20) // 4096  # 16,384 pages per round
    assert int(off["faults"]) > 10 * pages  # the default: fresh pages every round
    assert int(on["faults"]) < int(off["faults"]) / 4


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are a glibc setting")
def test_the_users_own_settings_stand() -> None:
    assert _probe("on", MALLOC_MMAP_THRESHOLD_="131072")["applied"] is False
    assert _probe("on", STETHO_MALLOC="default")["applied"] is False


def test_returns_a_bool_on_every_platform() -> None:
    assert isinstance(reuse_freed_memory(), bool)
