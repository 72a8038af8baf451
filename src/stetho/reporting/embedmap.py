"""2-D maps of a machine/section's k-NN embeddings: test clips and the memory bank.

PCA is computed with numpy (always available); t-SNE is added when scikit-learn is installed
(an optional dependency at run time; ``pip install scikit-learn``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from stetho.data import Clip
from stetho.detector import Detector
from stetho.reporting.figures import plot_embedding_map

__all__ = ["embedding_maps", "pca_2d", "tsne_2d"]

logger = logging.getLogger(__name__)

_MAX_ATTRIBUTES = 9  # attribute values shown by name; the rest are "other"


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


def embedding_maps(
    detector: Detector, key: tuple[str, str], clips: Sequence[Clip], *, progress: bool = False
) -> list[tuple[str, bytes]]:
    """``[("pca", png), ("tsne", png)]`` maps of the test ``clips`` of ``key`` and its banks.

    Test embeddings are L2-normalised like the banks when the metric is cosine.
    """
    test = detector.embed_clips(clips, progress=progress).astype(np.float64)  # (M, E)
    if detector.cfg.backend.metric == "cosine":
        test /= np.maximum(np.linalg.norm(test, axis=1, keepdims=True), 1e-12)
    banks = detector.scorer.require_key(key)
    bank_parts, bank_domains = [], []
    for dom, mem in banks.items():
        if len(mem):
            bank_parts.append(mem.embeddings.double().numpy())
            bank_domains += [dom] * len(mem)
    bank_emb = np.concatenate(bank_parts) if bank_parts else np.zeros((0, test.shape[1]))
    both = np.concatenate([test, bank_emb])
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
            f"{name} of the k-NN embeddings — {m} section {s} ({len(clips)} test clips, "
            f"{len(bank_domains)} bank entries)",
        )  # fmt: skip
        out.append((method, png))
    return out
