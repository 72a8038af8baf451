"""ExperimentConfig: paper defaults, YAML round trips, dotted overrides, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stetho.config import (
    DataConfig,
    ExperimentConfig,
    ScoringConfig,
    TrainConfig,
    load_experiment_config,
)
from stetho.utils.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_papers() -> None:
    cfg = ExperimentConfig()
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (
        "adam",
        5e-5,
        8,
        30,
    )
    assert cfg.train.warmup_epochs > 0 or (cfg.train.warmup_steps or 0) > 0
    assert cfg.finetune.strategy == "lora" and cfg.finetune.lora.r == 64
    assert tuple(cfg.finetune.lora.targets) == ("q", "v")
    assert cfg.head.kind == "arcface"
    assert (cfg.backend.k, cfg.backend.metric) == (1, "cosine")
    assert (cfg.threshold.method, cfg.threshold.false_alarm) == ("conformal", 0.1)
    assert cfg.data.spec_augment is not None
    # 2 s crops for raw-waveform models (paper), whole clips for spectrogram models
    assert cfg.data.crop_seconds_for("waveform") == 2.0
    assert cfg.data.crop_seconds_for("fbank") is None
    assert cfg.scoring.window_seconds_for(cfg.data, "waveform") == 2.0
    assert ScoringConfig(window_seconds=None).window_seconds_for(cfg.data, "waveform") is None
    assert DataConfig(crop_seconds=1.5).crop_seconds_for("fbank") == 1.5


def test_yaml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = ExperimentConfig().override(
        [
            "backbone.name=beats-tiny",
            "train.lr=1e-4",
            "train.betas=[0.8, 0.9]",
            "data.spec_augment=null",
            "data.crop_seconds=2.5",
            "backend.k=3",
            "finetune.lora.targets=[q, k, v]",
        ]
    )
    assert cfg.train.lr == 1e-4 and cfg.train.betas == (0.8, 0.9)
    assert cfg.data.spec_augment is None and cfg.data.crop_seconds == 2.5
    assert cfg.backend.k == 3 and tuple(cfg.finetune.lora.targets) == ("q", "k", "v")
    path = tmp_path / "exp.yaml"
    cfg.save(path)
    again = load_experiment_config(path)
    assert again == cfg
    assert load_experiment_config(path, ["train.epochs=2"]).train.epochs == 2


def test_partial_yaml_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "paper_like.yaml"
    path.write_text(
        "backbone: {name: beats, checkpoint: BEATs_iter3.pt}\n"
        "finetune: {strategy: lora, lora: {r: 16, alpha: 16}}\n"
        "head: {embed_dim: 64}\n"
        "train: {epochs: 3}\n"
    )
    cfg = load_experiment_config(path)
    default = ExperimentConfig()
    assert cfg.finetune.lora.r == 16 and cfg.head.embed_dim == 64 and cfg.train.epochs == 3
    assert cfg.train.lr == default.train.lr
    assert (cfg.data, cfg.backend, cfg.threshold, cfg.scoring) == (
        default.data,
        default.backend,
        default.threshold,
        default.scoring,
    )


def test_bad_keys_and_values_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys are"):
        ExperimentConfig().override(["train.learning_rate=1"])
    with pytest.raises(ConfigError, match=r"valid choices|not a valid choice"):
        ExperimentConfig().override(["train.schedule=exponential"])
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=-1)
    with pytest.raises(ConfigError, match="crop_seconds"):
        DataConfig(crop_seconds=-2.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_experiment_config(bad)


def test_shipped_configs_load() -> None:
    paths = sorted((REPO / "configs").glob("*.yaml")) + sorted(
        (REPO / "configs" / "paper").glob("*.yaml")
    )
    assert any(p.name == "default.yaml" for p in paths)
    for path in paths:
        cfg = load_experiment_config(path)
        assert isinstance(cfg, ExperimentConfig), path
    # configs/default.yaml spells out exactly the defaults of the fine-tuning recipe
    assert load_experiment_config(REPO / "configs" / "default.yaml") == ExperimentConfig(
        name="default", recipe="finetune"
    )
    for path in sorted((REPO / "configs" / "baselines").glob("*.yaml")):
        assert load_experiment_config(path).check_recipe() in ("fewshot", "finetune"), path


def test_renamed_keys_still_load() -> None:
    """``segment_seconds`` (data and scoring) was renamed: old files, artifacts and --set work."""
    old = ExperimentConfig().to_dict()
    old["data"]["segment_seconds"] = old["data"].pop("crop_seconds")
    old["scoring"]["segment_seconds"] = old["scoring"].pop("window_seconds")
    old["data"]["segment_seconds"], old["scoring"]["segment_seconds"] = 1.5, 0.5
    cfg = ExperimentConfig.from_dict(old)
    assert (cfg.data.crop_seconds, cfg.scoring.window_seconds) == (1.5, 0.5)
    assert "segment_seconds" not in cfg.to_json()  # written with today's names
    via_set = ExperimentConfig().override(
        ["data.segment_seconds=2.5", "scoring.segment_seconds=null"]
    )
    assert via_set.data.crop_seconds == 2.5 and via_set.scoring.window_seconds is None
    both = ExperimentConfig().to_dict()
    both["data"]["segment_seconds"] = 1.0
    with pytest.raises(ConfigError, match="keep only 'crop_seconds'"):
        ExperimentConfig.from_dict(both)


# -- the recipe: explicit, never silently ignored (issue #20 item 4) ---------------------------

ENSEMBLE_YAML = (
    "ensemble:\n  members:\n    - name: logmel-stats-knn\n"
    "      feature: {backbone: logmel, pool: mean+max}\n"
    "      backend: {kind: knn, k: 1, standardise: std}\n"
)


def test_recipe_is_stated_or_implied_by_the_sections() -> None:
    assert ExperimentConfig().recipe is None  # says nothing: the default (few-shot) recipe
    assert ExperimentConfig().check_recipe() == "fewshot"
    # fine-tuning settings imply the fine-tuning recipe (Python and --config files)
    assert ExperimentConfig().override(["train.epochs=2"]).check_recipe() == "finetune"
    assert ExperimentConfig().override(["data.crop_seconds=1.5"]).check_recipe() == "finetune"
    # a file that lists a fine-tuning section fine-tunes, even with default values
    default = load_experiment_config(REPO / "configs" / "default.yaml")
    assert default.recipe == "finetune" and default.check_recipe() == "finetune"
    for path in sorted((REPO / "configs" / "paper").glob("*.yaml")):
        assert load_experiment_config(path).check_recipe() == "finetune", path
    fewshot = load_experiment_config(REPO / "configs" / "fewshot_mn04.yaml")
    assert fewshot.recipe == "fewshot" and fewshot.check_recipe() == "fewshot"
    # data / threshold / name apply to both: they say nothing about the recipe
    shared = ExperimentConfig.from_dict({"name": "x", "data": {"machines": ["fan"]}})
    assert shared.recipe is None and shared.check_recipe() == "fewshot"
    assert ExperimentConfig().override(["recipe=finetune"]).check_recipe() == "finetune"


def test_fine_tuning_settings_with_the_fewshot_recipe_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(ENSEMBLE_YAML + "train: {epochs: 3}\nfinetune: {strategy: full}\n")
    with pytest.raises(ConfigError, match="few-shot recipe") as err:
        load_experiment_config(path)
    msg = str(err.value)
    assert "train.epochs=3" in msg and "finetune.strategy=full" in msg
    assert "recipe=finetune" in msg and "configs/" in msg
    # the same through overrides of an ensemble config
    with pytest.raises(ConfigError, match=r"scoring.window_seconds=2.0 does not apply"):
        load_experiment_config(REPO / "configs" / "fewshot_mn04.yaml", ["scoring.window_seconds=2"])
    with pytest.raises(ConfigError, match=r"data.spec_augment=null does not apply"):
        ExperimentConfig(recipe="fewshot").override(["data.spec_augment=null"]).check_recipe()
    # settings the ensemble reads are fine
    ok = load_experiment_config(
        REPO / "configs" / "fewshot_mn04.yaml",
        ["threshold.quantile=0.95", "data.machines=[fan]", "name=x", "ensemble.combine=max"],
    )
    assert ok.check_recipe() == "fewshot" and ok.threshold.quantile == 0.95


def test_ensemble_settings_with_the_finetune_recipe_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text("recipe: finetune\n" + ENSEMBLE_YAML)
    with pytest.raises(ConfigError, match="does not apply to the fine-tuning recipe"):
        load_experiment_config(path)
    with pytest.raises(ConfigError, match=r"ensemble.combine=max does not apply to the fine-tun"):
        load_experiment_config(REPO / "configs" / "default.yaml", ["ensemble.combine=max"])


def test_saved_configs_with_ignored_settings_still_load() -> None:
    """Detectors saved before the check (settings then ignored) load; only runs are refused."""
    data = ExperimentConfig().to_dict()
    del data["recipe"]
    data["ensemble"] = {"members": [{"name": "logmel-stats-knn"}]}
    data["train"]["epochs"] = 3
    cfg = ExperimentConfig.from_dict(data)
    assert cfg.recipe == "fewshot" and cfg.train.epochs == 3
    with pytest.raises(ConfigError, match=r"train\.epochs=3 does not apply"):
        cfg.check_recipe()
