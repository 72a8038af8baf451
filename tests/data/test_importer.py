"""stetho.data.importer: plain recordings → DCASE layout (+ CLI, + an end-to-end training run)."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.cli import main
from stetho.data import audio_info, parse_clip_name, scan_dataset
from stetho.data.importer import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    RecordingImportError,
    import_recordings,
    read_manifest,
    run_import,
)
from stetho.data.scan import KNOWN_FILES
from stetho.data.synth import generate_synthetic_dataset
from stetho.utils.io import sha256_file

SR = 16000


def _tone(path: Path, freq: float, seconds: float = 0.5, fmt: str = "WAV") -> Path:
    """A short distinct recording (tone + a little noise); ``freq`` makes the content unique."""
    rng = np.random.default_rng(int(freq * 10))
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR, format=fmt, subtype="PCM_16")
    return path


def _plain(tmp_path: Path) -> dict[str, list[Path]]:
    """An engineer's folders: arbitrary names, nested sub-folders, one non-audio file."""
    base = tmp_path / "pump_recordings"
    train = [
        _tone(base / "march" / "2026-03-01_0800.wav", 200.0),
        _tone(base / "march" / "2026-03-01_1400.WAV", 210.0),
        _tone(base / "2026-03-02 morning.wav", 220.0),
    ]
    (base / "notes.txt").write_text("not audio")  # ignored inside folders
    normal = [_tone(tmp_path / "held_out" / "check.wav", 230.0)]
    faulty = [_tone(tmp_path / "faulty" / "bearing noise!.wav", 240.0)]
    return {"train": train, "normal": normal, "faulty": faulty, "base": [base]}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_generated_names_manifest_and_index_continuation(tmp_path: Path) -> None:
    src = _plain(tmp_path)
    out = tmp_path / "ds"
    root = import_recordings(
        out,
        "pump",
        train=src["base"],
        test_normal=src["normal"],
        test_anomaly=[str(p) for p in src["faulty"]],
    )
    assert root == out.absolute() and isinstance(root, Path)
    assert run_import(out, "pump", train=src["base"]).notes == ()  # both test labels present
    mdir = out / "dev_data" / "raw" / "pump"
    assert _names(mdir / "train") == [
        f"section_00_source_train_normal_{i:04d}_noAttribute.wav" for i in range(3)
    ]
    assert _names(mdir / "test") == [
        "section_00_source_test_anomaly_0000_noAttribute.wav",
        "section_00_source_test_normal_0000_noAttribute.wav",
    ]
    # manifest: every new name → absolute source, its SHA-256, split/label
    assert (mdir / MANIFEST_NAME).read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    rows = read_manifest(mdir / MANIFEST_NAME)
    assert len(rows) == 5
    by_source = {r.source: r for r in rows}
    expected_train = sorted(p.resolve() for p in src["train"])
    assert set(by_source) == {p.resolve() for p in src["train"] + src["normal"] + src["faulty"]}
    for r in rows:
        assert r.source.is_absolute() and r.sha256 == sha256_file(r.source)
        assert (mdir / r.split / r.name).resolve() == r.source
        assert "2026" not in r.name and "bearing" not in r.name
        cn = parse_clip_name(r.name)
        assert (cn.split, cn.label, cn.domain, cn.section) == (r.split, r.label, r.domain, "00")
    assert by_source[src["faulty"][0].resolve()].label == "anomaly"
    assert by_source[src["normal"][0].resolve()].split == "test"
    assert sorted(r.source for r in rows if r.split == "train") == expected_train

    # second import: target domain + attributes, new recordings → own index groups from 0000
    more = [_tone(tmp_path / "after_change" / f"x{i}.wav", 300.0 + i) for i in range(2)]
    s2 = run_import(out, "pump", train=more, domain="target", attributes="speed_1500")
    assert [e.name for e in s2.imported] == [
        "section_00_target_train_normal_0000_speed_1500.wav",
        "section_00_target_train_normal_0001_speed_1500.wav",
    ]
    # a clip already in the folder (not from the manifest) moves the index on
    shutil.copy(more[0], mdir / "train" / "section_00_source_train_normal_0041_noAttribute.wav")
    s3 = run_import(out, "pump", train=[_tone(tmp_path / "late.wav", 400.0)], section="00")
    assert [e.name for e in s3.imported] == ["section_00_source_train_normal_0042_noAttribute.wav"]
    assert s3.counts("total") == {"test/anomaly": 1, "test/normal": 1, "train/normal": 6}
    assert len(read_manifest(mdir / MANIFEST_NAME)) == 8
    # the manifest is a known file for the scanner; the tree scans cleanly
    assert MANIFEST_NAME in KNOWN_FILES
    table = scan_dataset(out, check_audio=True)
    assert table.problems == [] and len(table) == 9
    assert {c.attributes for c in table} == {"noAttribute", "speed_1500"}


