"""Hardening: the bad-input corpus and tampered detectors through score / detect / evaluate /
watch / train / data import / scan; each numbered defect of issue #13 that the CLI owns."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.cli import main
from stetho.data.synth import generate_synthetic_dataset
from stetho.detector import Detector, DetectorError
from tests.badinput import REFUSED, SCORED, TAMPERING, write_audio_corpus

#: ``stetho train`` without ``--config`` builds the few-shot ensemble; the fine-tuned k-NN
#: detector (the folder layout tampered with below) needs the fine-tuning config
FINETUNE = ["--config", str(Path(__file__).resolve().parents[2] / "configs" / "default.yaml")]
TRAIN_SET = [
    "recipe=finetune",
    "backbone.name=logmel",
    "finetune.strategy=frozen",
    "train.epochs=1",
    "train.tensorboard=false",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hardening_run")
    data = generate_synthetic_dataset(
        base / "dcase2023t2",
        machines=("fan",),
        n_train_source=6,
        n_train_target=2,
        n_test_per_group=2,
        seconds=1.0,
        seed=3,
    )
    out = base / "run"
    assert (
        main(["train", *FINETUNE, "--data", str(data), "--out", str(out), "--set", *TRAIN_SET]) == 0
    )
    return data, out


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text


def _copy_detector(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run / "detector", dest))


# -- detect: the corpus ------------------------------------------------------------------------


def test_detect_corpus_scores_good_files_and_names_each_bad_one(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run = run_dir
    good, _ = sf.read(next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav")))
    corpus = write_audio_corpus(tmp_path / "fan" / "test", good)
    capsys.readouterr()
    code = main(["detect", str(tmp_path / "fan"), "--detector", str(run / "detector")])
    out, err = capsys.readouterr()
    _no_traceback(out + err)
    assert code == 1  # some files failed
    errors = out.split("errors:")[1]
    for case, path in corpus.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(str(path)))
        if case in SCORED:
            assert "ERROR" not in line, line
        else:
            assert "ERROR" in line, line
            message = next(ln for ln in errors.splitlines() if str(path) in ln)
            if case in REFUSED:
                assert REFUSED[case] in message, message
    # the ×1e6 float clip is clipped like every other path: it scores like the clipped clip
    det = Detector.load(run / "detector")
    clipped = np.clip(good * 1e6, -1, 1).astype(np.float32)
    want = det.score_waveforms([clipped], "fan", "00")[0]
    line = next(ln for ln in out.splitlines() if ln.startswith(str(corpus["loud_float"])))
    assert float(line.split()[2]) == pytest.approx(float(want), rel=1e-4)


# -- score: bad clips, folder written as a set --------------------------------------------------


def _tree_with(data: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    """A copy of the dataset with one test clip replaced by a corpus file of ``case``."""
    tree = Path(shutil.copytree(data, tmp_path / "dcase2023t2"))
    victim = sorted((tree / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))[0]
    good, _ = sf.read(victim)
    corpus = write_audio_corpus(tmp_path / "corpus", good)
    shutil.copy(corpus[case], victim)
    return tree, victim


@pytest.mark.parametrize("case", ["nan", "truncated", "one_sample"])
def test_score_refuses_a_bad_clip_naming_it(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    data, run = run_dir
    tree, victim = _tree_with(data, tmp_path, case)
    out = tmp_path / "scores"
    capsys.readouterr()
    code = main(
        ["score", "--detector", str(run / "detector"), "--data", str(tree), "--out", str(out)]
    )
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and victim.name in err
    assert not out.exists()  # nothing half-written
    assert not list(tmp_path.glob(".scores.*"))  # no temporary leftovers


def test_score_replaces_the_folder_as_a_set_and_cleans_leftovers(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run = run_dir
    out = tmp_path / "scores"
    out.mkdir()
    stale = out / "anomaly_score_pump_section_00_test.csv"  # from another detector
    stale.write_text("x.wav,1.0\n")
    killed = tmp_path / ".scores.abc123.tmp"  # a killed run's temporary folder
    killed.mkdir()
    (killed / "anomaly_score_fan_section_00_test.csv").write_text("half")
    args = ["score", "--detector", str(run / "detector"), "--data", str(data), "--out", str(out)]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names and all(n.startswith(("anomaly_score_fan", "decision_result_fan")) for n in names)
    assert not killed.exists()
    # a folder with other files is never replaced
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and (out / "notes.txt").read_text() == "mine"


# -- evaluate: damaged submission files ---------------------------------------------------------


@pytest.mark.parametrize(
    "content", ["", "not,a,number\n", "clip.wav,nan\n", "\x00\x01\x02binary"], ids=repr
)
def test_evaluate_names_a_damaged_score_file(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    data, run = run_dir
    out = tmp_path / "scores"
    assert (
        main(["score", "--detector", str(run / "detector"), "--data", str(data), "--out", str(out)])
        == 0
    )
    victim = sorted(out.glob("anomaly_score_*.csv"))[0]
    victim.write_text(content)
    capsys.readouterr()
    code = main(["evaluate", str(out), "--truth", str(data), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and victim.name in err


# -- tampered detector folders ------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampered_detector_is_refused_naming_the_file(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    data, run = run_dir
    folder = _copy_detector(run, tmp_path / "det")
    edit, named = TAMPERING[how]
    edit(folder)
    clip = next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))
    capsys.readouterr()
    code = main(["detect", str(clip), "--detector", str(folder)])
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and named in err, err
    with pytest.raises(DetectorError, match=named.replace(".", r"\.")):
        Detector.load(folder)


def test_threshold_checks_hold_without_hashes(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    # an old (v1, no manifest) folder still gets the content checks
    _, run = run_dir
    folder = _copy_detector(run, tmp_path / "det")
    (folder / "manifest.json").unlink()
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    TAMPERING["nan_threshold"][0](folder)
    with pytest.raises(DetectorError, match=r"thresholds\.json.*nan"):
        Detector.load(folder)
    TAMPERING["truncated_head"][0](folder)
    TAMPERING["negative_threshold"][0](folder)
    with pytest.raises(DetectorError, match=r"head\.safetensors"):
        Detector.load(folder)


def test_old_format_loads_with_a_warning_and_newer_is_refused(
    run_dir: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, run = run_dir
    old = _copy_detector(run, tmp_path / "old")
    (old / "manifest.json").unlink()
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**cfg, "format_version": 1}))
    with caplog.at_level("WARNING"):
        det = Detector.load(old)
    assert det.keys == [("fan", "00")]
    assert "no file hashes" in caplog.text
    new = _copy_detector(run, tmp_path / "new")
    (new / "config.json").write_text(
        json.dumps({**cfg, "format_version": 99, "stetho_version": "9.0.0"})
    )
    with pytest.raises(DetectorError, match=r"newer.*upgrade stetho"):
        Detector.load(new)


def test_a_changed_weight_file_is_named(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = run_dir
    folder = _copy_detector(run, tmp_path / "det")
    path = folder / "backend.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit-pattern in a tensor: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(DetectorError, match=r"backend\.safetensors: SHA-256 differs"):
        Detector.load(folder)


# -- watch -----------------------------------------------------------------------------------


def _watch(run: Path, stream: bytes, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stream)))
    # headerless PCM: its format is given (WAV/FLAC on stdin would carry it)
    fmt = [] if "--dtype" in extra else ["--dtype", "int16"]
    fmt += [] if "--rate" in extra else ["--rate", "16000"]
    return main(["watch", "--detector", str(run / "detector"), "--machine", "fan", *fmt, *extra])


def test_watch_skips_windows_with_nan_and_scores_the_rest(
    run_dir: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, run = run_dir
    clip = next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav"))
    x, sr = sf.read(clip, dtype="float32")
    stream = np.concatenate([x, x, x, x]).astype("<f4")  # 4 s
    stream[int(1.5 * sr)] = np.nan  # inside the second 1 s window
    with caplog.at_level("WARNING"):
        code = _watch(
            run, stream.tobytes(), monkeypatch, "--dtype", "float32", "--window", "1", "--hop", "1"
        )
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "score" in ln]
    assert [ln.split("s-")[0].strip() for ln in lines] == ["0.00", "2.00", "3.00"]
    assert "1.00-2.00 s" in caplog.text and "non-finite" in caplog.text
    det = Detector.load(run / "detector")
    want = det.score_waveforms([x], "fan", "00")[0]
    assert float(lines[1].split("score")[1].split()[0]) == pytest.approx(float(want), rel=1e-4)


@pytest.mark.parametrize("n_bytes", [0, 2 * 1600])  # empty, 0.1 s
def test_watch_on_an_empty_or_short_stream_says_so(
    run_dir: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    n_bytes: int,
) -> None:
    _, run = run_dir
    code = _watch(run, b"\x00" * n_bytes, monkeypatch, "--window", "1")
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and "nothing was scored" in err and "shorter than one window" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["watch", "--machine", "fan", "--window", "1e9"], "at most 3600"),
        (["watch", "--machine", "fan", "--hop", "nan"], "at most 3600"),
        (["watch", "--machine", "fan", "--window", "-1"], "> 0"),
        (["serve", "--port", "70000"], "0..65535"),
        (["serve", "--port", "http"], "not a port"),
    ],
)
def test_bad_numbers_are_argparse_errors(
    run_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    _, run = run_dir
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--detector", str(run / "detector")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err
    _no_traceback(err)


# -- trust comes from the person only ------------------------------------------------------------


def test_folder_cannot_grant_itself_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pickled checkpoint trained with the person's own trust flag: the saved folder's
    ``trust_checkpoint: true`` is ignored; only ``--trust-checkpoint`` loads it."""
    import argparse

    import torch

    from stetho.backbones import create_backbone

    data = generate_synthetic_dataset(
        tmp_path / "d", machines=("fan",), n_train_source=4, n_train_target=2,
        n_test_per_group=2, seconds=1.0, seed=2,
    )  # fmt: skip
    ckpt = tmp_path / "pickled.pt"
    state = create_backbone("efficientat-tiny").state_dict()
    torch.save({"model": state, "args": argparse.Namespace(lr=1.0)}, ckpt)  # needs unpickling
    run = tmp_path / "run"
    sets = ["backbone.name=efficientat-tiny", f"backbone.checkpoint={ckpt}",
            "backbone.trust_checkpoint=true", "finetune.strategy=frozen", "train.epochs=0",
            "head.embed_dim=null", "train.tensorboard=false"]  # fmt: skip
    assert main(["train", *FINETUNE, "--data", str(data), "--out", str(run), "--set", *sets]) == 0
    cfg = json.loads((run / "detector" / "config.json").read_text())
    assert cfg["experiment"]["backbone"]["trust_checkpoint"] is True
    clip = str(next((data / "dev_data" / "raw" / "fan" / "test").glob("*.wav")))
    capsys.readouterr()
    assert main(["detect", clip, "--detector", str(run / "detector")]) == 2
    err = capsys.readouterr().err
    _no_traceback(err)
    assert "pickled" in err and "--trust-checkpoint" in err
    with pytest.raises(DetectorError, match="pickled"):
        Detector.load(run / "detector")
    code = main(["detect", clip, "--detector", str(run / "detector"), "--trust-checkpoint"])
    assert code == 0 and "fan/00" in capsys.readouterr().out
    # a 0-byte checkpoint: a clear error naming it, even with --trust-checkpoint
    ckpt.write_bytes(b"")
    code = main(["detect", clip, "--detector", str(run / "detector"), "--trust-checkpoint"])
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and str(ckpt) in err
    from stetho.backbones.checkpoint import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError, match=r"pickled\.pt"):
        load_checkpoint(ckpt, trust=True)


