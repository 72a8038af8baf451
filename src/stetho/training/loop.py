"""The fine-tuning loop: backbone + (LoRA / full / frozen) + ArcFace proxy head.

::

    validate = knn_validator(cfg, train_clips, dev_test)          # stetho.pipelines
    result = train(cfg, train_clips, "runs/beats_lora", validate=validate)
    result.history[-1]["val_official_score"]

The run is a :class:`TrainState` moved along by small steps: :func:`setup` (models, optimiser,
data), :func:`resume_from_checkpoint` or :func:`start_fresh`, then per epoch :func:`run_epoch`
(:func:`train_step` per batch, :func:`save_checkpoint` every ``train.checkpoint_every_steps``) and
:func:`end_epoch` (validation, history, checkpoint).

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
* a non-finite loss or gradient norm stops the run before its optimiser step with a
  :class:`TrainingDivergedError` naming the step (nothing broken is saved: the last checkpoint
  stays the last good state), and a checkpoint or initial weights holding NaN are refused at
  the start (:func:`~stetho.training.checkpoint.check_finite_state`);
* ``metrics.csv`` (and TensorBoard events) log the loss, learning rate and gradient norm; with a
  ``validate`` callable (the pipelines build a k-NN one on labelled dev test clips:
  :func:`stetho.pipelines.knn_validator`) each epoch ends with a validation: official score Ω,
  arithmetic mean. Training never imports the detector.

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
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn
from torch.utils.data import DataLoader

from stetho.backbones import Backbone
from stetho.config import BackboneConfig, ExperimentConfig
from stetho.data import Clip
from stetho.model.adapt import freeze_norm_statistics, norm_stats_frozen
from stetho.model.heads import ProxyHead
from stetho.training.checkpoint import CHECKPOINT_NAME, resume_from_checkpoint, save_checkpoint
from stetho.training.dataset import GlobalBatchSampler, collate_batch
from stetho.training.distributed import (
    all_reduce_sum,
    barrier,
    destroy_distributed,
    init_distributed,
)
from stetho.training.metrics import METRICS_NAME, MetricsLog
from stetho.training.state import (
    StepInfo,
    TrainedModel,
    TrainResult,
    TrainState,
    Validator,
    build_backbone,
    resolve_device,
    seed_everything,
    setup,
)
from stetho.utils.errors import InputError, StethoError
from stetho.utils.io import atomic_write_text

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "StepInfo",
    "TrainResult",
    "TrainState",
    "TrainedModel",
    "TrainingDivergedError",
    "Validator",
    "build_backbone",
    "end_epoch",
    "lr_factor",
    "resolve_device",
    "resume_from_checkpoint",
    "run_epoch",
    "save_checkpoint",
    "setup",
    "start_fresh",
    "train",
    "train_step",
    "validate_model",
]

logger = logging.getLogger(__name__)


class TrainingDivergedError(StethoError, FloatingPointError):
    """The loss or the gradient norm of a step is NaN or infinite; the message says what to do."""


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


# -- the algorithm --------------------------------------------------------------------------
def train(
    cfg: ExperimentConfig,
    clips: Sequence[Clip],
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    validate: Validator | None = None,
    progress: bool = True,
    callback: Callable[[StepInfo], None] | None = None,
    backbone_factory: Callable[[BackboneConfig], Backbone] | None = None,
    accelerate: bool | None = None,
    compile_options: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune a backbone with the ArcFace proxy task on normal training clips.

    Args:
        cfg: The experiment config.
        clips: Training clips (normal sounds; typically ``table.filter(split="train")``).
        out_dir: Folder for ``checkpoint.pt``, ``metrics.csv``, ``config.json``, TensorBoard.
        resume: Continue from ``out_dir/checkpoint.pt`` when present (a finished run returns
            at once). ``False`` starts over (the old checkpoint is overwritten).
        validate: Called on rank 0 every ``train.val_every`` epochs with a
            :class:`TrainedModel`; its metrics join the epoch's record (see
            :func:`stetho.pipelines.knn_validator`).
        progress: Show tqdm progress bars (rank 0 only).
        callback: Called with a :class:`StepInfo` after every optimiser step (and after the
            checkpoint of that step, if any); an exception raised there stops training.
        backbone_factory: Builds the backbone from ``cfg.backbone`` (default
            :func:`build_backbone`; e.g. a custom or instrumented model).
        accelerate: Use the GPU-only options (``train.amp``, ``train.compile``); default: on
            CUDA devices only. ``True`` runs those code paths on any device (tests).
        compile_options: Extra ``torch.compile`` arguments (e.g. ``{"backend": "eager"}``).

    Returns:
        A :class:`TrainResult` with the trained (unmerged) backbone and head.

    Raises:
        ValueError: no clips, or a checkpoint in ``out_dir`` from a different configuration.
    """
    clips = _check_training_clips(clips)
    info = init_distributed()
    try:
        with _determinism(cfg.train.deterministic):
            state = setup(
                cfg,
                clips,
                Path(out_dir),
                info,
                backbone_factory=backbone_factory or build_backbone,
                accelerate=accelerate,
                compile_options=compile_options,
            )
            if not (resume and resume_from_checkpoint(state)):
                start_fresh(state)
            metrics = MetricsLog(state.out_dir, info.is_main, cfg.train.tensorboard, state.step)
            try:
                runner = training_module(state)
                state.t0 = time.monotonic()
                while state.epoch < cfg.train.epochs:
                    run_epoch(state, runner, metrics, progress=progress, callback=callback)
                    end_epoch(state, metrics, validate)
            finally:
                metrics.close()
            barrier(info)
            return _result(state)
    finally:
        destroy_distributed(info)


