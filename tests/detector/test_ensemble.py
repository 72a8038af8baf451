"""The few-shot ensemble detector: fit, score, threshold, save, load, serve, default recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.data.synth import generate_synthetic_dataset
from stetho.detector import Scorer, load_scorer
from stetho.detector.artifact import DetectorError
from stetho.detector.ensemble import EnsembleDetector
from stetho.pipelines.fewshot import fewshot_config
from stetho.scoring.bank import BackendConfig
from stetho.scoring.ensemble import EnsembleConfig, MemberConfig
from stetho.scoring.selection import SelectionConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fewshot") / "data"
    return generate_synthetic_dataset(
        root, machines=("fan",), n_train_source=12, n_train_target=4, n_test_per_group=4,
        seconds=1.0, seed=1,
    )  # fmt: skip


def _cfg(**kw: object) -> ExperimentConfig:
    members = [
        MemberConfig(name="knn"),
        MemberConfig(name="gauss", backend=BackendConfig(kind="mahalanobis", standardise="none")),
    ]
    return ExperimentConfig(ensemble=EnsembleConfig(members=members, **kw))  # type: ignore[arg-type]


def test_fit_score_save_load(tiny: Path, tmp_path: Path) -> None:
    table = scan_dataset(tiny)
    train = [c for c in table if c.split == "train"]
    test = [c for c in table if c.split == "test"]
    det = EnsembleDetector(_cfg(selection=SelectionConfig(max_clips=4))).fit(train)
    assert isinstance(det, Scorer)
    assert det.keys == [("fan", "00")] and np.isfinite(det.thresholds[("fan", "00")])
    scores = det.score_clips(test)[("fan", "00")]
    lab = {c.name: c.label for c in test}
    anom = [v for n, v in scores.items() if lab[n] == "anomaly"]
    norm = [v for n, v in scores.items() if lab[n] == "normal"]
    assert np.mean(anom) > np.mean(norm)
    choice = det.choices()["fan/00"]
    assert set(choice["weights"]) == {"knn", "gauss"}  # type: ignore[arg-type]
    assert choice["bank_clips"] == {"source": 12, "target": 4}
    assert "proxy AUC" in str(choice["reason"])
    out = det.save(tmp_path / "det")
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "stetho-ensemble" and "fan/00" in meta["keys"]
    again = load_scorer(out)
    assert isinstance(again, EnsembleDetector)
    paths = [c.path for c in test]
    np.testing.assert_array_equal(again.score_files(paths, "fan", "00"),
                                  det.score_files(paths, "fan", "00"))  # fmt: skip
    assert again.thresholds == det.thresholds
    dec = again.decide(np.array([-1e9, 1e9]), "fan/00")
    assert dec.tolist() == [0, 1]
    with pytest.raises(KeyError, match="fitted keys: fan/00"):
        again.score_files(paths, "pump", "00")
    assert again.describe()["kind"] == "fewshot"


def test_waveforms_equal_files_and_resampling(tiny: Path) -> None:
    from stetho.data import load_audio

    table = scan_dataset(tiny)
    train = [c for c in table if c.split == "train"]
    det = EnsembleDetector(_cfg(selection=SelectionConfig(enabled=False))).fit(train)
    clip = next(c for c in table if c.split == "test")
    wave, sr = load_audio(clip.path)
    a = det.score_waveforms(wave, "fan", "00", sample_rate=sr)
    b = det.score_files([clip.path], "fan", "00")
    np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="float"):
        det.score_waveforms((wave * 32767).astype(np.int16), "fan", "00")


def test_pooled_bank_when_a_domain_is_small(tiny: Path) -> None:
    table = scan_dataset(tiny)
    train = [c for c in table if c.split == "train"]
    det = EnsembleDetector(_cfg(min_domain_bank=5, selection=SelectionConfig(enabled=False)))
    det.fit(train)
    assert det.models[("fan", "00")].domains == ["all"]


def test_missing_bank_file_is_reported(tiny: Path, tmp_path: Path) -> None:
    table = scan_dataset(tiny)
    train = [c for c in table if c.split == "train"][:6]
    out = EnsembleDetector(_cfg(selection=SelectionConfig(enabled=False))).fit(train)
    path = out.save(tmp_path / "d")
    (path / "banks.safetensors").unlink()
    with pytest.raises(DetectorError, match=r"banks\.safetensors"):
        load_scorer(path)


def test_default_recipe_runs_end_to_end(tiny: Path, tmp_path: Path) -> None:
    from stetho.pipelines import run_training

    cfg = fewshot_config()
    assert cfg.ensemble is not None and all(
        m.feature.checkpoint is None for m in cfg.ensemble.members
    )
    run = run_training(cfg, tiny, tmp_path / "run", progress=False)
    assert run.evaluation is not None and run.train is None
    choice = (tmp_path / "run" / "choice.md").read_text()
    assert choice.count("fan/00") == 1
    # true reasons: the members, how they are combined, and why nothing was chosen per machine
    assert "logmel-htk-knn (logmel:mean+max" in choice and "cepstrum-htk-knn" in choice
    assert "Combined by: fisher — Fisher's method" in choice
    assert "no label-free choice (selection disabled)" in choice
    assert isinstance(load_scorer(tmp_path / "run" / "detector"), EnsembleDetector)
    assert run.submission_files
