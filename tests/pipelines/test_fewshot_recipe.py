"""The default few-shot recipe and its `--pretrained` form."""

from __future__ import annotations

from pathlib import Path

from stetho.pipelines.fewshot import fewshot_config


def test_pretrained_keeps_both_members_with_robust_weights() -> None:
    cfg = fewshot_config("mn04.pt")
    assert cfg.ensemble is not None
    members = cfg.ensemble.members
    assert [m.backend.standardise for m in members] == ["std", "whiten"]
    assert members[1].feature.checkpoint == "mn04.pt"
    # robust-z fusion: every member kept, weights from the held-out normal spread
    assert cfg.ensemble.selection.weighting == "robust" and cfg.ensemble.combine == "mean"


def test_default_is_three_weight_free_views_fisher_combined() -> None:
    cfg = fewshot_config()
    assert cfg.ensemble is not None
    members = cfg.ensemble.members
    assert [m.feature.backbone for m in members] == ["logmel"] * 3
    assert [m.feature.checkpoint for m in members] == [None] * 3  # no weights needed
    assert [(m.feature.overrides.get("mel_scale", "slaney"), m.feature.overrides.get("view",
            "logmel"), m.feature.pool) for m in members] == [
        ("slaney", "logmel", "mean+max"), ("htk", "logmel", "mean+max"),
        ("htk", "cepstrum", "mean+std")]  # fmt: skip
    assert all(m.backend.label() == "knn1-euclidean/std" for m in members)
    # every member kept with equal weight, combined by Fisher's method
    assert cfg.ensemble.combine == "fisher" and not cfg.ensemble.selection.enabled


def test_default_config_round_trips_through_its_saved_form() -> None:
    cfg = fewshot_config()
    again = type(cfg).from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert again.ensemble is not None and again.ensemble.combine == "fisher"


def test_the_default_written_out_in_docs_fewshot_md_is_the_default(tmp_path: Path) -> None:
    from stetho.config import load_experiment_config

    doc = (Path(__file__).resolve().parents[2] / "docs" / "fewshot.md").read_text("utf-8")
    block = doc.split("## Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "default.yaml").write_text("name: fewshot\n" + block, encoding="utf-8")
    written = load_experiment_config(tmp_path / "default.yaml")
    assert written.ensemble is not None and fewshot_config().ensemble is not None
    assert written.ensemble.to_dict() == fewshot_config().ensemble.to_dict()
