"""The GPU-only training paths, exercised on the CPU.

* bf16 autocast (CPU autocast works in torch >= 2.x): forward + loss only, fp32 front-ends,
  fp32 parameters (no GradScaler);
* ``torch.compile`` (``backend="eager"``: dynamo tracing without a C++ toolchain): compiled once,
  and no ``_orig_mod.`` / ``module.`` prefix reaches a checkpoint, the result or a detector;
* DDP (2 gloo processes, compiled) with backbone parameters that get no gradient (full
  fine-tuning of CED: its AudioSet classifier is not on the embedding path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from stetho.backbones import Backbone, create_backbone, list_backbones
from stetho.config import ExperimentConfig
from stetho.data import ClipTable, scan_dataset
from stetho.detector.detector import Detector
from stetho.pipelines import knn_validator
from stetho.training import CHECKPOINT_NAME, build_backbone, train
from tests.training.helpers import tiny_config


def _cfg(*extra: str) -> ExperimentConfig:
    return tiny_config("train.deterministic=false", "train.epochs=1", *extra)


#: the GPU-only code paths (bf16 autocast, torch.compile with the eager backend) on the CPU
AS_IF_ON_GPU: dict[str, Any] = {"accelerate": True, "compile_options": {"backend": "eager"}}


def _frontends(backbone: nn.Module) -> dict[str, nn.Module]:
    """The backbone's front-end modules (``stetho.frontend``), SpecAugment excluded."""
    return {
        name: m
        for name, m in backbone.named_modules()
        if type(m).__module__.startswith("stetho.frontend")
        and not type(m).__module__.endswith("specaugment")
    }


def _clean(keys: Any) -> bool:
    return all("_orig_mod" not in k and not k.startswith("module.") for k in keys)


