"""Explain, evaluate --noise and report on every detector kind, through the detector contract.

Kinds: the few-shot ensemble (``stetho train``'s default, ``EnsembleDetector(default_config())``),
the k-NN detector (weight-free log-mel backbone) and the autoencoder baseline (one epoch).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import stetho
from stetho.data import scan_dataset
from stetho.detector import BaseDetector
from stetho.evaluation import evaluate, truth_from_clips
from stetho.pipelines import default_config, run_training
from stetho.pipelines.common import write_scores
from stetho.reporting import build_report, plot_explanation
from stetho.reporting.sources import RUN_JSON

from .conftest import tiny_detector

KINDS = ["fewshot", "knn"]
_THR = re.compile(r'data-key="([^"]+)" data-threshold="([^"]+)"')


def _fit(kind: str, root: Path) -> BaseDetector:
    train = scan_dataset(root).filter(split="train")
    if kind == "fewshot":
        from stetho.detector.ensemble import EnsembleDetector

        return EnsembleDetector(default_config()).fit(train)
    if kind == "knn":
        return tiny_detector().fit(train)
    from stetho.baselines.autoencoder import AEBaselineConfig, train_ae_baseline
    from stetho.detector.autoencoder import AutoencoderDetector

    cfg = AEBaselineConfig(epochs=1, batch_size=64, lr=3e-3, bn_momentum=0.1)
    return AutoencoderDetector(train_ae_baseline(train, cfg))


@pytest.fixture(scope="module")
def make_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Build (once per kind) a run folder (detector/ + scores/) on the synthetic dataset."""
    runs: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in runs:
            run = tmp_path_factory.mktemp(f"run_{kind}")
            det = _fit(kind, synth_root)
            det.save(run / "detector")
            test = [c for c in scan_dataset(synth_root) if c.split == "test"]
            write_scores(det, det.score_clips(test), run / "scores", 2023, "plain")
            if kind == "autoencoder":  # no bank clip paths: the run says where its data is
                (run / RUN_JSON).write_text(json.dumps({"data_root": str(synth_root)}))
            runs[kind] = run
        return runs[kind]

    return make


@pytest.fixture(params=[*KINDS, "autoencoder"])
def kind_run(request: pytest.FixtureRequest, make_run) -> tuple[str, Path]:  # type: ignore[no-untyped-def]
    """A run folder of each kind."""
    return str(request.param), make_run(str(request.param))


def _anomaly(root: Path) -> Path:
    return next(c.path for c in scan_dataset(root) if c.split == "test" and c.label == "anomaly")


