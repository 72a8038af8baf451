"""``stetho calibrate``: detector identity/versions, re-fitting banks and thresholds on new normals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stetho import StethoError
from stetho.cli.main import main
from stetho.config import ExperimentConfig
from stetho.data import ClipTable, generate_synthetic_dataset, scan_dataset
from stetho.detector import Detector, calibrate, calibrate_folder, identity
from stetho.training import train

SR = 16000


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> ClipTable:
    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("calib_synth"),
        machines=("fan", "valve"),
        n_train_source=6,
        n_train_target=2,
        n_test_per_group=1,
        seconds=1.0,
    )
    return scan_dataset(root)


@pytest.fixture(scope="module")
def saved(table: ClipTable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = ExperimentConfig().override(
        [
            "backbone.name=logmel",
            "finetune.strategy=frozen",
            "head.embed_dim=16",
            "train.epochs=1",
            "train.batch_size=4",
            "train.tensorboard=false",
        ]
    )
    clips = table.filter(split="train")
    result = train(cfg, clips, tmp_path_factory.mktemp("calib_train"), progress=False)
    det = Detector.from_training(result).fit(clips)
    return det.save(tmp_path_factory.mktemp("calib_det") / "detector")


@pytest.fixture(scope="module")
def moved(table: ClipTable, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The fan after a move: its training clips with a new steady 1.5 kHz hum."""
    out = tmp_path_factory.mktemp("moved")
    t = np.arange(SR) / SR
    paths = []
    for i, c in enumerate(table.filter(split="train", machine="fan")):
        x, sr = sf.read(c.path, dtype="float32")
        assert sr == SR
        y = 0.5 * x[:SR] + 0.3 * np.sin(2 * np.pi * 1500 * t + i)
        paths.append(out / f"moved_{i:02d}.wav")
        sf.write(paths[-1], y.astype(np.float32), SR, subtype="PCM_16")
    return paths


def test_identity_is_saved_and_old_folders_get_the_folder_name(saved: Path, tmp_path: Path) -> None:
    det = Detector.load(saved)
    meta = json.loads((saved / "config.json").read_text())
    assert meta["id"] == det.detector_id and len(meta["id"]) == 32 and meta["version"] == 1
    assert det.describe()["id"] == det.detector_id and det.describe()["version"] == 1
    assert identity(det) == (det.detector_id, 1)
    old = tmp_path / "plant-fan-v0"
    shutil.copytree(saved, old)
    meta.pop("id")
    meta.pop("version")
    meta["format_version"] = 1  # such folders also predate the manifest
    (old / "manifest.json").unlink()
    (old / "config.json").write_text(json.dumps(meta))
    det_old = Detector.load(old)
    assert (det_old.detector_id, det_old.version) == ("plant-fan-v0", 1)


def test_calibration_refits_one_key_and_writes_a_new_version(
    saved: Path, moved: list[Path], tmp_path: Path
) -> None:
    before = Detector.load(saved)
    fit, held_out = moved[:4] + moved[6:], moved[4:6]  # both domains in the calibration set
    thr0 = before.thresholds[("fan", "00")]
    s0 = before.score_files(held_out, "fan", "00")
    assert np.all(s0 > thr0)  # the moved machine raises false alarms before calibration

    out = tmp_path / "v2"
    after = calibrate_folder(saved, {("fan", "00"): fit}, out)
    assert (after.detector_id, after.version) == (before.detector_id, 2)
    reloaded = Detector.load(out)
    assert (reloaded.detector_id, reloaded.version) == (before.detector_id, 2)
    assert reloaded.calibrations[-1]["keys"] == {"fan/00": 6}
    assert Detector.load(saved).version == 1  # the old version is untouched
    # the new fan bank is exactly the calibration recordings: they score 0 against themselves
    np.testing.assert_allclose(reloaded.score_files(fit, "fan", "00"), 0.0, atol=1e-6)
    s1 = reloaded.score_files(held_out, "fan", "00")
    assert np.all(s1 < s0)
    assert np.all(s1 <= reloaded.thresholds[("fan", "00")])  # no more false alarms
    # the other key keeps its banks and threshold
    assert reloaded.thresholds[("valve", "00")] == before.thresholds[("valve", "00")]
    for d_name, bank in before.scorer.require_key(("valve", "00")).items():
        assert torch.equal(
            reloaded.scorer.require_key(("valve", "00"))[d_name].embeddings, bank.embeddings
        )


def test_threshold_is_refit_on_leave_one_out_scores_of_the_new_bank(
    saved: Path, moved: list[Path]
) -> None:
    det = Detector.load(saved)
    det.cfg = det.cfg.override(["threshold.method=percentile", "threshold.quantile=0.8"])
    calibrate(det, {("fan", "00"): moved})
    # reference: float64 cosine distances of the new recordings to each other, self excluded
    e = torch.nn.functional.normalize(torch.from_numpy(det.embed_files(moved)).double(), dim=1)
    d = 1 - e @ e.T
    d.fill_diagonal_(float("inf"))
    loo = d.min(1).values.numpy()
    assert det.thresholds[("fan", "00")] == pytest.approx(np.quantile(loo, 0.8), abs=1e-6)


def test_add_mode_keeps_the_old_normal_state(
    saved: Path, moved: list[Path], table: ClipTable
) -> None:
    det = Detector.load(saved)
    old_normals = [c.path for c in table.filter(split="train", machine="fan")]
    calibrate(det, {("fan", "00"): moved[:4]}, mode="add")
    assert det.version == 2
    banks = det.scorer.require_key(("fan", "00"))
    assert len(banks["source"]) == 6 and len(banks["target"]) == 2 + 4
    np.testing.assert_allclose(det.score_files(old_normals, "fan", "00"), 0.0, atol=1e-6)
    np.testing.assert_allclose(det.score_files(moved[:4], "fan", "00"), 0.0, atol=1e-6)


def test_calibration_refuses_unknown_keys_and_empty_input(saved: Path, moved: list[Path]) -> None:
    det = Detector.load(saved)
    with pytest.raises(KeyError, match="no model for"):
        calibrate(det, {("pump", "00"): moved[:2]})
    with pytest.raises(StethoError, match="0 calibration recording"):
        calibrate(det, {("fan", "00"): []})
    with pytest.raises(StethoError, match="at least 2 are needed"):
        calibrate(det, {("fan", "00"): moved[:1]})
    with pytest.raises(StethoError, match="no calibration recordings"):
        calibrate(det, {})
    with pytest.raises(StethoError, match="mode"):
        calibrate(det, {("fan", "00"): moved[:2]}, mode="merge")  # type: ignore[arg-type]
    assert det.version == 1


def test_cli_calibrates_in_place(
    saved: Path, moved: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "det"
    shutil.copytree(saved, folder)
    normal_dir = tmp_path / "new_normal"
    normal_dir.mkdir()
    for p in moved[:5]:
        shutil.copy(p, normal_dir / p.name)
    # two machines: the recordings' machine cannot be inferred from plain file names
    assert main(["calibrate", str(folder), str(normal_dir)]) == 2
    assert "cannot infer" in capsys.readouterr().err
    assert Detector.load(folder).version == 1  # nothing written
    assert (
        main(["calibrate", str(folder), str(normal_dir), "--machine", "fan", "--section", "0"]) == 0
    )
    out = capsys.readouterr().out
    assert "fan/00: 5 normal recording(s)" in out and "version 1 -> 2" in out
    assert "learnt from 5 normal recording(s)" in out and "about 9 are needed" in out
    det = Detector.load(folder)
    assert det.version == 2 and det.detector_id == Detector.load(saved).detector_id
