# Over 500 lines: the submission file format, written and read, in one place so both sides agree.
"""DCASE Task 2 submission files: write and strictly read ``anomaly_score_…`` / ``decision_result_…``.

File names (protocol §2.1, §2.6), no header, one ``name,value`` row per test clip:

* 2022–2025 plain: ``anomaly_score_<m>_section_<XX>_test.csv``, ``decision_result_<m>_section_<XX>_test.csv``
* 2022–2025 baseline style: ``anomaly_score_DCASE<YYYY>T2<m>_section_<XX>_test_seed13711_id(0_)_Eval.csv``
  (any seed/tag; ``_Eval`` optional when reading, for dev results)
* 2021: ``anomaly_score_<m>_section_<XX>_<source|target>_test.csv`` (and ``decision_result_…``)
* 2020: ``anomaly_score_<m>_id_<XX>.csv`` (no decision files)

Reading joins rows to the truth **by name** after the alias mapping (revealed name → anonymised
name). Unlike the official tool, which sorts and pairs rows blindly, every malformed file is a
:class:`SubmissionError` naming the file and row: missing, duplicate or unknown names, a header
row, a wrong column count, a non-numeric or non-finite score, a decision other than 0/1.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stetho.data.names import ClipNameError, parse_clip_name
from stetho.evaluation.truth import DOMAINS, SectionTruth, Truth, check_year
from stetho.utils.errors import StethoError
from stetho.utils.io import atomic_write_text

__all__ = [
    "BASELINE_SEED",
    "BASELINE_TAG",
    "Decisions",
    "Scores",
    "SubmissionError",
    "SubmissionFile",
    "align_values",
    "find_submission_files",
    "read_submission",
    "submission_file_names",
    "write_submission",
]

logger = logging.getLogger(__name__)

Scores = dict[tuple[str, str], dict[str, float]]
Decisions = dict[tuple[str, str], dict[str, int]]
Kind = Literal["anomaly_score", "decision_result"]

#: Defaults of the official baseline file names (evaluator ``--seed`` / ``-tag``).
BASELINE_SEED = 13711
BASELINE_TAG = "_id(0_)"

_KINDS = "(?P<kind>anomaly_score|decision_result)"
_PLAIN = re.compile(_KINDS + r"_(?P<m>[^_]+)_section_(?P<s>\d{2})_test\.csv")
_BASELINE = re.compile(
    _KINDS
    + r"_DCASE(?P<y>\d{4})T2(?P<m>[^_]+)_section_(?P<s>\d{2})_test_seed(?P<seed>\d+)(?P<tag>.*?)"
    r"(?P<eval>_Eval)?\.csv"
)
_PLAIN_2021 = re.compile(
    _KINDS + r"_(?P<m>[^_]+)_section_(?P<s>\d{2})_(?P<d>source|target)_test\.csv"
)
_PLAIN_2020 = re.compile(r"(?P<kind>anomaly_score)_(?P<m>[^_]+)_id_(?P<s>\d{2})\.csv")
_SECTION = re.compile(r"\d{2}")


class SubmissionError(StethoError, ValueError):
    """A submission file (or score mapping) is malformed or does not match the truth."""


@dataclass(frozen=True)
class SubmissionFile:
    """A recognised submission file.

    Attributes:
        path: File path.
        kind: ``"anomaly_score"`` or ``"decision_result"``.
        machine: Machine type.
        section: Two-digit section (2020: machine id).
        domain: ``"source"``/``"target"`` for 2021 per-domain files, else None.
        style: ``"plain"`` or ``"baseline"``.
        year: Year in a baseline-style name (``DCASE2024T2…``), else None.
    """

    path: Path
    kind: str
    machine: str
    section: str
    domain: str | None
    style: str
    year: int | None = None


def _match_file(name: str, year: int) -> tuple[re.Match[str], str] | None:
    if year == 2020:
        m = _PLAIN_2020.fullmatch(name)
        return (m, "plain") if m else None
    if year == 2021:
        m = _PLAIN_2021.fullmatch(name)
        return (m, "plain") if m else None
    if m := _PLAIN.fullmatch(name):
        return m, "plain"
    if m := _BASELINE.fullmatch(name):
        return m, "baseline"
    return None


def find_submission_files(
    scores_dir: str | os.PathLike[str], *, year: int = 2023
) -> list[SubmissionFile]:
    """Submission files directly inside ``scores_dir`` whose names follow the ``year``'s forms."""
    year = check_year(year)
    root = Path(scores_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"scores folder does not exist: {root}")
    found: list[SubmissionFile] = []
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        hit = _match_file(path.name, year)
        if hit is None:
            continue
        m, style = hit
        groups = m.groupdict()
        found.append(
            SubmissionFile(
                path=path,
                kind=m["kind"],
                machine=m["m"],
                section=m["s"],
                domain=groups.get("d"),
                style=style,
                year=int(groups["y"]) if groups.get("y") else None,
            )
        )
    return found


