"""The official DCASE Task 2 metrics, truth sources, submission files and result tables.

Typical use::

    from stetho.evaluation import evaluate_directory
    result = evaluate_directory("runs/mse/eval_scores", "dcase2023_task2_evaluator/")
    print(result.table())

or, from Python objects::

    truth = load_ground_truth(gt_dir, year=2023)        # or truth_from_clips(dev test clips)
    result = evaluate(scores, truth, decisions, year=2023)
    result.write("out/")

Numbers equal the official evaluators' (bit-identical AUC/pAUC/Ω for well-formed input), but
rows are joined by clip name and malformed submissions raise instead of being mis-aligned.
A subset with one class raises :class:`MetricError` like the official tool; on small dev sets
``evaluate(..., allow_undefined=True)`` instead returns a *partial* result (undefined metrics
None, aggregates over the defined values, ``result.partial`` set; not comparable to official
scores). Sections without any target-domain clip (one operating condition, as ``stetho data
import`` makes) are evaluated single-domain: AUC, pAUC and precision/recall/F1 over all their
clips, ``result.single_domain`` / ``SectionResult.single_domain`` set (not in the DCASE protocol).
"""

from stetho.evaluation.evaluator import (
    evaluate,
    evaluate_directory,
    infer_evaluation_year,
    jackknife_ci95,
)
from stetho.evaluation.metrics import (
    EPS,
    MAX_FPR,
    MetricError,
    arithmetic_mean,
    auc_score,
    harmonic_mean,
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
    SubmissionFile,
    find_submission_files,
    read_submission,
    submission_file_names,
    write_submission,
)
from stetho.evaluation.truth import (
    SUPPORTED_YEARS,
    GroundTruthError,
    SectionTruth,
    Truth,
    is_ground_truth_dir,
    load_ground_truth,
    truth_from_clips,
    truth_from_names,
)

__all__ = [
    "EPS",
    "MAX_FPR",
    "SUPPORTED_YEARS",
    "Decisions",
    "EvaluationResult",
    "GroundTruthError",
    "MetricError",
    "Scores",
    "SectionResult",
    "SectionTruth",
    "SubmissionError",
    "SubmissionFile",
    "Truth",
    "arithmetic_mean",
    "auc_score",
    "evaluate",
    "evaluate_directory",
    "find_submission_files",
    "harmonic_mean",
    "infer_evaluation_year",
    "is_ground_truth_dir",
    "jackknife_ci95",
    "leave_one_out",
    "load_ground_truth",
    "official_score",
    "omega_values",
    "pauc_score",
    "precision_recall_f1",
    "read_submission",
    "submission_file_names",
    "truth_from_clips",
    "truth_from_names",
    "write_submission",
]
