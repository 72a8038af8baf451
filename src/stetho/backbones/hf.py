"""Backbones built on ``transformers`` modules: Wav2Vec2, the Whisper encoder and Qwen-Audio's encoder.

* ``wav2vec2``: :class:`transformers.Wav2Vec2Model` on the raw 16 kHz waveform, normalised per
  utterance; tokens are ``last_hidden_state`` (20 ms frames). The model's own time/feature masking
  is switched off; stetho's SpecAugment never applies to raw-waveform models.
* ``whisper-encoder``: :class:`transformers.WhisperEncoder` on the Whisper log-mel, weights from
  ``openai/whisper-large-v2`` (its ``model.encoder.*`` keys).
* ``qwen-audio-encoder``: :class:`transformers.Qwen2AudioEncoder` (Whisper encoder + average
  pooling before the final LayerNorm) with 80 mel bins, weights from the ``transformer.audio.*``
  keys of the ``Qwen/Qwen-Audio`` checkpoint, renamed by :func:`qwen_audio_key_map`.

The Whisper-style encoders use the fixed-length recipe of Qwen-Audio (spec §3.2): every waveform is
zero-padded to 30 s before the log-mel, the encoder sees only the first ``2 * T_cnn`` mel frames
(``T_cnn`` = length after the stride-2 convolution for the clip), and the sinusoidal position table
is sliced to ``max_source_positions = T_cnn`` of the configured ``clip_seconds``. Shorter inputs use
a prefix of that table, which is exactly the computation of a model configured for that length.

``transformers`` is imported lazily so that ``import stetho`` stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides
from stetho.backbones.checkpoint import (
    CheckpointError,
    cache_dir,
    load_checkpoint,
    resolve_checkpoint,
    unwrap_state_dict,
)
from stetho.backbones.registry import register_backbone
from stetho.frontend.waveform import WaveformNorm
from stetho.frontend.whisper_mel import WhisperLogMel
from stetho.utils.config import ConfigBase
from stetho.utils.download import is_offline

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

__all__ = [
    "QwenAudioEncoderBackbone",
    "Wav2Vec2Backbone",
    "Wav2Vec2Cfg",
    "WhisperEncoderBackbone",
    "WhisperEncoderCfg",
    "qwen_audio_key_map",
    "whisper_encoder_state_dict",
    "whisper_sinusoids",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160
#: Whisper / Qwen-Audio pad every waveform to 30 s before the log-mel.
PAD_TO_SAMPLES = 30 * SAMPLE_RATE
#: Weight files looked for in a hub repository or local directory, in this order.
_WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


# =============================================================================================
# Checkpoint plumbing shared by the three backbones
# =============================================================================================
def _hf_cache() -> Path:
    """Cache folder for hub downloads: ``cache_dir() / "hf"``."""
    return cache_dir() / "hf"


def _looks_like_hub_id(spec: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None


def _offline_hint() -> str:
    if is_offline():
        return (
            "offline mode is on (HF_HUB_OFFLINE / STETHO_OFFLINE) and the files are not in the "
            f"cache {_hf_cache()}: run once with network access to cache them, or download the "
            "repository and pass its local directory as the checkpoint"
        )
    return (
        f"the files are not in the cache {_hf_cache()} and could not be fetched: check the hub id "
        "and the network, or download the repository and pass its local directory"
    )


@contextlib.contextmanager
def _hub_offline_mode() -> Iterator[None]:
    """Mirror stetho's offline flag into ``huggingface_hub`` for the duration of a hub call.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import. If offline mode is switched on
    later (or through ``STETHO_OFFLINE``), even ``local_files_only`` look-ups still make a request
    (its agent-detection registry fetch while building headers). Setting its flag prevents that.
    """
    if not is_offline():
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _hub_file(repo_id: str, filename: str) -> Path | None:
    """Download (or find in the cache) one file of a hub repository; ``None`` if unavailable."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    try:
        with _hub_offline_mode():
            path = hf_hub_download(
                repo_id, filename, cache_dir=str(_hf_cache()), local_files_only=is_offline()
            )
    except EntryNotFoundError:  # not in the repo, or (offline / unreachable) not in the cache
        return None
    except HFValidationError as err:
        raise CheckpointError(f"{repo_id!r} is not a valid hub id or local path: {err}") from err
    except OSError as err:  # RepositoryNotFoundError, GatedRepoError, HTTP and network errors
        raise CheckpointError(f"cannot fetch {filename} from hub repo {repo_id!r}: {err}") from err
    return Path(path)


