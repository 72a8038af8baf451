"""The official DCASE 2023–2025 autoencoder baseline ("DCASE2023T2-AE"), for comparison.

Our own implementation of dcase-protocol.md §3, trained and evaluated on the same data and
metrics as stetho's detectors:

* features (§3.1): baseline log-mel (:mod:`stetho.frontend.librosa_mel`), 5-frame context vectors
  (640 dims, frame-major, hop 1);
* model (§3.2): :class:`DenseAE` 640→128×4→8→128×4→640, every hidden layer (the 8-d bottleneck
  too) Linear + BatchNorm1d(momentum 0.01, eps 1e-3) + ReLU, linear output; MSE loss, Adam 1e-3,
  batch 256, 100 epochs, 10 % of the vectors held out for validation, seed 13711; one model per
  (machine, section), source and target train clips pooled;
* scores (§3.3): ``"mse"`` = mean squared reconstruction error over all vectors and dims of a
  clip; ``"mahala"`` = selective Mahalanobis distance ``min(D_s, D_t)`` of the per-frame 128-d
  residual blocks with covariances Σ_s, Σ_t of the source / target train residuals. With
  ``faithful=True`` D is, as in the baseline code, the mean over all block pairs ``rᵢᵀ Σ⁻¹ rⱼ``,
  which equals ``r̄ᵀ Σ⁻¹ r̄`` (r̄ = mean residual block of the clip); ``faithful=False`` uses the
  mean per-block distance ``mean_i rᵢᵀ Σ⁻¹ rᵢ``. The covariances are accumulated as in the
  baseline: blocks centred per mini-batch, outer products summed and divided by the number of
  *vectors* minus one (a uniform scale that does not change rankings); Σ_t = Σ_s without target
  vectors;
* decision threshold (§3.4): 3-parameter gamma fit, ``ppf(0.9)``, ``score > threshold``
  (:func:`stetho.scoring.threshold.fit_threshold`). ``threshold_samples="batches"`` fits, like
  the 2023 PyTorch baseline (v2.0.1+), per-mini-batch values (MSE: the last epoch's training batch
  losses in train mode + validation batch losses; Mahalanobis: per-batch selective distances over
  the train and validation vectors); ``"clips"`` fits per-clip scores of the training clips (the
  2022 Keras baseline's choice).

Known deviations: the validation split and shuffling use numpy/torch generators seeded with
``seed`` (not sklearn's ``train_test_split`` on the global numpy state), and features are
computed in float64 (librosa: float32), so numbers match the baseline statistically, not bit for
bit.

Example:
    >>> model = train_ae_baseline(scan_dataset(root).filter(split="train"))   # doctest: +SKIP
    >>> model.score([wave], ("fan", "00"), mode="mahala")                       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stetho.data import Clip, load_audio, scan_dataset
from stetho.data.names import Key
from stetho.frontend.librosa_mel import BaselineFeatureConfig, baseline_vectors
from stetho.scoring.threshold import ThresholdConfig, decide, fit_threshold
from stetho.utils.config import ConfigBase
from stetho.utils.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from stetho.evaluation import EvaluationResult

__all__ = [
    "SCORE_MODES",
    "AEBaseline",
    "AEBaselineConfig",
    "AESection",
    "DenseAE",
    "mahalanobis_pairwise_mean",
    "run_ae_baseline",
    "selective_mahalanobis",
    "train_ae_baseline",
]

logger = logging.getLogger(__name__)

ScoreMode = Literal["mse", "mahala"]
SCORE_MODES: tuple[str, ...] = ("mse", "mahala")
FORMAT = "stetho.ae_baseline"
FORMAT_VERSION = 1
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
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    device: str = "cpu"

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


def _score_name(mode: str, faithful: bool) -> str:
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; valid: {', '.join(SCORE_MODES)}")
    return (
        "mahala" if mode == "mahala" and faithful else ("mse" if mode == "mse" else "mahala-frame")
    )


# ------------------------------------------------------------------------------------------------
# scoring helpers


@torch.no_grad()
def _residuals(model: DenseAE, x: np.ndarray, device: str) -> np.ndarray:
    """``x − model(x)`` in eval mode, chunked: ``(V, D)`` float64."""
    model.eval()
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(0, x.shape[0], _CHUNK):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + _CHUNK])).to(device)
        recon, _ = model(xb)
        out[i : i + _CHUNK] = (xb - recon).double().cpu().numpy()
    return out


def _group_scores(
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


# ------------------------------------------------------------------------------------------------
# training


@dataclass
class _SectionData:
    """One section's vectors split into train / validation, on the training device."""

    x_all: np.ndarray  # (N, D) float32
    tgt_all: np.ndarray  # (N,) bool
    tr_idx: np.ndarray
    val_idx: np.ndarray
    x_tr: torch.Tensor  # (Ntr, D)
    x_val: torch.Tensor  # (Nval, D)
    tgt_tr: torch.Tensor  # (Ntr,)


