# Over 500 lines: one model family: the network, its key remapping and its strict loader.
"""CED audio transformers (Consistent Ensemble Distillation; Dinkel et al., ICASSP 2024).

A ViT over 16×16 patches of a 64-bin dB mel spectrogram::

    wave (B, N) 16 kHz
      -> front_end[0]  CEDMel                       (B, 64, T)  dB, T = 1 + N // 160, fp32
      -> SpecAugment (training only)                (B, 64, T)
      -> init_bn       BatchNorm over the mel bins  (B, 1, 64, T)  always in eval mode
      -> chunks of target_length = 1012 frames      (n·B, 1, 64, ≤1012)  last one zero-padded
      -> patch_embed.proj Conv2d 16/16 (+ bias)     (n·B, D, 4, T')
      -> + time_pos_embed[..., :T'] + freq_pos_embed, flatten frequency-major
      -> blocks (pre-LN, eps 1e-6) -> norm          (n·B, 4·T', D)
      -> per clip: chunks concatenated              (B, n·4·T', D)

A 10 s clip gives T = 1001 frames, T' = 62 and 248 tokens. The embedding for ASD is the mean over
tokens after ``norm`` (``outputlayer`` is only used by :meth:`CED.classify`).

Attention keeps separate ``q_proj``/``k_proj``/``v_proj`` Linears so LoRA can adapt q and v
alone; a load-state-dict pre-hook splits the fused ``qkv`` tensors of the original checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import torch
import torch.nn.functional as F
from torch import nn

from stetho.backbones._builder import load_pretrained
from stetho.backbones._hub import hub_file, looks_like_hub_id, offline_hint
from stetho.backbones.base import Backbone, PretrainedCfg, dataclass_overrides
from stetho.backbones.checkpoint import (
    CheckpointError,
    resolve_checkpoint,
)
from stetho.backbones.registry import register_backbone
from stetho.frontend.ced_mel import CEDMel, CEDMelConfig
from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["CED", "CEDConfig", "load_ced_checkpoint", "remap_ced_state_dict"]

logger = logging.getLogger(__name__)

_ZENODO = "https://zenodo.org/record/{record}/files/{file}"
_HF_PREFIXES = ("encoder.", "ced_model.")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class CEDConfig(ConfigBase):
    """Architecture of a CED model (defaults = CED-Base).

    Attributes:
        embed_dim: Token width D (192 tiny, 256 mini, 384 small, 768 base).
        depth: Number of transformer blocks.
        num_heads: Attention heads (D / 64).
        mlp_ratio: MLP hidden width as a multiple of D.
        patch_size: Square patch size and stride, in mel bins and frames.
        target_length: Frames per chunk; longer spectrograms are split into chunks of this size.
        n_mels: Mel bins of the front-end (the checkpoints use 64).
        num_classes: Outputs of the AudioSet head ``outputlayer``.
        qkv_bias: Whether q/k/v projections have a bias.
        pad_last: Zero-pad a short last chunk to ``target_length`` (True) or drop it (False).
        batchwise_top_db: Share the 120 dB floor across the batch like torchaudio on batched
            input (False: per example, equal to the official one-clip-at-a-time inference).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    target_length: int = 1012
    n_mels: int = 64
    num_classes: int = 527
    qkv_bias: bool = True
    pad_last: bool = True
    batchwise_top_db: bool = False

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}"
            )
        if self.n_mels % self.patch_size:
            raise ConfigError(
                f"n_mels={self.n_mels} must be a multiple of patch_size={self.patch_size}"
            )
        if self.target_length < self.patch_size:
            raise ConfigError(
                f"target_length={self.target_length} must be at least patch_size={self.patch_size}"
            )


