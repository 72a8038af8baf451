"""The AE baseline's parts: config, :class:`DenseAE`, the Mahalanobis scores, one section's state.

See :mod:`stetho.baselines.autoencoder` for the method (dcase-protocol.md §3).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from stetho.frontend.librosa_mel import BaselineFeatureConfig
from stetho.scoring.threshold import ThresholdConfig
from stetho.utils.config import ConfigBase

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "SCORE_MODES",
    "WEIGHTS_FILE",
    "AEBaselineConfig",
    "AESection",
    "DenseAE",
    "ScoreMode",
    "group_scores",
    "mahalanobis_pairwise_mean",
    "residuals",
    "score_name",
    "selective_mahalanobis",
]

logger = logging.getLogger(__name__)

ScoreMode = Literal["mse", "mahala"]
SCORE_MODES: tuple[str, ...] = ("mse", "mahala")
FORMAT = "stetho.ae_baseline"
#: 2: ``manifest.json`` with the SHA-256 of every file (version 1 folders still load).
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_CHUNK = 16384  # vectors per forward pass when scoring


@dataclass
class AEBaselineConfig(ConfigBase):
    """Configuration of the AE baseline (defaults = protocol §3).

    Attributes:
        features: Log-mel / context-vector parameters.
        hidden_dim: Width of the hidden layers (128).
        hidden_layers: Hidden layers on each side of the bottleneck (4).
        latent_dim: Bottleneck size (8).
        bn_momentum: BatchNorm1d momentum (PyTorch convention; 0.01 = Keras 0.99).
        bn_eps: BatchNorm1d eps.
        epochs: Training epochs.
        batch_size: Mini-batch size (vectors).
        lr: Adam learning rate.
        validation_split: Fraction of the vectors held out for validation (rounded up).
        seed: Seed of the weight init, the split and the shuffling.
        faithful: Default Mahalanobis reduction (True: baseline quirk ``r̄ᵀΣ⁻¹r̄``; False: mean
            per-frame distance).
        threshold_samples: Values the gamma threshold is fitted on: ``"batches"`` (2023 PyTorch
            baseline) or ``"clips"`` (per-clip scores of the training clips).
        threshold: Threshold fit (gamma, quantile 0.9).
        device: Torch device for training and scoring.
        score_mode: The score the :class:`~stetho.detector.Scorer` methods use (``stetho
            detect``/``watch``/``serve``): ``"mse"`` or ``"mahala"`` (with ``faithful``).
    """

    features: BaselineFeatureConfig = field(default_factory=BaselineFeatureConfig)
    hidden_dim: int = 128
    hidden_layers: int = 4
    latent_dim: int = 8
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    validation_split: float = 0.1
    seed: int = 13711
    faithful: bool = True
    threshold_samples: Literal["batches", "clips"] = "batches"
    # the official baseline's own rule, unclamped (protocol §3.4), to reproduce its figures
    threshold: ThresholdConfig = field(
        default_factory=lambda: ThresholdConfig(method="gamma-dcase")
    )
    device: str = "cpu"
    score_mode: ScoreMode = "mse"

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2:
            raise ValueError(
                f"need epochs >= 0 and batch_size >= 2, got {self.epochs}, {self.batch_size}"
            )
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {self.validation_split}")
        if min(self.hidden_dim, self.hidden_layers, self.latent_dim) < 1:
            raise ValueError("hidden_dim, hidden_layers and latent_dim must be >= 1")


class DenseAE(nn.Module):
    """Dense autoencoder of the baseline: ``(B, D)`` → reconstruction ``(B, D)``, code ``(B, latent)``.

    Encoder: D→H, (H→H)×(L−1), H→latent; decoder: latent→H, (H→H)×(L−1), H→D (linear). Every
    layer except the last is Linear + BatchNorm1d + ReLU.
    """

    def __init__(
        self,
        input_dim: int = 640,
        hidden_dim: int = 128,
        hidden_layers: int = 4,
        latent_dim: int = 8,
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim

        def block(n_in: int, n_out: int) -> list[nn.Module]:
            return [
                nn.Linear(n_in, n_out),
                nn.BatchNorm1d(n_out, momentum=bn_momentum, eps=bn_eps),
                nn.ReLU(),
            ]

        enc = block(input_dim, hidden_dim)
        dec = block(latent_dim, hidden_dim)
        for _ in range(hidden_layers - 1):
            enc += block(hidden_dim, hidden_dim)
            dec += block(hidden_dim, hidden_dim)
        enc += block(hidden_dim, latent_dim)
        dec.append(nn.Linear(hidden_dim, input_dim))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    @classmethod
    def from_config(cls, cfg: AEBaselineConfig) -> DenseAE:
        """The network an :class:`AEBaselineConfig` describes (freshly initialised)."""
        return cls(
            cfg.features.dim,
            cfg.hidden_dim,
            cfg.hidden_layers,
            cfg.latent_dim,
            cfg.bn_momentum,
            cfg.bn_eps,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x.view(-1, self.input_dim))  # (B, latent)
        return self.decoder(z), z  # (B, D), (B, latent)


def mahalanobis_pairwise_mean(blocks: np.ndarray, precision: np.ndarray) -> float:
    """``mean_{i,j} rᵢᵀ P rⱼ`` over all pairs of residual blocks, as the baseline computes it.

    Args:
        blocks: Residual blocks ``(M, d)``.
        precision: Inverse covariance ``(d, d)``.

    Returns:
        The mean of the ``(M, M)`` matrix ``R P Rᵀ`` (O(M²) — a reference for tests; the same
        value is ``r̄ᵀ P r̄``, see :func:`selective_mahalanobis`).
    """
    r = np.asarray(blocks, dtype=np.float64)
    return float(np.mean(r @ np.asarray(precision, dtype=np.float64) @ r.T))


def selective_mahalanobis(
    blocks: np.ndarray,
    precision_source: np.ndarray,
    precision_target: np.ndarray,
    *,
    faithful: bool = True,
) -> float:
    """Selective Mahalanobis score ``min(D_s, D_t)`` of one clip's residual blocks ``(M, d)``.

    ``faithful=True``: ``D = r̄ᵀ P r̄`` with ``r̄`` the mean block (= the baseline's mean over all
    block pairs); ``False``: ``D = mean_i rᵢᵀ P rᵢ``.
    """
    r = np.asarray(blocks, dtype=np.float64)  # (M, d)
    if r.ndim != 2 or r.shape[0] == 0:
        raise ValueError(f"expected residual blocks (M, d) with M >= 1, got shape {r.shape}")
    out = []
    for p in (precision_source, precision_target):
        if faithful:
            m = r.mean(axis=0)  # (d,)
            out.append(float(m @ p @ m))
        else:
            out.append(float(np.mean(np.einsum("md,de,me->m", r, p, r))))
    return min(out)


@dataclass
class AESection:
    """Trained state of one (machine, section).

    Attributes:
        model: The autoencoder (eval mode).
        cov_source, cov_target: Residual-block covariances ``(n_mels, n_mels)`` float64.
        thresholds: Decision thresholds by score name (``"mse"``, ``"mahala"``,
            ``"mahala-frame"`` = non-faithful Mahalanobis).
        sample_rate: Rate of the training clips (test audio at another rate is resampled).
        stats: Counts (clips, vectors, source/target vectors) and final losses.
    """

    model: DenseAE
    cov_source: np.ndarray
    cov_target: np.ndarray
    thresholds: dict[str, float]
    sample_rate: int
    stats: dict[str, Any] = field(default_factory=dict)
    _precisions: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def precisions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(Σ_s⁻¹, Σ_t⁻¹)`` float64."""
        if self._precisions is None:
            self._precisions = (_inverse(self.cov_source), _inverse(self.cov_target))
        return self._precisions


