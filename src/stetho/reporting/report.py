"""``stetho report``: one self-contained HTML evaluation report (plus its PNGs) for a run.

::

    result = build_report("runs/demo", "runs/demo/report")          # truth = the demo's data/
    result = build_report("runs/x", "report/", truth="data/dcase2023t2")
    result.html                                                       # report/report.html

Sections (every one is present; one that lacks its input says which input to pass):
``summary`` (in plain words first: what the detector learned from, how many of its own normal
recordings it flags, how many known faulty test clips it catches), ``official-table``, ``paper-table``, ``per-section`` (ROC with the pAUC region,
score histograms with the detector's own threshold, confusion counts), ``embeddings`` (PCA, and
t-SNE when scikit-learn is installed; kinds with one feature vector per clip), ``explanations`` (the highest-scoring clips), ``training`` (loss, lr,
validation Ω), ``robustness`` (Ω per SNR); a sweep folder gets ``summary``, ``sweep`` and
``training`` (one set of curves per config).

All metrics come from :mod:`stetho.evaluation` (the official ones); nothing is re-implemented here.
Every detector kind is read through the detector contract (:class:`~stetho.detector.BaseDetector`):
thresholds are the detector's own (``detector.thresholds``, never re-derived when the detector is
there) and decisions come from ``detector.decide``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stetho.data import Clip, ClipTable, scan_dataset
from stetho.detector import BaseDetector
from stetho.evaluation import (
    EvaluationResult,
    MetricError,
    Truth,
    evaluate,
    infer_evaluation_year,
    is_ground_truth_dir,
    load_ground_truth,
    read_submission,
    truth_from_clips,
)
from stetho.reporting import figures
from stetho.reporting.embedmap import MapUnavailable, embedding_maps
from stetho.reporting.explain import explain_file
from stetho.reporting.html import HtmlPage, md_table_to_html, table_html
from stetho.reporting.plain import plain_summary
from stetho.reporting.robustness import RobustnessCurve
from stetho.reporting.sources import ReportInputs, locate, read_csv_rows

__all__ = ["ReportResult", "build_report"]

logger = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        html: The report page.
        figures: The PNG files (also embedded in the page).
        sections: Section ids in page order.
        evaluation: The evaluation the tables show (None when there was nothing to evaluate).
        notes: Why parts are missing.
    """

    html: Path
    figures: list[Path]
    sections: list[str]
    evaluation: EvaluationResult | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _SectionData:
    key: Key
    names: list[str]
    labels: np.ndarray  # (N,) 0/1
    domains: np.ndarray | None  # (N,) 0/1
    scores: np.ndarray  # (N,)
    decisions: np.ndarray | None  # (N,) 0/1
    threshold: float | None
    decided_by: str = "decision files"  # or "the detector" (decisions not in the files)


@dataclass
class _Context:
    inputs: ReportInputs
    page: HtmlPage
    evaluation: EvaluationResult | None = None
    sections: list[_SectionData] = field(default_factory=list)
    detector: BaseDetector | None = None
    clips: dict[tuple[Key, str], Clip] = field(default_factory=dict)  # (key, name) → clip
    train: dict[Key, list[Clip]] = field(default_factory=dict)  # normal training clips per key
    notes: list[str] = field(default_factory=list)
    tables: dict[tuple[Path, int | None], ClipTable] = field(default_factory=dict)

    def scan(self, root: Path, year: int | None = None) -> ClipTable:
        """``scan_dataset`` once per root."""
        key = (root.resolve(), year)
        if key not in self.tables:
            self.tables[key] = scan_dataset(root, year=year)
        return self.tables[key]

    def missing(self, sid: str, heading: str, why: str) -> None:
        self.notes.append(f"{heading}: {why}")
        self.page.add(sid, heading, f'<p class="note">Not available: {why}</p>')


# -- evaluation --------------------------------------------------------------------------------
def _dev_truth(ctx: _Context, root: Path, year: int) -> Truth:
    table = ctx.scan(root, year)
    clips = [c for c in table if c.split == "test" and c.label is not None]
    if not clips:
        raise ValueError(f"{root}: no labelled test clips (pass a dev dataset root or --truth)")
    return truth_from_clips(clips)