def test_reimport_is_idempotent_and_conflicts_are_refused(tmp_path: Path) -> None:
    src = _plain(tmp_path)
    out = tmp_path / "ds"
    first = run_import(out, "pump", train=src["base"], test_anomaly=src["faulty"])
    manifest = first.manifest.read_text()
    # same files again (folder + one of its files listed twice): nothing new
    again = run_import(out, "pump", train=[*src["base"], src["train"][0]])
    assert again.imported == () and len(again.already_imported) == 3
    assert first.manifest.read_text() == manifest
    assert len(list((first.machine_dir / "train").iterdir())) == 3
    # a byte-identical copy under another name is the same recording
    dup = tmp_path / "copy_of_first.wav"
    shutil.copy(src["train"][1], dup)
    assert run_import(out, "pump", train=[dup]).already_imported == (dup.resolve(),)
    # ... but it cannot become a test anomaly
    with pytest.raises(ValueError, match="already imported as train/normal"):
        run_import(out, "pump", train=(), test_anomaly=[dup])
    # faulty recordings inside the train folder: refused before anything is written
    inside = src["base"][0] / "faulty" / "f.wav"
    _tone(inside, 500.0)
    with pytest.raises(ValueError, match=r"more than one split/label.*\n.*f\.wav"):
        run_import(out, "pump", train=src["base"], test_anomaly=[inside])
    assert len(read_manifest(first.manifest)) == 4
    # a removed clip is dropped from the manifest and can be imported again (new index)
    gone = first.imported[0]
    (first.machine_dir / gone.split / gone.name).unlink()
    redo = run_import(out, "pump", train=[gone.source])
    assert [e.name for e in redo.imported] == [
        "section_00_source_train_normal_0003_noAttribute.wav"
    ]
    assert gone.name not in {e.name for e in read_manifest(first.manifest)}


def test_bad_file_all_or_nothing_and_skip_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = _plain(tmp_path)
    corrupt = src["base"][0] / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEjunk" * 4)
    empty = src["base"][0] / "march" / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "ds"
    with pytest.raises(RecordingImportError) as info:
        import_recordings(out, "pump", train=src["base"], test_anomaly=src["faulty"])
    msg = str(info.value)
    assert f"{corrupt}: cannot read audio header" in msg and f"{empty}: empty file" in msg
    assert "2 of 6 recording(s)" in msg
    assert {b.path for b in info.value.bad} == {corrupt, empty}
    assert not out.exists()  # nothing written
    # an explicitly named non-audio file is bad too
    with pytest.raises(RecordingImportError, match=r"notes\.txt: not a \.wav or \.flac file"):
        import_recordings(out, "pump", train=[src["base"][0] / "notes.txt", src["train"][0]])
    assert not out.exists()

    with caplog.at_level(logging.WARNING, logger="stetho.data.importer"):
        s = run_import(out, "pump", train=src["base"], test_anomaly=src["faulty"], skip_bad=True)
    assert {b.path for b in s.bad} == {corrupt, empty}
    assert s.notes == (
        "section 00 has anomaly test recordings but no normal ones: an evaluation needs both "
        "(add test_normal / --test-normal recordings)",
    )
    assert s.counts() == {"test/anomaly": 1, "train/normal": 3}
    assert str(corrupt) in caplog.text and str(empty) in caplog.text
    assert scan_dataset(out, check_audio=True).problems == []
    # without the header check the file is linked as is (caller's choice)
    s2 = run_import(out, "pump", train=[corrupt], check_audio=False)
    assert len(s2.imported) == 1


