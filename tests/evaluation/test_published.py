"""Regression oracles against the organisers' published baseline numbers (protocol §3.6, §4.2).

1. Aggregation: published per-machine AUC_s, AUC_t, pAUC → published Ω, a-mean and row h-means.
2. Subset definition: AUC_s·N_s⁻·N⁺ is a whole count only with N⁺ = ALL anomalies (§1.6 counts).
3. pAUC definition: inverse McClish × N⁻·N⁺ is a whole count (× 1/10 step) for the whole section.
4. End to end: synthetic score sets with the §1.6 counts and those whole counts, run through
   ``evaluate``, reproduce every published per-machine value and the published Ω.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stetho.evaluation import (
    EvaluationResult,
    SectionResult,
    SectionTruth,
    auc_score,
    evaluate,
    official_score,
    omega_values,
)

from .helpers import build_section, pauc_count

# (machines as published, AUC_source, AUC_target, pAUC, published Ω, published a-mean)
PUBLISHED = {
    "2023 MSE": (
        ["bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"],
        [
            0.6667348190554078,
            0.706837186424004,
            0.69428983714698,
            0.7968000000000001,
            0.77,
            0.7212000000000001,
            0.8816,
        ],
        [
            0.48287671232876717,
            0.5516569200779727,
            0.5604118104118104,
            0.561,
            0.4716,
            0.6468,
            0.45320000000000005,
        ],
        [
            0.5091087658743451,
            0.5846166760294185,
            0.5491654428600755,
            0.5368421052631579,
            0.5178947368421053,
            0.5826315789473684,
            0.5947368421052631,
        ],
        0.5925469043549957,
        0.6114287349222227,
    ),
    "2023 MAHALA": (
        ["bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"],
        [
            0.836434267021059,
            0.7409411378914575,
            0.8476602762317048,
            0.8130000000000001,
            0.6678000000000002,
            0.8011999999999999,
            0.8383999999999999,
        ],
        [0.5885844748858448, 0.50682261208577, 0.6299533799533801, 0.4622, 0.409, 0.4532, 0.9006],
        [
            0.5753594967896497,
            0.5955291246149972,
            0.6233307541280444,
            0.5142105263157895,
            0.5089473684210526,
            0.5384210526315789,
            0.653157894736842,
        ],
        0.6105082186925268,
        0.6430834459860557,
    ),
    "2024 MSE": (
        [
            "3DPrinter",
            "AirCompressor",
            "Scanner",
            "ToyCircuit",
            "HoveringDrone",
            "HairDryer",
            "ToothBrush",
            "RoboticArm",
            "BrushlessMotor",
        ],
        [
            0.7912,
            0.65,
            0.6916,
            0.7658,
            0.8601999999999999,
            0.6224000000000001,
            0.7504000000000001,
            0.6596,
            0.7070000000000001,
        ],
        [
            0.47959999999999997,
            0.4824,
            0.5374000000000001,
            0.5266000000000001,
            0.43879999999999997,
            0.4598,
            0.6948,
            0.4152,
            0.6352,
        ],
        [
            0.4942105263157895,
            0.5547368421052632,
            0.5010526315789474,
            0.5,
            0.5021052631578947,
            0.5163157894736842,
            0.5273684210526316,
            0.511578947368421,
            0.5557894736842105,
        ],
        0.5650830191796572,
        0.5863391812865497,
    ),
    "2024 MAHALA": (
        [
            "3DPrinter",
            "AirCompressor",
            "Scanner",
            "ToyCircuit",
            "HoveringDrone",
            "HairDryer",
            "ToothBrush",
            "RoboticArm",
            "BrushlessMotor",
        ],
        [
            0.7544,
            0.6609999999999999,
            0.5684,
            0.6794,
            0.8387999999999999,
            0.606,
            0.6556,
            0.5834,
            0.8032,
        ],
        [
            0.42399999999999993,
            0.555,
            0.5549999999999999,
            0.4464,
            0.46399999999999997,
            0.5898,
            0.579,
            0.42499999999999993,
            0.7338,
        ],
        [
            0.508421052631579,
            0.6078947368421053,
            0.4926315789473684,
            0.4921052631578947,
            0.5800000000000001,
            0.5510526315789473,
            0.48368421052631577,
            0.5178947368421053,
            0.5905263157894737,
        ],
        0.5648933421610234,
        0.5832003898635478,
    ),
    "2025 MSE": (
        [
            "AutoTrash",
            "HomeCamera",
            "ToyPet",
            "ToyRCCar",
            "BandSealer",
            "CoffeeGrinder",
            "Polisher",
            "ScrewFeeder",
        ],
        [
            0.8102,
            0.8140000000000001,
            0.677,
            0.5284,
            0.7198,
            0.7303999999999999,
            0.6686000000000001,
            0.6486,
        ],
        [0.3436, 0.4976, 0.36699999999999994, 0.6271999999999999, 0.3956, 0.4436, 0.443, 0.6592],
        [
            0.5421052631578948,
            0.5284210526315789,
            0.55,
            0.5552631578947368,
            0.5205263157894737,
            0.5342105263157895,
            0.5231578947368422,
            0.6210526315789474,
        ],
        0.5442827820713174,
        0.5728557017543859,
    ),
    "2025 MAHALA": (
        [
            "AutoTrash",
            "HomeCamera",
            "ToyPet",
            "ToyRCCar",
            "BandSealer",
            "CoffeeGrinder",
            "Polisher",
            "ScrewFeeder",
        ],
        [
            0.7726000000000001,
            0.8616,
            0.6981999999999999,
            0.5586,
            0.7638,
            0.7498,
            0.7041999999999999,
            0.729,
        ],
        [0.526, 0.42640000000000006, 0.509, 0.5548, 0.3268, 0.4042, 0.5278, 0.7904000000000001],
        [
            0.541578947368421,
            0.5184210526315789,
            0.5684210526315789,
            0.54,
            0.49105263157894735,
            0.5142105263157895,
            0.5378947368421052,
            0.7005263157894737,
        ],
        0.5650558189601554,
        0.596471052631579,
    ),
}

# 2023 README paper table: (metric, h-mean, a-mean)
PUBLISHED_ROWS_2023 = {
    "2023 MAHALA": [
        ("AUC (source)", 0.7871141310430937, 0.7922050973063174),
        ("AUC (target)", 0.53090862919051, 0.5643372095607136),
        ("pAUC (source, target)", 0.5682103280865886, 0.5727080310911363),
        ("TOTAL score", 0.6105082186925268, 0.6430834459860557),
    ],
    "2023 MSE": [
        ("AUC (source)", 0.7423494890244248, 0.7482088346609131),
        ("AUC (target)", 0.5253826834789426, 0.5325064918312215),
        ("pAUC (source, target)", 0.5517419647782388, 0.5535708782745333),
        ("TOTAL score", 0.5925469043549957, 0.6114287349222227),
    ],
}

# §1.6 eval-test composition (SN, SA, TN, TA); 2024/2025 and the other 2023 machines: 50 each
COUNTS_2023 = {
    "bandsaw": (67, 40, 60, 33),
    "grinder": (107, 27, 36, 30),
    "shaker": (49, 53, 52, 46),
}
BALANCED = (50, 50, 50, 50)

TOL = 1e-12
ULP = 2.3e-16  # what the evaluator's value order buys: agreement to the last bit (≤ 1 ulp)


def counts_of(key: str, machine: str) -> tuple[int, int, int, int]:
    return COUNTS_2023.get(machine, BALANCED) if key.startswith("2023") else BALANCED


def result_from_published(key: str) -> EvaluationResult:
    machines, src, tgt, pauc, _, _ = PUBLISHED[key]
    sections = [
        SectionResult(machine=m, section="00", auc=float("nan"), auc_source=s, auc_target=t, pauc=p)
        for m, s, t, p in zip(machines, src, tgt, pauc)
    ]
    values = omega_values(int(key[:4]), sections)
    return EvaluationResult(
        year=int(key[:4]),
        sections=sections,
        official_score=official_score(values),
        arithmetic_mean=float(np.mean(values)),
        system=key.split()[1],
    )


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_aggregation_oracle_reproduces_published_omega_and_amean(key: str) -> None:
    _, _, _, _, omega, amean = PUBLISHED[key]
    res = result_from_published(key)
    assert abs(res.official_score - omega) <= TOL
    assert abs(res.arithmetic_mean - amean) <= TOL
    # with the evaluator's order (sorted machines; AUC_s…, AUC_t…, pAUC…) the floats agree to ≤ 1 ulp
    assert abs(res.official_score - omega) <= ULP
    assert abs(res.arithmetic_mean - amean) <= ULP
    totals = res.metric_means()["TOTAL score"]
    assert totals["h-mean"] == res.official_score and totals["a-mean"] == res.arithmetic_mean


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_omega_is_a_flat_harmonic_mean_not_per_machine(key: str) -> None:
    _machines, src, tgt, pauc, omega, _ = PUBLISHED[key]
    per_machine = [3 / (1 / s + 1 / t + 1 / p) for s, t, p in zip(src, tgt, pauc)]
    nested = len(per_machine) / sum(1 / v for v in per_machine)
    arithmetic_of_machines = float(np.mean(per_machine))
    flat = official_score([*src, *tgt, *pauc])
    assert abs(flat - omega) <= TOL
    # the alternative aggregation that differs from the flat one is measurably off
    assert abs(arithmetic_of_machines - omega) > 1e-4
    assert math.isclose(nested, flat, rel_tol=1e-12)  # hmean of hmeans of equal-size groups


@pytest.mark.parametrize("key", sorted(PUBLISHED_ROWS_2023))
def test_paper_table_rows_of_2023(key: str) -> None:
    res = result_from_published(key)
    rows = {r["metric"]: r for r in res.paper_table()}
    assert list(rows) == [m for m, _, _ in PUBLISHED_ROWS_2023[key]]
    for metric, h, a in PUBLISHED_ROWS_2023[key]:
        assert abs(rows[metric]["h-mean"] - h) <= TOL, metric
        assert abs(rows[metric]["a-mean"] - a) <= TOL, metric
    # per-machine columns are the machine's values (one section each), machines in sorted() order
    machines, src, _, pauc, _, _ = PUBLISHED[key]
    header = res.paper_table_rows()[0]
    assert (
        header[4:]
        == sorted(machines)
        == ["ToyDrone", "ToyNscale", "ToyTank", "Vacuum", "bandsaw", "grinder", "shaker"]
    )
    for m, s, p in zip(machines, src, pauc):
        assert rows["AUC (source)"][m] == s
        assert rows["pAUC (source, target)"][m] == p
        assert rows["TOTAL score"][m] is None


@pytest.mark.parametrize("key", ["2023 MSE", "2023 MAHALA"])
@pytest.mark.parametrize("machine", sorted(COUNTS_2023))
def test_subset_definition_oracle_all_anomalies(key: str, machine: str) -> None:
    """AUC_s·N_s⁻·N⁺ is a (half-)integer only with N⁺ = all anomalies of the section."""
    machines, src, tgt, _, _, _ = PUBLISHED[key]
    sn, sa, tn, ta = COUNTS_2023[machine]
    i = machines.index(machine)
    for auc, n_norm, n_dom_anom in ((src[i], sn, sa), (tgt[i], tn, ta)):
        official = auc * n_norm * (sa + ta) * 2  # Mann–Whitney count ×2 (ties give halves)
        assert abs(official - round(official)) < 1e-6, (machine, auc)
        # the domain-only definition (domain normals vs domain anomalies) cannot give this value:
        # no (half-)integer count over n_norm·n_dom_anom pairs comes within 1e-6 of it
        domain_only = auc * n_norm * n_dom_anom * 2
        assert abs(domain_only - round(domain_only)) > 1e-3, (machine, auc, domain_only)


def test_subset_oracle_example_values_of_the_spec() -> None:
    src, tgt = PUBLISHED["2023 MSE"][1][0], PUBLISHED["2023 MSE"][2][0]
    assert src * 67 * 73 == pytest.approx(3261.0, abs=1e-9)
    assert tgt * 60 * 73 == pytest.approx(2115.0, abs=1e-9)
    assert src * 67 * 40 == pytest.approx(1786.85, abs=1e-2)  # the spec quotes it rounded


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_pauc_definition_oracle_whole_section_mcclish(key: str) -> None:
    """Inverse McClish × N⁻·N⁺ × 10 is an integer (the FPR step at p = 0.1 is N⁻/10 clips)."""
    machines, _, _, pauc, _, _ = PUBLISHED[key]
    for m, p in zip(machines, pauc):
        sn, sa, tn, ta = counts_of(key, m)
        n_neg, n_pos = sn + tn, sa + ta
        c = pauc_count(p, n_neg, n_pos) * 10
        assert abs(c - round(c)) < 1e-6, (m, p, c)
        if (sn, sa, tn, ta) == BALANCED:  # p·N⁻ = 10 clips: a plain integer count
            c1 = pauc_count(p, n_neg, n_pos)
            assert abs(c1 - round(c1)) < 1e-6
        # the task-paper formula A/p (chance ≈ 0.05) would make every baseline "worse than chance"
        assert p > 0.47


def synthetic_truth_and_scores(key: str) -> tuple[dict, dict]:
    machines, src, tgt, pauc, _, _ = PUBLISHED[key]
    truth, scores = {}, {}
    for m, s, t, p in zip(machines, src, tgt, pauc):
        syn = build_section(counts_of(key, m), s, t, p)
        truth[(m, "00")] = SectionTruth(m, "00", syn.names, syn.labels, syn.domains)
        scores[(m, "00")] = dict(zip(syn.names, syn.scores.tolist()))
    return truth, scores


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_end_to_end_synthetic_sections_reproduce_published_numbers(key: str) -> None:
    machines, src, tgt, pauc, omega, amean = PUBLISHED[key]
    truth, scores = synthetic_truth_and_scores(key)
    res = evaluate(scores, truth, year=int(key[:4]), ci95=False)
    by_machine = {r.machine: r for r in res.sections}
    assert [r.machine for r in res.sections] == sorted(machines)
    for m, s, t, p in zip(machines, src, tgt, pauc):
        r = by_machine[m]
        assert abs(r.auc_source - s) <= TOL, (m, "AUC source")
        assert abs(r.auc_target - t) <= TOL, (m, "AUC target")
        assert abs(r.pauc - p) <= TOL, (m, "pAUC")
        counts = counts_of(key, m)
        assert (
            r.n_source_normal,
            r.n_source_anomaly,
            r.n_target_normal,
            r.n_target_anomaly,
        ) == counts
    assert abs(res.official_score - omega) <= TOL
    assert abs(res.arithmetic_mean - amean) <= TOL


def test_domain_only_definition_misses_published_bandsaw_value() -> None:
    """On the synthetic bandsaw section (published MSE counts) only 'source normals vs ALL
    anomalies' gives the published AUC_s; the domain-only subset gives something else."""
    truth, scores = synthetic_truth_and_scores("2023 MSE")
    st = truth[("bandsaw", "00")]
    s = np.array([scores[("bandsaw", "00")][n] for n in st.names])
    y, d = st.labels, st.domains
    published = PUBLISHED["2023 MSE"][1][0]
    ours = evaluate({st.key: scores[st.key]}, {st.key: st}, year=2023, ci95=False).sections[0]
    domain_only = auc_score(y[d == 0], s[d == 0])
    assert abs(ours.auc_source - published) <= TOL
    assert abs(domain_only - published) > 1e-3
