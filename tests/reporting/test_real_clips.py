"""Report and explanations on the real DCASE 2023 clips of the shared folder (skipped without it)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from stetho.data import scan_dataset
from stetho.pipelines import score_dataset
from stetho.reporting import build_report, explain_file

from .conftest import tiny_detector

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def mini_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A frozen log-mel detector fitted on the 14 real training clips; the 14 test clips scored."""
    root = shared_dir / "data" / "dcase2023t2_mini"
    run = tmp_path_factory.mktemp("mini_run")
    table = scan_dataset(root)
    det = tiny_detector().fit(table.filter(split="train"))
    det.save(run / "detector")
    score_dataset(det, root, run / "scores", progress=False)
    return root, run


def test_report_on_real_clips(mini_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, run = mini_run
    result = build_report(run, tmp_path, truth=root, progress=False)
    html = result.html.read_text(encoding="utf-8")
    for sid in ("summary", "official-table", "paper-table", "per-section", "embeddings"):
        assert f'<section id="{sid}">' in html
    ev = result.evaluation
    assert ev is not None and len(ev.sections) == 7  # 7 machine types, 2 test clips each
    assert ev.partial  # sections with one class: metrics left out, clearly marked
    assert "partial" in html
    part = html.split('<section id="explanations">')[1].split("</section>")[0]
    assert part.count("<img") == 7


def test_explanation_names_a_real_training_clip(mini_run: tuple[Path, Path]) -> None:
    from stetho.detector import Detector

    root, run = mini_run
    det = Detector.load(run / "detector")
    clip = next(c for c in scan_dataset(root) if c.split == "test" and c.label == "anomaly")
    ex = explain_file(det, clip.path)
    assert ex.machine == clip.machine
    train = {c.name for c in scan_dataset(root) if c.split == "train" and c.machine == clip.machine}
    assert ex.nearest_name in train
    assert ex.window_scores.size >= 10  # 10 s clip, 1 s windows, 0.5 s hop
    assert ex.spectrogram.shape[0] == 128 and ex.nearest_spectrogram is not None


def test_report_of_a_default_run_on_real_clips(
    shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``stetho train`` (default few-shot) then ``stetho report RUN`` with no --truth."""
    import stetho
    from stetho.cli import main

    root = shared_dir / "data" / "dcase2023t2_mini"
    run = tmp_path_factory.mktemp("default_run") / "run"
    out = run.parent / "report"
    assert main(["train", "--data", str(root), "--out", str(run)]) == 0
    assert main(["report", str(run), "--out", str(out), "--explain-top", "1"]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    names = {p.name for p in (out / "figures").glob("*.png")}
    machines = {c.machine for c in scan_dataset(root)}
    for m in machines:  # every figure of every section
        assert {f"roc_{m}_00.png", f"hist_{m}_00.png", f"map_pca_{m}_00.png"} <= names
    part = html.split('<section id="explanations">')[1].split("</section>")[0]
    assert part.count("<img") == len(machines) == 7
    train = {c.name for c in scan_dataset(root) if c.split == "train"}
    named = re.findall(r"nearest normal clip: (\S+\.wav)", part)
    assert len(named) == 7 and set(named) <= train
    det = stetho.load_detector(run / "detector")
    assert det.kind == "fewshot"
    # 2 training clips per machine: the largest held-out score, flagged as not promising α
    assert all(math.isfinite(t) for t in det.thresholds.values())
    fits = det.describe()["threshold_fits"]
    assert fits and all(f["achievable"] is False for f in fits.values())
