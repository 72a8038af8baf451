"""End-to-end pipelines: run_training, score_dataset, embed_dataset, run_demo, run_sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.data.synth import generate_synthetic_dataset
from stetho.detector.detector import Detector
from stetho.evaluation import evaluate, load_ground_truth, read_submission, truth_from_clips
from stetho.pipelines import (
    embed_dataset,
    run_demo,
    run_sweep,
    run_training,
    score_dataset,
    select_clips,
)

FAST = [
    "backbone.name=logmel",
    "finetune.strategy=frozen",
    "train.epochs=2",
    "train.batch_size=4",
    "train.lr=1e-3",
    "train.tensorboard=false",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic_dataset(
        out,
        machines=("fan", "valve"),
        eval_machines=("pump",),
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=2,
        seconds=1.0,
    )
    return out


def test_run_training_writes_submission_and_evaluation(root: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig(name="tiny").override(FAST)
    run = run_training(cfg, root, tmp_path, progress=False)
    dev_test = scan_dataset(root).filter(partition="dev", split="test")
    truth = truth_from_clips(dev_test)
    scores, decisions = read_submission(tmp_path / "scores", truth)
    assert scores == run.scores and set(scores) == {("fan", "00"), ("valve", "00")}
    assert decisions == run.detector.decisions(run.scores)
    assert len(run.submission_files) == 4
    assert run.evaluation is not None and 0.0 < run.evaluation.official_score <= 1.0
    assert evaluate(scores, truth, decisions).official_score == run.evaluation.official_score
    saved = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    assert saved["official_score"] == run.evaluation.official_score
    assert (tmp_path / "evaluation" / "table.md").read_text().startswith("DCASE 2023")
    assert [h["epoch"] for h in run.train.history] == [
        1,
        2,
    ] and "val_official_score" in run.train.history[0]
    # the saved detector reproduces the submission
    assert Detector.load(tmp_path / "detector").score_clips(dev_test) == run.scores
    # a second call resumes the finished run: no retraining, same numbers
    again = run_training(cfg, root, tmp_path, progress=False)
    assert again.train.steps == run.train.steps and again.scores == run.scores

    # eval partition: banks for the new machine type come from its additional train clips
    det = Detector.load(tmp_path / "detector")
    eval_scores = score_dataset(
        det, root, tmp_path / "eval_scores", partition="eval", progress=False
    )
    assert set(eval_scores) == {("pump", "00")}
    assert all(name.count("_") == 2 for name in eval_scores[("pump", "00")])  # anonymised names
    gt = load_ground_truth(root / "ground_truth")
    back, back_dec = read_submission(tmp_path / "eval_scores", gt)
    assert back == eval_scores and back_dec is not None
    assert np.isfinite(evaluate(back, gt, back_dec).official_score)
    with pytest.raises(KeyError, match="fit_missing"):
        score_dataset(
            Detector.load(tmp_path / "detector"),
            root,
            tmp_path / "x",
            partition="eval",
            fit_missing=False,
        )

    # embeddings: k-NN embeddings of the detector, or plain backbone embeddings of a config
    emb_dir = embed_dataset(det, root, tmp_path / "emb", partitions=("dev",), progress=False)
    emb = np.load(emb_dir / "embeddings.npy")
    rows = list(csv.DictReader((emb_dir / "clips.csv").read_text(encoding="utf-8").splitlines()))
    assert (
        emb.shape
        == (len(rows), det.embed_dim)
        == (len(scan_dataset(root).filter(partition="dev")), 128)
    )
    plain = np.load(
        embed_dataset(cfg, root, tmp_path / "plain", splits=("test",), progress=False)
        / "embeddings.npy"
    )
    assert plain.shape[1] == 384


def test_dev_machine_filter_does_not_hide_the_eval_partition(root: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig(name="fan_only").override(
        [*FAST, "train.epochs=1", "data.machines=[fan]"]
    )
    table = scan_dataset(root)
    assert {c.machine for c in select_clips(table, cfg, partition="eval", split="test")} == set()
    eval_test = select_clips(table, cfg, partition="eval", split="test", restrict_machines=False)
    assert {c.machine for c in eval_test} == {"pump"}
    run = run_training(cfg, root, tmp_path / "run", progress=False)
    assert run.detector.keys == [("fan", "00")] and set(run.scores) == {("fan", "00")}
    eval_scores = score_dataset(
        run.detector, root, tmp_path / "eval_scores", partition="eval", progress=False
    )
    assert set(eval_scores) == {("pump", "00")}
    assert len(eval_scores[("pump", "00")]) == len(eval_test)
    # the dev partition stays restricted to data.machines
    dev_scores = score_dataset(run.detector, root, tmp_path / "dev_scores", progress=False)
    assert set(dev_scores) == {("fan", "00")}
    # an empty selection names the filter that emptied it
    run.detector.cfg = run.detector.cfg.override(["data.machines=[gearbox]"])
    with pytest.raises(ValueError, match=r"no dev test clips .*machines=\['gearbox'\]"):
        score_dataset(run.detector, root, tmp_path / "none", progress=False)


def test_demo_and_sweep(tmp_path: Path) -> None:
    result = run_demo(
        tmp_path / "demo",
        machines=("fan", "valve"),
        seconds=1.0,
        n_train_source=4,
        n_train_target=2,
        n_test_per_group=2,
        overrides=["train.epochs=1"],
        progress=False,
    )
    assert 0.0 < result.official_score <= 1.0 and len(result.sections) == 2
    assert (
        tmp_path / "demo" / "run" / "scores" / "anomaly_score_fan_section_00_test.csv"
    ).is_file()
    cfg_a, cfg_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    cfg_a.write_text(
        "backbone: {name: logmel}\nfinetune: {strategy: frozen}\ntrain: {epochs: 1, batch_size: 4}\n"
    )
    cfg_b.write_text(
        "name: knn3\nbackbone: {name: logmel}\nfinetune: {strategy: frozen}\n"
        "train: {epochs: 1, batch_size: 4}\nbackend: {k: 3}\n"
    )
    sweep = run_sweep(
        [cfg_a, cfg_b],
        tmp_path / "demo" / "data",
        tmp_path / "sweep",
        overrides=["train.tensorboard=false"],
        progress=False,
    )
    assert sorted(r["name"] for r in sweep.rows) == ["a", "knn3"]
    table = list(csv.DictReader(sweep.csv_path.read_text(encoding="utf-8").splitlines()))
    assert [r["name"] for r in table] == [r["name"] for r in sweep.rows]
    scores = [float(r["official_score"]) for r in table]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert "knn3" in sweep.markdown and sweep.markdown_path.read_text().strip() == sweep.markdown
    assert (tmp_path / "sweep" / "knn3" / "detector" / "config.json").is_file()
