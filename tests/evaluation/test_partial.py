"""Partial evaluation (``allow_undefined=True``) on small / unbalanced sets; strict stays default.

References are computed independently with sklearn/scipy from the clip names (label from the
``anomaly`` token, domain from the ``target`` token), in the official evaluator's value order.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from stetho.evaluation import (
    EvaluationResult,
    MetricError,
    evaluate,
    evaluate_directory,
    jackknife_ci95,
    truth_from_names,
    write_submission,
)

EPS = sys.float_info.epsilon
METRIC_NAMES = {
    "auc": "AUC (all)",
    "pauc": "pAUC",
    "auc_source": "AUC (source)",
    "auc_target": "AUC (target)",
}


def names_2023(machine: str, counts: tuple[int, int, int, int], section: str = "00") -> list[str]:
    """Dev test names with SN/SA/TN/TA = counts."""
    out, i = [], 0
    for dom, lab, n in zip(
        ("source", "source", "target", "target"), ("normal", "anomaly") * 2, counts
    ):
        for _ in range(n):
            out.append(f"section_{section}_{dom}_test_{lab}_{i:04d}_{machine[:3]}.wav")
            i += 1
    return out


def random_scores(names: dict, seed: int, ties: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(names):
        s = rng.normal(size=len(names[key])) + 0.7 * np.array(
            ["_anomaly_" in n for n in names[key]]
        )
        if ties:
            s = np.round(s, 0)
        out[key] = dict(zip(names[key], s.tolist()))
    return out


def sk(y: np.ndarray, s: np.ndarray, mask: np.ndarray, max_fpr: float | None = None):
    """sklearn AUC/pAUC on a subset, None when the subset has one class."""
    if len(set(y[mask].tolist())) < 2:
        return None
    return roc_auc_score(y[mask], s[mask], max_fpr=max_fpr)


def reference_2023(names: dict, scores: dict) -> dict:
    """Per-section metrics (None = undefined) + Ω / a-mean / per-metric means over defined values.

    A section without any target clip is single-domain: AUC and pAUC over all its clips, no
    source/target values; its AUC takes the AUC_source place in Ω's value order.
    """
    per: dict = {}
    single: set = set()
    for key in sorted(names):
        ordered = sorted(names[key])
        y = np.array([int("_anomaly_" in n) for n in ordered])
        t = np.array([int("_target_" in n) for n in ordered])
        s = np.array([scores[key][n] for n in ordered])
        every = np.ones_like(y, dtype=bool)
        per[key] = {"auc": sk(y, s, every), "pauc": sk(y, s, every, 0.1)}
        if not t.any():
            single.add(key)
            continue
        per[key]["auc_source"] = sk(y, s, (t == 0) | (y == 1))
        per[key]["auc_target"] = sk(y, s, (t == 1) | (y == 1))
    keys = sorted(per)
    two = [k for k in keys if k not in single]
    slots = {m: [per[k][m] for k in two] for m in ("auc_source", "auc_target", "pauc")}
    flat = (
        [per[k]["auc"] if k in single else per[k]["auc_source"] for k in keys]
        + slots["auc_target"]
        + [per[k]["pauc"] for k in keys]
    )
    defined = [v for v in flat if v is not None]
    return {
        "per": per,
        "single": single,
        "slots": slots,
        "defined": defined,
        "n_undefined": sum(v is None for v in flat),
        "n_values": len(flat),
    }


def hmean(values: list[float]) -> float:
    return float(scipy.stats.hmean(np.maximum(values, EPS), axis=None))


# ---------------------------------------------------------------------------------------------
# strict stays the default


@pytest.mark.parametrize("year", [2020, 2021, 2023])
def test_strict_default_still_raises_on_a_one_class_subset(year: int) -> None:
    if year == 2020:
        names = {
            ("fan", "01"): ["normal_id_01_00000000.wav", "anomaly_id_01_00000001.wav"],
            ("fan", "02"): ["normal_id_02_00000000.wav", "normal_id_02_00000001.wav"],
        }
        match = r"fan section 02: AUC \(all\).*needs both classes"
    elif year == 2021:
        names = {("fan", "00"): names_2023("fan", (3, 2, 3, 0))}
        match = r"fan section 00: AUC \(target\).*needs both classes"
    else:
        names = {("fan", "00"): names_2023("fan", (3, 2, 0, 2))}
        match = r"fan section 00: AUC \(target\).*0 normal and 4 anomalous"
    truth = truth_from_names(names)
    scores = random_scores(names, seed=1)
    with pytest.raises(MetricError, match=match):
        evaluate(scores, truth, year=year, ci95=False)
    with pytest.raises(MetricError, match=match):
        evaluate(scores, truth, year=year, ci95=False, allow_undefined=False)
    res = evaluate(scores, truth, year=year, ci95=False, allow_undefined=True)
    assert res.partial and res.n_undefined >= 1


def test_strict_default_on_the_real_mini_set_raises(shared_dir: Path, tmp_path: Path) -> None:
    root = shared_dir / "data" / "dcase2023t2_mini"
    names = real_test_names(root)
    for (m, s), sc in random_scores(names, seed=0).items():
        write_submission(tmp_path / "sub", m, s, sc)
    with pytest.raises(MetricError, match="needs both classes"):
        evaluate_directory(tmp_path / "sub", root)
    assert not (tmp_path / "sub" / "evaluation").exists()


# ---------------------------------------------------------------------------------------------
# partial mode on the real 28-clip mini dev set


def real_test_names(root: Path) -> dict[tuple[str, str], list[str]]:
    from stetho.data import scan_dataset

    clips = [c for c in scan_dataset(root) if c.split == "test"]
    names: dict[tuple[str, str], list[str]] = {}
    for c in clips:
        names.setdefault(c.key, []).append(c.name)
    return names


@pytest.mark.parametrize("ties", [False, True])
def test_partial_on_real_mini_dev_set_matches_sklearn(
    shared_dir: Path, tmp_path: Path, ties: bool
) -> None:
    root = shared_dir / "data" / "dcase2023t2_mini"
    names = real_test_names(root)
    assert sum(len(v) for v in names.values()) == 14 and len(names) == 7
    scores = random_scores(names, seed=5, ties=ties)
    decisions = {k: {n: i % 2 for i, n in enumerate(sorted(v))} for k, v in scores.items()}
    sub = tmp_path / "sub"
    for (m, s), sc in scores.items():
        write_submission(sub, m, s, sc, decisions[(m, s)])
    res = evaluate_directory(sub, root, allow_undefined=True, out_dir=tmp_path / "out")
    ref = reference_2023(names, scores)

    assert res.year == 2023 and res.partial
    assert 0 < ref["n_undefined"] < ref["n_values"]  # the mini set really is partial
    assert (res.n_undefined, res.n_values) == (ref["n_undefined"], ref["n_values"])
    assert ref["single"] == {("ToyCar", "00")}  # 2 source normals, no target clip
    assert {(r.machine, r.section) for r in res.sections if r.single_domain} == ref["single"]
    undefined_notes = [n for n in res.notes if " undefined: " in n]
    n_none = 0
    for r in res.sections:
        exp = ref["per"][(r.machine, r.section)]
        if r.single_domain:  # no source/target values; decisions over all clips
            assert r.auc_source is None and r.auc_target is None and r.f1_source is None
            assert r.f1 is not None and r.f1_target is None
        for field, want in exp.items():
            got = getattr(r, field)
            if want is None:
                n_none += 1
                assert got is None, (r.machine, field)
                assert any(
                    n.startswith(f"{r.machine} {r.section}: {METRIC_NAMES[field]} undefined: no ")
                    for n in undefined_notes
                ), (r.machine, field, undefined_notes)
            else:
                assert got == want, (r.machine, field, got, want)  # exact
        if not r.single_domain:  # ε-guarded, always defined
            assert r.f1_source is not None and r.f1_target is not None
    assert len(undefined_notes) == n_none
    assert any(n == "slider 00: AUC (source) undefined: no anomalies" for n in undefined_notes)

    # Ω / a-mean over the defined values only, in official order
    assert res.official_score == hmean(ref["defined"])
    assert res.arithmetic_mean == float(np.mean(ref["defined"]))
    means = res.metric_means()
    for name, field in (("AUC (source)", "auc_source"), ("AUC (target)", "auc_target")):
        vals = [v for v in ref["slots"][field] if v is not None]
        assert means[name]["h-mean"] == hmean(vals)
        assert means[name]["a-mean"] == float(np.mean(vals))
    paucs = [v for v in ref["slots"]["pauc"] if v is not None]
    assert means["pAUC (source, target)"]["h-mean"] == hmean(paucs + paucs)

    # ci95 is over pooled clips (defined here: ≥ 2 of each class)
    keys = sorted(names)
    y = np.concatenate([[int("_anomaly_" in n) for n in sorted(names[k])] for k in keys])
    s = np.concatenate([[scores[k][n] for n in sorted(names[k])] for k in keys])
    assert res.ci95 == jackknife_ci95(y, s)

    table = res.table()
    summary = (
        f"partial: {ref['n_undefined']} of {ref['n_values']} values undefined; "
        "not comparable to official scores"
    )
    assert summary in table.split("\n")[2]  # right under the title
    assert "| slider | n/a | n/a | n/a | 0." in table  # F1 columns defined
    assert "Partial score Ω" in table and "Official score" not in table

    # files: undefined → empty CSV cell / JSON null, round trip
    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    assert data["partial"] is True and data["undefined_values"] == ref["n_undefined"]
    assert data["omega_values"] == ref["defined"]
    slider = next(x for x in data["sections"] if x["machine"] == "slider")
    assert slider["auc"] is None and slider["pauc"] is None
    assert EvaluationResult.from_dict(data) == res
    with open(out / "results.csv") as fh:
        rows = {r["machine"]: r for r in csv.DictReader(fh)}
    for r in res.sections:
        for field in METRIC_NAMES:
            v = getattr(r, field)
            assert rows[r.machine][field] == ("" if v is None else repr(v))
    with open(out / "sub_result.csv") as fh:
        official = list(csv.reader(fh))
    row = official[official.index(["slider"]) + 2]
    assert row[:5] == ["00", "", "", "", ""] and row[5] != ""
    assert ["partial", "", summary] in official
    aucs = [v for f in ("auc_source", "auc_target") for v in ref["slots"][f] if v is not None]
    over_all = next(r for r in official if r and r[0].startswith("arithmetic mean over all"))
    assert over_all[2:4] == [repr(float(np.mean(aucs))), repr(float(np.mean(paucs + paucs)))]
    assert ["official score", "", repr(res.official_score)] in official
    assert [
        "single-domain sections",
        "",
        "ToyCar:00; not comparable to official scores",
    ] in official
    with open(out / "paper_table.csv") as fh:
        paper = list(csv.DictReader(fh))
    assert paper[0]["metric"] == "AUC (source)" and paper[0]["slider"] == ""
    assert float(paper[0]["h-mean"]) == means["AUC (source)"]["h-mean"]


# ---------------------------------------------------------------------------------------------
# fully defined input: identical with and without the flag


@pytest.mark.parametrize("year", [2020, 2021, 2023])
def test_fully_defined_input_is_identical_with_and_without_the_flag(
    year: int, tmp_path: Path
) -> None:
    if year == 2020:
        names = {
            (m, i): [f"{lab}_id_{i}_{j:08d}.wav" for lab in ("normal", "anomaly") for j in range(6)]
            for m, i in (("fan", "01"), ("fan", "03"), ("pump", "02"))
        }
    else:
        names = {
            ("bandsaw", "00"): names_2023("bandsaw", (9, 5, 8, 4)),
            ("grinder", "00"): names_2023("grinder", (11, 3, 4, 5)),
            ("grinder", "01"): names_2023("grinder", (6, 6, 6, 6), section="01"),
        }
    truth = truth_from_names(names)
    scores = random_scores(names, seed=year, ties=True)
    decisions = None
    if year != 2020:
        decisions = {k: {n: int(v > 0.3) for n, v in sc.items()} for k, sc in scores.items()}
    strict = evaluate(scores, truth, decisions, year=year)
    partial = evaluate(scores, truth, decisions, year=year, allow_undefined=True)
    assert partial == strict and not partial.partial and partial.n_undefined == 0
    assert partial.official_score == strict.official_score  # same float, not just close
    assert partial.table() == strict.table() and "partial" not in strict.table()
    for name, res in (("a", strict), ("b", partial)):
        res.write(tmp_path / name)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


# ---------------------------------------------------------------------------------------------
# other years, nothing defined, ci95, round trip


def test_partial_2021_per_domain_and_round_trip(tmp_path: Path) -> None:
    names = {
        ("fan", "00"): names_2023("fan", (4, 3, 5, 0)),  # no target anomalies
        ("fan", "01"): names_2023("fan", (5, 4, 3, 3), section="01"),
    }
    truth = truth_from_names(names)
    scores = random_scores(names, seed=11)
    res = evaluate(scores, truth, year=2021, allow_undefined=True)
    r0 = res.sections[0]
    assert r0.auc_target is None and r0.pauc_target is None and r0.auc is not None
    assert "fan 00: AUC (target) undefined: no target anomalies" in res.notes
    assert "fan 00: pAUC (target) undefined: no target anomalies" in res.notes
    aucs, paucs = [], []
    for d in (0, 1):  # 2021 order: domain outer, section inner
        for sec in ("00", "01"):
            st = truth[("fan", sec)]
            s = np.array([scores[("fan", sec)][n] for n in st.names])
            mask = st.domains == d
            aucs.append(sk(st.labels, s, mask))
            paucs.append(sk(st.labels, s, mask, 0.1))
    defined = [v for v in aucs + paucs if v is not None]
    assert len(defined) == 6 and (res.n_undefined, res.n_values) == (2, 8)
    assert res.official_score == hmean(defined)
    got = [r.get(m, d) for m in ("auc", "pauc") for d in ("source", "target") for r in res.sections]
    want = [aucs[0], aucs[1], aucs[2], aucs[3], paucs[0], paucs[1], paucs[2], paucs[3]]
    assert got == want
    rows = res.official_result_rows()
    assert ["00", "target", "", "", "", "", ""] in rows and rows[-2][0] == "partial"
    res.write(tmp_path)
    back = EvaluationResult.from_dict(json.loads((tmp_path / "results.json").read_text()))
    assert back == res and back.partial and back.sections[0].pauc_target is None


def test_partial_2020_mean_over_defined_values() -> None:
    names = {
        ("fan", "01"): [
            f"{lab}_id_01_{j:08d}.wav" for lab in ("normal", "anomaly") for j in range(5)
        ],
        ("fan", "02"): [f"normal_id_02_{j:08d}.wav" for j in range(4)],
        ("pump", "05"): [f"anomaly_id_05_{j:08d}.wav" for j in range(3)],
    }
    truth = truth_from_names(names)
    scores = random_scores(names, seed=3)
    res = evaluate(scores, truth, year=2020, allow_undefined=True)
    st = truth[("fan", "01")]
    s = np.array([scores[("fan", "01")][n] for n in st.names])
    auc, pauc = roc_auc_score(st.labels, s), roc_auc_score(st.labels, s, max_fpr=0.1)
    assert res.official_score == res.arithmetic_mean == float(np.mean([auc, pauc]))
    assert res.sections[1].auc is None and res.sections[1].pauc is None
    assert "fan 02: AUC (all) undefined: no anomalies" in res.notes
    assert res.sections[2].auc is None and (res.n_undefined, res.n_values) == (4, 6)
    assert "pump 05: pAUC undefined: no normals" in res.notes
    assert "(partial)" in res.table() and "| pump | n/a | n/a |" in res.table()
    average = [r for r in res.official_result_rows() if r and r[0] == "Average"]
    assert average[0] == ["Average", repr(auc), repr(pauc)] and average[1] == ["Average", "", ""]


def test_nothing_defined_raises_even_in_partial_mode() -> None:
    names = {
        ("fan", "00"): names_2023("fan", (3, 0, 2, 0)),
        ("pump", "00"): names_2023("pump", (2, 0, 0, 0)),
    }
    truth = truth_from_names(names)
    with pytest.raises(MetricError, match="no metric is defined"):
        evaluate(random_scores(names, seed=0), truth, allow_undefined=True)


def test_ci95_undefined_is_skipped_and_noted() -> None:
    # every Ω value defined, but the pooled clips hold only one anomaly: no leave-one-out
    names = {("fan", "00"): names_2023("fan", (4, 1, 3, 0))}
    truth = truth_from_names(names)
    scores = random_scores(names, seed=2)
    res = evaluate(scores, truth, allow_undefined=True)
    assert res.ci95 is None and not res.partial
    assert any(n.startswith("official score ci95 undefined:") for n in res.notes)
    strict = evaluate(scores, truth)
    assert strict.ci95 is None and strict.official_score == res.official_score
    assert not any("ci95" in n for n in strict.notes)
    assert ["official score ci95", "", ""] in res.official_result_rows()
