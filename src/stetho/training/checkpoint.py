"""The resumable training checkpoint: what it holds, how it is written, read and checked.

``out_dir/checkpoint.pt`` (``torch.save``, read with ``weights_only=True``) holds the trainable
backbone tensors and buffers (the whole state dict when the backbone cannot be rebuilt from a
weights file), the head, the optimiser, every process's RNG states, the epoch/step counters, the
running loss of the current epoch, the history and the config. It is written atomically, so a
kill never leaves half a file; :func:`read_checkpoint` refuses a checkpoint of another format,
another configuration (except :data:`RESUME_FREE` settings) or other classes, and
:func:`check_finite_state` one with NaN or infinite weights, optimiser state or running loss (a run
that diverged: resuming it would train a whole epoch at ``loss=nan``).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stetho.backbones import Backbone
from stetho.training.distributed import all_gather_objects
from stetho.utils.errors import InputError
from stetho.utils.io import atomic_write, write_error

if TYPE_CHECKING:
    from stetho.training.state import TrainState

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "RESUME_FREE",
    "backbone_state",
    "backbone_tensors",
    "check_finite_state",
    "config_diff",
    "read_checkpoint",
    "resume_from_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_checkpoint",
]

logger = logging.getLogger(__name__)

#: Resumable checkpoint written in the training output folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: Version of the checkpoint layout.
CHECKPOINT_FORMAT = 1
#: Settings that may change between a checkpoint and its resumption without changing the maths.
RESUME_FREE = frozenset(
    {
        "train.log_every",
        "train.checkpoint_every_steps",
        "train.num_workers",
        "train.device",
        "train.tensorboard",
        "train.val_every",
        "data.cache_mb",
    }
)


def rng_state() -> dict[str, Any]:
    """The torch, NumPy, Python (and CUDA) RNG states, in a ``weights_only``-loadable form."""
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


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def backbone_tensors(backbone: Backbone, full: bool) -> dict[str, torch.Tensor]:
    """Trainable parameters and all buffers (or the whole state dict when ``full``), uncopied."""
    if full:
        return dict(backbone.state_dict())
    out: dict[str, torch.Tensor] = {k: p for k, p in backbone.named_parameters() if p.requires_grad}
    out.update(dict(backbone.named_buffers()))
    return out


def backbone_state(backbone: Backbone, full: bool) -> dict[str, torch.Tensor]:
    """CPU copies of :func:`backbone_tensors` (what the checkpoint stores)."""
    return {k: v.detach().cpu().clone() for k, v in backbone_tensors(backbone, full).items()}


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """``"path: old -> new"`` for every setting that differs, :data:`RESUME_FREE` ones aside."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and path != "backbone.overrides":
            out += config_diff(va, vb, path + ".")
        elif va != vb and path not in RESUME_FREE:
            out.append(f"{path}: {va!r} -> {vb!r}")
    return out


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format version) atomically to ``path``."""
    with atomic_write(path, "wb") as fh:
        try:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, fh)
        except RuntimeError as err:  # torch wraps a failed write (disk full) in RuntimeError
            raise write_error(path, err) from err


def read_checkpoint(
    path: Path,
    config: dict[str, Any],
    classes: list[str],
    backbone_keys: set[str],
    normalise: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read a checkpoint and check that it belongs to this run.

    Args:
        path: The checkpoint file.
        config: The run's config (``ExperimentConfig.to_dict()``).
        classes: The run's proxy classes.
        backbone_keys: Backbone tensors the checkpoint must hold.
        normalise: Maps the saved config to today's key names before the comparison (renamed
            keys of older checkpoints are no difference).

    Returns:
        The checkpoint's dict (tensors on the CPU).

    Raises:
        ValueError: another format, configuration or class list, or missing backbone weights;
            the message names the file.
    """
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
    saved = state["config"]
    if normalise is not None:
        with contextlib.suppress(ValueError):  # not today's config at all: compare as saved
            saved = normalise(saved)
    diff = config_diff(saved, config)
    if diff:
        raise ValueError(
            f"{path} was written with a different configuration ({'; '.join(diff[:5])}); "
            "use another output folder or resume=False to start over"
        )
    if state["class_map"] != classes:
        raise ValueError(f"{path}: the training clips' classes differ from the checkpoint's")
    missing = backbone_keys - set(state["backbone"])
    if missing:
        raise ValueError(
            f"{path}: backbone weights missing from the checkpoint: {sorted(missing)[:5]}"
        )
    return state