# -- train / data import / scan -------------------------------------------------------------------


def test_train_refuses_a_nan_clip_naming_it(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = run_dir
    tree = Path(shutil.copytree(data, tmp_path / "dcase2023t2"))
    victim = sorted((tree / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))[2]
    x, sr = sf.read(victim, dtype="float32")
    x[100] = np.nan
    sf.write(victim, x, sr, subtype="FLOAT")
    capsys.readouterr()
    code = main(
        ["train", *FINETUNE, "--data", str(tree), "--out", str(tmp_path / "r"), "--set", *TRAIN_SET]
    )
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and victim.name in err and "not finite" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()  # nothing poisoned to resume from


def test_train_refuses_a_one_sample_clip_naming_it(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = run_dir
    tree = Path(shutil.copytree(data, tmp_path / "dcase2023t2"))
    victim = sorted((tree / "dev_data" / "raw" / "fan" / "train").glob("*.wav"))[1]
    sf.write(victim, np.zeros(1, np.float32), 16000)
    capsys.readouterr()
    code = main(
        ["train", *FINETUNE, "--data", str(tree), "--out", str(tmp_path / "r"), "--set", *TRAIN_SET]
    )
    err = capsys.readouterr().err
    _no_traceback(err)
    assert code == 2 and victim.name in err


def test_import_skip_bad_and_scan_strict_refuse_nan_clips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_audio_corpus(tmp_path / "rec")
    train = tmp_path / "train"
    train.mkdir()
    for case in ("good", "nan", "inf", "loud_float", "rate8k"):
        shutil.copy(corpus[case], train / corpus[case].name)
    root = tmp_path / "ds"
    code = main(
        [
            "data",
            "import",
            str(root),
            "--machine",
            "pump",
            "--train",
            str(train),
            "--skip-bad",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert corpus["nan"].name in out + err and corpus["inf"].name in out + err
    imported = sorted((root / "dev_data" / "raw" / "pump" / "train").iterdir())
    assert len(imported) == 3
    # a NaN clip put into the tree by hand is a problem for scan --check-audio --strict
    bad = root / "dev_data" / "raw" / "pump" / "train" / "section_00_source_train_normal_0099_x.wav"
    shutil.copy(corpus["nan"], bad)
    code = main(["data", "scan", str(root), "--check-audio", "--strict"])
    out, err = capsys.readouterr()
    assert code == 1 and bad.name in out + err and "not finite" in out + err


def test_train_on_a_2020_layout_infers_2020_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    fan = tmp_path / "dev_data" / "fan"
    for split, label, n in (("train", "normal", 6), ("test", "normal", 2), ("test", "anomaly", 2)):
        (fan / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            x = (
                0.1
                * rng.standard_normal(16000).astype(np.float32)
                * (2 if label == "anomaly" else 1)
            )
            sf.write(fan / split / f"{label}_id_00_{i:08d}.wav", x, 16000)
    capsys.readouterr()
    code = main(
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", *TRAIN_SET]
    )
    out, err = capsys.readouterr()
    _no_traceback(err)
    assert code == 0, err
    assert "year=2020" not in err and "AUC" in out


def test_a_folder_saved_by_a_newer_stetho_loads_with_a_warning(
    run_dir: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stetho.utils.io import write_manifest

    _, run = run_dir
    folder = _copy_detector(run, tmp_path / "det")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "stetho_version": "99.1.0"}))
    with pytest.raises(DetectorError, match=r"config\.json: SHA-256 differs"):
        Detector.load(folder)  # edited after saving
    write_manifest(folder)  # as that newer stetho would have written it
    with caplog.at_level("WARNING"):
        Detector.load(folder)
    assert "saved by stetho 99.1.0, newer than this stetho" in caplog.text
