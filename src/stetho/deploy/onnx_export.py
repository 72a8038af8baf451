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

from stetho.detector import Detector, DetectorError
from stetho.detector.artifact import check_replaceable, publish_folder

__all__ = ["ONNX_FORMAT", "ONNX_FORMAT_VERSION", "ExportError", "export_onnx"]

from stetho.detector.onnx import ONNX_FORMAT, ONNX_FORMAT_VERSION

logger = logging.getLogger(__name__)

#: ``config.json`` format tag and version of exported folders.
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


class _MemberNet(nn.Module):
    """waveform (B, N) → one few-shot member's pooled features (1, D): front-end + pooling."""

    def __init__(self, backbone: nn.Module, layers: list[int] | None, pool: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = layers
        self.pool = pool

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        from stetho.backbones.features import pool_tokens

        maps = self.backbone.embed_layers(wave, self.layers)  # type: ignore[operator]
        return torch.cat([pool_tokens(m.float(), self.pool) for m in maps], dim=-1)


def _graph(
    net: nn.Module, example: torch.Tensor, tmp: Path, name: str, quantize: bool
) -> tuple[dict[str, str | None], float]:
    _export_graph(net, example, tmp / f"{name}.onnx")
    err = _check(tmp / f"{name}.onnx", net, example)
    files: dict[str, str | None] = {"float32": f"{name}.onnx", "int8": None}
    if quantize:
        quantize_int8(tmp / f"{name}.onnx", tmp / f"{name}.int8.onnx")
        files["int8"] = f"{name}.int8.onnx"
    return files, err


def _knn_export(detector: Any, tmp: Path, quantize: bool) -> Any:
    from stetho.detector.onnx import OnnxEngine, OnnxKNNDetector

    net = _EmbeddingNet(detector).to("cpu").eval()
    gen = torch.Generator().manual_seed(0)
    example = 0.1 * torch.randn(2, _example_length(detector), generator=gen)
    try:
        files, err = _graph(net, example, tmp, "model", quantize)
    finally:
        detector.backbone.to(detector.device)
        detector.head.to(detector.device)
    win, hop = detector._windows()
    meta = {
        "source_kind": "knn",
        "experiment": detector.cfg.to_dict(),
        "sample_rate": detector.sample_rate,
        "window_samples": win,
        "hop_samples": hop,
        "window_seconds": detector.window_seconds(),
        "embedding_dim": detector.embed_dim,
        "backbone": detector.cfg.backbone.name,
        "opset": _OPSET,
        "frontend": "in-graph",
        "models": {"network": files},
        "export_check_max_abs_error": err,
    }
    out = OnnxKNNDetector(
        detector.cfg, OnnxEngine(tmp / "model.onnx"), meta, scorer=detector.scorer
    )
    return out, err


def _fewshot_export(detector: Any, tmp: Path, quantize: bool) -> Any:
    from stetho.detector.onnx import OnnxEngine, OnnxEnsembleDetector

    models: dict[str, dict[str, str | None]] = {}
    rates, errs, engines = [], [], []
    gen = torch.Generator().manual_seed(0)
    for j, m in enumerate(detector.ens.members):
        fx = detector._extractor(m.feature)
        if not hasattr(fx, "backbone") or not isinstance(fx.backbone, nn.Module):
            raise ExportError(
                f"few-shot member {m.name!r} computes its features outside a network "
                "and cannot be put in an ONNX graph; use a detector whose members are "
                "backbone features (e.g. the default log-mel statistics)"
            )
        net = _MemberNet(fx.backbone, m.feature.layers, m.feature.pool).to("cpu").eval()
        example = 0.1 * torch.randn(2, max(8192, 2 * fx.sample_rate), generator=gen)
        files, err = _graph(net, example, tmp, f"member-{j}", quantize)
        models[f"member-{j}"] = files
        rates.append(int(fx.sample_rate))
        errs.append(err)
        engines.append(OnnxEngine(tmp / f"member-{j}.onnx"))
    meta = {
        "source_kind": "fewshot",
        "member_rates": rates,
        "opset": _OPSET,
        "models": models,
        "export_check_max_abs_error": max(errs),
    }
    out = OnnxEnsembleDetector(detector.cfg, engines, meta)
    out.models, out._dims = detector.models, detector._dims
    return out, max(errs)


def export_onnx(
    detector: Any, directory: str | os.PathLike[str], *, quantize: bool = False
) -> Path:
    """Write the edge folder of a fitted detector (see :mod:`stetho.detector.onnx`).

    The networks become ONNX graphs; banks, standardisation, fusion weights and thresholds are
    kept as arrays. Loading the folder (:func:`stetho.load_detector`) gives the same kind of
    detector with onnxruntime computing its features; it is loaded back and checked before it
    is published.

    Args:
        detector: A fitted detector: the few-shot ensemble (default) or a k-NN detector.
        directory: Output folder; an existing folder is replaced only if it is an export.
        quantize: Also write ``*.int8.onnx`` graphs (int8 dynamic quantisation).

    Returns:
        The folder.

    Raises:
        ExportError: a kind without a network to export (the autoencoder baseline, an export),
            onnx packages missing, or a graph that fails the parity check.
    """
    from stetho.detector.ensemble import EnsembleDetector
    from stetho.detector.onnx import ONNX_FORMAT, load_onnx_detector

    if getattr(detector, "kind", None) == "onnx":
        raise ExportError("this detector is already an ONNX export; copy its folder instead")
    if not isinstance(detector, Detector | EnsembleDetector):
        raise ExportError(
            f"a {getattr(detector, 'kind', type(detector).__name__)} detector cannot be exported: "
            "the autoencoder baseline cuts per-section context vectors outside any single "
            "graph. Export the few-shot (stetho train) or a k-NN detector instead"
        )
    if not detector.keys:
        raise ExportError("the detector has no memory banks: fit it before exporting")
    _require_onnx()
    dest = Path(directory)
    check_replaceable(dest, ONNX_FORMAT)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        (tmp / "graphs").mkdir()
        build = _knn_export if isinstance(detector, Detector) else _fewshot_export
        exported, err = build(detector, tmp / "graphs", quantize)
        logger.info("ONNX graphs match torch to %.2g", err)
        exported.detector_id, exported.version = detector.detector_id, detector.version
        exported.calibrations = list(detector.calibrations)
        exported.thresholds = dict(detector.thresholds)
        exported.held_out = dict(detector.held_out)
        exported.source = tmp / "graphs"
        exported.save(tmp / "export")
        load_onnx_detector(tmp / "export")  # every file checked before it is published
        publish_folder(tmp / "export", dest, ONNX_FORMAT, manifest=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("ONNX detector exported to %s", dest)
    return dest