def _first_bad(tensors: dict[str, Any], nan_only: frozenset[str] = frozenset()) -> str | None:
    """Name of the first floating tensor holding NaN (or, outside ``nan_only``, ±inf)."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            bad = torch.isnan(t) if name in nan_only else ~torch.isfinite(t)
            if bool(bad.any()):
                return name
    return None


def check_finite_state(
    path: Path, saved: dict[str, Any], buffers: AbstractSet[str] = frozenset()
) -> None:
    """Refuse a checkpoint whose weights, optimiser state or running loss are not finite.

    Args:
        path: The checkpoint file (named in the error).
        saved: What :func:`read_checkpoint` returned.
        buffers: Backbone buffer names, where ±inf may be legitimate (masks): NaN only there.

    Raises:
        InputError: names the file and the first bad tensor, and what to do.
    """
    problem = None
    bad = _first_bad(saved.get("backbone", {}), frozenset(buffers))
    if bad is not None:
        problem = f"backbone tensor {bad!r}"
    elif (bad := _first_bad(saved.get("head", {}))) is not None:
        problem = f"head tensor {bad!r}"
    else:
        for idx, per_param in saved.get("optimizer", {}).get("state", {}).items():
            if (bad := _first_bad(dict(per_param))) is not None:
                problem = f"optimiser state {bad!r} of parameter {idx}"
                break
    loss_sum = saved.get("epoch_loss_sum", 0.0)
    if problem is None and not np.isfinite(float(loss_sum)):
        problem = f"the running loss of epoch {int(saved.get('epoch', 0)) + 1} ({loss_sum!r})"
    if problem is not None:
        raise InputError(
            f"{path}: {problem} holds NaN or infinite values: the checkpoint was written by a "
            "run that diverged, and resuming it would train on NaN. Start over (delete it, or "
            "train with resume=False / another output folder) with a lower train.lr or "
            "train.grad_clip set, and check the training clips"
        )


# -- a training run's checkpoint --------------------------------------------------------------
def save_checkpoint(state: TrainState) -> None:
    """Write ``out_dir/checkpoint.pt`` (rank 0; every process contributes its RNG states)."""
    rngs = all_gather_objects(rng_state(), state.info)
    if not state.info.is_main:
        return
    write_checkpoint(
        state.out_dir / CHECKPOINT_NAME,
        {
            "epoch": state.epoch,
            "step_in_epoch": state.step_in_epoch,
            "step": state.step,
            "backbone": backbone_state(state.backbone, state.full_state),
            "head": {k: v.detach().cpu().clone() for k, v in state.head.state_dict().items()},
            "optimizer": state.optimizer.state_dict(),
            "rng": rngs,
            "class_map": list(state.class_map.classes),
            "config": state.cfg.to_dict(),
            "history": state.history,
            "epoch_loss_sum": state.loss_sum,
            "epoch_loss_count": state.loss_count,
        },
    )
    state.saved_step = state.step


def resume_from_checkpoint(state: TrainState) -> bool:
    """Load ``out_dir/checkpoint.pt`` into ``state`` if present; ``False`` when there is none.

    Raises:
        ValueError: the checkpoint belongs to another configuration or class list.
        InputError: it holds NaN or infinite weights, optimiser state or loss
            (:func:`check_finite_state`); the message names the file.
    """
    path = state.out_dir / CHECKPOINT_NAME
    if not path.is_file():
        return False
    saved = read_checkpoint(
        path,
        state.cfg.to_dict(),
        list(state.class_map.classes),
        set(backbone_tensors(state.backbone, state.full_state)),
        normalise=lambda saved: type(state.cfg).from_dict(saved).to_dict(),
    )
    check_finite_state(path, saved, {k for k, _ in state.backbone.named_buffers()})
    state.backbone.load_state_dict(saved["backbone"], strict=False)
    state.head.load_state_dict(saved["head"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch, state.step_in_epoch, state.step = (
        saved["epoch"],
        saved["step_in_epoch"],
        saved["step"],
    )
    state.loss_sum = float(saved["epoch_loss_sum"])
    state.loss_count = int(saved["epoch_loss_count"])
    state.history = list(saved["history"])
    state.saved_step = state.step
    rngs = saved["rng"]
    set_rng_state(rngs[state.info.rank] if state.info.rank < len(rngs) else rngs[0])
    logger.info("resumed from %s: epoch %d, step %d", path, state.epoch, state.step)
    return True
