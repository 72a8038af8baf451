"""Robustness to background noise: Ω of a detector on test clips mixed with recordings at given SNRs.

::

    curve = evaluate_under_noise(det, "data/dcase2023t2", "plant_noise/", snrs=[20, 10, 0])
    curve.rows            # [{"snr_db": inf, "official_score": …}, {"snr_db": 20.0, …}, …]
    curve.write("runs/x/robustness")     # robustness.json + robustness.csv

**SNR definition** (not in the paper; stated so that figures are comparable):
``SNR_dB = 20 · log10(RMS(clip) / RMS(g · noise))`` with RMS over the whole clip, after both are
at the detector's sample rate. ``noise`` is one noise recording, chosen and offset per clip by a
generator seeded with ``(seed, CRC-32 of "<machine>/<section>/<clip file name>")``: the recording is looped (tiled) when
shorter than the clip and cropped from the chosen offset; ``g`` is then set to give the SNR
exactly. The same noise segment is used for a clip at every SNR (only ``g`` changes), so the
curve isolates the level. The mixture ``clip + g · noise`` is not clipped or renormalised.
Clean (no noise) is evaluated too, as ``snr_db = inf``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stetho.data import AUDIO_EXTENSIONS, Clip, group_by_key, load_audio, scan_dataset
from stetho.detector import BaseDetector
from stetho.evaluation import EvaluationResult, MetricError, evaluate, truth_from_clips
from stetho.utils.errors import InputError, StethoError
from stetho.utils.io import atomic_write_text

__all__ = [
    "NoiseError",
    "RobustnessCurve",
    "evaluate_under_noise",
    "list_noise_files",
    "mix_at_snr",
    "noise_segment",
]

logger = logging.getLogger(__name__)

#: File names written by :meth:`RobustnessCurve.write`.
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_CSV = "robustness.csv"


class NoiseError(StethoError, ValueError):
    """Noise recordings missing, silent or unreadable, or a silent clip (SNR undefined)."""


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def mix_at_snr(clip: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clip + g · noise`` (N,) float32 with ``20·log10(RMS(clip) / RMS(g·noise)) = snr_db``.

    Args:
        clip: Waveform (N,).
        noise: Noise (N,), same length and rate.
        snr_db: Target SNR in dB; ``inf`` returns the clip unchanged.

    Raises:
        NoiseError: Different lengths, or a silent clip or noise (SNR undefined).
    """
    x = np.asarray(clip, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    if x.shape != n.shape or x.ndim != 1:
        raise NoiseError(f"clip {x.shape} and noise {n.shape} must be 1-D of equal length")
    if math.isinf(snr_db) and snr_db > 0:
        return x.astype(np.float32)
    rx, rn = _rms(x), _rms(n)
    if rx == 0.0 or rn == 0.0:
        raise NoiseError(f"SNR undefined: RMS of clip {rx:g}, of noise {rn:g}")
    gain = rx / (rn * 10.0 ** (snr_db / 20.0))
    return (x + gain * n).astype(np.float32)


def list_noise_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files (``.wav``/``.flac``…) under ``folder``, recursively, sorted by path.

    Raises:
        NoiseError: The folder does not exist or holds no audio file.
    """
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise NoiseError(f"noise folder does not exist: {root}")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        raise NoiseError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    return files


def noise_segment(
    noises: Sequence[np.ndarray], n: int, name: str, seed: int = 0
) -> tuple[int, int, np.ndarray]:
    """The deterministic noise segment (N,) for the clip ``name``.

    A generator seeded with ``(seed, crc32(name))`` picks a recording and a start offset; the
    recording is tiled to cover ``offset + n`` samples and cropped.

    Returns:
        ``(recording index, offset, segment)``.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    i = int(rng.integers(len(noises)))
    rec = noises[i]
    offset = int(rng.integers(rec.shape[0]))
    reps = -(-(offset + n) // rec.shape[0])  # ceil
    return i, offset, np.tile(rec, reps)[offset : offset + n]


@dataclass
class RobustnessCurve:
    """Ω (and the other aggregates) per SNR.

    Attributes:
        rows: One dict per SNR (clean first): ``snr_db``, ``official_score``,
            ``arithmetic_mean``, ``auc_source_hmean``, ``auc_target_hmean``, ``pauc_hmean``,
            ``partial``.
        n_clips: Test clips evaluated at every SNR.
        noise_files: The recordings used.
        seed: Noise-selection seed.
        results: The full evaluation per SNR (same order as ``rows``).
    """

    rows: list[dict[str, Any]]
    n_clips: int
    noise_files: list[str]
    seed: int
    results: list[EvaluationResult] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``inf`` SNR written as ``null``)."""
        rows = [
            {**r, "snr_db": None if math.isinf(r["snr_db"]) else r["snr_db"]} for r in self.rows
        ]
        return {
            "snr_definition": "20*log10(RMS(clip)/RMS(noise)), RMS over the whole clip; "
            "snr_db null = clean",
            "n_clips": self.n_clips,
            "noise_files": self.noise_files,
            "seed": self.seed,
            "rows": rows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustnessCurve:
        """Rebuild from :meth:`to_dict` (e.g. a loaded ``robustness.json``)."""
        rows = [
            {**r, "snr_db": math.inf if r["snr_db"] is None else float(r["snr_db"])}
            for r in data["rows"]
        ]
        return cls(rows, int(data["n_clips"]), list(data["noise_files"]), int(data["seed"]))

    def table(self) -> str:
        """Markdown table, one row per SNR."""
        lines = [
            "| SNR (dB) | Ω | a-mean | AUC src (h) | AUC tgt (h) | pAUC (h) |",
            "|---" * 6 + "|",
        ]
        for r in self.rows:

            def f(k: str, r: dict[str, Any] = r) -> str:
                return "n/a" if r.get(k) is None else f"{r[k]:.4f}"

            snr = "clean" if math.isinf(r["snr_db"]) else f"{r['snr_db']:g}"
            tag = " (partial)" if r.get("partial") else ""
            lines.append(
                f"| {snr} | {f('official_score')}{tag} | {f('arithmetic_mean')} | "
                f"{f('auc_source_hmean')} | {f('auc_target_hmean')} | {f('pauc_hmean')} |"
            )
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``robustness.json`` and ``robustness.csv`` atomically; returns the paths."""
        out = Path(out_dir)
        data = self.to_dict()
        buf = io.StringIO()
        cols = list(self.rows[0]) if self.rows else ["snr_db"]
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for r in data["rows"]:
            writer.writerow({k: "" if r.get(k) is None else r[k] for k in cols})
        paths = [out / ROBUSTNESS_JSON, out / ROBUSTNESS_CSV]
        atomic_write_text(paths[0], json.dumps(data, indent=2, allow_nan=False) + "\n")
        atomic_write_text(paths[1], buf.getvalue())
        return paths


def _row(snr: float, res: EvaluationResult) -> dict[str, Any]:
    means = res.metric_means()

    def h(metric: str) -> float | None:
        return means.get(metric, {}).get("h-mean")

    return {
        "snr_db": float(snr),
        "official_score": res.official_score,
        "arithmetic_mean": res.arithmetic_mean,
        "auc_source_hmean": h("AUC (source)"),
        "auc_target_hmean": h("AUC (target)"),
        "pauc_hmean": h("pAUC (source, target)"),
        "partial": res.partial,
    }


def _noise_id(clip: Clip) -> str:
    """What the per-clip noise choice is seeded with: ``<machine>/<section>/<file name>``."""
    return f"{clip.machine}/{clip.section}/{clip.name}"


def _test_clips(
    detector: BaseDetector, data_root: str | os.PathLike[str], partition: str
) -> list[Clip]:
    table = scan_dataset(data_root)
    keys = set(detector.keys)
    clips = [
        c
        for c in table
        if c.split == "test" and c.partition == partition and c.label is not None and c.key in keys
    ]
    if not clips:
        raise InputError(
            f"no labelled {partition} test clips under {data_root} for the detector's "
            f"machine/sections ({', '.join(f'{m}/{s}' for m, s in sorted(keys))})"
        )
    return clips


def evaluate_under_noise(
    detector: BaseDetector,
    data_root: str | os.PathLike[str],
    noise: str | os.PathLike[str],
    snrs: Sequence[float],
    *,
    seed: int = 0,
    partition: Literal["dev", "eval"] = "dev",
    year: int = 2023,
    progress: bool = True,
) -> RobustnessCurve:
    """Evaluate ``detector`` on the labelled test clips, clean and mixed with noise at each SNR.

    Args:
        detector: A fitted detector of any kind (its models and thresholds are used unchanged:
            only the test clips are noisy, as in a plant that got louder after training;
            decisions are the detector's own, :meth:`~stetho.detector.BaseDetector.decisions`).
        data_root: Dataset root with labelled test clips of the detector's machine/sections.
        noise: Folder (searched recursively) or file of background recordings.
        snrs: SNRs in dB (see the module docstring for the definition).
        seed: Seed of the per-clip noise choice.
        partition: Test clips of ``dev`` (labels in the names) or ``eval``.
        year: Evaluation rules (2022+: Ω of AUC source/target and pAUC).
        progress: Progress bar over SNRs.

    Returns:
        A :class:`RobustnessCurve` (clean first, then ``snrs`` in the given order). Small or
        one-class sets are evaluated in partial mode (marked per row).

    Raises:
        NoiseError: No usable noise recording, or a silent clip.
    """
    clips = _test_clips(detector, data_root, partition)
    sr = detector.sample_rate
    files = list_noise_files(noise)
    noises = []
    for f in files:
        rec = load_audio(f, sr=sr)[0]
        if rec.size == 0 or _rms(rec) == 0.0:
            raise NoiseError(f"{f}: silent or empty noise recording (SNR undefined)")
        noises.append(rec)
    # clip names are unique within a machine/section only: key by path
    waves = {c.path: load_audio(c.path, sr=sr)[0] for c in clips}
    segs = {
        c.path: noise_segment(noises, waves[c.path].shape[0], _noise_id(c), seed)[2] for c in clips
    }
    truth = truth_from_clips(clips)
    by_key = group_by_key(clips)
    levels = [math.inf, *[float(s) for s in snrs]]
    rows, results = [], []
    bar = None
    if progress:
        from stetho.utils.progress import progress_bar

        bar = progress_bar(levels, desc="SNR")
    for snr in bar if bar is not None else levels:
        scores: dict[tuple[str, str], dict[str, float]] = {}
        for key, group in by_key.items():
            mixed = [mix_at_snr(waves[c.path], segs[c.path], snr) for c in group]
            values = detector.score_waveforms(mixed, *key)
            scores[key] = {c.name: float(v) for c, v in zip(group, values)}
        decisions = detector.decisions(scores)
        try:
            res = evaluate(scores, truth, decisions, year=year, system=f"snr{snr:g}")
        except MetricError:
            res = evaluate(
                scores, truth, decisions, year=year, system=f"snr{snr:g}", allow_undefined=True
            )
        rows.append(_row(snr, res))
        results.append(res)
        logger.info("SNR %s dB: Ω = %.4f", snr, res.official_score)
    return RobustnessCurve(rows, len(clips), [str(f) for f in files], seed, results)
