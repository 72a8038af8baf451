"""The contract every stetho backbone fulfils (timm-style).

A backbone takes a batch of mono waveforms ``(B, N)`` at its own ``sample_rate``, runs its own
front-end, and returns tokens or a pooled embedding::

    tokens = model.forward_features(wave)   # (B, L, D)
    emb = model.forward_head(tokens)        # (B, D)   (mean over tokens unless overridden)
    emb = model.embed(wave)                 # == forward_head(forward_features(wave))

Spectrogram models apply ``self.spec_augment`` (if set, and only in training mode) between their
front-end and the network; raw-waveform models ignore it (``input_kind == "waveform"``).

LoRA targets are declared, not guessed: ``lora_target_templates`` maps a matrix key (``q``, ``k``,
``v``, ``out``, ``fc1``, ``fc2``) to a module-name template with ``{i}`` for the layer index, and
``num_layers`` gives the number of layers. ``stetho.model`` turns these into peft configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from stetho.utils.config import ConfigBase

__all__ = [
    "MATRIX_KEYS",
    "Backbone",
    "PretrainedCfg",
    "hf_lora_targets",
]

#: Matrix keys accepted in LoRA target lists ("fc" expands to fc1 + fc2).
MATRIX_KEYS: tuple[str, ...] = ("q", "k", "v", "out", "fc1", "fc2")


@dataclass
class PretrainedCfg(ConfigBase):
    """Where a backbone's weights come from and how its inputs are prepared.

    Attributes:
        name: Registry name, e.g. ``"beats"``.
        sample_rate: Input waveform rate in Hz; callers resample to it.
        input_kind: ``"fbank"`` (spectrogram model: SpecAugment applies) or ``"waveform"``.
        embed_dim: Size of the pooled embedding.
        source: Human-readable origin of the official weights (URL, hub id, paper).
        url: Direct download URL if one exists, else ``None``.
        hub_id: Hugging Face hub id if the weights live there, else ``None``.
        filename: Expected checkpoint file name (used in offline error messages and the cache).
        sha256: Known SHA-256 of the checkpoint file, if any.
        license: Licence of the weights.
        frontend: Front-end settings (documented constants), for display and artifacts.
    """

    name: str = ""
    sample_rate: int = 16000
    input_kind: Literal["fbank", "waveform"] = "fbank"
    embed_dim: int = 0
    source: str = ""
    url: str | None = None
    hub_id: str | None = None
    filename: str | None = None
    sha256: str | None = None
    license: str = ""
    frontend: dict[str, Any] = field(default_factory=dict)


def hf_lora_targets(
    layer: str, attention: str, fc1: str = "fc1", fc2: str = "fc2"
) -> dict[str, str]:
    """LoRA target map of a ``transformers`` encoder layer (the one place it is written).

    Args:
        layer: Module name of layer ``{i}``, e.g. ``"encoder.layers.{i}"``.
        attention: Attention module inside the layer (holds ``q_proj``/``k_proj``/``v_proj``/
            ``out_proj``), e.g. ``"self_attn"``.
        fc1, fc2: The feed-forward linears inside the layer.
    """
    att = f"{layer}.{attention}"
    return {
        "q": f"{att}.q_proj",
        "k": f"{att}.k_proj",
        "v": f"{att}.v_proj",
        "out": f"{att}.out_proj",
        "fc1": f"{layer}.{fc1}",
        "fc2": f"{layer}.{fc2}",
    }


class Backbone(nn.Module):
    """Base class of all backbones. Subclasses implement :meth:`forward_features`."""

    #: Module-name templates for LoRA, e.g. ``{"q": "encoder.layers.{i}.self_attn.q_proj"}``.
    lora_target_templates: ClassVar[dict[str, str]] = {}
    #: Name of the module list that holds the layers (peft's ``layers_pattern``).
    layers_pattern: ClassVar[str | None] = None

    def __init__(self, pretrained_cfg: PretrainedCfg) -> None:
        super().__init__()
        self.pretrained_cfg = pretrained_cfg
        self.spec_augment: nn.Module | None = None

    # -- properties -------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """Input waveform sample rate in Hz."""
        return self.pretrained_cfg.sample_rate

    @property
    def embed_dim(self) -> int:
        """Size D of the pooled embedding."""
        return self.pretrained_cfg.embed_dim

    @property
    def input_kind(self) -> str:
        """``"fbank"`` or ``"waveform"``."""
        return self.pretrained_cfg.input_kind

    @property
    def num_layers(self) -> int:
        """Number of transformer layers that LoRA can target (0 for non-transformers)."""
        return 0

    def lora_module_names(self, matrix: str, layers: list[int] | None = None) -> list[str]:
        """Full module names of one matrix kind in the given layers (all layers by default).

        Raises:
            ValueError: if the backbone has no such matrix or a layer index is out of range.
        """
        if matrix not in self.lora_target_templates:
            raise ValueError(
                f"backbone {self.pretrained_cfg.name!r} has no LoRA target {matrix!r}; "
                f"valid targets: {sorted(self.lora_target_templates)}"
            )
        idx = list(range(self.num_layers)) if layers is None else list(layers)
        bad = [i for i in idx if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"layer indices {bad} out of range 0..{self.num_layers - 1}")
        return [self.lora_target_templates[matrix].format(i=i) for i in idx]

    # -- augmentation ----------------------------------------------------------------------
    def set_spec_augment(self, module: nn.Module | None) -> None:
        """Install (or remove with ``None``) a SpecAugment layer applied in training mode."""
        self.spec_augment = module

    def _maybe_augment(self, spec: torch.Tensor, time_dim: int, freq_dim: int) -> torch.Tensor:
        """Apply SpecAugment to a (normalised) spectrogram when training; identity otherwise.

        Args:
            spec: Batched spectrogram, e.g. ``(B, T, F)`` or ``(B, F, T)``.
            time_dim: Index of the time axis in ``spec``.
            freq_dim: Index of the frequency axis in ``spec``.
        """
        if self.training and self.spec_augment is not None:
            return self.spec_augment(spec, time_dim=time_dim, freq_dim=freq_dim)
        return spec

    # -- forward ---------------------------------------------------------------------------
    def forward_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` at :attr:`sample_rate` → tokens ``(B, L, D)``."""
        raise NotImplementedError

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, L, D)`` → pooled embedding ``(B, D)`` (mean over tokens)."""
        return tokens.mean(dim=1)

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, N)`` → embeddings ``(B, D)``."""
        return self.forward_head(self.forward_features(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(wave)

    def embed_layers(
        self, wave: torch.Tensor, layers: list[int] | None = None
    ) -> list[torch.Tensor]:
        """Token maps of intermediate layers, each ``(B, L_i, D_i)``, for multi-layer features.

        ``layers=None`` gives the final tokens only (``[forward_features(wave)]``). Backbones
        with addressable blocks (EfficientAT) accept block indices; others raise ``ValueError``
        for anything but ``None``.
        """
        if layers is not None:
            raise ValueError(
                f"backbone {self.pretrained_cfg.name!r} exposes only its final tokens (layers=None)"
            )
        return [self.forward_features(wave)]

    def describe(self) -> dict[str, Any]:
        """Summary used by ``stetho backbones``: parameters, rate, embedding size, weights origin."""
        n_params = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        cfg = self.pretrained_cfg
        return {
            "name": cfg.name,
            "params": n_params,
            "sample_rate": cfg.sample_rate,
            "embed_dim": cfg.embed_dim,
            "input": cfg.input_kind,
            "weights": cfg.hub_id or cfg.url or cfg.source or "none",
        }

    def extra_config(self) -> dict[str, Any]:
        """Architecture overrides needed to rebuild this exact model (stored in artifacts)."""
        return {}


def dataclass_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return ``dataclasses.replace(cfg, **overrides)`` with a clear error on unknown keys."""
    valid = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown architecture override(s) {unknown}; valid: {sorted(valid)}")
    return dataclasses.replace(cfg, **overrides)
