"""Score with an exported detector folder through onnxruntime (a :class:`~stetho.detector.Scorer`).

::

    det = OnnxDetector.load("edge/fan-detector")               # or int8=True
    det.score_files(["clip.wav"], "fan", "00")                 # same scores as the torch detector

The embedding network runs in onnxruntime; decoding, resampling, windowing and the k-NN search are
the same code as the torch :class:`~stetho.detector.Detector`, so scores agree to float32
rounding (tested to 1e-4 on real clips). ``stetho detect --engine onnxruntime`` uses this class.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stetho
from stetho.data import AudioError, Clip
from stetho.deploy.onnx_export import ONNX_FORMAT, ONNX_FORMAT_VERSION
from stetho.detector.artifact import DetectorError, check_replaceable, publish_folder, read_meta
from stetho.detector.embedding import WaveInput, as_waveform_list, embed_waveform_list
from stetho.scoring.grouped import scores_by_key
from stetho.scoring.knn import DomainKNNScorer, KNNConfig
from stetho.scoring.threshold import decide_for_key

__all__ = ["OnnxDetector"]

Key = tuple[str, str]


class OnnxDetector:
    """An exported detector: onnxruntime embedding network + k-NN banks + thresholds.

    Args:
        folder: The exported folder (:func:`stetho.deploy.export_onnx`).
        meta: Its parsed ``config.json``.
        session: The onnxruntime session of the chosen model file.
        scorer: The k-NN banks.
        thresholds: Decision threshold per (machine, section).
    """

    def __init__(
        self,
        folder: Path,
        meta: dict[str, Any],
        session: Any,
        scorer: DomainKNNScorer,
        thresholds: dict[Key, float],
    ) -> None:
        self.folder = folder
        self.meta = meta
        self.session = session
        self.scorer = scorer
        self.thresholds = thresholds

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, int8: bool = False, threads: int | None = None
    ) -> OnnxDetector:
        """Open an exported folder.

        Args:
            directory: The folder written by :func:`~stetho.deploy.export_onnx`.
            int8: Use the int8-quantised model (export with ``quantize=True``).
            threads: onnxruntime intra-op threads (default: onnxruntime's choice).

        Raises:
            DetectorError: not an exported folder, missing files, or no int8 model.
        """
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise DetectorError("the onnxruntime engine needs: pip install 'stetho[onnx]'") from err
        from safetensors.torch import load_file

        src = Path(directory)
        meta = read_meta(src, ONNX_FORMAT, ONNX_FORMAT_VERSION)
        name = meta["models"].get("int8" if int8 else "float32")
        if not name:
            raise DetectorError(
                f"{src} has no int8 model; export with `stetho export … --quantize int8`"
            )
        for f in (name, "backend.safetensors", "thresholds.json"):
            if not (src / f).is_file():
                raise DetectorError(f"{src}: missing {f}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(
            str(src / name), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        scorer = DomainKNNScorer(KNNConfig.from_dict(meta["backend"]))
        scorer.load_state_dict(load_file(str(src / "backend.safetensors")))
        tjson = json.loads((src / "thresholds.json").read_text(encoding="utf-8"))
        thresholds = {
            (t["machine"], t["section"]): float(t["threshold"]) for t in tjson["thresholds"]
        }
        return cls(src, meta, session, scorer, thresholds)

    # -- Scorer protocol ---------------------------------------------------------------------
    @property
    def keys(self) -> list[Key]:
        """(machine, section) pairs with memory banks."""
        return self.scorer.keys

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) the embedding network expects."""
        return int(self.meta["sample_rate"])

    @property
    def embed_dim(self) -> int:
        """Size of the k-NN embedding."""
        return int(self.meta["embedding_dim"])

    def window_seconds(self) -> float | None:
        """Scoring window in seconds (``None`` = whole clips)."""
        sec = self.meta.get("window_seconds")
        return None if sec is None else float(sec)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (keys, thresholds, backbone, rate, engine)."""
        return {
            "kind": "onnx-knn-detector",
            "keys": [{"machine": m, "section": s} for m, s in self.keys],
            "thresholds": {f"{m}/{s}": float(t) for (m, s), t in sorted(self.thresholds.items())},
            "backbone": self.meta.get("backbone"),
            "sample_rate": self.sample_rate,
            "engine": "onnxruntime",
            "stetho_version": stetho.__version__,
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"wave": np.ascontiguousarray(x.numpy(), np.float32)})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def embed_waveforms(self, waves: WaveInput, sample_rate: int | None = None) -> np.ndarray:
        """k-NN embeddings (B, E) of mono waveforms (resampled if ``sample_rate`` differs)."""
        items = as_waveform_list(waves, sample_rate, self.sample_rate)
        return embed_waveform_list(
            items,
            self._forward,
            self.embed_dim,
            int(self.meta["batch_size"]),
            self.meta.get("window_samples"),
            self.meta.get("hop_samples"),
        )

    def embed_files(
        self, paths: Sequence[str | os.PathLike[str]], *, num_workers: int = 0
    ) -> np.ndarray:
        """k-NN embeddings (M, E) of audio files (decoded in ``num_workers`` threads)."""
        from stetho.data.prefetch import decode_files

        waves = []
        for i, wave, error in decode_files(paths, self.sample_rate, num_workers=num_workers):
            if wave is None:
                raise AudioError(error or f"cannot decode {paths[i]}")
            waves.append(wave)
        if not waves:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.embed_waveforms(waves)

    def score_waveforms(
        self,
        waves: np.ndarray | Sequence[np.ndarray],
        machine: str,
        section: str,
        sample_rate: int | None = None,
    ) -> np.ndarray:
        """Anomaly scores (B,) of waveforms of one machine/section."""
        self.scorer.require_key((machine, section))
        return self.scorer.score(self.embed_waveforms(waves, sample_rate), (machine, section))

    def score_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        machine: str,
        section: str,
        *,
        progress: bool = False,
        num_workers: int = 0,
    ) -> np.ndarray:
        """Anomaly scores (M,) of audio files of one machine/section."""
        self.scorer.require_key((machine, section))
        emb = self.embed_files(paths, num_workers=num_workers)
        return self.scorer.score(emb, (machine, section))

    def score_clips(
        self, clips: Iterable[Clip], *, progress: bool = False
    ) -> dict[Key, dict[str, float]]:
        """Scores grouped as ``{(machine, section): {file name: score}}``."""
        return scores_by_key(clips, lambda paths, key: self.score_files(paths, *key))

    def decide(self, scores: np.ndarray | Sequence[float], key: Key | str) -> np.ndarray:
        """Decisions (M,) int, 1 = anomalous (``score > threshold``)."""
        return decide_for_key(self.thresholds, scores, key)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Copy the exported folder to ``directory`` atomically (thresholds as held now)."""
        dest = Path(directory)
        if dest.resolve() == self.folder.resolve():
            raise DetectorError(f"{dest} is the folder this detector was loaded from")
        check_replaceable(dest, ONNX_FORMAT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            for f in self.folder.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
            thresholds = [
                {"machine": m, "section": s, "threshold": float(t)}
                for (m, s), t in sorted(self.thresholds.items())
            ]
            (tmp / "thresholds.json").write_text(
                json.dumps({"thresholds": thresholds}, indent=2) + "\n", encoding="utf-8"
            )
            publish_folder(tmp, dest, ONNX_FORMAT)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest
