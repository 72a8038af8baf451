"""Waveform length handling: fixed lengths, random crops and overlapping segments.

* :func:`fix_length` pads (by repetition or zeros) or truncates to exactly ``n`` samples.
* :func:`random_crop` takes a random ``n``-sample window of each clip (training), padding short
  clips by repetition first.
* :func:`segment` cuts a clip into windows of ``win`` samples every ``hop`` samples that cover the
  whole clip (scoring long clips; 2 s segments for raw-waveform models).

Example:
    >>> wave = torch.randn(160000)                   # 10 s at 16 kHz
    >>> segment(wave, win=32000, hop=16000).shape    # 2 s windows, 1 s hop
    torch.Size([9, 32000])
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["fix_length", "num_segments", "random_crop", "segment"]

PadMode = Literal["repeat", "zero"]
SegmentPad = Literal["repeat", "zero", "drop"]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def fix_length(wave: torch.Tensor, n: int, mode: PadMode = "repeat") -> torch.Tensor:
    """Pad or truncate the last axis to exactly ``n`` samples.

    Args:
        wave: Waveform(s) ``(..., N)``.
        n: Target length.
        mode: ``"repeat"`` tiles the clip (``x[0], …, x[N-1], x[0], …``); ``"zero"`` appends zeros.
            Longer clips keep their first ``n`` samples.

    Returns:
        ``(..., n)``.

    Raises:
        ValueError: for a bad ``n`` or ``mode``, or repeat-padding an empty clip.
    """
    _check_positive("n", n)
    if mode not in ("repeat", "zero"):
        raise ValueError(f"unknown pad mode {mode!r}; valid choices: ['repeat', 'zero']")
    length = wave.shape[-1]
    if length >= n:
        return wave[..., :n]
    if mode == "zero":
        return F.pad(wave, (0, n - length))
    if length == 0:
        raise ValueError("cannot repeat-pad an empty waveform")
    reps = -(-n // length)  # ceil
    return wave.repeat(*([1] * (wave.dim() - 1)), reps)[..., :n]


def random_crop(
    wave: torch.Tensor, n: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random ``n``-sample window of each clip, with an independent offset per clip.

    Clips shorter than ``n`` are first padded to ``n`` by repetition (and so returned whole).

    Args:
        wave: ``(B, N)`` or ``(N,)``.
        n: Crop length in samples.
        generator: Optional CPU generator for reproducible offsets (default: torch's global RNG).

    Returns:
        ``(B, n)`` or ``(n,)``, matching the input's rank.
    """
    _check_positive("n", n)
    if wave.dim() not in (1, 2):
        raise ValueError(f"random_crop expects (B, N) or (N,), got shape {tuple(wave.shape)}")
    squeeze = wave.dim() == 1
    x = wave.unsqueeze(0) if squeeze else wave  # (B, N)
    if x.shape[-1] < n:
        x = fix_length(x, n, mode="repeat")
    b, length = x.shape
    start = torch.randint(0, length - n + 1, (b,), generator=generator)  # (B,)
    idx = start.unsqueeze(1) + torch.arange(n)  # (B, n)
    out = torch.gather(x, 1, idx.to(x.device))
    return out.squeeze(0) if squeeze else out


def num_segments(length: int, win: int, hop: int, pad: SegmentPad = "repeat") -> int:
    """Number of windows :func:`segment` returns for a clip of ``length`` samples."""
    _check_positive("win", win)
    _check_positive("hop", hop)
    if length <= win:
        return 1 if (length == win or pad != "drop") else 0
    if pad == "drop":
        return 1 + (length - win) // hop
    return 1 + -(-(length - win) // hop)  # ceil: the last window reaches past the end


def segment(wave: torch.Tensor, win: int, hop: int, pad: SegmentPad = "repeat") -> torch.Tensor:
    """Cut a clip into windows of ``win`` samples, one every ``hop`` samples.

    Window ``s`` covers samples ``[s·hop, s·hop + win)``. With ``pad="repeat"`` or ``"zero"``
    the windows cover the whole clip: the last one may run past the end and is filled by
    repeating the clip from its start or with zeros (a clip shorter than ``win`` gives one padded
    window). With ``pad="drop"`` only complete windows are kept and trailing samples are dropped.

    Args:
        wave: ``(N,)`` or ``(B, N)``.
        win: Window length in samples.
        hop: Step between window starts in samples.
        pad: ``"repeat"``, ``"zero"`` or ``"drop"``.

    Returns:
        A new tensor ``(S, win)`` for ``(N,)`` input, ``(B, S, win)`` for ``(B, N)``.

    Raises:
        ValueError: for bad arguments, or ``pad="drop"`` with a clip shorter than ``win``.
    """
    if pad not in ("repeat", "zero", "drop"):
        raise ValueError(f"unknown pad mode {pad!r}; valid choices: ['repeat', 'zero', 'drop']")
    if wave.dim() not in (1, 2):
        raise ValueError(f"segment expects (N,) or (B, N), got shape {tuple(wave.shape)}")
    length = wave.shape[-1]
    s = num_segments(length, win, hop, pad)
    if s == 0:
        raise ValueError(
            f"clip of {length} samples is shorter than one window of {win}; use pad='repeat' or 'zero'"
        )
    needed = (s - 1) * hop + win
    x = (
        wave
        if needed <= length
        else fix_length(wave, needed, mode="zero" if pad == "zero" else "repeat")
    )
    windows = x[..., :needed].unfold(-1, win, hop)  # (..., S, win), a view of x
    return windows.clone(memory_format=torch.contiguous_format)
