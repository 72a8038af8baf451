"""Submission files: writing, strict reading, both name styles, 2021/2020 forms, every error."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from stetho.evaluation import (
    SectionTruth,
    SubmissionError,
    find_submission_files,
    read_submission,
    submission_file_names,
    truth_from_names,
    write_submission,
)

from .helpers import make_gt_clips

ANON = [f"section_00_{i:04d}.wav" for i in range(6)]


def anon_truth(machine: str = "ToyCar") -> dict:
    clips = make_gt_clips(6, seed=9)
    st = SectionTruth(
        machine,
        "00",
        [c.anon for c in clips],
        np.array([c.label for c in clips]),
        np.array([c.domain for c in clips]),
        aliases={c.full + ".wav": c.anon for c in clips},
    )
    return {(machine, "00"): st}


def random_scores(names: list[str], seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {n: float(v) for n, v in zip(names, rng.normal(size=len(names)) * 1e3)}


@pytest.mark.parametrize("style", ["plain", "baseline"])
def test_round_trip_write_read_is_exact(tmp_path: Path, style: str) -> None:
    truth = anon_truth()
    truth.update(anon_truth("fan"))
    written_scores, written_dec = {}, {}
    for (m, s), st in truth.items():
        sc = random_scores(st.names, seed=len(m))
        sc[st.names[0]] = 0.1 + 0.2  # needs all 17 digits to round-trip
        dec = {n: int(v > 0) for n, v in sc.items()}
        paths = write_submission(tmp_path, m, s, sc, dec, style=style, year=2024)
        assert [p.name for p in paths] == [
            submission_file_names(m, s, kind=k, style=style, year=2024)  # type: ignore[arg-type]
            for k in ("anomaly_score", "decision_result")
        ]
        written_scores[(m, s)], written_dec[(m, s)] = sc, dec
    if style == "baseline":
        assert (
            tmp_path / "anomaly_score_DCASE2024T2ToyCar_section_00_test_seed13711_id(0_)_Eval.csv"
        ).is_file()
        assert (
            tmp_path / "decision_result_DCASE2024T2fan_section_00_test_seed13711_id(0_)_Eval.csv"
        ).is_file()
    else:
        assert (tmp_path / "anomaly_score_ToyCar_section_00_test.csv").is_file()
        assert (tmp_path / "decision_result_fan_section_00_test.csv").is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
    scores, decisions = read_submission(tmp_path, truth, year=2024)
    assert scores == written_scores  # bit-exact floats
    assert decisions == written_dec
    assert all(type(v) is int for d in decisions.values() for v in d.values())  # type: ignore[union-attr]
    # without truth: all files, names as written
    scores2, decisions2 = read_submission(tmp_path, year=2024)
    assert scores2 == written_scores and decisions2 == written_dec


def test_file_content_has_no_header_and_full_precision(tmp_path: Path) -> None:
    (path,) = write_submission(tmp_path, "fan", "00", {"b.wav": 1 / 3, "a.wav": 2.5e-300})
    assert path.read_text() == f"a.wav,{2.5e-300!r}\nb.wav,{1 / 3!r}\n"
    assert path.read_text().splitlines()[1] == "b.wav,0.3333333333333333"


def test_read_maps_revealed_names_and_keeps_row_order_irrelevant(tmp_path: Path) -> None:
    truth = anon_truth()
    st = truth[("ToyCar", "00")]
    full = {a: f for f, a in st.aliases.items()}
    rows = [(full[n] if i % 2 else n, float(i)) for i, n in enumerate(st.names)]
    rows.reverse()
    (tmp_path / "anomaly_score_ToyCar_section_00_test.csv").write_text(
        "".join(f"{n},{v}\n" for n, v in rows)
    )
    scores, decisions = read_submission(tmp_path, truth, year=2023)
    assert decisions is None
    assert scores[("ToyCar", "00")] == {n: float(i) for i, n in enumerate(st.names)}


def write_rows(tmp_path: Path, text: str, kind: str = "anomaly_score") -> Path:
    path = tmp_path / f"{kind}_ToyCar_section_00_test.csv"
    path.write_text(text)
    return path


def good_text(names: list[str] = ANON) -> str:
    return "".join(f"{n},{i * 0.5}\n" for i, n in enumerate(names))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file_name,anomaly_score\n" + good_text(), r"row 1: .*header row"),
        (good_text(ANON[:-1]), r"1 of 6 test clips .* have no row.*section_00_0005\.wav"),
        (
            good_text() + "section_00_0001.wav,3.0\n",
            r"row 7: duplicate file name 'section_00_0001\.wav' \(first in row 2\)",
        ),
        (
            good_text() + "section_00_9999.wav,1.0\n",
            r"row 7: unknown file name 'section_00_9999\.wav'",
        ),
        (good_text(ANON[:-1]) + "section_00_0005_x.wav,1.0\n", r"row 6: unknown file name"),
        (
            good_text().replace("section_00_0002.wav,1.0", "section_00_0002.wav,1.0,extra"),
            r"row 3: expected 2 columns",
        ),
        (
            good_text().replace("section_00_0002.wav,1.0", "section_00_0002.wav"),
            r"row 3: expected 2 columns",
        ),
        (
            good_text().replace("section_00_0002.wav,1.0", "section_00_0002.wav,nan"),
            r"row 3: score .* not finite",
        ),
        (
            good_text().replace("section_00_0002.wav,1.0", "section_00_0002.wav,inf"),
            r"row 3: score .* not finite",
        ),
        (
            good_text().replace("section_00_0002.wav,1.0", "section_00_0002.wav,-Infinity"),
            r"row 3: score .* not finite",
        ),
        (
            good_text().replace("section_00_0002.wav,1.0", "section_00_0002.wav,high"),
            r"row 3: score 'high' is not a number",
        ),
        ("", r"has no rows"),
    ],
)
def test_malformed_score_files_are_errors_naming_file_and_row(
    tmp_path: Path, text: str, match: str
) -> None:
    path = write_rows(tmp_path, text)
    truth = {
        ("ToyCar", "00"): SectionTruth(
            "ToyCar", "00", ANON, np.array([0, 1] * 3), np.array([0, 0, 1, 1, 0, 1])
        )
    }
    with pytest.raises(SubmissionError, match=match) as err:
        read_submission(tmp_path, truth, year=2023)
    assert str(path) in str(err.value)


def test_alias_and_anonymised_name_of_the_same_clip_is_a_duplicate(tmp_path: Path) -> None:
    truth = anon_truth()
    st = truth[("ToyCar", "00")]
    alias = next(f for f, a in st.aliases.items() if a == st.names[2])
    write_rows(tmp_path, good_text(st.names) + f"{alias},9.0\n")
    with pytest.raises(SubmissionError, match=r"row 7: .* same clip as row 3"):
        read_submission(tmp_path, truth, year=2023)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    write_rows(tmp_path, good_text() + "\n\n")
    truth = {
        ("ToyCar", "00"): SectionTruth(
            "ToyCar", "00", ANON, np.array([0, 1] * 3), np.array([0, 0, 1, 1, 0, 1])
        )
    }
    scores, _ = read_submission(tmp_path, truth, year=2023)
    assert len(scores[("ToyCar", "00")]) == 6


def test_decision_files_accept_float_zero_one_and_reject_other_values(tmp_path: Path) -> None:
    truth = {
        ("ToyCar", "00"): SectionTruth(
            "ToyCar", "00", ANON, np.array([0, 1] * 3), np.array([0, 0, 1, 1, 0, 1])
        )
    }
    write_rows(tmp_path, good_text())
    dec = write_rows(
        tmp_path,
        "".join(f"{n},{'1.0' if i % 2 else '0.0'}\n" for i, n in enumerate(ANON)),
        "decision_result",
    )
    _, decisions = read_submission(tmp_path, truth, year=2023)
    assert decisions == {("ToyCar", "00"): {n: i % 2 for i, n in enumerate(ANON)}}
    dec.write_text(dec.read_text().replace("section_00_0003.wav,1.0", "section_00_0003.wav,0.5"))
    with pytest.raises(
        SubmissionError,
        match=r"decision_result_ToyCar_section_00_test\.csv, row 4: decision .* must be 0 or 1",
    ):
        read_submission(tmp_path, truth, year=2023)


def test_missing_files_are_listed_with_both_name_styles(tmp_path: Path) -> None:
    truth = anon_truth()
    truth.update(anon_truth("fan"))
    write_submission(tmp_path, "fan", "00", random_scores(truth[("fan", "00")].names), year=2023)
    with pytest.raises(SubmissionError, match="1 submission file") as err:
        read_submission(tmp_path, truth, year=2023)
    msg = str(err.value)
    assert "anomaly_score_ToyCar_section_00_test.csv" in msg
    assert "anomaly_score_DCASE2023T2ToyCar_section_00_test_seed13711_id(0_)_Eval.csv" in msg
    assert "anomaly_score_fan_section_00_test.csv" in msg  # found files are listed too


def test_decisions_for_some_sections_only_is_an_error(tmp_path: Path) -> None:
    truth = anon_truth()
    truth.update(anon_truth("fan"))
    for (m, s), st in truth.items():
        sc = random_scores(st.names)
        write_submission(tmp_path, m, s, sc, {n: 0 for n in sc} if m == "fan" else None)
    with pytest.raises(SubmissionError, match=r"decision_result_ToyCar_section_00_test\.csv"):
        read_submission(tmp_path, truth, year=2023)


def test_two_files_for_one_section_are_ambiguous(tmp_path: Path) -> None:
    truth = anon_truth()
    sc = random_scores(truth[("ToyCar", "00")].names)
    write_submission(tmp_path, "ToyCar", "00", sc, style="plain")
    write_submission(tmp_path, "ToyCar", "00", sc, style="baseline")
    with pytest.raises(SubmissionError, match="several anomaly_score files for ToyCar section 00"):
        read_submission(tmp_path, truth, year=2023)


def test_baseline_dev_names_without_eval_suffix_and_other_seeds_are_found(tmp_path: Path) -> None:
    (tmp_path / "anomaly_score_DCASE2023T2fan_section_00_test_seed39876401_id(0_).csv").write_text(
        "a.wav,1\n"
    )
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "anomaly_score_fan_section_00_test.csv.bak").write_text("x")
    (files,) = [find_submission_files(tmp_path, year=2023)]
    assert [(f.machine, f.section, f.style, f.year) for f in files] == [
        ("fan", "00", "baseline", 2023)
    ]


def test_files_for_sections_not_in_the_truth_are_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truth = anon_truth()
    write_submission(tmp_path, "ToyCar", "00", random_scores(truth[("ToyCar", "00")].names))
    write_submission(tmp_path, "valve", "00", {"x.wav": 1.0}, {"x.wav": 1})
    with caplog.at_level(logging.WARNING):
        scores, decisions = read_submission(tmp_path, truth, year=2023)
    assert list(scores) == [("ToyCar", "00")]
    assert decisions is None  # the only decision file belongs to an ignored section
    assert "valve section 00 is not in the truth" in caplog.text


def test_2021_per_domain_files_round_trip_and_domain_check(tmp_path: Path) -> None:
    names = [f"section_03_{d}_test_{i:04d}.wav" for d in ("source", "target") for i in range(4)]
    st = SectionTruth(
        "gearbox", "03", names, np.array([0, 1, 0, 1] * 2), np.array([0] * 4 + [1] * 4)
    )
    truth = {st.key: st}
    sc = random_scores(names, seed=3)
    dec = {n: int(v > 0) for n, v in sc.items()}
    paths = write_submission(tmp_path, "gearbox", "03", sc, dec, year=2021)
    assert sorted(p.name for p in paths) == [
        "anomaly_score_gearbox_section_03_source_test.csv",
        "anomaly_score_gearbox_section_03_target_test.csv",
        "decision_result_gearbox_section_03_source_test.csv",
        "decision_result_gearbox_section_03_target_test.csv",
    ]
    src_file = tmp_path / "anomaly_score_gearbox_section_03_source_test.csv"
    assert all("_source_" in line for line in src_file.read_text().splitlines())
    scores, decisions = read_submission(tmp_path, truth, year=2021)
    assert scores == {st.key: sc} and decisions == {st.key: dec}
    # a target clip inside the source file is rejected
    tgt_file = tmp_path / "anomaly_score_gearbox_section_03_target_test.csv"
    moved = tgt_file.read_text().splitlines()[0]
    src_file.write_text(src_file.read_text() + moved + "\n")
    tgt_file.write_text("\n".join(tgt_file.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(SubmissionError, match="does not belong in this file"):
        read_submission(tmp_path, truth, year=2021)
    with pytest.raises(ValueError, match="carries no source/target token"):
        write_submission(tmp_path, "gearbox", "03", {"section_03_0000.wav": 1.0}, year=2021)


def test_2020_files_round_trip_and_ignore_decisions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truth = truth_from_names(
        {("fan", "01"): ["normal_id_01_00000000.wav", "anomaly_id_01_00000001.wav"]}
    )
    sc = {"normal_id_01_00000000.wav": 0.25, "anomaly_id_01_00000001.wav": 0.75}
    with caplog.at_level(logging.WARNING):
        paths = write_submission(tmp_path, "fan", "01", sc, {n: 1 for n in sc}, year=2020)
    assert [p.name for p in paths] == ["anomaly_score_fan_id_01.csv"]
    assert "no decision files" in caplog.text
    scores, decisions = read_submission(tmp_path, truth, year=2020)
    assert scores == {("fan", "01"): sc} and decisions is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"machine": "toy_car"}, "without '_'"),
        ({"section": "0"}, "two digits"),
        ({"scores": {"a.wav": math.nan}}, "not finite"),
        ({"scores": {"a,b.wav": 1.0}}, "without ','"),
        ({"scores": {}}, "no scores"),
        ({"decisions": {"a.wav": 2}}, "must be 0 or 1"),
        ({"decisions": {"a.wav": "1"}}, "must be 0 or 1"),
        ({"decisions": {"b.wav": 1}}, "name different clips"),
        ({"style": "baseline", "year": 2021}, "only for 2022"),
        ({"year": 2019}, "valid"),
    ],
)
def test_write_submission_errors(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {
        "machine": "fan",
        "section": "00",
        "scores": {"a.wav": 1.0},
        "decisions": None,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        write_submission(
            tmp_path,
            args.pop("machine"),
            args.pop("section"),
            args.pop("scores"),
            args.pop("decisions"),
            **args,
        )
    assert not list(tmp_path.iterdir())  # nothing half-written
