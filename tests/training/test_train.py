"""The training loop: LoRA / full / frozen on beats-tiny, SpecAugment rules, schedules, logs."""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

from stetho.backbones import Backbone, PretrainedCfg
from stetho.config import ExperimentConfig
from stetho.data import ClipTable, load_audio
from stetho.detector.detector import Detector
from stetho.pipelines import knn_validator
from stetho.training import StepInfo, TrainResult, lr_factor, train
from tests.training.helpers import tiny_config


def tiny_cfg(strategy: str = "lora", **extra: object) -> ExperimentConfig:
    return tiny_config(f"finetune.strategy={strategy}", "scoring.batch_size=8", **extra)


def _states(result: TrainResult) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (
        {k: v.detach().clone() for k, v in result.backbone.state_dict().items()},
        {k: v.detach().clone() for k, v in result.head.state_dict().items()},
    )


@pytest.fixture(scope="module")
def lora_run(table: ClipTable, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("lora")
    cfg = tiny_cfg("lora", train__epochs=3)
    train_clips = table.filter(split="train")
    # epochs=0 builds exactly the initial model (same seed, same code path)
    initial = _states(
        train(
            cfg.replace(train=cfg.train.replace(epochs=0)),
            train_clips,
            out / "init",
            progress=False,
        )
    )
    losses: list[float] = []

    def record(info: StepInfo) -> None:
        losses.append(info.loss)

    result = train(
        cfg,
        train_clips,
        out / "run",
        validate=knn_validator(cfg, train_clips, table.filter(split="test")),
        progress=False,
        callback=record,
    )
    return {"result": result, "initial": initial, "losses": losses, "out": out / "run", "cfg": cfg}


def test_lora_changes_only_adapter_and_head(lora_run: dict[str, object]) -> None:
    result = lora_run["result"]
    assert isinstance(result, TrainResult)
    init = lora_run["initial"]
    assert isinstance(init, tuple)
    init_bb: dict[str, torch.Tensor] = init[0]
    init_head: dict[str, torch.Tensor] = init[1]
    bb, head = _states(result)
    assert bb.keys() == init_bb.keys()
    lora_keys = [k for k in bb if ".lora_A." in k or ".lora_B." in k]
    assert lora_keys and len(lora_keys) == 2 * 2 * 2  # A and B, q and v, 2 layers
    for key in bb:
        if key in lora_keys:
            assert not torch.equal(bb[key], init_bb[key]), f"{key} did not train"
        else:
            assert torch.equal(bb[key], init_bb[key]), f"frozen tensor {key} changed"
    for key in head:
        assert not torch.equal(head[key], init_head[key]), f"head tensor {key} did not train"
    assert result.epochs == 3 and result.steps == 9


def test_loss_falls_and_validation_reports_omega(lora_run: dict[str, object]) -> None:
    losses = lora_run["losses"]
    assert isinstance(losses, list) and len(losses) == 9
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    result = lora_run["result"]
    assert isinstance(result, TrainResult)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for h in result.history:
        assert 0.0 < h["val_official_score"] <= 1.0 and math.isfinite(h["val_arithmetic_mean"])
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    out = lora_run["out"]
    assert isinstance(out, Path)
    rows = list(csv.DictReader((out / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["kind"] for r in rows].count("step") == 9 and [r["kind"] for r in rows].count(
        "epoch"
    ) == 3
    epoch_rows = [r for r in rows if r["kind"] == "epoch"]
    assert float(epoch_rows[-1]["val_official_score"]) == pytest.approx(
        result.history[-1]["val_official_score"]
    )
    assert (out / "checkpoint.pt").is_file() and (out / "config.json").is_file()
    assert ExperimentConfig.load(out / "config.json") == lora_run["cfg"]


def test_merged_and_unmerged_embeddings_agree(
    lora_run: dict[str, object], table: ClipTable
) -> None:
    result = lora_run["result"]
    assert isinstance(result, TrainResult)
    unmerged = Detector(
        result.config, copy.deepcopy(result.backbone), result.head, result.class_map
    )
    waves = [load_audio(c.path, sr=16000)[0] for c in table.filter(split="test")]
    before = unmerged.embed_waveforms(waves)
    # from_training merges in place: give it a copy so the shared fixture stays unmerged
    merged = Detector.from_training(
        dataclasses.replace(result, backbone=copy.deepcopy(result.backbone))
    )
    assert any(".lora_" in name for name, _ in result.backbone.named_parameters())
    assert not any(".lora_" in name for name, _ in merged.backbone.named_parameters())
    after = merged.embed_waveforms(waves)
    diff = float(np.abs(after - before).max())
    print(f"merged vs unmerged embeddings: max abs diff {diff:.3e}")
    assert diff <= 1e-5
    assert np.abs(before).max() > 1e-3  # not trivially zero


def test_full_and_frozen_strategies(
    table: ClipTable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clips = table.filter(split="train")
    init = _states(train(tiny_cfg("full", train__epochs=0), clips, tmp_path / "i", progress=False))
    full = train(tiny_cfg("full", train__epochs=1), clips, tmp_path / "full", progress=False)
    bb, _ = _states(full)
    changed = [k for k in bb if bb[k].is_floating_point() and not torch.equal(bb[k], init[0][k])]
    assert len(changed) > len(bb) // 2  # full fine-tuning moves the backbone
    with caplog.at_level(logging.INFO, logger="stetho.training"):
        frozen = train(
            tiny_cfg("frozen", train__epochs=1, train__amp="bf16", train__compile="true"),
            clips,
            tmp_path / "frozen",
            progress=True,
        )
    assert "ignored on cpu" in caplog.text
    fb, fh = _states(frozen)
    assert all(torch.equal(fb[k], init[0][k]) for k in fb)
    assert all(not torch.equal(fh[k], init[1][k]) for k in fh)


def test_schedule() -> None:
    assert [lr_factor(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    lin = [lr_factor(s, 4, 20) for s in range(4, 20)]
    assert lin[0] == 1.0 and all(a > b for a, b in itertools.pairwise(lin)) and lin[-1] > 0
    cos = [lr_factor(s, 0, 10, "cosine", 0.1) for s in range(10)]
    assert cos[0] == 1.0 and min(cos) > 0.1 and all(a >= b for a, b in itertools.pairwise(cos))
    assert lr_factor(7, 2, 10, "constant") == 1.0
    with pytest.raises(ValueError, match="valid"):
        lr_factor(5, 0, 10, "step")


class _Probe(Backbone):
    """A tiny backbone that records what training feeds it."""

    def __init__(self, kind: Literal["fbank", "waveform"]) -> None:
        super().__init__(
            PretrainedCfg(name=f"probe-{kind}", sample_rate=16000, input_kind=kind, embed_dim=8)
        )
        self.proj = nn.Linear(4, 8)
        self.lengths: list[int] = []
        self.augmented: list[bool] = []

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.lengths.append(int(wave.shape[-1]))
            self.augmented.append(self.spec_augment is not None)
        return self.proj(wave.unfold(-1, 4, 4))  # (B, N/4, 8)


@pytest.mark.parametrize("kind", ["waveform", "fbank"])
def test_specaugment_and_crops_by_input_kind(
    kind: Literal["fbank", "waveform"],
    table: ClipTable,
    tmp_path: Path,
) -> None:
    probe = _Probe(kind)
    cfg = tiny_cfg("full", train__epochs=1)
    result = train(
        cfg,
        table.filter(split="train"),
        tmp_path,
        progress=False,
        backbone_factory=lambda cfg: probe,
    )
    assert len(probe.lengths) == 3
    if (
        kind == "waveform"
    ):  # raw-waveform model: 2 s crops (1-s clips repeat-padded), no SpecAugment
        assert set(probe.lengths) == {32000} and not any(probe.augmented)
    else:  # spectrogram model: whole clips, SpecAugment installed while training
        assert set(probe.lengths) == {16000} and all(probe.augmented)
    assert result.backbone.spec_augment is None  # removed after training


def test_train_refuses_test_clips(table: ClipTable, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="normal train clips only"):
        train(tiny_cfg(), table.filter(split="test"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        train(tiny_cfg(), [], tmp_path, progress=False)


def test_unusable_validation_set_is_skipped(
    table: ClipTable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_cfg("frozen", backbone__name="logmel", train__epochs=1)
    normals_only = table.filter(split="test", label="normal")  # no anomalies: AUC undefined
    train_clips = table.filter(split="train")
    validate = knn_validator(cfg, train_clips, normals_only)
    with caplog.at_level(logging.WARNING, logger="stetho.pipelines"):
        result = train(cfg, train_clips, tmp_path, validate=validate, progress=False)
    assert "validation skipped" in caplog.text
    assert result.epochs == 1 and "val_official_score" not in result.history[0]
