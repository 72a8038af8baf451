"""Write file scores (``stetho detect --db``) to the score store.

>>> records = score_paths(det, ["recordings/"])                       # doctest: +SKIP
>>> store_records(ScoreStore.open("runs/plant.db"), records, det)     # doctest: +SKIP

Each stored window names its recording (the file's absolute path), the detector (name, id,
version) and carries the detector's normalised score.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stetho.data import AudioError, audio_info
from stetho.serving.files import ScoreRecord
from stetho.store import ScoreRow, ScoreStore

__all__ = ["detector_name", "records_to_rows", "store_records"]

logger = logging.getLogger(__name__)


def detector_name(folder: Any) -> str:
    """The name a detector folder is shown under (as ``--detector DIR`` names it in serve)."""
    if folder is None:
        return ""
    from stetho.serving.registry import parse_detector_spec

    try:
        return parse_detector_spec(str(folder))[0]
    except ValueError:
        return Path(str(folder)).name


def records_to_rows(
    records: Sequence[ScoreRecord],
    detector_id: str,
    detector_version: int,
    source: str | None = None,
    *,
    name: str = "",
    normalised: Mapping[Path, float | None] | None = None,
) -> list[ScoreRow]:
    """Score rows of the scored records (error records are skipped).

    A row's time is the file's modification time (when the recording was written), its window
    the whole file and its source the file's absolute path (or ``source`` when given).
    """
    rows = []
    for r in records:
        if not r.ok or r.score is None or r.machine is None or r.section is None:
            continue
        try:
            seconds = audio_info(r.path).seconds
            when = datetime.fromtimestamp(r.path.stat().st_mtime, UTC)
        except (AudioError, OSError) as err:  # gone since it was scored: keep the score
            logger.warning("%s: %s; stored with the current time", r.path, err)
            seconds, when = 0.0, datetime.now(UTC)
        rows.append(
            ScoreRow(
                time=when,
                machine=r.machine,
                section=r.section,
                source=source or str(Path(r.path).absolute()),
                window_start=0.0,
                window_end=float(seconds),
                score=float(r.score),
                threshold=r.threshold,
                decision=r.decision,
                detector_id=detector_id,
                detector_version=int(detector_version),
                detector_name=name,
                normalised=None if normalised is None else normalised.get(r.path),
            )
        )
    return rows


def _normalised(records: Sequence[ScoreRecord], scorer: Any) -> dict[Path, float | None]:
    """The detector's normalised score of every scored record (None where it has none)."""
    out: dict[Path, float | None] = {}
    if not hasattr(scorer, "normalise"):
        return out
    for r in records:
        if r.ok and r.score is not None and r.machine is not None and r.section is not None:
            z = float(scorer.normalise([r.score], (r.machine, r.section))[0])
            out[r.path] = z if math.isfinite(z) else None
    return out


def store_records(
    store: ScoreStore, records: Sequence[ScoreRecord], scorer: Any, folder: Any = None
) -> list[int]:
    """Store the scored records with the detector's name, id, version and normalised scores
    (one transaction)."""
    from stetho.detector import identity

    ident, version = identity(scorer, folder)
    rows = records_to_rows(
        records,
        ident,
        version,
        name=detector_name(folder),
        normalised=_normalised(records, scorer),
    )
    return store.add_scores(rows)
