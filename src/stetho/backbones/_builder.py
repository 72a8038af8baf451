"""The one load path of every backbone: find → load → unwrap → strict load, errors wrapped.

* :func:`read_checkpoint`: a checkpoint spec (path, URL, cached file name) → ``(path, object)``
  with ``weights_only`` loading unless trusted;
* :func:`load_pretrained`: find, load, unwrap, optionally adapt the keys, then :func:`load_strict`
  into a model: one :class:`CheckpointError` naming the file, the missing / unexpected keys and
  shape mismatches, and a family-specific hint;
* for sharded hub checkpoints (Whisper, Qwen-Audio): :func:`read_prefixed` reads only the tensors
  under a key prefix; :func:`check_overrides` and :func:`loaded_from` keep the config honest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stetho.backbones._hub import looks_like_hub_id
from stetho.backbones.base import PretrainedCfg
from stetho.backbones.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resolve_checkpoint,
    unwrap_state_dict,
)

__all__ = [
    "check_overrides",
    "load_pretrained",
    "load_strict",
    "loaded_from",
    "read_checkpoint",
    "read_prefixed",
]

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def read_checkpoint(
    spec: str | os.PathLike[str],
    *,
    trust: bool = False,
    filename: str | None = None,
    sha256: str | None = None,
    not_found_hint: str | None = None,
    find: Callable[[str | os.PathLike[str]], Path] | None = None,
) -> tuple[Path, Any]:
    """Find a checkpoint file and load it (``weights_only`` unless ``trust``).

    Args:
        spec: Local path, URL or cached file name (or what ``find`` accepts).
        trust: Allow pickled objects.
        filename, sha256: Passed to :func:`resolve_checkpoint` (cache name, integrity check).
        not_found_hint: Appended to the error when the file cannot be found (e.g. where the
            official weights are published).
        find: Replaces :func:`resolve_checkpoint` (e.g. a family that also accepts hub ids).

    Returns:
        ``(path, loaded object)``.
    """
    try:
        if find is not None:
            path = find(spec)
        else:
            path = resolve_checkpoint(spec, filename=filename, sha256=sha256)
    except CheckpointError as err:
        if not_found_hint is None:
            raise
        raise CheckpointError(f"{err} {not_found_hint}") from err
    return path, load_checkpoint(path, trust=trust)


def load_strict(module: nn.Module, state_dict: StateDict, what: str, hint: str = "") -> None:
    """``load_state_dict(strict=True)`` with one readable :class:`CheckpointError`.

    The message names ``what`` (the file), the missing and unexpected keys, shape mismatches and
    ``hint`` (e.g. the architecture the model was built with). Keys are compared before loading,
    so a mismatching checkpoint leaves the model untouched, unless a module rewrites keys while
    loading (a load-state-dict pre-hook, e.g. CED's fused ``qkv``): then torch's own check runs.
    """
    rewrites = any(m._load_state_dict_pre_hooks for m in module.modules())
    if not rewrites:
        problem = _mismatch(module.state_dict(), state_dict)
        if problem:
            raise CheckpointError(_message(what, hint, problem))
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(_message(what, hint, str(err))) from err


def _mismatch(own: StateDict, state_dict: StateDict) -> str:
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    )
    if not (missing or unexpected or wrong):
        return ""
    return (
        f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
        f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, "
        f"shape mismatches {wrong[:8]}"
    )


def _message(what: str, hint: str, problem: str) -> str:
    return f"{what}: state dict does not match the model{f' ({hint})' if hint else ''}: {problem}"


def load_pretrained(
    model: nn.Module,
    spec: str | os.PathLike[str],
    *,
    trust: bool = False,
    filename: str | None = None,
    sha256: str | None = None,
    unwrap_keys: tuple[str, ...] | None = None,
    adapt: Callable[[StateDict, Path], StateDict] | None = None,
    hint: str = "",
    not_found_hint: str | None = None,
    find: Callable[[str | os.PathLike[str]], Path] | None = None,
) -> Path:
    """Find → load → unwrap → adapt → strict load of a checkpoint into ``model``.

    Args:
        model: The model (built with the architecture the checkpoint should have).
        spec, trust, filename, sha256, not_found_hint, find: See :func:`read_checkpoint`.
        unwrap_keys: Wrapper keys tried by :func:`unwrap_state_dict` (default: its own list).
        adapt: ``adapt(state, path) -> state``: key renames, dropped heads, filled buffers.
        hint: Architecture summary for the mismatch message.

    Returns:
        The checkpoint file loaded.
    """
    path, raw = read_checkpoint(
        spec,
        trust=trust,
        filename=filename,
        sha256=sha256,
        not_found_hint=not_found_hint,
        find=find,
    )
    state = dict(
        unwrap_state_dict(raw) if unwrap_keys is None else unwrap_state_dict(raw, keys=unwrap_keys)
    )
    if adapt is not None:
        state = adapt(state, path)
    load_strict(model, state, str(path), hint)
    logger.info("loaded %s (%d tensors)", path, len(state))
    return path


def read_prefixed(
    files: Iterable[Path], prefixes: tuple[str, ...], marker: str
) -> dict[str, torch.Tensor]:
    """Read the tensors under the first prefix ``p`` for which ``p + marker`` exists; strip ``p``.

    Safetensors files are read lazily, so only the selected tensors are materialised.
    """
    files = list(files)
    from safetensors import safe_open

    loaded: dict[Path, dict[str, torch.Tensor]] = {}
    keys: dict[str, Path] = {}
    for f in files:
        if f.suffix == ".safetensors":
            try:
                with safe_open(str(f), framework="pt", device="cpu") as fh:
                    keys.update(dict.fromkeys(fh.keys(), f))
            except Exception as err:
                raise CheckpointError(f"{f}: not a readable safetensors file: {err}") from err
        else:
            loaded[f] = unwrap_state_dict(load_checkpoint(f))
            keys.update(dict.fromkeys(loaded[f], f))
    prefix = next((p for p in prefixes if p + marker in keys), None)
    if prefix is None:
        sample = sorted(keys)[:5]
        raise CheckpointError(
            f"{[str(f) for f in files]}: expected a tensor named one of "
            f"{[p + marker for p in prefixes]}; first keys found: {sample}"
        )
    out: dict[str, torch.Tensor] = {}
    wanted = sorted(k for k in keys if k.startswith(prefix))
    for f in files:
        names = [k for k in wanted if keys[k] == f]
        if not names:
            continue
        if f in loaded:
            out.update({k[len(prefix) :]: loaded[f][k] for k in names})
        else:
            with safe_open(str(f), framework="pt", device="cpu") as fh:
                out.update({k[len(prefix) :]: fh.get_tensor(k) for k in names})
    logger.debug("read %d tensors under prefix %r (of %d)", len(out), prefix, len(keys))
    return out


def loaded_from(pretrained: PretrainedCfg, checkpoint: str) -> PretrainedCfg:
    """``pretrained`` with its origin fields set to the checkpoint actually loaded."""
    hub = checkpoint if looks_like_hub_id(checkpoint) and not Path(checkpoint).exists() else None
    return dataclasses.replace(pretrained, source=checkpoint, hub_id=hub, url=None)


def check_overrides(overrides: dict[str, Any], actual: dict[str, Any], where: str) -> None:
    """Explicit architecture overrides must agree with what the checkpoint defines."""

    def norm(v: Any) -> Any:  # configs saved as JSON turn tuples into lists
        return tuple(v) if isinstance(v, list) else v

    clash = {
        k: (overrides[k], v)
        for k, v in actual.items()
        if k in overrides and norm(overrides[k]) != norm(v)
    }
    if clash:
        detail = ", ".join(f"{k}={a!r} but checkpoint has {b!r}" for k, (a, b) in clash.items())
        raise ValueError(f"architecture overrides contradict {where}: {detail}")