class _MelAxisToChannels(nn.Module):
    """(B, 1, F, T) <-> (B, F, 1, T): makes the mel bins the BatchNorm channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _PatchEmbed(nn.Module):
    """Non-overlapping 16×16 patches: (B, 1, F, T) -> (B, D, F/16, T//16)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.proj(x))


def _split_fused_qkv(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load-state-dict pre-hook: ``<prefix>qkv.{weight,bias}`` -> ``q_proj``/``k_proj``/``v_proj``.

    Rows ``[0:D]`` of the fused tensors are q, ``[D:2D]`` k and ``[2D:3D]`` v.
    """
    for suffix in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}qkv.{suffix}", None)
        if fused is None:
            continue
        if fused.shape[0] % 3:
            raise CheckpointError(
                f"{prefix}qkv.{suffix} has {fused.shape[0]} rows; expected a multiple of 3 (q, k, v)"
            )
        for name, part in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3, dim=0)):
            state_dict[f"{prefix}{name}.{suffix}"] = part


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (loads fused ``qkv`` weights)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.register_load_state_dict_pre_hook(_split_fused_qkv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H, d = self.num_heads, self.head_dim
        q = self.q_proj(x).view(B, N, H, d).transpose(1, 2)  # (B, H, N, d)
        k = self.k_proj(x).view(B, N, H, d).transpose(1, 2)
        v = self.v_proj(x).view(B, N, H, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √d) v, (B, H, N, d)
        y = y.transpose(1, 2).reshape(B, N, D)
        return cast(torch.Tensor, self.proj(y))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x)); LN eps 1e-6."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CED(Backbone):
    """CED transformer backbone (tokens after the final ``norm``; mean pooling for embeddings).

    ``forward_features`` returns ``(B, L, D)`` tokens. For inputs up to ``target_length`` frames
    (10.11 s) that is one chunk, ``L = (n_mels/16)·(T//16)``. Longer inputs are cut into
    ``target_length``-frame chunks that run as one batch; the tokens of a clip's chunks are then
    concatenated, ``(B, n_chunks·L_chunk, D)``. All chunks have the same length (the last one is
    zero-padded, or dropped with ``pad_last=False``), so the mean over tokens
    (:meth:`forward_head`) equals the average over chunks of the per-chunk means. Chunks of
    different clips never mix.

    ``init_bn`` stays in eval mode (frozen running statistics) even after ``train()``.
    """

    lora_target_templates: ClassVar[dict[str, str]] = {
        "q": "blocks.{i}.attn.q_proj",
        "k": "blocks.{i}.attn.k_proj",
        "v": "blocks.{i}.attn.v_proj",
        "out": "blocks.{i}.attn.proj",
        "fc1": "blocks.{i}.mlp.fc1",
        "fc2": "blocks.{i}.mlp.fc2",
    }
    layers_pattern: ClassVar[str | None] = "blocks"

    time_pos_embed: nn.Parameter
    freq_pos_embed: nn.Parameter

    def __init__(self, cfg: CEDConfig, pretrained_cfg: PretrainedCfg | None = None) -> None:
        mel_cfg = CEDMelConfig(n_mels=cfg.n_mels, batchwise_top_db=cfg.batchwise_top_db)
        if pretrained_cfg is None:
            pretrained_cfg = PretrainedCfg(
                name="ced", embed_dim=cfg.embed_dim, frontend=mel_cfg.to_dict()
            )
        super().__init__(pretrained_cfg)
        self.cfg = cfg
        D, p = cfg.embed_dim, cfg.patch_size
        self.front_end = nn.ModuleList([CEDMel(mel_cfg)])  # keys front_end.0.*
        self.init_bn = nn.Sequential(
            _MelAxisToChannels(), nn.BatchNorm2d(cfg.n_mels, momentum=0.01), _MelAxisToChannels()
        )  # keys init_bn.1.*
        self.patch_embed = _PatchEmbed(p, D)
        self.time_pos_embed = nn.Parameter(torch.empty(1, D, 1, cfg.target_length // p))
        self.freq_pos_embed = nn.Parameter(torch.empty(1, D, cfg.n_mels // p, 1))
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.outputlayer = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, cfg.num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.time_pos_embed, std=0.02)
        nn.init.trunc_normal_(self.freq_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- properties / modes -------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return self.cfg.depth

    @property
    def mel(self) -> CEDMel:
        """The mel front-end (``front_end[0]``)."""
        return cast(CEDMel, self.front_end[0])

    def train(self, mode: bool = True) -> Self:
        """Set training mode everywhere except ``init_bn``, which always stays in eval mode."""
        super().train(mode)
        self.init_bn.eval()
        return self

    def extra_config(self) -> dict[str, Any]:
        """All architecture fields (valid ``create_backbone`` overrides)."""
        return self.cfg.to_dict()

    # -- forward ------------------------------------------------------------------------------
    def num_chunks(self, num_frames: int) -> int:
        """Chunks a spectrogram of ``num_frames`` frames is split into."""
        L = self.cfg.target_length
        if num_frames <= L:
            return 1
        return math.ceil(num_frames / L) if self.cfg.pad_last else num_frames // L

    def _check_wave(self, wave: torch.Tensor) -> None:
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms of shape (B, N), got {tuple(wave.shape)}")
        frames = self.mel.num_frames(wave.shape[-1])
        if frames < self.cfg.patch_size:
            min_n = (self.cfg.patch_size - 1) * self.mel.cfg.hop_length
            raise ValueError(
                f"waveform too short: {wave.shape[-1]} samples give {frames} frames; CED needs at "
                f"least {self.cfg.patch_size} frames ({min_n} samples at {self.sample_rate} Hz)"
            )

    def _forward_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised chunks ``(B', 1, F, T≤target_length)`` -> tokens ``(B', (F/16)·(T//16), D)``."""
        x = self.patch_embed(x)  # (B', D, F/16, T')
        t = x.shape[-1]
        x = x + self.time_pos_embed[..., :t] + self.freq_pos_embed
        x = x.flatten(2).transpose(1, 2)  # (B', (F/16)·T', D), frequency-major
        for block in self.blocks:
            x = block(x)
        return cast(torch.Tensor, self.norm(x))

    def _chunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) -> (n·B, 1, F, min(T, target_length)), chunk-major."""
        L, T = self.cfg.target_length, x.shape[-1]
        if T <= L:
            return x
        chunks = list(x.split(L, dim=-1))
        if chunks[-1].shape[-1] < L:
            if self.cfg.pad_last:
                chunks[-1] = F.pad(chunks[-1], (0, L - chunks[-1].shape[-1]))
            else:
                chunks.pop()
        return torch.cat(chunks, dim=0)

    def forward_spectrogram(self, mel: torch.Tensor) -> torch.Tensor:
        """dB mel ``(B, F, T)`` (the output of ``front_end``) -> tokens ``(B, L, D)``.

        See the class docstring for the layout of ``L`` when ``T > target_length``.
        """
        B = mel.shape[0]
        x = mel.to(self.patch_embed.proj.weight.dtype).unsqueeze(1)  # (B, 1, F, T)
        x = self.init_bn(x)  # per-mel-bin running statistics
        x = self._chunk(x)  # (n·B, 1, F, ≤target_length)
        tokens = self._forward_chunks(x)  # (n·B, Lc, D)
        n = tokens.shape[0] // B
        if n == 1:
            return tokens
        Lc, D = tokens.shape[1:]
        # chunk-major (n, B) -> per clip (B, n·Lc): never mixes clips
        return tokens.view(n, B, Lc, D).transpose(0, 1).reshape(B, n * Lc, D)

    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` at 16 kHz -> tokens ``(B, L, D)`` after the final ``norm``.

        ``L = 4·(T//16)`` with ``T = 1 + N//160`` for ``T <= target_length``; for longer inputs
        ``L = n_chunks·4·(target_length//16)`` (chunk tokens concatenated per clip).
        """
        self._check_wave(wave)
        mel = self.mel(wave)  # (B, F, T) fp32 dB
        mel = self._maybe_augment(mel, time_dim=-1, freq_dim=-2)
        return self.forward_spectrogram(mel)

    def classify(self, wave: torch.Tensor) -> torch.Tensor:
        """AudioSet tag probabilities ``(B, num_classes)``.

        Per chunk: mean over tokens -> ``outputlayer`` -> sigmoid; then the average over chunks.
        """
        tokens = self.forward_features(wave)  # (B, n·Lc, D)
        n = self.num_chunks(self.mel.num_frames(wave.shape[-1]))
        B, L, D = tokens.shape
        pooled = tokens.view(B, n, L // n, D).mean(dim=2)  # (B, n, D)
        return torch.sigmoid(self.outputlayer(pooled)).mean(dim=1)  # (B, num_classes)


# -- checkpoints -----------------------------------------------------------------------------
def remap_ced_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map Hugging Face ``mispeech/ced-*`` keys back to the original (Zenodo) layout.

    ``encoder.X`` (or ``ced_model.X``) -> ``X`` and ``init_bn.*`` -> ``init_bn.1.*``;
    ``outputlayer.*`` is unchanged. Original-layout dicts are returned unchanged (as a copy).
    Fused ``qkv`` tensors are kept; :class:`Attention` splits them when loading.
    """
    if not any(k.startswith(_HF_PREFIXES) for k in state_dict):
        return dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for prefix in _HF_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key.startswith("init_bn.") and not key.startswith("init_bn.1."):
            key = "init_bn.1." + key[len("init_bn.") :]
        out[key] = value
    return out


def _local_checkpoint_file(spec: str | os.PathLike[str]) -> Path | None:
    """A weight file inside an HF-style folder, or ``None`` if ``spec`` is not a folder."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    for name in _HF_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path} is a folder without any of {list(_HF_FILES)}")


def _fetch_from_hub(repo_id: str) -> Path:
    """The weight file of an HF hub repository (e.g. ``mispeech/ced-base``), through the one hub
    client: offline mode and the cache folder are honoured."""
    for name in _HF_FILES:
        found = hub_file(repo_id, name)
        if found is not None:
            return found
    raise CheckpointError(
        f"no weights for hub id {repo_id!r}: expected one of {list(_HF_FILES)}; "
        f"{offline_hint()}, or use the Zenodo .pt file"
    )


def _find(spec: str | os.PathLike[str], pretrained: PretrainedCfg) -> Path:
    """HF-style folder, hub id, or (path / URL / cached name) checked against the known hash."""
    folder_file = _local_checkpoint_file(spec)
    if folder_file is not None:
        return folder_file
    text = str(spec)
    is_url = re.match(r"^[a-z]+://", text) is not None
    if (
        not is_url
        and looks_like_hub_id(text)
        and not Path(text).expanduser().exists()
        and not text.endswith(_CHECKPOINT_SUFFIXES)
    ):
        return _fetch_from_hub(text)
    return resolve_checkpoint(spec, sha256=pretrained.sha256)


def _fill_front_end(
    model: CED, state: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """Fused ``qkv`` split; deterministic front-end buffers (absent from HF files) and a missing
    ``init_bn.1.num_batches_tracked`` filled from the model itself."""
    state = remap_ced_state_dict(state)
    own = model.state_dict()
    fillable = [k for k in own if k.startswith("front_end.") or k.endswith("num_batches_tracked")]
    for key in fillable:
        if key not in state:
            state[key] = own[key]
        elif key.startswith("front_end.") and state[key].shape == own[key].shape:
            diff = (state[key].float() - own[key].float()).abs().max().item()
            if diff > 1e-6:
                logger.warning(
                    "%s: checkpoint buffer %s differs from the computed one by %.3g",
                    path,
                    key,
                    diff,
                )
    return state


def load_ced_checkpoint(
    model: CED, checkpoint: str | os.PathLike[str], trust: bool = False
) -> None:
    """Load original or HF CED weights into ``model`` with strict key matching.

    Accepts a Zenodo-style state dict (plain or wrapped as ``{'model': ...}``), an HF-style
    ``model.safetensors``/``pytorch_model.bin`` file or folder, a URL, or an HF hub id. Fused
    ``qkv`` tensors are split; front-end buffers (deterministic, absent from HF files) and a
    missing ``init_bn.1.num_batches_tracked`` are filled from the model itself.

    Raises:
        CheckpointError: missing file, unreadable file, or keys/shapes that do not match.
    """
    cfg = model.cfg
    load_pretrained(
        model,
        checkpoint,
        trust=trust,
        find=lambda spec: _find(spec, model.pretrained_cfg),
        adapt=lambda state, path: _fill_front_end(model, state, path),
        hint=(
            f"{model.pretrained_cfg.name!r}: embed_dim={cfg.embed_dim}, depth={cfg.depth}, "
            f"num_heads={cfg.num_heads}, num_classes={cfg.num_classes}"
        ),
    )


# -- registry --------------------------------------------------------------------------------
_SIZES: dict[str, tuple[int, int, str, str | None]] = {
    # name: (embed_dim, heads, Zenodo file, Zenodo record)
    "ced-tiny": (192, 3, "audiotransformer_tiny_mAP_4814.pt", "8275347"),
    "ced-mini": (256, 4, "audiotransformer_mini_mAP_4896.pt", "8275347"),
    "ced-small": (384, 6, "audiotransformer_small_mAP_4958.pt", "8275319"),
    "ced-base": (768, 12, "audiotransformer_base_mAP_4999.pt", "8275347"),
    "ced-test": (32, 2, "", None),
}


def _build(
    name: str,
    checkpoint: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
    **overrides: Any,
) -> CED:
    dim, heads, filename, record = _SIZES[name]
    base = CEDConfig(embed_dim=dim, num_heads=heads, depth=2 if name == "ced-test" else 12)
    cfg = cast(CEDConfig, dataclass_overrides(base, overrides))
    mel_cfg = CEDMelConfig(n_mels=cfg.n_mels, batchwise_top_db=cfg.batchwise_top_db)
    if record is None:
        pretrained = PretrainedCfg(
            name=name,
            embed_dim=cfg.embed_dim,
            source="random weights (tests)",
            frontend=mel_cfg.to_dict(),
        )
    else:
        pretrained = PretrainedCfg(
            name=name,
            embed_dim=cfg.embed_dim,
            source=f"CED (Dinkel et al., ICASSP 2024), Zenodo record {record} / HF mispeech/{name}",
            url=_ZENODO.format(record=record, file=filename),
            hub_id=f"mispeech/{name}",
            filename=filename,
            license="Apache-2.0 (HF model card)",
            frontend=mel_cfg.to_dict(),
        )
    model = CED(cfg, pretrained)
    if checkpoint is not None:
        load_ced_checkpoint(model, checkpoint, trust=trust_checkpoint)
    return model


@register_backbone(
    "ced-tiny", "CED-Tiny audio transformer (5.5 M params, D=192, AudioSet mAP 48.1)"
)
def ced_tiny(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> CED:
    """CED-Tiny (D 192, 3 heads, 12 blocks)."""
    return _build("ced-tiny", checkpoint, trust_checkpoint, **overrides)


@register_backbone(
    "ced-mini", "CED-Mini audio transformer (9.7 M params, D=256, AudioSet mAP 49.0)"
)
def ced_mini(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> CED:
    """CED-Mini (D 256, 4 heads, 12 blocks)."""
    return _build("ced-mini", checkpoint, trust_checkpoint, **overrides)


@register_backbone(
    "ced-small", "CED-Small audio transformer (21.6 M params, D=384, AudioSet mAP 49.6)"
)
def ced_small(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> CED:
    """CED-Small (D 384, 6 heads, 12 blocks)."""
    return _build("ced-small", checkpoint, trust_checkpoint, **overrides)


@register_backbone(
    "ced-base", "CED-Base audio transformer (85.7 M params, D=768, AudioSet mAP 50.0)"
)
def ced_base(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> CED:
    """CED-Base (D 768, 12 heads, 12 blocks)."""
    return _build("ced-base", checkpoint, trust_checkpoint, **overrides)


@register_backbone(
    "ced-test", "tiny random-weight CED (D=32, 2 blocks) for tests", needs_weights=False
)
def ced_test(
    checkpoint: str | None = None, trust_checkpoint: bool = False, **overrides: Any
) -> CED:
    """Tiny CED with random weights (D 32, 2 heads, 2 blocks) for fast tests."""
    return _build("ced-test", checkpoint, trust_checkpoint, **overrides)
