"""Shared fixtures of the training tests: a tiny synthetic dataset and a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

from stetho.data import ClipTable, scan_dataset
from stetho.data.synth import generate_synthetic_dataset


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 machines × (4 source + 2 target) normal train clips + 1 test clip per group, 1 s each."""
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(
        root,
        machines=("fan", "valve"),
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=1,
        seconds=1.0,
    )
    return root


@pytest.fixture(scope="module")
def table(synth_root: Path) -> ClipTable:
    """Every clip of :func:`synth_root`."""
    return scan_dataset(synth_root)


@pytest.fixture(scope="module")
def train_clips(table: ClipTable) -> ClipTable:
    """The 12 normal train clips."""
    return table.filter(split="train")
