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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from stetho.detector.artifact import DetectorError
from stetho.detector.detector import Detector
from stetho.detector.scorer import Key

__all__ = [
    "CalibrationMode",
    "calibrate",
    "calibrate_folder",
    "identity",
    "load_for_calibration",
]

logger = logging.getLogger(__name__)

#: ``"replace"``: the new recordings become the key's only bank (the machine changed for good);
#: ``"add"``: they join the key's target-domain bank and the old banks stay (both states normal).
CalibrationMode = Literal["replace", "add"]


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
    detector: Detector,
    files: Mapping[Key, Sequence[str | os.PathLike[str]]],
    *,
    mode: CalibrationMode = "replace",
    note: str | None = None,
    progress: bool = False,
) -> Detector:
    """Re-fit the banks and thresholds of the given keys on new normal recordings (in place).

    Args:
        detector: A fitted detector; other keys keep their banks and thresholds.
        files: New normal recordings per (machine, section) the detector already knows.
        mode: ``"replace"`` or ``"add"`` (see :data:`CalibrationMode`).
        note: Free text kept in the calibration log (e.g. the folder the recordings came from).
        progress: Show a progress bar while embedding.

    Returns:
        ``detector``, with ``version`` incremented and the calibration appended to its log.

    Raises:
        DetectorError: an unknown key, a key without recordings, or an unknown mode.
    """
    if mode not in ("replace", "add"):
        raise DetectorError(f"calibration mode must be 'replace' or 'add', got {mode!r}")
    unknown = [k for k in files if k not in detector.keys]
    if unknown:
        valid = ", ".join(f"{m}/{s}" for m, s in detector.keys) or "none"
        bad = ", ".join(f"{m}/{s}" for m, s in unknown)
        raise DetectorError(
            f"calibration recordings for {bad}, which the detector has no model for; valid keys: "
            f"{valid} (a new machine needs `stetho fit`/training, not calibration)"
        )
    empty = [f"{m}/{s}" for (m, s), paths in files.items() if not paths]
    if empty or not files:
        raise DetectorError(f"no calibration recordings for {', '.join(empty) or 'any key'}")
    keys = sorted(files)
    paths = [Path(p) for k in keys for p in files[k]]
    row_keys = [k for k in keys for _ in files[k]]
    emb = torch.from_numpy(detector.embed_files(paths, progress=progress))  # (M, E)
    domain_banks = detector.scorer.cfg.domain_banks
    all_emb = [emb]
    all_keys: list[Key] = list(row_keys)
    domains: list[str | None] = [("target" if mode == "add" and domain_banks else None)] * len(
        row_keys
    )
    if mode == "add":  # keep the old banks: refit them together with the new recordings
        for key in keys:
            for dom, bank in detector.scorer.require_key(key).items():
                if len(bank):
                    all_emb.append(bank.embeddings)
                    all_keys += [key] * len(bank)
                    domains += [dom] * len(bank)
    detector.scorer.fit(torch.cat(all_emb), all_keys, domains, replace=False)
    old = {k: detector.thresholds.get(k) for k in keys}
    new = detector.fit_thresholds(keys)
    for k in keys:
        logger.info(
            "%s/%s: %d new normal recording(s); threshold %s -> %.6g",
            *k,
            len(files[k]),
            "none" if old[k] is None else f"{old[k]:.6g}",
            new[k],
        )
    detector.version += 1
    detector.calibrations.append(
        {
            "version": detector.version,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": mode,
            "keys": {f"{m}/{s}": len(files[(m, s)]) for m, s in keys},
            "thresholds": {f"{m}/{s}": float(new[(m, s)]) for m, s in keys},
            "note": note,
        }
    )
    return detector


def load_for_calibration(
    detector_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    checkpoint: str | os.PathLike[str] | None = None,
) -> Detector:
    """Load a saved k-NN detector folder to calibrate it.

    Raises:
        DetectorError: not a k-NN detector folder (e.g. an autoencoder baseline, which has no
            memory banks to re-fit).
    """
    from stetho.detector.artifact import read_meta
    from stetho.detector.detector import _FORMAT_VERSION, DETECTOR_FORMAT

    src = Path(detector_dir)
    try:
        read_meta(src, DETECTOR_FORMAT, _FORMAT_VERSION)
    except DetectorError as err:
        raise DetectorError(
            f"{err}. Only k-NN detectors (stetho fit/train) can be calibrated; an autoencoder "
            "baseline must be retrained"
        ) from err
    return Detector.load(src, device=device, checkpoint=checkpoint)


def calibrate_folder(
    detector_dir: str | os.PathLike[str],
    files: Mapping[Key, Sequence[str | os.PathLike[str]]],
    out: str | os.PathLike[str] | None = None,
    *,
    mode: CalibrationMode = "replace",
    note: str | None = None,
    device: str = "cpu",
    checkpoint: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Detector:
    """Load a saved detector, :func:`calibrate` it and save the new version atomically.

    Args:
        detector_dir: The saved detector folder.
        files: New normal recordings per (machine, section).
        out: Where to write the new version (default: replace ``detector_dir`` in one rename;
            the old version is gone then, pass ``out`` to keep it).
        mode, note, progress: See :func:`calibrate`.
        device, checkpoint: See :meth:`Detector.load`.

    Returns:
        The calibrated detector (saved).

    Raises:
        DetectorError: not a k-NN detector folder, or see :func:`calibrate`.
    """
    detector = load_for_calibration(detector_dir, device=device, checkpoint=checkpoint)
    before = detector.version
    calibrate(detector, files, mode=mode, note=note, progress=progress)
    dest = Path(out) if out is not None else Path(detector_dir)
    detector.save(dest)
    logger.info(
        "detector %s calibrated: version %d -> %d, saved to %s",
        detector.detector_id,
        before,
        detector.version,
        dest,
    )
    return detector
