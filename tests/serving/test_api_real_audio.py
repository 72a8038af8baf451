"""Real clips through the API score as through ``stetho detect`` (frozen EfficientAT mn04)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stetho.config import ExperimentConfig
from stetho.data import scan_dataset
from stetho.detector import Detector
from stetho.serving import (
    BackgroundServer,
    DetectorEntry,
    DetectorRegistry,
    ScoringService,
    create_app,
    score_paths,
)
from stetho.training import train


@pytest.mark.shared
def test_real_clips_score_the_same_over_http_and_detect(
    shared_dir: Path, mn04_checkpoint: Path, tmp_path: Path
) -> None:
    table = scan_dataset(shared_dir / "data" / "dcase2023t2_mini")
    train_clips, test_clips = table.filter(split="train"), table.filter(split="test")
    cfg = ExperimentConfig().override(
        [
            "backbone.name=efficientat-mn04",
            f"backbone.checkpoint={mn04_checkpoint}",
            "finetune.strategy=frozen",
            "head.embed_dim=null",
            "train.epochs=0",
            "train.tensorboard=false",
            "threshold.method=percentile",
        ]
    )
    det = Detector.from_training(train(cfg, train_clips, tmp_path / "train", progress=False))
    det.fit(train_clips)
    # 14 real 16 kHz test clips (resampled to the model's 32 kHz on both paths) and two real
    # 8-channel MIMII fan recordings (channel 0 scored on both paths)
    jobs = [(c.path, c.machine) for c in test_clips]
    jobs += [
        (shared_dir / "data" / "mimii_8ch" / f"fan_{k}.wav", "fan") for k in ("normal", "abnormal")
    ]
    service = ScoringService(DetectorRegistry([DetectorEntry("mn04", det, tmp_path / "mn04")]))
    diffs = []
    with (
        BackgroundServer(create_app(service), service.limits) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        for path, machine in jobs:
            (rec,) = score_paths(det, [path], machine=machine, section="00")
            got = client.post(
                "/v1/score", params={"machine": machine, "section": "00"}, content=path.read_bytes()
            )
            assert got.status_code == 200, got.text
            assert rec.score is not None
            diffs.append(abs(got.json()["score"] - rec.score))
            assert got.json()["decision"] == rec.decision
    print(f"\nAPI vs detect on {len(jobs)} real clips: max |Δscore| = {max(diffs):.3g}")
    assert len(jobs) == 16 and max(diffs) <= 1e-6