def submission_file_names(
    machine: str,
    section: str,
    *,
    kind: Kind = "anomaly_score",
    style: Literal["plain", "baseline"] = "plain",
    year: int = 2023,
    domain: str | None = None,
) -> str:
    """The file name of one submission file (see the module docstring for the forms)."""
    year = check_year(year)
    if year == 2020:
        if kind != "anomaly_score":
            raise ValueError("2020 submissions have no decision files")
        return f"anomaly_score_{machine}_id_{section}.csv"
    if year == 2021:
        if domain not in DOMAINS:
            raise ValueError(f"2021 file names need domain 'source' or 'target', got {domain!r}")
        return f"{kind}_{machine}_section_{section}_{domain}_test.csv"
    if style == "baseline":
        return f"{kind}_DCASE{year}T2{machine}_section_{section}_test_seed{BASELINE_SEED}{BASELINE_TAG}_Eval.csv"
    if style != "plain":
        raise ValueError(f"style must be 'plain' or 'baseline', got {style!r}")
    return f"{kind}_{machine}_section_{section}_test.csv"


# ---------------------------------------------------------------------------------------------
# writing


def _check_name(name: str, machine: str, section: str) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in ',\n\r"/\\'):
        raise ValueError(
            f"{machine} section {section}: clip name {name!r} must be a non-empty base file name "
            "without ',', quotes, line breaks or path separators"
        )
    return name


def write_submission(
    out_dir: str | os.PathLike[str],
    machine: str,
    section: str,
    scores: Mapping[str, float],
    decisions: Mapping[str, int] | None = None,
    *,
    style: Literal["plain", "baseline"] = "plain",
    year: int = 2023,
) -> list[Path]:
    """Write the anomaly-score (and decision) file(s) of one (machine, section), atomically.

    Rows are ``name,score`` sorted by name, no header; scores are written with ``repr`` (full
    precision, round-trips exactly), decisions as ``0``/``1``. 2021 writes one file per domain
    (the domain is read from each clip name); 2020 writes ``anomaly_score_<m>_id_<XX>.csv`` only.

    Args:
        out_dir: Folder (created if needed).
        machine: Machine type (no ``_``: the evaluator splits file names on it).
        section: Two-digit section (2020: machine id).
        scores: ``{clip file name: anomaly score}`` (higher = more anomalous), finite.
        decisions: Optional ``{clip file name: 0/1}`` with the same names.
        style: ``"plain"`` or ``"baseline"`` (``…DCASE<YYYY>T2<m>…_seed13711_id(0_)_Eval.csv``,
            2022–2025 only).
        year: Challenge year (file-name form).

    Returns:
        Paths written.

    Raises:
        ValueError: Bad machine/section/name, non-finite score, decision not 0/1, name sets of
            scores and decisions differ, or a 2021 name without a domain.
    """
    year = check_year(year)
    if not machine or "_" in machine or any(c in machine for c in "/\\ "):
        raise ValueError(f"machine type {machine!r} must be non-empty without '_', spaces or '/'")
    if not _SECTION.fullmatch(section):
        raise ValueError(f"section must be two digits such as '00', got {section!r}")
    if style == "baseline" and year in (2020, 2021):
        raise ValueError(f"baseline-style file names exist only for 2022–2025, not {year}")
    if not scores:
        raise ValueError(f"{machine} section {section}: no scores to write")
    score_rows = _score_rows(scores, machine, section)
    decision_rows = _decision_rows(decisions, scores, machine, section, year)
    groups = _group_by_file_domain(score_rows, machine, section, year)

    written: list[Path] = []
    out = Path(out_dir)
    for file_domain, names in sorted(groups.items(), key=lambda kv: str(kv[0])):
        kinds: list[tuple[Kind, dict[str, str]]] = [("anomaly_score", score_rows)]
        if decision_rows is not None:
            kinds.append(("decision_result", decision_rows))
        for kind, rows in kinds:
            fname = submission_file_names(
                machine, section, kind=kind, style=style, year=year, domain=file_domain
            )
            path = out / fname
            atomic_write_text(path, "".join(f"{n},{rows[n]}\n" for n in names))
            written.append(path)
    return written


