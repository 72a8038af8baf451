# Over 500 lines would split it: the contract's shared half (scoring, decisions, thresholds,
# calibration, identity, persistence) is one piece that every detector kind inherits.
"""The detector contract: what every kind of saved detector does, implemented once.

Every detector — the training-free few-shot ensemble (``stetho train``'s default), the fine-tuned
or frozen k-NN detector, the autoencoder baseline and the ONNX export of any of them — follows
one path for a clip::

    audio file ──decode──▶ waveform at ``sample_rate`` ──embed()──▶ features (kind-specific)
        ──score_features(feats, key)──▶ raw score ──decide()──▶ 0/1   (score > threshold)

A kind implements only the parts that differ (:class:`BaseDetector`'s abstract methods):

* ``embed(waves)`` — features of waveforms at :attr:`sample_rate` (rows = clips);
* ``score_features(feats, key)`` — anomaly scores, higher = more anomalous;
* ``_fit_key(key, clips, mode)`` — build (or re-build) the banks of one (machine, section) and
  return the *held-out* scores of the bank's own clips (leave-one-out), from which the threshold
  and the normalised score are fitted;
* ``_write_parts(folder)`` / ``_read_parts(folder, meta, options)`` — the kind's own files.

Everything else is shared here: decoding files (threads, bounded look-ahead), chunking, grouping
by (machine, section), decisions (the *only* place a score is compared with a threshold),
thresholds with a stated false-alarm rate, calibration on new normal recordings (never replacing a
working detector with a broken one), ``describe()`` (id, version, kind, members, thresholds),
saving (atomic, with a SHA-256 manifest) and loading through the registry of saved formats
(:func:`stetho.detector.load_detector`).
"""

from __future__ import annotations

import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np

import stetho
from stetho.data import AudioError, Clip, group_by_key
from stetho.data.names import Key, as_key
from stetho.detector.artifact import DetectorError, read_meta
from stetho.scoring.threshold import ThresholdConfig, decide_for_key
from stetho.utils.artifact import write_folder
from stetho.utils.errors import InputError, NotFoundError
from stetho.utils.io import atomic_write_text

__all__ = [
    "BaseDetector",
    "CalibrationMode",
    "Features",
    "Nearest",
]

logger = logging.getLogger(__name__)

#: Rows = clips. A float array (B, E) for embedding kinds, an object array of per-clip arrays
#: for kinds that keep frames (the autoencoder).
Features = np.ndarray

#: ``"replace"``: the new recordings become the key's only bank (the machine changed for good);
#: ``"add"``: they join the key's banks as a new domain and the old banks stay (both normal).
CalibrationMode = Literal["replace", "add"]

_CLIP_CHUNK = 64  # clips decoded and embedded at once when scoring many files
#: Fewest recordings a calibration accepts per machine/section: one clip has no held-out score.
MIN_CALIBRATION_CLIPS = 2


@dataclass(frozen=True)
class Nearest:
    """The bank clip nearest to a query (``ref`` is its recording path when the bank knows it)."""

    ref: str | None
    distance: float
    domain: str = "source"


@dataclass
class _Held:
    """Held-out normal scores of one key (what thresholds and normalised scores are fitted on)."""

    scores: np.ndarray
    fit: dict[str, Any] = field(default_factory=dict)