def _evaluate(ctx: _Context, year: int | None) -> None:
    inp = ctx.inputs
    if inp.scores_dir is None or inp.truth is None:
        if inp.results_json is not None:
            data = json.loads(inp.results_json.read_text(encoding="utf-8"))
            ctx.evaluation = EvaluationResult.from_dict(data)
            ctx.notes.append(f"tables from {inp.results_json}; pass --truth for per-clip figures")
        return
    if year is None:
        year, how = infer_evaluation_year(inp.scores_dir, inp.truth)
        logger.info("report: DCASE %d rules (%s)", year, how)
    full = (
        load_ground_truth(inp.truth, year)
        if is_ground_truth_dir(inp.truth)
        else _dev_truth(ctx, inp.truth, year)
    )
    present, _ = read_submission(inp.scores_dir, None, year=year)
    truth = {k: v for k, v in full.items() if k in present}
    if not truth:
        raise ValueError(
            f"none of the scored sections {sorted(present)} is in the truth {inp.truth}"
        )
    scores, decisions = read_submission(inp.scores_dir, truth, year=year)
    system = inp.source.resolve().name
    try:
        ctx.evaluation = evaluate(scores, truth, decisions, year=year, system=system)
    except MetricError:
        ctx.evaluation = evaluate(
            scores, truth, decisions, year=year, system=system, allow_undefined=True
        )
    for key in sorted(truth):
        st = truth[key]
        s = np.array([scores[key][n] for n in st.names], dtype=np.float64)
        dec = (
            np.array([decisions[key][n] for n in st.names], dtype=np.int64)
            if decisions is not None
            else None
        )
        ctx.sections.append(_SectionData(key, st.names, st.labels, st.domains, s, dec, None))


def _threshold_from_decisions(sd: _SectionData) -> float | None:
    """The largest score decided normal when the decisions are a threshold rule, else None."""
    if sd.decisions is None or not (sd.decisions == 0).any():
        return None
    t = float(sd.scores[sd.decisions == 0].max())
    return t if (sd.scores[sd.decisions == 1] > t).all() else None


def _load_detector(ctx: _Context, device: str, checkpoint: str | None) -> None:
    d = ctx.inputs.detector_dir
    if d is None:
        return
    from stetho.detector import load_detector

    try:
        ctx.detector = load_detector(d, device=device, checkpoint=checkpoint)
    except Exception as err:  # a report without the detector parts beats no report
        ctx.notes.append(f"detector {d} not loaded: {err}")
        logger.warning("detector %s not loaded: %s", d, err)


# -- sections ----------------------------------------------------------------------------------
def _summary(ctx: _Context) -> None:
    ev = ctx.evaluation
    inp = ctx.inputs
    rows = [["input", "path"]] + [
        [name, str(p)]
        for name, p in (
            ("source", inp.source),
            ("scores", inp.scores_dir),
            ("truth", inp.truth),
            ("audio", inp.data_root),
            ("detector", inp.detector_dir),
        )
        if p is not None
    ]
    body = [plain_summary(ctx.detector, ctx.sections)]
    if ev is not None:
        label = ev.score_label  # official, partial, single-domain or mixed
        n_clips = sum(r.n_normal + r.n_anomaly for r in ev.sections)
        single = all(getattr(r, "single_domain", False) for r in ev.sections)
        rules = "one domain, no source/target split" if single else f"DCASE {ev.year} rules"
        body.append(
            f'<p class="omega">{label} Ω = {ev.official_score:.4f}</p><p>{ev.official_score_name}; '
            f"{rules}; {len(ev.machines())} machine type(s), {len(ev.sections)} "
            f"section(s), {n_clips} test clips.</p>"
        )
        if ev.partial:
            body.append(f'<p class="warn">{ev.partial_summary}</p>')
    body.append(table_html(rows))
    body += [f'<p class="note">{n}</p>' for n in ctx.notes]
    ctx.page.add("summary", "Summary", "\n".join(body))


