"""The default few-shot recipe and its `--pretrained` form."""

from __future__ import annotations

from stetho.pipelines.fewshot import fewshot_config


def test_pretrained_keeps_both_members_with_robust_weights() -> None:
    cfg = fewshot_config("mn04.pt")
    assert cfg.ensemble is not None
    members = cfg.ensemble.members
    assert [m.backend.standardise for m in members] == ["std", "whiten"]
    assert members[1].feature.checkpoint == "mn04.pt"
    # robust-z fusion: every member kept, weights from the held-out normal spread
    assert cfg.ensemble.selection.weighting == "robust" and cfg.ensemble.combine == "mean"


def test_default_is_one_weight_free_member() -> None:
    cfg = fewshot_config()
    assert cfg.ensemble is not None and len(cfg.ensemble.members) == 1
    assert cfg.ensemble.members[0].feature.backbone == "logmel"
    assert cfg.ensemble.selection.weighting == "proxy"
