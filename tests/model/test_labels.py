"""Tests of stetho.model.labels: proxy classes per (machine, section, attributes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stetho.data import Clip, scan_dataset
from stetho.model.labels import ClassMap, UnknownClassError, build_class_map, class_id


def clip(machine: str, section: str, attrs: str | None, split: str = "train", idx: int = 0) -> Clip:
    tail = f"_{attrs}" if attrs else ""
    name = f"section_{section}_source_{split}_normal_{idx:04d}{tail}.wav"
    return Clip(
        path=Path(machine) / split / name,
        name=name,
        machine=machine,
        section=section,
        domain="source",
        label="normal",
        split=split,
        partition="dev",
        year=2023,
        attributes=attrs,
    )


TRAIN = [
    clip("fan", "00", "m-n_X", idx=1),
    clip("fan", "00", "m-n_X", idx=2),
    clip("fan", "00", "m-n_Y", idx=3),
    clip("fan", "01", None, idx=4),
    clip("fan", "01", "noAttribute", idx=5),
    clip("ToyCar", "00", "car_A2_spd_28V_mic_1", idx=6),
    clip("bearing", "02", "vel_8_loc_A", idx=7),
]


def test_class_ids_and_fallback() -> None:
    assert class_id(TRAIN[0]) == "fan/00/m-n_X"
    assert class_id(TRAIN[3]) == "fan/01"  # attributes None
    assert class_id(TRAIN[4]) == "fan/01"  # noAttribute


def test_build_sorted_unique_and_index() -> None:
    cmap = build_class_map(TRAIN)
    assert cmap.classes == [
        "ToyCar/00/car_A2_spd_28V_mic_1",
        "bearing/02/vel_8_loc_A",
        "fan/00/m-n_X",
        "fan/00/m-n_Y",
        "fan/01",
    ]
    assert len(cmap) == 5
    assert [cmap.index(c) for c in TRAIN] == [2, 2, 3, 4, 4, 0, 1]
    assert cmap.name(3) == "fan/00/m-n_Y"
    assert TRAIN[0] in cmap and "fan/01" in cmap and clip("fan", "00", "m-n_Z") not in cmap


def test_unseen_combination_raises_clear_error() -> None:
    cmap = build_class_map(TRAIN)
    with pytest.raises(
        UnknownClassError,
        match=r"fan/00/m-n_Z.*known classes for fan/00: \['fan/00/m-n_X', 'fan/00/m-n_Y'\]",
    ):
        cmap.index(clip("fan", "00", "m-n_Z", split="test"))
    with pytest.raises(UnknownClassError, match="known classes for valve/00: none"):
        cmap.index(clip("valve", "00", "pat_01"))
    with pytest.raises(UnknownClassError):  # attributes present where training had noAttribute
        cmap.index(clip("fan", "01", "m-n_X"))


def test_refuses_test_clips_and_empty_input() -> None:
    with pytest.raises(ValueError, match="training clips only"):
        build_class_map([*TRAIN, clip("fan", "00", "m-n_X", split="test")])
    with pytest.raises(ValueError, match="at least one"):
        build_class_map([])


def test_json_roundtrip_keeps_indices(tmp_path: Path) -> None:
    cmap = build_class_map(TRAIN)
    cmap.save(tmp_path / "classes.json")
    loaded = ClassMap.load(tmp_path / "classes.json")
    assert loaded == cmap
    assert [loaded.index(c) for c in TRAIN] == [cmap.index(c) for c in TRAIN]
    assert ClassMap.from_dict(cmap.to_dict()).classes == cmap.classes
    with pytest.raises(ValueError, match="duplicate"):
        ClassMap(classes=["a/00", "a/00"])


def test_on_real_dcase2023_mini(shared_dir: Path) -> None:
    table = scan_dataset(shared_dir / "data" / "dcase2023t2_mini")
    train = table.filter(split="train")
    cmap = build_class_map(train)
    # 2 train clips per machine; fan and valve repeat their attributes, the others do not.
    assert len(cmap) == 12
    assert "fan/00/m-n_X" in cmap.classes and "valve/00/pat_01" in cmap.classes
    labels = [cmap.index(c) for c in train]
    assert sorted(set(labels)) == list(range(12))
    # the fan test clips have unseen attribute values (m-n_W, m-n_Y)
    fan_test = table.filter(split="test", machine="fan")
    assert len(fan_test) > 0
    for c in fan_test:
        with pytest.raises(UnknownClassError, match="fan/00"):
            cmap.index(c)
