# Over 500 lines: two encoders of one family (Whisper, Qwen-Audio) share their code and key maps.
"""The Whisper encoder and Qwen-Audio's encoder (``transformers`` modules).

* ``whisper-encoder``: :class:`transformers.WhisperEncoder` on the Whisper log-mel, weights from
  ``openai/whisper-large-v2`` (its ``model.encoder.*`` keys).
* ``qwen-audio-encoder``: :class:`transformers.Qwen2AudioEncoder` (Whisper encoder + average
  pooling before the final LayerNorm) with 80 mel bins, weights from the ``transformer.audio.*``
  keys of the ``Qwen/Qwen-Audio`` checkpoint, renamed by :func:`qwen_audio_key_map`.

The encoders use the fixed-length recipe of Qwen-Audio (spec §3.2): every waveform is zero-padded
to 30 s before the log-mel, the encoder sees only the first ``2 * T_cnn`` mel frames (``T_cnn`` =
length after the stride-2 convolution for the clip), and the sinusoidal position table is sliced
to ``max_source_positions = T_cnn`` of the configured ``clip_seconds``. Shorter inputs use a prefix
of that table, which is exactly the computation of a model configured for that length.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from stetho.backbones._builder import check_overrides, load_strict, loaded_from, read_prefixed
from stetho.backbones._hub import (
    checkpoint_files,
)
from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides, hf_lora_targets
from stetho.backbones.checkpoint import CheckpointError
from stetho.backbones.registry import register_backbone
from stetho.frontend.whisper_mel import WhisperLogMel
from stetho.utils.config import ConfigBase

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

__all__ = [
    "QwenAudioEncoderBackbone",
    "WhisperEncoderBackbone",
    "WhisperEncoderCfg",
    "qwen_audio_key_map",
    "whisper_encoder_state_dict",
    "whisper_sinusoids",
]

HOP_LENGTH = 160
#: Whisper / Qwen-Audio pad every waveform to 30 s before the log-mel.
PAD_TO_SAMPLES = 30 * SAMPLE_RATE


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

    lora_target_templates: ClassVar[dict[str, str]] = hf_lora_targets(
        "encoder.layers.{i}", "self_attn"
    )
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
        load_strict(self.encoder, sd, what)

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
    check_overrides(overrides, actual, f"checkpoint {checkpoint!r}")
    cfg = dataclasses.replace(cfg, **actual)
    model = cls(loaded_from(pretrained, str(checkpoint)), cfg)
    model.load_encoder_state_dict(encoder_sd, what=str(checkpoint))
    if model.proj is not None:
        load_strict(
            model.proj,
            {k[5:]: v for k, v in extra.items() if k.startswith("proj.")},
            str(checkpoint),
        )
    return model


def _read_whisper(spec: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    files = checkpoint_files(spec, prefix="model.encoder.")
    return read_prefixed(files, ("model.encoder.", "encoder.", ""), "conv1.weight"), {}


def _read_qwen(spec: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    files = checkpoint_files(spec, prefix=_QWEN_PREFIX)
    raw = read_prefixed(files, (_QWEN_PREFIX, ""), "conv1.weight")
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
