"""The DCASE autoencoder baseline: architecture, Mahalanobis quirk, tiny training run, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stetho.baselines.autoencoder import (
    AEBaseline,
    AEBaselineConfig,
    DenseAE,
    mahalanobis_pairwise_mean,
    selective_mahalanobis,
    train_ae_baseline,
)
from stetho.data import generate_synthetic_dataset, load_audio, scan_dataset
from stetho.detector import DetectorError, Scorer, load_scorer
from stetho.evaluation import auc_score
from stetho.frontend.librosa_mel import baseline_vectors
from stetho.pipelines import run_ae_baseline
from stetho.scoring.threshold import fit_threshold

# Tiny but learnable: 1 s clips, BatchNorm running statistics that settle in a few epochs.
TINY = AEBaselineConfig(epochs=20, batch_size=64, lr=3e-3, bn_momentum=0.1)


def test_config_defaults_follow_the_protocol() -> None:
    cfg = AEBaselineConfig()
    assert (cfg.features.n_mels, cfg.features.frames, cfg.features.dim) == (128, 5, 640)
    assert (cfg.features.n_fft, cfg.features.hop_length, cfg.features.power) == (1024, 512, 2.0)
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (100, 256, 1e-3)
    assert (cfg.validation_split, cfg.seed) == (0.1, 13711)
    assert (cfg.bn_momentum, cfg.bn_eps) == (0.01, 1e-3)
    assert (cfg.threshold.method, cfg.threshold.quantile) == ("gamma-dcase", 0.9)
    assert AEBaselineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        AEBaselineConfig(validation_split=1.0)


def test_dense_ae_architecture() -> None:
    model = DenseAE()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    dims = [(m.in_features, m.out_features) for m in linears]
    assert dims == [
        (640, 128), (128, 128), (128, 128), (128, 128), (128, 8),
        (8, 128), (128, 128), (128, 128), (128, 128), (128, 640),
    ]  # fmt: skip
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 9  # every layer but the linear output, the 8-d bottleneck included
    assert all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    assert isinstance(model.decoder[-1], nn.Linear)  # linear output
    assert isinstance(model.encoder[-1], nn.ReLU)
    model.eval()
    recon, z = model(torch.randn(3, 640))
    assert recon.shape == (3, 640) and z.shape == (3, 8)
    n_params = sum(p.numel() for p in model.parameters())
    expected = (640 * 128 + 128) + 3 * (128 * 128 + 128) + (128 * 8 + 8)  # encoder linears
    expected += (8 * 128 + 128) + 3 * (128 * 128 + 128) + (128 * 640 + 640)  # decoder linears
    expected += 2 * (8 * 128 + 8)  # BatchNorm affine
    assert n_params == expected


def test_mahalanobis_quirk_identity() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.standard_normal((35, 16)) + 0.3  # 7 vectors × 5 frames, 16-d blocks
    a = rng.standard_normal((16, 16))
    p_s = a @ a.T + 16 * np.eye(16)
    b = rng.standard_normal((16, 16))
    p_t = b @ b.T + 4 * np.eye(16)
    # baseline: mean over all block pairs of r_i^T P r_j (the (M, M) matrix), computed naively
    naive = np.mean([[ri @ p_s @ rj for rj in blocks] for ri in blocks])
    assert mahalanobis_pairwise_mean(blocks, p_s) == pytest.approx(naive, rel=1e-12)
    r_bar = blocks.mean(axis=0)
    assert naive == pytest.approx(r_bar @ p_s @ r_bar, rel=1e-10)
    # selective: the minimum of the two domains
    d_s = mahalanobis_pairwise_mean(blocks, p_s)
    d_t = mahalanobis_pairwise_mean(blocks, p_t)
    assert selective_mahalanobis(blocks, p_s, p_t) == pytest.approx(min(d_s, d_t), rel=1e-10)
    # non-faithful: mean per-frame distance, a different (larger) value
    per_frame = min(np.mean([ri @ p @ ri for ri in blocks]) for p in (p_s, p_t))
    got = selective_mahalanobis(blocks, p_s, p_t, faithful=False)
    assert got == pytest.approx(per_frame, rel=1e-10)
    assert got > selective_mahalanobis(blocks, p_s, p_t) * 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("synth"),
        machines=("fan",),
        n_train_source=16,
        n_train_target=4,
        n_test_per_group=10,
        seconds=1.0,
        seed=1,
    )
    out = tmp_path_factory.mktemp("ae_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is faster on a shared 2-core machine
    try:
        result = run_ae_baseline(root, out, mode="mahala", epochs=TINY.epochs, cfg=TINY)
    finally:
        torch.set_num_threads(threads)
    return root, out, result


def test_tiny_training_run_beats_chance(tiny_run: tuple[Path, Path, object]) -> None:
    root, out, result = tiny_run
    model = AEBaseline.load(out / "detector")
    assert model.keys == [("fan", "00")]
    test = list(scan_dataset(root).filter(split="test"))
    y = np.array([c.label == "anomaly" for c in test], dtype=int)
    paths = [c.path for c in test]
    for mode in ("mse", "mahala"):
        auc = auc_score(y, model.score_files(paths, "fan", "00", mode=mode))
        assert auc > 0.7, f"{mode}: AUC {auc:.3f} does not beat chance clearly"
    # the end-to-end run wrote submission files and evaluated them
    assert result.official_score > 0.55  # type: ignore[attr-defined]
    assert (out / "scores" / "anomaly_score_fan_section_00_test.csv").is_file()
    assert (out / "scores" / "decision_result_fan_section_00_test.csv").is_file()
    assert (out / "evaluation" / "results.json").is_file()
    rows = (out / "scores" / "anomaly_score_fan_section_00_test.csv").read_text().splitlines()
    assert len(rows) == len(test)


def test_mahalanobis_score_uses_mean_residual(tiny_run: tuple[Path, Path, object]) -> None:
    root, out, _ = tiny_run
    model = AEBaseline.load(out / "detector")
    key = ("fan", "00")
    clip = next(iter(scan_dataset(root).filter(split="test", label="anomaly")))
    wave, sr = load_audio(clip.path)
    sec = model.sections[key]
    with torch.no_grad():
        x = torch.from_numpy(baseline_vectors(wave, sr))
        res = (x - sec.model(x)[0]).double().numpy()  # (V, 640)
    blocks = res.reshape(-1, 128)  # (5V, 128)
    p_s, p_t = np.linalg.inv(sec.cov_source), np.linalg.inv(sec.cov_target)
    want = min(mahalanobis_pairwise_mean(blocks, p) for p in (p_s, p_t))
    got = model.score([wave], key, "mahala", faithful=True)[0]
    assert got == pytest.approx(want, rel=1e-6)
    want_mse = float(np.mean(res**2))
    assert model.score([wave], key, "mse")[0] == pytest.approx(want_mse, rel=1e-6)
    # covariances are symmetric positive definite; thresholds exist for all score kinds
    for cov in (sec.cov_source, sec.cov_target):
        np.testing.assert_allclose(cov, cov.T, atol=1e-9)
        assert np.linalg.eigvalsh(cov).min() > 0
    assert set(sec.thresholds) == {"mse", "mahala", "mahala-frame"}


def test_save_load_gives_identical_scores(
    tiny_run: tuple[Path, Path, object], tmp_path: Path
) -> None:
    root, out, _ = tiny_run
    model = AEBaseline.load(out / "detector")
    model.save(tmp_path / "again")
    again = AEBaseline.load(tmp_path / "again")
    paths = [c.path for c in scan_dataset(root).filter(split="test")][:6]
    for mode in ("mse", "mahala"):
        for faithful in (True, False):
            a = model.score_files(paths, "fan", "00", mode=mode, faithful=faithful)
            b = again.score_files(paths, "fan", "00", mode=mode, faithful=faithful)
            np.testing.assert_array_equal(a, b)
            assert model.threshold(("fan", "00"), mode, faithful=faithful) == again.threshold(
                ("fan", "00"), mode, faithful=faithful
            )
    with pytest.raises(KeyError, match="valid: fan/00"):
        model.score([np.zeros(16000, np.float32)], ("pump", "00"))


def test_training_rejects_test_clips_and_clip_thresholds(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(
        tmp_path / "d", machines=("valve",), n_train_source=6, n_train_target=2,
        n_test_per_group=1, seconds=0.5, seed=3,
    )  # fmt: skip
    table = scan_dataset(root)
    with pytest.raises(ValueError, match="normal train clips only"):
        train_ae_baseline(table.filter(split="test"), TINY)
    cfg = TINY.replace(epochs=2, threshold_samples="clips")
    model = train_ae_baseline(table.filter(split="train"), cfg)
    key = ("valve", "00")
    train_paths = [c.path for c in table.filter(split="train")]
    for mode in ("mse", "mahala"):
        scores = model.score_files(train_paths, *key, mode=mode)
        thr = model.threshold(key, mode)
        # "clips": the gamma ppf(0.9) fitted on the per-clip scores of the training clips
        assert thr == pytest.approx(fit_threshold(scores, cfg.threshold), rel=1e-6)
        np.testing.assert_array_equal(model.decide(scores, key, mode), (scores > thr).astype(int))
    batch_thr = train_ae_baseline(
        table.filter(split="train"), cfg.replace(threshold_samples="batches")
    )
    assert batch_thr.threshold(key, "mse") != pytest.approx(model.threshold(key, "mse"), rel=1e-3)


def test_saved_baseline_is_a_scorer(tiny_run: tuple[Path, Path, object], tmp_path: Path) -> None:
    """What ``stetho detect`` / ``watch`` / ``serve`` need: the Scorer protocol, by load_scorer."""
    root, out, _ = tiny_run
    model = load_scorer(out / "detector")
    assert isinstance(model, Scorer) and isinstance(model.model, AEBaseline)
    assert model.kind == "autoencoder"
    assert (
        model.model.cfg.score_mode == "mahala"
    )  # the run's mode is what the saved baseline scores
    assert model.keys == [("fan", "00")] and model.sample_rate == 16000
    assert model.window_seconds() is None
    test = list(scan_dataset(root).filter(split="test"))[:4]
    waves = [load_audio(c.path, sr=16000)[0] for c in test]
    explicit = model.model.score(waves, ("fan", "00"), "mahala", faithful=True)
    np.testing.assert_array_equal(model.score_waveforms(waves, "fan", "00"), explicit)
    grouped = model.score_clips(test)
    assert list(grouped) == [("fan", "00")]
    np.testing.assert_array_equal([grouped[("fan", "00")][c.name] for c in test], explicit)
    thr = model.thresholds[("fan", "00")]
    assert thr == model.model.threshold(("fan", "00"), "mahala", faithful=True)
    np.testing.assert_array_equal(model.decide(explicit, "fan/00"), (explicit > thr).astype(int))
    described = model.describe()
    assert described["score_mode"] == "mahala" and described["thresholds"]["fan/00"] == thr
    # saving replaces only another AE baseline folder, never foreign data
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DetectorError, match="refusing to replace"):
        model.save(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    again = model.save(tmp_path / "copy")
    assert model.save(again) == again  # replacing a baseline folder is fine
    with pytest.raises(DetectorError, match=r"no config\.json"):
        AEBaseline.load(out / "scores")
    (foreign / "config.json").write_text('{"format": "other", "format_version": 1}')
    with pytest.raises(DetectorError, match=r"not a 'stetho\.ae_baseline' artifact"):
        AEBaseline.load(foreign)


def test_damaged_baseline_folders_are_refused_naming_the_file(
    tiny_run: tuple[Path, Path, object], tmp_path: Path
) -> None:
    import json
    import shutil

    from stetho.utils.artifact import DetectorError

    _, out, _ = tiny_run
    assert (out / "detector" / "manifest.json").is_file()
    weights = Path(shutil.copytree(out / "detector", tmp_path / "w")) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DetectorError, match=r"model\.safetensors"):
        AEBaseline.load(weights.parent)
    # without the manifest (an old folder) the damaged file is still named when it is read
    (weights.parent / "manifest.json").unlink()
    cfg = json.loads((weights.parent / "config.json").read_text())
    (weights.parent / "config.json").write_text(json.dumps({**cfg, "format_version": 1}))
    with pytest.raises(DetectorError, match=r"model\.safetensors: not a readable"):
        AEBaseline.load(weights.parent)
    # a NaN threshold in an old folder: refused, the config named
    folder = Path(shutil.copytree(out / "detector", tmp_path / "t"))
    (folder / "manifest.json").unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = 1
    first = next(iter(cfg["sections"][0]["thresholds"]))
    cfg["sections"][0]["thresholds"][first] = float("nan")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DetectorError, match=r"config\.json: threshold .* nan"):
        AEBaseline.load(folder)
