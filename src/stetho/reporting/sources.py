"""Find what a report is made from: run, demo, sweep or submission folders, truth, data, detector.

Recognised inputs of ``stetho report SOURCE``:

* a **run folder** of ``stetho train`` (``scores/``, ``detector/``, ``train/metrics.csv``,
  ``evaluation/``, optionally ``robustness/`` from ``stetho evaluate --noise``);
* a **demo folder** of ``stetho demo`` (``run/`` + ``data/``; the truth defaults to ``data/``);
* a **sweep folder** of ``stetho sweep`` (``comparison.csv`` + one run folder per config);
* a **submission folder** (``anomaly_score_*.csv`` [+ ``decision_result_*.csv``]), e.g. the
  output of ``stetho score``; ``RUN/scores`` is treated as its run folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stetho.evaluation import is_ground_truth_dir
from stetho.reporting.robustness import ROBUSTNESS_JSON
from stetho.utils.errors import StethoError

__all__ = [
    "RUN_JSON",
    "ReportInputs",
    "ReportSourceError",
    "locate",
    "read_csv_rows",
    "run_data_root",
]

logger = logging.getLogger(__name__)


class ReportSourceError(StethoError, ValueError):
    """The report source is not a run, demo, sweep or submission folder."""


@dataclass
class ReportInputs:
    """Everything a report can use; None where absent.

    Attributes:
        kind: ``"run"`` (run, demo or submission folder) or ``"sweep"``.
        source: What the user passed.
        scores_dir: Submission CSVs.
        run_dir: The run folder (training curves, evaluation, detector).
        truth: Dataset root or official ground-truth folder.
        data_root: Dataset root holding the test clips' audio (embedding map, explanations).
        detector_dir: Saved detector.
        metrics_csv: ``train/metrics.csv``.
        robustness_json: ``robustness.json`` of ``stetho evaluate --noise``.
        results_json: ``evaluation/results.json`` of the run (tables when no truth is given).
        sweep_csv: ``comparison.csv`` of a sweep.
    """

    kind: Literal["run", "sweep"]
    source: Path
    scores_dir: Path | None = None
    run_dir: Path | None = None
    truth: Path | None = None
    data_root: Path | None = None
    detector_dir: Path | None = None
    metrics_csv: Path | None = None
    robustness_json: Path | None = None
    results_json: Path | None = None
    sweep_csv: Path | None = None


def _has_scores(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("anomaly_score_*.csv"))


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def _run_parts(inp: ReportInputs, run: Path) -> None:
    inp.run_dir = run
    inp.metrics_csv = _file(run / "train" / "metrics.csv")
    inp.results_json = _file(run / "evaluation" / "results.json")
    inp.robustness_json = _file(run / "robustness" / ROBUSTNESS_JSON)
    if (run / "detector" / "config.json").is_file():
        inp.detector_dir = run / "detector"


def _classify(src: Path, inp: ReportInputs) -> Path | None:
    """Fill run/scores/sweep paths; returns the default truth (a demo's ``data/``) or None."""
    if (src / "comparison.csv").is_file():
        inp.kind = "sweep"
        inp.sweep_csv = src / "comparison.csv"
        return None
    if (src / "run").is_dir() and (src / "data").is_dir():  # stetho demo
        _run_parts(inp, src / "run")
        inp.scores_dir = src / "run" / "scores" if _has_scores(src / "run" / "scores") else None
        return src / "data"
    if (src / "train").is_dir() or (src / "scores").is_dir():
        _run_parts(inp, src)
        inp.scores_dir = src / "scores" if _has_scores(src / "scores") else None
        return None
    if _has_scores(src):
        inp.scores_dir = src
        if (src.parent / "detector").is_dir() or (src.parent / "train").is_dir():
            _run_parts(inp, src.parent)
        return None
    raise ReportSourceError(
        f"{src} is not a run folder (train/, scores/), a demo folder (run/, data/), a sweep "
        "folder (comparison.csv) or a submission folder (anomaly_score_*.csv)"
    )


#: What a run folder records about itself (written by the training pipelines):
#: ``{"data_root": "<dataset root the run was trained and tested on>"}``.
RUN_JSON = "run.json"


def run_data_root(run_dir: str | os.PathLike[str]) -> Path | None:
    """The dataset root a run records in ``RUN/run.json`` (``data_root``), when it still exists.

    A relative ``data_root`` is taken relative to the run folder. Returns None when the file is
    absent, unreadable or names a folder that is gone (the report then looks elsewhere).
    """
    path = Path(run_dir) / RUN_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        root = Path(str(doc["data_root"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not root.is_absolute():
        root = Path(run_dir) / root
    if not root.is_dir():
        logger.warning("%s: data_root %s no longer exists", path, root)
        return None
    return root


def _bank_paths(detector_dir: Path) -> list[str]:
    """Recording paths the detector folder lists for its banks (k-NN ``bank_clips.json``,
    few-shot ``config.json`` ``keys.*.bank_clips``); empty when it lists none."""
    try:
        banks = json.loads((detector_dir / "bank_clips.json").read_text(encoding="utf-8"))
        return [str(p) for paths in banks["banks"].values() for p in paths]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        meta = json.loads((detector_dir / "config.json").read_text(encoding="utf-8"))
        return [
            str(p)
            for info in meta["keys"].values()
            for paths in dict(info.get("bank_clips", {})).values()
            for p in paths
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _root_from_detector(detector_dir: Path) -> Path | None:
    """The dataset root the detector's banks were fitted from (bank clip paths whose ancestors
    include ``dev_data``/``eval_data``), when it still exists; else None."""
    for first in _bank_paths(detector_dir)[:1]:
        for parent in Path(first).parents:
            if parent.name in ("dev_data", "eval_data") and parent.parent.is_dir():
                return parent.parent
    return None


def _own_data_root(inp: ReportInputs) -> Path | None:
    """Where a run's own test clips are: ``RUN/run.json``, else the detector's bank paths."""
    root = run_data_root(inp.run_dir) if inp.run_dir is not None else None
    if root is None and inp.detector_dir is not None:
        root = _root_from_detector(inp.detector_dir)
    return root


def locate(
    source: str | os.PathLike[str],
    *,
    truth: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    detector: str | os.PathLike[str] | None = None,
    robustness: str | os.PathLike[str] | None = None,
) -> ReportInputs:
    """Work out the inputs of a report from a folder and the optional overrides.

    Args:
        source: Run, demo, sweep or submission folder.
        truth: Dataset root or official ground-truth folder (default: a demo's ``data/``, else
            the run's own dataset: ``RUN/run.json``'s ``data_root``, else the dataset the
            detector's bank clips come from).
        data: Dataset root with the audio (default: ``truth`` when it is a dataset root).
        detector: Detector folder (default: ``<run>/detector``).
        robustness: ``robustness.json`` or its folder (default: ``<run>/robustness/``).

    Raises:
        ReportSourceError: ``source`` is none of the recognised folders.
        FileNotFoundError: ``source`` or an explicitly given path does not exist.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"report source does not exist: {src}")
    for what, p in (
        ("truth", truth),
        ("data", data),
        ("detector", detector),
        ("robustness", robustness),
    ):
        if p is not None and not Path(p).exists():
            raise FileNotFoundError(f"--{what} does not exist: {p}")
    inp = ReportInputs(kind="run", source=src)
    default_truth = _classify(src, inp)
    if detector is not None:
        inp.detector_dir = Path(detector)
    own_scores = inp.run_dir is not None and inp.scores_dir == inp.run_dir / "scores"
    if truth is None and default_truth is None and own_scores:
        # the run's dev-test scores: their truth is the dataset the run was made from
        default_truth = _own_data_root(inp)
        if default_truth is not None:
            logger.info("truth: the dataset the run was made from, %s", default_truth)
    inp.truth = Path(truth) if truth is not None else default_truth
    if data is not None:
        inp.data_root = Path(data)
    elif inp.truth is not None and inp.truth.is_dir() and not is_ground_truth_dir(inp.truth):
        inp.data_root = inp.truth
    if robustness is not None:
        rob = Path(robustness)
        inp.robustness_json = rob / ROBUSTNESS_JSON if rob.is_dir() else rob
    return inp


def read_csv_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with a header, as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
