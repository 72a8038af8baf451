"""Scoring (plain arrays): k-NN memory banks per (machine, section, domain) and thresholds.

>>> from stetho.scoring import DomainKNNScorer, KNNConfig, fit_threshold
>>> scorer = DomainKNNScorer(KNNConfig(k=1)).fit(train_emb, keys, domains)   # doctest: +SKIP
>>> scores = scorer.score(test_emb, ("fan", "00"))                            # doctest: +SKIP
"""

from stetho.scoring.knn import DomainKNNScorer, KNNConfig, MemoryBank
from stetho.scoring.threshold import ThresholdConfig, decide, fit_threshold

__all__ = [
    "DomainKNNScorer",
    "KNNConfig",
    "MemoryBank",
    "ThresholdConfig",
    "decide",
    "fit_threshold",
]
