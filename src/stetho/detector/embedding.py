"""Clip → embedding mechanics shared by the torch detector and the exported ONNX detector.

Both engines validate and resample waveforms with :func:`as_waveform_list` and cut, batch and
average them with :func:`embed_waveform_list`; only the ``forward`` callable differs (torch
modules or an onnxruntime session), so the two give the same scores to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["WaveInput", "as_waveform_list", "embed_waveform_list"]

#: One waveform ``(N,)``, a batch ``(B, N)`` or a list of ``(N_i,)`` arrays.
WaveInput = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]


def embed_waveform_list(
    waves: list[torch.Tensor],
    forward: Callable[[torch.Tensor], torch.Tensor],
    embed_dim: int,
    batch_size: int,
    win: int | None,
    hop: int | None,
) -> np.ndarray:
    """Clip embeddings (B, E) of waveforms through ``forward`` ((b, n) → (b, E) float32).

    Whole clips (``win`` None) are batched by equal length; otherwise each clip is cut into
    windows (:func:`stetho.frontend.segment.segment`, repeat padding) whose embeddings are
    averaged. Shared by the torch :class:`Detector` and the exported ONNX detector, so both cut
    and average the same way.
    """
    from stetho.frontend.segment import segment

    bs = max(1, batch_size)
    out = torch.zeros(len(waves), embed_dim)
    if win is None or hop is None:  # whole clips, batched by equal length
        by_len: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_len.setdefault(int(w.shape[0]), []).append(i)
        for idx in by_len.values():
            for s in range(0, len(idx), bs):
                part = idx[s : s + bs]
                out[part] = forward(torch.stack([waves[i] for i in part]))
        return out.numpy()
    segs = [segment(w, win, hop, pad="repeat") for w in waves]  # each (S_i, win)
    flat = torch.cat(segs)  # (ΣS, win)
    emb = torch.cat([forward(flat[s : s + bs]) for s in range(0, flat.shape[0], bs)])
    start = 0
    for i, sg in enumerate(segs):
        out[i] = emb[start : start + sg.shape[0]].mean(0)
        start += sg.shape[0]
    return out.numpy()


def as_waveform_list(
    waves: WaveInput, sample_rate: int | None, target_rate: int
) -> list[torch.Tensor]:
    """Validated float32 ``(N_i,)`` tensors at ``target_rate`` (soxr HQ when ``sample_rate``
    differs; ``None`` = already at ``target_rate``).

    Raises:
        ValueError: not 1-D/2-D, an empty waveform, or integer PCM.
    """
    if isinstance(waves, np.ndarray | torch.Tensor):
        arr = torch.as_tensor(waves)
        if arr.ndim == 1:
            items = [arr]
        elif arr.ndim == 2:
            items = list(arr)
        else:
            raise ValueError(f"expected waveforms (N,) or (B, N), got shape {tuple(arr.shape)}")
    else:
        items = [torch.as_tensor(w) for w in waves]
    out = []
    for w in items:
        if w.ndim != 1 or w.shape[0] == 0:
            raise ValueError(
                f"each waveform must be a non-empty 1-D array, got shape {tuple(w.shape)}"
            )
        if not w.is_floating_point():
            # int16/int32 PCM (e.g. scipy.io.wavfile.read) would be scored unscaled
            dtype = str(w.dtype).removeprefix("torch.")
            raise ValueError(
                f"expected float waveforms in [-1, 1], got {dtype}; convert PCM integers "
                "first (e.g. int16: x / 32768)"
            )
        w = w.detach().to("cpu", torch.float32)
        if sample_rate is not None and int(sample_rate) != target_rate:
            import soxr

            w = torch.from_numpy(
                np.ascontiguousarray(
                    soxr.resample(w.numpy(), int(sample_rate), target_rate, quality="HQ")
                )
            ).float()
        out.append(w)
    return out
