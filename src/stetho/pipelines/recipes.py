"""The default recipe and the config ``stetho train`` builds, shared by the CLI and Python.

::

    cfg = default_config()                                   # = stetho train (no --config)
    cfg = training_config(None, ["threshold.quantile=0.95"]) # = stetho train --set ...
    cfg = training_config("configs/default.yaml", ["train.epochs=3"])   # fine-tuning
    run_training(ExperimentConfig(), data, out)              # says nothing: the default recipe

A config builds one of two recipes (``ExperimentConfig.recipe``, see :mod:`stetho.config`): the
training-free few-shot ensemble (the default) or the paper's fine-tuning + k-NN. A setting of the
other recipe is a :class:`~stetho.utils.config.ConfigError` naming the recipe and how to choose
the other one, never silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import yaml

from stetho.config import ExperimentConfig, load_experiment_config
from stetho.pipelines.fewshot import fewshot_config
from stetho.utils.config import ConfigError

__all__ = ["default_config", "resolve_recipe", "training_config"]


def default_config(pretrained: str | None = None) -> ExperimentConfig:
    """The default recipe: the training-free few-shot ensemble (``stetho train`` without ``--config``).

    Args:
        pretrained: ``None``: the weight-free member only. A checkpoint of EfficientAT mn04
            (``stetho train --pretrained``) adds the frozen mn04 member (members in
            :func:`stetho.pipelines.fewshot.fewshot_config`, ``docs/fewshot.md``).
    """
    return fewshot_config(pretrained)


def _stated_recipe(overrides: Sequence[str]) -> str | None:
    """The value of the last ``recipe=...`` override, if any."""
    stated = None
    for item in overrides:
        key, _, raw = item.partition("=")
        if key.strip() == "recipe":
            stated = yaml.safe_load(raw) if raw.strip() else None
    return None if stated is None else str(stated)


def training_config(
    config: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    pretrained: str | None = None,
) -> ExperimentConfig:
    """The config ``stetho train [--config FILE] [--set ...] [--pretrained CKPT]`` runs.

    Without ``config`` it starts from :func:`default_config` (``--set recipe=finetune`` starts
    from the fine-tuning defaults, those of ``configs/default.yaml``, instead); with ``config``
    from that file. ``overrides`` are then applied and the result checked against its recipe.

    Raises:
        ConfigError: a setting that does not apply to the recipe (e.g. ``finetune.strategy=full``
            without a fine-tuning config), ``pretrained`` with ``config`` or with the
            fine-tuning recipe, an unknown key or a bad value.
    """
    if config is not None:
        if pretrained is not None:
            raise ConfigError(
                f"--pretrained builds the few-shot recipe with the mn04 member and does not "
                f"apply with --config {config}: set the member's feature.checkpoint in the "
                "config's ensemble section (see configs/fewshot_mn04.yaml), or drop --config"
            )
        return load_experiment_config(config, overrides)
    if _stated_recipe(overrides) == "finetune":
        if pretrained is not None:
            raise ConfigError(
                "--pretrained builds the few-shot recipe with the mn04 member and does not "
                "apply with recipe=finetune: set backbone.name and backbone.checkpoint instead"
            )
        base = ExperimentConfig(recipe="finetune")
    else:
        base = default_config(pretrained)
    cfg = base.override(list(overrides)) if overrides else base
    cfg.check_recipe()
    return cfg


def resolve_recipe(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` checked, with the recipe stated: what :func:`~stetho.pipelines.run_training` runs.

    A config that says nothing about the recipe becomes :func:`default_config` (keeping its
    ``name`` unless that is the default, and its ``data`` and ``threshold``), so
    ``run_training(ExperimentConfig(), ...)`` builds what ``stetho train`` builds. A few-shot
    config without ``ensemble`` gets the default members. Fine-tuning configs are returned as
    they are (a resumed training run compares its config with the checkpoint's).

    Raises:
        ConfigError: see :meth:`ExperimentConfig.check_recipe`.
    """
    if cfg.check_recipe() == "finetune" or cfg.ensemble is not None:
        return cfg
    default = default_config()
    name = default.name if cfg.name == ExperimentConfig().name else cfg.name
    return cfg.replace(name=name, recipe=default.recipe, ensemble=default.ensemble)
