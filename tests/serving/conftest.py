"""A tiny fitted detector (weight-free ``logmel`` backbone, frozen, 1 epoch) for the serving tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stetho.config import ExperimentConfig
from stetho.data import ClipTable, generate_synthetic_dataset, scan_dataset
from stetho.detector import Detector
from stetho.training import train
from tests.store.conftest import (  # noqa: F401  (the API on both store backends)
    postgres_server,
    postgres_url,
    store_url,
)


@pytest.fixture(scope="session")
def serving_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ClipTable]:
    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("serving_synth"),
        machines=("fan", "valve"),
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=1,
        seconds=1.0,
    )
    return root, scan_dataset(root)


@pytest.fixture(scope="session")
def detector(
    serving_data: tuple[Path, ClipTable], tmp_path_factory: pytest.TempPathFactory
) -> Detector:
    _, table = serving_data
    cfg = ExperimentConfig().override(
        [
            "backbone.name=logmel",
            "finetune.strategy=frozen",
            "head.embed_dim=16",
            "train.epochs=1",
            "train.batch_size=4",
            "train.tensorboard=false",
        ]
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clips = table.filter(split="train")
        result = train(cfg, clips, tmp_path_factory.mktemp("serving_train"), progress=False)
        return Detector.from_training(result).fit(clips)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def single_key_detector(
    detector: Detector,
    serving_data: tuple[Path, ClipTable],
    tmp_path_factory: pytest.TempPathFactory,
) -> Detector:
    """The same model with memory banks for fan/00 only."""
    _, table = serving_data
    folder = detector.save(tmp_path_factory.mktemp("serving_det") / "detector")
    return Detector.load(folder).fit(table.filter(split="train", machine="fan"))
