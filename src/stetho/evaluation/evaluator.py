"""Evaluate anomaly scores exactly like the official DCASE Task 2 evaluators (protocol §2).

:func:`evaluate` computes the per-section metrics of the requested year and the aggregates;
:func:`evaluate_directory` is the CLI entry: read a submission folder, get the truth from a dev
dataset root or an official ground-truth folder, evaluate and write the result files.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stetho.evaluation.metrics import (
    MAX_FPR,
    MetricError,
    arithmetic_mean,
    auc_score,
    leave_one_out,
    official_score,
    pauc_score,
    precision_recall_f1,
)
from stetho.evaluation.results import EvaluationResult, SectionResult, omega_values
from stetho.evaluation.submission import (
    Decisions,
    Scores,
    SubmissionError,
    align_values,
    read_submission,
)
from stetho.evaluation.truth import (
    DOMAINS,
    GroundTruthError,
    SectionTruth,
    Truth,
    check_year,
    is_ground_truth_dir,
    load_ground_truth,
    truth_from_clips,
)

__all__ = [
    "evaluate",
    "evaluate_directory",
    "infer_evaluation_year",
    "is_single_domain",
    "jackknife_ci95",
]

logger = logging.getLogger(__name__)

_DCASE_PREFIX = re.compile(r"_DCASE(20\d{2})T2")
_PATH_YEAR = re.compile(r"dcase[_-]?(20\d{2})", re.IGNORECASE)
_STYLE_2020 = re.compile(r"anomaly_score_[^_]+_id_\d{2}\.csv")
_STYLE_2021 = re.compile(
    r"(anomaly_score|decision_result)_[^_]+_section_\d{2}_(source|target)_test\.csv"
)


def _aligned(
    st: SectionTruth, values: Mapping[str, float], what: str, decisions: bool = False
) -> np.ndarray:
    """Values of one section in truth order (N,), names joined strictly (aliases applied)."""
    where = f"{what} for {st.machine} section {st.section}"
    rows: list[tuple[int | None, str, float]] = []
    for name, value in values.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise SubmissionError(
                f"{where}: value of {name!r} is not a number: {value!r}"
            ) from None
        if not math.isfinite(v):
            raise SubmissionError(f"{where}: value of {name!r} is not finite ({v!r})")
        if decisions and v not in (0.0, 1.0):
            raise SubmissionError(f"{where}: decision of {name!r} must be 0 or 1, got {value!r}")
        rows.append((None, name, v))
    mapped = align_values(st, rows, where)
    return np.asarray([mapped[n] for n in st.names], dtype=np.float64)


def _check_keys(values: Mapping[tuple[str, str], object], truth: Truth, what: str) -> None:
    missing = sorted(set(truth) - set(values))
    extra = sorted(set(values) - set(truth))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing for {', '.join(f'{m} section {s}' for m, s in missing)}")
        if extra:
            parts.append(
                f"given for sections not in the truth: {', '.join(f'{m} section {s}' for m, s in extra)}"
            )
        raise SubmissionError(f"{what}: " + "; ".join(parts))


def _counts(st: SectionTruth) -> dict[str, int | None]:
    c = st.counts()
    return {
        "n_normal": c["normal"],
        "n_anomaly": c["anomaly"],
        "n_source_normal": c.get("source_normal"),
        "n_source_anomaly": c.get("source_anomaly"),
        "n_target_normal": c.get("target_normal"),
        "n_target_anomaly": c.get("target_anomaly"),
    }


def is_single_domain(st: SectionTruth, year: int) -> bool:
    """Whether a section is evaluated as single-domain (2021+; never for 2020).

    True when its test clips hold no target-domain clip at all (neither normal nor anomalous),
    or carry no domain: data of one operating condition, such as ``stetho data import`` makes.
    AUC, pAUC and the decision metrics are then taken over all its clips (not in the DCASE
    protocol, which needs both domains). A section with target clips but, say, no target
    normals is a partial DCASE section instead.
    """
    if year == 2020:
        return False
    return st.domains is None or not bool(np.any(st.domains == 1))


def _one_class_reason(y: np.ndarray, normals: str, anomalies: str) -> str | None:
    """Why an AUC on labels ``y`` (n,) is undefined (``"no <normals>"`` …), or None if it is not."""
    n_pos = int(np.sum(y == 1))
    n_neg = int(y.size) - n_pos
    missing = [what for what, n in ((normals, n_neg), (anomalies, n_pos)) if n == 0]
    return "no " + " and no ".join(missing) if missing else None


def _section_result(
    st: SectionTruth,
    s: np.ndarray,
    dec: np.ndarray | None,
    year: int,
    undefined: list[str] | None = None,
) -> SectionResult:
    """Metrics of one section for ``year`` (protocol §2.3 / §2.6).

    With ``undefined`` (a list, partial mode) a metric whose subset has one class becomes None
    and a note ``"<machine> <section>: <metric> undefined: <reason>"`` is appended to it;
    without (strict), such a metric raises :class:`MetricError`.
    """
    where = f"{st.machine} section {st.section}"
    y = st.labels

    def metric(
        name: str,
        mask: np.ndarray | None,
        normals: str = "normals",
        anomalies: str = "anomalies",
        max_fpr: float | None = None,
    ) -> float | None:
        yy, ss = (y, s) if mask is None else (y[mask], s[mask])  # (n,), (n,)
        if undefined is not None:
            reason = _one_class_reason(yy, normals, anomalies)
            if reason is not None:
                undefined.append(f"{st.machine} {st.section}: {name} undefined: {reason}")
                return None
        what = f"{where}: {name}"
        if max_fpr is None:
            return auc_score(yy, ss, what=what)
        return pauc_score(yy, ss, max_fpr, what=what)

    single = is_single_domain(st, year)
    res = SectionResult(
        machine=st.machine,
        section=st.section,
        auc=metric("AUC (all)", None),
        single_domain=single,
        **_counts(st),  # type: ignore[arg-type]
    )
    if year == 2020 or single:
        res.pauc = metric("pAUC", None, max_fpr=MAX_FPR)
        if single and dec is not None:  # decisions over all the section's clips
            res.precision, res.recall, res.f1 = precision_recall_f1(
                y, dec.astype(np.int64), what=f"{where} (all clips)"
            )
        return res
    dom = st.domains
    assert dom is not None  # is_single_domain is True without domains
    if year >= 2022:
        res.pauc = metric("pAUC", None, max_fpr=MAX_FPR)
    for d, name in enumerate(DOMAINS):
        in_domain = dom == d
        if year == 2021:  # domain normals vs domain anomalies
            normals, anomalies = f"{name} normals", f"{name} anomalies"
            auc = metric(f"AUC ({name})", in_domain, normals, anomalies)
            setattr(
                res,
                f"pauc_{name}",
                metric(f"pAUC ({name})", in_domain, normals, anomalies, max_fpr=MAX_FPR),
            )
        else:  # domain normals vs ALL anomalies
            mask = in_domain | (y != 0)
            auc = metric(f"AUC ({name})", mask, f"{name} normals")
        setattr(res, f"auc_{name}", auc)
        if dec is not None:
            p, r, f1 = precision_recall_f1(
                y[in_domain], dec[in_domain].astype(np.int64), what=f"{where} ({name})"
            )
            setattr(res, f"precision_{name}", p)
            setattr(res, f"recall_{name}", r)
            setattr(res, f"f1_{name}", f1)
    return res


def _single_domain_notes(sections: list[SectionResult], truth: Truth) -> list[str]:
    """How single-domain sections were scored (none when every section has both domains)."""
    single = [r for r in sections if r.single_domain]
    if not single:
        return []
    what = (
        "AUC and pAUC (McClish, p = 0.1) over all test clips of each section, precision/recall/F1 "
        "of the decisions over all its clips; Ω = ε-clipped harmonic mean of the AUC and pAUC "
        "values"
    )
    no_domain = [r for r in single if truth[(r.machine, r.section)].domains is None]
    hint = (
        " (names without a domain: 2020-style names? pass year=2020 for the 2020 rules)"
        if no_domain
        else ""
    )
    if len(single) == len(sections):
        return [f"single-domain data{hint}: {what} (not a DCASE score)"]
    listed = ", ".join(f"{r.machine} {r.section}" for r in single)
    return [
        f"single-domain section(s) {listed}, without target-domain test clips{hint}: {what}; the "
        "other sections follow the DCASE rules, so Ω is not comparable to official scores"
    ]


def jackknife_ci95(y: np.ndarray, s: np.ndarray) -> float:
    """The evaluator's ``official score ci95`` on pooled clips (protocol §2.4).

    Mean of the leave-one-out jackknife 95 % half-widths of AUC and pAUC:
    t₀.₉₇₅(N−1)·sqrt(Σ(θᵢ − θ̄)² / (N(N−1))). Not a CI of Ω; kept for byte compatibility.
    """
    from scipy.stats import t as student_t  # scipy is a core dependency; imported lazily

    n = y.shape[0]
    half_widths = []
    for max_fpr in (None, MAX_FPR):
        thetas = leave_one_out(y, s, max_fpr, what="official score ci95")  # (N,)
        sigma = np.sqrt(np.sum((thetas - np.mean(thetas)) ** 2) / (n * (n - 1)))
        half_widths.append(abs(float(student_t.ppf(0.025, n - 1))) * float(sigma))
    return float(np.mean(half_widths))


def evaluate(
    scores: Scores,
    truth: Truth,
    decisions: Decisions | None = None,
    *,
    year: int = 2023,
    system: str = "system",
    ci95: bool = True,
    allow_undefined: bool = False,
) -> EvaluationResult:
    """Evaluate anomaly scores (and optional decisions) against the truth.

    Per (machine, section): 2022–2025 AUC (all), AUC_source / AUC_target (domain normals vs
    ALL anomalies), pAUC on the whole section, P/R/F1 per domain; 2021 AUC and pAUC per domain on
    the domain's clips; 2020 AUC and pAUC per machine id. Aggregates: see
    :mod:`stetho.evaluation.results`.

    Single-domain sections (2021+; no target-domain clip at all, or no domain in the names,
    see :func:`is_single_domain`): AUC and pAUC over all the section's clips, precision/recall/F1
    over all of them, Ω over their AUC and pAUC values; ``SectionResult.single_domain`` is set
    and a note says so. Sections with both domains follow the official rules unchanged.

    Args:
        scores: ``{(machine, section): {clip name: score}}``; names may be aliases.
        truth: ``{(machine, section): SectionTruth}``; defines the sections evaluated.
        decisions: Optional ``{(machine, section): {clip name: 0/1}}`` (ignored for 2020).
        year: Challenge year (2020–2025; 2026 uses the 2022–2025 rules).
        system: System name used in result file names.
        ci95: Compute the evaluator's jackknife ``official score ci95`` (2022+; O(N²)); left
            None (with a warning, and a note in partial mode) when the pooled clips have fewer
            than 2 clips of a class.
        allow_undefined: Partial mode for small or unbalanced (dev) sets. Default False is
            strict, like the official tool: a one-class subset raises. True: such a metric
            becomes None, is listed in ``notes``, and Ω / a-mean / per-metric means are taken
            over the defined values only; the result has ``partial=True`` when anything was
            undefined and is then NOT comparable to official scores. Fully defined input gives
            the same result as strict mode.

    Returns:
        The :class:`EvaluationResult`.

    Raises:
        SubmissionError: Sections or clip names do not match the truth, non-finite scores,
            decisions other than 0/1.
        MetricError: A subset has one class only (strict mode; the message names section and
            metric), or, with ``allow_undefined``, no Ω value at all is defined.
        GroundTruthError: The truth is empty.
    """
    year = check_year(year)
    if not truth:
        raise GroundTruthError("the truth is empty: nothing to evaluate")
    notes: list[str] = []
    if year == 2026:
        notes.append("2026 evaluator not public: 2022–2025 rules applied")
    if year == 2020 and decisions is not None:
        logger.warning("2020 evaluation has no decision metrics; decisions ignored")
        decisions = None
    _check_keys(scores, truth, "scores")
    if decisions is not None:
        _check_keys(decisions, truth, "decisions")

    sections: list[SectionResult] = []
    pooled_y: list[np.ndarray] = []
    pooled_s: list[np.ndarray] = []
    undefined: list[str] | None = [] if allow_undefined else None
    for key in sorted(truth):
        st = truth[key]
        s = _aligned(st, scores[key], "scores")
        dec = (
            None if decisions is None else _aligned(st, decisions[key], "decisions", decisions=True)
        )
        sections.append(_section_result(st, s, dec, year, undefined))
        pooled_y.append(st.labels)
        pooled_s.append(s)

    partial = bool(undefined)
    notes.extend(_single_domain_notes(sections, truth))
    values = omega_values(year, sections, allow_undefined=partial)
    if not values:
        raise MetricError(
            f"no metric is defined: every AUC/pAUC subset of the {len(sections)} section(s) has "
            "one class only, so there is no score even with allow_undefined=True; evaluate on "
            "test clips with both normal and anomalous sounds"
        )
    if undefined:
        notes.extend(undefined)
    a_mean = arithmetic_mean(values)
    omega = a_mean if year == 2020 else official_score(values)
    ci = None
    if ci95 and year >= 2022:
        try:
            ci = jackknife_ci95(np.concatenate(pooled_y), np.concatenate(pooled_s))
        except MetricError as err:  # fewer than two clips of a class pooled
            logger.warning("official score ci95 not computed: %s", err)
            if allow_undefined:
                notes.append(f"official score ci95 undefined: {err}")
    name = Path(system).name or "system"
    result = EvaluationResult(
        year=year,
        sections=sections,
        official_score=omega,
        arithmetic_mean=a_mean,
        system=name,
        ci95=ci,
        notes=notes,
        partial=partial,
    )
    if partial:
        logger.warning(
            "%s: one-class subsets left out, Ω and the means are over the defined values only "
            "(see the result notes)",
            result.partial_summary,
        )
    return result


def infer_evaluation_year(
    scores_dir: str | os.PathLike[str], truth_source: str | os.PathLike[str] | None = None
) -> tuple[int, str]:
    """Guess the challenge year: (year, how it was found).

    Order: a baseline-style ``DCASE<YYYY>T2`` prefix in the score file names; a path component
    like ``dcase2023t2`` in the truth source or the scores folder; 2020 (``…_id_XX.csv``) or 2021
    (``…_source_test.csv``) file-name forms; default 2023.
    """
    sdir = Path(scores_dir)
    names = sorted(p.name for p in sdir.iterdir() if p.is_file()) if sdir.is_dir() else []
    years = sorted({int(m[1]) for n in names if (m := _DCASE_PREFIX.search(n))})
    if len(years) == 1:
        return years[0], f"file-name prefix DCASE{years[0]}T2"
    if len(years) > 1:
        logger.warning("score files carry several year prefixes %s; ignoring them", years)
    for path in (truth_source, scores_dir):
        if path is None:
            continue
        for part in reversed(Path(path).absolute().parts):
            if m := _PATH_YEAR.search(part):
                return int(m[1]), f"path component {part!r}"
    if any(_STYLE_2020.fullmatch(n) for n in names):
        return 2020, "2020-style file names (anomaly_score_<m>_id_<XX>.csv)"
    if any(_STYLE_2021.fullmatch(n) for n in names):
        return 2021, "2021-style per-domain file names"
    return 2023, "default"


def _dev_truth(root: Path, year: int) -> Truth:
    from stetho.data import scan_dataset  # data layer; never model code

    table = scan_dataset(root, year=year)
    for problem in table.problems[:10]:
        logger.warning("dataset scan: %s", problem)
    if len(table.problems) > 10:
        logger.warning("dataset scan: %d more problems", len(table.problems) - 10)
    clips = [c for c in table if c.split == "test" and c.label is not None]
    if not clips:
        raise GroundTruthError(
            f"{root}: no labelled test clips found; pass a dev dataset root (…/dev_data/raw/<machine>/test) "
            "or an official ground-truth folder (with ground_truth_data/)"
        )
    return truth_from_clips(clips)


def evaluate_directory(
    scores_dir: str | os.PathLike[str],
    truth_source: str | os.PathLike[str],
    *,
    year: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    allow_undefined: bool = False,
) -> EvaluationResult:
    """Evaluate a submission folder and write the result files (the CLI's ``evaluate``).

    Args:
        scores_dir: Folder with ``anomaly_score_…`` (+ ``decision_result_…``) files.
        truth_source: A dev dataset root (truth from the labelled test-clip names found by
            :func:`stetho.data.scan_dataset`) or an official ground-truth folder (detected by its
            ``ground_truth_data/``; or an ``eval_data_list*.csv`` file / folder).
        year: Challenge year; None infers it (:func:`infer_evaluation_year`).
        out_dir: Where to write results (default ``<scores_dir>/evaluation``).
        allow_undefined: Partial mode for small or unbalanced dev sets: one-class metrics
            become None instead of raising (see :func:`evaluate`). Default: strict.

    Returns:
        The :class:`EvaluationResult` (also written to ``out_dir``).
    """
    sdir = Path(scores_dir)
    if not sdir.is_dir():
        raise FileNotFoundError(f"scores folder does not exist: {sdir}")
    src = Path(truth_source)
    if not src.exists():
        raise FileNotFoundError(f"truth source does not exist: {src}")
    if year is None:
        year, how = infer_evaluation_year(sdir, src)
        logger.info("evaluating as DCASE %d (%s)", year, how)
    year = check_year(year)
    if is_ground_truth_dir(src):
        truth = load_ground_truth(src, year)
    else:
        truth = _dev_truth(src, year)
    scores, decisions = read_submission(sdir, truth, year=year)
    result = evaluate(
        scores,
        truth,
        decisions,
        year=year,
        system=sdir.resolve().name,
        allow_undefined=allow_undefined,
    )
    paths = result.write(Path(out_dir) if out_dir is not None else sdir / "evaluation")
    logger.info("results written: %s", ", ".join(str(p) for p in paths))
    return result
