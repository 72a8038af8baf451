"""The fine-tuning loop: backbone + (LoRA / full / frozen) + ArcFace proxy head.

::

    result = train(cfg, clips.filter(split="train"), "runs/beats_lora", val_clips=dev_test)
    result.history[-1]["val_official_score"]

What happens (all settings in :class:`~stetho.config.ExperimentConfig`):

* the backbone is built (``create_backbone``), adapted (``apply_finetuning``; a backbone without
  parameters such as ``logmel`` trains only the head), and a :class:`ProxyHead` is put on top
  (one class per machine/section/attributes);
* SpecAugment is installed on spectrogram (``fbank``) backbones only, never raw-waveform ones;
* BatchNorm running statistics stay fixed (``finetune.freeze_norm_stats``, always for ``frozen``
  and ``lora``): the backbone's BatchNorm layers are kept in eval mode across ``train()`` calls;
* Adam with a linear warm-up then linear/cosine decay, stepped per optimiser step; gradient-norm
  clipping; optional bf16 autocast and ``torch.compile`` (GPU only, see below);
* batches are global (``train.batch_size``) and sharded across ``torchrun`` processes, with loss
  scaling so N processes with B/N samples each produce the gradients of one process with B;
* a resumable checkpoint (trainable weights, head, optimiser, RNG states, epoch/step) is written
  atomically to ``out_dir/checkpoint.pt`` at each epoch end (and every
  ``train.checkpoint_every_steps`` steps); ``resume=True`` continues from it, and on the CPU in
  deterministic mode a resumed run ends with exactly the weights of an uninterrupted one;
* ``metrics.csv`` (and TensorBoard events) log the loss, learning rate and gradient norm; with
  ``val_clips`` (labelled dev test clips) each epoch ends with a k-NN validation: official score
  Ω, arithmetic mean.

GPU-only options: ``train.amp="bf16"`` autocasts the forward pass and the loss only (the
backward and the optimiser step run outside it; parameters, gradients and optimiser state stay
fp32, so no ``GradScaler`` is needed for bf16; front-ends and the ArcFace maths disable autocast
themselves and stay fp32). ``train.compile`` compiles the training module (backbone + head loss)
once, after the DDP wrapper as PyTorch recommends; the checkpoint, the result and detectors use
the original, uncompiled modules, so no ``_orig_mod.`` / ``module.`` prefixes reach a state dict.
Under DDP, ``find_unused_parameters`` is on whenever backbone weights train: ``full`` leaves the
AudioSet classifiers of CED / EfficientAT unused, and layer drop (Wav2Vec2's checkpoints, BEATs
when set) skips whole layers, LoRA matrices included; with a frozen backbone only the head trains
and every trainable parameter is used.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from stetho.backbones import Backbone, create_backbone
from stetho.config import BackboneConfig, ExperimentConfig
from stetho.data import Clip
from stetho.model.adapt import (
    apply_finetuning,
    freeze_norm_statistics,
    norm_stats_frozen,
    trainable_parameter_count,
)
from stetho.model.heads import ProxyHead
from stetho.model.labels import ClassMap, build_class_map
from stetho.training.dataset import (
    ClipDataset,
    GlobalBatchSampler,
    WaveformCache,
    collate_batch,
    global_batch_sizes,
    resolve_crop_samples,
)
from stetho.training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    destroy_distributed,
    init_distributed,
)
from stetho.utils.io import atomic_write, atomic_write_text, write_error

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "StepInfo",
    "TrainResult",
    "build_backbone",
    "lr_factor",
    "resolve_device",
    "train",
]

logger = logging.getLogger(__name__)

#: Resumable checkpoint written in the training output folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: Per-step / per-epoch metrics CSV in the training output folder.
METRICS_NAME = "metrics.csv"
_CHECKPOINT_FORMAT = 1
_METRIC_FIELDS = (
    "kind",
    "epoch",
    "step",
    "lr",
    "loss",
    "grad_norm",
    "val_official_score",
    "val_arithmetic_mean",
    "elapsed_s",
)
# Settings that may change between a checkpoint and its resumption without changing the maths.
_RESUME_FREE = {
    "train.log_every",
    "train.checkpoint_every_steps",
    "train.num_workers",
    "train.device",
    "train.tensorboard",
    "train.val_every",
    "data.cache_mb",
}
#: Extra ``torch.compile`` arguments (tests run the compile path on the CPU with ``backend="eager"``).
_COMPILE_OPTIONS: dict[str, Any] = {}


@dataclass
class StepInfo:
    """What a training callback sees after each optimiser step.

    Attributes:
        epoch: 0-based epoch of the step.
        step: Global number of optimiser steps done so far (1 after the first step).
        step_in_epoch: Steps done in this epoch.
        loss: Loss of the step (averaged over processes).
        lr: Learning rate used for the step.
    """

    epoch: int
    step: int
    step_in_epoch: int
    loss: float
    lr: float


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        backbone: The trained backbone (LoRA still unmerged), in eval mode, on ``device``.
        head: The trained proxy head, in eval mode.
        class_map: Proxy classes of the training clips.
        config: The experiment config used.
        out_dir: Training output folder.
        checkpoint: The final resumable checkpoint (``None`` if nothing was trained).
        epochs: Completed epochs.
        steps: Optimiser steps done.
        history: One dict per completed epoch: ``epoch, step, loss, lr, seconds`` and, when
            validated, ``val_official_score, val_arithmetic_mean``.
        device: Device the models live on.
        trainable_params: Parameters trained (backbone + head), counted before training (a
            detector built from this result may merge LoRA into the backbone afterwards).
    """

    backbone: Backbone
    head: ProxyHead
    class_map: ClassMap
    config: ExperimentConfig
    out_dir: Path
    checkpoint: Path | None
    epochs: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    trainable_params: int = 0

    @property
    def final_loss(self) -> float | None:
        """Mean training loss of the last epoch (``None`` before any epoch)."""
        return float(self.history[-1]["loss"]) if self.history else None


