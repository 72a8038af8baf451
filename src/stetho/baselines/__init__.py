"""Official baselines re-implemented: the DCASE autoencoder (MSE and selective Mahalanobis scores).

>>> from stetho.baselines import AEBaselineConfig, train_ae_baseline
>>> model = train_ae_baseline(clips, AEBaselineConfig())    # doctest: +SKIP

The end-to-end run (train → score → evaluate) is :func:`stetho.pipelines.run_ae_baseline`.
"""

from stetho.baselines.autoencoder import (
    SCORE_MODES,
    AEBaseline,
    AEBaselineConfig,
    AESection,
    DenseAE,
    mahalanobis_pairwise_mean,
    selective_mahalanobis,
    train_ae_baseline,
)

__all__ = [
    "SCORE_MODES",
    "AEBaseline",
    "AEBaselineConfig",
    "AESection",
    "DenseAE",
    "mahalanobis_pairwise_mean",
    "selective_mahalanobis",
    "train_ae_baseline",
]