def _weight_files(spec: str, prefix: str | None) -> list[Path]:
    """Weight files of a local directory or hub repo (only shards holding ``prefix`` keys).

    Raises:
        CheckpointError: no weight file found; the message names the id/directory and the remedy.
    """
    local = Path(spec).expanduser()
    is_dir = local.is_dir()
    if not is_dir and not _looks_like_hub_id(spec):
        raise CheckpointError(
            f"checkpoint {spec!r} is neither an existing file or directory, a URL, a file in the "
            f"cache {cache_dir()}, nor a hub id of the form 'owner/name'"
        )

    def fetch(name: str) -> Path | None:
        if is_dir:
            return local / name if (local / name).is_file() else None
        return _hub_file(spec, name)

    for name in _WEIGHT_FILES:
        found = fetch(name)
        if found is None:
            continue
        if not name.endswith(".index.json"):
            return [found]
        weight_map: dict[str, str] = json.loads(found.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(
            {f for k, f in weight_map.items() if prefix is None or k.startswith(prefix)}
        )
        if not shards:
            raise CheckpointError(f"{found}: no tensor names start with {prefix!r}")
        files = []
        for shard in shards:
            got = fetch(shard)
            if got is None:
                raise CheckpointError(
                    f"shard {shard} listed in {found} is missing for {spec!r}; "
                    + ("it is not in the directory" if is_dir else _offline_hint())
                )
            files.append(got)
        logger.info("using %d of %d shards of %s", len(files), len(set(weight_map.values())), spec)
        return files
    where = f"directory {local}" if is_dir else f"hub id {spec!r}"
    raise CheckpointError(
        f"no weights found for {where}: expected one of {list(_WEIGHT_FILES)}"
        + ("" if is_dir else f"; {_offline_hint()}")
    )


def _checkpoint_files(spec: str, prefix: str | None) -> list[Path]:
    """Resolve a checkpoint spec: local file/dir, URL, cached file name, or hub id."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return _weight_files(spec, prefix)
    if path.is_file() or spec.startswith(("http://", "https://", "file://")):
        return [resolve_checkpoint(spec)]
    if (cache_dir() / path.name).is_file():
        return [resolve_checkpoint(spec)]
    return _weight_files(spec, prefix)


def _read_prefixed(
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


def _load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a readable :class:`CheckpointError`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what}: state dict does not match the model: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}, shape mismatches {wrong[:8]}"
        )
    module.load_state_dict(state_dict, strict=True)


def _loaded_from(pretrained: PretrainedCfg, checkpoint: str) -> PretrainedCfg:
    """``pretrained`` with its origin fields set to the checkpoint actually loaded."""
    hub = checkpoint if _looks_like_hub_id(checkpoint) and not Path(checkpoint).exists() else None
    return dataclasses.replace(pretrained, source=checkpoint, hub_id=hub, url=None)


def _check_overrides(overrides: dict[str, Any], actual: dict[str, Any], where: str) -> None:
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


# =============================================================================================
# Wav2Vec2
# =============================================================================================
_W2V_ARCH = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "conv_dim",
    "conv_stride",
    "conv_kernel",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "feat_extract_norm",
    "do_stable_layer_norm",
)
_W2V_REGULARISATION = (
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "layerdrop",
)


@dataclass
class Wav2Vec2Cfg(ConfigBase):
    """Wav2Vec2 architecture (used for random init; a checkpoint's ``config.json`` defines it
    otherwise) and regularisation overrides.

    Attributes:
        hidden_size: Transformer width D (768 for base).
        num_hidden_layers: Transformer layers.
        num_attention_heads: Attention heads.
        intermediate_size: Feed-forward width.
        conv_dim: Channels of the 7 feature-encoder convolutions.
        conv_stride: Strides of the convolutions (total 320 → 20 ms frames).
        conv_kernel: Kernel sizes of the convolutions.
        num_conv_pos_embeddings: Kernel size of the convolutional position embedding.
        num_conv_pos_embedding_groups: Groups of that convolution.
        feat_extract_norm: ``"group"`` (base) or ``"layer"`` (large-lv60).
        do_stable_layer_norm: Pre-LN encoder (large-lv60) instead of post-LN (base).
        hidden_dropout: Overrides the checkpoint's value when not ``None``.
        attention_dropout: Overrides the checkpoint's value when not ``None``.
        activation_dropout: Overrides the checkpoint's value when not ``None``.
        feat_proj_dropout: Overrides the checkpoint's value when not ``None``.
        layerdrop: Overrides the checkpoint's value when not ``None``.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    feat_extract_norm: Literal["group", "layer"] = "group"
    do_stable_layer_norm: bool = False
    hidden_dropout: float | None = None
    attention_dropout: float | None = None
    activation_dropout: float | None = None
    feat_proj_dropout: float | None = None
    layerdrop: float | None = None


#: The HF model's own SpecAugment-style masking is always off (stetho augments spectrograms only).
_NO_HF_MASKING: dict[str, Any] = {
    "apply_spec_augment": False,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
}


class Wav2Vec2Backbone(Backbone):
    """Wav2Vec2 on raw 16 kHz waveforms: ``(B, N)`` → tokens ``(B, T, D)``, T ≈ N / 320.

    The waveform is normalised per utterance (:class:`WaveformNorm`); no attention mask is passed
    (the base model is trained without one). The HF model is the attribute ``wav2vec2``.
    """

    lora_target_templates: ClassVar[dict[str, str]] = {
        "q": "wav2vec2.encoder.layers.{i}.attention.q_proj",
        "k": "wav2vec2.encoder.layers.{i}.attention.k_proj",
        "v": "wav2vec2.encoder.layers.{i}.attention.v_proj",
        "out": "wav2vec2.encoder.layers.{i}.attention.out_proj",
        "fc1": "wav2vec2.encoder.layers.{i}.feed_forward.intermediate_dense",
        "fc2": "wav2vec2.encoder.layers.{i}.feed_forward.output_dense",
    }
    layers_pattern: ClassVar[str | None] = "layers"

    def __init__(
        self, pretrained_cfg: PretrainedCfg, model: Wav2Vec2Model, cfg: Wav2Vec2Cfg
    ) -> None:
        super().__init__(
            dataclasses.replace(pretrained_cfg, embed_dim=int(model.config.hidden_size))
        )
        self.cfg = cfg
        self.norm = WaveformNorm(eps=1e-7)
        self.wav2vec2 = model

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return int(self.wav2vec2.config.num_hidden_layers)

    def num_frames(self, num_samples: int) -> int:
        """Number of output tokens for ``num_samples`` input samples."""
        n = num_samples
        for k, s in zip(self.wav2vec2.config.conv_kernel, self.wav2vec2.config.conv_stride):
            n = (n - k) // s + 1
        return n

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → ``last_hidden_state`` ``(B, T, D)``."""
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms of shape (B, N), got {tuple(wave.shape)}")
        if self.num_frames(wave.shape[-1]) < 1:
            raise ValueError(
                f"waveform of {wave.shape[-1]} samples is too short for Wav2Vec2 (need >= 400)"
            )
        x = self.norm(wave)  # (B, N)
        x = x.to(next(self.wav2vec2.parameters()).dtype)
        out = self.wav2vec2(input_values=x)
        return out.last_hidden_state  # (B, T, D)

    def extra_config(self) -> dict[str, Any]:
        """Architecture and regularisation settings of this model."""
        return self.cfg.to_dict()


def _wav2vec2_from_config(cfg: Wav2Vec2Cfg) -> Wav2Vec2Model:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    arch = {k: getattr(cfg, k) for k in _W2V_ARCH}
    arch["conv_dim"] = list(arch["conv_dim"])
    arch["conv_stride"] = list(arch["conv_stride"])
    arch["conv_kernel"] = list(arch["conv_kernel"])
    reg = {k: getattr(cfg, k) for k in _W2V_REGULARISATION if getattr(cfg, k) is not None}
    config = Wav2Vec2Config(**arch, **reg, **_NO_HF_MASKING)
    return Wav2Vec2Model(config)


def _wav2vec2_from_pretrained(spec: str, cfg: Wav2Vec2Cfg) -> Wav2Vec2Model:
    from transformers import Wav2Vec2Model

    local = Path(spec).expanduser()
    if not local.is_dir() and not _looks_like_hub_id(spec):
        raise CheckpointError(
            f"Wav2Vec2 checkpoint {spec!r} must be a hub id such as 'facebook/wav2vec2-base' or a "
            "local directory with config.json and model weights (save_pretrained layout)"
        )
    reg = {k: getattr(cfg, k) for k in _W2V_REGULARISATION if getattr(cfg, k) is not None}
    try:
        with _hub_offline_mode():
            model = Wav2Vec2Model.from_pretrained(
                str(local) if local.is_dir() else spec,
                cache_dir=str(_hf_cache()),
                local_files_only=is_offline() or local.is_dir(),
                **_NO_HF_MASKING,
                **reg,
            )
    except (OSError, ValueError) as err:
        where = f"directory {local}" if local.is_dir() else f"hub id {spec!r}"
        hint = (
            "it must contain config.json and model.safetensors or pytorch_model.bin"
            if local.is_dir()
            else _offline_hint()
        )
        raise CheckpointError(f"cannot load Wav2Vec2 weights from {where}: {hint} ({err})") from err
    return model


def _build_wav2vec2(
    pretrained: PretrainedCfg,
    defaults: Wav2Vec2Cfg,
    checkpoint: str | None,
    overrides: dict[str, Any],
) -> Wav2Vec2Backbone:
    cfg = dataclass_overrides(defaults, overrides)
    if checkpoint is None:
        model = _wav2vec2_from_config(cfg)
    else:
        model = _wav2vec2_from_pretrained(str(checkpoint), cfg)
        actual = {k: getattr(model.config, k) for k in _W2V_ARCH}
        for k in ("conv_dim", "conv_stride", "conv_kernel"):
            actual[k] = tuple(actual[k])
        _check_overrides(overrides, actual, f"checkpoint {checkpoint!r}")
        cfg = dataclasses.replace(cfg, **actual)
        pretrained = _loaded_from(pretrained, str(checkpoint))
    return Wav2Vec2Backbone(pretrained, model, cfg)


_W2V_PRETRAINED = PretrainedCfg(
    name="wav2vec2",
    sample_rate=SAMPLE_RATE,
    input_kind="waveform",
    embed_dim=768,
    source="https://huggingface.co/facebook/wav2vec2-base",
    hub_id="facebook/wav2vec2-base",
    license="Apache-2.0",
    frontend={"normalize": "per utterance (x - mean) / sqrt(var + 1e-7)", "frame_ms": 20},
)
_W2V_TINY = Wav2Vec2Cfg(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32, 32, 32, 32, 32),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


@register_backbone(
    "wav2vec2", "Wav2Vec2 (HF transformers, default facebook/wav2vec2-base), raw 16 kHz waveform"
)
def wav2vec2(checkpoint: str | None = None, **overrides: Any) -> Wav2Vec2Backbone:
    """Wav2Vec2 (HF transformers, default facebook/wav2vec2-base), raw 16 kHz waveform."""
    return _build_wav2vec2(_W2V_PRETRAINED, Wav2Vec2Cfg(), checkpoint, overrides)


@register_backbone(
    "wav2vec2-tiny", "Tiny random Wav2Vec2 for tests (D=32, 2 layers)", needs_weights=False
)
def wav2vec2_tiny(checkpoint: str | None = None, **overrides: Any) -> Wav2Vec2Backbone:
    """Tiny random Wav2Vec2 for tests (D=32, 2 layers)."""
    pretrained = dataclasses.replace(
        _W2V_PRETRAINED, name="wav2vec2-tiny", hub_id=None, source="random"
    )
    return _build_wav2vec2(pretrained, _W2V_TINY, checkpoint, overrides)


# =============================================================================================
# Whisper encoder and Qwen-Audio encoder
# =============================================================================================
def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal position table ``(length, channels)``: sines then cosines.

    Timescales are geometric from 1 to ``max_timescale`` over ``channels // 2`` frequencies.
    """
    if channels % 2:
        raise ValueError(f"channels must be even for sinusoidal positions, got {channels}")
    half = channels // 2
    step = math.log(max_timescale) / max(half - 1, 1)
    inv = torch.exp(-step * torch.arange(half, dtype=torch.float64))  # (half,)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]  # (length, half)
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


def cnn_length(num_frames: int) -> int:
    """Tokens after conv1 (stride 1) and conv2 (stride 2, padding 1, kernel 3): ``T_cnn``."""
    return (num_frames - 1) // 2 + 1


def clip_positions(clip_seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """``T_cnn`` for a clip of ``clip_seconds``: the ``max_source_positions`` to configure."""
    return cnn_length(round(clip_seconds * sample_rate) // HOP_LENGTH)


@dataclass
class WhisperEncoderCfg(ConfigBase):
    """Whisper-style encoder architecture and clip length.

    With a checkpoint, ``num_mel_bins``, ``d_model``, ``encoder_layers`` and ``encoder_ffn_dim``
    are read from the weights' shapes.

    Attributes:
        num_mel_bins: Mel bands of the front end (80 for Whisper-large-v2 / Qwen-Audio).
        d_model: Encoder width D.
        encoder_layers: Transformer layers.
        encoder_attention_heads: Heads; ``None`` = ``d_model // 64`` (true for every Whisper size).
        encoder_ffn_dim: Feed-forward width.
        clip_seconds: Longest input in seconds (at most 30); sets ``max_source_positions``.
        dropout: Residual dropout.
        attention_dropout: Dropout on attention probabilities.
        activation_dropout: Dropout after the feed-forward activation.
        encoder_layerdrop: Probability of skipping a layer while training.
        output_proj: Qwen-Audio only: apply its ``proj`` Linear (D → ``output_dim``, the LLM width)
            to the tokens.
        output_dim: Width of ``proj`` (4096 for Qwen-Audio; read from the checkpoint).
    """

    num_mel_bins: int = 80
    d_model: int = 1280
    encoder_layers: int = 32
    encoder_attention_heads: int | None = None
    encoder_ffn_dim: int = 5120
    clip_seconds: float = 10.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    output_proj: bool = False
    output_dim: int = 4096

    def heads(self) -> int:
        """Resolved number of attention heads."""
        return self.encoder_attention_heads or max(self.d_model // 64, 1)


class _WhisperStyleBackbone(Backbone):
    """Shared code of the Whisper and Qwen-Audio encoders (HF module in attribute ``encoder``)."""

    lora_target_templates: ClassVar[dict[str, str]] = {
        "q": "encoder.layers.{i}.self_attn.q_proj",
        "k": "encoder.layers.{i}.self_attn.k_proj",
        "v": "encoder.layers.{i}.self_attn.v_proj",
        "out": "encoder.layers.{i}.self_attn.out_proj",
        "fc1": "encoder.layers.{i}.fc1",
        "fc2": "encoder.layers.{i}.fc2",
    }
    layers_pattern: ClassVar[str | None] = "layers"
    #: Average-pool the tokens by 2 before the final LayerNorm (Qwen-Audio).
    avg_pool: ClassVar[bool] = False

    def __init__(self, pretrained_cfg: PretrainedCfg, cfg: WhisperEncoderCfg) -> None:
        if not 0.0 < cfg.clip_seconds <= PAD_TO_SAMPLES / SAMPLE_RATE:
            raise ValueError(f"clip_seconds must be in (0, 30], got {cfg.clip_seconds}")
        if cfg.output_proj and not self.avg_pool:
            raise ValueError("output_proj is only defined for the Qwen-Audio encoder")
        embed_dim = cfg.output_dim if cfg.output_proj else cfg.d_model
        super().__init__(dataclasses.replace(pretrained_cfg, embed_dim=embed_dim))
        self.cfg = dataclasses.replace(cfg, encoder_attention_heads=cfg.heads())
        self.max_positions = clip_positions(cfg.clip_seconds)
        if self.avg_pool and self.max_positions < 2:
            raise ValueError(
                f"clip_seconds={cfg.clip_seconds} is too short for the Qwen-Audio encoder"
            )
        self.frontend = WhisperLogMel(
            sample_rate=SAMPLE_RATE, n_mels=cfg.num_mel_bins, pad_to_samples=PAD_TO_SAMPLES
        )
        #: The HF ``WhisperEncoder`` / ``Qwen2AudioEncoder`` (typed ``Any``: its attributes are HF's).
        self.encoder: Any = self._make_encoder(self.cfg, self.max_positions)
        with torch.no_grad():
            self.encoder.embed_positions.weight.copy_(
                whisper_sinusoids(self.max_positions, cfg.d_model)
            )
        self.proj: nn.Linear | None = (
            nn.Linear(cfg.d_model, cfg.output_dim) if cfg.output_proj else None
        )

    @staticmethod
    def _make_encoder(cfg: WhisperEncoderCfg, max_positions: int) -> Any:
        raise NotImplementedError

    @staticmethod
    def _encoder_config_kwargs(cfg: WhisperEncoderCfg, max_positions: int) -> dict[str, Any]:
        return {
            "num_mel_bins": cfg.num_mel_bins,
            "d_model": cfg.d_model,
            "encoder_layers": cfg.encoder_layers,
            "encoder_attention_heads": cfg.heads(),
            "encoder_ffn_dim": cfg.encoder_ffn_dim,
            "max_source_positions": max_positions,
            "dropout": cfg.dropout,
            "attention_dropout": cfg.attention_dropout,
            "activation_dropout": cfg.activation_dropout,
            "encoder_layerdrop": cfg.encoder_layerdrop,
        }

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return self.cfg.encoder_layers

    def num_tokens(self, num_samples: int) -> int:
        """Output tokens for an input of ``num_samples`` samples."""
        t = cnn_length(min(num_samples, PAD_TO_SAMPLES) // HOP_LENGTH)
        return t // 2 if self.avg_pool else t

    def load_encoder_state_dict(
        self, state_dict: dict[str, torch.Tensor], what: str = "checkpoint"
    ) -> None:
        """Strictly load HF-named encoder weights; the position table is sliced to ``T_cnn``.

        A missing ``embed_positions.weight`` is filled with the sinusoidal table (logged).

        Raises:
            CheckpointError: missing/unexpected keys, wrong shapes, or a too-short position table.
        """
        sd = dict(state_dict)
        pos = sd.get("embed_positions.weight")
        if pos is None:
            logger.info("%s has no position table; using the sinusoidal one", what)
            pos = whisper_sinusoids(self.max_positions, self.cfg.d_model)
        if pos.shape[0] < self.max_positions:
            raise CheckpointError(
                f"{what}: position table has {pos.shape[0]} rows, clip_seconds={self.cfg.clip_seconds} "
                f"needs {self.max_positions}"
            )
        sd["embed_positions.weight"] = pos[: self.max_positions]
        _load_strict(self.encoder, sd, what)

    def forward_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Encode log-mel frames ``(B, n_mels, 2·T)`` → tokens ``(B, T, D)`` (``T/2`` with avg-pool).

        Identical to the HF encoder's ``forward`` when ``T == max_source_positions``; shorter inputs
        use the first ``T`` rows of the position table.
        """
        enc: Any = self.encoder
        t_cnn = cnn_length(mel.shape[-1])
        if t_cnn > self.max_positions:
            raise ValueError(
                f"{mel.shape[-1]} mel frames give {t_cnn} positions but the encoder has "
                f"{self.max_positions} (clip_seconds={self.cfg.clip_seconds}); rebuild with a longer clip_seconds"
            )
        x = mel.to(enc.conv1.weight.dtype)
        x = nn.functional.gelu(enc.conv1(x))  # (B, D, 2·T)
        x = nn.functional.gelu(enc.conv2(x))  # (B, D, T)
        x = x.transpose(1, 2) + enc.embed_positions.weight[: x.shape[-1]]  # (B, T, D)
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        for layer in enc.layers:
            if self.training and enc.layerdrop > 0.0 and float(torch.rand([])) < enc.layerdrop:
                continue
            x = layer(x, None)
        if self.avg_pool:
            x = enc.avg_pooler(x.transpose(1, 2)).transpose(1, 2)  # (B, T // 2, D)
        x = enc.layer_norm(x)
        if self.proj is not None:
            x = self.proj(x)  # (B, L, output_dim)
        return x

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` at 16 kHz → tokens ``(B, L, D)``; L = T_cnn (// 2 for Qwen-Audio)."""
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms of shape (B, N), got {tuple(wave.shape)}")
        n = wave.shape[-1]
        if n > PAD_TO_SAMPLES:
            raise ValueError(
                f"input of {n} samples exceeds the 30 s ({PAD_TO_SAMPLES} samples) limit"
            )
        t_cnn = cnn_length(n // HOP_LENGTH)
        if t_cnn < (2 if self.avg_pool else 1):
            raise ValueError(f"waveform of {n} samples is too short for this encoder")
        if t_cnn > self.max_positions:
            raise ValueError(
                f"input of {n / SAMPLE_RATE:.2f} s is longer than clip_seconds={self.cfg.clip_seconds}; "
                f"build the backbone with clip_seconds >= {n / SAMPLE_RATE:.2f}"
            )
        mel = self.frontend(wave)[..., : 2 * t_cnn]  # (B, n_mels, 2·T_cnn) of the 30 s log-mel
        mel = self._maybe_augment(mel, time_dim=-1, freq_dim=-2)
        return self.forward_mel(mel)

    def extra_config(self) -> dict[str, Any]:
        """Architecture and clip length of this model."""
        return self.cfg.to_dict()


class WhisperEncoderBackbone(_WhisperStyleBackbone):
    """Whisper encoder (HF ``WhisperEncoder``) on the 30 s-padded Whisper log-mel."""

    avg_pool: ClassVar[bool] = False

    @staticmethod
    def _make_encoder(cfg: WhisperEncoderCfg, max_positions: int) -> Any:
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        kwargs = _WhisperStyleBackbone._encoder_config_kwargs(cfg, max_positions)
        config = WhisperConfig(**kwargs, decoder_layers=1, decoder_attention_heads=cfg.heads())
        return WhisperEncoder(config)


class QwenAudioEncoderBackbone(_WhisperStyleBackbone):
    """Qwen-Audio audio encoder (HF ``Qwen2AudioEncoder`` with 80 mel bins): Whisper encoder plus
    average pooling by 2 before the final LayerNorm; optional ``proj`` to the LLM width."""

    avg_pool: ClassVar[bool] = True

    @staticmethod
    def _make_encoder(cfg: WhisperEncoderCfg, max_positions: int) -> Any:
        from transformers import Qwen2AudioEncoderConfig
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

        config = Qwen2AudioEncoderConfig(
            **_WhisperStyleBackbone._encoder_config_kwargs(cfg, max_positions)
        )
        return Qwen2AudioEncoder(config)


# -- key maps --------------------------------------------------------------------------------
_QWEN_PREFIX = "transformer.audio."
_QWEN_RULES: tuple[tuple[str, str], ...] = (
    (r"conv([12])\.(weight|bias)", r"conv\1.\2"),
    (r"positional_embedding", "embed_positions.weight"),
    (r"blocks\.(\d+)\.attn\.query\.(weight|bias)", r"layers.\1.self_attn.q_proj.\2"),
    (r"blocks\.(\d+)\.attn\.key\.weight", r"layers.\1.self_attn.k_proj.weight"),
    (r"blocks\.(\d+)\.attn\.value\.(weight|bias)", r"layers.\1.self_attn.v_proj.\2"),
    (r"blocks\.(\d+)\.attn\.out\.(weight|bias)", r"layers.\1.self_attn.out_proj.\2"),
    (r"blocks\.(\d+)\.attn_ln\.(weight|bias)", r"layers.\1.self_attn_layer_norm.\2"),
    (r"blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"layers.\1.fc1.\2"),
    (r"blocks\.(\d+)\.mlp\.2\.(weight|bias)", r"layers.\1.fc2.\2"),
    (r"blocks\.(\d+)\.mlp_ln\.(weight|bias)", r"layers.\1.final_layer_norm.\2"),
    (r"ln_post\.(weight|bias)", r"layer_norm.\1"),
)
_QWEN_EXTRA = re.compile(r"proj\.(weight|bias)|audio_bos_eos_token\.weight")


def qwen_audio_key_map(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename Qwen-Audio audio-encoder weights to HF ``Qwen2AudioEncoder`` names (spec §3.1).

    Args:
        state_dict: Either a full Qwen-Audio state dict (only the ``transformer.audio.*`` keys are
            used; the language model's keys are ignored) or the audio keys with that prefix already
            stripped.

    Returns:
        ``(encoder_sd, extra_sd)``: HF-named encoder tensors, and the tensors without a counterpart
        (``proj.weight``, ``proj.bias``, ``audio_bos_eos_token.weight``) under their own names.

    Raises:
        ValueError: an audio key matches no rule (the message lists them).
    """
    if any(k.startswith(_QWEN_PREFIX) for k in state_dict):
        items = {
            k[len(_QWEN_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(_QWEN_PREFIX)
        }
        logger.debug("ignoring %d non-audio keys", len(state_dict) - len(items))
    else:
        items = dict(state_dict)
    rules = [(re.compile(p), r) for p, r in _QWEN_RULES]
    encoder: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in items.items():
        if _QWEN_EXTRA.fullmatch(key):
            extra[key] = value
            continue
        for pattern, repl in rules:
            if pattern.fullmatch(key):
                encoder[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"unexpected Qwen-Audio audio-encoder keys {sorted(unknown)[:10]}; expected conv1/conv2, "
            "positional_embedding, blocks.N.{attn.{query,key,value,out},attn_ln,mlp.0,mlp.2,mlp_ln}, "
            "ln_post, proj, audio_bos_eos_token"
        )
    return encoder, extra


def whisper_encoder_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``WhisperEncoder`` tensors of a Whisper state dict, with the prefix stripped.

    Accepts full-model keys (``model.encoder.*``), ``encoder.*`` (e.g. audio-classification models)
    or bare encoder keys.

    Raises:
        ValueError: no ``conv1.weight`` under any of those prefixes.
    """
    for prefix in ("model.encoder.", "encoder.", ""):
        if prefix + "conv1.weight" in state_dict:
            return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    raise ValueError(
        "not a Whisper state dict: expected 'model.encoder.conv1.weight', 'encoder.conv1.weight' "
        f"or 'conv1.weight'; first keys: {sorted(state_dict)[:5]}"
    )


def _infer_whisper_arch(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture fields readable from HF-named encoder weights."""
    try:
        d_model, n_mels, _ = sd["conv1.weight"].shape
        layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        ffn = sd["layers.0.fc1.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise CheckpointError(
            f"cannot read the encoder architecture from the weights: missing {err}"
        ) from err
    return {
        "num_mel_bins": n_mels,
        "d_model": d_model,
        "encoder_layers": layers,
        "encoder_ffn_dim": ffn,
    }


# -- factories -------------------------------------------------------------------------------
def _build_whisper_style(
    cls: type[_WhisperStyleBackbone],
    pretrained: PretrainedCfg,
    defaults: WhisperEncoderCfg,
    checkpoint: str | None,
    overrides: dict[str, Any],
    read: Callable[[str], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]],
) -> _WhisperStyleBackbone:
    cfg = dataclass_overrides(defaults, overrides)
    if checkpoint is None:
        return cls(pretrained, cfg)
    encoder_sd, extra = read(str(checkpoint))
    actual = _infer_whisper_arch(encoder_sd)
    if cfg.output_proj:
        if "proj.weight" not in extra:
            raise CheckpointError(
                f"output_proj=True but checkpoint {checkpoint!r} has no proj.weight"
            )
        actual["output_dim"] = int(extra["proj.weight"].shape[0])
    _check_overrides(overrides, actual, f"checkpoint {checkpoint!r}")
    cfg = dataclasses.replace(cfg, **actual)
    model = cls(_loaded_from(pretrained, str(checkpoint)), cfg)
    model.load_encoder_state_dict(encoder_sd, what=str(checkpoint))
    if model.proj is not None:
        _load_strict(
            model.proj,
            {k[5:]: v for k, v in extra.items() if k.startswith("proj.")},
            str(checkpoint),
        )
    return model


def _read_whisper(spec: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    files = _checkpoint_files(spec, prefix="model.encoder.")
    return _read_prefixed(files, ("model.encoder.", "encoder.", ""), "conv1.weight"), {}


def _read_qwen(spec: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    files = _checkpoint_files(spec, prefix=_QWEN_PREFIX)
    raw = _read_prefixed(files, (_QWEN_PREFIX, ""), "conv1.weight")
    try:
        return qwen_audio_key_map(raw)
    except ValueError as err:
        raise CheckpointError(f"{spec}: {err}") from err


_MEL_FRONTEND: dict[str, Any] = {
    "n_fft": 400,
    "hop_length": 160,
    "window": "periodic hann",
    "mel": "slaney scale, slaney norm",
    "log": "log10, max-8 per clip, (x+4)/4",
    "pad_to_samples": PAD_TO_SAMPLES,
}
_WHISPER_PRETRAINED = PretrainedCfg(
    name="whisper-encoder",
    sample_rate=SAMPLE_RATE,
    input_kind="fbank",
    embed_dim=1280,
    source="https://huggingface.co/openai/whisper-large-v2",
    hub_id="openai/whisper-large-v2",
    license="Apache-2.0",
    frontend={**_MEL_FRONTEND, "n_mels": 80},
)
_QWEN_PRETRAINED = PretrainedCfg(
    name="qwen-audio-encoder",
    sample_rate=SAMPLE_RATE,
    input_kind="fbank",
    embed_dim=1280,
    source="https://huggingface.co/Qwen/Qwen-Audio (transformer.audio.*)",
    hub_id="Qwen/Qwen-Audio",
    license="Tongyi Qianwen license (see the model card)",
    frontend={**_MEL_FRONTEND, "n_mels": 80},
)
_TINY_ENCODER = WhisperEncoderCfg(
    d_model=64,
    encoder_layers=2,
    encoder_attention_heads=4,
    encoder_ffn_dim=128,
    clip_seconds=2.0,
    output_dim=96,
)


@register_backbone(
    "whisper-encoder", "Whisper-large-v2 encoder (HF WhisperEncoder), Whisper log-mel"
)
def whisper_encoder(checkpoint: str | None = None, **overrides: Any) -> _WhisperStyleBackbone:
    """Whisper-large-v2 encoder (HF WhisperEncoder), Whisper log-mel."""
    return _build_whisper_style(
        WhisperEncoderBackbone,
        _WHISPER_PRETRAINED,
        WhisperEncoderCfg(),
        checkpoint,
        overrides,
        _read_whisper,
    )


@register_backbone(
    "whisper-encoder-tiny",
    "Tiny random Whisper encoder for tests (D=64, 2 layers)",
    needs_weights=False,
)
def whisper_encoder_tiny(checkpoint: str | None = None, **overrides: Any) -> _WhisperStyleBackbone:
    """Tiny random Whisper encoder for tests (D=64, 2 layers)."""
    pretrained = dataclasses.replace(
        _WHISPER_PRETRAINED, name="whisper-encoder-tiny", hub_id=None, source="random"
    )
    return _build_whisper_style(
        WhisperEncoderBackbone, pretrained, _TINY_ENCODER, checkpoint, overrides, _read_whisper
    )


@register_backbone(
    "qwen-audio-encoder",
    "Qwen-Audio audio encoder (HF Qwen2AudioEncoder, 80 mels), Whisper log-mel",
)
def qwen_audio_encoder(checkpoint: str | None = None, **overrides: Any) -> _WhisperStyleBackbone:
    """Qwen-Audio audio encoder (HF Qwen2AudioEncoder, 80 mels), Whisper log-mel."""
    return _build_whisper_style(
        QwenAudioEncoderBackbone,
        _QWEN_PRETRAINED,
        WhisperEncoderCfg(),
        checkpoint,
        overrides,
        _read_qwen,
    )


@register_backbone(
    "qwen-audio-encoder-tiny",
    "Tiny random Qwen-Audio encoder for tests (D=64, 2 layers)",
    needs_weights=False,
)
def qwen_audio_encoder_tiny(
    checkpoint: str | None = None, **overrides: Any
) -> _WhisperStyleBackbone:
    """Tiny random Qwen-Audio encoder for tests (D=64, 2 layers)."""
    pretrained = dataclasses.replace(
        _QWEN_PRETRAINED, name="qwen-audio-encoder-tiny", hub_id=None, source="random"
    )
    return _build_whisper_style(
        QwenAudioEncoderBackbone, pretrained, _TINY_ENCODER, checkpoint, overrides, _read_qwen
    )
