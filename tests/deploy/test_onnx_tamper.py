"""Exported folders pass the same checks as every detector folder (issue #22 item 2).

A NaN threshold, a missing manifest, a graph dropped from the manifest, a graph path outside the
folder, a truncated graph or bank: each is refused at load with a DetectorError naming the file,
never a traceback from onnxruntime or a silently "normal" detector.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stetho
from stetho.data import scan_dataset
from stetho.detector import DetectorError
from stetho.detector.ensemble import EnsembleDetector
from stetho.pipelines.recipes import default_config
from stetho.utils.artifact import write_manifest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stetho.deploy import export_onnx

    root = tmp_path_factory.mktemp("tamper")
    rng = np.random.default_rng(0)
    train = root / "dev_data" / "fan" / "train"
    train.mkdir(parents=True)
    for i in range(6):  # synthetic hum + noise, 1 s at 16 kHz
        t = np.arange(16000) / 16000
        x = 0.1 * np.sin(2 * np.pi * (100 + 5 * i) * t) + 0.01 * rng.standard_normal(16000)
        sf.write(train / f"normal_id_00_{i:08d}.wav", x.astype(np.float32), 16000)
    clips = list(scan_dataset(root))
    det = EnsembleDetector(default_config()).fit(clips)
    return export_onnx(det, root / "edge")


def _copy(export: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "edge"
    shutil.copytree(export, dest)
    return dest


def _rewrite(folder: Path, name: str, doc: object, *, manifest: bool = True) -> None:
    (folder / name).write_text(json.dumps(doc))
    if manifest:
        write_manifest(folder)


def test_export_loads_and_scores_like_a_detector(export: Path) -> None:
    det = stetho.load_detector(export)
    assert det.kind == "onnx" and det.describe()["exported_from"] == "fewshot"


def test_nan_threshold_is_refused(export: Path, tmp_path: Path) -> None:
    edge = _copy(export, tmp_path)
    doc = json.loads((edge / "thresholds.json").read_text())
    doc["thresholds"][0]["threshold"] = float("nan")
    _rewrite(edge, "thresholds.json", doc)
    with pytest.raises(DetectorError, match=r"thresholds\.json"):
        stetho.load_detector(edge)


def test_missing_manifest_is_refused(export: Path, tmp_path: Path) -> None:
    edge = _copy(export, tmp_path)
    (edge / "manifest.json").unlink()
    with pytest.raises(DetectorError, match="manifest"):
        stetho.load_detector(edge)


def test_graph_dropped_from_the_manifest_is_refused(export: Path, tmp_path: Path) -> None:
    edge = _copy(export, tmp_path)
    man = json.loads((edge / "manifest.json").read_text())
    man["files"].pop("member-0.onnx")
    (edge / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DetectorError, match=r"member-0\.onnx"):
        stetho.load_detector(edge)


def test_graph_path_outside_the_folder_is_refused(export: Path, tmp_path: Path) -> None:
    edge = _copy(export, tmp_path)
    outside = tmp_path / "evil.onnx"
    shutil.copy(edge / "member-0.onnx", outside)
    meta = json.loads((edge / "config.json").read_text())
    meta["models"]["member-0"]["float32"] = str(outside)
    _rewrite(edge, "config.json", meta)
    with pytest.raises(DetectorError, match="outside the folder"):
        stetho.load_detector(edge)


@pytest.mark.parametrize("name", ["member-0.onnx", "banks.safetensors"])
def test_truncated_file_is_refused_by_name(export: Path, tmp_path: Path, name: str) -> None:
    edge = _copy(export, tmp_path)
    data = (edge / name).read_bytes()
    (edge / name).write_bytes(data[: len(data) // 3])
    with pytest.raises(DetectorError, match=name):
        stetho.load_detector(edge)
    write_manifest(edge)  # even with a manifest that matches the damage
    with pytest.raises(DetectorError, match=name):
        stetho.load_detector(edge)


def test_nan_bank_rows_are_refused(export: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    edge = _copy(export, tmp_path)
    arrays = load_file(str(edge / "banks.safetensors"))
    name = next(k for k in arrays if k.endswith("/bank"))
    arrays[name][0, 0] = np.nan
    save_file(arrays, str(edge / "banks.safetensors"))
    write_manifest(edge)
    with pytest.raises(DetectorError, match=r"banks\.safetensors"):
        stetho.load_detector(edge)
