"""fix_length, random_crop and segment."""

from __future__ import annotations

import pytest
import torch

from stetho.frontend.segment import fix_length, num_segments, random_crop, segment


def test_fix_length_repeat_zero_truncate() -> None:
    x = torch.arange(1.0, 5.0)  # [1, 2, 3, 4]
    assert fix_length(x, 10).tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    assert fix_length(x, 6, mode="zero").tolist() == [1, 2, 3, 4, 0, 0]
    assert fix_length(x, 3).tolist() == [1, 2, 3]
    assert fix_length(x, 4).tolist() == [1, 2, 3, 4]
    batch = torch.stack([x, -x])
    assert fix_length(batch, 5).tolist() == [[1, 2, 3, 4, 1], [-1, -2, -3, -4, -1]]


def test_fix_length_errors() -> None:
    with pytest.raises(ValueError, match="valid choices"):
        fix_length(torch.ones(3), 5, mode="reflect")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        fix_length(torch.ones(3), 0)
    with pytest.raises(ValueError, match="empty"):
        fix_length(torch.ones(0), 4)


def test_random_crop_is_a_window_of_each_clip() -> None:
    g = torch.Generator().manual_seed(0)
    wave = torch.arange(100.0).repeat(8, 1) + 1000 * torch.arange(8.0).unsqueeze(
        1
    )  # row b = 1000b + 0..99
    out = random_crop(wave, 30, generator=g)
    assert out.shape == (8, 30)
    starts = []
    for b in range(8):
        start = int(out[b, 0].item()) - 1000 * b
        assert 0 <= start <= 70
        assert torch.equal(out[b], wave[b, start : start + 30])
        starts.append(start)
    assert len(set(starts)) > 1  # independent offsets per clip


def test_random_crop_reproducible_with_generator() -> None:
    wave = torch.randn(4, 1000)
    a = random_crop(wave, 100, generator=torch.Generator().manual_seed(7))
    b = random_crop(wave, 100, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_random_crop_short_clip_is_repeated() -> None:
    x = torch.arange(1.0, 4.0)  # 3 samples
    out = random_crop(x, 7)
    assert out.shape == (7,)
    assert out.tolist() == [1, 2, 3, 1, 2, 3, 1]
    full = random_crop(torch.arange(5.0), 5)
    assert full.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("pad", ["repeat", "zero"])
def test_segment_covers_clip(pad: str) -> None:
    x = torch.arange(10.0)
    out = segment(x, win=4, hop=3, pad=pad)  # type: ignore[arg-type]
    # windows start at 0, 3, 6; the last one (6..9) fits exactly
    assert out.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    y = torch.arange(11.0)
    out = segment(y, win=4, hop=3, pad=pad)  # type: ignore[arg-type]
    # windows start at 0, 3, 6, 9; the last one runs 2 samples past the end
    tail = [0.0, 1.0] if pad == "repeat" else [0.0, 0.0]  # repeat continues with y[0], y[1]
    assert out.shape == (4, 4)
    assert out[-1].tolist() == [9.0, 10.0, *tail]
    covered = {int(v) for row in out for v in row.tolist()}
    assert set(range(11)) <= covered


def test_segment_drop_keeps_full_windows() -> None:
    out = segment(torch.arange(11.0), win=4, hop=3, pad="drop")
    assert out.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="shorter than one window"):
        segment(torch.arange(3.0), win=4, hop=2, pad="drop")


def test_segment_short_clip_single_window() -> None:
    out = segment(torch.arange(1.0, 4.0), win=5, hop=2)
    assert out.tolist() == [[1, 2, 3, 1, 2]]
    out = segment(torch.arange(1.0, 4.0), win=5, hop=2, pad="zero")
    assert out.tolist() == [[1, 2, 3, 0, 0]]


def test_segment_two_second_windows_and_batch() -> None:
    wave = torch.randn(160000)
    out = segment(wave, win=32000, hop=16000)
    assert out.shape == (9, 32000) == (num_segments(160000, 32000, 16000), 32000)
    for s in range(9):
        assert torch.equal(out[s], wave[s * 16000 : s * 16000 + 32000])
    batch = torch.randn(2, 50000)
    out_b = segment(batch, win=32000, hop=32000, pad="zero")
    assert out_b.shape == (2, 2, 32000)
    assert torch.equal(out_b[1], segment(batch[1], 32000, 32000, pad="zero"))
    assert torch.all(out_b[:, 1, 18000:] == 0)


def test_segment_returns_new_memory() -> None:
    x = torch.arange(8.0)
    out = segment(x, win=4, hop=4)
    out[0, 0] = 99.0
    assert x[0] == 0.0


def test_segment_errors() -> None:
    with pytest.raises(ValueError, match="valid choices"):
        segment(torch.ones(10), 4, 2, pad="reflect")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        segment(torch.ones(10), 4, 0)
