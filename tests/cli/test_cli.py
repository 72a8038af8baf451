"""The ``stetho`` command line: thin commands over the library, same numbers, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stetho.cli import build_parser, main
from stetho.data import scan_dataset
from stetho.data.synth import generate_synthetic_dataset
from stetho.evaluation import (
    evaluate,
    read_submission,
    truth_from_clips,
    write_submission,
)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(
        root / "dcase2023t2",
        machines=("fan", "valve"),
        n_train_source=6,
        n_train_target=2,
        n_test_per_group=4,
        seconds=0.5,
        seed=3,
    )


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "evaluate", "backbones", "tag", "train", "embed", "score", "sweep", "demo"):
        assert cmd in out


def test_data_scan_prints_inventory(synth_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "scan", str(synth_root)]) == 0
    out = capsys.readouterr().out
    assert "fan" in out and "valve" in out
    assert "no problems" in out


def test_data_scan_strict_exit_code_on_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_dir = tmp_path / "dev_data" / "raw" / "fan" / "test"
    test_dir.mkdir(parents=True)
    (test_dir / "not_a_dcase_name.wav").write_bytes(b"RIFF")
    assert main(["data", "scan", str(tmp_path), "--strict"]) == 1
    assert "not_a_dcase_name.wav" in capsys.readouterr().out


def _scores_for(root: Path, out: Path) -> None:
    """Write a submission whose scores are a deterministic function of the clip name."""
    table = scan_dataset(root)
    rng = np.random.default_rng(0)
    for machine, section in table.filter(split="test").sections():
        clips = table.filter(split="test", machine=machine, section=section)
        scores = {
            c.name: float(rng.normal() + (1.5 if c.label == "anomaly" else 0.0)) for c in clips
        }
        decisions = {n: int(s > 0.7) for n, s in scores.items()}
        write_submission(out, machine, section, scores, decisions)


def test_evaluate_matches_library(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores_dir = tmp_path / "scores"
    _scores_for(synth_root, scores_dir)
    out_dir = tmp_path / "results"
    assert (
        main(["evaluate", str(scores_dir), "--truth", str(synth_root), "--out", str(out_dir)]) == 0
    )
    printed = capsys.readouterr().out
    assert "Ω" in printed or "official" in printed.lower()

    truth = truth_from_clips([c for c in scan_dataset(synth_root) if c.split == "test"])
    scores, decisions = read_submission(scores_dir, truth)
    expected = evaluate(scores, truth, decisions, year=2023)
    written = json.loads((out_dir / "results.json").read_text())
    assert written["official_score"] == pytest.approx(expected.official_score, abs=0, rel=0)
    assert 0.0 < expected.official_score <= 1.0


def test_evaluate_missing_folder_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", str(tmp_path / "nope"), "--truth", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "stetho: error:" in err and "nope" in err


def test_backbones_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert [r["name"] for r in rows if r.get("error")] == []  # every backbone describes itself
    assert {"beats", "ced-base", "efficientat-mn04", "logmel", "wav2vec2"} <= names
    beats = next(r for r in rows if r["name"] == "beats")
    assert beats["params"] == 90_311_792
    assert beats["sample_rate"] == 16000 and beats["embed_dim"] == 768


def test_backbones_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backbones"]) == 0
    out = capsys.readouterr().out
    assert "cannot describe" not in out
    assert "qwen-audio-encoder" in out and "635.50 M" in out


def test_unknown_backbone_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["tag", "x.wav", "--backbone", "no-such-model"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "beats" in err


def test_tag_real_clip(
    mn04_checkpoint: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = next((shared_dir / "data/dcase2023t2_mini/dev_data/raw/fan/train").glob("*0040*.wav"))
    code = main(["tag", str(clip), "--checkpoint", str(mn04_checkpoint), "--top-k", "3"])
    assert code == 0
    out = capsys.readouterr().out
    print(out)
    assert "hum" in out.lower()


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["demo"])
    assert args.backbone is None  # the training-free few-shot recipe


# -- stetho train: the recipe is explicit, its settings are never silently ignored -----------

REPO = Path(__file__).resolve().parents[2]


def test_train_finetune_setting_without_finetune_config_exits_2(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #20 done-when: ``--set finetune.strategy=full`` without a fine-tuning config."""
    out = tmp_path / "run"
    code = main(["train", "--data", str(synth_root), "--out", str(out), "--set",
                 "finetune.strategy=full"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "finetune.strategy=full does not apply to the few-shot recipe" in err
    assert "stetho train without --config" in err
    assert "--config configs/" in err and "--set recipe=finetune" in err
    assert "Traceback" not in err and not (out / "detector").exists()
    # the example: every ignored setting is named
    code = main(["train", "--data", str(synth_root), "--out", str(out), "--set",
                 "backbone.name=efficientat-mn04", "finetune.strategy=full", "train.epochs=10"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    for setting in ("backbone.name=efficientat-mn04", "finetune.strategy=full", "train.epochs=10"):
        assert setting in err
    assert not (out / "detector").exists()


def test_train_recipe_conflicts_exit_2(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--data", str(synth_root), "--out", str(tmp_path / "run")]
    finetune_cfg = str(REPO / "configs" / "default.yaml")
    # --pretrained adds a member to the default recipe only: with --config it was ignored
    assert main([*base, "--config", finetune_cfg, "--pretrained", "mn04.pt"]) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert main([*base, "--pretrained", "mn04.pt", "--set", "recipe=finetune"]) == 2
    assert "--pretrained" in capsys.readouterr().err
    # an ensemble setting with a fine-tuning config
    assert main([*base, "--config", finetune_cfg, "--set", "ensemble.combine=max"]) == 2
    assert "does not apply to the fine-tuning recipe" in capsys.readouterr().err
    # a fine-tuning setting with an ensemble config
    fewshot_cfg = str(REPO / "configs" / "fewshot_mn04.yaml")
    assert main([*base, "--config", fewshot_cfg, "--set", "train.epochs=3"]) == 2
    assert "train.epochs=3 does not apply to the few-shot recipe" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_default_is_the_library_default(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``stetho train`` = ``run_training(default_config())`` = ``run_training(ExperimentConfig())``."""
    from stetho.config import ExperimentConfig
    from stetho.pipelines import default_config, run_training

    assert main(["train", "--data", str(synth_root), "--out", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    run_training(default_config(), synth_root, tmp_path / "lib", progress=False)
    run_training(ExperimentConfig(), synth_root, tmp_path / "bare", progress=False)

    def experiment(run: str) -> dict[str, object]:
        meta = json.loads((tmp_path / run / "detector" / "config.json").read_text())
        return dict(meta["experiment"])

    cli = experiment("cli")
    assert cli["recipe"] == "fewshot" and cli["ensemble"] is not None
    assert experiment("lib") == cli and experiment("bare") == cli


def test_train_set_recipe_finetune_fine_tunes(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft"
    sets = ["recipe=finetune", "finetune.strategy=frozen", "train.epochs=1",
            "train.tensorboard=false", "train.val_every=0"]  # fmt: skip
    assert main(["train", "--data", str(synth_root), "--out", str(out), "--set", *sets]) == 0
    meta = json.loads((out / "detector" / "config.json").read_text())
    assert meta["format"] == "stetho-detector"
    assert meta["experiment"]["recipe"] == "finetune" and meta["experiment"]["ensemble"] is None
    assert meta["experiment"]["train"]["epochs"] == 1


def test_serve_audio_bounds_reach_the_keeper(tmp_path: Path) -> None:
    import argparse

    from stetho.cli.detect import _audio_keeper
    from stetho.store import ScoreStore

    with ScoreStore.open(tmp_path / "plant.db") as store:
        ns = argparse.Namespace
        assert _audio_keeper(ns(audio_mb=None, audio_days=None), store) == "auto"
        assert _audio_keeper(ns(audio_mb=0.0, audio_days=None), store) is None
        keeper = _audio_keeper(ns(audio_mb=2.0, audio_days=7.0), store)
        assert keeper.max_bytes == 2 * 2**20 and keeper.max_age_days == 7.0