# -- helpers ----------------------------------------------------------------------------------
def resolve_device(spec: str, info: DistInfo | None = None) -> torch.device:
    """``"auto"`` → ``cuda:<local rank>`` when CUDA is available, else ``cpu``; else ``spec``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank if info is not None else 0)
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={spec!r} but CUDA is not available; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None and info is not None and info.enabled:
        device = torch.device("cuda", info.local_rank)
    return device


def _accelerated(device: torch.device) -> bool:
    """Whether the GPU-only options (bf16 autocast, ``torch.compile``) apply on ``device``."""
    return device.type == "cuda"


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """``create_backbone`` from a :class:`BackboneConfig` (checkpoint, trust flag, overrides)."""
    kwargs = dict(cfg.overrides)
    if cfg.trust_checkpoint:
        kwargs["trust_checkpoint"] = True
    return create_backbone(cfg.name, checkpoint=cfg.checkpoint, **kwargs)


def lr_factor(
    step: int, warmup: int, total: int, schedule: str = "linear", min_ratio: float = 0.0
) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup`` for the first ``warmup`` steps, then ``"linear"`` or
    ``"cosine"`` decay towards ``min_ratio`` (reached one step after the last, so the last step
    still learns), or ``"constant"``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; valid: ['linear', 'cosine', 'constant']")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.benchmark = prev_bench


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(name),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _backbone_tensors(backbone: Backbone, full: bool) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers (or the whole state dict when ``full``), uncopied."""
    if full:
        return dict(backbone.state_dict())
    out: dict[str, torch.Tensor] = {k: p for k, p in backbone.named_parameters() if p.requires_grad}
    out.update(dict(backbone.named_buffers()))
    return out


def _backbone_state(backbone: Backbone, full: bool) -> dict[str, torch.Tensor]:
    """CPU copies of :func:`_backbone_tensors` (what the checkpoint stores)."""
    return {k: v.detach().cpu().clone() for k, v in _backbone_tensors(backbone, full).items()}


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and path != "backbone.overrides":
            out += _config_diff(va, vb, path + ".")
        elif va != vb and path not in _RESUME_FREE:
            out.append(f"{path}: {va!r} -> {vb!r}")
    return out