class BaseDetector(ABC):
    """Shared half of every detector kind (see the module docstring).

    Subclasses set :attr:`kind` (user-facing name), :attr:`format` and :attr:`format_version`
    (the ``config.json`` tag of their folders) and implement the abstract methods.

    Attributes:
        thresholds: Decision threshold per (machine, section) (``score > threshold`` is anomalous).
        threshold_cfg: How thresholds are fitted (rule, false-alarm rate α).
        detector_id: Stable identity kept across calibrations.
        version: 1 for a new detector, +1 per calibration.
        calibrations: Log of the calibrations that produced this version.
    """

    kind: ClassVar[str] = "detector"
    format: ClassVar[str] = ""
    format_version: ClassVar[int] = 1

    def __init__(
        self,
        threshold_cfg: ThresholdConfig | None = None,
        *,
        detector_id: str | None = None,
        version: int = 1,
        calibrations: list[dict[str, Any]] | None = None,
    ) -> None:
        self._threshold_cfg = threshold_cfg or ThresholdConfig()
        self.thresholds: dict[Key, float] = {}
        self.held_out: dict[Key, _Held] = {}
        self.detector_id = detector_id or uuid.uuid4().hex
        self.version = int(version)
        self.calibrations: list[dict[str, Any]] = list(calibrations or [])
        self.source: Path | None = None  # the folder it was loaded from, if any

    @property
    def threshold_cfg(self) -> ThresholdConfig:
        """The threshold rule (kinds with an experiment config read its ``threshold`` section)."""
        cfg: Any = getattr(self, "cfg", None)
        return cfg.threshold if hasattr(cfg, "threshold") else self._threshold_cfg

    @threshold_cfg.setter
    def threshold_cfg(self, value: ThresholdConfig) -> None:
        cfg: Any = getattr(self, "cfg", None)
        if hasattr(cfg, "threshold"):
            cfg.threshold = value
        self._threshold_cfg = value

    # -- what a kind implements --------------------------------------------------------------
    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate (Hz) :meth:`embed` expects; files and waveforms are resampled to it."""

    @property
    @abstractmethod
    def keys(self) -> list[Key]:
        """(machine, section) pairs the detector has a model for."""

    @abstractmethod
    def embed(self, waves: list[np.ndarray]) -> Features:
        """Features (rows = clips) of mono float32 waveforms at :attr:`sample_rate`."""

    @abstractmethod
    def score_features(self, feats: Features, key: Key) -> np.ndarray:
        """Raw anomaly scores (M,) float64 of features of one (machine, section)."""

    @abstractmethod
    def _fit_key(
        self, key: Key, clips: list[Clip], mode: CalibrationMode, progress: bool
    ) -> np.ndarray:
        """(Re)build the model of ``key`` from normal ``clips``; return held-out scores (N,).

        ``mode="add"`` keeps the existing model of ``key`` and adds the clips to it.
        """

    @abstractmethod
    def _write_parts(self, folder: Path) -> dict[str, Any]:
        """Write the kind's own files into ``folder``; return its entries for ``config.json``."""

    @classmethod
    @abstractmethod
    def _read_parts(
        cls, folder: Path, meta: dict[str, Any], options: dict[str, Any]
    ) -> BaseDetector:
        """Rebuild a detector of this kind from its folder (files already hash-checked)."""

    def _forget(self, key: Key) -> None:
        """Drop the model of ``key`` (:meth:`fit` with ``replace``); kinds with models override."""
        raise NotImplementedError(f"{type(self).__name__} cannot drop the model of {key}")

    def nearest(self, feats: Features, key: Key) -> list[Nearest | None]:
        """The bank clip nearest to each row of ``feats`` (``None`` where the kind has no bank)."""
        return [None] * len(feats)

    def window_seconds(self) -> float | None:
        """Default scoring window for streams (``None``: the detector has no preference)."""
        return None

    def _describe_kind(self) -> dict[str, Any]:
        """Kind-specific entries of :meth:`describe` (members, backbone, …)."""
        return {}

    # -- decoding and embedding (shared) -----------------------------------------------------
    def require_key(self, key: Key | str) -> Key:
        """``key`` as a tuple, or :class:`NotFoundError` listing the keys this detector knows."""
        k = as_key(key)
        if k not in self.keys:
            known = ", ".join(f"{m}/{s}" for m, s in self.keys) or "none"
            raise NotFoundError(
                f"this detector has no model for {k[0]}/{k[1]}; fitted keys: {known} (train or "
                "fit a detector on that machine's normal recordings)"
            )
        return k

    def embed_waveforms(self, waves: Any, sample_rate: int | None = None) -> Features:
        """Features of waveforms (``(N,)``, ``(B, N)`` or a list) at ``sample_rate``.

        Raises:
            ValueError: a waveform that is empty, not 1-D float or not finite.
        """
        from stetho.detector.embedding import as_waveform_list

        items = as_waveform_list(waves, sample_rate, self.sample_rate)
        return self.embed([t.numpy() for t in items])

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        progress: bool = False,
        num_workers: int = 0,
    ) -> Features:
        """Features of audio files, decoded (``num_workers`` threads) and resampled.

        Raises:
            AudioError: a file cannot be decoded; ValueError: audio the model cannot take
                (e.g. too short). Both messages name the file.
        """
        from stetho.data.prefetch import decode_files

        parts: list[Features] = []
        bar = _progress(len(paths), "embedding") if progress else None
        names: list[str | os.PathLike[str]] = []
        waves: list[np.ndarray] = []
        decoded = decode_files(
            paths, self.sample_rate, num_workers=num_workers, loader=self._loader()
        )
        for n, (i, wave, error) in enumerate(decoded, start=1):
            if wave is None:
                raise AudioError(error or f"{paths[i]}: cannot decode")
            names.append(paths[i])
            waves.append(np.asarray(wave, dtype=np.float32))
            if len(waves) == _CLIP_CHUNK or n == len(paths):
                parts.append(self._embed_named(names, waves))
                if bar is not None:
                    bar.update(len(waves))
                names, waves = [], []
        if bar is not None:
            bar.close()
        if not parts:
            return self.embed([])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _loader(self) -> Any:
        """Waveform loader for :func:`decode_files` (``None``: :func:`stetho.data.load_audio`)."""
        return None

    def _embed_named(self, paths: Sequence[Any], waves: list[np.ndarray]) -> Features:
        """:meth:`embed`; audio the model cannot take names its file."""
        try:
            return self.embed(waves)
        except ValueError:
            sr = self.sample_rate
            for path, wave in zip(paths, waves):
                try:
                    self.embed([wave])
                except ValueError as err:
                    n = int(wave.shape[0])
                    raise InputError(
                        f"{path}: cannot score this audio ({n} samples = {n / sr:.3g} s at "
                        f"{sr} Hz): {err}"
                    ) from err
            raise

    # -- scoring (shared) --------------------------------------------------------------------
    def score_waveforms(
        self, waves: Any, machine: str, section: str, sample_rate: int | None = None
    ) -> np.ndarray:
        """Raw anomaly scores (B,) of waveforms of one machine/section (higher = more anomalous)."""
        key = self.require_key((machine, section))  # fail before the expensive embedding
        return self.score_features(self.embed_waveforms(waves, sample_rate), key)

    def score_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        machine: str,
        section: str,
        *,
        progress: bool = False,
        num_workers: int = 0,
    ) -> np.ndarray:
        """Raw anomaly scores (M,) of audio files of one machine/section."""
        key = self.require_key((machine, section))
        if not len(paths):
            return np.zeros(0)
        feats = self.embed_files(paths, progress=progress, num_workers=num_workers)
        return self.score_features(feats, key)

    def score_clips(
        self, clips: Iterable[Clip], *, progress: bool = False
    ) -> dict[Key, dict[str, float]]:
        """Scores grouped as ``{(machine, section): {file name: score}}``."""
        out: dict[Key, dict[str, float]] = {}
        for key, group in group_by_key(clips).items():
            values = self.score_files([c.path for c in group], *key, progress=progress)
            out[key] = {c.name: float(v) for c, v in zip(group, values)}
        return out

    # -- decisions: the one place a score meets a threshold ----------------------------------
    def decide(self, scores: np.ndarray | Sequence[float], key: Key | str) -> np.ndarray:
        """Decisions (M,) int, 1 = anomalous (``score > threshold`` of ``key``)."""
        return decide_for_key(self.thresholds, scores, key)

    def decisions(self, scores: dict[Key, dict[str, float]]) -> dict[Key, dict[str, int]]:
        """Decisions for grouped scores, in the same layout."""
        out: dict[Key, dict[str, int]] = {}
        for key, named in scores.items():
            names = list(named)
            dec = self.decide(np.array([named[n] for n in names]), key)
            out[key] = {n: int(d) for n, d in zip(names, dec)}
        return out

    def normalise(self, scores: np.ndarray | Sequence[float], key: Key | str) -> np.ndarray:
        """Normalised scores (M,): 0 = the median normal clip, 1.0 = the threshold.

        :func:`stetho.scoring.calibration.normalised_score` on the key's held-out normal scores
        (linear up to the threshold, logarithmic above it), so every machine and kind shares one
        scale; above 1 exactly when :meth:`decide` says anomalous. NaN where the key has no
        finite threshold or no held-out scores.
        """
        from stetho.scoring.calibration import normalised_score

        k = as_key(key)
        raw = np.asarray(scores, dtype=np.float64).reshape(-1)
        thr = self.thresholds.get(k)
        held = self.held_out.get(k)
        if thr is None or not np.isfinite(thr) or held is None:
            return np.full(raw.shape, np.nan)
        try:
            return np.asarray(normalised_score(raw, held.scores, thr), dtype=np.float64)
        except ValueError:  # no finite held-out score
            return np.full(raw.shape, np.nan)

    # -- fitting, thresholds, calibration (shared) -------------------------------------------
    def fit(self, clips: Iterable[Clip], *, replace: bool = True, progress: bool = False) -> Self:
        """Build the (machine, section) models from normal training clips, and the thresholds.

        Args:
            clips: Normal training clips.
            replace: Drop every model first (default); ``False`` keeps the models of keys that
                ``clips`` do not cover (the keys they cover are rebuilt).
            progress: Progress bars.

        Raises:
            InputError: no clips, or anomalous / test clips among them.
        """
        clips = list(clips)
        if not clips:
            raise InputError(f"{type(self).__name__}.fit needs at least one normal clip")
        bad = [c.name for c in clips if c.label == "anomaly" or c.split == "test"]
        if bad:
            raise InputError(f"fit takes normal training clips only; got e.g. {bad[:3]}")
        groups = group_by_key(clips)
        if replace:
            for key in [k for k in self.keys if k not in groups]:
                self._forget(key)
                self.thresholds.pop(key, None)
                self.held_out.pop(key, None)
        for key, group in groups.items():
            held = self._fit_key(key, group, "replace", progress)
            self._set_threshold(key, held)
        return self

    def _set_threshold(self, key: Key, held: np.ndarray) -> None:
        """Fit the threshold of ``key`` on its held-out normal scores (warns, never raises)."""
        held = np.asarray(held, dtype=np.float64).reshape(-1)
        try:
            value, record = _fit_threshold(held, self.threshold_cfg)
        except ValueError as err:
            logger.warning("%s/%s: %s; threshold set to +inf (never anomalous)", *key, err)
            self.thresholds[key] = float("inf")
            self.held_out[key] = _Held(held, {"error": str(err)})
            return
        self.thresholds[key] = value
        self.held_out[key] = _Held(held, record)

    def fit_thresholds(self, keys: Sequence[Key] | None = None) -> dict[Key, float]:
        """Re-fit thresholds of ``keys`` (default all) on the stored held-out scores."""
        for key in keys if keys is not None else list(self.held_out):
            held = self.held_out.get(as_key(key))
            if held is not None:
                self._set_threshold(as_key(key), held.scores)
        return dict(self.thresholds)

    def calibrate(
        self,
        files: Mapping[Key, Sequence[str | os.PathLike[str]]],
        *,
        mode: CalibrationMode = "replace",
        note: str | None = None,
        progress: bool = False,
    ) -> Self:
        """Re-fit the models and thresholds of the given keys on new normal recordings.

        The result is a new version of the same detector (id kept, version + 1). Checked first,
        so a failed calibration leaves the detector unchanged: unknown keys, fewer than
        :data:`MIN_CALIBRATION_CLIPS` recordings, recordings that are silent or identical (their
        held-out scores would all be equal), or a threshold that comes out non-finite.

        Raises:
            InputError / NotFoundError: as above (the message names the key and what to do).
        """
        if mode not in ("replace", "add"):
            raise InputError(f"calibration mode must be 'replace' or 'add', got {mode!r}")
        checked = self._check_calibration_files(files)
        before = {k: (self.thresholds.get(k), self.held_out.get(k)) for k in checked}
        snapshot = self._snapshot(list(checked))
        try:
            for key, paths in checked.items():
                clips = [_calibration_clip(p, key, mode) for p in paths]
                held = self._fit_key(key, clips, mode, progress)
                _check_held_out(key, held, paths)
                self._set_threshold(key, held)
                if not np.isfinite(self.thresholds[key]):
                    raise InputError(
                        f"{key[0]}/{key[1]}: the new recordings give no finite threshold; "
                        "record more normal operation (see docs/thresholds.md)"
                    )
        except BaseException:
            self._restore(snapshot)
            for k, (thr, held_old) in before.items():
                _restore_threshold(self, k, thr, held_old)
            raise
        self.version += 1
        self.calibrations.append(
            {
                "version": self.version,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "mode": mode,
                "keys": {f"{m}/{s}": len(checked[(m, s)]) for m, s in checked},
                "thresholds": {f"{m}/{s}": float(self.thresholds[(m, s)]) for m, s in checked},
                "note": note,
            }
        )
        return self

    def _check_calibration_files(
        self, files: Mapping[Key, Sequence[str | os.PathLike[str]]]
    ) -> dict[Key, list[Path]]:
        if not files:
            raise InputError("no calibration recordings given")
        out: dict[Key, list[Path]] = {}
        for key, paths in files.items():
            k = self.require_key(key)
            if len(paths) < MIN_CALIBRATION_CLIPS:
                raise InputError(
                    f"{k[0]}/{k[1]}: {len(paths)} calibration recording(s); at least "
                    f"{MIN_CALIBRATION_CLIPS} are needed (one clip has no held-out score to fit "
                    "a threshold on) and 20 or more give a reliable false-alarm rate"
                )
            out[k] = [Path(p) for p in paths]
        return dict(sorted(out.items()))

    def _snapshot(self, keys: list[Key]) -> Any:
        """State of ``keys`` that :meth:`_restore` puts back after a failed calibration."""
        import copy

        return copy.deepcopy(self._key_state(keys))

    def _key_state(self, keys: list[Key]) -> Any:
        """The kind's model state of ``keys`` (override with :meth:`_set_key_state`)."""
        return None

    def _restore(self, snapshot: Any) -> None:
        if snapshot is not None:
            self._set_key_state(snapshot)

    def _set_key_state(self, state: Any) -> None:
        """Put back what :meth:`_key_state` returned."""
        return None

    # -- identity ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: id, version, kind, keys, thresholds (with α and n), rate."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "format": self.format,
            "id": self.detector_id,
            "version": self.version,
            "keys": [{"machine": m, "section": s} for m, s in self.keys],
            "thresholds": {f"{m}/{s}": float(t) for (m, s), t in sorted(self.thresholds.items())},
            "threshold_rule": self.threshold_cfg.to_dict(),
            "threshold_fits": {
                f"{m}/{s}": h.fit for (m, s), h in sorted(self.held_out.items()) if h.fit
            },
            "sample_rate": int(self.sample_rate),
            "stetho_version": stetho.__version__,
        }
        out.update(self._describe_kind())
        return out

    # -- persistence (shared) ----------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the detector folder atomically (an existing folder of this format is replaced).

        Raises:
            DetectorError: ``directory`` exists and is not a detector folder of this format.
        """
        import json

        dest = Path(directory)
        with write_folder(dest, self.format) as tmp:
            kind_meta = self._write_parts(tmp)
            self._write_thresholds(tmp)
            meta = {
                **kind_meta,  # the kind's entries never override the contract's own
                "format": self.format,
                "format_version": self.format_version,
                "kind": self.kind,
                "id": self.detector_id,
                "version": self.version,
                "calibrations": self.calibrations,
                "stetho_version": stetho.__version__,
            }
            atomic_write_text(tmp / "config.json", json.dumps(meta, indent=2) + "\n")
        logger.info("%s saved to %s", self.kind, dest)
        return dest

    def _write_thresholds(self, folder: Path) -> None:
        import json

        rows = []
        for (m, s), t in sorted(self.thresholds.items()):
            held = self.held_out.get((m, s))
            rows.append(
                {
                    "machine": m,
                    "section": s,
                    "threshold": float(t),
                    "fit": held.fit if held is not None else {},
                    "held_out": [] if held is None else [float(v) for v in held.scores],
                }
            )
        doc = {"config": self.threshold_cfg.to_dict(), "thresholds": rows}
        atomic_write_text(folder / "thresholds.json", json.dumps(doc, indent=2) + "\n")

    def _read_thresholds(self, folder: Path, *, nonnegative: bool = False) -> None:
        from stetho.detector.files import read_thresholds_doc

        self.thresholds, held = read_thresholds_doc(folder / "thresholds.json", nonnegative)
        self.held_out = {
            k: _Held(np.asarray(v[0], dtype=np.float64), v[1]) for k, v in held.items()
        }

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **options: Any) -> BaseDetector:
        """Rebuild a saved detector of this kind (identical scores); files are hash-checked.

        Raises:
            DetectorError: not a folder of this kind, missing, damaged or altered files.
        """
        src = Path(directory)
        meta = read_meta(src, cls.format, cls.format_version)
        return cls._from_meta(src, meta, options)

    @classmethod
    def _from_meta(cls, src: Path, meta: dict[str, Any], options: dict[str, Any]) -> BaseDetector:
        _require_listed(src)
        det = cls._read_parts(src, meta, options)
        det.detector_id = str(meta.get("id") or src.resolve().name)
        det.version = int(meta.get("version", 1))
        det.calibrations = list(meta.get("calibrations", []))
        det.source = src
        return det


def _fit_threshold(held: np.ndarray, cfg: ThresholdConfig) -> tuple[float, dict[str, Any]]:
    """Threshold of held-out normal scores and what it promises (α, n, rank, …)."""
    from stetho.scoring.threshold import fit_threshold, fit_threshold_info

    try:
        info = fit_threshold_info(held, cfg)
    except InputError as err:  # too few or identical held-out scores (e.g. a bank of 2 clips)
        value = float(fit_threshold(held, cfg))  # the largest score; raises if none is finite
        logger.warning("threshold: %s; using the largest held-out score %.6g", err, value)
        n = int(np.isfinite(held).sum())
        return value, {"method": cfg.method, "n": n, "achievable": False, "note": str(err)}
    if not info.achievable:
        logger.warning(
            "threshold: %d held-out normal score(s) cannot promise a false-alarm rate of %s; "
            "about %s are needed",
            int(held.size),
            info.alpha,
            info.n_needed,
        )
    return float(info.value), _jsonable(info.to_dict())


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, tuple | list):
            v = [x.item() if isinstance(x, np.generic) else x for x in v]
        out[k] = v
    return out


def _progress(total: int, desc: str) -> Any:
    from stetho.utils.progress import progress_bar

    return progress_bar(total=total, desc=desc)


def _calibration_clip(path: Path, key: Key, mode: CalibrationMode) -> Clip:
    # new recordings of a known machine: normal training clips of a new (target) domain in "add"
    return Clip(
        path=path,
        machine=key[0],
        section=key[1],
        domain="target" if mode == "add" else "source",
        split="train",
        label="normal",
        name=path.name,
        partition="dev",
        year=None,
        attributes=None,
    )


def _check_held_out(key: Key, held: np.ndarray, paths: Sequence[Path]) -> None:
    """Refuse calibration recordings that are silent or copies of each other.

    Their held-out scores are then all equal (every clip is at the same distance from the
    others). With two clips that holds for any recordings (one distance, both ways), so two are
    accepted as they are.
    """
    finite = np.asarray(held, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < MIN_CALIBRATION_CLIPS:
        raise InputError(
            f"{key[0]}/{key[1]}: the {len(paths)} calibration recording(s) (e.g. {paths[0]}) "
            "give no finite held-out score; record the machine running normally"
        )
    scale = max(1.0, float(np.abs(finite).max(initial=0.0)))
    if finite.size >= 3 and np.ptp(finite) <= 1e-9 * scale:
        raise InputError(
            f"{key[0]}/{key[1]}: the {len(paths)} calibration recording(s) (e.g. {paths[0]}) "
            "are silent or identical to each other, so no false-alarm rate can be fitted on "
            "them; record the machine running normally"
        )


def _restore_threshold(det: BaseDetector, key: Key, thr: float | None, held: Any) -> None:
    if thr is None:
        det.thresholds.pop(key, None)
    else:
        det.thresholds[key] = thr
    if held is None:
        det.held_out.pop(key, None)
    else:
        det.held_out[key] = held


#: Files a detector reads: each must be listed (with its SHA-256) in the folder's manifest.
_READ_SUFFIXES = (".onnx", ".safetensors", ".json", ".pt", ".bin")


def _require_listed(src: Path) -> None:
    """Refuse a folder holding a model, bank or settings file its manifest does not list."""
    import json

    from stetho.utils.io import MANIFEST_NAME, folder_files

    path = src / MANIFEST_NAME
    if not path.is_file():
        return  # pre-manifest folders: read_meta already decided (warned or refused)
    listed = set(json.loads(path.read_text(encoding="utf-8")).get("files", {}))
    extra = [
        f for f in folder_files(src)
        if f != MANIFEST_NAME and f.endswith(_READ_SUFFIXES) and f not in listed
    ]  # fmt: skip
    if extra:
        raise DetectorError(
            f"{src / extra[0]}: not listed in {path}, so its integrity cannot be checked; the "
            "folder was changed after it was saved (save or export the detector again)"
        )
