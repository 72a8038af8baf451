"""Anomaly-scoring back-ends: k-NN memory banks per (machine, section, domain) and thresholds.

>>> from stetho.backend import DomainKNNScorer, KNNConfig, fit_threshold
>>> scorer = DomainKNNScorer(KNNConfig(k=1)).fit(train_emb, keys, domains)   # doctest: +SKIP
>>> scores = scorer.score(test_emb, ("fan", "00"))                            # doctest: +SKIP
"""

from stetho.backend.knn import DomainKNNScorer, KNNConfig, MemoryBank
from stetho.backend.threshold import ThresholdConfig, decide, fit_threshold

__all__ = [
    "DomainKNNScorer",
    "KNNConfig",
    "MemoryBank",
    "ThresholdConfig",
    "decide",
    "fit_threshold",
]
