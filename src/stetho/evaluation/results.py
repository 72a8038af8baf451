# Over 500 lines: the result tables of every challenge year, written and read, in one place.
"""Evaluation results: per-section metrics, the official aggregates, tables and result files.

Aggregation follows the official evaluators exactly (protocol §2.4–§2.6), including their value
order (machines in Python ``sorted()`` order), so Ω and the means come out bit-identical:

* 2022–2025: Ω = ε-clipped harmonic mean of [AUC_source…, AUC_target…, pAUC…] over all
  (machine, section); a-mean = arithmetic mean of the same values.
* 2021: Ω₂₀₂₁ = ε-clipped harmonic mean of [AUC…, pAUC…] over all (machine, section, domain).
* 2020: no official single score; the arithmetic mean of all AUC and pAUC values is reported
  in its place (``official_score_name`` says so).

*Single-domain* sections (no target-domain test clip, e.g. what ``stetho data import`` makes; 2021+)
have AUC, pAUC and precision/recall/F1 over all their clips and no source/target values; they add
their AUC and pAUC to Ω (an all-single-domain result: Ω = ε-clipped harmonic mean of all AUC then
all pAUC values, labelled "single-domain score"). Results without such sections are unchanged.

A *partial* result (``evaluate(..., allow_undefined=True)`` on a small or unbalanced set) holds
None for every metric whose subset had one class; Ω, the means and the per-metric h-means are
then taken over the defined values only and are not comparable to official scores. Undefined
values are written as ``n/a`` (tables), empty cells (CSV) and ``null`` (JSON).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from stetho.evaluation.metrics import arithmetic_mean, harmonic_mean
from stetho.utils.io import atomic_write_text

__all__ = ["EvaluationResult", "SectionResult", "omega_values"]

_OFFICIAL_COLUMNS = (
    "AUC (all)",
    "AUC (source)",
    "AUC (target)",
    "pAUC",
    "precision (source)",
    "precision (target)",
    "recall (source)",
    "recall (target)",
    "F1 score (source)",
    "F1 score (target)",
)
_MEAN_HEADER = ["", "", "AUC", "pAUC", "precision", "recall", "F1 score"]
_OVER_ALL = "over all machine types, sections, and domains"


@dataclass
class SectionResult:
    """Metrics of one (machine, section); fields a year does not define are None.

    Attributes:
        machine, section: The section (2020: section = machine id).
        auc: AUC over all clips of the section (reported, not in Ω; the 2020 metric); None
            when undefined (one-class section, partial evaluation only).
        auc_source, auc_target: 2022+: domain normals vs **all** anomalies; 2021: on the
            domain's own clips.
        pauc: McClish pAUC (p = 0.1) over the whole section (2022+, 2020).
        pauc_source, pauc_target: 2021 only: pAUC on the domain's own clips.
        precision_*, recall_*, f1_*: From decisions on the domain's clips (None without).
        n_*: Clip counts.
        single_domain: The section has no target-domain clip (2021+): ``auc``, ``pauc``,
            ``precision``, ``recall`` and ``f1`` are over all its clips and the ``*_source`` /
            ``*_target`` fields stay None.
        precision, recall, f1: Single-domain sections only: from decisions on all clips.

    In a partial evaluation any AUC/pAUC field may be None because its subset had one class.
    """

    machine: str
    section: str
    auc: float | None
    auc_source: float | None = None
    auc_target: float | None = None
    pauc: float | None = None
    pauc_source: float | None = None
    pauc_target: float | None = None
    precision_source: float | None = None
    precision_target: float | None = None
    recall_source: float | None = None
    recall_target: float | None = None
    f1_source: float | None = None
    f1_target: float | None = None
    n_normal: int = 0
    n_anomaly: int = 0
    n_source_normal: int | None = None
    n_source_anomaly: int | None = None
    n_target_normal: int | None = None
    n_target_anomaly: int | None = None
    single_domain: bool = False
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None

    def get(self, metric: str, domain: str) -> float | None:
        """``metric`` ∈ {auc, pauc, precision, recall, f1} of ``domain`` ∈ {source, target, all}
        (``all``: the section-wide value of a single-domain section)."""
        name = metric if domain == "all" else f"{metric}_{domain}"
        return getattr(self, name)  # type: ignore[no-any-return]


#: SectionResult fields written only when a result has single-domain sections (so the files of
#: two-domain results stay exactly as before).
_SINGLE_FIELDS = ("single_domain", "precision", "recall", "f1")


def _req(v: float | None, what: str) -> float:
    if v is None:
        raise ValueError(f"{what} is missing")
    return v


def _defined(values: list[float | None], what: str, allow_undefined: bool) -> list[float]:
    """Strict: every value must be set (ValueError otherwise); else the non-None values."""
    if allow_undefined:
        return [v for v in values if v is not None]
    return [_req(v, what) for v in values]


def _metric_slots(
    year: int, sections: list[SectionResult], mixed: bool | None = None
) -> list[tuple[str, list[float | None]]]:
    """The per-metric value lists in the official order, None where undefined.

    Two-domain sections give the official rows; single-domain sections add ``AUC`` and ``pAUC``
    rows, suffixed `` (single-domain)`` when ``mixed`` (default: both kinds occur here).
    """
    secs = sorted(sections, key=lambda r: (r.machine, r.section))
    if year == 2020:
        return [("AUC", [r.auc for r in secs]), ("pAUC", [r.pauc for r in secs])]
    two = [r for r in secs if not r.single_domain]
    one = [r for r in secs if r.single_domain]
    slots: list[tuple[str, list[float | None]]] = []
    if two and year == 2021:
        slots = [
            ("AUC (source)", [r.auc_source for r in two]),
            ("AUC (target)", [r.auc_target for r in two]),
            ("pAUC (source)", [r.pauc_source for r in two]),
            ("pAUC (target)", [r.pauc_target for r in two]),
        ]
    elif two:
        slots = [
            ("AUC (source)", [r.auc_source for r in two]),
            ("AUC (target)", [r.auc_target for r in two]),
            ("pAUC (source, target)", [r.pauc for r in two]),
        ]
    if one:
        suffix = " (single-domain)" if (bool(two) if mixed is None else mixed) else ""
        slots += [(f"AUC{suffix}", [r.auc for r in one]), (f"pAUC{suffix}", [r.pauc for r in one])]
    return slots


def _metric_lists(
    year: int,
    sections: list[SectionResult],
    allow_undefined: bool = False,
    mixed: bool | None = None,
) -> list[tuple[str, list[float]]]:
    """The per-metric value lists in the official order (the rows of the paper table).

    Strict (default): a None raises ValueError; ``allow_undefined``: None values are dropped
    (a list may then be empty).
    """
    what = {"pAUC (source, target)": "pAUC"}
    return [
        (name, _defined(values, what.get(name, name), allow_undefined))
        for name, values in _metric_slots(year, sections, mixed)
    ]


def _rows_2021(sections: list[SectionResult]) -> list[tuple[SectionResult, str]]:
    """2021 evaluator row order: per machine, domain outer, section inner.

    A single-domain section has one row, domain ``"all"``, in the source pass.
    """
    out: list[tuple[SectionResult, str]] = []
    for machine in sorted({r.machine for r in sections}):
        secs = sorted((r for r in sections if r.machine == machine), key=lambda r: r.section)
        out.extend(
            (r, "all" if r.single_domain else d)
            for d in ("source", "target")
            for r in secs
            if not (r.single_domain and d == "target")
        )
    return out


def _omega_slots(year: int, sections: list[SectionResult]) -> list[tuple[str, float | None]]:
    """(metric name, value or None) for every value Ω is built from, in the official order."""
    if year == 2021:
        rows = _rows_2021(sections)
        return [("AUC", r.get("auc", d)) for r, d in rows] + [
            ("pAUC", r.get("pauc", d)) for r, d in rows
        ]
    if year == 2020:
        return [(name, v) for name, values in _metric_slots(year, sections) for v in values]
    # all AUC_source (a single-domain section: its AUC in its place), all AUC_target, all pAUC
    secs = sorted(sections, key=lambda r: (r.machine, r.section))
    return (
        [("AUC", r.auc) if r.single_domain else ("AUC (source)", r.auc_source) for r in secs]
        + [("AUC (target)", r.auc_target) for r in secs if not r.single_domain]
        + [("pAUC", r.pauc) for r in secs]
    )


def omega_values(
    year: int, sections: list[SectionResult], *, allow_undefined: bool = False
) -> list[float]:
    """The flat value list Ω is the harmonic mean of, in the official evaluator's order.

    2022–2025: all AUC_source, then all AUC_target, then all pAUC (machines ``sorted()``,
    sections sorted); 2021: all per-domain AUC then all per-domain pAUC (evaluator row order);
    2020: all AUC then all pAUC (used for the arithmetic mean only). A single-domain section
    gives its all-clip AUC in the AUC_source place (2021: in its source row), no target value,
    and its pAUC.

    Args:
        year: Challenge year.
        sections: Per-section results.
        allow_undefined: Drop None (undefined) values instead of raising (partial results).

    Raises:
        ValueError: A value is None and ``allow_undefined`` is False.
    """
    slots = _omega_slots(year, sections)
    if allow_undefined:
        return [v for _, v in slots if v is not None]
    return [_req(v, name) for name, v in slots]


def _fmt(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def _na(v: float | None) -> str:
    """A table cell: 4 decimals, ``n/a`` for an undefined value."""
    return "n/a" if v is None else f"{v:.4f}"


_SINGLE_METRICS = ("auc", "pauc", "precision", "recall", "f1")


def _machine_rows_2022(
    machine: str, secs: list[SectionResult], rows: list[list[str]]
) -> tuple[list[list[float | None]], list[list[float | None]]]:
    """Append one machine's block of the 2022+ result file; returns its (source, target) value
    lists (AUC, pAUC, precision, recall, F1) for the over-all means."""
    rows.append([machine])
    rows.append(["section", *_OFFICIAL_COLUMNS])
    for r in secs:
        vals = (
            r.auc,
            r.auc_source,
            r.auc_target,
            r.pauc,
            r.precision_source,
            r.precision_target,
            r.recall_source,
            r.recall_target,
            r.f1_source,
            r.f1_target,
        )
        rows.append([r.section, *(_fmt(v) for v in vals)])
    src: list[list[float | None]] = [
        [r.auc_source for r in secs],
        [r.pauc for r in secs],
        [r.precision_source for r in secs],
        [r.recall_source for r in secs],
        [r.f1_source for r in secs],
    ]
    tgt: list[list[float | None]] = [
        [r.auc_target for r in secs],
        [r.pauc for r in secs],
        [r.precision_target for r in secs],
        [r.recall_target for r in secs],
        [r.f1_target for r in secs],
    ]
    perf = [s + t for s, t in zip(src, tgt)]
    rows.append(list(_MEAN_HEADER))
    rows.append(["arithmetic mean", "", *(_fmt(_opt_mean(p)) for p in perf)])
    rows.append(["harmonic mean", "", *(_fmt(_opt_mean(p, True)) for p in perf)])
    rows.append(["source harmonic mean", "", *(_fmt(_opt_mean(p, True)) for p in src)])
    rows.append(["target harmonic mean", "", *(_fmt(_opt_mean(p, True)) for p in tgt)])
    rows.append([])
    return src, tgt


def _single_domain_rows(machine: str, secs: list[SectionResult]) -> list[list[str]]:
    """One machine's single-domain block: AUC, pAUC, precision, recall, F1 over all clips."""
    rows: list[list[str]] = [
        [machine],
        ["section", "domain", "AUC", "pAUC", "precision", "recall", "F1 score"],
    ]
    rows += [[r.section, "all", *(_fmt(r.get(k, "all")) for k in _SINGLE_METRICS)] for r in secs]
    cols = [[r.get(k, "all") for r in secs] for k in _SINGLE_METRICS]
    rows.append(["arithmetic mean", "", *(_fmt(_opt_mean(c)) for c in cols)])
    rows.append(["harmonic mean", "", *(_fmt(_opt_mean(c, True)) for c in cols)])
    rows.append([])
    return rows


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _opt_mean(values: list[float | None], harmonic: bool = False) -> float | None:
    """Mean of the defined (non-None) values; None when there is none.

    Strict results have all-or-nothing lists (e.g. no decisions), so this equals the plain mean
    there; partial results get the mean over the defined values.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return harmonic_mean(vals) if harmonic else arithmetic_mean(vals)


@dataclass
class EvaluationResult:
    """Result of :func:`stetho.evaluation.evaluate`.

    Attributes:
        year: Challenge year whose rules were applied.
        sections: One :class:`SectionResult` per (machine, section), sorted.
        official_score: Ω (2021: Ω₂₀₂₁; 2020: the arithmetic mean, see ``official_score_name``).
        arithmetic_mean: Arithmetic mean of the values Ω is computed from.
        system: System name (result file names; default ``"system"``).
        ci95: The evaluator's "official score ci95" (pooled jackknife, 2022+), or None.
        notes: Remarks on how the numbers were obtained (every undefined metric of a partial
            result is listed here).
        partial: True when some metric was undefined (one-class subset) and left out: Ω and
            the means are then over the defined values only and not comparable to official
            scores.
    """

    year: int
    sections: list[SectionResult]
    official_score: float
    arithmetic_mean: float
    system: str = "system"
    ci95: float | None = None
    notes: list[str] = field(default_factory=list)
    partial: bool = False

    # -- aggregates ---------------------------------------------------------------------------

    @property
    def n_single_domain(self) -> int:
        """How many sections were evaluated as single-domain (no target-domain clips)."""
        return sum(r.single_domain for r in self.sections)

    @property
    def single_domain(self) -> bool:
        """True when every section is single-domain: Ω is a single-domain score, no DCASE one."""
        return bool(self.sections) and self.n_single_domain == len(self.sections)

    @property
    def score_label(self) -> str:
        """``"Official score"``, ``"Partial score"``, ``"Single-domain score"`` or ``"Score"``
        (two-domain and single-domain sections mixed): how to present :attr:`official_score`."""
        if self.partial:
            return "Partial score"
        if self.single_domain:
            return "Single-domain score"
        return "Score" if self.n_single_domain else "Official score"

    @property
    def official_score_name(self) -> str:
        """What :attr:`official_score` is for this year."""
        if self.year == 2020:
            return "arithmetic mean of AUC and pAUC (2020 has no single official score)"
        if self.single_domain:
            return (
                "single-domain score Ω (harmonic mean of AUC and pAUC over all clips of each "
                "section; no target domain, not a DCASE score)"
            )
        if self.n_single_domain:
            return (
                "score Ω (harmonic mean of the DCASE values of the two-domain sections and the "
                "all-clip AUC and pAUC of the single-domain ones; not an official score)"
            )
        if self.year == 2021:
            return "official score Ω2021 (harmonic mean of per-domain AUC and pAUC)"
        return "official score Ω (harmonic mean of AUC source, AUC target, pAUC)"

    @property
    def n_values(self) -> int:
        """How many values Ω is defined over (M: defined and undefined together)."""
        return len(_omega_slots(self.year, self.sections))

    @property
    def n_undefined(self) -> int:
        """How many of the :attr:`n_values` values are undefined (None); 0 for strict results."""
        return sum(v is None for _, v in _omega_slots(self.year, self.sections))

    @property
    def partial_summary(self) -> str | None:
        """``"partial: N of M values undefined; …"`` for partial results, else None."""
        if not self.partial:
            return None
        return (
            f"partial: {self.n_undefined} of {self.n_values} values undefined; "
            "not comparable to official scores"
        )

    @property
    def has_decisions(self) -> bool:
        """True when precision/recall/F1 were computed."""
        return any(r.f1_source is not None or r.f1 is not None for r in self.sections)

    def machines(self) -> list[str]:
        """Machine types in Python ``sorted()`` order."""
        return sorted({r.machine for r in self.sections})

    def metric_means(self) -> dict[str, dict[str, float | None]]:
        """Per metric (paper-table row): ``{"h-mean": …, "a-mean": …}`` plus ``TOTAL score``.

        Partial results: over the defined values; None for a metric with none defined.
        """
        out: dict[str, dict[str, float | None]] = {}
        for name, values in _metric_lists(self.year, self.sections, self.partial):
            if name == "pAUC (source, target)":
                values = values + values  # the evaluator duplicates the pAUC list
            if not values:
                out[name] = {"h-mean": None, "a-mean": None}
                continue
            out[name] = {"h-mean": harmonic_mean(values), "a-mean": arithmetic_mean(values)}
        out["TOTAL score"] = {
            "h-mean": None if self.year == 2020 else self.official_score,
            "a-mean": self.arithmetic_mean,
        }
        return out

    def paper_table(self) -> list[dict[str, Any]]:
        """Rows of the evaluator's paper table: metric × (h-mean, a-mean, per machine a-mean)."""
        means = self.metric_means()
        machines = self.machines()
        mixed = 0 < self.n_single_domain < len(self.sections)
        per_machine = {
            m: dict(
                _metric_lists(
                    self.year, [r for r in self.sections if r.machine == m], self.partial, mixed
                )
            )
            for m in machines
        }
        rows: list[dict[str, Any]] = []
        for name, _values in _metric_slots(self.year, self.sections):
            row: dict[str, Any] = {"System": self.system, "metric": name, **means[name]}
            row.update(
                {
                    m: arithmetic_mean(per_machine[m][name]) if per_machine[m].get(name) else None
                    for m in machines
                }
            )
            rows.append(row)
        total: dict[str, Any] = {
            "System": self.system,
            "metric": "TOTAL score",
            **means["TOTAL score"],
        }
        total.update({m: None for m in machines})
        rows.append(total)
        return rows

    # -- presentation -------------------------------------------------------------------------

    def table(self) -> str:
        """Markdown table(s): one row per machine (mean over its sections), h-/a-mean rows and Ω.

        Two-domain sections get the DCASE columns; single-domain sections (no target clips) get
        ``AUC | pAUC | precision | recall | F1`` over all their clips, in a table of their own.
        """
        two = [r for r in self.sections if not r.single_domain]
        one = [r for r in self.sections if r.single_domain]
        title = "Single-domain evaluation" if self.single_domain else f"DCASE {self.year} Task 2"
        lines = [
            f"{title} — system `{self.system}` — {len(self.machines())} machine "
            f"type(s), {len(self.sections)} section(s)",
            "",
        ]
        if self.partial:
            lines += [f"**WARNING — {self.partial_summary}**", ""]
        if two and one:
            lines += [f"Sections with a source and a target domain (DCASE {self.year} rules):", ""]
        if two:
            lines += [*replace(self, sections=two)._two_domain_lines(), ""]
        if two and one:
            lines += ["Single-domain sections (no target-domain clips; all clips together):", ""]
        if one:
            lines += [*self._single_domain_lines(one), ""]
        lines.append(self._score_line())
        lines.extend(f"_Note: {note}_" for note in self.notes)
        return "\n".join(lines)

    def _two_domain_lines(self) -> list[str]:
        """The DCASE table rows of this result's sections (all two-domain, or year 2020)."""
        rows = self.paper_table()
        metric_rows = rows[:-1]
        cols = [r["metric"] for r in metric_rows]
        f1_cols: list[str] = []
        if self.has_decisions:
            f1_cols = ["F1 (source)", "F1 (target)"]
        lines = [
            "| machine | " + " | ".join(cols + f1_cols) + " |",
            "|---" * (1 + len(cols) + len(f1_cols)) + "|",
        ]
        for m in self.machines():
            vals = [_na(r[m]) for r in metric_rows]
            if f1_cols:
                secs = [r for r in self.sections if r.machine == m]
                vals += [
                    _na(_opt_mean([r.f1_source for r in secs])),
                    _na(_opt_mean([r.f1_target for r in secs])),
                ]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        for label in ("h-mean", "a-mean"):
            vals = [_na(r[label]) for r in metric_rows]
            if f1_cols:
                harmonic = label == "h-mean"
                vals += [
                    _na(_opt_mean([r.f1_source for r in self.sections], harmonic=harmonic)),
                    _na(_opt_mean([r.f1_target for r in self.sections], harmonic=harmonic)),
                ]
            lines.append(f"| **{label}** | " + " | ".join(vals) + " |")
        return lines

    def _single_domain_lines(self, sections: list[SectionResult]) -> list[str]:
        """``AUC | pAUC [| precision | recall | F1]`` of single-domain sections, all clips each."""
        metrics = ["auc", "pauc"]
        if any(r.f1 is not None for r in sections):
            metrics += ["precision", "recall", "f1"]
        heads = {"auc": "AUC", "pauc": "pAUC", "f1": "F1"}
        lines = [
            "| machine | " + " | ".join(heads.get(m, m) for m in metrics) + " |",
            "|---" * (1 + len(metrics)) + "|",
        ]
        for machine in sorted({r.machine for r in sections}):
            secs = [r for r in sections if r.machine == machine]
            vals = [_na(_opt_mean([getattr(r, m) for r in secs])) for m in metrics]
            lines.append(f"| {machine} | " + " | ".join(vals) + " |")
        for label in ("h-mean", "a-mean"):
            harmonic = label == "h-mean"
            vals = [
                _na(_opt_mean([getattr(r, m) for r in sections], harmonic=harmonic))
                for m in metrics
            ]
            lines.append(f"| **{label}** | " + " | ".join(vals) + " |")
        return lines

    def _score_line(self) -> str:
        """The closing line with Ω (or 2020's arithmetic mean)."""
        n = len(omega_values(self.year, self.sections, allow_undefined=self.partial))
        of_n = f"{n} defined (of {self.n_values})" if self.partial else f"{n}"
        if self.year == 2020:
            how_many = of_n if self.partial else f"all {n}"
            tag = " (partial)" if self.partial else ""
            return (
                f"2020 has no single official score: arithmetic mean of {how_many} AUC and pAUC "
                f"values = **{self.official_score:.6f}**{tag}"
            )
        omega = "Ω2021" if self.year == 2021 else "Ω"
        what = ""
        if self.single_domain:
            what = ": AUC and pAUC of each section over all its clips"
        elif self.n_single_domain:
            what = "; not an official score: the sections do not all have two domains"
        return (
            f"**{self.score_label} {omega} = {self.official_score:.6f}** (ε-clipped harmonic "
            f"mean of {of_n} values{what}); arithmetic mean = {self.arithmetic_mean:.6f}"
        )

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (full-precision floats, None for undefined values)."""
        return {
            "year": self.year,
            "system": self.system,
            "official_score": self.official_score,
            "official_score_name": self.official_score_name,
            "arithmetic_mean": self.arithmetic_mean,
            "ci95": self.ci95,
            "partial": self.partial,
            "undefined_values": self.n_undefined,
            "omega_values": omega_values(self.year, self.sections, allow_undefined=self.partial),
            "metric_means": self.metric_means(),
            "paper_table": self.paper_table(),
            "notes": list(self.notes),
            "sections": [self._section_dict(r) for r in self.sections],
        }

    def _section_dict(self, r: SectionResult) -> dict[str, Any]:
        """``asdict(r)``; the single-domain fields only when the result has such sections."""
        d = asdict(r)
        if not self.n_single_domain:
            for name in _SINGLE_FIELDS:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """Rebuild from :meth:`to_dict` output (e.g. a loaded ``results.json``; ``null`` values
        become None)."""
        return cls(
            year=int(data["year"]),
            sections=[SectionResult(**s) for s in data["sections"]],
            official_score=float(data["official_score"]),
            arithmetic_mean=float(data["arithmetic_mean"]),
            system=str(data.get("system", "system")),
            ci95=data.get("ci95"),
            notes=list(data.get("notes", [])),
            partial=bool(data.get("partial", False)),
        )

    # -- files --------------------------------------------------------------------------------

    def sections_rows(self) -> list[list[str]]:
        """``results.csv``: header + one row per section (floats with ``repr``)."""
        names = [
            f.name
            for f in fields(SectionResult)
            if self.n_single_domain or f.name not in _SINGLE_FIELDS
        ]
        rows = [names]
        for r in self.sections:
            row = []
            for n in names:
                v = getattr(r, n)
                row.append(_fmt(v) if isinstance(v, float) else ("" if v is None else str(v)))
            rows.append(row)
        return rows

    def paper_table_rows(self) -> list[list[str]]:
        """``paper_table.csv``: ``System,metric,h-mean,a-mean,<machines…>``."""
        machines = self.machines()
        header = ["System", "metric", "h-mean", "a-mean", *machines]
        out = [header]
        for row in self.paper_table():
            out.append([row["System"], row["metric"], *(_fmt(row[c]) for c in header[2:])])
        return out

    def official_result_rows(self) -> list[list[str]]:
        """The official evaluator's ``<system>_result.csv`` rows for this year (protocol §2.5)."""
        if self.year == 2020:
            return self._rows_2020()
        if self.year == 2021:
            return self._rows_2021()
        return self._rows_2022()

    def official_result_name(self) -> str:
        """File name of the official-layout result CSV."""
        if self.year == 2020:
            return f"result_{self.system}.csv"
        return f"{self.system}_result.csv"

    def _rows_2022(self) -> list[list[str]]:
        rows: list[list[str]] = []
        src_parts: list[list[list[float | None]]] = []
        tgt_parts: list[list[list[float | None]]] = []
        singles: list[SectionResult] = []
        for m in self.machines():
            secs = sorted((r for r in self.sections if r.machine == m), key=lambda r: r.section)
            two = [r for r in secs if not r.single_domain]
            if two:
                src, tgt = _machine_rows_2022(m, two, rows)
                src_parts.append(src)
                tgt_parts.append(tgt)
            one = [r for r in secs if r.single_domain]
            if one:
                rows += _single_domain_rows(m, one)
                singles += one
        if src_parts:
            all_src = [[v for part in src_parts for v in part[i]] for i in range(5)]
            all_tgt = [[v for part in tgt_parts for v in part[i]] for i in range(5)]
            all_perf = [s + t for s, t in zip(all_src, all_tgt)]
            rows.append(list(_MEAN_HEADER))
            rows += [
                [f"arithmetic mean {_OVER_ALL}", "", *(_fmt(_opt_mean(p)) for p in all_perf)],
                [f"harmonic mean {_OVER_ALL}", "", *(_fmt(_opt_mean(p, True)) for p in all_perf)],
                [
                    f"source harmonic mean {_OVER_ALL}",
                    "",
                    *(_fmt(_opt_mean(p, True)) for p in all_src),
                ],
                [
                    f"target harmonic mean {_OVER_ALL}",
                    "",
                    *(_fmt(_opt_mean(p, True)) for p in all_tgt),
                ],
                [],
            ]
        label = "official score"
        if singles:
            cols = [[r.get(k, "all") for r in singles] for k in _SINGLE_METRICS]
            over = "over all single-domain sections"
            rows.append(list(_MEAN_HEADER))
            rows.append([f"arithmetic mean {over}", "", *(_fmt(_opt_mean(c)) for c in cols)])
            rows.append([f"harmonic mean {over}", "", *(_fmt(_opt_mean(c, True)) for c in cols)])
            rows.append([])
            label = "single-domain score" if self.single_domain else label
        rows.append([label, "", _fmt(self.official_score)])
        rows.append([f"{label} ci95", "", _fmt(self.ci95)])
        rows.append([])
        if singles and not self.single_domain:  # marker row, like the partial one
            listed = " ".join(f"{r.machine}:{r.section}" for r in singles)
            rows.append(
                ["single-domain sections", "", f"{listed}; not comparable to official scores"]
            )
            rows.append([])
        return self._partial_rows(rows)

    def _partial_rows(self, rows: list[list[str]]) -> list[list[str]]:
        """Append the partial-result marker row (partial results only; layout unchanged else)."""
        if self.partial:
            rows.append(["partial", "", str(self.partial_summary)])
            rows.append([])
        return rows

    def _rows_2021(self) -> list[list[str]]:
        rows: list[list[str]] = []
        over_all: list[list[float | None]] = []
        for m in self.machines():
            mrows = [(r, d) for r, d in _rows_2021(self.sections) if r.machine == m]
            rows.append([m])
            rows.append(["section", "domain", "AUC", "pAUC", "precision", "recall", "F1 score"])
            perf: list[list[float | None]] = []
            for r, d in mrows:
                vals = [r.get(k, d) for k in ("auc", "pauc", "precision", "recall", "f1")]
                rows.append([r.section, d, *(_fmt(v) for v in vals)])
                perf.append(vals)
            cols = list(zip(*perf))
            rows.append(["arithmetic mean", "", *(_fmt(_opt_mean(list(c))) for c in cols)])
            rows.append(["harmonic mean", "", *(_fmt(_opt_mean(list(c), True)) for c in cols)])
            rows.append([])
            over_all.extend(perf)
        cols = list(zip(*over_all))
        rows.append(list(_MEAN_HEADER))
        rows.append([f"arithmetic mean {_OVER_ALL}", "", *(_fmt(_opt_mean(list(c))) for c in cols)])
        rows.append(
            [f"harmonic mean {_OVER_ALL}", "", *(_fmt(_opt_mean(list(c), True)) for c in cols)]
        )
        rows.append([])
        return self._partial_rows(rows)

    def _rows_2020(self) -> list[list[str]]:
        rows: list[list[str]] = []
        for m in self.machines():
            secs = sorted((r for r in self.sections if r.machine == m), key=lambda r: r.section)
            rows.append([m])
            rows.append(["id", "AUC", "pAUC"])
            for r in secs:
                rows.append([r.section, _fmt(r.auc), _fmt(r.pauc)])
            rows.append(
                [
                    "Average",
                    _fmt(_opt_mean([r.auc for r in secs])),
                    _fmt(_opt_mean([r.pauc for r in secs])),
                ]
            )
            rows.append([])
        return self._partial_rows(rows)

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``results.json``, ``results.csv``, ``paper_table.csv`` and the official-layout
        result CSV (``<system>_result.csv``; 2020: ``result_<system>.csv``), atomically.

        Returns:
            The paths written.
        """
        out = Path(out_dir)
        files = {
            "results.json": json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n",
            "results.csv": _csv_text(self.sections_rows()),
            "paper_table.csv": _csv_text(self.paper_table_rows()),
            self.official_result_name(): _csv_text(self.official_result_rows()),
        }
        paths = []
        for name, text in files.items():
            path = out / name
            atomic_write_text(path, text)
            paths.append(path)
        return paths