def _check_training_clips(clips: Sequence[Clip]) -> list[Clip]:
    out = list(clips)
    if not out:
        raise ValueError("train() needs at least one training clip, got none")
    n_test = sum(1 for c in out if c.split == "test" or c.label == "anomaly")
    if n_test:
        raise ValueError(
            f"{n_test} of the training clips are test or anomalous clips; train on normal train clips only"
        )
    return out


def start_fresh(state: TrainState) -> None:
    """Write ``config.json`` and ``class_map.json`` (rank 0) and seed each process.

    Raises:
        InputError: the initial backbone or head weights hold NaN or infinite values (e.g. a
            damaged backbone checkpoint); the message names it.
    """
    for what, module in (("backbone", state.backbone), ("head", state.head)):
        bad = next((n for n, p in module.named_parameters() if not bool(p.isfinite().all())), None)
        if bad is not None:
            origin = state.cfg.backbone.checkpoint if what == "backbone" else None
            raise InputError(
                f"{origin or what}: initial {what} weight {bad!r} holds NaN or infinite values; "
                "training would learn nothing. Use an intact checkpoint"
            )
    if state.info.is_main:
        atomic_write_text(state.out_dir / "config.json", state.cfg.to_json() + "\n")
        state.class_map.save(state.out_dir / "class_map.json")
    # different per-process augmentation streams (SpecAugment, dropout) after identical init
    seed_everything(state.cfg.train.seed + state.info.rank)


def training_module(state: TrainState) -> nn.Module:
    """Backbone + head loss as one module, wrapped in DDP and compiled as configured.

    ``torch.compile`` comes after the DDP wrapper (graph breaks at bucket boundaries); the
    state's ``backbone``/``head`` stay uncompiled, so checkpoints carry no wrapper prefixes.
    """
    freeze_stats = state.has_params and norm_stats_frozen(state.cfg.finetune)
    module = _TrainModule(state.backbone, state.head, state.backbone_trainable, freeze_stats)
    runner: nn.Module = module
    if state.info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # trainable backbone weights can go unused in a step (classifiers outside the embedding
        # path, layer drop); the head's parameters are always used
        runner = DistributedDataParallel(
            module,
            device_ids=[state.device.index] if state.device.type == "cuda" else None,
            find_unused_parameters=module.backbone_trainable,
        )
    if state.use_compile:
        runner = torch.compile(runner, **state.compile_options)  # type: ignore[assignment]
    return runner


