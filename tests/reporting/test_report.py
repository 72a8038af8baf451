"""The HTML report: every section, decodable images, self-contained, rendered by Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stetho.evaluation import EvaluationResult
from stetho.reporting import ReportSourceError, build_report

RUN_SECTIONS = [
    "summary",
    "official-table",
    "paper-table",
    "per-section",
    "embeddings",
    "explanations",
    "training",
    "robustness",
]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _images(html: str) -> list[Image.Image]:
    out = []
    for data in _IMG.findall(html):
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()  # decodes every pixel
        out.append(img)
    return out


@pytest.fixture(scope="module")
def demo_report(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = build_report(demo_dir, out, progress=False)
    assert result.sections == RUN_SECTIONS
    assert result.notes == []  # nothing missing for a demo folder with a noise curve
    return result.html


def test_report_has_every_section_and_decodable_images(demo_report: Path, demo_dir: Path) -> None:
    html = demo_report.read_text(encoding="utf-8")
    for sid in RUN_SECTIONS:
        assert f'<section id="{sid}">' in html
        assert "Not available" not in html.split(f'<section id="{sid}">')[1].split("</section>")[0]
    images = _images(html)
    files = sorted((demo_report.parent / "figures").glob("*.png"))
    assert len(images) == len(files) >= 2 * 2 + 2 + 2 + 2  # ROC+hist per section, maps, ...
    for img in images:
        assert img.format == "PNG" and min(img.size) > 100
        assert np.asarray(img.convert("L"), dtype=np.float64).std() > 5  # not blank
    for f in files:  # the PNG files are the embedded images
        assert base64.b64encode(f.read_bytes()).decode() in html
    # self-contained: nothing is fetched
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html and "<link" not in html
    # the official numbers are those of the run's own evaluation
    ev = EvaluationResult.from_dict(
        __import__("json").loads((demo_dir / "run/evaluation/results.json").read_text())
    )
    assert f"Ω = {ev.official_score:.4f}" in html
    # the training figure has data to draw: metrics.csv columns as the report reads them
    from stetho.reporting.sources import read_csv_rows

    rows = read_csv_rows(demo_dir / "run" / "train" / "metrics.csv")
    assert any(r["kind"] in ("step", "epoch") and r["loss"] and r["lr"] for r in rows)
    assert any(r["kind"] == "epoch" and r["val_official_score"] for r in rows)


def test_report_explains_the_top_clip_of_each_section(demo_report: Path) -> None:
    html = demo_report.read_text(encoding="utf-8")
    part = html.split('<section id="explanations">')[1].split("</section>")[0]
    assert part.count("<img") == 2  # fan and valve, one clip each
    assert part.count("nearest normal clip: section_00_") == 2  # bank clips are named


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(demo_report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
        f"--screenshot={shot}", "--window-size=1280,2000", demo_report.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, env={**os.environ})
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (2000, 1280)
    assert img.var() > 100  # rendered text and figures, not a blank page
    # the figures are drawn: many distinct grey levels, not just text on white
    assert len(np.unique(img)) > 50


def test_scores_folder_of_a_run_finds_its_run(demo_dir: Path, tmp_path: Path) -> None:
    result = build_report(
        demo_dir / "run" / "scores", tmp_path, truth=demo_dir / "data", explain_top=0,
        progress=False,
    )  # fmt: skip
    # RUN/scores is recognised as part of its run: detector, curves and noise results are used
    assert not [n for n in result.notes if "Training" in n or "Embedding" in n or "Robust" in n]
    assert result.evaluation is not None and not result.evaluation.partial


def test_bare_submission_folder_reports_what_is_missing(demo_dir: Path, tmp_path: Path) -> None:
    scores = tmp_path / "scores"
    shutil.copytree(demo_dir / "run" / "scores", scores)
    result = build_report(scores, tmp_path / "out", truth=demo_dir / "data", progress=False)
    html = result.html.read_text()
    for sid in RUN_SECTIONS:
        assert f'<section id="{sid}">' in html
    assert any("Training curves" in n for n in result.notes)
    assert any("Embedding map" in n for n in result.notes)
    assert result.evaluation is not None
    # thresholds are recovered from the decision files
    assert "decision threshold unknown" not in html


def test_run_without_truth_finds_its_dataset_or_falls_back_to_results(
    demo_dir: Path, tmp_path: Path
) -> None:
    # the detector's bank_clips.json points at the dataset it was fitted on
    found = build_report(demo_dir / "run", tmp_path / "a", explain_top=0, progress=False)
    assert found.evaluation is not None and not any("pass --truth" in n for n in found.notes)
    assert "Not available" not in found.html.read_text().split('id="per-section"')[1][:400]
    # without it (an older detector folder) the run's evaluation/results.json fills the tables
    run = tmp_path / "run"
    shutil.copytree(demo_dir / "run", run)
    (run / "detector" / "bank_clips.json").unlink()
    (run / "run.json").unlink(missing_ok=True)  # runs before run.json existed
    result = build_report(run, tmp_path / "b", explain_top=0, progress=False)
    assert result.evaluation is not None
    assert result.evaluation.official_score == found.evaluation.official_score
    assert any("pass --truth" in n for n in result.notes)


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportSourceError, match="not a run folder"):
        build_report(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "missing", tmp_path / "out")


def test_report_cli(demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stetho.cli import main

    assert main(["report", str(demo_dir), "--out", str(tmp_path), "--explain-top", "0"]) == 0
    assert "report written to" in capsys.readouterr().out
    assert (tmp_path / "report.html").is_file()


def test_sweep_report_compares_configs(demo_dir: Path, tmp_path: Path) -> None:
    import yaml

    from stetho.pipelines import demo_config, run_sweep

    configs = []
    for name, lr in (("slow", "1e-4"), ("fast", "1e-3")):
        cfg = demo_config().override(["train.epochs=1", f"train.lr={lr}"]).replace(name=name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict()))
        configs.append(path)
    sweep = run_sweep(configs, demo_dir / "data", tmp_path / "sweep", progress=False)
    result = build_report(tmp_path / "sweep", tmp_path / "report", progress=False)
    assert result.sections == ["summary", "sweep", "training"]
    html = result.html.read_text()
    images = _images(html)
    assert len(images) == 3  # the comparison figure + one training figure per config
    for row in sweep.rows:
        assert f"<td>{row['name']}</td>" in html
        assert f"{row['official_score']:.4f}" in html


def test_log_score_axis_labels_plain_numbers_without_crowded_minor_labels() -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from stetho.reporting.figures import _log_axis

    fig, ax = plt.subplots()
    ax.hist(np.geomspace(0.2, 6.0, 50), bins=np.geomspace(0.2, 6.0, 21))  # < 1.5 decades
    _log_axis(ax)
    fig.canvas.draw()
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert minor == []  # matplotlib's default labels every minor tick on a short log range
    assert {"0.2", "0.5", "1", "2", "5"} <= set(major) and not any("times" in m for m in major)
