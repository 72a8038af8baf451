"""Re-fit a detector's memory banks and thresholds on new normal recordings, without retraining.

When a machine is moved, repaired or re-mounted, its normal sound changes and the old memory bank
flags everything as anomalous. Calibration embeds a few dozen new normal recordings with the
unchanged network, rebuilds the (machine, section) banks from them and re-fits the thresholds on
their leave-one-out scores. The result is a new *version* of the same detector: the id is kept,
the version is incremented, and the score store records which version produced every score.

>>> det = Detector.load("detector")                                         # doctest: +SKIP
>>> calibrate(det, {("fan", "00"): sorted(Path("new_normal").glob("*.wav"))})  # doctest: +SKIP
>>> det.version, det.save("detector")                                       # doctest: +SKIP

Not in the paper: the paper fits banks once on the training data; calibration is an operational
feature of stetho.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stetho.data.names import Key
from stetho.detector.base import BaseDetector, CalibrationMode
from stetho.detector.registry import load_detector

__all__ = [
    "CalibrationMode",
    "calibrate",
    "calibrate_folder",
    "identity",
    "load_for_calibration",
    "save_verified",
]

logger = logging.getLogger(__name__)


def identity(scorer: Any, folder: str | os.PathLike[str] | None = None) -> tuple[str, int]:
    """``(id, version)`` of any scorer: from ``describe()``, else the folder name and version 1."""
    desc: dict[str, Any] = {}
    if hasattr(scorer, "describe"):
        try:
            desc = dict(scorer.describe())
        except Exception:  # a scorer without a working describe(): fall back below
            desc = {}
    ident = desc.get("id") or getattr(scorer, "detector_id", None)
    if not ident:
        ident = Path(folder).resolve().name if folder is not None else type(scorer).__name__
    return str(ident), int(desc.get("version", getattr(scorer, "version", 1)))


def calibrate(
    detector: BaseDetector,
    files: Mapping[Key, Sequence[str | os.PathLike[str]]],
    *,
    mode: CalibrationMode = "replace",
    note: str | None = None,
    progress: bool = False,
) -> BaseDetector:
    """Re-fit the models and thresholds of the given keys on new normal recordings (in place).

    Any kind of detector (:meth:`BaseDetector.calibrate`); other keys keep their models.

    Returns:
        ``detector``, with ``version`` incremented and the calibration appended to its log.

    Raises:
        InputError: too few, silent or identical recordings, or an unknown mode; NotFoundError:
            a key the detector has no model for. The detector is unchanged then.
    """
    before = {k: detector.thresholds.get(k) for k in files}
    detector.calibrate(files, mode=mode, note=note, progress=progress)
    for k in sorted(files):
        old = before[k]
        logger.info(
            "%s/%s: %d new normal recording(s); threshold %s -> %.6g",
            *k,
            len(files[k]),
            "none" if old is None else f"{old:.6g}",
            detector.thresholds[k],
        )
    return detector


def load_for_calibration(
    detector_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    checkpoint: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
) -> BaseDetector:
    """Load a saved detector folder of any kind to calibrate it."""
    return load_detector(
        detector_dir, device=device, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint
    )


def calibrate_folder(
    detector_dir: str | os.PathLike[str],
    files: Mapping[Key, Sequence[str | os.PathLike[str]]],
    out: str | os.PathLike[str] | None = None,
    *,
    mode: CalibrationMode = "replace",
    note: str | None = None,
    device: str = "cpu",
    checkpoint: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
    progress: bool = False,
) -> BaseDetector:
    """Load a saved detector, :func:`calibrate` it and save the new version atomically.

    The new version is written beside the destination, loaded back (every file checked) and
    only then renamed into place, so a working detector is never replaced by one that does not
    load.

    Args:
        detector_dir: The saved detector folder.
        files: New normal recordings per (machine, section).
        out: Where to write the new version (default: replace ``detector_dir`` in one rename;
            the old version is gone then, pass ``out`` to keep it).
        mode, note, progress: See :func:`calibrate`.
        device, checkpoint, trust_checkpoint: See :func:`stetho.load_detector`.

    Returns:
        The calibrated detector (saved).
    """
    detector = load_for_calibration(
        detector_dir, device=device, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint
    )
    before = detector.version
    calibrate(detector, files, mode=mode, note=note, progress=progress)
    dest = Path(out) if out is not None else Path(detector_dir)
    save_verified(detector, dest, checkpoint=checkpoint, trust_checkpoint=trust_checkpoint)
    logger.info(
        "detector %s calibrated: version %d -> %d, saved to %s",
        detector.detector_id,
        before,
        detector.version,
        dest,
    )
    return detector


def save_verified(
    detector: BaseDetector,
    dest: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
) -> Path:
    """Save ``detector`` beside ``dest``, load it back (every file checked), then rename it into
    place: a working detector at ``dest`` is never replaced by one that does not load."""
    import shutil
    import tempfile

    from stetho.utils.artifact import check_replaceable, publish_folder

    target = Path(dest)
    check_replaceable(target, detector.format)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent))
    try:
        source = getattr(detector, "source", None)
        detector.save(staging / "detector")
        load_detector(
            staging / "detector", checkpoint=checkpoint, trust_checkpoint=trust_checkpoint
        )
        detector.source = source
        publish_folder(staging / "detector", target, detector.format, manifest=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
