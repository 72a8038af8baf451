"""Write file scores (``stetho detect --db``) to the score store.

>>> records = score_paths(det, ["recordings/"])                       # doctest: +SKIP
>>> store_records(ScoreStore.open("runs/plant.db"), records, det)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from stetho.data import AudioError, audio_info
from stetho.serving.files import ScoreRecord
from stetho.store import ScoreRow, ScoreStore

__all__ = ["records_to_rows", "store_records"]

logger = logging.getLogger(__name__)


def records_to_rows(
    records: Sequence[ScoreRecord], detector_id: str, detector_version: int, source: str = "detect"
) -> list[ScoreRow]:
    """Score rows of the scored records (error records are skipped).

    A row's time is the file's modification time (when the recording was written) and its window
    the whole file.
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
                source=source,
                window_start=0.0,
                window_end=float(seconds),
                score=float(r.score),
                threshold=r.threshold,
                decision=r.decision,
                detector_id=detector_id,
                detector_version=int(detector_version),
            )
        )
    return rows


def store_records(
    store: ScoreStore, records: Sequence[ScoreRecord], scorer: Any, folder: Any = None
) -> list[int]:
    """Store the scored records with the scorer's id and version (one transaction)."""
    from stetho.detector import identity

    ident, version = identity(scorer, folder)
    return store.add_scores(records_to_rows(records, ident, version))
