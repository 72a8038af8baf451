"""scan_dataset / ClipTable: real 2023 and 2020 minis, every layout, CSV join, problems."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stetho.data import (
    Clip,
    ClipNameError,
    ClipTable,
    ScanError,
    ScanProblem,
    format_summary,
    infer_year,
    load_audio,
    scan_dataset,
)

# --- real data -------------------------------------------------------------------------------


def test_real_2023_mini(shared_dir: Path) -> None:
    root = shared_dir / "data" / "dcase2023t2_mini"
    table = scan_dataset(root)
    assert table.problems == []
    assert len(table) == 28
    assert table.machines() == sorted(
        ["bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"]
    )
    assert table.sections() == [(m, "00") for m in table.machines()]
    assert len(table.filter(split="train")) == 14 and len(table.filter(split="test")) == 14
    assert len(table.filter(split="test", label="anomaly")) == 5
    assert len(table.filter(split="train", label="anomaly")) == 0
    for clip in table:
        # independent expectations from the path
        assert clip.machine == clip.path.parts[-3]
        assert clip.split == clip.path.parent.name
        assert clip.section == "00" and clip.partition == "dev" and clip.year == 2023
        assert clip.label == ("anomaly" if "_anomaly_" in clip.name else "normal")
        assert clip.domain == ("target" if "_target_" in clip.name else "source")
        tail = clip.path.stem.split("_", 6)[6]  # section_00_<dom>_<split>_<label>_<idx>_<tail>
        assert clip.attributes == tail
        assert clip.attribute_values == ()  # no attributes_00.csv in the mini set
        x, sr = load_audio(clip.path)
        expected = 12.0 if clip.machine in ("ToyCar", "ToyTrain") else 10.0
        assert sr == 16000 and x.shape == (round(expected * sr),)
    # ordering (machine, section, split, name)
    keys = [(c.machine, c.section, c.split, c.name) for c in table]
    assert keys == sorted(keys)


def test_real_2023_mini_check_audio_and_summary(shared_dir: Path) -> None:
    table = scan_dataset(shared_dir / "data" / "dcase2023t2_mini", check_audio=True)
    assert table.problems == []
    rows = {(r["machine"], r["split"]): r for r in table.summary()}
    assert len(rows) == 14
    assert sum(r["anomaly"] for r in rows.values()) == 5
    assert sum(r["clips"] for r in rows.values()) == 28
    for (machine, _), r in rows.items():
        expected = 12.0 if machine in ("ToyCar", "ToyTrain") else 10.0
        assert r["seconds_min"] == r["seconds_max"] == expected
        assert r["seconds_total"] == 2 * expected
        assert r["source"] + r["target"] == r["clips"] == r["normal"] + r["anomaly"]
    text = format_summary(table)
    assert "28 clips" in text and "year 2023" in text and "no problems" in text
    assert "12.00" in text and "ToyTrain" in text


def test_real_2020_mini(shared_dir: Path) -> None:
    root = shared_dir / "data" / "dcase2020t2_mini"
    table = scan_dataset(root)
    assert table.problems == []
    assert len(table) == 36
    assert table.machines() == sorted(["ToyCar", "ToyConveyor", "fan", "pump", "slider", "valve"])
    expected_ids = {"ToyCar": "04", "ToyConveyor": "01", "fan": "06", "pump": "04",
                    "slider": "00", "valve": "02"}  # fmt: skip
    assert dict(table.sections()) == expected_ids
    for clip in table:
        assert clip.year == 2020 and clip.partition == "dev" and clip.split == "test"
        assert clip.domain is None and clip.attributes is None
        assert clip.label == clip.name.split("_")[0]
        assert clip.section == clip.name.split("_")[2]
    assert len(table.filter(label="anomaly")) == 18


def test_real_single_machine_and_raw_folder(shared_dir: Path) -> None:
    raw = shared_dir / "data" / "dcase2023t2_mini" / "dev_data" / "raw"
    one = scan_dataset(raw / "fan")
    assert len(one) == 4 and one.machines() == ["fan"]
    assert {c.partition for c in one} == {"dev"} and {c.year for c in one} == {2023}
    bare = scan_dataset(raw)
    assert len(bare) == 28 and bare.problems == []
    both = scan_dataset(raw.parent)  # root = dev_data
    assert len(both) == 28


def test_real_partition_filter(shared_dir: Path) -> None:
    table = scan_dataset(shared_dir / "data" / "dcase2023t2_mini", partitions=("eval",))
    assert len(table) == 0
    assert len(table.problems) == 1 and "no audio clips" in table.problems[0].message
    with pytest.raises(ValueError, match="valid: dev, eval"):
        scan_dataset(shared_dir / "data" / "dcase2023t2_mini", partitions=("train",))


# --- synthetic layouts (empty files: the default scan opens no audio) ------------------------


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _wav(path: Path, seconds: float = 0.25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(round(16000 * seconds)), 16000, subtype="PCM_16")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A 2025-like tree with dev + eval, supplemental, attribute CSVs and some junk."""
    root = tmp_path / "dcase2025t2"
    dev = root / "dev_data" / "raw" / "fan"
    _touch(dev / "train" / "section_00_source_train_normal_0000_m-n_W.wav")
    _touch(dev / "train" / "section_00_target_train_normal_0000_m-n_Y.wav")
    _touch(dev / "train" / "section_00_source_train_normal_0001_noAttribute.wav")
    _touch(dev / "test" / "section_00_source_test_anomaly_0000_m-n_W.wav")
    _touch(dev / "test" / "section_00_target_test_normal_0000_m-n_Y.wav")
    (dev / "attributes_00.csv").write_text(
        "file_name,d1p,d1v\n"
        "fan/train/section_00_source_train_normal_0000_m-n_W.wav,m-n,W\n"
        "fan/train/section_00_target_train_normal_0000_m-n_Y.wav,m-n,Y\n"
        "fan/test/section_00_source_test_anomaly_0000_m-n_W.wav,m-n,W\n"
    )
    _touch(dev / "test_rename" / "whatever.wav")  # baseline copy: skipped
    ev = root / "eval_data" / "raw" / "Polisher"
    _touch(ev / "train" / "section_00_source_train_normal_0000_noAttribute.flac")
    _touch(ev / "test" / "section_00_0000.wav")
    _touch(ev / "test" / "section_00_0001.wav")
    _touch(ev / "supplemental" / "section_00_machine_0001_.wav")
    _touch(ev / "supplemental" / "section_00_noise_0001_.wav")
    (ev / "attributes_00.csv").write_text(
        "file_name,d1p,d1v,d2p,d2v\n"
        "Polisher/train/section_00_source_train_normal_0000_noAttribute.flac,vel,12,loc,B\n"
    )
    return root


