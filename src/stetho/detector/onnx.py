"""Exported detectors: the same kind, with its network run by onnxruntime.

``stetho export`` (:func:`stetho.deploy.export_onnx`) turns the network part of a detector into
ONNX graphs — the k-NN detector's backbone + head, or each few-shot member's front-end + pooling —
and keeps everything else as arrays: memory banks, standardisation, z-normalisation, fusion
weights and thresholds. Loading an export gives the *same kind* of detector, subclassed here so
that only the feature computation differs: banks, scores, decisions, normalised scores,
calibration and ``nearest`` are the contract's code, so an export scores like its source (to
float32 rounding) and every command works with it.

Folder (``config.json`` format ``stetho-onnx-detector``, version 2; a SHA-256 manifest is
required)::

    config.json        kind "onnx", the source kind and its settings, graph files, rates
    *.onnx             one graph per network (``model.onnx``, or ``member-<i>.onnx``)
    *.int8.onnx        int8 dynamic quantisation of the same (export with --quantize int8)
    backend.safetensors / banks.safetensors, bank_clips.json, thresholds.json   as the source
    manifest.json      SHA-256 of every file, checked on load
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from stetho.detector.artifact import DetectorError, read_meta
from stetho.detector.base import BaseDetector
from stetho.detector.detector import Detector
from stetho.detector.ensemble import EnsembleDetector
from stetho.detector.files import BANK_CLIPS, load_state, read_bank_clips, write_bank_clips
from stetho.scoring.knn import DomainKNNScorer

__all__ = [
    "ONNX_FORMAT",
    "ONNX_FORMAT_VERSION",
    "OnnxEngine",
    "OnnxEnsembleDetector",
    "OnnxKNNDetector",
    "load_onnx_detector",
]

#: ``config.json`` format tag and version of exported folders (1: k-NN only, no manifest).
ONNX_FORMAT = "stetho-onnx-detector"
ONNX_FORMAT_VERSION = 2


class OnnxEngine:
    """One ONNX graph in an onnxruntime session: ``wave`` (B, N) float32 → features (B, D).

    Args:
        path: The ``.onnx`` file.
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise DetectorError("the onnxruntime engine needs: pip install 'stetho[onnx]'") from err
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own types for damaged graphs
            raise DetectorError(f"{path}: not a loadable ONNX graph ({err})") from err
        self.path = path

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(wave, dtype=np.float32))
        return np.asarray(self.session.run(None, {"wave": x})[0])


def _model_file(src: Path, meta: dict[str, Any], name: str, int8: bool) -> Path:
    files = meta.get("models", {}).get(name)
    if not isinstance(files, dict):
        raise DetectorError(f"{src / 'config.json'}: no graph entry {name!r}")
    rel = files.get("int8" if int8 else "float32")
    if not rel:
        raise DetectorError(
            f"{src} has no int8 model; export with `stetho export … --quantize int8`"
        )
    path = Path(str(rel))
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 1:
        raise DetectorError(f"{src / 'config.json'}: graph file {rel!r} lies outside the folder")
    if not (src / path).is_file():
        raise DetectorError(f"{src}: missing {rel}")
    return src / path


def _copy_models(meta: dict[str, Any], src: Path | None, folder: Path) -> None:
    for files in meta.get("models", {}).values():
        for rel in files.values():
            if rel and src is not None:
                shutil.copy2(src / rel, folder / rel)


class OnnxKNNDetector(Detector):
    """A k-NN detector whose backbone + head run as one ONNX graph."""

    kind: ClassVar[str] = "onnx"
    format: ClassVar[str] = ONNX_FORMAT
    format_version: ClassVar[int] = ONNX_FORMAT_VERSION

    def __init__(self, cfg: Any, engine: OnnxEngine, meta: dict[str, Any], **kw: Any) -> None:
        BaseDetector.__init__(self, cfg.threshold)
        self.cfg = cfg
        self.engine = engine
        self.meta = meta
        self.scorer = kw.pop("scorer", None) or DomainKNNScorer(cfg.backend)
        self.device = torch.device("cpu")
        self.backbone = None  # type: ignore[assignment]
        self.head = None  # type: ignore[assignment]
        self.adapter_state = None
        self._waveform_loader = None

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def embed_dim(self) -> int:
        return int(self.meta["embedding_dim"])

    def window_seconds(self) -> float | None:
        sec = self.meta.get("window_seconds")
        return None if sec is None else float(sec)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.engine(x.numpy()).astype(np.float32))

    def _embed_list(self, waves: list[torch.Tensor]) -> np.ndarray:
        from stetho.detector.embedding import embed_waveform_list

        win, hop = self._windows()
        return embed_waveform_list(
            waves, self._forward, self.embed_dim, self.cfg.scoring.batch_size, win, hop
        )

    def _describe_kind(self) -> dict[str, Any]:
        return {**super()._describe_kind(), "engine": "onnxruntime", "exported_from": "knn"}

    def _write_parts(self, folder: Path) -> dict[str, Any]:
        from stetho.detector.files import write_safetensors

        _copy_models(self.meta, self.source, folder)
        write_safetensors(self.scorer.state_dict(), folder / "backend.safetensors")
        write_bank_clips(folder / BANK_CLIPS, self.scorer)
        return {**self.meta, "keys": [f"{m}/{s}" for m, s in self.keys]}

    @classmethod
    def _read_parts(
        cls, folder: Path, meta: dict[str, Any], options: dict[str, Any]
    ) -> OnnxKNNDetector:
        from stetho.config import ExperimentConfig

        cfg = ExperimentConfig.from_dict(meta["experiment"])
        engine = OnnxEngine(
            _model_file(folder, meta, "network", bool(options.get("int8"))), options.get("threads")
        )
        scorer = DomainKNNScorer(cfg.backend)
        if not (folder / "backend.safetensors").is_file():
            raise DetectorError(f"{folder}: missing backend.safetensors")
        load_state(scorer, folder / "backend.safetensors")
        from stetho.detector.detector import _check_bank_dims

        _check_bank_dims(folder / "backend.safetensors", scorer, int(meta["embedding_dim"]))
        read_bank_clips(folder / BANK_CLIPS, scorer)
        det = cls(cfg, engine, meta, scorer=scorer)
        det._read_thresholds(folder, nonnegative=True)
        return det


