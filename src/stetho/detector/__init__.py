"""Detectors: one contract (:class:`BaseDetector`), four kinds, one loader.

>>> import stetho
>>> det = stetho.load_detector("runs/plant/detector")        # doctest: +SKIP
>>> det.score_files(["clip.wav"], machine="slider", section="00")  # doctest: +SKIP
>>> det.describe()["kind"]                                   # doctest: +SKIP
'fewshot'

Kinds: :class:`EnsembleDetector` (few-shot, ``stetho train``'s default), :class:`Detector`
(fine-tuned / frozen k-NN), :class:`AutoencoderDetector` (DCASE baseline) and the ONNX export of
the first two (:mod:`stetho.detector.onnx`).
"""

from stetho.detector.artifact import DetectorError
from stetho.detector.base import BaseDetector, Nearest
from stetho.detector.calibrate import calibrate, calibrate_folder, identity
from stetho.detector.detector import DETECTOR_FORMAT, Detector, TrainedParts
from stetho.detector.registry import KIND_NAMES, known_formats, load_detector, register_format
from stetho.detector.scorer import Key, Scorer, load_scorer

__all__ = [
    "DETECTOR_FORMAT",
    "KIND_NAMES",
    "BaseDetector",
    "Detector",
    "DetectorError",
    "Key",
    "Nearest",
    "Scorer",
    "TrainedParts",
    "calibrate",
    "calibrate_folder",
    "identity",
    "known_formats",
    "load_detector",
    "load_scorer",
    "register_format",
]
