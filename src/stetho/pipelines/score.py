"""``score_dataset``: a fitted detector scores a dev or eval tree into the official CSVs."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.detector.detector import Detector
from stetho.evaluation import Scores
from stetho.pipelines.common import infer_year, select_clips, write_scores

__all__ = ["score_dataset"]

logger = logging.getLogger(__name__)


def score_dataset(
    detector: Detector,
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    partition: Literal["dev", "eval"] = "dev",
    *,
    fit_missing: bool = True,
    style: Literal["plain", "baseline"] = "plain",
    year: int | None = None,
    progress: bool = True,
) -> Scores:
    """Score the test clips of a dev or eval tree and write the official submission CSVs.

    Args:
        detector: A fitted detector.
        root: Dataset root.
        out_dir: Folder for ``anomaly_score_…``/``decision_result_…`` files.
        partition: ``"dev"`` or ``"eval"`` test clips.
        fit_missing: Machine/sections without a memory bank (e.g. eval machine types) get banks
            and thresholds from that partition's normal train clips first (the detector is
            updated in memory; save it again to keep them).
        style: ``"plain"`` or ``"baseline"`` file names.
        year: Challenge year for file-name forms (default: from the data, else 2023).
        progress: Progress bars.

    Returns:
        ``{(machine, section): {clip name: score}}``.
    """
    table = scan_dataset(root, year=year)
    # kinds without an experiment config (the autoencoder baseline) select every machine
    cfg = detector.cfg if isinstance(getattr(detector, "cfg", None), ExperimentConfig) else None
    exp = cfg if cfg is not None else ExperimentConfig()
    data = exp.data
    # data.machines names dev machine types: it does not restrict the eval partition
    restrict = partition == "dev"
    test = select_clips(table, exp, partition=partition, split="test", restrict_machines=restrict)
    if not len(test):
        filters = [f"sections={data.sections}"] if data.sections is not None else []
        if restrict and data.machines is not None:
            filters.insert(0, f"machines={data.machines}")
        where = f" matching the detector's data filter ({', '.join(filters)})" if filters else ""
        raise ValueError(
            f"no {partition} test clips under {root}{where}; found {len(table)} clips in total"
        )
    missing = sorted(set(test.sections()) - set(detector.keys))
    if missing:
        if not fit_missing:
            raise KeyError(
                f"the detector has no banks for {[f'{m}/{s}' for m, s in missing]}; fitted keys: "
                f"{[f'{m}/{s}' for m, s in detector.keys]} (use fit_missing=True)"
            )
        extra = select_clips(
            table, exp, partition=partition, split="train", restrict_machines=restrict
        ).filter(key=set(missing))
        lacking = sorted(set(missing) - set(extra.sections()))
        if lacking:
            raise KeyError(
                f"no {partition} train clips to fit banks for {[f'{m}/{s}' for m, s in lacking]}"
            )
        logger.info(
            "fitting banks for %d new machine/section(s) from %d train clips",
            len(missing),
            len(extra),
        )
        detector.fit(extra, replace=False, progress=progress)
    scores = detector.score_clips(test, progress=progress)
    write_scores(
        detector,
        scores,
        Path(out_dir),
        infer_year(list(table), year or exp.data.year),
        style,
    )
    return scores
