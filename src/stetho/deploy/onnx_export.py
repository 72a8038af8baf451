"""Export a fitted detector for edge devices: ONNX embedding network + memory banks + thresholds.

::

    export_onnx(Detector.load("runs/x/detector"), "edge/fan-detector", quantize=True)

Folder written (atomically, like a detector folder)::

    config.json          format ``stetho-onnx-detector``, sample rate, scoring window, keys, k-NN
                         and threshold settings, opset, source backbone, stetho version
    model.onnx           waveform (B, N) float32 at ``sample_rate`` → k-NN embedding (B, E);
                         the front-end (STFT, mel, normalisation) is inside the graph
    model.int8.onnx      (``quantize=True``) the same with int8 dynamic quantisation of its
                         matrix products (:func:`quantize_int8`)
    backend.safetensors  the k-NN memory banks (identical to the detector's)
    thresholds.json      the decision thresholds (identical to the detector's)

Decoding, resampling (soxr) and the cutting of clips into scoring windows stay numpy/Python steps
outside the graph, shared with the torch detector (:mod:`stetho.detector.embedding`).
The export is checked before it is published: onnxruntime must reproduce the torch embeddings of
a test batch to 1e-4.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import stetho
from stetho.detector import Detector, DetectorError
from stetho.detector.artifact import check_replaceable, publish_folder
from stetho.utils.io import atomic_write_text

__all__ = ["ONNX_FORMAT", "ONNX_FORMAT_VERSION", "ExportError", "export_onnx"]

logger = logging.getLogger(__name__)

#: ``config.json`` format tag and version of exported folders.
ONNX_FORMAT = "stetho-onnx-detector"
ONNX_FORMAT_VERSION = 1
_OPSET = 18
_CHECK_ATOL = 1e-4


class ExportError(DetectorError):
    """The detector cannot be exported (unsupported model, missing package, failed check)."""


class _EmbeddingNet(nn.Module):
    """waveform (B, N) → ``head.project(backbone.embed(wave))`` (B, E): the detector's forward."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.head.project(self.backbone.embed(wave)).float()


def _example_length(detector: Detector) -> int:
    sec = detector.window_seconds()
    return max(8192, round((sec if sec is not None else 2.0) * detector.sample_rate))


def _export_graph(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    n_min = 4096  # every front-end accepts this; shorter windows are refused before the graph
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=n_min)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                opset_version=_OPSET,
                input_names=["wave"],
                output_names=["embedding"],
                dynamic_shapes=dims,
                optimize=True,
                verbose=False,
            )
        except Exception as err:  # torch.export raises many types; name the model
            raise ExportError(
                f"torch.onnx could not export the {type(net).__name__} network: {err}"
            ) from err
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path))


def _check(path: Path, net: nn.Module, example: torch.Tensor) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # another batch size and length than the example: the dynamic axes must hold
    probe = torch.cat([example, example.flip(-1)[:, : example.shape[1] // 2 + 1001]], dim=1)
    probe = torch.cat([probe, 0.5 * probe.roll(1000, 1)])
    got = sess.run(None, {"wave": probe.numpy()})[0]
    with torch.inference_mode():
        ref = net(probe).numpy()
    err = float(np.abs(got - ref).max())
    if not np.isfinite(err) or err > _CHECK_ATOL:
        raise ExportError(
            f"the exported graph differs from the torch model by {err:.3g} (> {_CHECK_ATOL}) on "
            "a test batch; this backbone does not export faithfully"
        )
    return err


def quantize_int8(src: Path, dest: Path) -> None:
    """int8 dynamic quantisation of the matrix products of ``src`` (MatMul, Gemm).

    Weights are stored int8, activations quantised at run time. Convolutions stay float32: with
    them quantised, mn04's pooled AUC on the 14 real test clips fell from 0.667 to 0.511 and the
    model ran 3x slower in onnxruntime (``docs/benchmarks.md``; not in the paper).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dest), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )


def _require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'stetho[onnx]'")


def _meta(detector: Detector, quantized: bool, check_err: float) -> dict[str, Any]:
    win, hop = detector._windows()
    return {
        "format": ONNX_FORMAT,
        "format_version": ONNX_FORMAT_VERSION,
        "stetho_version": stetho.__version__,
        "sample_rate": detector.sample_rate,
        "window_samples": win,
        "hop_samples": hop,
        "window_seconds": detector.window_seconds(),
        "batch_size": int(detector.cfg.scoring.batch_size),
        "embedding_dim": detector.embed_dim,
        "backend": detector.cfg.backend.to_dict(),
        "threshold": detector.cfg.threshold.to_dict(),
        "backbone": detector.cfg.backbone.name,
        "keys": [f"{m}/{s}" for m, s in detector.keys],
        "opset": _OPSET,
        "frontend": "in-graph",
        "models": {"float32": "model.onnx", "int8": "model.int8.onnx" if quantized else None},
        "export_check_max_abs_error": check_err,
    }


def export_onnx(
    detector: Any, directory: str | os.PathLike[str], *, quantize: bool = False
) -> Path:
    """Write the edge folder of a fitted detector (see the module docstring).

    Args:
        detector: A fitted :class:`~stetho.detector.Detector` (k-NN back-end).
        directory: Output folder; an existing folder is replaced only if it is an export.
        quantize: Also write ``model.int8.onnx`` (int8 dynamic quantisation).

    Returns:
        The folder.

    Raises:
        ExportError: not a k-NN detector (ensembles and the autoencoder baseline are not
            supported), onnx packages missing, or the graph fails the parity check.
    """
    from safetensors.torch import save_file

    if not isinstance(detector, Detector):
        raise ExportError(
            f"ONNX export supports k-NN detectors (stetho.detector.Detector) only, got "
            f"{type(detector).__name__}; ensembles and baselines are not exportable yet"
        )
    if not detector.keys:
        raise ExportError("the detector has no memory banks: fit it before exporting")
    _require_onnx()
    dest = Path(directory)
    check_replaceable(dest, ONNX_FORMAT)
    dest.parent.mkdir(parents=True, exist_ok=True)
    net = _EmbeddingNet(detector).to("cpu").eval()
    gen = torch.Generator().manual_seed(0)
    example = 0.1 * torch.randn(2, _example_length(detector), generator=gen)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        _export_graph(net, example, tmp / "model.onnx")
        err = _check(tmp / "model.onnx", net, example)
        logger.info("ONNX graph matches torch to %.2g", err)
        if quantize:
            quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
        save_file(detector.scorer.state_dict(), str(tmp / "backend.safetensors"))
        thresholds = [
            {"machine": m, "section": s, "threshold": float(t)}
            for (m, s), t in sorted(detector.thresholds.items())
        ]
        atomic_write_text(
            tmp / "thresholds.json",
            json.dumps({"thresholds": thresholds}, indent=2) + "\n",
        )
        meta = _meta(detector, quantize, err)
        atomic_write_text(tmp / "config.json", json.dumps(meta, indent=2) + "\n")
        publish_folder(tmp, dest, ONNX_FORMAT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        detector.backbone.to(detector.device)
        detector.head.to(detector.device)
    logger.info("ONNX detector exported to %s", dest)
    return dest
