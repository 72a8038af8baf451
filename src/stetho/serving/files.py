"""Score audio files and folders with a saved detector.

::

    det = Detector.load("runs/x/detector")
    records = score_paths(det, ["recordings/", "one.wav"])          # folders walked recursively
    print(format_records(records))
    write_records_csv(records, "scores.csv")

Each file's (machine, section) is, in this order: the ``machine``/``section`` arguments; the
detector's only key when it has one; inferred from a DCASE layout (section from the file name,
e.g. ``section_00_…``, machine from the nearest folder named like one of the detector's machines,
e.g. ``fan/test/section_00_….wav``). A file whose key cannot be resolved, that cannot be
decoded, or whose audio the model cannot score (e.g. too short) becomes an error record naming the
file (``on_error="report"``) or raises (``on_error="raise"``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from stetho.data import AudioError, is_audio_file_name
from stetho.data.names import Key, PlacementError, normalize_section, place_file
from stetho.data.prefetch import decode_files
from stetho.utils.io import atomic_write

if TYPE_CHECKING:
    from stetho.detector.scorer import Scorer

__all__ = [
    "CSV_COLUMNS",
    "KeyResolutionError",
    "ScoreRecord",
    "expand_paths",
    "format_records",
    "normalize_section",
    "resolve_key",
    "score_paths",
    "write_records_csv",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
CSV_COLUMNS: tuple[str, ...] = (
    "path",
    "machine",
    "section",
    "score",
    "normalised",
    "decision",
    "threshold",
    "error",
)
_CHUNK = 32  # files decoded and scored at once


#: The placement error of :func:`stetho.data.names.place_file` (kept name).
KeyResolutionError = PlacementError


@dataclass(frozen=True)
class ScoreRecord:
    """The outcome of scoring one file.

    Attributes:
        path: The file.
        machine, section: Its key (None when it could not be resolved).
        score: Anomaly score (higher = more anomalous); None on error.
        decision: 1 = anomalous, 0 = normal; None on error or without a fitted threshold.
        threshold: The key's decision threshold (None when unknown).
        error: Why the file could not be scored (None on success).
        normalised: The normalised score (0 = typical normal clip, 1 = the threshold; see
            docs/thresholds.md), None without a fitted threshold.
    """

    path: Path
    machine: str | None
    section: str | None
    score: float | None
    decision: int | None
    threshold: float | None
    error: str | None = None
    normalised: float | None = None

    @property
    def ok(self) -> bool:
        """True when the file was scored."""
        return self.error is None

    def to_row(self) -> dict[str, Any]:
        """A flat dict with the :data:`CSV_COLUMNS` (None → empty string; scores in ``repr``)."""
        return {
            "path": str(self.path),
            "machine": self.machine or "",
            "section": self.section or "",
            "score": "" if self.score is None else repr(float(self.score)),
            "normalised": "" if self.normalised is None else f"{self.normalised:.4f}",
            "decision": "" if self.decision is None else int(self.decision),
            "threshold": "" if self.threshold is None else repr(float(self.threshold)),
            "error": self.error or "",
        }


def expand_paths(paths: PathLike | Iterable[PathLike]) -> list[tuple[Path, str | None]]:
    """Files to score: each file as given; folders walked recursively for ``.wav``/``.flac``.

    Returns:
        ``(path, problem)`` pairs in input order (folders sorted); ``problem`` is None or a
        message for a path that does not exist / a folder without audio files.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    out: list[tuple[Path, str | None]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_audio_file_name(f.name))
            if not found:
                out.append((p, f"folder {p} contains no .wav or .flac files"))
            out += [(f, None) for f in found]
        elif p.is_file():
            out.append((p, None))
        else:
            out.append((p, f"no such file or folder: {p}"))
    return out


def _valid_keys(keys: Sequence[Key]) -> str:
    return ", ".join(f"{m}/{s}" for m, s in keys) or "none"


def resolve_key(
    path: Path, keys: Sequence[Key], machine: str | None = None, section: str | None = None
) -> Key:
    """The (machine, section) a file belongs to: :func:`stetho.data.names.place_file`."""
    return place_file(path, keys, machine, section)


