"""Clip features for the few-shot ensemble: pooled tokens of one or several backbone layers.

A :class:`FeatureConfig` names a backbone (``logmel`` needs no weights; ``efficientat-mn04`` is
AudioSet-pretrained), the layers whose tokens are pooled, and the pooling. With ``logmel`` the
tokens are the log-mel frames, so ``pool="mean+max"`` gives the per-band log-mel mean and max
statistics of the issue's strongest simple baseline::

    fx = FeatureExtractor(FeatureConfig(backbone="logmel"))
    feats = fx.extract([wave_16k_a, wave_16k_b])      # (2, 256) float64

Clips are embedded one at a time at their full length (no padding, no windows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from stetho.backbones.base import Backbone
from stetho.backbones.checkpoint import CheckpointError
from stetho.backbones.registry import architecture_overrides, create_backbone, get_entry
from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["FeatureConfig", "FeatureExtractor", "pool_tokens"]


@dataclass
class FeatureConfig(ConfigBase):
    """Which backbone layers become a clip's feature vector.

    Attributes:
        backbone: Registry name (``logmel``: weight-free; ``efficientat-mn04``: pretrained).
        checkpoint: Weights (path, URL or file name in ``$STETHO_CACHE``); ``None`` for
            ``logmel``. ``stetho backbones fetch NAME`` puts the registered file in the cache.
        layers: Block indices to pool (EfficientAT: 0 = stem … 16 = last conv); ``None`` = the
            final tokens. Several layers are pooled separately and concatenated.
        pool: ``"mean"``, ``"max"``, ``"mean+max"`` or ``"mean+std"`` (population std) over
            each layer's tokens.
        overrides: Architecture settings of the backbone (e.g. ``{n_mels: 64}`` for
            ``logmel``); nothing else (checked by
            :func:`~stetho.backbones.registry.architecture_overrides`: ``trust_checkpoint`` is
            refused, a feature's checkpoint is always read with ``weights_only``).
    """

    backbone: str = "logmel"
    checkpoint: str | None = None
    layers: list[int] | None = None
    pool: Literal["mean", "max", "mean+max", "mean+std"] = "mean+max"
    overrides: dict[str, Any] = field(default_factory=dict)

    def source_key(self) -> tuple[str, str | None, str]:
        """Members with equal keys share one backbone instance."""
        return (self.backbone, self.checkpoint, repr(sorted(self.overrides.items())))

    def label(self) -> str:
        """Short name, e.g. ``efficientat-mn04[11,16]:mean+max``."""
        layers = "" if self.layers is None else "[" + ",".join(map(str, self.layers)) + "]"
        return f"{self.backbone}{layers}:{self.pool}"


def pool_tokens(tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """Tokens ``(B, L, D)`` → ``(B, D)`` (mean or max) or ``(B, 2D)`` (``mean+max``,
    ``mean+std``: population standard deviation over the tokens)."""
    if pool == "mean":
        return tokens.mean(1)
    if pool == "max":
        return tokens.amax(1)
    if pool == "mean+max":
        return torch.cat([tokens.mean(1), tokens.amax(1)], dim=-1)
    if pool == "mean+std":
        return torch.cat([tokens.mean(1), tokens.std(1, correction=0)], dim=-1)
    raise ValueError(f"unknown pooling {pool!r}; use mean, max, mean+max or mean+std")


class FeatureExtractor:
    """Waveforms → pooled multi-layer features of one backbone (eval mode, no gradients).

    Args:
        cfg: The feature settings.
        backbone: An already built backbone to use (else built from ``cfg``).
        device: Where to run it.
        source: Where ``cfg`` was read (named in errors about its overrides).
    """

    def __init__(
        self,
        cfg: FeatureConfig,
        backbone: Backbone | None = None,
        device: str | torch.device = "cpu",
        *,
        source: str = "feature.overrides",
    ) -> None:
        self.cfg = cfg
        if backbone is None:
            entry = get_entry(cfg.backbone)
            if entry.needs_weights and cfg.checkpoint is None:
                raise ConfigError(
                    f"feature backbone {cfg.backbone!r} needs pretrained weights: set its "
                    f"checkpoint (fetch the registered file with `stetho backbones fetch "
                    f"{cfg.backbone}`)"
                )
            # a file's overrides: architecture settings only, never trust (item 1 of issue 22)
            overrides = architecture_overrides(cfg.backbone, cfg.overrides, source=source)
            try:
                backbone = create_backbone(cfg.backbone, checkpoint=cfg.checkpoint, **overrides)
            except CheckpointError as err:
                raise CheckpointError(
                    f"{err}. To download the registered weights into the cache, run "
                    f"`stetho backbones fetch {cfg.backbone}`"
                ) from err
        self.backbone = backbone.eval()
        self.device = torch.device(device)
        self.backbone.to(self.device)

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) the backbone expects."""
        return int(self.backbone.sample_rate)

    @torch.inference_mode()
    def extract(self, waves: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        """Features ``(B, D)`` float64 of mono waveforms at :attr:`sample_rate`."""
        rows = []
        for w in waves:
            x = torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(1, -1).to(self.device)
            maps = self.backbone.embed_layers(x, self.cfg.layers)
            rows.append(torch.cat([pool_tokens(m.float(), self.cfg.pool) for m in maps], dim=-1))
        if not rows:
            raise ValueError("no waveforms to extract features from")
        return torch.cat(rows).double().cpu().numpy()
