"""Proxy-task heads: a projection to the KNN embedding plus an ArcFace (or linear) classifier.

::

    head = ProxyHead(in_dim=768, num_classes=len(cmap), cfg=HeadConfig())
    z = head.project(backbone.embed(wave))   # (B, 128): the embedding the KNN back-end stores
    loss = head.loss(backbone.embed(wave), labels)

ArcFace (Deng et al., CVPR 2019) normalises the embedding and the class weights, so the logits are
cosines; for the true class the angle gets an additive margin, ``s·cos(θ + m)``. The paper does not
state ``s`` and ``m``; the defaults ``s = 30``, ``m = 0.5`` are the usual ArcFace values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stetho.utils.config import ConfigBase

__all__ = ["HeadConfig", "ProxyHead", "arcface_logits"]

# cos θ is clamped to [-1 + eps, 1 - eps] so that sqrt(1 - cos²) keeps a finite gradient.
_COS_EPS = 1e-6


@dataclass
class HeadConfig(ConfigBase):
    """Proxy-task head settings.

    Attributes:
        kind: ``"arcface"`` (additive angular margin, the paper's loss) or ``"linear"`` (plain
            softmax classifier on the projected embedding).
        embed_dim: Size of the projected embedding used by the KNN back-end; ``None`` keeps the
            backbone's embedding (no projection).
        scale: ArcFace scale ``s`` (not stated in the paper; 30 is the usual ArcFace value).
        margin: ArcFace additive angular margin ``m`` in radians (not stated in the paper; 0.5 is
            the usual value).
        easy_margin: Apply the margin only where ``cos θ > 0`` (ArcFace's "easy margin" variant);
            off by default, which uses the ``cos θ − m·sin m`` fallback past ``θ = π − m``.
        bias: Whether the projection Linear has a bias.
    """

    kind: Literal["arcface", "linear"] = "arcface"
    embed_dim: int | None = 128
    scale: float = 30.0
    margin: float = 0.5
    easy_margin: bool = False
    bias: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim is not None and self.embed_dim <= 0:
            raise ValueError(f"head.embed_dim must be positive or None, got {self.embed_dim}")
        if self.scale <= 0:
            raise ValueError(f"head.scale must be positive, got {self.scale}")
        if not 0.0 <= self.margin < math.pi / 2:
            raise ValueError(f"head.margin must be in [0, π/2) radians, got {self.margin}")


def arcface_logits(
    cosine: torch.Tensor,
    labels: torch.Tensor | None,
    scale: float,
    margin: float,
    easy_margin: bool = False,
) -> torch.Tensor:
    """ArcFace logits from cosines.

    Args:
        cosine: ``(B, C)`` cosine similarities between embeddings and class centres.
        labels: ``(B,)`` integer targets; ``None`` returns ``scale · cos θ`` with no margin.
        scale: ``s``.
        margin: ``m`` (radians).
        easy_margin: Margin only where ``cos θ > 0``.

    Returns:
        ``(B, C)`` logits: ``s·cos(θ + m)`` for the target class, ``s·cos θ`` elsewhere.
    """
    cosine = cosine.clamp(-1.0 + _COS_EPS, 1.0 - _COS_EPS)
    if labels is None or margin == 0.0:
        return scale * cosine
    sine = torch.sqrt(1.0 - cosine * cosine)  # (B, C), > 0 thanks to the clamp
    cos_m, sin_m = math.cos(margin), math.sin(margin)
    phi = cosine * cos_m - sine * sin_m  # cos(θ + m)
    if easy_margin:
        phi = torch.where(cosine > 0, phi, cosine)
    else:
        # Past θ = π − m, cos(θ + m) stops decreasing; use the monotone cos θ − m·sin m instead.
        th = math.cos(math.pi - margin)
        mm = math.sin(math.pi - margin) * margin
        phi = torch.where(cosine > th, phi, cosine - mm)
    target = F.one_hot(labels.long(), num_classes=cosine.shape[1]).to(torch.bool)  # (B, C)
    return scale * torch.where(target, phi, cosine)


class ProxyHead(nn.Module):
    """Projection + classifier trained on the proxy classes.

    Args:
        in_dim: Backbone embedding size D.
        num_classes: Number of proxy classes C.
        cfg: Head settings.
    """

    def __init__(self, in_dim: int, num_classes: int, cfg: HeadConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else HeadConfig()
        if in_dim <= 0 or num_classes <= 0:
            raise ValueError(
                f"ProxyHead needs in_dim > 0 and num_classes > 0, got {in_dim}, {num_classes}"
            )
        self.cfg = cfg
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.out_dim = cfg.embed_dim if cfg.embed_dim is not None else in_dim
        self.proj: nn.Module = (
            nn.Linear(in_dim, cfg.embed_dim, bias=cfg.bias)
            if cfg.embed_dim is not None
            else nn.Identity()
        )
        if cfg.kind == "arcface":
            self.weight = nn.Parameter(
                torch.empty(num_classes, self.out_dim)
            )  # (C, E) class centres
            nn.init.xavier_uniform_(self.weight)
            self.classifier: nn.Linear | None = None
        elif cfg.kind == "linear":
            self.register_parameter("weight", None)
            self.classifier = nn.Linear(self.out_dim, num_classes)
        else:
            raise ValueError(
                f"unknown head kind {cfg.kind!r}; valid choices: ['arcface', 'linear']"
            )

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone embedding ``(B, D)`` → projected embedding ``(B, E)`` (not normalised)."""
        return self.proj(x)

    def logits_from_embedding(
        self, z: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Projected embedding ``(B, E)`` → logits ``(B, C)`` (margin only when labels given)."""
        if self.classifier is not None:
            return self.classifier(z)
        # fp32 for the cosine/margin maths, also under autocast
        with torch.autocast(device_type=z.device.type, enabled=False):
            zn = F.normalize(z.float(), dim=-1)  # (B, E)
            wn = F.normalize(self.weight.float(), dim=-1)  # (C, E)
            cosine = zn @ wn.t()  # (B, C)
            return arcface_logits(
                cosine, labels, self.cfg.scale, self.cfg.margin, self.cfg.easy_margin
            )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone embedding ``(B, D)`` → logits ``(B, C)``.

        For ArcFace the logits are ``s·cos θ``; with ``labels`` the target class gets
        ``s·cos(θ + m)``. The linear head ignores ``labels``.
        """
        return self.logits_from_embedding(self.project(x), labels)

    def loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the (margin) logits against ``labels`` ``(B,)``; a scalar."""
        if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
        return F.cross_entropy(self.forward(x, labels), labels.long())

    def extra_repr(self) -> str:
        return f"kind={self.cfg.kind}, in_dim={self.in_dim}, embed_dim={self.out_dim}, classes={self.num_classes}"