def _split_vectors(
    clip_vectors: Sequence[np.ndarray],
    clip_is_target: Sequence[bool],
    cfg: AEBaselineConfig,
    where: str,
) -> _SectionData:
    x_all = np.concatenate(clip_vectors, axis=0).astype(np.float32)  # (N, D)
    tgt_all = np.concatenate(
        [np.full(v.shape[0], t, dtype=bool) for v, t in zip(clip_vectors, clip_is_target)]
    )  # (N,)
    n = x_all.shape[0]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(n)
    n_val = math.ceil(cfg.validation_split * n) if cfg.validation_split > 0 else 0
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    if tr_idx.size < 2:
        raise ValueError(
            f"{where}: only {tr_idx.size} training vector(s) after the validation split; "
            "the autoencoder needs at least 2 (use longer or more clips)"
        )
    device = cfg.device
    return _SectionData(
        x_all,
        tgt_all,
        tr_idx,
        val_idx,
        torch.from_numpy(x_all[tr_idx]).to(device),
        torch.from_numpy(x_all[val_idx]).to(device),
        torch.from_numpy(tgt_all[tr_idx]).to(device),
    )


class _SectionTrainer:
    """The AE of one section, its optimiser and the shuffling generator shared by every pass."""

    def __init__(self, data: _SectionData, cfg: AEBaselineConfig, where: str) -> None:
        self.data, self.cfg, self.where = data, cfg, where
        self.device = cfg.device
        self.bs = cfg.batch_size
        torch.manual_seed(cfg.seed)
        self.model = DenseAE(
            cfg.features.dim,
            cfg.hidden_dim,
            cfg.hidden_layers,
            cfg.latent_dim,
            cfg.bn_momentum,
            cfg.bn_eps,
        ).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def batches(self) -> list[torch.Tensor]:
        """Shuffled index batches of the training vectors (consumes the generator)."""
        size = self.data.x_tr.shape[0]
        order = torch.randperm(size, generator=self.gen).to(self.device)
        return [order[i : i + self.bs] for i in range(0, size, self.bs)]

    @torch.no_grad()
    def val_losses(self) -> list[float]:
        self.model.eval()
        x_val, bs = self.data.x_val, self.bs
        return [
            float(F.mse_loss(self.model(x_val[i : i + bs])[0], x_val[i : i + bs]))
            for i in range(0, x_val.shape[0], bs)
        ]

    def fit(self) -> tuple[list[float], list[float]]:
        """Train ``cfg.epochs``: ``(last epoch's batch losses, validation losses)``."""
        cfg, x_tr = self.cfg, self.data.x_tr
        train_batch_losses: list[float] = []
        for epoch in range(1, cfg.epochs + 1):
            self.model.train()
            train_batch_losses = []
            for idx in self.batches():
                if idx.numel() <= 1:  # BatchNorm needs 2+ rows (the baseline skips such batches)
                    continue
                xb = x_tr[idx]
                loss = F.mse_loss(self.model(xb)[0], xb)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                train_batch_losses.append(loss.item())
            vl = self.val_losses()
            logger.debug(
                "%s epoch %d/%d: loss %.4f, val_loss %.4f",
                self.where,
                epoch,
                cfg.epochs,
                float(np.mean(train_batch_losses)),
                float(np.mean(vl)) if vl else float("nan"),
            )
        self.model.eval()
        val_mse = self.val_losses()
        if cfg.epochs == 0:  # no training epoch: eval-mode batch losses stand in
            with torch.no_grad():
                train_batch_losses = [
                    float(F.mse_loss(self.model(x_tr[idx])[0], x_tr[idx])) for idx in self.batches()
                ]
        return train_batch_losses, val_mse

    @torch.no_grad()
    def covariances(self) -> tuple[np.ndarray, np.ndarray]:
        """Residual covariances Σ_s, Σ_t (baseline: one extra pass over shuffled batches)."""
        n_mels = self.cfg.features.n_mels
        cov = {
            "s": torch.zeros(n_mels, n_mels, dtype=torch.float64, device=self.device),
            "t": torch.zeros(n_mels, n_mels, dtype=torch.float64, device=self.device),
        }
        counts = {"s": 0, "t": 0}
        for idx in self.batches():
            if idx.numel() <= 1:
                continue
            xb = self.data.x_tr[idx]
            diff = (xb - self.model(xb)[0]).double()  # (B, D)
            is_t = self.data.tgt_tr[idx]
            for sel, which in ((~is_t, "s"), (is_t, "t")):
                count = int(sel.sum())
                if count == 0:
                    continue
                blocks = diff[sel].reshape(-1, n_mels)  # (count·frames, n_mels)
                blocks = blocks - blocks.mean(dim=0)
                cov[which] += blocks.T @ blocks
                counts[which] += count
        n_s, n_t = counts["s"], counts["t"]
        if n_s < 2:
            raise ValueError(f"{self.where}: need at least 2 source training vectors, got {n_s}")
        cov_source = (cov["s"] / (n_s - 1)).cpu().numpy()
        if n_t * self.cfg.features.frames > n_mels and n_t >= 2:
            return cov_source, (cov["t"] / (n_t - 1)).cpu().numpy()
        if n_t:
            logger.warning(
                "%s: only %d target training vectors (%d blocks <= %d dims); Σ_t = Σ_s",
                self.where,
                n_t,
                n_t * self.cfg.features.frames,
                n_mels,
            )
        return cov_source, cov_source.copy()

    def threshold_samples(
        self,
        sec: AESection,
        clip_vectors: Sequence[np.ndarray],
        train_batch_losses: list[float],
        val_mse: list[float],
    ) -> dict[str, np.ndarray]:
        """Normal-data scores per score kind that the thresholds are fitted on."""
        n_mels, bs, data = self.cfg.features.n_mels, self.bs, self.data
        samples: dict[str, list[float]] = {"mse": [], "mahala": [], "mahala-frame": []}
        if self.cfg.threshold_samples == "batches":
            samples["mse"] = train_batch_losses + val_mse
            groups = itertools.chain(
                (data.x_tr[idx] for idx in self.batches()),
                (data.x_val[i : i + bs] for i in range(0, data.x_val.shape[0], bs)),
            )
            for g in groups:
                xg = g.cpu().numpy()
                res = _residuals(self.model, xg, self.device)
                s = _group_scores(res, [0, xg.shape[0]], sec, n_mels)
                samples["mahala"].append(float(s["mahala"][0]))
                samples["mahala-frame"].append(float(s["mahala-frame"][0]))
        else:  # per-clip scores, a few clips at a time
            bounds = np.cumsum([0] + [v.shape[0] for v in clip_vectors])  # (C+1,)
            for c in range(0, len(clip_vectors), 64):
                off = bounds[c : c + 65]
                res = _residuals(self.model, data.x_all[off[0] : off[-1]], self.device)
                for k, v in _group_scores(res, (off - off[0]).tolist(), sec, n_mels).items():
                    samples[k] += v.tolist()
        return {k: np.asarray(v) for k, v in samples.items()}


