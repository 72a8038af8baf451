"""Edge deployment: export a fitted detector to ONNX and score with onnxruntime.

>>> from stetho.deploy import export_onnx, OnnxDetector
>>> export_onnx(detector, "edge/fan", quantize=True)           # doctest: +SKIP
>>> OnnxDetector.load("edge/fan").score_files(paths, "fan", "00")  # doctest: +SKIP
"""

from stetho.deploy.onnx_export import ONNX_FORMAT, ExportError, export_onnx, quantize_int8
from stetho.deploy.onnx_scorer import OnnxDetector

__all__ = ["ONNX_FORMAT", "ExportError", "OnnxDetector", "export_onnx", "quantize_int8"]
