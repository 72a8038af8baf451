"""Training of one section's AE baseline: split, fit, residual covariances, threshold samples."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stetho.baselines.ae_model import (
    AEBaselineConfig,
    AESection,
    DenseAE,
    group_scores,
    residuals,
)
from stetho.scoring.threshold import fit_threshold

__all__ = ["train_section"]

logger = logging.getLogger(__name__)


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
        self.model = DenseAE.from_config(cfg).to(self.device)
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
                res = residuals(self.model, xg, self.device)
                s = group_scores(res, [0, xg.shape[0]], sec, n_mels)
                samples["mahala"].append(float(s["mahala"][0]))
                samples["mahala-frame"].append(float(s["mahala-frame"][0]))
        else:  # per-clip scores, a few clips at a time
            bounds = np.cumsum([0] + [v.shape[0] for v in clip_vectors])  # (C+1,)
            for c in range(0, len(clip_vectors), 64):
                off = bounds[c : c + 65]
                res = residuals(self.model, data.x_all[off[0] : off[-1]], self.device)
                for k, v in group_scores(res, (off - off[0]).tolist(), sec, n_mels).items():
                    samples[k] += v.tolist()
        return {k: np.asarray(v) for k, v in samples.items()}


def train_section(
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