def _train_section(
    clip_vectors: Sequence[np.ndarray],
    clip_is_target: Sequence[bool],
    sample_rate: int,
    cfg: AEBaselineConfig,
    where: str,
) -> AESection:
    """Train one AE on the vectors of one (machine, section); see the module docstring."""
    data = _split_vectors(clip_vectors, clip_is_target, cfg, where)
    trainer = _SectionTrainer(data, cfg, where)
    train_batch_losses, val_mse = trainer.fit()
    cov_source, cov_target = trainer.covariances()
    sec = AESection(trainer.model, cov_source, cov_target, {}, sample_rate)
    fit_on = trainer.threshold_samples(sec, clip_vectors, train_batch_losses, val_mse)
    sec.thresholds = {k: fit_threshold(v, cfg.threshold) for k, v in fit_on.items()}
    sec.stats = {
        "n_clips": len(clip_vectors),
        "n_vectors": int(data.x_all.shape[0]),
        "n_train_vectors": int(data.tr_idx.size),
        "n_val_vectors": int(data.val_idx.size),
        "n_source_vectors": int((~data.tgt_all).sum()),
        "n_target_vectors": int(data.tgt_all.sum()),
        "final_train_loss": float(np.mean(train_batch_losses)) if train_batch_losses else None,
        "final_val_loss": float(np.mean(val_mse)) if val_mse else None,
    }
    logger.info(
        "%s: %d clips, %d vectors, train loss %s, val loss %s",
        where,
        len(clip_vectors),
        data.x_all.shape[0],
        sec.stats["final_train_loss"],
        sec.stats["final_val_loss"],
    )
    return sec