def test_tree_clean_scan(tree: Path) -> None:
    table = scan_dataset(tree)
    assert table.problems == []
    assert len(table) == 5 + 5
    assert table.machines() == ["Polisher", "fan"]
    assert {c.year for c in table} == {2025}
    assert {c.partition for c in table.filter(machine="fan")} == {"dev"}
    assert {c.partition for c in table.filter(machine="Polisher")} == {"eval"}
    w = table.filter(name="section_00_source_train_normal_0000_m-n_W.wav")[0]
    assert w.attribute_values == (("m-n", "W"),) and w.attributes == "m-n_W"
    t = table.filter(name="section_00_source_test_anomaly_0000_m-n_W.wav")[0]
    assert t.attribute_values == (("m-n", "W"),) and t.label == "anomaly" and t.split == "test"
    assert table.filter(attributes="noAttribute", machine="fan")[0].attribute_values == ()
    pol = table.filter(machine="Polisher", split="train")[0]
    assert pol.attribute_values == (("vel", "12"), ("loc", "B"))
    anon = table.filter(machine="Polisher", split="test")
    assert len(anon) == 2 and all(c.domain is None and c.label is None for c in anon)
    supp = table.filter(split="supplemental")
    assert [c.attributes for c in supp] == ["machine", "noise"]
    assert all(c.domain is None and c.label is None for c in supp)
    assert len(table.filter(split="train", machine="Polisher")) == 1  # supplemental never train
    assert not any("test_rename" in str(c.path) for c in table)
    only_dev = scan_dataset(tree, partitions=["dev"])
    assert only_dev.machines() == ["fan"]


def test_year_argument_and_inference(tree: Path, tmp_path: Path) -> None:
    assert {c.year for c in scan_dataset(tree, year=2024)} == {2024}
    assert infer_year(tree / "dev_data" / "raw" / "fan") == 2025
    assert infer_year("/x/DCASE2020_task2/dev_data") == 2020
    plain = tmp_path / "plain"
    _touch(plain / "fan" / "train" / "section_00_source_train_normal_0000_a.wav")
    table = scan_dataset(plain)
    assert [c.year for c in table] == [None] and table[0].partition == "unknown"