def test_explain_names_the_nearest_normal_recording(
    kind_run: tuple[str, Path],
    synth_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stetho.cli import main

    kind, run = kind_run
    clip = _anomaly(synth_root)
    out = tmp_path / "ex"
    assert main(["explain", str(clip), "--detector", str(run / "detector"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / f"{clip.stem}.json").read_text())
    det = stetho.load_detector(run / "detector")
    # the clip's score is the detector's own
    assert doc["score"] == pytest.approx(float(det.score_files([clip], "fan", "00")[0]), rel=1e-9)
    assert (out / f"{clip.stem}.png").read_bytes().startswith(b"\x89PNG")
    if kind == "autoencoder":  # no bank: median infill, said in words
        assert doc["nearest"]["path"] is None and doc["nearest"]["domain"] is None
        assert doc["band_fill"] == "median"
        assert "no bank clip" in printed
        return
    train = {str(c.path) for c in scan_dataset(synth_root) if c.split == "train"}
    near = det.nearest(det.embed_files([clip]), ("fan", "00"))[0]
    assert near is not None and near.ref in train
    assert doc["nearest"]["path"] == near.ref and doc["band_fill"] == "nearest"
    assert doc["nearest"]["distance"] == pytest.approx(near.distance, rel=1e-9)
    assert f"nearest normal clip: {Path(near.ref).name}" in printed


@pytest.mark.parametrize("kind", KINDS)
def test_explain_localises_a_tone_burst(kind: str, make_run) -> None:  # type: ignore[no-untyped-def]
    from stetho.reporting import explain_waveform

    from .conftest import SR, hum, tone_burst

    det = stetho.load_detector(make_run(kind) / "detector")
    x = hum(np.random.default_rng(7)) + tone_burst(int(4.0 * SR), 2.2, 0.5, 3000.0)
    ex = explain_waveform(det, x, "fan", "00")
    assert ex.threshold is not None and ex.score > ex.threshold  # the burst is an anomaly
    # the one normalised score: the detector's own, above 1 exactly when anomalous
    assert ex.normalised == pytest.approx(float(det.normalise([ex.score], ("fan", "00"))[0]))
    assert ex.normalised > 1.0 and "normalised" in ex.summary()
    t0, t1 = ex.peak_seconds()
    assert abs((t0 + t1) / 2 - 2.45) <= ex.window_seconds
    injected = int(np.searchsorted(ex.band_edges, 3000.0, side="right")) - 1
    assert abs(ex.peak_band - injected) <= 1
    assert plot_explanation(ex).startswith(b"\x89PNG")


def test_evaluate_noise_cli_on_every_kind(
    kind_run: tuple[str, Path],
    synth_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stetho.cli import main

    _, run = kind_run
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "n.wav", 0.1 * np.random.default_rng(1).standard_normal(8000), 16000)
    out = tmp_path / "rob"
    argv = ["evaluate", "--noise", str(noise), "--snr", "0", "--detector", str(run / "detector")]
    assert main([*argv, "--data", str(synth_root), "--out", str(out)]) == 0
    assert "| clean |" in capsys.readouterr().out
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["snr_db"] for r in rows] == [None, 0.0]
    det = stetho.load_detector(run / "detector")
    clips = [c for c in scan_dataset(synth_root) if c.split == "test"]
    plain = evaluate(det.score_clips(clips), truth_from_clips(clips), year=2023)
    assert rows[0]["official_score"] == pytest.approx(plain.official_score, abs=1e-12)


def _thresholds_in(html: str) -> dict[str, float]:
    return {k: float(v) for k, v in _THR.findall(html)}


def test_report_draws_every_figure_at_the_detectors_own_threshold(
    kind_run: tuple[str, Path],
    synth_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stetho.reporting import figures

    kind, run = kind_run
    drawn: list[float | None] = []
    real = figures.plot_histograms

    def spy(labels, scores, domains, threshold, title):  # type: ignore[no-untyped-def]
        drawn.append(threshold)
        return real(labels, scores, domains, threshold, title)

    monkeypatch.setattr(figures, "plot_histograms", spy)
    result = build_report(run, tmp_path, progress=False)  # no --truth: the run finds its data
    html = result.html.read_text(encoding="utf-8")
    det = stetho.load_detector(run / "detector")
    own = det.thresholds[("fan", "00")]
    assert drawn == [own]
    assert _thresholds_in(html) == {"fan/00": own}
    assert result.evaluation is not None
    figs = {p.name for p in result.figures}
    assert {"roc_fan_00.png", "hist_fan_00.png"} <= figs
    assert any(n.startswith("explain_") for n in figs)
    maps = {n for n in figs if n.startswith("map_")}
    if kind == "autoencoder":
        assert not maps
        assert any("no single feature vector per clip" in n for n in result.notes)
    else:
        assert "map_pca_fan_00.png" in maps
    # plain words first: the counts are the detector's decisions
    summary = html.split('<section id="summary">')[1].split("</section>")[0]
    assert summary.index("In plain words") < summary.index("Official score")
    clips = [c for c in scan_dataset(synth_root) if c.split == "test"]
    scores = det.score_files([c.path for c in clips], "fan", "00")
    dec = det.decide(scores, ("fan", "00"))
    faulty = np.array([c.label == "anomaly" for c in clips])
    caught = f"catches {int(dec[faulty].sum())} of {int(faulty.sum())} known faulty"
    assert caught in summary
    held = det.held_out[("fan", "00")].scores if ("fan", "00") in det.held_out else []
    if len(held):  # a detector built without fit (the AE here) has no held-out scores
        flagged = int(det.decide(held, ("fan", "00")).sum())
        assert f"flags {flagged} of {len(held)} as anomalous" in summary


@pytest.fixture(scope="module")
def default_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run_training`` with the default recipe (what ``stetho train`` builds) on labelled clips."""
    out = tmp_path_factory.mktemp("default_run")
    run_training(default_config(), synth_root, out, progress=False)
    return out


def test_report_of_a_default_run_draws_its_figures(default_run: Path, tmp_path: Path) -> None:
    from stetho.cli import main

    assert main(["report", str(default_run), "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    det = stetho.load_detector(default_run / "detector")
    assert det.kind == "fewshot"
    assert _thresholds_in(html) == {f"{m}/{s}": t for (m, s), t in det.thresholds.items()}
    names = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"roc_fan_00.png", "hist_fan_00.png", "map_pca_fan_00.png"} <= names
    assert any(n.startswith("explain_") for n in names)
    for sid in ("per-section", "embeddings", "explanations"):
        part = html.split(f'<section id="{sid}">')[1].split("</section>")[0]
        assert "Not available" not in part


def test_run_json_names_the_runs_data(default_run: Path, synth_root: Path, tmp_path: Path) -> None:
    from stetho.reporting.sources import locate

    run = tmp_path / "run"
    shutil.copytree(default_run, run)
    moved = shutil.copytree(synth_root, tmp_path / "moved")
    (run / RUN_JSON).write_text(json.dumps({"data_root": str(moved)}))
    assert locate(run).truth == moved
    (run / RUN_JSON).write_text(json.dumps({"data_root": str(tmp_path / "gone")}))
    assert locate(run).truth == synth_root  # gone: the detector's bank clips still point home
    assert locate(run, truth=moved).truth == moved  # --truth wins