def _score_rows(scores: Mapping[str, float], machine: str, section: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for name, value in scores.items():
        _check_name(name, machine, section)
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(
                f"{machine} section {section}: score of {name!r} is not finite ({v!r})"
            )
        rows[name] = repr(v)
    return rows


def _decision_rows(
    decisions: Mapping[str, int] | None,
    scores: Mapping[str, float],
    machine: str,
    section: str,
    year: int,
) -> dict[str, str] | None:
    if decisions is None:
        return None
    if year == 2020:
        logger.warning(
            "2020 submissions have no decision files; decisions for %s %s not written",
            machine,
            section,
        )
        return None
    if set(decisions) != set(scores):
        diff = sorted(set(decisions) ^ set(scores))[:5]
        raise ValueError(
            f"{machine} section {section}: scores and decisions name different clips, e.g. {diff}"
        )
    rows: dict[str, str] = {}
    for name, d in decisions.items():
        if isinstance(d, str) or d not in (0, 1):
            raise ValueError(
                f"{machine} section {section}: decision of {name!r} must be 0 or 1, got {d!r}"
            )
        rows[name] = str(int(d))
    return rows


def _group_by_file_domain(
    rows: Mapping[str, str], machine: str, section: str, year: int
) -> dict[str | None, list[str]]:
    """Sorted clip names per output file: per domain in 2021, one group otherwise."""
    groups: dict[str | None, list[str]] = defaultdict(list)
    for name in sorted(rows):
        if year != 2021:
            groups[None].append(name)
            continue
        try:
            domain = parse_clip_name(name).domain
        except ClipNameError as err:
            raise ValueError(f"{machine} section {section}: {err}") from err
        if domain is None:
            raise ValueError(
                f"{machine} section {section}: 2021 files are per domain but {name!r} carries no "
                "source/target token"
            )
        groups[domain].append(name)
    return groups


# ---------------------------------------------------------------------------------------------
# reading


def _read_rows(path: Path, kind: str) -> list[tuple[int, str, float]]:
    """Parse one file → [(row number, name, value)] with strict checks (no truth needed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{path}: cannot read: {err}") from err
    try:
        raw = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise SubmissionError(f"{path}: malformed CSV: {err}") from err
    what = "score" if kind == "anomaly_score" else "decision (0/1)"
    rows: list[tuple[int, str, float]] = []
    seen: dict[str, int] = {}
    for i, fields in enumerate(raw, 1):
        if not fields or not any(f.strip() for f in fields):
            continue  # blank line
        if len(fields) != 2:
            raise SubmissionError(
                f"{path}, row {i}: expected 2 columns (file name,{what}) with no header, got "
                f"{len(fields)}: {fields!r}"
            )
        name, text_value = fields
        try:
            value = float(text_value)
        except ValueError:
            if i == 1 or not rows:
                raise SubmissionError(
                    f"{path}, row {i}: {fields!r} looks like a header row; submission files have no "
                    f"header, every row must be 'file name,{what}'"
                ) from None
            raise SubmissionError(
                f"{path}, row {i}: {what} {text_value!r} is not a number"
            ) from None
        if not math.isfinite(value):
            raise SubmissionError(
                f"{path}, row {i}: {what} for {name!r} is not finite ({text_value!r})"
            )
        if kind == "decision_result" and value not in (0.0, 1.0):
            raise SubmissionError(
                f"{path}, row {i}: decision for {name!r} must be 0 or 1, got {text_value!r}"
            )
        if name in seen:
            raise SubmissionError(
                f"{path}, row {i}: duplicate file name {name!r} (first in row {seen[name]})"
            )
        seen[name] = i
        rows.append((i, name, value))
    if not rows:
        raise SubmissionError(f"{path}: the file has no rows")
    return rows


def align_values(
    st: SectionTruth,
    rows: list[tuple[int | None, str, float]],
    source: str,
    expected: set[str] | None = None,
) -> dict[str, float]:
    """Map ``rows`` onto the canonical names of ``st`` (aliases applied), strictly.

    Args:
        st: The section's truth.
        rows: ``(row number or None, name, value)`` triples.
        source: File path or description used in error messages.
        expected: Canonical names this source must cover (default: all of ``st``).

    Returns:
        ``{canonical name: value}``.

    Raises:
        SubmissionError: Unknown name, two rows for the same clip, or missing clips.
    """
    expected = set(st.names) if expected is None else expected
    out: dict[str, float] = {}
    first_row: dict[str, int | None] = {}
    for row, name, value in rows:
        at = f"{source}, row {row}" if row is not None else source
        canon = st.canonical(name)
        if canon is None:
            hint = f"; expected names like {sorted(expected)[:2]}" if expected else ""
            raise SubmissionError(
                f"{at}: unknown file name {name!r} (not a test clip of {st.machine} section "
                f"{st.section}){hint}"
            )
        if canon not in expected:
            raise SubmissionError(
                f"{at}: clip {name!r} does not belong in this file (other domain)"
            )
        if canon in out:
            prev = first_row[canon]
            raise SubmissionError(
                f"{at}: {name!r} is the same clip as row {prev} ({canon!r}); each clip must appear once"
            )
        out[canon] = value
        first_row[canon] = row
    missing = sorted(expected - set(out))
    if missing:
        raise SubmissionError(
            f"{source}: {len(missing)} of {len(expected)} test clips of {st.machine} section {st.section} "
            f"have no row, e.g. {missing[:5]}"
        )
    return out


def _group_files(files: list[SubmissionFile]) -> dict[tuple[str, str, str, str], SubmissionFile]:
    """Index files by (kind, machine, section, domain or ""); two files for one slot is an error."""
    slots: dict[tuple[str, str, str, str], list[SubmissionFile]] = defaultdict(list)
    for f in files:
        slots[(f.kind, f.machine, f.section, f.domain or "")].append(f)
    out: dict[tuple[str, str, str, str], SubmissionFile] = {}
    for (kind, machine, section, domain), group in slots.items():
        if len(group) > 1:
            names = ", ".join(g.path.name for g in group)
            raise SubmissionError(
                f"{group[0].path.parent}: several {kind} files for {machine} section {section}"
                f"{' ' + domain if domain else ''}: {names}; keep exactly one"
            )
        out[(kind, machine, section, domain)] = group[0]
    return out


def read_submission(
    scores_dir: str | os.PathLike[str], truth: Truth | None = None, *, year: int = 2023
) -> tuple[Scores, Decisions | None]:
    """Read a system's submission folder (plain or baseline-style names).

    Args:
        scores_dir: Folder holding the ``anomaly_score_…`` (and ``decision_result_…``) files.
        truth: When given, every (machine, section) of the truth must have a score file, rows
            are joined by name after the alias mapping and returned under canonical names; files
            for sections not in the truth are ignored (with a warning). Without truth, all files
            are read and names kept as written.
        year: Challenge year (selects the file-name forms).

    Returns:
        ``(scores, decisions)``; decisions is None when the folder holds no decision files.

    Raises:
        SubmissionError: Missing file(s) (the message lists the expected names), duplicate or
            ambiguous files, or any malformed row (file and row named).
        FileNotFoundError: ``scores_dir`` does not exist.
    """
    year = check_year(year)
    files = find_submission_files(scores_dir, year=year)
    slots = _group_files(files)
    for f in files:
        if f.year is not None and f.year != year:
            logger.warning(
                "%s: baseline prefix DCASE%dT2 but evaluating as %d", f.path.name, f.year, year
            )
    has_decisions = any(
        f.kind == "decision_result" and (truth is None or (f.machine, f.section) in truth)
        for f in files
    )

    if truth is None:
        if not files:
            raise SubmissionError(f"{scores_dir}: no submission files for {year} ({_forms(year)})")
        scores, decisions = _read_all(files)
        return scores, (decisions if has_decisions else None)
    kinds: tuple[Kind, ...] = (
        ("anomaly_score", "decision_result") if has_decisions else ("anomaly_score",)
    )
    _check_complete(scores_dir, files, slots, truth, kinds, year)
    scores, decisions = _read_against_truth(slots, truth, kinds, year)
    return scores, (decisions if has_decisions else None)


def _read_all(files: Sequence[SubmissionFile]) -> tuple[Scores, Decisions]:
    """Every file, names as written (no truth to align with)."""
    scores: Scores = {}
    decisions: Decisions = {}
    for f in files:
        values = {name: value for _, name, value in _read_rows(f.path, f.kind)}
        key = (f.machine, f.section)
        previous = scores.get(key, {}) if f.kind == "anomaly_score" else decisions.get(key, {})
        if clash := sorted(set(values) & set(previous)):
            raise SubmissionError(f"{f.path}: {clash[0]!r} also appears in the other domain file")
        if f.kind == "anomaly_score":
            scores.setdefault(key, {}).update(values)
        else:
            decisions.setdefault(key, {}).update({n: int(v) for n, v in values.items()})
    return scores, decisions


def _check_complete(
    scores_dir: str | os.PathLike[str],
    files: Sequence[SubmissionFile],
    slots: Mapping[tuple[str, str, str, str], SubmissionFile],
    truth: Truth,
    kinds: tuple[Kind, ...],
    year: int,
) -> None:
    """Raise naming every file the truth's sections need but the folder lacks."""
    domains: tuple[str | None, ...] = DOMAINS if year == 2021 else (None,)
    missing: list[str] = []
    for machine, section in sorted(truth):
        for kind in kinds:
            for domain in domains:
                if (kind, machine, section, domain or "") in slots:
                    continue
                name = submission_file_names(machine, section, kind=kind, year=year, domain=domain)
                if year >= 2022:
                    alt = submission_file_names(
                        machine, section, kind=kind, style="baseline", year=year
                    )
                    name = f"{name} (or {alt})"
                missing.append(name)
    if missing:
        found = ", ".join(f.path.name for f in files) or "none"
        raise SubmissionError(
            f"{scores_dir}: {len(missing)} submission file(s) missing for sections in the truth:\n  "
            + "\n  ".join(missing)
            + f"\nsubmission files found: {found}"
        )


def _read_against_truth(
    slots: Mapping[tuple[str, str, str, str], SubmissionFile],
    truth: Truth,
    kinds: tuple[Kind, ...],
    year: int,
) -> tuple[Scores, Decisions]:
    """The files of the truth's sections, rows aligned to the truth's canonical names."""
    scores: Scores = {}
    decisions: Decisions = {}
    for (file_kind, machine, section, _), f in sorted(slots.items(), key=lambda kv: str(kv[0])):
        if (machine, section) not in truth:
            logger.warning(
                "%s: %s section %s is not in the truth; file ignored", f.path, machine, section
            )
            continue
        if file_kind not in kinds:
            continue
        st = truth[(machine, section)]
        expected = None
        if year == 2021:
            if st.domains is None:
                raise SubmissionError(f"2021 truth for {machine} section {section} has no domains")
            dom = DOMAINS.index(f.domain or "")
            expected = {n for n, d in zip(st.names, st.domains.tolist()) if d == dom}
        rows = _read_rows(f.path, file_kind)
        values = align_values(st, [(r, n, v) for r, n, v in rows], str(f.path), expected)
        if file_kind == "anomaly_score":
            scores.setdefault((machine, section), {}).update(values)
        else:
            decisions.setdefault((machine, section), {}).update(
                {n: int(v) for n, v in values.items()}
            )
    return scores, decisions


def _forms(year: int) -> str:
    if year == 2020:
        return "anomaly_score_<m>_id_<XX>.csv"
    if year == 2021:
        return "anomaly_score_<m>_section_<XX>_<source|target>_test.csv"
    return (
        "anomaly_score_<m>_section_<XX>_test.csv or "
        f"anomaly_score_DCASE{year}T2<m>_section_<XX>_test_seed<seed><tag>_Eval.csv"
    )
