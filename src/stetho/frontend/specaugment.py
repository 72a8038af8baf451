"""SpecAugment (frequency and time masking, no time warp) as a batched torch layer.

Each example in the batch gets its own masks: for every mask a width ``w`` is drawn uniformly
from ``0..max_width`` (clamped to the axis size) and a start uniformly from ``0..size - w``; the
whole band of rows (frequency) or columns (time) is set to ``mask_value``. Random numbers come
from torch's global RNG on the CPU, so ``torch.manual_seed`` makes the masks reproducible and
identical on every device. The layer is the identity in eval mode.

Example:
    >>> aug = SpecAugment(SpecAugmentConfig(num_freq_masks=2, freq_mask_width=24))
    >>> spec = torch.randn(8, 998, 128)                  # (B, T, F)
    >>> out = aug.train()(spec, time_dim=1, freq_dim=2)  # same shape, bands set to 0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stetho.utils.config import ConfigBase, ConfigError

__all__ = ["SpecAugment", "SpecAugmentConfig", "band_mask"]


@dataclass
class SpecAugmentConfig(ConfigBase):
    """Masking settings. Widths are maxima: each mask's width is drawn from ``0..width``.

    Attributes:
        num_freq_masks: Frequency masks per example (default 2).
        freq_mask_width: Maximum width of a frequency mask in bins (default 24, clamped to the
            number of bins).
        num_time_masks: Time masks per example (default 2).
        time_mask_width: Maximum width of a time mask in frames (default 48, clamped to the
            number of frames).
        mask_value: Value written into masked bands (default 0.0, the mean of a normalised
            spectrogram).
    """

    num_freq_masks: int = 2
    freq_mask_width: int = 24
    num_time_masks: int = 2
    time_mask_width: int = 48
    mask_value: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_freq_masks", "freq_mask_width", "num_time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"SpecAugmentConfig.{name} must be >= 0, got {getattr(self, name)}"
                )


def band_mask(batch: int, size: int, num_masks: int, max_width: int) -> torch.Tensor:
    """Random band masks along one axis, independent per example.

    Args:
        batch: Number of examples B.
        size: Length of the masked axis.
        num_masks: Bands per example.
        max_width: Maximum band width (clamped to ``size``).

    Returns:
        Boolean CPU tensor ``(B, size)``; True where masked.
    """
    width_max = min(max_width, size)
    if num_masks == 0 or width_max == 0 or size == 0:
        return torch.zeros(batch, size, dtype=torch.bool)
    width = torch.randint(0, width_max + 1, (batch, num_masks))  # (B, M)
    start = (torch.rand(batch, num_masks) * (size - width + 1)).long()  # (B, M) in 0..size-w
    start = torch.minimum(start, size - width)  # guard against rand() rounding up to 1
    pos = torch.arange(size).view(1, 1, size)  # (1, 1, S)
    inside = (pos >= start.unsqueeze(-1)) & (pos < (start + width).unsqueeze(-1))  # (B, M, S)
    return inside.any(dim=1)  # (B, S)


class SpecAugment(nn.Module):
    """Frequency and time masking of batched spectrograms (training mode only).

    Args:
        cfg: Mask counts and maximum widths; defaults as in :class:`SpecAugmentConfig`.
    """

    def __init__(self, cfg: SpecAugmentConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else SpecAugmentConfig()

    def forward(self, spec: torch.Tensor, time_dim: int = -1, freq_dim: int = -2) -> torch.Tensor:
        """Mask random frequency and time bands of each example; identity in eval mode.

        Args:
            spec: Spectrograms with the batch on axis 0, e.g. ``(B, F, T)``, ``(B, T, F)`` or
                ``(B, C, F, T)``; a 2-D input is treated as a single example.
            time_dim: Index of the time axis.
            freq_dim: Index of the frequency axis.

        Raises:
            ValueError: if an axis index is out of range, is the batch axis, or both are equal.
        """
        if not self.training:
            return spec
        squeeze = spec.dim() == 2
        if squeeze:
            spec = spec.unsqueeze(0)
            time_dim = time_dim + 1 if time_dim >= 0 else time_dim
            freq_dim = freq_dim + 1 if freq_dim >= 0 else freq_dim
        nd = spec.dim()
        if nd < 3:
            raise ValueError(
                f"SpecAugment expects a batched spectrogram (B, ..., F, T), got {tuple(spec.shape)}"
            )
        dims = []
        for name, d in (("time_dim", time_dim), ("freq_dim", freq_dim)):
            if not -nd <= d < nd:
                raise ValueError(f"{name}={d} out of range for a {nd}-D spectrogram")
            d %= nd
            if d == 0:
                raise ValueError(f"{name} must not be the batch axis 0 (shape {tuple(spec.shape)})")
            dims.append(d)
        t_dim, f_dim = dims
        if t_dim == f_dim:
            raise ValueError(f"time_dim and freq_dim must differ, both are {t_dim}")
        c = self.cfg
        b = spec.shape[0]
        mask = torch.zeros((b,) + (1,) * (nd - 1), dtype=torch.bool)  # (B, 1, ..., 1)
        for d, num, width in (
            (f_dim, c.num_freq_masks, c.freq_mask_width),
            (t_dim, c.num_time_masks, c.time_mask_width),
        ):
            band = band_mask(b, spec.shape[d], num, width)  # (B, S)
            view = [b] + [1] * (nd - 1)
            view[d] = spec.shape[d]
            mask = mask | band.view(view)
        out = spec.masked_fill(mask.to(spec.device, non_blocking=True), c.mask_value)
        return out.squeeze(0) if squeeze else out

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"freq={c.num_freq_masks}x<={c.freq_mask_width}, time={c.num_time_masks}x<={c.time_mask_width}, "
            f"value={c.mask_value}"
        )