def _tables(ctx: _Context) -> None:
    ev = ctx.evaluation
    if ev is None:
        why = "no scores with truth and no evaluation/results.json (pass --truth)"
        ctx.missing("official-table", "Official table", why)
        ctx.missing("paper-table", "Paper table", why)
        return
    official = md_table_to_html(ev.table())
    rows = [r for r in ev.official_result_rows() if r]
    official += (
        f"<details><summary>official result file layout ({ev.official_result_name()})</summary>"
        f"{table_html(rows, header=False)}</details>"
    )
    ctx.page.add("official-table", "Official table", official)
    paper = [[_num(c) for c in row] for row in ev.paper_table_rows()]
    ctx.page.add("paper-table", "Paper table", table_html(paper))


def _num(cell: str) -> str:
    """A float cell with 4 decimals (the CSV files keep full precision)."""
    try:
        return f"{float(cell):.4f}" if "." in cell or "e" in cell else cell
    except ValueError:
        return cell


def _confusion(sd: _SectionData) -> str:
    dec = sd.decisions
    if dec is None:
        return '<p class="note">no decisions and no detector: confusion counts unavailable</p>'
    rows: list[list[object]] = [["domain", "TN", "FP", "FN", "TP"]]
    two = sd.domains is not None and bool((sd.domains == 1).any())  # one domain: one row
    doms = [("source", 0), ("target", 1)] if two else [("all", -1)]
    for name, d in doms:
        m = np.ones_like(sd.labels, dtype=bool) if d < 0 else sd.domains == d
        y, p = sd.labels[m], dec[m]
        rows.append(
            [name, *(int(((y == a) & (p == b)).sum()) for a, b in ((0, 0), (0, 1), (1, 0), (1, 1)))]
        )
    return f"<h3>Confusion counts ({sd.decided_by})</h3>" + table_html(rows)


def _own_threshold(ctx: _Context, sd: _SectionData) -> tuple[float | None, str]:
    """The threshold drawn for ``sd`` and where it comes from: the detector's own when it has
    one for the key (its decisions fill in missing decision files), else the one the decision
    files imply."""
    det = ctx.detector
    if det is None or sd.key not in det.thresholds:
        thr = _threshold_from_decisions(sd)
        return thr, "implied by the decision files" if thr is not None else "unknown"
    own = det.decide(sd.scores, sd.key)
    if sd.decisions is None:
        sd.decisions, sd.decided_by = own, "the detector's decisions"
    elif (sd.decisions != own).any():
        m, s = sd.key
        ctx.notes.append(
            f"{m}/{s}: the decision files disagree with the detector's threshold on "
            f"{int((sd.decisions != own).sum())} of {own.size} clips (scored by another detector "
            "or version?); the figures show the detector's threshold, the counts the files'"
        )
    return float(det.thresholds[sd.key]), "the detector's own"


def _per_section(ctx: _Context) -> None:
    if not ctx.sections:
        ctx.missing("per-section", "Per machine and section", "needs scores and --truth")
        return
    parts = []
    for sd in ctx.sections:
        m, s = sd.key
        thr, origin = _own_threshold(ctx, sd)
        sd.threshold = thr
        title = f"{m} section {s}"
        roc = figures.plot_roc(sd.labels, sd.scores, sd.domains, f"ROC — {title}")
        hist = figures.plot_histograms(sd.labels, sd.scores, sd.domains, thr, f"scores — {title}")
        thr_txt = "unknown" if thr is None else f"{thr:.6g} ({origin})"
        if thr is not None and not np.isfinite(thr):
            thr_txt = "none: never anomalous (no threshold could be fitted, see the detector)"
        data = "" if thr is None else f' data-threshold="{thr!r}"'
        parts.append(
            f'<h3>{title}</h3><p class="threshold" data-key="{m}/{s}"{data}>'
            f"{len(sd.names)} test clips ({int(sd.labels.sum())} anomalous); decision threshold "
            f'{thr_txt}.</p><div class="figs">'
            f"{ctx.page.image(roc, f'roc_{m}_{s}.png', f'ROC {title}')}"
            f"{ctx.page.image(hist, f'hist_{m}_{s}.png', f'histogram {title}')}</div>"
            f"{_confusion(sd)}"
        )
    ctx.page.add("per-section", "Per machine and section", "\n".join(parts))


