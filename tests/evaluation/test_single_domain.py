"""Single-domain sections (no target-domain clip, as ``stetho data import`` makes them).

References are computed independently with sklearn/scipy from the clip names; DCASE sections with
both domains must come out exactly as the official computation.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from stetho.evaluation import (
    MetricError,
    SectionResult,
    evaluate,
    evaluate_directory,
    truth_from_names,
)

EPS = sys.float_info.epsilon
SINGLE_FIELDS = {"single_domain", "precision", "recall", "f1"}


def dev_names(machine: str, counts: tuple[int, int, int, int], section: str = "00") -> list[str]:
    """Dev test names with SN/SA/TN/TA = counts."""
    out, i = [], 0
    for dom, lab, n in zip(
        ("source", "source", "target", "target"), ("normal", "anomaly") * 2, counts
    ):
        for _ in range(n):
            out.append(f"section_{section}_{dom}_test_{lab}_{i:04d}_noAttribute.wav")
            i += 1
    return out


def make_scores(names: dict, seed: int) -> tuple[dict, dict]:
    """Scores (ties included) and 0/1 decisions per section."""
    rng = np.random.default_rng(seed)
    scores, decisions = {}, {}
    for key in sorted(names):
        y = np.array([int("_anomaly_" in n) for n in names[key]])
        s = np.round(rng.normal(size=y.size) + 0.9 * y, 1)
        scores[key] = dict(zip(names[key], s.tolist()))
        decisions[key] = {n: int(v > 0.5) for n, v in zip(names[key], s.tolist())}
    return scores, decisions


def arrays(names: list[str], scores: dict, decisions: dict) -> tuple[np.ndarray, ...]:
    ordered = sorted(names)
    y = np.array([int("_anomaly_" in n) for n in ordered])
    t = np.array([int("_target_" in n) for n in ordered])
    s = np.array([scores[n] for n in ordered])
    d = np.array([decisions[n] for n in ordered])
    return y, t, s, d


def hmean(values: list[float]) -> float:
    return float(scipy.stats.hmean(np.maximum(values, EPS), axis=None))


@pytest.mark.parametrize("year", [2021, 2023, 2025])
def test_single_domain_metrics_match_an_independent_computation(year: int) -> None:
    names = {
        ("pump", "00"): dev_names("pump", (17, 6, 0, 0)),
        ("pump", "01"): dev_names("pump", (9, 4, 0, 0), section="01"),
        ("slider", "00"): dev_names("slider", (15, 3, 0, 0)),
    }
    truth = truth_from_names(names)
    scores, decisions = make_scores(names, seed=year)
    res = evaluate(scores, truth, decisions, year=year)

    assert res.single_domain and not res.partial and res.n_single_domain == 3
    aucs, paucs = [], []
    for r in res.sections:
        y, _t, s, d = arrays(names[(r.machine, r.section)], scores[(r.machine, r.section)],
                             decisions[(r.machine, r.section)])  # fmt: skip
        auc, pauc = roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1)
        assert r.single_domain
        assert r.auc == pytest.approx(auc, abs=1e-12)
        assert r.pauc == pytest.approx(pauc, abs=1e-12)
        assert r.precision == pytest.approx(precision_score(y, d, zero_division=0), abs=1e-12)
        assert r.recall == pytest.approx(recall_score(y, d, zero_division=0), abs=1e-12)
        assert r.f1 == pytest.approx(f1_score(y, d, zero_division=0), abs=1e-12)
        for f in ("auc_source", "auc_target", "pauc_source", "pauc_target", "f1_target"):
            assert getattr(r, f) is None, f
        aucs.append(auc)
        paucs.append(pauc)
    assert len(set(aucs)) == 3 and max(aucs) < 1.0  # a non-trivial case
    assert res.official_score == pytest.approx(hmean(aucs + paucs), rel=1e-12)
    assert res.arithmetic_mean == pytest.approx(float(np.mean(aucs + paucs)), rel=1e-12)
    assert res.n_values == 6 and res.n_undefined == 0

    table = res.table()
    assert table.startswith("Single-domain evaluation")
    assert "| machine | AUC | pAUC | precision | recall | F1 |" in table
    for absent in ("target", "source", "n/a", "WARNING", "partial", "Official score"):
        assert absent not in table, absent
    omega = "Ω2021" if year == 2021 else "Ω"
    assert f"**Single-domain score {omega} = {res.official_score:.6f}**" in table
    pump = next(line for line in table.splitlines() if line.startswith("| pump |"))
    assert pump.split(" | ")[1] == f"{np.mean(aucs[:2]):.4f}"  # mean over pump's 2 sections


def test_single_domain_result_files_round_trip(tmp_path: Path) -> None:
    names = {("pump", "00"): dev_names("pump", (12, 5, 0, 0))}
    truth = truth_from_names(names)
    scores, decisions = make_scores(names, seed=4)
    res = evaluate(scores, truth, decisions)
    res.write(tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["partial"] is False and data["sections"][0]["single_domain"] is True
    assert data["official_score_name"].startswith("single-domain score")
    rows = (tmp_path / "system_result.csv").read_text().splitlines()
    assert rows[1] == "section,domain,AUC,pAUC,precision,recall,F1 score"
    assert f"single-domain score,,{res.official_score!r}" in rows
    assert not any("official score" in r or r.startswith("partial") for r in rows)
    from stetho.evaluation import EvaluationResult

    assert EvaluationResult.from_dict(data) == res


def test_names_without_domain_are_single_domain() -> None:
    names = {("fan", "01"): [f"{lab}_id_01_{j:08d}.wav" for lab in ("normal", "anomaly")
                             for j in range(6)]}  # fmt: skip
    truth = truth_from_names(names)
    rng = np.random.default_rng(0)
    st = truth[("fan", "01")]
    s = rng.normal(size=len(st)) + st.labels
    res = evaluate({("fan", "01"): dict(zip(st.names, s.tolist()))}, truth, year=2023)
    assert res.single_domain and res.sections[0].n_target_normal is None
    assert res.sections[0].auc == pytest.approx(roc_auc_score(st.labels, s), abs=1e-12)
    assert any("pass year=2020" in n for n in res.notes)
    # year 2020 keeps its own rules (arithmetic mean, no single-domain marking)
    r2020 = evaluate({("fan", "01"): dict(zip(st.names, s.tolist()))}, truth, year=2020)
    assert not r2020.sections[0].single_domain and r2020.n_single_domain == 0


def test_two_domain_sections_are_unchanged_beside_single_domain_ones(tmp_path: Path) -> None:
    two = {
        ("bandsaw", "00"): dev_names("bandsaw", (9, 5, 8, 4)),
        ("grinder", "00"): dev_names("grinder", (11, 3, 4, 5)),
    }
    plant = {("pump", "00"): dev_names("pump", (14, 4, 0, 0))}
    scores, decisions = make_scores({**two, **plant}, seed=9)
    alone = evaluate(
        {k: scores[k] for k in two}, truth_from_names(two), {k: decisions[k] for k in two}
    )
    mixed = evaluate(scores, truth_from_names({**two, **plant}), decisions)

    # the DCASE sections: same objects, bit for bit, as without the single-domain section
    assert [r for r in mixed.sections if not r.single_domain] == alone.sections
    assert (
        not alone.partial and alone.n_single_domain == 0 and alone.score_label == "Official score"
    )
    # ... and equal to the official computation (domain normals vs all anomalies)
    src, tgt, pauc = [], [], []
    for key in sorted({**two, **plant}):
        y, t, s, _d = arrays({**two, **plant}[key], scores[key], decisions[key])
        if key in plant:
            src.append(roc_auc_score(y, s))
        else:
            src.append(roc_auc_score(y[(t == 0) | (y == 1)], s[(t == 0) | (y == 1)]))
            tgt.append(roc_auc_score(y[(t == 1) | (y == 1)], s[(t == 1) | (y == 1)]))
        pauc.append(roc_auc_score(y, s, max_fpr=0.1))
    official_two = [src[0], src[1], *tgt, pauc[0], pauc[1]]  # bandsaw, grinder (pump sorts last)
    assert alone.official_score == hmean(official_two)
    assert mixed.official_score == pytest.approx(hmean(src + tgt + pauc), rel=1e-12)
    assert not mixed.partial and not mixed.single_domain and mixed.score_label == "Score"

    table = mixed.table()
    alone_rows = [line for line in alone.table().splitlines() if line.startswith("|")]
    mixed_rows = [line for line in table.splitlines() if line.startswith("|")]
    assert mixed_rows[: len(alone_rows)] == alone_rows  # the DCASE table unchanged
    assert "| machine | AUC | pAUC | precision | recall | F1 |" in table
    assert "| pump |" in mixed_rows[len(alone_rows) + 2] and "WARNING" not in table
    assert "not comparable to official scores" in " ".join(mixed.notes)

    # a result without single-domain sections writes exactly the former columns
    alone.write(tmp_path / "a")
    header = (tmp_path / "a" / "results.csv").read_text().splitlines()[0].split(",")
    assert header == [f.name for f in fields(SectionResult) if f.name not in SINGLE_FIELDS]
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    assert not SINGLE_FIELDS & set(data["sections"][0])
    rows = alone.official_result_rows()
    assert ["official score", "", repr(alone.official_score)] in rows
    assert not any(r and r[0].startswith("single-domain") for r in rows)


def test_target_clips_without_target_normals_stay_partial() -> None:
    names = {("fan", "00"): dev_names("fan", (6, 3, 0, 2))}  # target anomalies, no target normal
    truth = truth_from_names(names)
    scores, decisions = make_scores(names, seed=1)
    with pytest.raises(MetricError, match=r"AUC \(target\).*0 normal and 5 anomalous"):
        evaluate(scores, truth, decisions, ci95=False)
    res = evaluate(scores, truth, decisions, ci95=False, allow_undefined=True)
    assert res.partial and res.n_single_domain == 0 and res.sections[0].auc_target is None
    assert "WARNING — partial: 1 of 3 values undefined" in res.table()


# ---------------------------------------------------------------------------------------------
# real clips: the plant engineer's path (data import → train → evaluate)


def _copy(files: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in files:
        shutil.copy(f, dest / f.name)
    return dest


def test_imported_plant_data_is_evaluated_single_domain(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stetho.cli import main

    train = sorted((shared_dir / "data" / "dcase2020t2_extra" / "dev_data" / "slider" / "train")
                   .glob("*.wav"))  # fmt: skip
    faulty = sorted((shared_dir / "data" / "dcase2020t2_mini" / "dev_data" / "slider" / "test")
                    .glob("anomaly_id_00_*.wav"))  # fmt: skip
    if len(train) < 55 or len(faulty) < 2:
        pytest.skip(f"slider clips missing in {shared_dir}")
    rec = _copy(train[:40], tmp_path / "rec")
    held = _copy(train[40:55], tmp_path / "held")
    bad = _copy(faulty, tmp_path / "faulty")
    data, run = tmp_path / "data" / "plant", tmp_path / "runs" / "plant"
    assert main(["data", "import", str(data), "--machine", "slider", "--train", str(rec),
                 "--test-normal", str(held), "--test-anomaly", str(bad)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(run)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    for absent in ("n/a", "F1 (target)", "AUC (target)", "partial", "not comparable", "Partial"):
        assert absent not in text, absent
    assert "| machine | AUC | pAUC | precision | recall | F1 |" in text
    assert "Single-domain score Ω = " in text

    # independent AUC/pAUC from the submission files and the names' labels
    lines = (run / "scores" / "anomaly_score_slider_section_00_test.csv").read_text().splitlines()
    named = {n: float(v) for n, v in (line.split(",") for line in lines)}
    assert len(named) == 15 + len(faulty)
    y = np.array([int("_anomaly_" in n) for n in named])
    s = np.array(list(named.values()))
    auc, pauc = roc_auc_score(y, s), roc_auc_score(y, s, max_fpr=0.1)
    assert f"Single-domain score Ω = {hmean([auc, pauc]):.6f}" in text

    # `stetho evaluate` on the same files and the imported data as truth
    assert main(["evaluate", str(run / "scores"), "--truth", str(data)]) == 0
    out = capsys.readouterr()
    assert "Single-domain score Ω" in out.out and "n/a" not in out.out
    res = evaluate_directory(run / "scores", data, out_dir=tmp_path / "ev")
    assert res.single_domain and not res.partial
    assert res.sections[0].auc == pytest.approx(auc, abs=1e-12)
    assert res.sections[0].pauc == pytest.approx(pauc, abs=1e-12)
    assert res.official_score == pytest.approx(hmean([auc, pauc]), rel=1e-12)
