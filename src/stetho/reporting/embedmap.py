"""2-D maps of a machine/section's clip features: test clips and the normal training clips.

The features are the detector's own (:meth:`~stetho.detector.BaseDetector.embed_files`), so the
map works for every kind whose features are one vector per clip (the few-shot ensemble: its
members' features side by side; the k-NN detector: its embeddings). Each column is standardised
over the clips drawn (test and training) before the projection, so members of different scales
weigh alike (not in the paper); the map shows how clips group, its distances are not the
detector's scores. The autoencoder baseline keeps frames, not one vector per clip: it has no map
(:class:`MapUnavailable` says so in plain words).

PCA is computed with numpy (always available); t-SNE is added when scikit-learn is installed
(an optional dependency at run time; ``pip install scikit-learn``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from stetho.data import Clip
from stetho.detector import BaseDetector
from stetho.reporting.figures import plot_embedding_map
from stetho.utils.errors import StethoError

__all__ = [
    "MAX_BANK_CLIPS",
    "MapUnavailable",
    "embedding_maps",
    "feature_problem",
    "pca_2d",
    "tsne_2d",
]

logger = logging.getLogger(__name__)

_MAX_ATTRIBUTES = 9  # attribute values shown by name; the rest are "other"
#: Training clips drawn per machine/section at most (evenly spaced in name order).
MAX_BANK_CLIPS = 200


class MapUnavailable(StethoError, ValueError):
    """The detector's features cannot be drawn as a map (the message says why in plain words)."""


def feature_problem(feats: np.ndarray) -> str | None:
    """Why ``feats`` is not one finite float vector per clip (None when it is)."""
    arr = np.asarray(feats)
    if arr.dtype == object or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        return (
            "this detector has no single feature vector per clip (its features are "
            f"{'per-clip arrays of frames' if arr.dtype == object else f'of shape {arr.shape}'}"
            "), so its clips cannot be placed on a map"
        )
    if not np.isfinite(arr).all():
        return "the detector's features contain NaN or infinite values"
    return None


def pca_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components (N, 2) of ``x`` (N, D), via SVD of the centred data."""
    xc = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2))
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    out = xc @ vt[:2].T  # (N, ≤2)
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """t-SNE (N, 2) with scikit-learn, or None when it is not installed or N is too small."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return None
    n = x.shape[0]
    if n < 5:
        return None
    perplexity = float(min(30.0, (n - 1) / 3.0))
    return np.asarray(
        TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    )


def _attributes(clips: Sequence[Clip]) -> list[str]:
    raw = [c.attributes or "none" for c in clips]
    common = {a for a, _ in Counter(raw).most_common(_MAX_ATTRIBUTES)}
    return [a if a in common else "other" for a in raw]


def _spread(bank: Sequence[Clip], limit: int) -> list[Clip]:
    """At most ``limit`` clips, evenly spaced in name order (deterministic)."""
    ordered = sorted(bank, key=lambda c: c.name)
    if len(ordered) <= limit:
        return ordered
    idx = np.linspace(0, len(ordered) - 1, limit).round().astype(int)
    return [ordered[i] for i in idx]


def _features(detector: BaseDetector, clips: Sequence[Clip], progress: bool) -> np.ndarray:
    if not clips:
        return np.zeros((0, 0))
    probe = detector.embed_files([clips[0].path])  # the kind's features, before decoding all
    problem = feature_problem(probe)
    if problem is not None:
        raise MapUnavailable(problem)
    if len(clips) == 1:
        return np.asarray(probe, dtype=np.float64)
    rest = detector.embed_files([c.path for c in clips[1:]], progress=progress)
    return np.concatenate([probe, rest]).astype(np.float64)


def embedding_maps(
    detector: BaseDetector,
    key: tuple[str, str],
    clips: Sequence[Clip],
    bank: Sequence[Clip] = (),
    *,
    max_bank: int = MAX_BANK_CLIPS,
    progress: bool = False,
) -> list[tuple[str, bytes]]:
    """``[("pca", png), ("tsne", png)]`` maps of the test ``clips`` and the normal ``bank`` clips.

    Args:
        detector: Any detector kind whose features are one float vector per clip.
        key: The (machine, section) drawn (titles only).
        clips: Test clips (coloured by domain, marked by label and attribute).
        bank: Normal training clips of the key (grey; at most ``max_bank``, evenly spaced).
        max_bank: Cap on the training clips embedded.
        progress: Progress bars while embedding.

    Raises:
        MapUnavailable: The detector's features are not one vector per clip (the autoencoder).
    """
    bank = _spread(bank, max_bank)
    test = _features(detector, clips, progress)  # (M, E)
    train = _features(detector, bank, progress) if bank else np.zeros((0, test.shape[1]))
    both = np.concatenate([test, train])
    std = both.std(axis=0)
    std[~(std > 1e-12)] = 1.0  # constant columns: centred only
    both = (both - both.mean(axis=0)) / std
    bank_domains = [c.domain or "unknown" for c in bank]
    domains = [c.domain or "unknown" for c in clips]
    labels = [c.label or "unknown" for c in clips]
    attrs = _attributes(clips)
    m, s = key
    out = []
    for method, xy in (("pca", pca_2d(both)), ("tsne", tsne_2d(both))):
        if xy is None:
            continue
        name = "PCA" if method == "pca" else "t-SNE"
        png = plot_embedding_map(
            xy[: len(clips)], domains, labels, attrs, xy[len(clips) :], bank_domains,
            f"{name} of the {detector.kind} detector's features — {m} section {s} "
            f"({len(clips)} test clips, {len(bank)} training normals)",
        )  # fmt: skip
        out.append((method, png))
    return out