def _test_clips(ctx: _Context) -> dict[tuple[Key, str], Clip]:
    if not ctx.clips and ctx.inputs.data_root is not None:
        table = ctx.scan(ctx.inputs.data_root, ctx.evaluation.year if ctx.evaluation else None)
        keys = {sd.key for sd in ctx.sections}
        ctx.clips = {(c.key, c.name): c for c in table if c.split == "test" and c.key in keys}
        for c in table:
            if c.split == "train" and c.label != "anomaly" and c.key in keys:
                ctx.train.setdefault(c.key, []).append(c)
    return ctx.clips


def _needs(ctx: _Context) -> str | None:
    """What the per-clip sections (map, explanations) miss, in words; None when nothing."""
    missing = []
    if ctx.detector is None:
        missing.append("the detector (--detector DIR)")
    if not ctx.sections:
        missing.append("the test clips' labels (--truth ROOT)")
    if ctx.inputs.data_root is None:
        missing.append("their audio (--data ROOT)")
    return "needs " + " and ".join(missing) if missing else None


def _bar(items: list[_SectionData], desc: str, progress: bool) -> Any:
    if not progress:
        return items
    from stetho.utils.progress import progress_bar

    return progress_bar(items, desc=desc)


def _embeddings(ctx: _Context, progress: bool) -> None:
    why = _needs(ctx)
    if why is not None or ctx.detector is None:
        ctx.missing("embeddings", "Embedding map", why or "needs the detector")
        return
    clips = _test_clips(ctx)
    parts = []
    for sd in _bar(ctx.sections, "embedding maps", progress):
        group = [clips[(sd.key, n)] for n in sd.names if (sd.key, n) in clips]
        if not group or sd.key not in ctx.detector.keys:
            continue
        try:
            maps = embedding_maps(ctx.detector, sd.key, group, ctx.train.get(sd.key, []))
        except MapUnavailable as err:
            ctx.missing("embeddings", "Embedding map", str(err))
            return
        for method, png in maps:
            m, s = sd.key
            parts.append(ctx.page.image(png, f"map_{method}_{m}_{s}.png", f"{method} {m} {s}"))
    if not parts:
        ctx.missing("embeddings", "Embedding map", "no test clip audio found under --data")
        return
    body = (
        f'<p class="note">Test clips (dots) and the normal training clips (grey: × source, ◆ '
        f"target) in the {ctx.detector.kind} detector's own features, each column standardised "
        "over the clips drawn (not in the paper): the map shows how clips group, its distances "
        "are not the detector's scores. t-SNE only when scikit-learn is installed.</p>"
        f'<div class="figs">{"".join(parts)}</div>'
    )
    ctx.page.add("embeddings", "Embedding map", body)


def _explanations(ctx: _Context, top: int, progress: bool) -> None:
    why = _needs(ctx) if top >= 1 else "not asked for (--explain-top 0)"
    if why is not None or ctx.detector is None:
        ctx.missing("explanations", "Explanations", why or "needs the detector")
        return
    clips = _test_clips(ctx)
    parts = []
    for sd in _bar(ctx.sections, "explanations", progress):
        if sd.key not in ctx.detector.keys:
            continue
        for i in np.argsort(-sd.scores, kind="stable")[:top]:
            clip = clips.get((sd.key, sd.names[int(i)]))
            if clip is None:
                continue
            ex = explain_file(ctx.detector, clip.path, *sd.key)
            png = figures.plot_explanation(ex)
            label = "anomaly" if sd.labels[int(i)] else "normal"
            parts.append(
                f"<h3>{ex.name} (truth: {label})</h3><p>{ex.summary()}</p>"
                + ctx.page.image(png, f"explain_{Path(ex.name).stem}.png", ex.name)
            )
    if not parts:
        ctx.missing("explanations", "Explanations", "no test clip audio found under --data")
        return
    ctx.page.add("explanations", "Explanations of the highest-scoring clips", "\n".join(parts))


def _training(ctx: _Context) -> None:
    path = ctx.inputs.metrics_csv
    if path is None:
        ctx.missing(
            "training",
            "Training curves",
            "no train/metrics.csv (pass a run folder; few-shot and autoencoder-baseline runs "
            "have no training curves)",
        )
        return
    png = figures.plot_training_curves(read_csv_rows(path), f"training — {path.parent.parent.name}")
    ctx.page.add("training", "Training curves", ctx.page.image(png, "training.png", "training"))