def _inverse(cov: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(cov)
    except np.linalg.LinAlgError:
        logger.warning("singular residual covariance; using the pseudo-inverse")
        return np.linalg.pinv(cov)


def score_name(mode: str, faithful: bool) -> str:
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; valid: {', '.join(SCORE_MODES)}")
    return (
        "mahala" if mode == "mahala" and faithful else ("mse" if mode == "mse" else "mahala-frame")
    )


# ------------------------------------------------------------------------------------------------
# scoring helpers


@torch.no_grad()
def residuals(model: DenseAE, x: np.ndarray, device: str) -> np.ndarray:
    """``x − model(x)`` in eval mode, chunked: ``(V, D)`` float64."""
    model.eval()
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(0, x.shape[0], _CHUNK):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + _CHUNK])).to(device)
        recon, _ = model(xb)
        out[i : i + _CHUNK] = (xb - recon).double().cpu().numpy()
    return out


def group_scores(
    res: np.ndarray, offsets: Sequence[int], sec: AESection, n_mels: int
) -> dict[str, np.ndarray]:
    """Per-group scores (all three kinds) from residuals ``(V, D)``; group ``g`` is rows
    ``offsets[g]:offsets[g + 1]``."""
    p_s, p_t = sec.precisions
    out: dict[str, list[float]] = {"mse": [], "mahala": [], "mahala-frame": []}
    for a, b in itertools.pairwise(offsets):
        r = res[a:b]  # (v, D)
        blocks = r.reshape(-1, n_mels)  # (v·frames, n_mels)
        out["mse"].append(float(np.mean(r**2)))
        out["mahala"].append(selective_mahalanobis(blocks, p_s, p_t, faithful=True))
        out["mahala-frame"].append(selective_mahalanobis(blocks, p_s, p_t, faithful=False))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