def train_ae_baseline(clips: Iterable[Clip], cfg: AEBaselineConfig | None = None) -> AEBaseline:
    """Train one baseline autoencoder per (machine, section) on normal training clips.

    Source and target clips of a section are pooled (target = ``clip.domain == "target"``; clips
    without a domain count as source). Audio is read at its native rate, channel 0.

    Args:
        clips: Training clips (e.g. ``scan_dataset(root).filter(split="train")``); test clips and
            clips labelled anomalous are rejected.
        cfg: Configuration (defaults: protocol §3).

    Returns:
        The trained :class:`AEBaseline`.

    Raises:
        ValueError: no clips, a non-train or anomalous clip, mixed sample rates within a section,
            or clips too short for one context vector.
        AudioError: an unreadable audio file (the message names it).
    """
    cfg = cfg or AEBaselineConfig()
    grouped: dict[Key, list[Clip]] = defaultdict(list)
    for clip in clips:
        if clip.split != "train" or clip.label == "anomaly":
            raise ValueError(
                f"{clip.path}: the AE baseline trains on normal train clips only "
                f"(split={clip.split!r}, label={clip.label!r})"
            )
        grouped[clip.key].append(clip)
    if not grouped:
        raise ValueError("no training clips given")
    sections: dict[Key, AESection] = {}
    for key in sorted(grouped):
        where = f"{key[0]} section {key[1]}"
        vecs: list[np.ndarray] = []
        is_t: list[bool] = []
        rates: set[int] = set()
        for clip in grouped[key]:
            wave, sr = load_audio(clip.path)
            rates.add(sr)
            v = baseline_vectors(wave, sr, cfg.features)  # (V, D)
            if v.shape[0] == 0:
                raise ValueError(
                    f"{clip.path}: too short for one {cfg.features.frames}-frame context vector"
                )
            vecs.append(v)
            is_t.append(clip.domain == "target")
        if len(rates) != 1:
            raise ValueError(f"{where}: training clips have different sample rates {sorted(rates)}")
        sections[key] = _train_section(vecs, is_t, rates.pop(), cfg, where)
    return AEBaseline(cfg, sections)


# ------------------------------------------------------------------------------------------------
# the trained baseline