def _robustness(ctx: _Context) -> None:
    path = ctx.inputs.robustness_json
    if path is None or not path.is_file():
        ctx.missing(
            "robustness",
            "Robustness to noise",
            "run `stetho evaluate --noise FOLDER --snr 20 10 0 --detector D --data ROOT` first",
        )
        return
    curve = RobustnessCurve.from_dict(json.loads(path.read_text(encoding="utf-8")))
    png = figures.plot_robustness(curve.rows, f"Ω under background noise ({curve.n_clips} clips)")
    body = (
        ctx.page.image(png, "robustness.png", "robustness")
        + md_table_to_html(curve.table())
        + f'<p class="note">Noise: {len(curve.noise_files)} recording(s), seed {curve.seed}; '
        "SNR = 20·log10(RMS(clip)/RMS(noise)) over the whole clip.</p>"
    )
    ctx.page.add("robustness", "Robustness to noise", body)


def _sweep(ctx: _Context) -> None:
    inp = ctx.inputs
    assert inp.sweep_csv is not None
    rows = read_csv_rows(inp.sweep_csv)
    png = figures.plot_sweep(rows, f"sweep — {inp.source.name}")
    cols = ["name", "backbone", "strategy", "official_score", "arithmetic_mean", "seconds"]

    table = table_html([cols] + [[_num(str(r.get(c, ""))) for c in cols] for r in rows])
    ctx.page.add("sweep", "Sweep comparison", ctx.page.image(png, "sweep.png", "sweep") + table)
    parts = []
    for r in rows:
        metrics = inp.source / str(r["name"]) / "train" / "metrics.csv"
        if metrics.is_file():
            fig = figures.plot_training_curves(read_csv_rows(metrics), f"training — {r['name']}")
            parts.append(ctx.page.image(fig, f"training_{r['name']}.png", str(r["name"])))
    if parts:
        ctx.page.add("training", "Training curves", "\n".join(parts))
    else:
        ctx.missing("training", "Training curves", "no <config>/train/metrics.csv in the sweep")


def build_report(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    truth: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    detector: str | os.PathLike[str] | None = None,
    robustness: str | os.PathLike[str] | None = None,
    year: int | None = None,
    explain_top: int = 1,
    device: str = "cpu",
    checkpoint: str | None = None,
    progress: bool = True,
) -> ReportResult:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/figures/*.png``.

    Args:
        source: Run, demo, sweep or submission folder (see :mod:`stetho.reporting.sources`).
        out_dir: Output folder.
        truth: Dataset root or official ground-truth folder (default: a demo's ``data/``).
        data: Dataset root with the test audio (default: ``truth`` when it is one).
        detector: Detector folder (default: ``<run>/detector``).
        robustness: ``robustness.json`` (default: ``<run>/robustness/``).
        year: DCASE rules (default: inferred like ``stetho evaluate``).
        explain_top: Highest-scoring clips explained per machine/section (0: none).
        device, checkpoint: For loading the detector.
        progress: Progress bars while embedding.

    Returns:
        A :class:`ReportResult`.
    """
    inputs = locate(source, truth=truth, data=data, detector=detector, robustness=robustness)
    title = f"stetho report — {Path(source).resolve().name}"
    ctx = _Context(inputs, HtmlPage(title, "anomalous sound detection, DCASE Task 2 metrics"))
    if inputs.kind == "sweep":
        _sweep(ctx)
    else:
        _evaluate(ctx, year)
        _load_detector(ctx, device, checkpoint)
        _tables(ctx)
        _per_section(ctx)
        _embeddings(ctx, progress)
        _explanations(ctx, explain_top, progress)
        _training(ctx)
        _robustness(ctx)
    body_sections = list(ctx.page.sections)
    ctx.page.sections = []
    _summary(ctx)
    ctx.page.sections += body_sections
    path = ctx.page.write(Path(out_dir))
    figs = [Path(out_dir) / "figures" / n for n in ctx.page.images]
    logger.info("report written to %s (%d figures)", path, len(figs))
    return ReportResult(path, figs, [s for s, _, _ in ctx.page.sections], ctx.evaluation, ctx.notes)
