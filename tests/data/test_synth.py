"""Synthetic dataset generator: layout, names, attribute CSV, ground truth, determinism, and a
log-mel nearest-neighbour detector that must beat chance clearly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from stetho.data import (
    generate_synthetic_dataset,
    load_audio,
    parse_clip_name,
    scan_dataset,
)
from stetho.data.synth import ANOMALY_KINDS, MARKER_FILE, synthesize_clip

TINY = dict(n_train_source=4, n_train_target=2, n_test_per_group=2, seconds=0.5)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_names_attributes_and_ground_truth(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(
        tmp_path / "syn", machines=("fan", "valve"), eval_machines=("ToyDrone",),
        sections=("00", "01"), **TINY,  # type: ignore[arg-type]
    )  # fmt: skip
    assert root == tmp_path / "syn"
    params = json.loads((root / MARKER_FILE).read_text())
    assert params["seed"] == 0 and params["eval_machines"] == ["ToyDrone"]

    table = scan_dataset(root, year=2023, check_audio=True)
    assert table.problems == []
    assert table.machines() == ["ToyDrone", "fan", "valve"]
    assert table.sections() == [(m, s) for m in table.machines() for s in ("00", "01")]
    for m in ("fan", "valve"):
        for s in ("00", "01"):
            sec = table.filter(machine=m, section=s)
            train, test = sec.filter(split="train"), sec.filter(split="test")
            assert len(train.filter(domain="source")) == 4
            assert len(train.filter(domain="target")) == 2
            assert set(train.filter(label="anomaly")) == set()
            for dom in ("source", "target"):
                for lab in ("normal", "anomaly"):
                    assert len(test.filter(domain=dom, label=lab)) == 2
            for c in sec:
                # attribute CSV joined by name and consistent with the tail
                spd, ld = dict(c.attribute_values)["spd"], dict(c.attribute_values)["ld"]
                assert c.attributes == f"spd_{spd}_ld_{ld}"
                assert c.partition == "dev" and c.seconds == 0.5
    # eval: train with domains, anonymised test, no labels
    ev = table.filter(partition="eval")
    assert len(ev.filter(split="train")) == 2 * 6
    anon = ev.filter(split="test")
    assert len(anon) == 2 * 8
    assert all(parse_clip_name(c.name).style == "anonymous" for c in anon)
    assert all(c.domain is None and c.label is None and c.attributes is None for c in anon)
    assert all(c.attribute_values == () for c in anon)  # eval CSV covers train only

    # official GT layout: three folders, one file per (machine, section), sorted, no header
    gt = root / "ground_truth"
    for sec in ("00", "01"):
        fname = f"ground_truth_ToyDrone_section_{sec}_test.csv"
        data = [ln.split(",") for ln in (gt / "ground_truth_data" / fname).read_text().splitlines()]
        dom = [
            ln.split(",") for ln in (gt / "ground_truth_domain" / fname).read_text().splitlines()
        ]
        att = [
            ln.split(",")
            for ln in (gt / "ground_truth_attributes" / fname).read_text().splitlines()
        ]
        anon_names = sorted(c.name for c in anon.filter(section=sec))
        assert [r[0] for r in data] == [r[0] for r in dom] == [r[0] for r in att] == anon_names
        for (_, y), (_, d), (_, full) in zip(data, dom, att, strict=True):
            revealed = parse_clip_name(full + ".wav")
            assert revealed.split == "test" and revealed.section == sec
            assert y == ("1" if revealed.label == "anomaly" else "0")
            assert d == ("1" if revealed.domain == "target" else "0")
        assert sorted(y for _, y in data) == ["0"] * 4 + ["1"] * 4


def test_deterministic_bytes(tmp_path: Path) -> None:
    kw = dict(machines=("gearbox",), eval_machines=("shaker",), **TINY)
    a = generate_synthetic_dataset(tmp_path / "a", seed=7, **kw)  # type: ignore[arg-type]
    b = generate_synthetic_dataset(tmp_path / "b", seed=7, **kw)  # type: ignore[arg-type]
    c = generate_synthetic_dataset(tmp_path / "c", seed=8, **kw)  # type: ignore[arg-type]
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db and len(da) > 20
    wav_a = {k: v for k, v in da.items() if k.endswith(".wav")}
    wav_c = {k: v for k, v in dc.items() if k.endswith(".wav")}
    assert set(wav_a.values()).isdisjoint(wav_c.values())  # another seed changes every clip


def test_audio_format_and_range(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "s", machines=("pump", "XYZ-1"), sr=8000, **TINY)  # type: ignore[arg-type]
    table = scan_dataset(root)
    for clip in table:
        x, sr = load_audio(clip.path)
        assert sr == 8000 and x.shape == (4000,)
        peak = np.abs(x).max()
        assert 0.01 < peak <= 0.9 + 1e-4
        assert np.isfinite(x).all()


def test_overwrite_rules(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "s", machines=("fan",), **TINY)  # type: ignore[arg-type]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_synthetic_dataset(root, machines=("fan",), **TINY)  # type: ignore[arg-type]
    generate_synthetic_dataset(root, machines=("valve",), overwrite=True, **TINY)  # type: ignore[arg-type]
    assert scan_dataset(root).machines() == ["valve"]  # old machine removed
    foreign = tmp_path / "real"
    (foreign / "dev_data" / "raw" / "fan").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not written by"):
        generate_synthetic_dataset(foreign, overwrite=True, **TINY)  # type: ignore[arg-type]
    assert (foreign / "dev_data" / "raw" / "fan").is_dir()  # never deleted


@pytest.mark.parametrize(
    "kwargs",
    [
        {"machines": ("bad_name",)},
        {"machines": ("a/b",)},
        {"sections": ("0",)},
        {"year": 2020},
        {"machines": ("fan",), "eval_machines": ("fan",)},
        {"n_train_source": -1},
        {"machines": ()},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        generate_synthetic_dataset(tmp_path / "x", **kwargs)


def test_each_anomaly_kind_changes_the_sound() -> None:
    def clip(kind: str | None) -> np.ndarray:
        rng = np.random.default_rng(123)
        return synthesize_clip(rng, "fan", "00", "source", 30, 1, kind, seconds=0.5, sr=16000)

    normal = clip(None)
    assert np.array_equal(normal, clip(None))
    for kind in ANOMALY_KINDS:
        x = clip(kind)
        assert x.shape == normal.shape and not np.allclose(x, normal), kind
    with pytest.raises(ValueError, match="valid"):
        clip("explosion")


# --- detectability: tiny numpy log-mel + nearest neighbour ------------------------------------


def _mel_fb(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    def hz2mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    pts = 700.0 * (10 ** (np.linspace(0, hz2mel(np.array(sr / 2)), n_mels + 2) / 2595.0) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, c, hi = pts[i : i + 3]
        fb[i] = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
    return fb  # (M, F)


def _features(x: np.ndarray, fb: np.ndarray, n_fft: int = 1024, hop: int = 512) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    logmel = np.log((np.abs(np.fft.rfft(frames, axis=1)) ** 2) @ fb.T + 1e-10)  # (T, M)
    return np.concatenate([logmel.mean(0), logmel.std(0)])  # (2M,)


@pytest.mark.slow
def test_default_dataset_is_learnable_by_logmel_knn(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "default")  # the defaults, unchanged
    table = scan_dataset(root)
    assert table.machines() == ["fan", "gearbox", "valve"]
    fb = _mel_fb(16000, 1024, 64)
    aucs = {}
    for m in table.machines():
        train = table.filter(machine=m, split="train")
        test = table.filter(machine=m, split="test")
        xtr = np.stack([_features(load_audio(c.path)[0], fb) for c in train])  # (Ntr, D)
        xte = np.stack([_features(load_audio(c.path)[0], fb) for c in test])  # (Nte, D)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        a, b = (xtr - mu) / sd, (xte - mu) / sd
        score = ((b[:, None, :] - a[None]) ** 2).sum(-1).min(1)  # distance to nearest normal
        y = np.array([c.label == "anomaly" for c in test])
        aucs[m] = roc_auc_score(y, score)
    print("log-mel 1-NN AUC per machine:", aucs)
    assert max(aucs.values()) > 0.7, aucs
    assert min(aucs.values()) > 0.6, aucs