def test_table_queries(tree: Path, tmp_path: Path) -> None:
    table = scan_dataset(tree)
    assert len(table.filter(machine={"fan", "Polisher"})) == len(table)
    assert len(table.filter(domain=None)) == 4
    assert len(table.filter(label=["normal", "anomaly"], split=("train", "test"))) == 6
    assert len(table.filter(key=("fan", "00"))) == 5
    assert len(table.filter(key=[("fan", "00"), ("Polisher", "00")])) == 10
    assert len(table.filter(name=lambda n: n.endswith(".flac"))) == 1
    with pytest.raises(ValueError, match="valid fields"):
        table.filter(colour="red")
    assert isinstance(table[1:3], ClipTable) and len(table[1:3]) == 2
    assert isinstance(table[0], Clip) and table[0].key == (table[0].machine, table[0].section)
    assert table.sections() == [("Polisher", "00"), ("fan", "00")]
    r = repr(table)
    assert "10 clips" in r and "2 machines" in r and "problems=0" in r
    rows = table.to_rows()
    assert len(rows) == 10 and rows[0]["path"] == str(table[0].path)
    out = table.to_csv(tmp_path / "inv" / "clips.csv")
    with open(out, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert [r["name"] for r in read] == [c.name for c in table]
    polisher_train = next(r for r in read if r["name"].endswith(".flac"))
    assert polisher_train["attribute_values"] == "vel=12;loc=B"
    summ = {(r["machine"], r["split"]): r for r in table.summary()}
    assert summ[("fan", "train")]["source"] == 2 and summ[("fan", "train")]["target"] == 1
    assert summ[("fan", "test")]["source_anomaly"] == 1
    assert summ[("fan", "test")]["target_normal"] == 1
    assert summ[("Polisher", "test")]["label_hidden"] == 2
    assert summ[("Polisher", "supplemental")]["clips"] == 2
    assert summ[("fan", "train")]["seconds_total"] is None  # unknown without check_audio


def test_2021_source_target_test_folders(tmp_path: Path) -> None:
    root = tmp_path / "dcase2021t2"
    m = root / "dev_data" / "gearbox"
    _touch(m / "train" / "section_00_source_train_normal_0000_volt_1.0.wav")
    _touch(m / "source_test" / "section_00_source_test_normal_0000.wav")
    _touch(m / "target_test" / "section_00_target_test_anomaly_0000.wav")
    e = root / "eval_data" / "gearbox"
    _touch(e / "source_test" / "section_03_source_test_0000.wav")
    _touch(e / "target_test" / "section_03_target_test_0001.wav")
    table = scan_dataset(root)
    assert table.problems == []
    test = table.filter(split="test")
    assert len(test) == 4
    assert {c.domain for c in test.filter(partition="dev")} == {"source", "target"}
    ev = test.filter(partition="eval")
    assert [(c.section, c.domain, c.label) for c in ev] == [
        ("03", "source", None),
        ("03", "target", None),
    ]
    assert {c.attributes for c in test} == {None}


def test_problems_are_reported_not_dropped(tree: Path) -> None:
    dev = tree / "dev_data" / "raw" / "fan"
    bad = _touch(dev / "test" / "recording_final.wav")
    txt = _touch(dev / "train" / "notes.txt")
    sub = dev / "train" / "nested"
    sub.mkdir()
    odd = dev / "extra_folder"
    odd.mkdir()
    stray = _touch(dev / "README.md")
    link = dev / "test" / "section_00_source_test_normal_0009_x.wav"
    link.symlink_to(dev / "missing_target.wav")  # broken link: unreadable entry
    anomal = _touch(dev / "train" / "section_00_source_train_anomaly_0005_x.wav")
    moved = _touch(dev / "train" / "section_00_source_test_normal_0007_x.wav")
    (tree / "eval_data" / "raw" / "Polisher" / "attributes_00.csv").write_text(
        "name,d1p,d1v\nx.wav,a,b\n"
    )
    table = scan_dataset(tree)
    by_path = {p.path: p.message for p in table.problems}
    assert "matches no DCASE" in by_path[bad] and "recording_final.wav" in by_path[bad]
    assert "not an audio file" in by_path[txt]
    assert sub in by_path and odd in by_path and stray in by_path and link in by_path
    assert "train folder" in by_path[anomal]
    assert "'test'" in by_path[moved] and "'train'" in by_path[moved]
    csv_path = tree / "eval_data" / "raw" / "Polisher" / "attributes_00.csv"
    assert "file_name" in by_path[csv_path]
    # files with problems of meaning (not of form) stay in the table, others are left out
    names = {c.name for c in table}
    assert anomal.name in names and moved.name in names
    assert bad.name not in names and link.name not in names
    assert table.filter(name=moved.name)[0].split == "train"  # folder wins
    assert all(isinstance(p, ScanProblem) for p in table.problems)
    assert "problem(s)" in format_summary(table)


def test_on_error_raise(tree: Path) -> None:
    _touch(tree / "dev_data" / "raw" / "fan" / "test" / "oops.wav")
    with pytest.raises(ClipNameError, match=r"oops\.wav"):
        scan_dataset(tree, on_error="raise")
    (tree / "dev_data" / "raw" / "fan" / "test" / "oops.wav").unlink()
    _touch(tree / "dev_data" / "raw" / "fan" / "train" / "notes.txt")
    with pytest.raises(ScanError, match=r"notes\.txt"):
        scan_dataset(tree, on_error="raise")
    with pytest.raises(ValueError, match="on_error"):
        scan_dataset(tree, on_error="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty attribute CSV"),
        ("file_name,d1p\nfan/train/a.wav,x\n", "d1v"),
        ("file_name,d1p,d1v\nfan/train/a.wav,x,y,z,w\n", "fields"),
        ("file_name,d1p,d1v\n,x,y\n", "empty file_name"),
        (
            "file_name,d1p,d1v\nfan/train/a.wav,x,1\nfan/test/a.wav,x,2\n",
            "conflicting duplicate",
        ),
        ('file_name,d1p,d1v\n"fan/train/a.wav,x,1\n', "malformed"),
    ],
)
def test_malformed_attribute_csv(tmp_path: Path, text: str, fragment: str) -> None:
    m = tmp_path / "fan"
    _touch(m / "train" / "section_00_source_train_normal_0000_a.wav")
    (m / "attributes_00.csv").write_text(text)
    table = scan_dataset(m)
    assert len(table) == 1  # the clip is still there
    msgs = [p.message for p in table.problems]
    assert any(fragment in msg for msg in msgs), msgs


