"""``evaluate`` / ``evaluate_directory`` against an official-style reference, all year variants."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import confusion_matrix, roc_auc_score

from stetho.evaluation import (
    EvaluationResult,
    MetricError,
    SectionTruth,
    SubmissionError,
    evaluate,
    evaluate_directory,
    infer_evaluation_year,
    jackknife_ci95,
    truth_from_names,
    write_submission,
)

from .helpers import make_gt_clips, write_gt_folder

EPS = sys.float_info.epsilon
COUNTS = {
    "bandsaw": (9, 5, 8, 4),
    "ToyDrone": (6, 6, 6, 6),
    "grinder": (11, 3, 4, 5),
}  # SN SA TN TA


def dev_names(machine: str, counts: tuple[int, int, int, int], section: str = "00") -> list[str]:
    names = []
    i = 0
    for dom, lab, n in zip(
        ("source", "source", "target", "target"), ("normal", "anomaly") * 2, counts
    ):
        for _ in range(n):
            names.append(f"section_{section}_{dom}_test_{lab}_{i:04d}_{machine[:3]}_{i % 3}.wav")
            i += 1
    return names


def make_case(seed: int = 0, ties: bool = True) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    names = {(m, "00"): dev_names(m, c) for m, c in COUNTS.items()}
    truth = truth_from_names(names)
    scores, decisions = {}, {}
    for key, st in truth.items():
        s = rng.normal(size=len(st)) + 0.8 * st.labels
        if ties:
            s = np.round(s, 1)
        scores[key] = dict(zip(st.names, s.tolist()))
        decisions[key] = {n: int(v > 0.4) for n, v in zip(st.names, s.tolist())}
    return truth, scores, decisions


def official_reference(truth: dict, scores: dict, decisions: dict) -> dict:
    """The official 2023 evaluator's computation (§2.2–§2.4) with sklearn/scipy: rows sorted by
    name and paired with the sorted GT, masks as in the evaluator, flat clipped hmean."""
    out: dict = {"sections": {}}
    src, tgt, pauc = [], [], []
    for key in sorted(truth):
        st = truth[key]
        rows = sorted([n, repr(v)] for n, v in scores[key].items())
        y_pred = np.array([float(v) for _, v in rows])
        dec = np.array(
            [int(float(v)) for _, v in sorted([n, str(d)] for n, d in decisions[key].items())]
        )
        y_true, y_dom = st.labels, st.domains
        sec = {
            "auc": roc_auc_score(y_true, y_pred),
            "pauc": roc_auc_score(y_true, y_pred, max_fpr=0.1),
        }
        for d, name in enumerate(("source", "target")):
            mask = (y_dom == d) | (y_true != 0)
            sec[f"auc_{name}"] = roc_auc_score(y_true[mask], y_pred[mask])
            _tn, fp, fn, tp = confusion_matrix(y_true[y_dom == d], dec[y_dom == d]).ravel()
            prec = tp / np.maximum(tp + fp, EPS)
            rec = tp / np.maximum(tp + fn, EPS)
            sec[f"precision_{name}"] = prec
            sec[f"recall_{name}"] = rec
            sec[f"f1_{name}"] = 2.0 * prec * rec / np.maximum(prec + rec, EPS)
        out["sections"][key] = sec
        src.append(sec["auc_source"])
        tgt.append(sec["auc_target"])
        pauc.append(sec["pauc"])
    all_perf = np.array([src + tgt + pauc], dtype=float)
    out["omega"] = scipy.stats.hmean(np.maximum(all_perf, EPS), axis=None)
    out["amean"] = np.mean(all_perf)
    return out


def test_evaluate_2023_equals_the_official_computation_bit_for_bit() -> None:
    truth, scores, decisions = make_case(seed=1)
    res = evaluate(scores, truth, decisions, year=2023, ci95=False)
    ref = official_reference(truth, scores, decisions)
    assert [r.machine for r in res.sections] == sorted(COUNTS) == ["ToyDrone", "bandsaw", "grinder"]
    for r in res.sections:
        exp = ref["sections"][(r.machine, r.section)]
        for k, v in exp.items():
            assert getattr(r, k) == float(v), (r.machine, k)
        assert (
            r.n_source_normal,
            r.n_source_anomaly,
            r.n_target_normal,
            r.n_target_anomaly,
        ) == COUNTS[r.machine]
    assert res.official_score == float(ref["omega"])
    assert res.arithmetic_mean == float(ref["amean"])


def test_scores_may_use_aliases_and_any_order() -> None:
    clips = make_gt_clips(16, seed=5)
    st = SectionTruth(
        "Vacuum",
        "00",
        [c.anon for c in clips],
        np.array([c.label for c in clips]),
        np.array([c.domain for c in clips]),
        aliases={c.full + ".wav": c.anon for c in clips},
    )
    rng = np.random.default_rng(0)
    s = {c.anon: float(v) for c, v in zip(clips, rng.normal(size=16))}
    revealed = {
        (c.full + ".wav" if i % 2 else c.anon): s[c.anon]
        for i, c in reversed(list(enumerate(clips)))
    }
    a = evaluate({st.key: s}, {st.key: st}, ci95=False)
    b = evaluate({st.key: revealed}, {st.key: st}, ci95=False)
    assert a.sections == b.sections and a.official_score == b.official_score


def test_ci95_equals_the_evaluator_jackknife() -> None:
    truth, scores, _ = make_case(seed=2)
    res = evaluate(scores, truth, year=2023)
    y = np.concatenate([truth[k].labels for k in sorted(truth)])
    s = np.concatenate([[scores[k][n] for n in truth[k].names] for k in sorted(truth)])

    def jackknife(fn):  # type: ignore[no-untyped-def]
        n = len(y)
        thetas = [fn(np.delete(y, i), np.delete(s, i)) for i in range(n)]
        sigma = np.sqrt(np.sum([(t - np.mean(thetas)) ** 2 for t in thetas]) / (n * (n - 1)))
        return abs(scipy.stats.t.ppf(0.025, n - 1)) * sigma

    expected = np.mean(
        [jackknife(roc_auc_score), jackknife(lambda a, b: roc_auc_score(a, b, max_fpr=0.1))]
    )
    assert res.ci95 == float(expected)  # bit-identical
    assert jackknife_ci95(y, s) == res.ci95
    assert res.sections[0].precision_source is None  # no decisions given


def test_result_files(tmp_path: Path) -> None:
    truth, scores, decisions = make_case(seed=3)
    res = evaluate(scores, truth, decisions, year=2023, system="my_system")
    paths = res.write(tmp_path)
    assert sorted(p.name for p in paths) == [
        "my_system_result.csv",
        "paper_table.csv",
        "results.csv",
        "results.json",
    ]
    assert not list(tmp_path.glob(".*.tmp"))
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["official_score"] == res.official_score  # full precision survives JSON
    assert EvaluationResult.from_dict(data) == res
    assert len(data["omega_values"]) == 9
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["machine"], r["section"]) for r in rows] == [
        ("ToyDrone", "00"),
        ("bandsaw", "00"),
        ("grinder", "00"),
    ]
    assert float(rows[1]["auc_source"]) == res.sections[1].auc_source
    with open(tmp_path / "paper_table.csv") as fh:
        paper = list(csv.reader(fh))
    assert paper[0] == ["System", "metric", "h-mean", "a-mean", "ToyDrone", "bandsaw", "grinder"]
    assert [r[1] for r in paper[1:]] == [
        "AUC (source)",
        "AUC (target)",
        "pAUC (source, target)",
        "TOTAL score",
    ]
    assert float(paper[4][2]) == res.official_score and paper[4][4:] == ["", "", ""]

    text = (tmp_path / "my_system_result.csv").read_text()
    lines = text.split("\n")
    assert lines[0] == "ToyDrone"
    assert lines[1] == (
        "section,AUC (all),AUC (source),AUC (target),pAUC,precision (source),precision (target),"
        "recall (source),recall (target),F1 score (source),F1 score (target)"
    )
    r0 = res.sections[0]
    assert lines[2] == "00," + ",".join(
        repr(v)
        for v in (
            r0.auc,
            r0.auc_source,
            r0.auc_target,
            r0.pauc,
            r0.precision_source,
            r0.precision_target,
            r0.recall_source,
            r0.recall_target,
            r0.f1_source,
            r0.f1_target,
        )
    )
    assert lines[3] == ",,AUC,pAUC,precision,recall,F1 score"
    assert [ln.split(",")[0] for ln in lines[4:8]] == [
        "arithmetic mean",
        "harmonic mean",
        "source harmonic mean",
        "target harmonic mean",
    ]
    assert lines[4].split(",")[2] == repr(float(np.mean([r0.auc_source, r0.auc_target])))
    assert lines[8] == "" and lines[9] == "bandsaw"
    assert '"arithmetic mean over all machine types, sections, and domains"' in text
    assert f"\nofficial score,,{res.official_score!r}\nofficial score ci95,,{res.ci95!r}\n" in text
    md = res.table()
    assert f"{res.official_score:.6f}" in md and "| bandsaw |" in md and "F1 (source)" in md


def test_result_csv_without_decisions_leaves_prf_empty(tmp_path: Path) -> None:
    truth, scores, _ = make_case(seed=4)
    res = evaluate(scores, truth, year=2024, ci95=False)
    rows = res.official_result_rows()
    assert rows[2][5:] == [""] * 6
    assert rows[-2] == ["official score ci95", "", ""] and rows[-1] == []
    assert "F1" not in res.table()


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda t, s: s.pop(("grinder", "00")), SubmissionError, "missing for grinder section 00"),
        (
            lambda t, s: s.update({("valve", "00"): {}}),
            SubmissionError,
            "not in the truth: valve section 00",
        ),
        (
            lambda t, s: s[("bandsaw", "00")].pop(t[("bandsaw", "00")].names[3]),
            SubmissionError,
            "1 of 26 test clips",
        ),
        (
            lambda t, s: s[("bandsaw", "00")].update({"x.wav": 1.0}),
            SubmissionError,
            "unknown file name 'x.wav'",
        ),
        (
            lambda t, s: s[("bandsaw", "00")].update({t[("bandsaw", "00")].names[0]: float("nan")}),
            SubmissionError,
            "not finite",
        ),
    ],
)
def test_evaluate_input_errors(mutate, error: type, match: str) -> None:  # type: ignore[no-untyped-def]
    truth, scores, _ = make_case(seed=5)
    mutate(truth, scores)
    with pytest.raises(error, match=match):
        evaluate(scores, truth, ci95=False)


def test_one_class_domain_is_a_clear_error() -> None:
    names = {("fan", "00"): dev_names("fan", (3, 2, 0, 2))}  # no target normals
    truth = truth_from_names(names)
    scores = {k: {n: float(i) for i, n in enumerate(st.names)} for k, st in truth.items()}
    with pytest.raises(
        MetricError, match=r"fan section 00: AUC \(target\).*0 normal and 4 anomalous"
    ):
        evaluate(scores, truth, ci95=False)


def test_decisions_must_be_binary_and_names_without_domain_are_single_domain() -> None:
    truth, scores, decisions = make_case(seed=6)
    decisions[("bandsaw", "00")][truth[("bandsaw", "00")].names[0]] = 2
    with pytest.raises(SubmissionError, match=r"decision .* must be 0 or 1"):
        evaluate(scores, truth, decisions, ci95=False)
    t2020 = truth_from_names(
        {("fan", "01"): ["normal_id_01_00000000.wav", "anomaly_id_01_00000001.wav"]}
    )
    # 2023 rules on names without a domain: evaluated single-domain, with a hint about 2020
    res = evaluate({("fan", "01"): {n: float(i) for i, n in enumerate(t2020[("fan", "01")].names)}},
                   t2020, year=2023, ci95=False)  # fmt: skip
    assert res.single_domain and not res.partial and res.sections[0].auc_source is None
    assert any("pass year=2020" in n for n in res.notes)


def test_2021_variant_per_domain_auc_and_pauc(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    names = {}
    for m in ("gearbox", "ToyCar"):
        for sec in ("03", "04"):
            names[(m, sec)] = [
                f"section_{sec}_{d}_test_{lab}_{i:04d}.wav"
                for d in ("source", "target")
                for lab in ("normal", "anomaly")
                for i in range(int(rng.integers(4, 9)))
            ]
    truth = truth_from_names(names)
    scores = {
        k: {n: float(np.round(rng.normal() + 0.7 * y, 1)) for n, y in zip(st.names, st.labels)}
        for k, st in truth.items()
    }
    res = evaluate(scores, truth, year=2021, ci95=False)
    aucs, paucs = [], []
    for m in sorted({k[0] for k in truth}):
        for d, dom in enumerate(("source", "target")):
            for sec in ("03", "04"):
                st = truth[(m, sec)]
                s = np.array([scores[(m, sec)][n] for n in st.names])
                mask = st.domains == d
                r = next(x for x in res.sections if (x.machine, x.section) == (m, sec))
                assert r.get("auc", dom) == roc_auc_score(st.labels[mask], s[mask])
                assert r.get("pauc", dom) == roc_auc_score(st.labels[mask], s[mask], max_fpr=0.1)
                assert r.pauc is None
                aucs.append(r.get("auc", dom))
                paucs.append(r.get("pauc", dom))
    assert res.official_score == float(scipy.stats.hmean(np.maximum(aucs + paucs, EPS)))
    assert res.arithmetic_mean == float(np.mean(aucs + paucs))
    rows = res.official_result_rows()
    assert rows[0] == ["ToyCar"] and rows[1] == [
        "section",
        "domain",
        "AUC",
        "pAUC",
        "precision",
        "recall",
        "F1 score",
    ]
    assert [r[:2] for r in rows[2:6]] == [
        ["03", "source"],
        ["04", "source"],
        ["03", "target"],
        ["04", "target"],
    ]
    assert rows[6][0] == "arithmetic mean" and float(rows[6][2]) == pytest.approx(
        np.mean(aucs[:4]), abs=1e-15
    )
    assert [p.name for p in res.write(tmp_path)][-1] == "system_result.csv"
    assert [r["metric"] for r in res.paper_table()] == [
        "AUC (source)",
        "AUC (target)",
        "pAUC (source)",
        "pAUC (target)",
        "TOTAL score",
    ]


def test_2020_variant_per_id_with_arithmetic_means(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    names = {
        (m, mid): [
            f"{lab}_id_{mid}_{i:08d}.wav"
            for lab in ("normal", "anomaly")
            for i in range(int(rng.integers(5, 12)))
        ]
        for m, ids in (("fan", ("01", "03")), ("ToyCar", ("05",)))
        for mid in ids
    }
    truth = truth_from_names(names)
    scores = {
        k: {n: float(rng.normal() + y) for n, y in zip(st.names, st.labels)}
        for k, st in truth.items()
    }
    res = evaluate(scores, truth, {k: {n: 1 for n in v} for k, v in scores.items()}, year=2020)
    for r in res.sections:
        st = truth[(r.machine, r.section)]
        s = np.array([scores[(r.machine, r.section)][n] for n in st.names])
        assert r.auc == roc_auc_score(st.labels, s) and r.pauc == roc_auc_score(
            st.labels, s, max_fpr=0.1
        )
        assert r.auc_source is None and r.f1_source is None
    values = [r.auc for r in res.sections] + [r.pauc for r in res.sections]
    assert res.official_score == res.arithmetic_mean == float(np.mean(values))
    assert res.ci95 is None
    assert "2020 has no single official score" in res.table()
    assert "no single official score" in res.official_score_name
    rows = res.official_result_rows()
    assert rows[:2] == [["ToyCar"], ["id", "AUC", "pAUC"]]
    assert rows[3][0] == "Average"
    fan = [r for r in res.sections if r.machine == "fan"]
    avg = next(r for r in rows if r and r[0] == "Average" and rows[rows.index(r) - 1][0] == "03")
    assert float(avg[1]) == float(np.mean([r.auc for r in fan]))
    assert [p.name for p in res.write(tmp_path)][-1] == "result_system.csv"


def make_dev_tree(root: Path) -> dict[tuple[str, str], list[str]]:
    names = {}
    for m, c in COUNTS.items():
        test = root / "dcase2023t2" / "dev_data" / "raw" / m / "test"
        train = root / "dcase2023t2" / "dev_data" / "raw" / m / "train"
        test.mkdir(parents=True)
        train.mkdir(parents=True)
        names[(m, "00")] = dev_names(m, c)
        for n in names[(m, "00")]:
            (test / n).write_bytes(b"")
        (train / f"section_00_source_train_normal_0000_{m[:3]}_0.wav").write_bytes(b"")
    return names


def test_evaluate_directory_on_a_dev_tree_equals_library_evaluate(tmp_path: Path) -> None:
    names = make_dev_tree(tmp_path)
    truth = truth_from_names(names)
    _, scores, decisions = make_case(seed=9)
    scores_dir = tmp_path / "run" / "scores"
    for (m, s), sc in scores.items():
        write_submission(scores_dir, m, s, sc, decisions[(m, s)])
    res = evaluate_directory(scores_dir, tmp_path / "dcase2023t2")
    lib = evaluate(scores, truth, decisions, year=2023, system="scores")
    assert res == lib
    assert res.year == 2023
    assert (scores_dir / "evaluation" / "scores_result.csv").is_file()
    assert (scores_dir / "evaluation" / "results.json").is_file()
    out = tmp_path / "elsewhere"
    res2 = evaluate_directory(scores_dir, tmp_path / "dcase2023t2", year=2024, out_dir=out)
    assert res2.year == 2024 and (out / "results.json").is_file()
    assert res2.official_score == lib.official_score


def test_evaluate_directory_with_gt_folder_and_baseline_names(tmp_path: Path) -> None:
    sections = {
        ("HairDryer", "00"): make_gt_clips(14, seed=1),
        ("Scanner", "00"): make_gt_clips(12, seed=2),
    }
    write_gt_folder(tmp_path / "gt", sections)
    rng = np.random.default_rng(0)
    scores_dir = tmp_path / "teams" / "baseline_MSE"
    scores = {}
    for (m, s), clips in sections.items():
        # revealed (column-2) names in the submission: mapped to the anonymised names
        sc = {c.full + ".wav": float(rng.normal() + c.label) for c in clips}
        write_submission(scores_dir, m, s, sc, {n: 0 for n in sc}, style="baseline", year=2024)
        scores[(m, s)] = {c.anon: sc[c.full + ".wav"] for c in clips}
    assert infer_evaluation_year(scores_dir, tmp_path / "gt") == (
        2024,
        "file-name prefix DCASE2024T2",
    )
    res = evaluate_directory(scores_dir, tmp_path / "gt")
    assert res.year == 2024 and res.system == "baseline_MSE"
    for r in res.sections:
        clips = sections[(r.machine, r.section)]
        y = np.array([c.label for c in sorted(clips, key=lambda c: c.anon)])
        s = np.array(
            [scores[(r.machine, r.section)][c.anon] for c in sorted(clips, key=lambda c: c.anon)]
        )
        assert r.auc == roc_auc_score(y, s)
    assert (scores_dir / "evaluation" / "baseline_MSE_result.csv").is_file()


def test_infer_year_rules(tmp_path: Path) -> None:
    d = tmp_path / "x"
    d.mkdir()
    assert infer_evaluation_year(d) == (2023, "default")
    (d / "anomaly_score_fan_id_01.csv").write_text("")
    assert infer_evaluation_year(d)[0] == 2020
    p = tmp_path / "dcase2021t2" / "scores"
    p.mkdir(parents=True)
    assert infer_evaluation_year(p)[0] == 2021


def test_real_2020_mini_dev_data(shared_dir: Path, tmp_path: Path) -> None:
    root = shared_dir / "data" / "dcase2020t2_mini"
    from stetho.data import scan_dataset

    clips = [c for c in scan_dataset(root) if c.split == "test"]
    rng = np.random.default_rng(0)
    truth = truth_from_names(
        {k: [c.name for c in clips if c.key == k] for k in {c.key for c in clips}}
    )
    scores = {k: {n: float(rng.normal()) for n in st.names} for k, st in truth.items()}
    for (m, s), sc in scores.items():
        write_submission(tmp_path / "sub", m, s, sc, year=2020)
    res = evaluate_directory(tmp_path / "sub", root)  # year from the path: dcase2020t2_mini
    assert res.year == 2020
    assert res == evaluate(scores, truth, year=2020, system="sub")
    assert len(res.sections) == len(truth) >= 2


def test_real_2023_mini_dev_data_one_class_subsets_fail_clearly(
    shared_dir: Path, tmp_path: Path
) -> None:
    root = shared_dir / "data" / "dcase2023t2_mini"
    from stetho.data import scan_dataset

    clips = [c for c in scan_dataset(root) if c.split == "test"]
    for key in {c.key for c in clips}:
        write_submission(
            tmp_path / "sub", key[0], key[1], {c.name: 0.5 for c in clips if c.key == key}
        )
    with pytest.raises(MetricError, match="needs both classes"):
        evaluate_directory(tmp_path / "sub", root)
