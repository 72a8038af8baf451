"""BatchNorm running statistics during fine-tuning (``finetune.freeze_norm_stats``), EfficientAT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stetho.backbones import list_backbones
from stetho.config import ExperimentConfig
from stetho.data import ClipTable
from stetho.pipelines import knn_validator
from stetho.training import train
from tests.training.helpers import tiny_config

_STATS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(autouse=True)
def _needs_efficientat_tiny() -> None:
    if "efficientat-tiny" not in list_backbones():
        pytest.skip("efficientat-tiny not registered")


def _cfg(epochs: int, *extra: str) -> ExperimentConfig:
    return tiny_config(
        "backbone.name=efficientat-tiny",
        "finetune.strategy=full",
        f"train.epochs={epochs}",
        *extra,
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
    frozen_cfg = _cfg(2, "finetune.freeze_norm_stats=true")
    frozen = train(
        frozen_cfg,
        clips,
        tmp_path / "frozen",
        validate=knn_validator(frozen_cfg, clips, table.filter(split="test")),
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