def test_attribute_csv_short_rows_and_bom(tmp_path: Path) -> None:
    m = tmp_path / "ToyCar"
    _touch(m / "train" / "section_00_source_train_normal_0000_car_A.wav")
    _touch(m / "train" / "section_00_source_train_normal_0001_car_B_spd_3.wav")
    (m / "attributes_00.csv").write_text(
        "\ufefffile_name,d1p,d1v,d2p,d2v\n"
        "ToyCar/train/section_00_source_train_normal_0000_car_A.wav,car,A\n"
        "ToyCar\\train\\section_00_source_train_normal_0001_car_B_spd_3.wav,car,B,spd,3\n"
    )
    table = scan_dataset(m)
    assert table.problems == []
    assert [c.attribute_values for c in table] == [
        (("car", "A"),),
        (("car", "B"), ("spd", "3")),
    ]


def test_check_audio(tmp_path: Path) -> None:
    m = tmp_path / "valve"
    good = _wav(m / "train" / "section_00_source_train_normal_0000_v.wav", 0.5)
    empty = _touch(m / "train" / "section_00_source_train_normal_0001_v.wav")
    junk = _touch(m / "test" / "section_00_source_test_normal_0000_v.wav", b"not audio" * 10)
    fast = scan_dataset(m)
    assert len(fast) == 3 and fast.problems == [] and fast[0].seconds is None
    checked = scan_dataset(m, check_audio=True)
    assert [c.path for c in checked] == [good]
    assert checked[0].seconds == 0.5
    probs = {p.path: p.message for p in checked.problems}
    assert "empty" in probs[empty] and "header" in probs[junk]


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_dataset(tmp_path / "nope")
    table = scan_dataset(tmp_path)
    assert len(table) == 0 and "no audio clips" in table.problems[0].message
    with pytest.raises(ScanError, match="no audio clips"):
        scan_dataset(tmp_path, on_error="raise")
