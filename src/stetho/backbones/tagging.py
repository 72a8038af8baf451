"""AudioSet tagging with backbones that keep their classification head, and backbone summaries.

>>> from stetho.backbones import create_backbone
>>> from stetho.backbones.tagging import tag_waveform
>>> model = create_backbone("efficientat-mn04", checkpoint="mn04_as_mAP_432.pt")  # doctest: +SKIP
>>> tag_waveform(model, wave, sr=16000, top_k=3)                                   # doctest: +SKIP
[('Hum', 0.80), ('Mains hum', 0.73), ('Mechanical fan', 0.21)]

The AudioSet class names (``resources/audioset_class_labels_indices.csv``, 527 rows: index, mid,
display_name) come from the AudioSet ontology by Google, licensed CC BY 4.0.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import logging
from importlib import resources

import numpy as np
import soxr
import torch

from stetho.backbones.base import Backbone
from stetho.backbones.registry import describe_backbones

# describe_backbones lives in the registry; re-exported here for compatibility
__all__ = ["audioset_labels", "describe_backbones", "tag_waveform"]

logger = logging.getLogger(__name__)

_LABELS_FILE = "resources/audioset_class_labels_indices.csv"
NUM_AUDIOSET_CLASSES = 527


@functools.lru_cache(maxsize=1)
def _read_labels() -> tuple[str, ...]:
    text = resources.files("stetho").joinpath(_LABELS_FILE).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    labels = tuple(row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"])))
    if len(labels) != NUM_AUDIOSET_CLASSES:
        raise RuntimeError(
            f"packaged {_LABELS_FILE} has {len(labels)} classes, expected {NUM_AUDIOSET_CLASSES}"
        )
    return labels


def audioset_labels() -> list[str]:
    """The 527 AudioSet display names in head order (index 0 = ``"Speech"``)."""
    return list(_read_labels())


def _resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono float waveform ``(N,)`` with soxr (HQ); identity when the rates match."""
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    wave = np.asarray(wave, dtype=np.float32)
    if sr_in == sr_out:
        return wave
    return np.asarray(soxr.resample(wave, sr_in, sr_out, quality="HQ"), dtype=np.float32)


def _model_device(model: torch.nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def tag_waveform(
    model: Backbone, wave: np.ndarray | torch.Tensor, sr: int, top_k: int = 5
) -> list[tuple[str, float]]:
    """Top-k tags of one mono clip from a backbone with a classification head.

    The clip is resampled to ``model.sample_rate`` with soxr, run in eval mode without gradients
    (the model's train/eval mode is restored afterwards), and the head's probabilities are ranked.

    Args:
        model: A backbone with a ``classify(wave) -> (B, C)`` method returning probabilities,
            e.g. ``efficientat-mn04``.
        wave: Mono waveform ``(N,)`` (or ``(1, N)``) in [-1, 1].
        sr: Sample rate of ``wave`` in Hz.
        top_k: Number of tags to return (at most the number of classes).

    Returns:
        ``[(label, probability), ...]`` sorted by decreasing probability. Labels are the AudioSet
        names for a 527-class head, the model's ``class_labels`` if it has them, else ``class_<i>``.

    Raises:
        ValueError: if the backbone has no classification head, the clip is not mono, or
            ``top_k < 1``.
    """
    name = getattr(getattr(model, "pretrained_cfg", None), "name", type(model).__name__)
    classify = getattr(model, "classify", None)
    if not callable(classify) or getattr(model, "num_classes", None) == 0:
        raise ValueError(
            f"backbone {name!r} has no classification head, so it cannot tag audio; use a tagging "
            "model such as efficientat-mn04 (any efficientat-mnXX built with num_classes > 0)"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    x = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (N,) or (1, N), got shape {x.shape}")
    x = _resample(x, sr, model.sample_rate)
    batch = torch.from_numpy(np.ascontiguousarray(x))[None].to(_model_device(model))  # (1, N)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = classify(batch)[0].float().cpu()  # (C,)
    finally:
        model.train(was_training)
    n_classes = probs.shape[0]
    labels = getattr(model, "class_labels", None)
    if labels is None or len(labels) != n_classes:
        if n_classes == NUM_AUDIOSET_CLASSES:
            labels = audioset_labels()
        else:
            labels = [f"class_{i}" for i in range(n_classes)]
    values, indices = probs.topk(min(top_k, n_classes))
    return [(labels[int(i)], float(v)) for v, i in zip(values, indices)]
