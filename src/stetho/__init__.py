"""stetho: a stethoscope for machines.

Anomalous sound detection (ASD) of machines with fine-tuned pre-trained audio models, following the
DCASE Task 2 protocol. One sub-package per pipeline stage:

* :mod:`stetho.data` -- DCASE layouts, clip metadata, audio loading, synthetic datasets, downloads.
* :mod:`stetho.frontend` -- fbank / mel front-ends, SpecAugment, segmentation (torch layers).
* :mod:`stetho.backbones` -- pre-trained audio models behind one registry (``create_backbone``).
* :mod:`stetho.backend` -- KNN memory banks and decision thresholds.
* :mod:`stetho.finetune` -- proxy labels, ArcFace, LoRA / full fine-tuning, training, detectors.
* :mod:`stetho.evaluation` -- the official DCASE metrics and submission files.
* :mod:`stetho.serving` -- scoring files, folders, streams and HTTP requests with a saved detector.
"""

__version__ = "0.1.0"
