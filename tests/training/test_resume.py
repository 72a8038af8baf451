"""Killed-and-resumed training ends with exactly the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from stetho.backbones import Backbone
from stetho.config import BackboneConfig, ExperimentConfig
from stetho.data import ClipTable
from stetho.training import CHECKPOINT_NAME, StepInfo, TrainResult, train
from stetho.training.loop import TrainingDivergedError
from stetho.training.state import build_backbone
from stetho.utils.errors import InputError
from tests.training.helpers import tiny_config


class Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def clips(train_clips: ClipTable) -> ClipTable:
    return train_clips


def cfg(**extra: object) -> ExperimentConfig:
    return tiny_config(
        "finetune.lora.dropout=0.1",  # exercises the torch RNG
        "train.epochs=2",
        "train.warmup_steps=2",
        "data.crop_seconds=0.6",  # random crops (per-sample RNG) + SpecAugment (global RNG)
        **extra,
    )


def _all_state(result: TrainResult) -> dict[str, torch.Tensor]:
    out = {f"backbone.{k}": v for k, v in result.backbone.state_dict().items()}
    out.update({f"head.{k}": v for k, v in result.head.state_dict().items()})
    return out


def _steps(out: Path) -> list[tuple[str, str, str]]:
    with open(out / "metrics.csv", encoding="utf-8") as fh:
        return [(r["step"], r["lr"], r["loss"]) for r in csv.DictReader(fh) if r["kind"] == "step"]


def test_killed_run_resumes_to_identical_weights(clips: ClipTable, tmp_path: Path) -> None:
    reference = train(cfg(), clips, tmp_path / "ref", progress=False)
    assert reference.steps == 6  # 12 clips / 4 per batch × 2 epochs

    def kill_at_5(info: StepInfo) -> None:
        if info.step == 5:  # epoch 2, second step; last checkpoint: step 4 (mid-epoch)
            raise Killed("simulated kill")

    run_cfg = cfg(train__checkpoint_every_steps=2)
    with pytest.raises(Killed):
        train(run_cfg, clips, tmp_path / "run", progress=False, callback=kill_at_5)
    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert (state["epoch"], state["step_in_epoch"], state["step"]) == (1, 1, 4)

    seen: list[int] = []
    resumed = train(
        run_cfg, clips, tmp_path / "run", progress=False, callback=lambda i: seen.append(i.step)
    )
    assert seen == [5, 6]  # only the missing steps ran
    ref_state, res_state = _all_state(reference), _all_state(resumed)
    assert ref_state.keys() == res_state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], res_state[key]), f"{key} differs after resume"
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in reference.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    # the interrupted run's rows after the checkpoint were dropped: the log equals the reference's
    assert _steps(tmp_path / "run") == _steps(tmp_path / "ref")
    ref_opt = torch.load(tmp_path / "ref" / CHECKPOINT_NAME, weights_only=True)["optimizer"][
        "state"
    ]
    res_opt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["optimizer"][
        "state"
    ]
    for idx in ref_opt:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ref_opt[idx][name], res_opt[idx][name])


def test_finished_run_returns_at_once_and_config_changes_are_refused(
    clips: ClipTable, tmp_path: Path
) -> None:
    first = train(cfg(train__epochs=1), clips, tmp_path, progress=False)

    def fail(info: StepInfo) -> None:
        raise AssertionError("a finished run must not train again")

    again = train(
        cfg(train__epochs=1, train__log_every=5), clips, tmp_path, progress=False, callback=fail
    )
    assert again.steps == first.steps == 3
    for key, value in _all_state(first).items():
        assert torch.equal(value, _all_state(again)[key])
    with pytest.raises(ValueError, match=r"different configuration.*train\.lr"):
        train(cfg(train__epochs=1, train__lr=1e-2), clips, tmp_path, progress=False)
    restarted = train(
        cfg(train__epochs=1, train__lr=1e-2), clips, tmp_path, resume=False, progress=False
    )
    assert restarted.steps == 3
    assert not torch.equal(_all_state(restarted)["head.weight"], _all_state(first)["head.weight"])


def test_checkpoint_with_old_key_names_resumes(clips: ClipTable, tmp_path: Path) -> None:
    """A checkpoint written before ``data.segment_seconds`` became ``data.crop_seconds``."""
    run_cfg = cfg(train__epochs=1)
    first = train(run_cfg, clips, tmp_path, progress=False)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    state["config"]["data"]["segment_seconds"] = state["config"]["data"].pop("crop_seconds")
    torch.save(state, path)
    again = train(run_cfg, clips, tmp_path, progress=False)  # a finished run: nothing to train
    assert again.steps == first.steps
    with pytest.raises(ValueError, match=r"different configuration.*crop_seconds"):
        train(cfg(train__epochs=1, data__crop_seconds=0.5), clips, tmp_path, progress=False)


# -- non-finite weights and losses (issue 22 item 10) --------------------------------------------


def test_checkpoint_with_nan_weights_is_refused_naming_the_file(
    clips: ClipTable, tmp_path: Path
) -> None:
    run_cfg = cfg()

    def kill_at_4(info: StepInfo) -> None:
        if info.step == 4:  # first step of epoch 2: the checkpoint (epoch 1's end) holds step 3
            raise Killed("simulated kill")

    with pytest.raises(Killed):
        train(run_cfg, clips, tmp_path, progress=False, callback=kill_at_4)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    assert state["step"] == 3
    state["head"]["weight"][0, 0] = float("nan")
    torch.save(state, path)
    seen: list[float] = []
    with pytest.raises(InputError, match=r"checkpoint\.pt: head tensor 'weight' holds NaN") as err:
        train(run_cfg, clips, tmp_path, progress=False, callback=lambda i: seen.append(i.loss))
    assert str(path) in str(err.value) and "resume=False" in str(err.value)
    assert seen == []  # not one step trained on the poisoned weights


def test_nan_optimiser_state_is_refused(clips: ClipTable, tmp_path: Path) -> None:
    run_cfg = cfg(train__epochs=1)
    train(run_cfg, clips, tmp_path, progress=False)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg_sq"].view(-1)[0] = float("inf")
    torch.save(state, path)
    with pytest.raises(InputError, match=r"optimiser state 'exp_avg_sq'"):
        train(run_cfg, clips, tmp_path, progress=False)


def _poisoned_factory(at_call: int) -> Callable[[BackboneConfig], Backbone]:
    """``build_backbone`` whose ``embed`` returns NaN at its ``at_call``-th call (1-based)."""

    def factory(bcfg: BackboneConfig) -> Backbone:
        backbone = build_backbone(bcfg)
        plain = backbone.embed
        calls = [0]

        def embed(wave: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            out = plain(wave)
            return out * float("nan") if calls[0] == at_call else out

        backbone.embed = embed  # type: ignore[method-assign]
        return backbone

    return factory


def test_first_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    clips: ClipTable, tmp_path: Path
) -> None:
    run_cfg = cfg(train__checkpoint_every_steps=2)
    seen: list[float] = []
    with pytest.raises(
        TrainingDivergedError, match=r"diverged at step 3 \(epoch 1, batch 3 of 3\)"
    ):
        train(
            run_cfg,
            clips,
            tmp_path,
            progress=False,
            callback=lambda i: seen.append(i.loss),
            backbone_factory=_poisoned_factory(3),
        )
    assert len(seen) == 2 and all(math.isfinite(v) for v in seen)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 2  # the last good state, nothing written after the bad step
    for name, t in [*state["backbone"].items(), *state["head"].items()]:
        assert torch.isfinite(t).all(), name
    # the run goes on from the last good checkpoint once the cause is gone
    resumed = train(run_cfg, clips, tmp_path, progress=False)
    assert resumed.steps == 6 and all(math.isfinite(h["loss"]) for h in resumed.history)


def test_nan_initial_weights_are_refused_before_training(clips: ClipTable, tmp_path: Path) -> None:
    def factory(bcfg: BackboneConfig) -> Backbone:
        backbone = build_backbone(bcfg)
        with torch.no_grad():
            next(iter(backbone.parameters())).view(-1)[0] = float("nan")
        return backbone

    with pytest.raises(InputError, match="initial backbone weight"):
        train(cfg(), clips, tmp_path, progress=False, backbone_factory=factory)
    assert not (tmp_path / CHECKPOINT_NAME).exists()
