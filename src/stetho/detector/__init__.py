"""The deployable detector: an embedding network, memory banks and thresholds, saved as one folder.

>>> from stetho.detector import Detector
>>> det = Detector.load("runs/x/detector")                 # doctest: +SKIP
>>> det.score_files(["clip.wav"], machine="fan", section="00")  # doctest: +SKIP
"""

from stetho.detector.artifact import DetectorError
from stetho.detector.calibrate import calibrate, calibrate_folder, identity
from stetho.detector.detector import DETECTOR_FORMAT, Detector, TrainedParts
from stetho.detector.scorer import Key, Scorer, load_scorer

__all__ = [
    "DETECTOR_FORMAT",
    "Detector",
    "DetectorError",
    "Key",
    "Scorer",
    "TrainedParts",
    "calibrate",
    "calibrate_folder",
    "identity",
    "load_scorer",
]
