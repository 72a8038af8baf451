"""BatchNorm running statistics during fine-tuning (``finetune.freeze_norm_stats``), EfficientAT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stetho.backbones import list_backbones
from stetho.config import ExperimentConfig
from stetho.data import ClipTable, scan_dataset
from stetho.data.synth import generate_synthetic_dataset
from stetho.training.loop import train

_STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> ClipTable:
    if "efficientat-tiny" not in list_backbones():
        pytest.skip("efficientat-tiny not registered")
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(
        root,
        machines=("fan", "valve"),
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=1,
        seconds=1.0,
    )
    return scan_dataset(root)


def _cfg(epochs: int, *extra: str) -> ExperimentConfig:
    return ExperimentConfig().override(
        [
            "backbone.name=efficientat-tiny",
            "finetune.strategy=full",
            "head.embed_dim=16",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.warmup_steps=1",
            "train.tensorboard=false",
            "train.deterministic=true",
            f"train.epochs={epochs}",
            *extra,
        ]
    )


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_full_finetuning_keeps_batchnorm_statistics_unless_disabled(
    table: ClipTable, tmp_path: Path
) -> None:
    clips = table.filter(split="train")
    init = _state(train(_cfg(0), clips, tmp_path / "init", progress=False).backbone)
    stats = [k for k in init if k.endswith(_STATS)]
    assert len(stats) >= 3 * 10  # EfficientAT is full of BatchNorm layers
    affine = [k.rsplit(".", 1)[0] + ".weight" for k in stats if k.endswith("running_mean")]

    # frozen statistics; two epochs with a validation in between: the k-NN validation switches
    # modes and must hand the BatchNorm layers back in eval mode
    frozen = train(
        _cfg(2, "finetune.freeze_norm_stats=true"),
        clips,
        tmp_path / "frozen",
        val_clips=table.filter(split="test"),
        progress=False,
    )
    assert frozen.steps == 6 and "val_official_score" in frozen.history[0]
    fz = _state(frozen.backbone)
    changed = [k for k in stats if not torch.equal(fz[k], init[k])]
    assert not changed, f"running statistics changed although frozen: {changed[:4]}"
    # the affine BatchNorm weights (and the rest of the network) still train
    assert sum(not torch.equal(fz[k], init[k]) for k in affine) > len(affine) // 2

    free = train(
        _cfg(1, "finetune.freeze_norm_stats=false"), clips, tmp_path / "free", progress=False
    )
    fr = _state(free.backbone)
    means = [k for k in stats if k.endswith("running_mean")]
    assert all(not torch.equal(fr[k], init[k]) for k in means)
    counts = {int(fr[k]) for k in stats if k.endswith("num_batches_tracked")}
    assert counts == {free.steps}  # every training batch updated every BatchNorm layer


def test_frozen_strategy_keeps_statistics_even_with_flag_off(
    table: ClipTable, tmp_path: Path
) -> None:
    clips = table.filter(split="train")
    init = _state(train(_cfg(0), clips, tmp_path / "init", progress=False).backbone)
    result = train(
        _cfg(1, "finetune.strategy=frozen", "finetune.freeze_norm_stats=false"),
        clips,
        tmp_path / "frozen",
        progress=False,
    )
    after = _state(result.backbone)
    assert all(torch.equal(after[k], init[k]) for k in init)