def score_paths(
    detector: Scorer,
    paths: PathLike | Iterable[PathLike],
    machine: str | None = None,
    section: str | None = None,
    on_error: Literal["report", "raise"] = "report",
    num_workers: int = 0,
) -> list[ScoreRecord]:
    """Score audio files and folders (walked recursively for ``.wav``/``.flac``).

    Args:
        detector: A fitted detector (:class:`stetho.detector.Scorer`).
        paths: Files and/or folders.
        machine, section: The key of all files (default: resolved per file, see module docs).
        on_error: ``"report"``: unreadable or unscorable files / unresolvable keys become
            records with ``error`` set; ``"raise"``: raise at the first problem.
        num_workers: Threads that decode and resample the next files while the model scores
            the current ones (:func:`stetho.data.prefetch.decode_files`; 0 = in this process).

    Returns:
        One :class:`ScoreRecord` per file, in input order.

    Raises:
        FileNotFoundError: (``on_error="raise"``) a path does not exist or a folder has no audio.
        KeyResolutionError: (``on_error="raise"``) a file's key is unknown or cannot be inferred.
        AudioError: (``on_error="raise"``) a file cannot be decoded.
        ValueError: (``on_error="raise"``) the model cannot score a file's audio (e.g. too
            short); the message names the file.
    """
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
    keys = list(detector.keys)
    thresholds = dict(detector.thresholds)
    records: list[ScoreRecord | None] = []
    groups: dict[Key, list[tuple[int, Path]]] = {}

    def fail(i: int, path: Path, key: Key | None, message: str) -> None:
        m, s = key if key is not None else (machine, section)
        records[i] = ScoreRecord(
            path, m, s, None, None, thresholds.get(key) if key else None, message
        )
        logger.warning("%s", message)

    for i, (path, problem) in enumerate(expand_paths(paths)):
        records.append(None)
        if problem is not None:
            if on_error == "raise":
                raise FileNotFoundError(problem)
            fail(i, path, None, problem)
            continue
        try:
            key = resolve_key(path, keys, machine, section)
        except KeyResolutionError as err:
            if on_error == "raise":
                raise
            fail(i, path, None, str(err))
            continue
        groups.setdefault(key, []).append((i, path))

    sr = detector.sample_rate
    order = [(i, path, key) for key, items in groups.items() for i, path in items]
    pending: list[tuple[int, Path, np.ndarray]] = []
    decoded = decode_files([p for _, p, _ in order], sr, num_workers=num_workers)
    for n, (j, wave, error) in enumerate(decoded, start=1):
        i, path, key = order[j]
        if wave is None:
            if on_error == "raise":
                raise AudioError(error or f"cannot decode {path}")
            fail(i, path, key, error or f"cannot decode {path}")
        else:
            pending.append((i, path, wave))
        next_key = order[n][2] if n < len(order) else None
        if pending and (len(pending) == _CHUNK or next_key != key):
            scores = _score_chunk(detector, key, pending, fail if on_error == "report" else None)
            thr = thresholds.get(key)
            scored = [(item, s) for item, s in zip(pending, scores) if s is not None]
            decisions: list[int | None] = [None] * len(scored)
            norms: list[float | None] = [None] * len(scored)
            if thr is not None and scored:  # the detector decides, with its own rule
                raw = [s for _, s in scored]
                decisions = [int(d) for d in detector.decide(raw, key)]
                norms = [_finite(v) for v in _normalise(detector, raw, key)]
            for ((i_, path_, _), score), dec, nrm in zip(scored, decisions, norms):
                records[i_] = ScoreRecord(path_, key[0], key[1], score, dec, thr, None, nrm)
            pending = []
    return [r for r in records if r is not None]


def _normalise(detector: Scorer, raw: list[float], key: Key) -> list[float]:
    norm = getattr(detector, "normalise", None)
    return [float("nan")] * len(raw) if norm is None else [float(v) for v in norm(raw, key)]


def _finite(v: float) -> float | None:
    return v if np.isfinite(v) else None


def _score_chunk(
    detector: Scorer,
    key: Key,
    items: list[tuple[int, Path, np.ndarray]],
    fail: Callable[[int, Path, Key | None, str], None] | None,
) -> list[float | None]:
    """Scores of one chunk of decoded files of one key; ``fail=None`` raises on a bad file."""
    waves = [w for _, _, w in items]
    try:
        return [float(v) for v in detector.score_waveforms(waves, key[0], key[1])]  # (b,)
    except ValueError:
        pass
    # one unscorable file (e.g. shorter than the model's window) must not lose the others:
    # score this chunk file by file to find it
    sr = detector.sample_rate
    scores: list[float | None] = []
    for i, path, wave in items:
        try:
            scores.append(float(detector.score_waveforms([wave], key[0], key[1])[0]))
        except ValueError as err:
            length = f"{wave.shape[0]} samples = {wave.shape[0] / sr:.3g} s at {sr} Hz"
            message = f"{path}: cannot score this audio ({length}): {err}"
            if fail is None:
                raise ValueError(message) from err
            fail(i, path, key, message)
            scores.append(None)
    return scores


def write_records_csv(records: Iterable[ScoreRecord], path: PathLike) -> Path:
    """Atomically write records as CSV with a header (:data:`CSV_COLUMNS`); returns the path."""
    dest = Path(path)
    with atomic_write(dest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow(rec.to_row())
    return dest


def format_records(records: Sequence[ScoreRecord]) -> str:
    """A readable table (file, key, score, decision, threshold) plus a summary line and errors."""
    rows = [("file", "machine/section", "score", "normalised (1 = threshold)", "decision")]
    errors = []
    for r in records:
        key = f"{r.machine}/{r.section}" if r.machine and r.section else "?"
        if r.ok:
            dec = "-" if r.decision is None else ("ANOMALY" if r.decision else "normal")
            nrm = "-" if r.normalised is None else f"{r.normalised:.2f}"
            rows.append((str(r.path), key, f"{r.score:.6g}", nrm, dec))
        else:
            rows.append((str(r.path), key, "-", "ERROR", "-"))
            errors.append(f"  {r.path}: {r.error}")
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    n_ok = sum(r.ok for r in records)
    n_anom = sum(1 for r in records if r.ok and r.decision == 1)
    lines.append(
        f"{len(records)} file(s): {n_ok} scored, {n_anom} anomalous, {len(records) - n_ok} error(s)"
    )
    if errors:
        lines += ["errors:", *errors]
    return "\n".join(lines)
