"""Shared test fixtures.

Real clips and weights live outside the repository in ``$STETHO_SHARED`` (default ``../shared``
next to the repo root). Tests that need them use the ``shared_dir`` fixture and are skipped with a
clear reason when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """Location of the shared reference folder (may not exist)."""
    return Path(os.environ.get("STETHO_SHARED", REPO_ROOT.parent / "shared")).expanduser().resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder; skips the test when it is missing."""
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"real clips/weights not available: set STETHO_SHARED (looked in {root})")
    return root


@pytest.fixture(scope="session")
def mn04_checkpoint(shared_dir: Path) -> Path:
    """The real EfficientAT mn04 checkpoint from the shared folder."""
    path = shared_dir / "weights" / "efficientat_mn04_as_mAP_432.pt"
    if not path.is_file():
        pytest.skip(f"EfficientAT mn04 checkpoint not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    # Tests use small tensors: one intra-op thread is fastest and never oversubscribes the
    # 2-core CI machine (helper subprocesses such as torchrun workers set their own).
    torch.set_num_threads(1)
