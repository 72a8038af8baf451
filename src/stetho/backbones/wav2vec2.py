"""Wav2Vec2 (``transformers``) on the raw 16 kHz waveform.

:class:`transformers.Wav2Vec2Model`, normalised per utterance; tokens are ``last_hidden_state``
(20 ms frames). The model's own time/feature masking is switched off; stetho's SpecAugment never
applies to raw-waveform models. ``transformers`` is imported lazily so that ``import stetho``
stays fast; weights come through :mod:`stetho.backbones._hub` (offline mode, cache folder).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from stetho.backbones._builder import check_overrides, loaded_from
from stetho.backbones._hub import (
    hf_cache,
    hub_offline_mode,
    looks_like_hub_id,
    offline_hint,
)
from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides, hf_lora_targets
from stetho.backbones.checkpoint import CheckpointError
from stetho.backbones.registry import register_backbone
from stetho.frontend.waveform import WaveformNorm
from stetho.utils.config import ConfigBase
from stetho.utils.download import is_offline

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

__all__ = ["Wav2Vec2Backbone", "Wav2Vec2Cfg", "wav2vec2", "wav2vec2_tiny"]


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

    lora_target_templates: ClassVar[dict[str, str]] = hf_lora_targets(
        "wav2vec2.encoder.layers.{i}",
        "attention",
        fc1="feed_forward.intermediate_dense",
        fc2="feed_forward.output_dense",
    )
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
    if not local.is_dir() and not looks_like_hub_id(spec):
        raise CheckpointError(
            f"Wav2Vec2 checkpoint {spec!r} must be a hub id such as 'facebook/wav2vec2-base' or a "
            "local directory with config.json and model weights (save_pretrained layout)"
        )
    reg = {k: getattr(cfg, k) for k in _W2V_REGULARISATION if getattr(cfg, k) is not None}
    try:
        with hub_offline_mode():
            model = Wav2Vec2Model.from_pretrained(
                str(local) if local.is_dir() else spec,
                cache_dir=str(hf_cache()),
                local_files_only=is_offline() or local.is_dir(),
                **_NO_HF_MASKING,
                **reg,
            )
    except (OSError, ValueError) as err:
        where = f"directory {local}" if local.is_dir() else f"hub id {spec!r}"
        hint = (
            "it must contain config.json and model.safetensors or pytorch_model.bin"
            if local.is_dir()
            else offline_hint()
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
        check_overrides(overrides, actual, f"checkpoint {checkpoint!r}")
        cfg = dataclasses.replace(cfg, **actual)
        pretrained = loaded_from(pretrained, str(checkpoint))
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
