"""ONNX export: the onnxruntime engine scores like the torch detector (synthetic and real clips)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stetho.config import ExperimentConfig
from stetho.data import ClipTable, generate_synthetic_dataset, scan_dataset
from stetho.detector import Detector, DetectorError, Scorer
from stetho.serving import score_paths
from stetho.training import train

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

from stetho.deploy import ExportError, OnnxDetector, export_onnx
from stetho.deploy.onnx_export import ONNX_FORMAT


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k][n] - b[k][n]) for k in a for n in a[k])


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> ClipTable:
    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("onnx_synth"),
        machines=("fan", "valve"),
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=2,
        seconds=1.5,
    )
    return scan_dataset(root)


@pytest.fixture(scope="module")
def logmel_detector(synth: ClipTable, tmp_path_factory: pytest.TempPathFactory) -> Detector:
    cfg = ExperimentConfig().override(
        [
            "backbone.name=logmel",
            "finetune.strategy=frozen",
            "head.embed_dim=16",
            "train.epochs=1",
            "train.batch_size=4",
            "train.tensorboard=false",
            "scoring.segment_seconds=0.5",  # windows + averaging outside the graph
        ]
    )
    clips = synth.filter(split="train")
    result = train(cfg, clips, tmp_path_factory.mktemp("onnx_train"), progress=False)
    return Detector.from_training(result).fit(clips)


def test_synthetic_parity_files_waveforms_and_cli_engine(
    logmel_detector: Detector, synth: ClipTable, tmp_path: Path
) -> None:
    out = export_onnx(logmel_detector, tmp_path / "edge", quantize=True)
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == ONNX_FORMAT and meta["frontend"] == "in-graph"
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "model.onnx",
        "model.int8.onnx",
        "backend.safetensors",
        "bank_clips.json",
        "thresholds.json",
        "manifest.json",  # SHA-256 of every file, checked on load
    }
    edge = OnnxDetector.load(out)
    assert isinstance(edge, Scorer)
    assert edge.keys == logmel_detector.keys and edge.thresholds == logmel_detector.thresholds
    test = synth.filter(split="test")
    diff = _max_diff(logmel_detector.score_clips(test), edge.score_clips(test))
    assert diff < 1e-4
    # waveforms at another rate, resampled the same way; a clip shorter than one window
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 3000, 22050)]
    a = logmel_detector.score_waveforms(waves, "fan", "00", sample_rate=22050)
    b = edge.score_waveforms(waves, "fan", "00", sample_rate=22050)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(edge.decide(b, "fan/00"), logmel_detector.decide(b, "fan/00"))
    # serving works through the Scorer protocol, with decoding workers
    recs = score_paths(edge, [c.path for c in test], num_workers=2)
    assert all(r.ok for r in recs)
    # the int8 model loads and scores the same clips (figures of its accuracy: docs/benchmarks.md)
    q = OnnxDetector.load(out, int8=True).score_clips(test)
    assert np.isfinite([v for named in q.values() for v in named.values()]).all()
    # save → load keeps everything
    copy = OnnxDetector.load(edge.save(tmp_path / "copy"))
    assert _max_diff(edge.score_clips(test), copy.score_clips(test)) == 0.0
    # a changed file is refused by name
    thr = tmp_path / "copy" / "thresholds.json"
    thr.write_text(thr.read_text().replace("0", "1", 1))
    with pytest.raises(DetectorError, match=r"thresholds\.json"):
        OnnxDetector.load(tmp_path / "copy")


def test_cli_export_and_detect(
    logmel_detector: Detector, synth: ClipTable, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from stetho.cli import main

    det_dir = logmel_detector.save(tmp_path / "det")
    assert main(["export", str(det_dir), str(tmp_path / "edge"), "--format", "onnx"]) == 0
    clip = next(iter(synth.filter(split="test", machine="valve")))
    capsys.readouterr()
    args = ["detect", str(clip.path), "--detector", str(tmp_path / "edge")]
    assert main([*args, "--engine", "onnxruntime", "--workers", "2"]) == 0
    edge_out = capsys.readouterr().out
    want = logmel_detector.score_files([clip.path], *clip.key)[0]
    assert clip.name in edge_out and f"{want:.4g}"[:5] in edge_out
    # a torch detector folder given to the onnx engine (and the reverse) fails with a clear error
    assert main(["detect", str(clip.path), "--detector", str(det_dir), "--engine", "onnxruntime"])
    err = capsys.readouterr().err
    assert "not an ONNX export" in err and "stetho export" in err
    with pytest.raises(DetectorError, match="no int8 model"):
        OnnxDetector.load(tmp_path / "edge", int8=True)


def test_export_refuses_unfitted_and_non_detectors(
    logmel_detector: Detector, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="cannot be exported"):
        export_onnx(object(), tmp_path / "x")
    bystander = tmp_path / "notes"
    bystander.mkdir()
    (bystander / "keep.txt").write_text("mine")
    with pytest.raises(DetectorError):
        export_onnx(logmel_detector, bystander)
    assert (bystander / "keep.txt").read_text() == "mine"


@pytest.mark.shared
def test_real_clips_mn04_parity(shared_dir: Path, mn04_checkpoint: Path, tmp_path: Path) -> None:
    """14 real DCASE 2023 test clips, frozen mn04 (AudioSet weights): ONNX scores within 1e-4."""
    table = scan_dataset(shared_dir / "data" / "dcase2023t2_mini")
    train_clips, test_clips = table.filter(split="train"), table.filter(split="test")
    cfg = ExperimentConfig().override(
        [
            "backbone.name=efficientat-mn04",
            f"backbone.checkpoint={mn04_checkpoint}",
            "finetune.strategy=frozen",
            "head.embed_dim=null",
            "train.epochs=0",
            "train.tensorboard=false",
            "threshold.method=percentile",
        ]
    )
    det = Detector.from_training(train(cfg, train_clips, tmp_path / "train", progress=False))
    det.fit(train_clips)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export_onnx(det, tmp_path / "edge")
    edge = OnnxDetector.load(out)
    ref, got = det.score_clips(test_clips), edge.score_clips(test_clips)
    diff = _max_diff(ref, got)
    print(f"\nmn04 ONNX vs torch on {len(test_clips)} real clips: max |score diff| = {diff:.2e}")
    assert diff < 1e-4
    # a 12 s ToyCar clip and a 10 s clip in one call (the length axis is dynamic)
    clip = test_clips[0]
    wave, sr = sf.read(clip.path, dtype="float32")
    both = [wave, np.concatenate([wave, wave[: sr * 2]])]
    np.testing.assert_allclose(
        edge.score_waveforms(both, *clip.key, sample_rate=sr),
        det.score_waveforms(both, *clip.key, sample_rate=sr),
        atol=1e-4,
    )
    assert torch.get_num_threads() >= 1