class AEBaseline:
    """Trained AE baselines of several (machine, section) keys: scores, decisions, save/load."""

    def __init__(self, cfg: AEBaselineConfig, sections: dict[Key, AESection]) -> None:
        self.cfg = cfg
        self.sections = dict(sorted(sections.items()))

    @property
    def keys(self) -> list[Key]:
        """Sorted (machine, section) keys."""
        return list(self.sections)

    def _section(self, key: Key) -> AESection:
        key = (str(key[0]), str(key[1]))
        if key not in self.sections:
            valid = ", ".join(f"{m}/{s}" for m, s in self.sections)
            raise KeyError(
                f"no AE baseline for machine {key[0]!r} section {key[1]!r}; valid: {valid}"
            )
        return self.sections[key]

    def vectors(self, wave: np.ndarray, key: Key, sample_rate: int | None = None) -> np.ndarray:
        """Context vectors ``(V, D)`` of a mono waveform, resampled to the section's rate."""
        sec = self._section(key)
        w = np.asarray(wave, dtype=np.float32).reshape(-1)
        if sample_rate is not None and sample_rate != sec.sample_rate:
            import soxr

            w = soxr.resample(w, sample_rate, sec.sample_rate, quality="HQ").astype(np.float32)
        v = baseline_vectors(w, sec.sample_rate, self.cfg.features)
        if v.shape[0] == 0:
            raise ValueError(
                f"waveform of {w.size} samples is too short for one context vector "
                f"({self.cfg.features.frames} frames at hop {self.cfg.features.hop_length})"
            )
        return v

    def score(
        self,
        waves: Sequence[np.ndarray] | np.ndarray,
        key: Key,
        mode: ScoreMode = "mse",
        *,
        faithful: bool | None = None,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Anomaly scores of clips (higher = more anomalous).

        Args:
            waves: Mono waveforms: a ``(B, N)`` array or a sequence of ``(N_i,)`` arrays.
            key: (machine, section) of the clips.
            mode: ``"mse"`` or ``"mahala"`` (selective Mahalanobis).
            faithful: Mahalanobis reduction (default ``cfg.faithful``); ignored for MSE.
            sample_rate: Rate of ``waves`` (default: the training rate).

        Returns:
            ``(B,)`` float64.
        """
        name = _score_name(mode, self.cfg.faithful if faithful is None else faithful)
        sec = self._section(key)
        items = [waves] if isinstance(waves, np.ndarray) and waves.ndim == 1 else list(waves)
        vecs = [self.vectors(w, key, sample_rate) for w in items]
        if not vecs:
            return np.zeros(0, dtype=np.float64)
        bounds = np.cumsum([0] + [v.shape[0] for v in vecs])
        res = _residuals(sec.model, np.concatenate(vecs), self.cfg.device)
        scores = _group_scores(res, bounds.tolist(), sec, self.cfg.features.n_mels)
        return scores[name]

    def score_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        key: Key,
        mode: ScoreMode = "mse",
        *,
        faithful: bool | None = None,
    ) -> np.ndarray:
        """Scores ``(B,)`` of audio files (channel 0, resampled to the training rate)."""
        sec = self._section(key)
        waves = [load_audio(p, sr=sec.sample_rate)[0] for p in paths]
        return self.score(waves, key, mode, faithful=faithful)

    def threshold(
        self, key: Key, mode: ScoreMode = "mse", *, faithful: bool | None = None
    ) -> float:
        """The gamma decision threshold of a section and score mode."""
        name = _score_name(mode, self.cfg.faithful if faithful is None else faithful)
        return self._section(key).thresholds[name]

    def decide(
        self,
        scores: np.ndarray | Sequence[float],
        key: Key,
        mode: ScoreMode = "mse",
        *,
        faithful: bool | None = None,
    ) -> np.ndarray:
        """Decisions ``(B,)`` int: 1 iff score > threshold."""
        return decide(
            np.asarray(scores, dtype=np.float64), self.threshold(key, mode, faithful=faithful)
        )

    # --- persistence -----------------------------------------------------------------------------

    def save(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``config.json`` (config, keys, thresholds, stats) and ``model.safetensors``."""
        from safetensors.torch import save as st_save

        out = Path(out_dir)
        tensors: dict[str, torch.Tensor] = {}
        meta = []
        for i, ((machine, section), sec) in enumerate(self.sections.items()):
            for name, t in sec.model.state_dict().items():
                tensors[f"{i}.model.{name}"] = t.detach().cpu().contiguous()
            tensors[f"{i}.cov_source"] = torch.from_numpy(np.ascontiguousarray(sec.cov_source))
            tensors[f"{i}.cov_target"] = torch.from_numpy(np.ascontiguousarray(sec.cov_target))
            meta.append(
                {
                    "machine": machine,
                    "section": section,
                    "sample_rate": sec.sample_rate,
                    "thresholds": sec.thresholds,
                    "stats": sec.stats,
                }
            )
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.cfg.to_dict(),
            "sections": meta,
        }
        cfg_path, w_path = out / CONFIG_FILE, out / WEIGHTS_FILE
        atomic_write_bytes(w_path, st_save(tensors))
        atomic_write_text(cfg_path, json.dumps(doc, indent=2) + "\n")
        return [cfg_path, w_path]

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], device: str | None = None) -> AEBaseline:
        """Load a baseline written by :meth:`save` (optionally onto another device)."""
        from safetensors.torch import load_file

        d = Path(model_dir)
        cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"not an AE baseline folder: {p} is missing")
        doc = json.loads(cfg_path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{cfg_path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
                f"got {doc.get('format')!r} version {doc.get('format_version')!r}"
            )
        cfg = AEBaselineConfig.from_dict(doc["config"])
        if device is not None:
            cfg = cfg.replace(device=device)
        tensors = load_file(str(w_path))
        sections: dict[Key, AESection] = {}
        for i, m in enumerate(doc["sections"]):
            prefix = f"{i}.model."
            model = DenseAE(
                cfg.features.dim,
                cfg.hidden_dim,
                cfg.hidden_layers,
                cfg.latent_dim,
                cfg.bn_momentum,
                cfg.bn_eps,
            )
            model.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
            model.to(cfg.device).eval()
            sections[(m["machine"], m["section"])] = AESection(
                model=model,
                cov_source=tensors[f"{i}.cov_source"].numpy().astype(np.float64),
                cov_target=tensors[f"{i}.cov_target"].numpy().astype(np.float64),
                thresholds={k: float(v) for k, v in m["thresholds"].items()},
                sample_rate=int(m["sample_rate"]),
                stats=dict(m.get("stats", {})),
            )
        return cls(cfg, sections)


# ------------------------------------------------------------------------------------------------
# end-to-end run on a dev set


def run_ae_baseline(
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    mode: ScoreMode = "mse",
    epochs: int = 100,
    faithful: bool = True,
    cfg: AEBaselineConfig | None = None,
    machines: Sequence[str] | None = None,
    year: int | None = None,
    style: Literal["plain", "baseline"] = "plain",
) -> EvaluationResult:
    """Train the AE baseline on dev train clips, score dev test clips, write and evaluate.

    Writes ``<out_dir>/model/`` (the trained baseline), ``<out_dir>/scores/`` (submission CSVs
    ``anomaly_score_…``/``decision_result_…``) and ``<out_dir>/results/`` (evaluation tables).

    Args:
        data_root: Dataset root (``…/dcase2023t2`` with ``dev_data/raw/<machine>/{train,test}``).
        out_dir: Output folder.
        mode: Score ``"mse"`` or ``"mahala"``.
        epochs: Training epochs (overrides ``cfg.epochs``).
        faithful: Baseline Mahalanobis quirk (overrides ``cfg.faithful``).
        cfg: Other settings (default: protocol §3).
        machines: Restrict to these machine types.
        year: Evaluation rules year (default: inferred from the clips, else 2023).
        style: Submission file names (``"plain"`` or baseline-style).

    Returns:
        The :class:`~stetho.evaluation.EvaluationResult` (Ω in ``official_score``).
    """
    from stetho.evaluation import evaluate, truth_from_clips, write_submission

    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score mode {mode!r}; valid: {', '.join(SCORE_MODES)}")
    cfg = (cfg or AEBaselineConfig()).replace(epochs=epochs, faithful=faithful)
    table = scan_dataset(data_root, year=year, partitions=("dev",))
    if machines is not None:
        missing = sorted(set(machines) - set(table.machines()))
        if missing:
            raise ValueError(
                f"machine(s) {missing} not found in {data_root}; available: {table.machines()}"
            )
        table = table.filter(machine=set(machines))
    train = table.filter(split="train")
    test = table.filter(split="test")
    if not len(train) or not len(test):
        raise ValueError(
            f"{data_root}: need dev train and test clips, found {len(train)} train and "
            f"{len(test)} test clips"
        )
    if year is None:
        year = next((c.year for c in table if c.year is not None), None) or 2023
    out = Path(out_dir)
    model = train_ae_baseline(train, cfg)
    model.save(out / "model")

    scores: dict[Key, dict[str, float]] = {}
    decisions: dict[Key, dict[str, int]] = {}
    for key in test.sections():
        clips = list(test.filter(key=key))
        if key not in model.sections:
            raise ValueError(f"{key[0]} section {key[1]}: test clips but no training clips")
        s = model.score_files([c.path for c in clips], key, mode)
        d = model.decide(s, key, mode)
        scores[key] = {c.name: float(v) for c, v in zip(clips, s)}
        decisions[key] = {c.name: int(v) for c, v in zip(clips, d)}
        write_submission(
            out / "scores", key[0], key[1], scores[key], decisions[key], style=style, year=year
        )
    result = evaluate(
        scores, truth_from_clips(test), decisions, year=year, system=f"ae_baseline_{mode}"
    )
    result.write(out / "results")
    logger.info(
        "AE baseline (%s) on %s: official score %.4f", mode, data_root, result.official_score
    )
    return result
