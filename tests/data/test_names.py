"""Clip-name grammar of dcase-protocol.md §1.3 (every form, the exceptions, and bad names)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stetho.data import CLIP_NAME_PATTERNS, ClipName, ClipNameError, parse_clip_name

# (name, section, domain, label, split, index, attributes, style)
CASES = [
    # 2022–2025 train / dev test with attribute tails
    (
        "section_00_source_train_normal_0000_car_A2_spd_28V_mic_1_noise_1.wav",
        "00", "source", "normal", "train", "0000", "car_A2_spd_28V_mic_1_noise_1", "dcase2021+",
    ),
    (
        "section_00_target_test_anomaly_0049_m-n_W.wav",
        "00", "target", "anomaly", "test", "0049", "m-n_W", "dcase2021+",
    ),
    # tails are opaque: keys with underscores / no key_value structure
    (
        "section_00_source_test_normal_0003_mic_imp34dt05_mic_pos_A_grind_100_bkg_A.wav",
        "00", "source", "normal", "test", "0003",
        "mic_imp34dt05_mic_pos_A_grind_100_bkg_A", "dcase2021+",
    ),
    (
        "section_00_source_train_normal_0011_spd1000_BckgC.wav",
        "00", "source", "normal", "train", "0011", "spd1000_BckgC", "dcase2021+",
    ),
    # a tail may even contain the domain/label words
    (
        "section_01_target_train_normal_0002_source_anomaly.wav",
        "01", "target", "normal", "train", "0002", "source_anomaly", "dcase2021+",
    ),
    # 2021 train (tail) and 2021 dev test (no tail)
    (
        "section_02_target_train_normal_0001_A1Speed.wav",
        "02", "target", "normal", "train", "0001", "A1Speed", "dcase2021+",
    ),
    (
        "section_00_source_test_normal_0000.wav",
        "00", "source", "normal", "test", "0000", None, "dcase2021+",
    ),
    # concealed attributes (2024/2025)
    (
        "section_00_target_train_normal_0009_noAttribute.wav",
        "00", "target", "normal", "train", "0009", "noAttribute", "dcase2021+",
    ),
    # README abbreviation: empty tail with a trailing "_"
    (
        "section_00_source_train_normal_0000_.wav",
        "00", "source", "normal", "train", "0000", None, "dcase2021+",
    ),
    # 2024 eval RoboticArm: no split token
    (
        "section_00_source_normal_0035_weight15_BckgF.wav",
        "00", "source", "normal", None, "0035", "weight15_BckgF", "dcase2021+",
    ),
    (
        "section_00_target_anomaly_0100_weight20_BckgA.wav",
        "00", "target", "anomaly", None, "0100", "weight20_BckgA", "dcase2021+",
    ),
    # index carries no meaning, kept as text (2024 BrushlessMotor target train 0990–0999)
    (
        "section_00_target_train_normal_0990_noAttribute.wav",
        "00", "target", "normal", "train", "0990", "noAttribute", "dcase2021+",
    ),
    # 2021 eval test: domain in the name, label hidden
    (
        "section_03_target_test_0012.wav",
        "03", "target", None, "test", "0012", None, "dcase2021+",
    ),
    # 2022–2025 anonymised eval test
    ("section_00_0000.wav", "00", None, None, None, "0000", None, "anonymous"),
    ("section_05_0200.wav", "05", None, None, None, "0200", None, "anonymous"),
    # 2020 dev and eval test
    ("anomaly_id_04_00000001.wav", "04", None, "anomaly", None, "00000001", None, "dcase2020"),
    ("normal_id_06_00000098.wav", "06", None, "normal", None, "00000098", None, "dcase2020"),
    ("id_05_00000123.wav", "05", None, None, None, "00000123", None, "dcase2020"),
    # 2025 supplemental (prefix other than source/target)
    (
        "section_00_machine_0001_.wav",
        "00", None, None, None, "0001", "machine", "dcase2025-supplemental",
    ),
    (
        "section_00_noise_0100.wav",
        "00", None, None, None, "0100", "noise", "dcase2025-supplemental",
    ),
    (
        "section_00_machine_0002_pro_A.wav",
        "00", None, None, None, "0002", "machine_pro_A", "dcase2025-supplemental",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "section", "domain", "label", "split", "index", "attributes", "style"), CASES
)
def test_parse_forms(
    name: str,
    section: str,
    domain: str | None,
    label: str | None,
    split: str | None,
    index: str,
    attributes: str | None,
    style: str,
) -> None:
    cn = parse_clip_name(name)
    assert cn == ClipName(name, section, domain, label, split, index, attributes, style)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "section_00_source_test_anomaly_0001_x.flac",
        "section_00_source_test_anomaly_0001_x.WAV",
        "section_00_0001.Flac",
        "id_05_00000001.WAV",
    ],
)
def test_extensions_case_insensitive(name: str) -> None:
    cn = parse_clip_name(name)
    assert cn.name == name
    assert cn.section is not None


def test_path_input_uses_base_name(tmp_path: Path) -> None:
    full = tmp_path / "fan" / "test" / "section_00_target_test_anomaly_0007_m-n_X.wav"
    for arg in (full, str(full)):
        cn = parse_clip_name(arg)
        assert cn.name == full.name
        assert (cn.domain, cn.label, cn.split, cn.attributes) == (
            "target",
            "anomaly",
            "test",
            "m-n_X",
        )


def test_clip_name_is_frozen() -> None:
    cn = parse_clip_name("section_00_0000.wav")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cn.section = "01"  # type: ignore[misc]


@pytest.mark.parametrize(
    "name",
    [
        "foo.wav",
        "section_00_source_train_normal_0000.mp3",  # wrong extension
        "section_00_source_train_normal_0000",  # no extension
        ".wav",
        "section_0_source_train_normal_0000.wav",  # 1-digit section
        "section_00_source_train_normal_000.wav",  # 3-digit index
        "section_00_source_train_0000_x.wav",  # no label
        "section_00_train_0001.wav",  # reserved word as supplemental prefix
        "section_00_normal_0001.wav",
        "section_00_source_0001.wav",  # domain without label
        "normal_id_04_0001.wav",  # 2020 index must have 8 digits
        "abnormal_id_04_00000001.wav",
        "id_4_00000001.wav",
        "section_00_0000_extra.wav",
        "source_section_00_train_normal_0000.wav",
    ],
)
def test_bad_names_raise(name: str) -> None:
    with pytest.raises(ClipNameError) as err:
        parse_clip_name(name)
    msg = str(err.value)
    assert repr(name) in msg  # names the file
    for pattern in CLIP_NAME_PATTERNS:  # lists every accepted form
        assert pattern in msg


def test_clip_name_error_is_value_error() -> None:
    assert issubclass(ClipNameError, ValueError)


def test_real_2023_and_2020_names(shared_dir: Path) -> None:
    names23 = sorted((shared_dir / "data" / "dcase2023t2_mini").rglob("*.wav"))
    names20 = sorted((shared_dir / "data" / "dcase2020t2_mini").rglob("*.wav"))
    assert len(names23) == 28 and len(names20) == 36
    for p in names23:
        cn = parse_clip_name(p.name)
        assert cn.style == "dcase2021+"
        assert cn.split == p.parent.name  # the name's split token matches the folder
        assert cn.label == ("anomaly" if "_anomaly_" in p.name else "normal")
        assert cn.domain == ("target" if "_target_" in p.name else "source")
        assert cn.attributes and p.stem.endswith(cn.attributes)
    for p in names20:
        cn = parse_clip_name(p.name)
        assert cn.style == "dcase2020"
        assert cn.label == p.name.split("_")[0]
        assert cn.section == p.name.split("_")[2]


def test_place_file_is_one_rule_for_every_command(tmp_path: Path) -> None:
    """detect, watch, serve, calibrate and explain place a file the same way."""
    from stetho.data.names import PlacementError, place_file
    from stetho.reporting.explain import resolve_key as explain_key
    from stetho.serving.files import resolve_key as serving_key

    keys = [("fan", "00"), ("fan", "01"), ("valve", "00")]
    cases = [
        (tmp_path / "fan" / "test" / "section_01_source_test_normal_0001_x.wav", None, None),
        (tmp_path / "plant" / "valve" / "rec.wav", None, "0"),
        (tmp_path / "rec.wav", "valve", None),  # the machine's only section
        (tmp_path / "valve" / "rec.wav", None, None),
    ]
    want = [("fan", "01"), ("valve", "00"), ("valve", "00"), ("valve", "00")]

    class _Det:
        def __init__(self, k):
            self.keys = k

    for (path, m, s), w in zip(cases, want):
        assert place_file(path, keys, m, s) == w
        assert serving_key(path, keys, m, s) == w
        assert explain_key(_Det(keys), path, m, s) == w  # type: ignore[arg-type]
    with pytest.raises(PlacementError, match="knows: fan/00, fan/01, valve/00"):
        place_file(tmp_path / "rec.wav", keys)
    assert place_file(tmp_path / "x.wav", [("pump", "00")]) == ("pump", "00")