class OnnxEnsembleDetector(EnsembleDetector):
    """A few-shot ensemble whose members' front-ends + pooling run as ONNX graphs."""

    kind: ClassVar[str] = "onnx"
    format: ClassVar[str] = ONNX_FORMAT
    format_version: ClassVar[int] = ONNX_FORMAT_VERSION

    def __init__(self, cfg: Any, engines: list[OnnxEngine], meta: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.engines = engines
        self.meta = meta

    def _member_rate(self, m: Any) -> int:
        names = [x.name for x in self.ens.members]
        return int(self.meta["member_rates"][names.index(m.name)])

    def _member_features(self, m: Any, waves: list[np.ndarray]) -> np.ndarray:
        j = [x.name for x in self.ens.members].index(m.name)
        rows = [self.engines[j](np.asarray(w, dtype=np.float32)[None, :]) for w in waves]
        if not rows:
            raise ValueError("no waveforms to extract features from")
        return np.concatenate(rows).astype(np.float64)

    def _describe_kind(self) -> dict[str, Any]:
        return {**super()._describe_kind(), "engine": "onnxruntime", "exported_from": "fewshot"}

    def _write_parts(self, folder: Path) -> dict[str, Any]:
        _copy_models(self.meta, self.source, folder)
        parts = super()._write_parts(folder)
        keep = ("models", "member_rates", "source_kind", "opset", "export_check_max_abs_error")
        return {**parts, **{k: self.meta[k] for k in keep if k in self.meta}}

    @classmethod
    def _read_parts(
        cls, folder: Path, meta: dict[str, Any], options: dict[str, Any]
    ) -> OnnxEnsembleDetector:
        from stetho.config import ExperimentConfig

        cfg = ExperimentConfig.from_dict(meta["experiment"])
        if cfg.ensemble is None:
            raise DetectorError(f"{folder / 'config.json'}: an ensemble export without members")
        int8 = bool(options.get("int8"))
        engines = [
            OnnxEngine(_model_file(folder, meta, f"member-{j}", int8), options.get("threads"))
            for j in range(len(cfg.ensemble.members))
        ]
        det = cls(cfg, engines, meta)
        # the banks, weights and thresholds as the source kind reads them (no checkpoints needed)
        template = EnsembleDetector._read_parts(folder, {**meta, "checkpoints": {}}, {})
        det.models = template.models
        det._dims = template._dims
        det.thresholds, det.held_out = template.thresholds, template.held_out
        return det


_BY_SOURCE: dict[str, type[BaseDetector]] = {
    "knn": OnnxKNNDetector,
    "fewshot": OnnxEnsembleDetector,
}


def load_onnx_detector(directory: str | os.PathLike[str], **options: Any) -> BaseDetector:
    """Open an exported folder (manifest required; ``int8=True`` picks the quantised graphs).

    Raises:
        DetectorError: not an export, an export without its manifest (format version 1: export
            again), a missing or altered file, or an unknown source kind.
    """
    src = Path(directory)
    meta = read_meta(src, ONNX_FORMAT, ONNX_FORMAT_VERSION, min_version=2)
    source = meta.get("source_kind")
    cls = _BY_SOURCE.get(str(source))
    if cls is None:
        raise DetectorError(
            f"{src / 'config.json'}: export of unknown kind {source!r} (known: "
            f"{', '.join(_BY_SOURCE)})"
        )
    opts = {k: v for k, v in options.items() if k in ("int8", "threads")}
    det = cls._from_meta(src, meta, opts)
    return det


def export_meta(doc: dict[str, Any]) -> str:
    """``config.json`` text of an export (sorted for stable manifests)."""
    return json.dumps(doc, indent=2) + "\n"
