# Over 500 lines: every ground-truth source of 2020-2025 (folders, lists, clip names) behind one type.
"""Ground truth for evaluation: from dev file names, from scanned clips, or from official GT files.

Evaluation truth is a :data:`Truth` = ``{(machine, section): SectionTruth}``. Sources:

* dev data — :func:`truth_from_names` / :func:`truth_from_clips`: label from the ``anomaly``
  token, domain from the ``target`` token of each dev test file name (protocol §2.2);
* the organisers' ground-truth folders — :func:`load_ground_truth` (protocol §4.1):

  - 2022–2025: ``ground_truth_data/ground_truth_<m>_section_<XX>_test.csv`` (``name,label``),
    ``ground_truth_domain/…`` (``name,domain``), 2023+ also ``ground_truth_attributes/…``
    (``anon,full_name_without_.wav[,…]``; only column 2 + ``".wav"`` is an alias, §2.1);
  - 2021: ``ground_truth_data/ground_truth_<m>_section_<XX>_<source|target>_test.csv``;
  - 2020 (and the baseline's ``eval_data_list_<YYYY>.csv`` for other years): one file with
    machine-type header lines followed by ``anon,full[,label]`` rows.

stetho ships no official GT file; they are read from the path the user gives.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stetho.data.names import ClipNameError, parse_clip_name
from stetho.utils.errors import StethoError

if TYPE_CHECKING:
    from stetho.data.scan import Clip

__all__ = [
    "SUPPORTED_YEARS",
    "GroundTruthError",
    "SectionTruth",
    "Truth",
    "load_ground_truth",
    "truth_from_clips",
    "truth_from_names",
]

logger = logging.getLogger(__name__)

#: Challenge years whose protocol is implemented (2026: 2022–2025 rules assumed).
SUPPORTED_YEARS: tuple[int, ...] = (2020, 2021, 2022, 2023, 2024, 2025, 2026)
DOMAINS: tuple[str, str] = ("source", "target")

_GT_FILE = re.compile(r"ground_truth_(?P<m>[^_]+)_section_(?P<s>\d{2})_test\.csv")
_GT_FILE_2021 = re.compile(
    r"ground_truth_(?P<m>[^_]+)_section_(?P<s>\d{2})_(?P<d>source|target)_test\.csv"
)
_EVAL_LIST = re.compile(r"eval_data_list(?:_(?P<y>\d{4}))?\.csv")


class GroundTruthError(StethoError, ValueError):
    """Ground-truth files or names are malformed or inconsistent (message names the file)."""


def check_year(year: int) -> int:
    """Validate a challenge year; returns it as int."""
    if year not in SUPPORTED_YEARS:
        raise ValueError(f"unsupported DCASE Task 2 year {year!r}; valid: {list(SUPPORTED_YEARS)}")
    return int(year)


@dataclass
class SectionTruth:
    """Labels (and domains) of the test clips of one (machine, section).

    Rows are kept sorted by name (the official evaluator's order).

    Attributes:
        machine: Machine type.
        section: Two-digit section (2020: machine id).
        names: Canonical clip file names (N,), sorted, unique.
        labels: (N,) int8, 0 = normal, 1 = anomaly.
        domains: (N,) int8, 0 = source, 1 = target; None when unknown (2020).
        aliases: Other accepted spellings of a name → canonical name (e.g. the revealed
            ``…_noAttribute.wav`` name of an anonymised eval clip).
    """

    machine: str
    section: str
    names: list[str]
    labels: np.ndarray
    domains: np.ndarray | None = None
    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"truth for {self.machine} section {self.section}"
        names = [str(n) for n in self.names]
        labels = np.asarray(self.labels).reshape(-1)
        if len(names) != labels.shape[0]:
            raise GroundTruthError(f"{where}: {len(names)} names but {labels.shape[0]} labels")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise GroundTruthError(f"{where}: duplicate clip names {dup[:5]}")
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise GroundTruthError(
                f"{where}: labels must be 0/1, found {sorted(set(labels.tolist()))}"
            )
        order = sorted(range(len(names)), key=names.__getitem__)
        self.names = [names[i] for i in order]
        self.labels = labels[order].astype(np.int8)
        if self.domains is not None:
            domains = np.asarray(self.domains).reshape(-1)
            if domains.shape[0] != len(names):
                raise GroundTruthError(
                    f"{where}: {len(names)} names but {domains.shape[0]} domains"
                )
            if domains.size and not np.isin(domains, (0, 1)).all():
                raise GroundTruthError(
                    f"{where}: domains must be 0 (source) / 1 (target), found {sorted(set(domains.tolist()))}"
                )
            self.domains = domains[order].astype(np.int8)
        known = set(self.names)
        for alias, canon in self.aliases.items():
            if canon not in known:
                raise GroundTruthError(f"{where}: alias {alias!r} points to unknown clip {canon!r}")
            if alias in known and alias != canon:
                raise GroundTruthError(f"{where}: alias {alias!r} is itself another clip's name")
        self._index = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    @property
    def key(self) -> tuple[str, str]:
        """(machine, section)."""
        return (self.machine, self.section)

    def canonical(self, name: str) -> str | None:
        """The canonical clip name for ``name`` (itself or via an alias), or None if unknown."""
        if name in self._index:
            return name
        return self.aliases.get(name)

    def index_of(self, name: str) -> int:
        """Row index of a canonical name (KeyError if unknown)."""
        return self._index[name]

    def counts(self) -> dict[str, int]:
        """Clip counts: normal/anomaly, and per domain when domains are known."""
        out = {"normal": int(np.sum(self.labels == 0)), "anomaly": int(np.sum(self.labels == 1))}
        if self.domains is not None:
            for d, dom in enumerate(DOMAINS):
                for lab, lname in ((0, "normal"), (1, "anomaly")):
                    out[f"{dom}_{lname}"] = int(np.sum((self.domains == d) & (self.labels == lab)))
        return out


Truth = dict[tuple[str, str], SectionTruth]


# ---------------------------------------------------------------------------------------------
# dev truth from names / clips


def _label_domain_from_name(name: str, where: str) -> tuple[int, int | None, str | None]:
    try:
        parsed = parse_clip_name(name)
    except ClipNameError as err:
        raise GroundTruthError(f"{where}: {err}") from err
    if parsed.label is None:
        raise GroundTruthError(
            f"{where}: file name {name!r} carries no normal/anomaly label; dev truth needs labelled "
            "test names such as 'section_00_source_test_anomaly_0000_<attrs>.wav' or "
            "'anomaly_id_00_00000000.wav'"
        )
    label = 1 if parsed.label == "anomaly" else 0
    domain = None if parsed.domain is None else DOMAINS.index(parsed.domain)
    return label, domain, parsed.section


def _build_section(
    machine: str,
    section: str,
    rows: list[tuple[str, int, int | None]],
    where: str,
    aliases: dict[str, str] | None = None,
) -> SectionTruth:
    doms = [d for _, _, d in rows]
    if all(d is None for d in doms):
        domains = None
    elif any(d is None for d in doms):
        missing = [n for n, _, d in rows if d is None][:5]
        raise GroundTruthError(
            f"{where}: some names carry a domain and some do not, e.g. {missing}"
        )
    else:
        domains = np.asarray(doms, dtype=np.int8)
    return SectionTruth(
        machine=machine,
        section=section,
        names=[n for n, _, _ in rows],
        labels=np.asarray([lab for _, lab, _ in rows], dtype=np.int8),
        domains=domains,
        aliases=dict(aliases or {}),
    )


def truth_from_names(names: Mapping[tuple[str, str], Iterable[str]]) -> Truth:
    """Dev truth from labelled test-clip file names.

    Args:
        names: ``{(machine, section): [file name, ...]}`` of dev test clips
            (``section_00_target_test_anomaly_0003_….wav``; 2020 ``anomaly_id_02_….wav``).

    Returns:
        The :data:`Truth`; label from the ``anomaly``/``normal`` token, domain from the
        ``source``/``target`` token (None for 2020 names).

    Raises:
        GroundTruthError: A name does not parse, carries no label, belongs to another section,
            is duplicated, or the section mixes names with and without a domain.
    """
    truth: Truth = {}
    for (machine, section), section_names in sorted(names.items()):
        where = f"{machine} section {section}"
        rows: list[tuple[str, int, int | None]] = []
        for name in section_names:
            base = os.path.basename(str(name))
            label, domain, sec = _label_domain_from_name(base, where)
            if sec is not None and sec != section:
                raise GroundTruthError(
                    f"{where}: clip {base!r} belongs to section {sec}, not {section}"
                )
            rows.append((base, label, domain))
        if not rows:
            raise GroundTruthError(f"{where}: no clip names given")
        truth[(machine, section)] = _build_section(machine, section, rows, where)
    return truth


def truth_from_clips(clips: Iterable[Clip]) -> Truth:
    """Dev truth from scanned clips (e.g. ``scan_dataset(root).filter(split="test")``).

    Only clips with ``split == "test"`` are used; each of them must carry a label (dev test
    data). The domain is the clip's ``domain`` (None for 2020).

    Raises:
        GroundTruthError: A test clip has no label, no test clip was given, or names clash.
    """
    grouped: dict[tuple[str, str], list[tuple[str, int, int | None]]] = defaultdict(list)
    for clip in clips:
        if clip.split != "test":
            continue
        where = f"{clip.machine} section {clip.section}"
        if clip.label not in ("normal", "anomaly"):
            raise GroundTruthError(
                f"{where}: test clip {clip.path} has no normal/anomaly label (eval test data?); "
                "dev truth needs labelled test clips — use load_ground_truth() for eval data"
            )
        domain = None if clip.domain is None else DOMAINS.index(clip.domain)
        grouped[clip.key].append((clip.name, 1 if clip.label == "anomaly" else 0, domain))
    if not grouped:
        raise GroundTruthError("no test clips given (expected clips with split='test' and a label)")
    return {
        key: _build_section(key[0], key[1], rows, f"{key[0]} section {key[1]}")
        for key, rows in sorted(grouped.items())
    }


# ---------------------------------------------------------------------------------------------
# official GT files


def read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Rows of a CSV file as (1-based row number, fields); fully blank rows are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise GroundTruthError(f"cannot read {path}: {err}") from err
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise GroundTruthError(f"{path}: malformed CSV: {err}") from err
    return [(i, r) for i, r in enumerate(rows, 1) if any(c.strip() for c in r)]


def _binary(value: str, path: Path, row: int, what: str) -> int:
    try:
        v = float(value)
    except ValueError:
        v = float("nan")
    if v not in (0.0, 1.0):
        raise GroundTruthError(f"{path}, row {row}: {what} must be 0 or 1, got {value!r}")
    return int(v)


def _read_name_value(path: Path, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row, fields in read_csv_rows(path):
        if len(fields) != 2:
            raise GroundTruthError(
                f"{path}, row {row}: expected 2 columns (name,{what}), got {len(fields)}"
            )
        name, value = fields
        if name in out:
            raise GroundTruthError(f"{path}, row {row}: duplicate clip name {name!r}")
        out[name] = _binary(value, path, row, what)
    if not out:
        raise GroundTruthError(f"{path}: no rows")
    return out


def _read_aliases(
    path: Path, labels: Mapping[str, int], domains: Mapping[str, int]
) -> dict[str, str]:
    """``anon,full_without_wav[,…]`` → {full + ".wav": anon}; only column 2 counts (§2.1).

    A revealed name whose label/domain tokens contradict the GT data/domain files is logged (the
    data/domain files are authoritative, as in the official evaluator).
    """
    aliases: dict[str, str] = {}
    contradictions: list[str] = []
    for row, fields in read_csv_rows(path):
        if len(fields) < 2:
            raise GroundTruthError(
                f"{path}, row {row}: expected at least 2 columns (anon_name,full_name)"
            )
        anon, full = fields[0], fields[1] + ".wav"
        if anon not in labels:
            raise GroundTruthError(
                f"{path}, row {row}: {anon!r} is not a clip of the ground_truth_data file"
            )
        if full in aliases and aliases[full] != anon:
            raise GroundTruthError(f"{path}, row {row}: name {full!r} is listed for two clips")
        if full != anon:
            aliases[full] = anon
        try:
            parsed = parse_clip_name(full)
        except ClipNameError:
            continue
        if (parsed.label is not None and (parsed.label == "anomaly") != bool(labels[anon])) or (
            parsed.domain is not None and DOMAINS.index(parsed.domain) != domains[anon]
        ):
            contradictions.append(f"{anon} ↔ {full}")
    if contradictions:
        logger.warning(
            "%s: %d revealed name(s) contradict the label/domain ground truth, e.g. %s "
            "(ground_truth_data/_domain are used)",
            path,
            len(contradictions),
            contradictions[:3],
        )
    return aliases


def _load_folders(root: Path, year: int) -> Truth:
    data_dir = root / "ground_truth_data"
    files = sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix == ".csv")
    pattern = _GT_FILE_2021 if year == 2021 else _GT_FILE
    matched = [(p, m) for p in files if (m := pattern.fullmatch(p.name))]
    if not matched:
        other = _GT_FILE if year == 2021 else _GT_FILE_2021
        hint = ""
        if any(other.fullmatch(p.name) for p in files):
            hint = (
                " (the files look like "
                + ("2022+" if year == 2021 else "2021")
                + " ground truth: check year)"
            )
        expected = (
            "ground_truth_<machine>_section_<XX>_<source|target>_test.csv"
            if year == 2021
            else "ground_truth_<machine>_section_<XX>_test.csv"
        )
        raise GroundTruthError(f"{data_dir}: no {year} ground-truth files named {expected}{hint}")
    for p in files:
        if not pattern.fullmatch(p.name):
            logger.warning("ignoring unexpected file in %s: %s", data_dir, p.name)

    truth: Truth = {}
    if year == 2021:
        per_key: dict[tuple[str, str], list[tuple[str, int, int | None]]] = defaultdict(list)
        for path, m in matched:
            dom = DOMAINS.index(m["d"])
            for name, label in _read_name_value(path, "label").items():
                per_key[(m["m"], m["s"])].append((name, label, dom))
        for key, rows in sorted(per_key.items()):
            truth[key] = _build_section(
                key[0], key[1], rows, f"{data_dir} {key[0]} section {key[1]}"
            )
        return truth

    for path, m in matched:
        machine, section = m["m"], m["s"]
        labels = _read_name_value(path, "label")
        dom_path = root / "ground_truth_domain" / path.name
        if not dom_path.is_file():
            raise GroundTruthError(f"missing domain ground truth {dom_path} for {path}")
        domains = _read_name_value(dom_path, "domain")
        if set(domains) != set(labels):
            diff = sorted(set(domains) ^ set(labels))[:5]
            raise GroundTruthError(f"{path} and {dom_path} list different clips, e.g. {diff}")
        names = sorted(labels)
        aliases: dict[str, str] = {}
        attr_path = root / "ground_truth_attributes" / path.name
        if year >= 2023:  # the 2022 evaluator has no attribute mapping (§2.6)
            if attr_path.is_file():
                aliases = _read_aliases(attr_path, labels, domains)
            else:
                logger.warning(
                    "no attribute ground truth %s: only anonymised names accepted", attr_path
                )
        truth[(machine, section)] = SectionTruth(
            machine=machine,
            section=section,
            names=names,
            labels=np.asarray([labels[n] for n in names], dtype=np.int8),
            domains=np.asarray([domains[n] for n in names], dtype=np.int8),
            aliases=aliases,
        )
    return truth


def _load_list(path: Path, year: int) -> Truth:
    """``eval_data_list*.csv``: machine header lines, then ``anon,full[,label]`` rows."""
    machine: str | None = None
    rows_by_key: dict[tuple[str, str], list[tuple[str, int, int | None]]] = defaultdict(list)
    aliases: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for row, fields in read_csv_rows(path):
        fields = [f.strip() for f in fields]
        if len(fields) == 1 or (len(fields) > 1 and not any(fields[1:])):
            machine = _list_machine(fields[0], path, row, year)
            continue
        if machine is None:
            raise GroundTruthError(
                f"{path}, row {row}: clip row before any machine-type header line"
            )
        if len(fields) not in (2, 3):
            raise GroundTruthError(
                f"{path}, row {row}: expected anon_name,full_name[,label], got {len(fields)} columns"
            )
        anon, full = fields[0], fields[1]
        where = f"{path}, row {row}"
        section, label, domain = _list_row(fields, path, row, year)
        key = (machine, section)
        rows_by_key[key].append((anon, label, domain))
        if full != anon:
            if full in aliases[key]:
                raise GroundTruthError(f"{where}: name {full!r} listed twice")
            aliases[key][full] = anon
    if not rows_by_key:
        raise GroundTruthError(f"{path}: no clip rows found")
    truth: Truth = {}
    for key, rows in sorted(rows_by_key.items()):
        truth[key] = _build_section(
            key[0], key[1], rows, f"{path} {key[0]} section {key[1]}", aliases[key]
        )
    return truth


def _list_machine(machine: str, path: Path, row: int, year: int) -> str:
    """A machine-type header line of an eval list, checked."""
    if "_" in machine:
        raise GroundTruthError(f"{path}, row {row}: machine type {machine!r} contains '_'")
    if year == 2022 and machine in ("ToyCar", "ToyTrain"):
        raise GroundTruthError(
            f"{path}: 2022 {machine} labels in the renaming list disagree with the official "
            "ground_truth_data/ground_truth_domain files (protocol §4.1); use the 2022 "
            "evaluator's ground-truth folders instead"
        )
    return machine


def _list_row(fields: list[str], path: Path, row: int, year: int) -> tuple[str, int, int | None]:
    """``(section, label, domain)`` of an ``anon,full[,label]`` row of an eval list."""
    anon, full = fields[0], fields[1]
    where = f"{path}, row {row}"
    try:
        anon_parsed = parse_clip_name(anon)
    except ClipNameError as err:
        raise GroundTruthError(f"{where}: {err}") from err
    section = anon_parsed.section
    if section is None:
        raise GroundTruthError(f"{where}: no section/id in {anon!r}")
    label: int | None = None
    domain: int | None = None
    if len(fields) == 3:
        label = _binary(fields[2], path, row, "label")
    try:
        full_parsed = parse_clip_name(full)
    except ClipNameError as err:
        if label is None:
            raise GroundTruthError(f"{where}: {err}") from err
        full_parsed = None
    if full_parsed is not None:
        if full_parsed.label is not None:
            name_label = 1 if full_parsed.label == "anomaly" else 0
            if label is not None and label != name_label:
                raise GroundTruthError(f"{where}: label column {label} contradicts name {full!r}")
            label = name_label
        dom = full_parsed.domain or anon_parsed.domain
        domain = None if dom is None or year == 2020 else DOMAINS.index(dom)
    if label is None:
        raise GroundTruthError(f"{where}: no label column and no label token in {full!r}")
    return section, label, domain


def find_eval_list(root: Path, year: int | None = None) -> Path | None:
    """The ``eval_data_list[_YYYY].csv`` in ``root`` (preferring the given year), or None."""
    if root.is_file():
        return root
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if p.is_file() and _EVAL_LIST.fullmatch(p.name))
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    if year is not None:
        for p in found:
            if p.name == f"eval_data_list_{year}.csv":
                return p
    plain = [p for p in found if p.name == "eval_data_list.csv"]
    if plain:
        return plain[0]
    raise GroundTruthError(
        f"{root}: several eval data lists {[p.name for p in found]}; pass the file or the year"
    )


def is_ground_truth_dir(path: str | os.PathLike[str]) -> bool:
    """True for an official GT folder (has ``ground_truth_data/``) or an eval-data-list file/folder."""
    p = Path(path)
    if p.is_file():
        return _EVAL_LIST.fullmatch(p.name) is not None or p.suffix == ".csv"
    return p.is_dir() and ((p / "ground_truth_data").is_dir() or find_eval_list(p) is not None)


def load_ground_truth(gt_dir: str | os.PathLike[str], year: int = 2023) -> Truth:
    """Read the organisers' ground truth (protocol §4.1).

    Args:
        gt_dir: A folder with ``ground_truth_data/`` (+ ``ground_truth_domain/``,
            ``ground_truth_attributes/``) — the 2021–2025 evaluator layout — or an
            ``eval_data_list[_YYYY].csv`` file (2020 form; also the baseline's lists for other
            years) or a folder holding one.
        year: Challenge year (2021: per-domain GT files; 2022: no attribute aliases; 2023+:
            aliases from column 2 of the attribute files; 2020: eval data list).

    Returns:
        The :data:`Truth` with aliases (revealed names → anonymised names).

    Raises:
        GroundTruthError: Missing or inconsistent files; FileNotFoundError if ``gt_dir`` is absent.
    """
    year = check_year(year)
    root = Path(gt_dir)
    if not root.exists():
        raise FileNotFoundError(f"ground-truth path does not exist: {root}")
    if root.is_dir() and (root / "ground_truth_data").is_dir():
        if year == 2020:
            raise GroundTruthError(
                f"{root}: 2020 ground truth is an eval_data_list.csv file, not folders"
            )
        truth = _load_folders(root, year)
    else:
        lst = find_eval_list(root, year)
        if lst is None:
            raise GroundTruthError(
                f"{root}: not a ground-truth folder; expected ground_truth_data/ (+ ground_truth_domain/, "
                "ground_truth_attributes/) or an eval_data_list[_YYYY].csv file"
            )
        truth = _load_list(lst, year)
    logger.info(
        "ground truth %s (%d): %d sections, %d clips",
        root,
        year,
        len(truth),
        sum(len(t) for t in truth.values()),
    )
    return truth


def truth_summary(truth: Mapping[tuple[str, str], SectionTruth]) -> list[dict[str, Any]]:
    """One dict per section: machine, section and clip counts."""
    return [{"machine": k[0], "section": k[1], **t.counts()} for k, t in sorted(truth.items())]