class _TrainModule(nn.Module):
    """Backbone + head → mean proxy loss of a batch (the unit DDP wraps).

    With ``freeze_norm_stats``, ``train()`` leaves the backbone's BatchNorm layers in eval mode.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: ProxyHead,
        backbone_trainable: bool,
        freeze_norm_stats: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_trainable = backbone_trainable
        self.freeze_norm_stats = freeze_norm_stats

    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        if mode and self.freeze_norm_stats:
            freeze_norm_statistics(self.backbone)
        return self

    def forward(self, wave: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.backbone_trainable and torch.is_grad_enabled()):
            emb = self.backbone.embed(wave)  # (b, D)
        return self.head.loss(emb.float(), labels)


class _MetricsLog:
    """``metrics.csv`` (rewritten atomically) + optional TensorBoard, on rank 0 only."""

    def __init__(
        self, out_dir: Path, active: bool, tensorboard: bool, keep_until_step: int
    ) -> None:
        self.path = out_dir / METRICS_NAME
        self.active = active
        self.rows: list[dict[str, Any]] = []
        self.writer: Any = None
        if not active:
            return
        if keep_until_step > 0 and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as fh:
                # rows written after the checkpoint by an interrupted run are dropped
                self.rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(
                    str(out_dir / "tensorboard"),
                    purge_step=keep_until_step if keep_until_step else None,
                )
            except Exception as err:  # tensorboard missing or broken: the CSV is enough
                logger.info("TensorBoard logging disabled: %s", err)

    def log(self, kind: str, epoch: int, step: int, values: dict[str, Any]) -> None:
        if not self.active:
            return
        row = {"kind": kind, "epoch": epoch, "step": step, **values}
        self.rows.append({k: row.get(k, "") for k in _METRIC_FIELDS})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(_METRIC_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and k != "elapsed_s" and math.isfinite(v):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# -- the loop ---------------------------------------------------------------------------------
def train(
    cfg: ExperimentConfig,
    clips: Sequence[Clip],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    val_clips: Sequence[Clip] | None = None,
    progress: bool = True,
    callback: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Fine-tune a backbone with the ArcFace proxy task on normal training clips.

    Args:
        cfg: The experiment config.
        clips: Training clips (normal sounds; typically ``table.filter(split="train")``).
        out_dir: Folder for ``checkpoint.pt``, ``metrics.csv``, ``config.json``, TensorBoard.
        resume: Continue from ``out_dir/checkpoint.pt`` when present (a finished run returns
            at once). ``False`` starts over (the old checkpoint is overwritten).
        val_clips: Labelled test clips for the per-epoch k-NN validation (Ω).
        progress: Show tqdm progress bars (rank 0 only).
        callback: Called with a :class:`StepInfo` after every optimiser step (and after the
            checkpoint of that step, if any); an exception raised there stops training.

    Returns:
        A :class:`TrainResult` with the trained (unmerged) backbone and head.

    Raises:
        ValueError: no clips, or a checkpoint in ``out_dir`` from a different configuration.
    """
    clips = list(clips)
    if not clips:
        raise ValueError("train() needs at least one training clip, got none")
    n_test = sum(1 for c in clips if c.split == "test" or c.label == "anomaly")
    if n_test:
        raise ValueError(
            f"{n_test} of the training clips are test or anomalous clips; train on normal train clips only"
        )
    info = init_distributed()
    try:
        with _determinism(cfg.train.deterministic):
            return _train(cfg, clips, Path(out_dir), info, resume, val_clips, progress, callback)
    finally:
        destroy_distributed(info)


