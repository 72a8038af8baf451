"""Truth from dev names / clips and from (synthetic) official ground-truth folders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from stetho.data import Clip
from stetho.evaluation import (
    GroundTruthError,
    SectionTruth,
    is_ground_truth_dir,
    load_ground_truth,
    truth_from_clips,
    truth_from_names,
)

from .helpers import make_gt_clips, noattr, write_gt_folder


def test_truth_from_names_reads_labels_and_domains_and_sorts() -> None:
    names = {
        ("fan", "00"): [
            "section_00_target_test_normal_0001_a_1.wav",
            "section_00_source_test_anomaly_0000_a_1.wav",
            "section_00_source_test_normal_0003_noAttribute.wav",
            "section_00_target_test_anomaly_0002_.wav",
        ]
    }
    truth = truth_from_names(names)
    st = truth[("fan", "00")]
    assert st.names == sorted(names[("fan", "00")])
    by_name = dict(zip(st.names, zip(st.labels.tolist(), st.domains.tolist())))  # type: ignore[union-attr]
    assert by_name["section_00_source_test_anomaly_0000_a_1.wav"] == (1, 0)
    assert by_name["section_00_target_test_normal_0001_a_1.wav"] == (0, 1)
    assert by_name["section_00_target_test_anomaly_0002_.wav"] == (1, 1)
    assert st.counts() == {
        "normal": 2,
        "anomaly": 2,
        "source_normal": 1,
        "source_anomaly": 1,
        "target_normal": 1,
        "target_anomaly": 1,
    }


def test_truth_from_names_2020_has_no_domains() -> None:
    truth = truth_from_names(
        {("fan", "02"): ["anomaly_id_02_00000001.wav", "normal_id_02_00000000.wav"]}
    )
    st = truth[("fan", "02")]
    assert st.domains is None
    assert st.labels.tolist() == [1, 0]


def test_truth_from_names_roboticarm_names_without_split_token() -> None:
    truth = truth_from_names(
        {
            ("RoboticArm", "00"): [
                "section_00_source_normal_0035_weight15_BckgF.wav",
                "section_00_target_anomaly_0001_x.wav",
            ]
        }
    )
    assert truth[("RoboticArm", "00")].labels.tolist() == [0, 1]
    assert truth[("RoboticArm", "00")].domains.tolist() == [0, 1]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["section_00_0001.wav"], "carries no normal/anomaly label"),
        (["section_01_source_test_normal_0000_a.wav"], "belongs to section 01"),
        (["not_a_clip.wav"], "cannot parse"),
        (
            ["section_00_source_test_normal_0000_a.wav", "normal_id_00_00000000.wav"],
            "some names carry a domain",
        ),
        (["section_00_source_test_normal_0000_a.wav"] * 2, "duplicate"),
        ([], "no clip names"),
    ],
)
def test_truth_from_names_errors(names: list[str], match: str) -> None:
    with pytest.raises(GroundTruthError, match=match):
        truth_from_names({("fan", "00"): names})


def clip(
    name: str, split: str = "test", label: str | None = None, domain: str | None = None
) -> Clip:
    return Clip(
        path=Path("/data/fan/test") / name,
        name=name,
        machine="fan",
        section="00",
        domain=domain,
        label=label,
        split=split,
        partition="dev",
        year=2023,
        attributes=None,
    )


def test_truth_from_clips_uses_labelled_test_clips_only() -> None:
    clips = [
        clip(
            "section_00_source_train_normal_0000_a.wav",
            split="train",
            label="normal",
            domain="source",
        ),
        clip("section_00_source_test_normal_0000_a.wav", label="normal", domain="source"),
        clip("section_00_target_test_anomaly_0001_a.wav", label="anomaly", domain="target"),
    ]
    truth = truth_from_clips(clips)
    st = truth[("fan", "00")]
    assert st.names == [
        "section_00_source_test_normal_0000_a.wav",
        "section_00_target_test_anomaly_0001_a.wav",
    ]
    assert st.labels.tolist() == [0, 1] and st.domains.tolist() == [0, 1]  # type: ignore[union-attr]


def test_truth_from_clips_errors() -> None:
    with pytest.raises(GroundTruthError, match="has no normal/anomaly label"):
        truth_from_clips([clip("section_00_0001.wav")])
    with pytest.raises(GroundTruthError, match="no test clips"):
        truth_from_clips(
            [clip("section_00_source_train_normal_0000_a.wav", split="train", label="normal")]
        )


def test_section_truth_validation() -> None:
    with pytest.raises(GroundTruthError, match="2 names but 1 labels"):
        SectionTruth("fan", "00", ["a.wav", "b.wav"], np.array([0]))
    with pytest.raises(GroundTruthError, match="labels must be 0/1"):
        SectionTruth("fan", "00", ["a.wav"], np.array([2]))
    with pytest.raises(GroundTruthError, match="points to unknown clip"):
        SectionTruth("fan", "00", ["a.wav"], np.array([0]), aliases={"x.wav": "zzz.wav"})
    with pytest.raises(GroundTruthError, match="itself another clip"):
        SectionTruth("fan", "00", ["a.wav", "b.wav"], np.array([0, 1]), aliases={"b.wav": "a.wav"})


# ------------------------------------------------------------------------------------------------
# official GT folders (synthetic, written by the tests)


@pytest.fixture
def gt_2024(tmp_path: Path) -> tuple[Path, dict]:
    sections = {
        ("ToyCar", "00"): make_gt_clips(12, seed=1, attrs="car_A1_spd_28V"),
        ("AirCompressor", "00"): make_gt_clips(10, seed=2, attrs="mic_2_load_B"),
    }
    write_gt_folder(tmp_path / "gt", sections, three_columns=frozenset({"AirCompressor"}))
    return tmp_path / "gt", sections


def test_load_ground_truth_folders_with_aliases(gt_2024: tuple[Path, dict]) -> None:
    root, sections = gt_2024
    assert is_ground_truth_dir(root)
    truth = load_ground_truth(root, year=2024)
    assert sorted(truth) == [("AirCompressor", "00"), ("ToyCar", "00")]
    for key, clips in sections.items():
        st = truth[key]
        ref = {c.anon: c for c in clips}
        assert st.names == sorted(ref)
        assert st.labels.tolist() == [ref[n].label for n in st.names]
        assert st.domains.tolist() == [ref[n].domain for n in st.names]  # type: ignore[union-attr]
    # 2-column attribute file: column 2 + ".wav" is an alias
    toycar = truth[("ToyCar", "00")]
    c0 = sections[("ToyCar", "00")][0]
    assert toycar.canonical(c0.full + ".wav") == c0.anon
    assert toycar.canonical(c0.anon) == c0.anon
    # 3-column file: only column 2 (the noAttribute form) is an alias; column 3 is not
    air = truth[("AirCompressor", "00")]
    c1 = sections[("AirCompressor", "00")][1]
    assert air.canonical(noattr(c1.full) + ".wav") == c1.anon
    assert air.canonical(c1.full + ".wav") is None
    assert air.canonical(c1.full + ".wav.wav") is None
    assert len(air.aliases) == len(sections[("AirCompressor", "00")])


def test_2022_ground_truth_has_no_attribute_aliases(gt_2024: tuple[Path, dict]) -> None:
    root, _ = gt_2024
    truth = load_ground_truth(root, year=2022)
    assert all(not st.aliases for st in truth.values())


def test_contradicting_revealed_names_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clips = make_gt_clips(8, seed=3)
    write_gt_folder(tmp_path, {("fan", "00"): clips})
    attr = tmp_path / "ground_truth_attributes" / "ground_truth_fan_section_00_test.csv"
    text = attr.read_text().replace("_normal_0000_", "_anomaly_0000_")
    attr.write_text(text)
    with caplog.at_level(logging.WARNING):
        truth = load_ground_truth(tmp_path, year=2023)
    assert "contradict" in caplog.text
    assert truth[("fan", "00")].labels[0] == clips[0].label  # data file wins


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda r: (r / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv").unlink(),
            "missing domain",
        ),
        (
            lambda r: (r / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_text(
                "section_00_0000.wav,2\n"
            ),
            "must be 0 or 1",
        ),
        (
            lambda r: (r / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_text(
                "section_00_0000.wav,0,1\n"
            ),
            "expected 2 columns",
        ),
        (
            lambda r: (
                r / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv"
            ).write_text("section_00_0099.wav,0\n"),
            "list different clips",
        ),
        (
            lambda r: (
                r / "ground_truth_attributes" / "ground_truth_fan_section_00_test.csv"
            ).write_text("section_00_9999.wav,x\n"),
            "not a clip",
        ),
        (
            lambda r: (r / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_text(
                "a.wav,0\na.wav,1\n"
            ),
            "duplicate",
        ),
    ],
)
def test_ground_truth_folder_errors(tmp_path: Path, mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    write_gt_folder(tmp_path, {("fan", "00"): make_gt_clips(6, seed=4)})
    mutate(tmp_path)
    with pytest.raises(GroundTruthError, match=match):
        load_ground_truth(tmp_path, year=2023)


def test_wrong_year_for_folder_layout_is_explained(gt_2024: tuple[Path, dict]) -> None:
    root, _ = gt_2024
    with pytest.raises(GroundTruthError, match="look like 2022\\+ ground truth"):
        load_ground_truth(root, year=2021)
    with pytest.raises(ValueError, match="valid: \\[2020"):
        load_ground_truth(root, year=2019)
    with pytest.raises(GroundTruthError, match="not a ground-truth folder"):
        load_ground_truth(root / "ground_truth_data", year=2023)


def test_load_ground_truth_2021_per_domain_files(tmp_path: Path) -> None:
    data = tmp_path / "ground_truth_data"
    data.mkdir()
    expected = {}
    for sec in ("03", "04"):
        for dom_i, dom in enumerate(("source", "target")):
            rows = []
            for i in range(6):
                name = f"section_{sec}_{dom}_test_{i:04d}.wav"
                rows.append(f"{name},{i % 2}\n")
                expected[(sec, name)] = (i % 2, dom_i)
            (data / f"ground_truth_gearbox_section_{sec}_{dom}_test.csv").write_text("".join(rows))
    truth = load_ground_truth(tmp_path, year=2021)
    assert sorted(truth) == [("gearbox", "03"), ("gearbox", "04")]
    for (_m, sec), st in truth.items():
        assert len(st) == 12
        for n, y, d in zip(st.names, st.labels.tolist(), st.domains.tolist()):  # type: ignore[union-attr]
            assert expected[(sec, n)] == (y, d)
    with pytest.raises(GroundTruthError, match="check year"):
        load_ground_truth(tmp_path, year=2023)


def test_load_ground_truth_2020_eval_data_list(tmp_path: Path) -> None:
    lst = tmp_path / "eval_data_list.csv"
    lst.write_text(
        "fan\n"
        "id_01_00000000.wav,normal_id_01_00000000.wav,0\n"
        "id_01_00000001.wav,anomaly_id_01_00000001.wav,1\n"
        "id_03_00000000.wav,anomaly_id_03_00000000.wav,1\n"
        "id_03_00000001.wav,normal_id_03_00000001.wav,0\n"
        "ToyCar\n"
        "id_05_00000000.wav,normal_id_05_00000000.wav,0\n"
        "id_05_00000001.wav,anomaly_id_05_00000001.wav,1\n"
    )
    for source in (tmp_path, lst):
        assert is_ground_truth_dir(source)
        truth = load_ground_truth(source, year=2020)
        assert sorted(truth) == [("ToyCar", "05"), ("fan", "01"), ("fan", "03")]
        st = truth[("fan", "03")]
        assert st.domains is None
        assert st.names == ["id_03_00000000.wav", "id_03_00000001.wav"]
        assert st.labels.tolist() == [1, 0]
        assert st.canonical("anomaly_id_03_00000000.wav") == "id_03_00000000.wav"
    lst.write_text("fan\nid_01_00000000.wav,anomaly_id_01_00000000.wav,0\n")
    with pytest.raises(GroundTruthError, match="contradicts"):
        load_ground_truth(lst, year=2020)
    lst.write_text("id_01_00000000.wav,normal_id_01_00000000.wav,0\n")
    with pytest.raises(GroundTruthError, match="before any machine-type header"):
        load_ground_truth(lst, year=2020)


def test_eval_data_list_form_for_2024_derives_label_and_domain(tmp_path: Path) -> None:
    lst = tmp_path / "eval_data_list_2024.csv"
    lst.write_text(
        "HairDryer\n"
        "section_00_0001.wav,section_00_target_test_anomaly_0001_m_B.wav\n"
        "section_00_0002.wav,section_00_source_test_normal_0002_m_A.wav\n"
        "RoboticArm\n"
        "section_00_0000.wav,section_00_source_normal_0000_weight15_BckgF.wav\n"
        "section_00_0001.wav,section_00_target_anomaly_0001_weight15_BckgF.wav\n"
    )
    truth = load_ground_truth(tmp_path, year=2024)
    hd = truth[("HairDryer", "00")]
    assert hd.labels.tolist() == [1, 0] and hd.domains.tolist() == [1, 0]  # type: ignore[union-attr]
    assert hd.canonical("section_00_source_test_normal_0002_m_A.wav") == "section_00_0002.wav"
    ra = truth[("RoboticArm", "00")]
    assert ra.labels.tolist() == [0, 1] and ra.domains.tolist() == [0, 1]  # type: ignore[union-attr]


def test_2022_toycar_labels_are_not_taken_from_the_renaming_list(tmp_path: Path) -> None:
    lst = tmp_path / "eval_data_list_2022.csv"
    lst.write_text("ToyCar\nsection_03_0000.wav,section_03_source_test_normal_0000_a.wav\n")
    with pytest.raises(GroundTruthError, match="disagree"):
        load_ground_truth(lst, year=2022)
