"""End-to-end CLI: train → score → evaluate → detect / watch / embed, baseline, demo."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stetho
from stetho.baselines import AEBaseline
from stetho.cli import main
from stetho.data.synth import generate_synthetic_dataset
from stetho.detector.detector import Detector
from tests.numerics import SCORE_ATOL

TRAIN_SET = [
    "backbone.name=logmel",
    "finetune.strategy=frozen",
    "train.epochs=1",
    "train.tensorboard=false",
]

#: ``stetho train`` without ``--config`` builds the few-shot ensemble; these tests exercise the
#: fine-tuning path, whose defaults ``configs/default.yaml`` lists.
FINETUNE = ["--config", str(Path(__file__).resolve().parents[2] / "configs" / "default.yaml")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cli_run")
    data = generate_synthetic_dataset(
        base / "dcase2023t2",
        machines=("fan", "valve"),
        n_train_source=8,
        n_train_target=2,
        n_test_per_group=3,
        seconds=1.0,
        seed=5,
    )
    out = base / "run"
    code = main(["train", *FINETUNE, "--data", str(data), "--out", str(out), "--set", *TRAIN_SET])
    assert code == 0
    return data, out


def test_train_writes_detector_scores_and_evaluation(run_dir: tuple[Path, Path]) -> None:
    _, out = run_dir
    cfg = json.loads((out / "detector" / "config.json").read_text())
    assert cfg["format"] == "stetho-detector"
    assert cfg["experiment"]["backbone"]["name"] == "logmel"
    assert cfg["experiment"]["finetune"]["strategy"] == "frozen"
    assert cfg["keys"] == ["fan/00", "valve/00"]
    assert sorted(p.name for p in (out / "scores").glob("anomaly_score_*.csv")) == [
        "anomaly_score_fan_section_00_test.csv",
        "anomaly_score_valve_section_00_test.csv",
    ]
    results = json.loads((out / "evaluation" / "results.json").read_text())
    assert 0.0 < results["official_score"] <= 1.0


def test_score_then_evaluate_reproduces_training_evaluation(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = run_dir
    sub = tmp_path / "sub"
    assert (
        main(["score", "--detector", str(out / "detector"), "--data", str(data), "--out", str(sub)])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"2 section(s), 24 clips, written to {sub}" in printed  # a summary, not the scores
    assert main(["evaluate", str(sub), "--truth", str(data), "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "results.json").read_text())
    first = json.loads((out / "evaluation" / "results.json").read_text())
    assert again["official_score"] == first["official_score"]


def test_detect_files_and_csv(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = run_dir
    folder = data / "dev_data" / "raw" / "fan" / "test"
    csv = tmp_path / "scores.csv"
    assert (
        main(["detect", str(folder), "--detector", str(out / "detector"), "--csv", str(csv)]) == 0
    )
    printed = capsys.readouterr().out
    n = len(list(folder.glob("*.wav")))
    assert f"{n} file(s)" in printed
    rows = csv.read_text().strip().splitlines()
    assert len(rows) == n + 1  # header + one row per file

    det = Detector.load(out / "detector")
    files = sorted(folder.glob("*.wav"))
    expected = det.score_files(files, "fan", "00")
    assert np.isfinite(expected).all()


def test_detect_bad_file_reports_error_and_exit_code(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = run_dir
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio")
    code = main(
        [
            "detect",
            str(bad),
            "--detector",
            str(out / "detector"),
            "--machine",
            "fan",
            "--section",
            "00",
        ]
    )
    assert code == 1
    assert "broken.wav" in capsys.readouterr().out


def test_watch_scores_a_pcm_stream(
    run_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = run_dir
    clip = next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))
    pcm, sr = sf.read(clip, dtype="int16")
    stream = io.TextIOWrapper(io.BytesIO(np.concatenate([pcm, pcm, pcm]).tobytes()))
    monkeypatch.setattr("sys.stdin", stream)
    code = main(
        [
            "watch",
            "--detector",
            str(out / "detector"),
            "--machine",
            "fan",
            "--dtype",
            "int16",
            "--rate",
            str(sr),
            "--window",
            "1",
            "--hop",
            "1",
        ]
    )
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "score" in ln]
    assert len(lines) == 3  # 3 s of audio, 1 s windows
    det = Detector.load(out / "detector")
    first = float(lines[0].split("score")[1].split()[0])
    assert first == pytest.approx(
        float(det.score_waveforms([pcm / 32768.0], "fan", "00", sample_rate=sr)[0]), rel=1e-4
    )


def test_embed_writes_matrix_and_clip_table(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    data, out = run_dir
    assert (
        main(
            [
                "embed",
                "--detector",
                str(out / "detector"),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "emb"),
            ]
        )
        == 0
    )
    emb = np.load(tmp_path / "emb" / "embeddings.npy")
    n_clips = len((tmp_path / "emb" / "clips.csv").read_text().strip().splitlines()) - 1
    assert emb.shape[0] == n_clips and np.isfinite(emb).all()


def test_baseline_command(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = run_dir
    code = main(
        [
            "baseline",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "ae"),
            "--epochs",
            "2",
            "--machines",
            "fan",
        ]
    )
    assert code == 0
    assert "fan" in capsys.readouterr().out
    assert list((tmp_path / "ae" / "scores").glob("anomaly_score_fan_section_00_test.csv"))
    assert (tmp_path / "ae" / "evaluation" / "results.json").is_file()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_saved_baseline_serves_like_a_detector(
    run_dir: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``stetho detect``, ``watch`` and ``serve --detector AE_DIR`` with a saved AE baseline."""
    data, _ = run_dir
    args = ["--data", str(data), "--out", str(tmp_path / "ae"), "--epochs", "2"]
    assert main(["baseline", *args, "--machines", "fan", "--mode", "mahala"]) == 0
    ae_dir = tmp_path / "ae" / "detector"
    model = AEBaseline.load(ae_dir)
    clip = next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))
    want = float(model.score_files([clip], "fan", "00")[0])
    capsys.readouterr()

    # detect: the file's score and decision in the table
    assert main(["detect", str(clip), "--detector", str(ae_dir), "--machine", "fan"]) == 0
    assert f"{want:.6f}"[:6] in capsys.readouterr().out

    # watch: a PCM stream, 1-s windows
    pcm, sr = sf.read(clip, dtype="int16")
    stream = io.TextIOWrapper(io.BytesIO(np.concatenate([pcm, pcm]).tobytes()))
    monkeypatch.setattr("sys.stdin", stream)
    watch = ["watch", "--detector", str(ae_dir), "--machine", "fan", "--rate", str(sr)]
    watch += ["--dtype", "int16"]
    assert main([*watch, "--window", "1", "--hop", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "score" in ln]
    assert len(lines) == 2
    first = float(lines[0].split("score")[1].split()[0])
    expected = float(model.score_waveforms([pcm / 32768.0], "fan", "00", sample_rate=sr)[0])
    assert first == pytest.approx(expected, rel=1e-4)

    # serve: the real command in a subprocess, queried over HTTP
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(stetho.__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "stetho", "serve", "--detector", str(ae_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        info = None
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/info", timeout=5) as resp:
                    info = json.loads(resp.read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        assert info is not None and info["keys"] == [{"machine": "fan", "section": "00"}]
        req = urllib.request.Request(
            url + "/score?machine=fan&section=00", data=clip.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            out = json.loads(resp.read())
        assert out["score"] == pytest.approx(want, rel=1e-5, abs=SCORE_ATOL)
        assert out["decision"] == int(out["score"] > model.thresholds[("fan", "00")])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_override_lists_valid_keys(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = run_dir
    code = main(
        ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--set", "train.lrr=1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "lrr" in err and "lr" in err


def test_demo_runs_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "Official score" in out
    assert (tmp_path / "demo" / "run" / "detector" / "config.json").is_file()


def test_demo_refuses_missing_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--backbone", "beats"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_baseline_configs_load() -> None:
    from stetho.config import load_experiment_config

    root = Path(__file__).resolve().parents[2] / "configs" / "baselines"
    files = sorted(root.glob("*.yaml"))
    assert len(files) == 3
    for path in files:
        cfg = load_experiment_config(path)
        if cfg.ensemble is not None:  # logmel_stats.yaml: the training-free few-shot baseline
            assert [m.feature.backbone for m in cfg.ensemble.members] == ["logmel"]
            assert cfg.ensemble.members[0].backend.standardise == "std"
            continue
        assert cfg.finetune.strategy == "frozen"
        assert cfg.train.epochs == 0
        assert cfg.head.embed_dim is None


def test_real_clips_end_to_end_with_stetho_evaluate(
    shared_dir: Path, mn04_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 4: the 28 real clips, the real EfficientAT checkpoint, submission files that
    ``stetho evaluate`` scores (partial: the mini set has one-class subsets)."""
    data = shared_dir / "data" / "dcase2023t2_mini"
    config = (
        Path(__file__).resolve().parents[2]
        / "configs"
        / "baselines"
        / "frozen_knn_efficientat.yaml"
    )
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--data",
            str(data),
            "--out",
            str(run),
            "--set",
            f"backbone.checkpoint={mn04_checkpoint}",
        ]
    )
    assert code == 0
    files = sorted(p.name for p in (run / "scores").glob("anomaly_score_*.csv"))
    assert len(files) == 7
    # strict evaluation refuses one-class subsets, like the official tool ...
    assert main(["evaluate", str(run / "scores"), "--truth", str(data)]) == 2
    capsys.readouterr()
    # ... and the partial mode scores every defined metric
    assert main(["evaluate", str(run / "scores"), "--truth", str(data), "--allow-undefined"]) == 0
    table = capsys.readouterr().out
    print(table)
    assert "partial" in table.lower()
    results = json.loads((run / "scores" / "evaluation" / "results.json").read_text())
    assert results["partial"] is True
    defined = [
        s[m]
        for s in results["sections"]
        for m in ("auc_source", "auc_target", "pauc")
        if s[m] is not None
    ]
    assert len(defined) == 10 and all(0.0 <= v <= 1.0 for v in defined)


def test_sweep_paper_configs_with_overrides(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    """Paper Table 3 rows on a tiny BEATs: one comparison table, LoRA parameters counted."""
    data, _ = run_dir
    paper = Path(__file__).resolve().parents[2] / "configs" / "paper"
    out = tmp_path / "sweep"
    code = main(
        ["sweep", str(paper / "table3_q.yaml"), str(paper / "table3_qv.yaml"),
         "--data", str(data), "--out", str(out),
         "--set", "backbone.name=beats-tiny", "backbone.checkpoint=null", "train.epochs=1",
         "train.tensorboard=false", "backbone.overrides.encoder_layers=2"]
    )  # fmt: skip
    assert code == 0
    import csv

    rows = {r["name"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert set(rows) == {"table3_q", "table3_qv"}
    # beats-tiny width 64, r = 64: A and B are 64×64 per adapted matrix, 2 layers
    lora_q = 2 * (64 * 64 + 64 * 64)
    assert (
        int(rows["table3_qv"]["trainable_params"]) - int(rows["table3_q"]["trainable_params"])
        == lora_q
    )
    assert (out / "comparison.md").read_text().count("table3_") == 2


def test_challenge_workflow_dev_and_eval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Train on dev + eval training clips, score the anonymised eval test set, evaluate against
    the official-layout ground truth — the DCASE submission workflow."""
    data = generate_synthetic_dataset(
        tmp_path / "dcase2023t2",
        machines=("fan",),
        eval_machines=("ToyDrone",),
        n_train_source=6,
        n_train_target=2,
        n_test_per_group=3,
        seconds=1.0,
        seed=11,
    )
    run = tmp_path / "run"
    sets = [*TRAIN_SET, "data.train_partitions=[dev, eval]"]
    assert main(["train", *FINETUNE, "--data", str(data), "--out", str(run), "--set", *sets]) == 0
    det = Detector.load(run / "detector")
    assert sorted(det.keys) == [("ToyDrone", "00"), ("fan", "00")]
    sub = tmp_path / "eval_sub"
    assert main(["score", "--detector", str(run / "detector"), "--data", str(data),
                 "--partition", "eval", "--out", str(sub)]) == 0  # fmt: skip
    names = sorted(p.name for p in sub.glob("*.csv"))
    assert names == [
        "anomaly_score_ToyDrone_section_00_test.csv",
        "decision_result_ToyDrone_section_00_test.csv",
    ]
    first = (sub / names[0]).read_text().splitlines()[0].split(",")[0]
    assert first.startswith("section_00_") and "normal" not in first  # anonymised names
    capsys.readouterr()
    gt = data / "ground_truth"
    assert main(["evaluate", str(sub), "--truth", str(gt), "--out", str(tmp_path / "ev")]) == 0
    assert "ToyDrone" in capsys.readouterr().out
    result = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [s["machine"] for s in result["sections"]] == ["ToyDrone"]


def test_own_recordings_with_only_faulty_test_clips_train_without_evaluation(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plant workflow: plain recordings → import → train. With only faulty test recordings
    nothing can be evaluated; training still finishes and saves the detector."""
    data, _ = run_dir
    fan = data / "dev_data" / "raw" / "fan"
    normals = sorted((fan / "train").glob("*.wav"))[:6]
    faulty = sorted((fan / "test").glob("*anomaly*.wav"))[:2]
    own = tmp_path / "own"
    assert main(["data", "import", str(own), "--machine", "pump",
                 "--train", *map(str, normals), "--test-anomaly", *map(str, faulty)]) == 0  # fmt: skip
    run = tmp_path / "run"
    assert (
        main(["train", *FINETUNE, "--data", str(own), "--out", str(run), "--set", *TRAIN_SET]) == 0
    )
    assert (run / "detector" / "config.json").is_file()
    assert not (run / "evaluation").exists()
    capsys.readouterr()
    assert main(["detect", *map(str, faulty), "--detector", str(run / "detector")]) == 0
    assert "pump/00" in capsys.readouterr().out


def test_detector_with_moved_checkpoint_loads_with_checkpoint_option(
    mn04_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A detector stores its checkpoint's path and SHA-256; when the file moved, ``--checkpoint``
    points at the new place (a different file is refused)."""
    import shutil

    monkeypatch.setenv("STETHO_CACHE", str(tmp_path / "empty_cache"))
    data = generate_synthetic_dataset(
        tmp_path / "d", machines=("fan",), n_train_source=4, n_train_target=2,
        n_test_per_group=2, seconds=1.0, seed=2,
    )  # fmt: skip
    ckpt = tmp_path / "weights" / "mn04.pt"
    ckpt.parent.mkdir()
    shutil.copy(mn04_checkpoint, ckpt)
    run = tmp_path / "run"
    sets = ["backbone.name=efficientat-mn04", f"backbone.checkpoint={ckpt}",
            "finetune.strategy=frozen", "train.epochs=0", "head.embed_dim=null"]  # fmt: skip
    assert main(["train", *FINETUNE, "--data", str(data), "--out", str(run), "--set", *sets]) == 0
    moved = tmp_path / "elsewhere.pt"
    ckpt.rename(moved)
    clip = str(next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav")))
    capsys.readouterr()
    assert main(["detect", clip, "--detector", str(run / "detector")]) == 2
    assert "checkpoint" in capsys.readouterr().err
    assert (
        main(["detect", clip, "--detector", str(run / "detector"), "--checkpoint", str(moved)]) == 0
    )
    assert "fan/00" in capsys.readouterr().out
    wrong = tmp_path / "wrong.pt"
    torch_save_tiny(wrong)
    assert (
        main(["detect", clip, "--detector", str(run / "detector"), "--checkpoint", str(wrong)]) == 2
    )
    assert "SHA-256" in capsys.readouterr().err


def torch_save_tiny(path: Path) -> None:
    import torch

    torch.save({"w": torch.zeros(1)}, path)


def test_train_without_config_builds_the_fewshot_ensemble(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = run_dir
    run = tmp_path / "fewshot"
    assert main(["train", "--data", str(data), "--out", str(run)]) == 0
    cfg = json.loads((run / "detector" / "config.json").read_text())
    assert cfg["format"] == "stetho-ensemble"
    assert sorted(cfg["keys"]) == ["fan/00", "valve/00"]
    assert "choice.md" in capsys.readouterr().out
    assert "fan/00" in (run / "choice.md").read_text()
    clip = str(next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav")))
    assert main(["detect", clip, "--detector", str(run / "detector")]) == 0
    assert "fan/00" in capsys.readouterr().out


def test_default_demo_is_the_fewshot_recipe(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    cfg = json.loads((tmp_path / "demo" / "run" / "detector" / "config.json").read_text())
    assert cfg["format"] == "stetho-ensemble"