def _train(
    cfg: ExperimentConfig,
    clips: list[Clip],
    out_dir: Path,
    info: DistInfo,
    resume: bool,
    val_clips: Sequence[Clip] | None,
    progress: bool,
    callback: Callable[[StepInfo], None] | None,
) -> TrainResult:
    tc = cfg.train
    device = resolve_device(tc.device, info)
    on_gpu = device.type == "cuda"
    accelerated = _accelerated(device)
    use_amp = tc.amp == "bf16" and accelerated
    use_compile = tc.compile and accelerated
    if tc.amp == "bf16" and not accelerated:
        logger.info("train.amp='bf16' is ignored on %s (GPU only)", device)
    if tc.compile and not accelerated:
        logger.info("train.compile=True is ignored on %s (GPU only)", device)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # -- model ------------------------------------------------------------------------------
    class_map = build_class_map(clips)
    _seed_everything(tc.seed)
    backbone = build_backbone(cfg.backbone)
    has_params = any(True for _ in backbone.parameters())
    if has_params:
        apply_finetuning(backbone, cfg.finetune)
    else:
        logger.info("backbone %s has no parameters: training the head only", cfg.backbone.name)
    backbone_trainable = trainable_parameter_count(backbone) > 0
    head = ProxyHead(backbone.embed_dim, len(class_map), cfg.head)
    n_trainable = trainable_parameter_count(backbone) + trainable_parameter_count(head)
    if backbone.input_kind == "fbank" and cfg.data.spec_augment is not None:
        from stetho.frontend.specaugment import SpecAugment

        backbone.set_spec_augment(SpecAugment(cfg.data.spec_augment))
    else:
        backbone.set_spec_augment(None)
    backbone.to(device)
    head.to(device)
    # full state when the backbone's weights cannot be rebuilt from a checkpoint file
    full_state = cfg.backbone.checkpoint is None or cfg.finetune.strategy == "full"
    params = [p for p in list(backbone.parameters()) + list(head.parameters()) if p.requires_grad]
    params = list({id(p): p for p in params}.values())
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    logger.info(
        "training %s (%s): %d trainable backbone + %d head parameters, %d classes, device %s",
        cfg.backbone.name,
        cfg.finetune.strategy if has_params else "head only",
        trainable_parameter_count(backbone),
        trainable_parameter_count(head),
        len(class_map),
        device,
    )

    # -- data -------------------------------------------------------------------------------
    crop = resolve_crop_samples(
        clips, backbone.sample_rate, cfg.data.crop_seconds(backbone.input_kind)
    )
    cache = WaveformCache(cfg.data.cache_mb << 20)
    dataset = ClipDataset(
        clips, backbone.sample_rate, class_map, crop_samples=crop, seed=tc.seed, cache=cache
    )
    batch_sizes = global_batch_sizes(len(dataset), tc.batch_size, info.world_size)
    steps_per_epoch = len(batch_sizes)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} training clips are too few for {info.world_size} processes"
        )
    total_steps = steps_per_epoch * tc.epochs
    warmup = (
        tc.warmup_steps
        if tc.warmup_steps is not None
        else round(tc.warmup_epochs * steps_per_epoch)
    )

    # -- resume -----------------------------------------------------------------------------
    ckpt_path = out_dir / CHECKPOINT_NAME
    epoch, step_in_epoch, global_step = 0, 0, 0
    loss_sum, loss_count = 0.0, 0  # running sums of the current epoch (kept in checkpoints)
    lr = tc.lr
    history: list[dict[str, Any]] = []
    cfg_dict = cfg.to_dict()
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path}: unsupported checkpoint format {state.get('format')!r}")
        diff = _config_diff(state["config"], cfg_dict)
        if diff:
            raise ValueError(
                f"{ckpt_path} was written with a different configuration ({'; '.join(diff[:5])}); "
                "use another output folder or resume=False to start over"
            )
        if state["class_map"] != class_map.classes:
            raise ValueError(
                f"{ckpt_path}: the training clips' classes differ from the checkpoint's"
            )
        missing = set(_backbone_tensors(backbone, full_state)) - set(state["backbone"])
        if missing:
            raise ValueError(
                f"{ckpt_path}: backbone weights missing from the checkpoint: {sorted(missing)[:5]}"
            )
        backbone.load_state_dict(state["backbone"], strict=False)
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["step"]
        loss_sum, loss_count = float(state["epoch_loss_sum"]), int(state["epoch_loss_count"])
        history = list(state["history"])
        rngs = state["rng"]
        _set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
        logger.info("resumed from %s: epoch %d, step %d", ckpt_path, epoch, global_step)
    elif info.is_main:
        atomic_write_text(out_dir / "config.json", cfg.to_json() + "\n")
        class_map.save(out_dir / "class_map.json")
    if not (resume and ckpt_path.is_file()):
        # Different per-process augmentation streams (SpecAugment, dropout) after identical init.
        _seed_everything(tc.seed + info.rank)

    metrics = _MetricsLog(out_dir, info.is_main, tc.tensorboard, global_step)
    freeze_stats = has_params and norm_stats_frozen(cfg.finetune)
    module = _TrainModule(backbone, head, backbone_trainable, freeze_stats)
    runner: nn.Module = module
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # trainable backbone weights can go unused in a step (classifiers outside the embedding
        # path, layer drop); the head's parameters are always used
        runner = DistributedDataParallel(
            module,
            device_ids=[device.index] if on_gpu else None,
            find_unused_parameters=backbone_trainable,
        )
    if use_compile:
        # after DDP (graph breaks at bucket boundaries); ``backbone``/``head`` stay uncompiled
        runner = torch.compile(runner, **_COMPILE_OPTIONS)  # type: ignore[assignment]

    def save_checkpoint(epoch_done: int, in_epoch: int) -> None:
        rngs = all_gather_objects(_rng_state(), info)
        if not info.is_main:
            return
        state = {
            "format": _CHECKPOINT_FORMAT,
            "epoch": epoch_done,
            "step_in_epoch": in_epoch,
            "step": global_step,
            "backbone": _backbone_state(backbone, full_state),
            "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "rng": rngs,
            "class_map": list(class_map.classes),
            "config": cfg_dict,
            "history": history,
            "epoch_loss_sum": loss_sum,
            "epoch_loss_count": loss_count,
        }
        with atomic_write(ckpt_path, "wb") as fh:
            try:
                torch.save(state, fh)
            except RuntimeError as err:  # torch wraps a failed write (disk full) in RuntimeError
                raise write_error(ckpt_path, err) from err

    t0 = time.monotonic()
    try:
        while epoch < tc.epochs:
            sampler = GlobalBatchSampler(
                len(dataset),
                tc.batch_size,
                tc.seed,
                epoch,
                info.rank,
                info.world_size,
                start_step=step_in_epoch,
            )
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=collate_batch,
                num_workers=tc.num_workers,
                # a private generator: creating the iterator must not consume the global RNG
                generator=torch.Generator().manual_seed(tc.seed + epoch),
                pin_memory=on_gpu,
            )
            module.train()  # BatchNorm layers stay in eval mode when statistics are frozen
            bar = _progress(
                progress and info.is_main,
                steps_per_epoch,
                step_in_epoch,
                f"epoch {epoch + 1}/{tc.epochs}",
            )
            for batch in loader:
                n_global = batch_sizes[step_in_epoch]
                lr = tc.lr * lr_factor(
                    global_step, warmup, total_steps, tc.schedule, tc.min_lr_ratio
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                wave = batch["wave"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss_mean = runner(wave, labels)
                # local sum / global count, times world size (DDP averages over processes);
                # backward outside autocast, fp32 parameters: no GradScaler needed for bf16
                scale = wave.shape[0] * info.world_size / n_global
                (loss_mean * scale).backward()
                grad_norm = (
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                    if tc.grad_clip is not None
                    else torch.nn.utils.clip_grad_norm_(params, float("inf"))
                )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                global_step += 1
                step_in_epoch += 1
                # reduced on the training device: NCCL cannot reduce CPU tensors
                step_loss = float(
                    all_reduce_sum(loss_mean.detach().double() * wave.shape[0], info) / n_global
                )
                loss_sum += step_loss
                loss_count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
                if global_step % tc.log_every == 0:
                    metrics.log(
                        "step",
                        epoch,
                        global_step,
                        {"lr": lr, "loss": step_loss, "grad_norm": float(grad_norm),
                         "elapsed_s": round(time.monotonic() - t0, 3)},
                    )  # fmt: skip
                epoch_done = step_in_epoch == steps_per_epoch
                if (
                    tc.checkpoint_every_steps
                    and global_step % tc.checkpoint_every_steps == 0
                    and not epoch_done
                ):
                    save_checkpoint(epoch, step_in_epoch)
                if callback is not None:
                    callback(StepInfo(epoch, global_step, step_in_epoch, step_loss, lr))
            if bar is not None:
                bar.close()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": global_step,
                "loss": loss_sum / loss_count if loss_count else float("nan"),
                "lr": lr,
                "seconds": round(time.monotonic() - t0, 3),
            }
            if val_clips and tc.val_every and (epoch + 1) % tc.val_every == 0:
                if info.is_main:
                    record.update(
                        _validate(
                            cfg, backbone, head, class_map, clips, val_clips, device, cache.load
                        )
                    )
                barrier(info)
            history.append(record)
            metrics.log(
                "epoch",
                epoch + 1,
                global_step,
                {
                    k: record.get(k, "")
                    for k in ("lr", "loss", "val_official_score", "val_arithmetic_mean")
                }
                | {"elapsed_s": record["seconds"]},
            )
            epoch += 1
            step_in_epoch = 0
            loss_sum, loss_count = 0.0, 0
            save_checkpoint(epoch, 0)
            logger.info(
                "epoch %d/%d: loss %.4f%s",
                epoch,
                tc.epochs,
                record["loss"],
                f", val Ω {record['val_official_score']:.4f}"
                if "val_official_score" in record
                else "",
            )
    finally:
        metrics.close()
    barrier(info)
    backbone.eval()
    head.eval()
    backbone.set_spec_augment(None)
    return TrainResult(
        backbone=backbone,
        head=head,
        class_map=class_map,
        config=cfg,
        out_dir=out_dir,
        checkpoint=ckpt_path if ckpt_path.is_file() else None,
        epochs=epoch,
        steps=global_step,
        history=history,
        device=str(device),
        trainable_params=n_trainable,
    )


def _progress(enabled: bool, total: int, initial: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _validate(
    cfg: ExperimentConfig,
    backbone: Backbone,
    head: ProxyHead,
    class_map: ClassMap,
    train_clips: Sequence[Clip],
    val_clips: Sequence[Clip],
    device: torch.device,
    loader: Callable[[Path, int], np.ndarray] | None = None,
) -> dict[str, float]:
    """Embed train clips → k-NN banks → score the labelled val clips → Ω.

    A validation set the official metrics cannot be computed on (e.g. a section without
    anomalies) is logged and skipped instead of stopping the training.
    """
    from stetho.detector.detector import Detector
    from stetho.evaluation import GroundTruthError, MetricError, evaluate, truth_from_clips

    # per-module modes, restored exactly (BatchNorm layers kept in eval mode stay there)
    modes = [(m, m.training) for m in (*backbone.modules(), *head.modules())]
    spec = backbone.spec_augment
    backbone.set_spec_augment(None)
    try:
        det = Detector(cfg, backbone, head, class_map, device=device, waveform_loader=loader)
        det.fit(train_clips, fit_thresholds=False)
        keys = set(det.keys)
        usable = [c for c in val_clips if c.key in keys]
        if not usable:
            logger.warning(
                "validation skipped: no validation clip belongs to a trained machine/section"
            )
            return {}
        scores = det.score_clips(usable)
        years = [c.year for c in usable if c.year is not None]
        year = cfg.data.year or (max(set(years), key=years.count) if years else 2023)
        try:
            result = evaluate(scores, truth_from_clips(usable), year=year, ci95=False)
        except (MetricError, GroundTruthError) as err:
            logger.warning("validation skipped: %s", err)
            return {}
    finally:
        backbone.set_spec_augment(spec)
        for m, mode in modes:
            m.training = mode
    return {
        "val_official_score": float(result.official_score),
        "val_arithmetic_mean": float(result.arithmetic_mean),
    }