# -- one epoch ------------------------------------------------------------------------------
def run_epoch(
    state: TrainState,
    runner: nn.Module,
    metrics: MetricsLog,
    *,
    progress: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
) -> None:
    """Train the rest of epoch ``state.epoch`` (from ``state.step_in_epoch`` on)."""
    tc, info = state.cfg.train, state.info
    sampler = GlobalBatchSampler(
        len(state.dataset),
        tc.batch_size,
        tc.seed,
        state.epoch,
        info.rank,
        info.world_size,
        start_step=state.step_in_epoch,
    )
    loader = DataLoader(
        state.dataset,
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=tc.num_workers,
        # a private generator: creating the iterator must not consume the global RNG
        generator=torch.Generator().manual_seed(tc.seed + state.epoch),
        pin_memory=state.device.type == "cuda",
    )
    runner.train()  # BatchNorm layers stay in eval mode when statistics are frozen
    bar = _progress(
        progress and info.is_main,
        state.steps_per_epoch,
        state.step_in_epoch,
        f"epoch {state.epoch + 1}/{tc.epochs}",
    )
    try:
        for batch in loader:
            loss, grad_norm = train_step(state, runner, batch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{state.lr:.2e}")
            if state.step % tc.log_every == 0:
                elapsed = round(time.monotonic() - state.t0, 3)
                metrics.log(
                    "step",
                    state.epoch,
                    state.step,
                    {"lr": state.lr, "loss": loss, "grad_norm": grad_norm, "elapsed_s": elapsed},
                )
            every = tc.checkpoint_every_steps
            if every and state.step % every == 0 and state.step_in_epoch < state.steps_per_epoch:
                save_checkpoint(state)
            if callback is not None:
                callback(StepInfo(state.epoch, state.step, state.step_in_epoch, loss, state.lr))
    finally:
        if bar is not None:
            bar.close()


def train_step(
    state: TrainState, runner: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[float, float]:
    """One optimiser step on a batch: ``(loss averaged over processes, gradient norm)``."""
    tc, info = state.cfg.train, state.info
    n_global = state.batch_sizes[state.step_in_epoch]
    state.lr = tc.lr * lr_factor(
        state.step, state.warmup, state.total_steps, tc.schedule, tc.min_lr_ratio
    )
    for group in state.optimizer.param_groups:
        group["lr"] = state.lr
    wave = batch["wave"].to(state.device, non_blocking=True)
    labels = batch["label"].to(state.device, non_blocking=True)
    with torch.autocast(device_type=state.device.type, dtype=torch.bfloat16, enabled=state.use_amp):
        loss_mean = runner(wave, labels)
    # local sum / global count, times world size (DDP averages over processes);
    # backward outside autocast, fp32 parameters: no GradScaler needed for bf16
    scale = wave.shape[0] * info.world_size / n_global
    (loss_mean * scale).backward()
    max_norm = tc.grad_clip if tc.grad_clip is not None else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(state.params, max_norm))
    # reduced on the training device: NCCL cannot reduce CPU tensors; every process gets the
    # same loss and (DDP-reduced) gradient norm, so all of them stop together
    loss = float(all_reduce_sum(loss_mean.detach().double() * wave.shape[0], info) / n_global)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        state.optimizer.zero_grad(set_to_none=True)
        raise _diverged(state, loss, grad_norm)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.step_in_epoch += 1
    state.loss_sum += loss
    state.loss_count += 1
    return loss, grad_norm


def _diverged(state: TrainState, loss: float, grad_norm: float) -> TrainingDivergedError:
    tc = state.cfg.train
    saved = (
        f"{state.checkpoint_path} holds the last good state (step {state.saved_step}); "
        if state.saved_step is not None
        else "no checkpoint was written; "
    )
    return TrainingDivergedError(
        f"training diverged at step {state.step + 1} (epoch {state.epoch + 1}, batch "
        f"{state.step_in_epoch + 1} of {state.steps_per_epoch}): loss {loss!r}, gradient norm "
        f"{grad_norm!r}. The step was not applied and nothing was saved after it: {saved}"
        f"lower train.lr (now {tc.lr:g}) or set train.grad_clip (now {tc.grad_clip}), and check "
        "the training clips (silent, clipped or corrupt recordings), then train again "
        "(resume=False to start over)"
    )


def end_epoch(state: TrainState, metrics: MetricsLog, validate: Validator | None = None) -> None:
    """Close epoch ``state.epoch``: validate (when due), record, log, checkpoint."""
    tc = state.cfg.train
    record: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "loss": state.loss_sum / state.loss_count if state.loss_count else float("nan"),
        "lr": state.lr,
        "seconds": round(time.monotonic() - state.t0, 3),
    }
    if validate is not None and tc.val_every and (state.epoch + 1) % tc.val_every == 0:
        if state.info.is_main:
            record.update(validate_model(state, validate))
        barrier(state.info)
    state.history.append(record)
    logged = ("lr", "loss", "val_official_score", "val_arithmetic_mean")
    metrics.log(
        "epoch",
        state.epoch + 1,
        state.step,
        {k: record.get(k, "") for k in logged} | {"elapsed_s": record["seconds"]},
    )
    state.epoch += 1
    state.step_in_epoch = 0
    state.loss_sum, state.loss_count = 0.0, 0
    save_checkpoint(state)
    val = record.get("val_official_score")
    logger.info(
        "epoch %d/%d: loss %.4f%s",
        state.epoch,
        tc.epochs,
        record["loss"],
        f", val Ω {val:.4f}" if val is not None else "",
    )


def validate_model(state: TrainState, validate: Validator) -> dict[str, float]:
    """Run ``validate`` without SpecAugment; every module's train/eval mode is restored after."""
    backbone, head = state.backbone, state.head
    modes = [(m, m.training) for m in (*backbone.modules(), *head.modules())]
    spec = backbone.spec_augment
    backbone.set_spec_augment(None)
    try:
        model = TrainedModel(backbone, head, state.class_map, state.device, state.cache.load)
        return {k: float(v) for k, v in validate(model).items()}
    finally:
        backbone.set_spec_augment(spec)
        for m, mode in modes:
            m.training = mode


def _result(state: TrainState) -> TrainResult:
    state.backbone.eval()
    state.head.eval()
    state.backbone.set_spec_augment(None)
    path = state.out_dir / CHECKPOINT_NAME
    return TrainResult(
        backbone=state.backbone,
        head=state.head,
        class_map=state.class_map,
        config=state.cfg,
        out_dir=state.out_dir,
        checkpoint=path if path.is_file() else None,
        epochs=state.epoch,
        steps=state.step,
        history=state.history,
        device=str(state.device),
        trainable_params=state.n_trainable,
    )


def _progress(enabled: bool, total: int, initial: int, desc: str) -> Any:
    if not enabled:
        return None
    from stetho.utils.progress import progress_bar

    return progress_bar(total=total, initial=initial, desc=desc)