def test_copy_vs_symlink(tmp_path: Path) -> None:
    src = _plain(tmp_path)
    link = run_import(tmp_path / "linked", "pump", train=src["train"][:1])
    dest = link.machine_dir / "train" / link.imported[0].name
    assert dest.is_symlink() and os.path.isabs(os.readlink(dest))
    assert Path(os.readlink(dest)) == src["train"][0].resolve()

    cp = run_import(tmp_path / "copied", "pump", train=src["train"][:1], mode="copy")
    dest = cp.machine_dir / "train" / cp.imported[0].name
    assert not dest.is_symlink() and dest.read_bytes() == src["train"][0].read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temp files left
    with pytest.raises(ValueError, match="valid: 'symlink', 'copy'"):
        run_import(tmp_path / "x", "pump", train=src["train"], mode="hardlink")  # type: ignore[arg-type]


def test_invalid_arguments(tmp_path: Path) -> None:
    src = _plain(tmp_path)
    with pytest.raises(ValueError, match=r"'_' is not allowed .* use e\.g\. 'water-pump'"):
        import_recordings(tmp_path / "ds", "water_pump", train=src["train"])
    for kwargs, pattern in [
        ({"section": "0"}, "two digits"),
        ({"domain": "other"}, "valid: 'source', 'target'"),
        ({"attributes": "a/b"}, "invalid attributes"),
        ({"year": 2020}, "valid: 2021"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            import_recordings(tmp_path / "ds", "pump", train=src["train"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="not found"):
        import_recordings(tmp_path / "ds", "pump", train=[tmp_path / "missing"])
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.wav/\.flac recordings found"):
        import_recordings(tmp_path / "ds", "pump", train=[tmp_path / "emptydir"])
    with pytest.raises(ValueError, match="nothing to import"):
        import_recordings(tmp_path / "ds", "pump", train=[])
    assert not (tmp_path / "ds").exists()


def test_flac_kept_and_output_inside_source_folder(tmp_path: Path) -> None:
    base = tmp_path / "recs"
    flac = _tone(base / "a.flac", 250.0, fmt="FLAC")
    wav = _tone(base / "b.wav", 260.0)
    out = base / "dataset"  # the dataset lives inside the recordings folder
    s = run_import(out, "fan", train=[base], mode="copy")
    assert [e.name for e in s.imported] == [
        "section_00_source_train_normal_0000_noAttribute.flac",
        "section_00_source_train_normal_0001_noAttribute.wav",
    ]
    assert audio_info(s.machine_dir / "train" / s.imported[0].name).format == "FLAC"
    assert [e.source for e in s.imported] == [flac.resolve(), wav.resolve()]
    # re-import of the parent folder does not pick up the dataset's own clips
    again = run_import(out, "fan", train=[base], mode="copy")
    assert again.imported == () and len(again.already_imported) == 2
    table = scan_dataset(out)
    assert table.problems == [] and [c.name for c in table] == [e.name for e in s.imported]


def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _plain(tmp_path)
    out = tmp_path / "ds"
    argv = ["data", "import", str(out), "--machine", "pump", "--train", str(src["base"][0])]
    argv += ["--test-normal", *map(str, src["normal"]), "--test-anomaly", str(src["faulty"][0])]
    assert main([*argv, "--copy", "--section", "01", "--attributes", "site-A"]) == 0
    text = capsys.readouterr().out
    mdir = out.absolute() / "dev_data" / "raw" / "pump"
    assert f"5 recording(s) copied into {mdir}" in text
    assert "train/normal  +3" in text and "test/anomaly  +1" in text
    assert f"manifest: {mdir / MANIFEST_NAME}" in text
    names = _names(mdir / "train")
    assert names[0] == "section_01_source_train_normal_0000_site-A.wav"
    assert not (mdir / "train" / names[0]).is_symlink()

    # a bad file: exit 2, the file named on stderr, nothing added
    bad = tmp_path / "more" / "broken.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00" * 64)
    assert main(["data", "import", str(out), "--machine", "pump", "--train", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert len(read_manifest(mdir / MANIFEST_NAME)) == 5
    good = _tone(tmp_path / "more" / "ok.wav", 600.0)
    args = ["data", "import", str(out), "--machine", "pump", "--train", str(bad.parent)]
    assert main([*args, "--skip-bad", "--domain", "target"]) == 0
    text = capsys.readouterr().out
    assert "1 unreadable file(s) skipped" in text and str(bad) in text
    assert read_manifest(mdir / MANIFEST_NAME)[-1].source == good.resolve()
    assert "note:" not in text
    # test recordings only (no --train), one label: imported, with a note for the user
    fault = _tone(tmp_path / "fault2.wav", 700.0)
    args = ["data", "import", str(out), "--machine", "pump", "--test-anomaly", str(fault)]
    assert main([*args, "--section", "02"]) == 0
    text = capsys.readouterr().out
    assert "note: section 02 has anomaly test recordings but no normal ones" in text
    assert "note: section 01" not in text  # section 01 has both labels
    assert main(["data", "import", str(out), "--machine", "my_pump", "--train", str(good)]) == 2
    assert "'_' is not allowed" in capsys.readouterr().err


def test_import_then_train_end_to_end(tmp_path: Path) -> None:
    """Synthetic clips renamed to arbitrary names → import → scan → run_training → evaluation."""
    from stetho.config import load_experiment_config
    from stetho.pipelines import run_training

    synth = generate_synthetic_dataset(
        tmp_path / "synth",
        machines=("pump",),
        n_train_source=6,
        n_train_target=2,
        n_test_per_group=2,
        seconds=1.0,
    )
    plain = tmp_path / "plain"
    groups: dict[tuple[str, str, str], list[Path]] = {}
    for clip in scan_dataset(synth):  # "plain recordings" with arbitrary names
        assert clip.domain is not None and clip.label is not None
        key = (clip.domain, clip.split, clip.label)
        dest = plain / "_".join(key) / f"rec {len(groups.get(key, [])):02d}.wav"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip.path, dest)
        groups.setdefault(key, []).append(dest)

    data = tmp_path / "data"
    for domain in ("source", "target"):
        run_import(
            data,
            "pump",
            train=[plain / f"{domain}_train_normal"],
            test_normal=[plain / f"{domain}_test_normal"],
            test_anomaly=[plain / f"{domain}_test_anomaly"],
            domain=domain,  # type: ignore[arg-type]
        )
    table = scan_dataset(data, check_audio=True)
    assert table.problems == []
    assert len(table.filter(split="train")) == 8 and len(table.filter(split="test")) == 8

    cfg = load_experiment_config(
        None,
        ["backbone.name=logmel", "finetune.strategy=frozen", "train.epochs=1",
         "train.tensorboard=false"],
    )  # fmt: skip
    run = run_training(cfg, data, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "detector").is_dir()
    assert set(run.scores) == {("pump", "00")} and len(run.scores[("pump", "00")]) == 8
    assert run.evaluation is not None
    assert math.isfinite(run.evaluation.official_score)
    assert 0.0 <= run.evaluation.official_score <= 1.0
    assert (tmp_path / "run" / "evaluation" / "results.json").is_file()
