"""stetho: a stethoscope for machines.

Anomalous sound detection (ASD) of machines with fine-tuned pre-trained audio models, following the
DCASE Task 2 protocol. One sub-package per pipeline stage:

* :mod:`stetho.data` -- DCASE layouts, clip metadata, audio loading, synthetic datasets, downloads.
* :mod:`stetho.frontend` -- fbank / mel front-ends, SpecAugment, segmentation (torch layers).
* :mod:`stetho.backbones` -- pre-trained audio models behind one registry (``create_backbone``).
* :mod:`stetho.scoring` -- k-NN memory banks and decision thresholds (plain arrays).
* :mod:`stetho.model` -- proxy-task labels, ArcFace / linear heads, LoRA / full / frozen adaptation.
* :mod:`stetho.detector` -- the deployable detector (network + memory banks + thresholds).
* :mod:`stetho.baselines` -- the official DCASE autoencoder baseline.
* :mod:`stetho.training` -- datasets, the fine-tuning loop with resume, DDP helpers.
* :mod:`stetho.pipelines` -- train, score, embed, sweep and demo jobs.
* :mod:`stetho.evaluation` -- the official DCASE metrics and submission files.
* :mod:`stetho.serving` -- scoring files, folders, streams and HTTP requests with a saved detector.
* :mod:`stetho.cli` -- the ``stetho`` command line.

``stetho.config`` holds the root :class:`~stetho.config.ExperimentConfig`.
"""

__version__ = "0.1.0"

from stetho.utils.errors import StethoError  # the one exception base (utils.errors)

__all__ = ["StethoError", "__version__", "load_detector"]


def load_detector(directory, **options):  # type: ignore[no-untyped-def]
    """Open a saved detector folder of any kind: see :func:`stetho.detector.load_detector`."""
    # imported by name: the package root is below every layer and must not pull the detector in
    import importlib

    return importlib.import_module("stetho.detector.registry").load_detector(directory, **options)