def test_bf16_autocast_covers_forward_only(table: ClipTable, tmp_path: Path) -> None:
    seen: dict[str, set[torch.dtype]] = {"frontend": set(), "linear": set()}

    def build_and_probe(cfg: Any) -> Backbone:
        bb = build_backbone(cfg)
        for m in _frontends(bb).values():
            m.register_forward_hook(lambda mod, i, out: seen["frontend"].add(out.dtype))
        linear = next(m for m in bb.modules() if isinstance(m, nn.Linear))
        linear.register_forward_hook(lambda mod, i, out: seen["linear"].add(out.dtype))
        return bb

    result = train(
        _cfg("finetune.strategy=full", "train.amp=bf16"),
        table.filter(split="train"),
        tmp_path / "run",
        progress=False,
        backbone_factory=build_and_probe,
        **AS_IF_ON_GPU,
    )
    assert seen["linear"] == {torch.bfloat16}  # autocast was on in the training forward
    assert seen["frontend"] == {torch.float32}  # the fbank front-end disables it
    assert result.steps == 3 and torch.isfinite(torch.tensor(result.final_loss))
    # parameters (and so gradients and Adam state) stay fp32: nothing for a GradScaler to do
    params = list(result.backbone.parameters()) + list(result.head.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    moments = [s["exp_avg"] for s in state["optimizer"]["state"].values()]
    assert moments and all(m.dtype == torch.float32 for m in moments)


@pytest.mark.slow
def test_compile_once_and_clean_state_dicts(
    table: ClipTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[type] = []
    real_compile = torch.compile

    def counting_compile(model: Any, **kw: Any) -> Any:
        calls.append(type(model))
        return real_compile(model, **kw)

    monkeypatch.setattr(torch, "compile", counting_compile)
    cfg = _cfg("finetune.strategy=lora", "train.amp=bf16", "train.compile=true", "train.epochs=2")
    train_clips = table.filter(split="train")
    result = train(
        cfg,
        train_clips,
        tmp_path / "run",
        validate=knn_validator(cfg, train_clips, table.filter(split="test")),
        progress=False,
        **AS_IF_ON_GPU,
    )
    assert len(calls) == 1  # compiled once, not per epoch
    assert result.steps == 6 and "val_official_score" in result.history[-1]
    assert not isinstance(result.backbone, torch._dynamo.eval_frame.OptimizedModule)
    assert _clean(result.backbone.state_dict()) and _clean(result.head.state_dict())
    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert any(".lora_B." in k for k in state["backbone"])
    assert _clean(state["backbone"]) and _clean(state["head"])
    # the checkpoint loads into a plain, freshly adapted model
    fresh = train(cfg, train_clips, tmp_path / "run", progress=False, **AS_IF_ON_GPU)
    assert fresh.steps == 6
    det = Detector.from_training(result)
    det.fit(table.filter(split="train"))
    out = det.save(tmp_path / "det")
    from safetensors.torch import load_file

    for name in ("adapter.safetensors", "head.safetensors"):
        keys = load_file(str(out / name)).keys()
        assert keys and _clean(keys), name


@pytest.mark.parametrize(
    "name", [n for n in list_backbones() if n.endswith(("-tiny", "-test")) or n == "logmel"]
)
def test_frontends_stay_fp32_under_bf16_autocast(name: str) -> None:
    torch.manual_seed(0)
    model = create_backbone(name)
    fronts = _frontends(model)
    assert fronts, f"{name}: no stetho.frontend module found"
    outs: dict[str, torch.Tensor] = {}
    for key, m in fronts.items():
        m.register_forward_hook(lambda mod, i, out, key=key: outs.__setitem__(key, out))
    wave = torch.randn(2, model.sample_rate, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.embed(wave)
        ref = dict(outs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.embed(wave)
    for key, out in outs.items():
        assert out.dtype == ref[key].dtype != torch.bfloat16, key
        torch.testing.assert_close(out, ref[key], rtol=0, atol=0)


WORKER = textwrap.dedent(
    """
    import json, logging, os, sys
    import torch
    from stetho.data import scan_dataset
    from stetho.config import ExperimentConfig
    from stetho.training import train

    logging.basicConfig(level=logging.WARNING)
    real_compile, calls = torch.compile, []
    torch.compile = lambda model, **kw: calls.append(type(model).__name__) or real_compile(model, **kw)
    cfg = ExperimentConfig.from_dict(json.loads(open(sys.argv[1]).read()))
    clips = list(scan_dataset(sys.argv[2]).filter(split="train"))[:8]
    # the GPU path: torch.compile(DDP(module)), eager backend
    train(cfg, clips, sys.argv[3], progress=False, accelerate=True, compile_options={"backend": "eager"})
    # one file per rank: the two processes' stdout would interleave
    with open(os.path.join(sys.argv[4], f"compiled_{os.environ['RANK']}.json"), "w") as fh:
        json.dump(calls, fh)
    """
)


@pytest.mark.slow
@pytest.mark.float_sensitive
def test_ddp_full_finetuning_with_unused_backbone_parameters(
    synth_root: Path, tmp_path: Path
) -> None:
    if "ced-test" not in list_backbones():
        pytest.skip("ced-test not registered")
    cfg = _cfg(
        "backbone.name=ced-test",
        "finetune.strategy=full",
        "data.spec_augment=null",
        "data.crop_seconds=0.5",
        "train.deterministic=true",
        "train.compile=true",  # compiled in the workers only (eager backend: same numerics)
    )
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(cfg_path), str(synth_root), str(tmp_path / "ddp"), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):  # torch.compile wrapped the DDP module exactly once on each process
        calls = json.loads((tmp_path / f"compiled_{rank}.json").read_text())
        assert calls == ["DistributedDataParallel"], (rank, calls)
    ddp = torch.load(tmp_path / "ddp" / CHECKPOINT_NAME, weights_only=True)
    assert ddp["step"] == 2
    assert _clean(ddp["backbone"]) and _clean(ddp["head"])

    clips = list(scan_dataset(synth_root).filter(split="train"))[:8]
    single = train(cfg, clips, tmp_path / "single", progress=False)
    sd = single.backbone.state_dict()
    assert set(sd) == set(ddp["backbone"])  # full state, plain names
    unused = [k for k in sd if k.startswith("outputlayer.")]
    assert unused  # CED's classifier: trainable under "full" but never used by the embedding
    # Adam divides each gradient by its own RMS, so a gradient at round-off level (whose value
    # depends on the CPU's summation order) still moves its weight by up to ~lr per step: such
    # weights can differ by a few lr after 2 steps. Every other weight agrees to float32 noise.
    lr, steps = cfg.train.lr, int(ddp["step"])
    worst, n_off, n_all = 0.0, 0, 0
    for key, value in sd.items():
        if not value.is_floating_point():
            torch.testing.assert_close(ddp["backbone"][key], value, rtol=0, atol=0, msg=key)
            continue
        diff = (ddp["backbone"][key] - value).abs()
        worst = max(worst, float(diff.max()))
        n_off += int((diff > 1e-5).sum())
        n_all += diff.numel()
        assert float(diff.max()) <= 3 * steps * lr, (key, float(diff.max()))
    assert n_off <= max(1, n_all // 1000), (n_off, n_all)  # at most 0.1 % at the Adam bound
    print(
        f"compiled DDP (2 x 2) vs single process (4), full CED: max abs weight diff {worst:.2e}, "
        f"{n_off} of {n_all} weights beyond 1e-5"
    )
