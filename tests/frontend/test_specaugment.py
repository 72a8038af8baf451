"""SpecAugment: eval identity, whole-band masks on the declared axes, bounds, RNG behaviour."""

from __future__ import annotations

import pytest
import torch

from stetho.frontend.specaugment import SpecAugment, SpecAugmentConfig, band_mask
from stetho.utils.config import ConfigError


def _masked_indices(masked: torch.Tensor, dim: int) -> torch.Tensor:
    """Indices along ``dim`` (of a single example, 2-D) where every element is masked."""
    other = 1 - dim
    return torch.nonzero(masked.all(dim=other)).flatten()


def _runs(idx: torch.Tensor) -> list[int]:
    """Lengths of runs of consecutive indices."""
    if idx.numel() == 0:
        return []
    runs, cur = [], 1
    for a, b in zip(idx[:-1].tolist(), idx[1:].tolist()):
        if b == a + 1:
            cur += 1
        else:
            runs.append(cur)
            cur = 1
    runs.append(cur)
    return runs


def test_eval_mode_is_identity() -> None:
    aug = SpecAugment().eval()
    spec = torch.randn(4, 128, 100)
    assert aug(spec) is spec


def test_default_config_documented_values() -> None:
    cfg = SpecAugmentConfig()
    assert (cfg.num_freq_masks, cfg.freq_mask_width, cfg.num_time_masks, cfg.time_mask_width) == (
        2,
        24,
        2,
        48,
    )
    assert cfg.mask_value == 0.0
    with pytest.raises(ConfigError, match="time_mask_width"):
        SpecAugmentConfig(time_mask_width=-1)


@pytest.mark.parametrize(
    ("time_dim", "freq_dim", "shape"),
    [(1, 2, (6, 90, 40)), (-1, -2, (6, 40, 90)), (3, 2, (6, 1, 40, 90))],
)
def test_masks_whole_rows_and_columns(time_dim: int, freq_dim: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    cfg = SpecAugmentConfig(
        num_freq_masks=2, freq_mask_width=8, num_time_masks=2, time_mask_width=12, mask_value=-7.0
    )
    aug = SpecAugment(cfg).train()
    spec = torch.randn(shape) + 100.0  # never equal to the mask value
    out = aug(spec, time_dim=time_dim, freq_dim=freq_dim)
    assert out.shape == spec.shape
    td, fd = time_dim % spec.dim(), freq_dim % spec.dim()
    n_masked_total = 0
    for b in range(shape[0]):
        x = (
            out[b].movedim((fd - 1, td - 1), (0, 1)).reshape(shape[fd], shape[td], -1)[..., 0]
        )  # (F, T)
        orig = spec[b].movedim((fd - 1, td - 1), (0, 1)).reshape(shape[fd], shape[td], -1)[..., 0]
        masked = x == -7.0
        unmasked = ~masked
        assert torch.equal(x[unmasked], orig[unmasked])  # untouched elsewhere
        f_idx = _masked_indices(masked, 0)
        t_idx = _masked_indices(masked, 1)
        # every masked element lies in a fully masked frequency row or time column
        covered = torch.zeros_like(masked)
        covered[f_idx, :] = True
        covered[:, t_idx] = True
        assert torch.equal(masked, covered)
        assert len(f_idx) <= 2 * 8 and len(t_idx) <= 2 * 12
        assert all(r <= 2 * 8 for r in _runs(f_idx)) and all(r <= 2 * 12 for r in _runs(t_idx))
        n_masked_total += int(masked.sum())
    assert n_masked_total > 0


def test_width_bounds_single_mask() -> None:
    torch.manual_seed(1)
    widths_f, widths_t = set(), set()
    for _ in range(200):
        m_f = band_mask(4, 30, num_masks=1, max_width=5)
        m_t = band_mask(4, 3, num_masks=1, max_width=10)  # clamped to the axis size 3
        for row in m_f:
            idx = torch.nonzero(row).flatten()
            assert _runs(idx) in ([], [len(idx)])  # one contiguous band
            widths_f.add(len(idx))
        widths_t.update(int(r.sum()) for r in m_t)
    assert widths_f == set(range(6))  # every width 0..5 occurs, never more
    assert widths_t == {0, 1, 2, 3}


def test_band_positions_cover_axis() -> None:
    torch.manual_seed(2)
    hits = torch.zeros(20)
    for _ in range(300):
        hits += band_mask(8, 20, num_masks=1, max_width=3).float().sum(0)
    assert (hits > 0).all()  # first and last positions reachable


def test_examples_masked_independently() -> None:
    torch.manual_seed(3)
    aug = SpecAugment(
        SpecAugmentConfig(
            num_time_masks=1, time_mask_width=30, num_freq_masks=1, freq_mask_width=20
        )
    ).train()
    spec = torch.ones(16, 64, 200)
    out = aug(spec)  # (B, F, T) defaults: time -1, freq -2
    patterns = {tuple((out[b] == 0).flatten().nonzero().flatten().tolist()) for b in range(16)}
    assert len(patterns) > 8


def test_deterministic_under_seed() -> None:
    aug = SpecAugment().train()
    spec = torch.randn(4, 100, 128)
    torch.manual_seed(123)
    a = aug(spec, time_dim=1, freq_dim=2)
    torch.manual_seed(123)
    b = aug(spec, time_dim=1, freq_dim=2)
    c = aug(spec, time_dim=1, freq_dim=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_zero_masks_is_identity_in_train() -> None:
    aug = SpecAugment(SpecAugmentConfig(num_freq_masks=0, num_time_masks=0)).train()
    spec = torch.randn(2, 10, 12)
    assert torch.equal(aug(spec), spec)


def test_unbatched_2d_and_gradients() -> None:
    torch.manual_seed(4)
    aug = SpecAugment(SpecAugmentConfig(freq_mask_width=5, time_mask_width=5)).train()
    spec = torch.randn(20, 30, requires_grad=True)
    out = aug(spec)
    assert out.shape == (20, 30)
    out.sum().backward()
    assert spec.grad is not None
    assert torch.equal(spec.grad == 0, out.detach() == 0)


def test_bad_axes_raise() -> None:
    aug = SpecAugment().train()
    with pytest.raises(ValueError, match="batch axis"):
        aug(torch.randn(2, 3, 4), time_dim=0, freq_dim=1)
    with pytest.raises(ValueError, match="differ"):
        aug(torch.randn(2, 3, 4), time_dim=1, freq_dim=1)
    with pytest.raises(ValueError, match="out of range"):
        aug(torch.randn(2, 3, 4), time_dim=3, freq_dim=1)
