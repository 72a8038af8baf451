"""Detector: fit (leave-one-out thresholds), scoring, save → load with identical scores."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from stetho.backbones import create_backbone
from stetho.config import ExperimentConfig
from stetho.data import ClipTable, load_audio, scan_dataset
from stetho.data.synth import generate_synthetic_dataset
from stetho.detector.detector import Detector, DetectorError
from stetho.evaluation import (
    MetricError,
    evaluate,
    read_submission,
    truth_from_clips,
    truth_from_names,
    write_submission,
)
from stetho.scoring import fit_threshold
from stetho.training import train
from stetho.utils.io import sha256_file


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> ClipTable:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(
        root,
        machines=("fan", "valve"),
        n_train_source=5,
        n_train_target=3,
        n_test_per_group=1,
        seconds=1.0,
    )
    return scan_dataset(root)


def tiny_cfg(*extra: str) -> ExperimentConfig:
    return ExperimentConfig().override(
        [
            "backbone.name=beats-tiny",
            "finetune.lora.r=4",
            "finetune.lora.alpha=4",
            "head.embed_dim=16",
            "train.epochs=1",
            "train.batch_size=4",
            "train.lr=3e-3",
            "train.tensorboard=false",
            *extra,
        ]
    )


def _fit(cfg: ExperimentConfig, table: ClipTable, out: Path) -> Detector:
    train_clips = table.filter(split="train")
    return Detector.from_training(train(cfg, train_clips, out, progress=False)).fit(train_clips)


def _assert_same_scores(a: Detector, b: Detector, table: ClipTable) -> None:
    test = table.filter(split="test")
    sa, sb = a.score_clips(test), b.score_clips(test)
    assert sa == sb  # bit-identical floats
    assert a.thresholds == b.thresholds


@pytest.fixture(scope="module")
def lora_detector(table: ClipTable, tmp_path_factory: pytest.TempPathFactory) -> Detector:
    return _fit(tiny_cfg(), table, tmp_path_factory.mktemp("lora"))


def test_lora_without_checkpoint_saves_full_weights_and_reloads_exactly(
    lora_detector: Detector, table: ClipTable, tmp_path: Path
) -> None:
    folder = lora_detector.save(tmp_path / "det")
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "adapter.safetensors",
        "backbone.safetensors",
        "backend.safetensors",
        "bank_clips.json",
        "config.json",
        "head.safetensors",
        "manifest.json",
        "thresholds.json",
    ]
    meta = json.loads((folder / "config.json").read_text())
    assert (
        meta["backbone"]["name"] == "beats-tiny" and meta["backbone"]["checkpoint_sha256"] is None
    )
    assert meta["class_map"]["classes"] == lora_detector.class_map.classes
    assert meta["experiment"] == lora_detector.cfg.to_dict() and meta["stetho_version"]
    loaded = Detector.load(folder)
    _assert_same_scores(lora_detector, loaded, table)
    # the banks know their training clips (bank_clips.json)
    assert loaded.scorer.refs == lora_detector.scorer.refs
    assert sum(len(v) for d in loaded.scorer.refs.values() for v in d.values()) == len(
        table.filter(split="train")
    )
    # saving again over the folder replaces it atomically
    lora_detector.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_detector_saved_with_old_key_names_loads(
    lora_detector: Detector, table: ClipTable, tmp_path: Path
) -> None:
    """Detectors saved before ``segment_seconds`` was renamed (data: crop, scoring: window)."""
    folder = lora_detector.save(tmp_path / "det")
    meta = json.loads((folder / "config.json").read_text())
    exp = meta["experiment"]
    exp["data"]["segment_seconds"] = exp["data"].pop("crop_seconds")
    exp["scoring"]["segment_seconds"] = exp["scoring"].pop("window_seconds")
    # such folders predate the manifest (format version 1)
    meta["format_version"] = 1
    (folder / "manifest.json").unlink()
    (folder / "config.json").write_text(json.dumps(meta))
    loaded = Detector.load(folder)
    assert loaded.cfg == lora_detector.cfg
    _assert_same_scores(lora_detector, loaded, table)


def test_save_refuses_to_replace_anything_but_a_detector(
    lora_detector: Detector, tmp_path: Path
) -> None:
    run = tmp_path / "run"  # e.g. the run folder passed instead of run/detector
    (run / "train").mkdir(parents=True)
    (run / "notes.txt").write_text("months of work\n")
    (run / "train" / "checkpoint.pt").write_bytes(b"x" * 10)
    with pytest.raises(DetectorError, match=re.escape(str(run))):
        lora_detector.save(run)
    assert (run / "notes.txt").read_text() == "months of work\n"
    assert (run / "train" / "checkpoint.pt").read_bytes() == b"x" * 10
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "train"]
    plain = tmp_path / "scores.csv"
    plain.write_text("important\n")
    with pytest.raises(DetectorError, match="not a folder"):
        lora_detector.save(plain)
    assert plain.is_file() and plain.read_text() == "important\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DetectorError, match="not a stetho detector"):
        lora_detector.save(other)
    assert json.loads((other / "config.json").read_text()) == {"format": "something-else"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    # an empty folder and an existing detector are replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (lora_detector.save(empty) / "config.json").is_file()
    assert (lora_detector.save(empty) / "config.json").is_file()


def test_save_restores_the_previous_detector_when_the_rename_fails(
    lora_detector: Detector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = lora_detector.save(tmp_path / "det")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace = os.replace

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == folder and Path(src).name.endswith(".tmp"):
            raise OSError("simulated rename failure")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        lora_detector.save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det"]  # temporaries removed


def test_saved_folder_is_readable_per_umask(lora_detector: Detector, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        folder = lora_detector.save(tmp_path / "det")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750  # not mkdtemp's 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f.name


def test_integer_pcm_waveforms_are_refused(lora_detector: Detector) -> None:
    pcm = (np.sin(np.linspace(0, 300, 16000)) * 20000).astype(np.int16)
    with pytest.raises(ValueError, match="got int16; convert PCM integers"):
        lora_detector.score_waveforms(pcm, "fan", "00", sample_rate=16000)
    with pytest.raises(ValueError, match="got int32"):
        lora_detector.embed_waveforms([pcm.astype(np.float32), torch.from_numpy(pcm).int()])
    with pytest.raises(ValueError, match="got uint8"):
        lora_detector.embed_waveforms(np.zeros((2, 16000), dtype=np.uint8))
    scaled = lora_detector.score_waveforms(pcm / 32768.0, "fan", "00")  # float64 is fine
    assert scaled.shape == (1,) and np.isfinite(scaled).all()


def test_lora_with_checkpoint_saves_adapter_only_and_checks_sha(
    table: ClipTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tmp_path / "beats_tiny.pt"
    torch.manual_seed(5)
    torch.save(create_backbone("beats-tiny").state_dict(), ckpt)
    det = _fit(tiny_cfg(f"backbone.checkpoint={ckpt}"), table, tmp_path / "train")
    folder = det.save(tmp_path / "det")
    assert (
        not (folder / "backbone.safetensors").exists()
        and (folder / "adapter.safetensors").is_file()
    )
    meta = json.loads((folder / "config.json").read_text())
    assert meta["backbone"]["checkpoint_sha256"] == sha256_file(ckpt)
    _assert_same_scores(det, Detector.load(folder), table)
    # the checkpoint moved: pass its new location
    moved = tmp_path / "moved.pt"
    shutil.move(ckpt, moved)
    with pytest.raises(DetectorError, match="not found") as info:
        Detector.load(folder)
    # the message names both remedies: --checkpoint, or the file in the cache under its name
    assert "--checkpoint" in str(info.value) and "$STETHO_CACHE" in str(info.value)
    assert "'beats_tiny.pt'" in str(info.value)
    _assert_same_scores(det, Detector.load(folder, checkpoint=moved), table)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(moved, cache / "beats_tiny.pt")
    monkeypatch.setenv("STETHO_CACHE", str(cache))
    _assert_same_scores(det, Detector.load(folder), table)
    # a different file under the same name is refused
    torch.manual_seed(6)
    torch.save(create_backbone("beats-tiny").state_dict(), ckpt)
    with pytest.raises(DetectorError, match="SHA-256"):
        Detector.load(folder)


def test_frozen_random_init_backbone_round_trip(table: ClipTable, tmp_path: Path) -> None:
    cfg = tiny_cfg("backbone.name=efficientat-tiny", "finetune.strategy=frozen", "train.epochs=0")
    det = _fit(cfg, table, tmp_path / "train")
    folder = det.save(tmp_path / "det")
    assert (folder / "backbone.safetensors").is_file() and not (
        folder / "adapter.safetensors"
    ).exists()
    _assert_same_scores(det, Detector.load(folder), table)


def test_thresholds_use_leave_one_out_scores(lora_detector: Detector) -> None:
    scorer = lora_detector.scorer
    loo, own = scorer.score_fitted(leave_one_out=True), scorer.score_fitted(leave_one_out=False)
    keys = scorer.fitted_keys()
    assert np.allclose(own, 0.0, atol=1e-6)  # k=1: every training clip finds itself
    for key in lora_detector.keys:
        vals = np.array([s for s, k in zip(loo, keys) if k == key])
        assert (vals > 0).all()
        assert lora_detector.thresholds[key] == fit_threshold(vals, lora_detector.cfg.threshold)


def test_scoring_paths_agree_and_decisions(lora_detector: Detector, table: ClipTable) -> None:
    test = table.filter(split="test", machine="fan")
    paths = [c.path for c in test]
    from_files = lora_detector.score_files(paths, "fan", "00")
    waves = [load_audio(p, sr=16000)[0] for p in paths]
    np.testing.assert_allclose(
        lora_detector.score_waveforms(waves, "fan", "00"), from_files, rtol=0, atol=1e-6
    )
    assert from_files.shape == (len(paths),) and np.isfinite(from_files).all()
    # other rates are resampled; variable lengths are fine
    w8 = [load_audio(p, sr=8000)[0] for p in paths]
    w8[0] = w8[0][:6000]
    s8 = lora_detector.score_waveforms(w8, "fan", "00", sample_rate=8000)
    assert s8.shape == (len(paths),) and np.isfinite(s8).all()
    dec = lora_detector.decide(from_files, ("fan", "00"))
    np.testing.assert_array_equal(
        dec, (from_files > lora_detector.thresholds[("fan", "00")]).astype(int)
    )
    np.testing.assert_array_equal(lora_detector.decide(from_files, "fan/00"), dec)
    with pytest.raises(KeyError, match="fitted keys: fan/00, valve/00"):
        lora_detector.score_files(paths, "pump", "00")
    with pytest.raises(KeyError, match="fitted thresholds"):
        lora_detector.decide(from_files, ("pump", "00"))
    with pytest.raises(ValueError, match="normal training clips"):
        lora_detector.fit(test)


def test_windowed_scoring_averages_window_embeddings(lora_detector: Detector) -> None:
    cfg = lora_detector.cfg.override(["scoring.window_seconds=0.5", "scoring.hop_seconds=0.25"])
    det = Detector(cfg, lora_detector.backbone, lora_detector.head, lora_detector.class_map)
    wave = torch.randn(16000) * 0.1
    got = det.embed_waveforms(wave.numpy())
    windows = torch.stack([wave[s : s + 8000] for s in (0, 4000, 8000)])  # 3 windows cover 1 s
    with torch.inference_mode():
        ref = lora_detector.head.project(lora_detector.backbone.embed(windows)).mean(0)
    np.testing.assert_allclose(got[0], ref.numpy(), atol=1e-5)


@pytest.mark.shared
def test_real_clips_efficientat_mn04_end_to_end(
    shared_dir: Path, mn04_checkpoint: Path, tmp_path: Path
) -> None:
    """28 real DCASE 2023 clips: frozen mn04 → banks → scores → submission files → evaluation."""
    table = scan_dataset(shared_dir / "data" / "dcase2023t2_mini")
    train_clips, test_clips = table.filter(split="train"), table.filter(split="test")
    assert len(train_clips) == 14 and len(test_clips) == 14
    cfg = ExperimentConfig().override(
        [
            "backbone.name=efficientat-mn04",
            f"backbone.checkpoint={mn04_checkpoint}",
            "finetune.strategy=frozen",
            "head.embed_dim=null",  # k-NN on the pre-trained 384-d embedding
            "train.epochs=0",
            "train.tensorboard=false",
            "threshold.method=percentile",  # 2 train clips per machine: no meaningful gamma fit
        ]
    )
    det = Detector.from_training(train(cfg, train_clips, tmp_path / "train", progress=False))
    det.fit(train_clips)
    scores = det.score_clips(test_clips)
    decisions = det.decisions(scores)
    for (machine, section), named in scores.items():
        write_submission(
            tmp_path / "scores", machine, section, named, decisions[(machine, section)]
        )
    truth = truth_from_clips(test_clips)
    back, back_dec = read_submission(tmp_path / "scores", truth)
    assert back == scores and back_dec == decisions
    # Each machine has only 2 test clips: per-machine AUCs are undefined (one class per subset),
    # so the official evaluation refuses them ...
    with pytest.raises(MetricError):
        evaluate(back, truth, back_dec)
    # ... and Ω is computed over the 14 test clips pooled into one section.
    names = [c.name for c in test_clips]
    assert len(set(names)) == len(names)
    pooled_scores = {("pooled", "00"): {n: s for named in back.values() for n, s in named.items()}}
    pooled_dec = {("pooled", "00"): {n: d for named in back_dec.values() for n, d in named.items()}}
    result = evaluate(pooled_scores, truth_from_names({("pooled", "00"): names}), pooled_dec)
    assert np.isfinite(result.official_score) and 0.0 < result.official_score <= 1.0
    lines = [
        "| machine | clip | label | domain | score | threshold | decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in test_clips:
        s = scores[c.key][c.name]
        lines.append(
            f"| {c.machine} | {c.name[:40]} | {c.label} | {c.domain} | {s:.5f} | "
            f"{det.thresholds[c.key]:.5f} | {decisions[c.key][c.name]} |"
        )
    print("\n" + "\n".join(lines) + "\n\n" + result.table())
    # the saved detector rebuilds from the (SHA-256-verified) checkpoint and scores identically
    folder = det.save(tmp_path / "det")
    assert not (folder / "backbone.safetensors").exists()
    assert Detector.load(folder).score_clips(test_clips) == scores
