# Over 500 lines: the DCASE folder layouts of 2020-2025 behind one scanner; the hardening branch splits it.
"""Inventory of a DCASE Task 2 dataset folder: :func:`scan_dataset` → :class:`ClipTable`.

Supported layouts (protocol §1.2):

* ``<root>/{dev_data,eval_data}/raw/<machine>/{train,test,supplemental}/`` (2021–2025 baseline layout),
* ``<root>/{dev_data,eval_data}/<machine>/{train,test}/`` (2020 layout),
* ``<root>/<machine>/{train,test}/`` (a bare folder of machines; also ``<root>`` = ``…/dev_data/raw``),
* ``<root>`` = one machine folder holding ``train/``, ``test/``, … directly,
* 2021 ``source_test/`` and ``target_test/`` folders (read as split "test").

``attributes_XX.csv`` files in a machine folder are joined by base name into
``Clip.attribute_values``. ``test_rename/`` (a baseline-made copy of ``test/``) is skipped.
Everything else that is not a parseable clip is reported as a :class:`ScanProblem`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal, overload

from stetho.data.audio import AudioError, audio_info
from stetho.data.names import ClipName, ClipNameError, Key, is_audio_file_name, parse_clip_name
from stetho.utils.errors import StethoError
from stetho.utils.io import atomic_write

__all__ = [
    "Clip",
    "ClipTable",
    "ScanError",
    "ScanProblem",
    "format_summary",
    "group_by_key",
    "infer_year",
    "scan_dataset",
]

logger = logging.getLogger(__name__)

PARTITION_DIRS: dict[str, str] = {"dev": "dev_data", "eval": "eval_data"}
SPLIT_DIRS: dict[str, tuple[str, str | None]] = {
    # folder name -> (split, domain implied by the folder)
    "train": ("train", None),
    "test": ("test", None),
    "supplemental": ("supplemental", None),
    "source_test": ("test", "source"),
    "target_test": ("test", "target"),
}
SKIPPED_DIRS = frozenset({"test_rename"})
# files in a machine folder that are not clips and not problems (written by stetho.data.importer)
KNOWN_FILES = frozenset({"import_manifest.csv"})
_ATTR_CSV = re.compile(r"attributes_(\d{2})\.csv", re.IGNORECASE)
_YEAR_RE = re.compile(r"dcase[_-]?(20\d{2})", re.IGNORECASE)
_ATTR_COL = re.compile(r"d(\d+)([pv])")


class ScanError(StethoError, ValueError):
    """Raised by :func:`scan_dataset` with ``on_error="raise"`` for a non-name problem."""


@dataclass(frozen=True)
class Clip:
    """One audio clip of the dataset.

    Attributes:
        path: File path.
        name: File base name.
        machine: Machine type (from the folder).
        section: Two-digit section (2020: machine id).
        domain: "source"/"target"/None (hidden).
        label: "normal"/"anomaly"/None (hidden).
        split: "train" | "test" | "supplemental".
        partition: "dev" | "eval" | "unknown".
        year: Challenge year or None.
        attributes: Opaque attribute tail from the name.
        attribute_values: ``(param, value)`` pairs from ``attributes_XX.csv``.
        seconds: Duration, known only after ``scan_dataset(check_audio=True)``.
    """

    path: Path
    name: str
    machine: str
    section: str
    domain: str | None
    label: str | None
    split: str
    partition: str
    year: int | None
    attributes: str | None
    attribute_values: tuple[tuple[str, str], ...] = ()
    seconds: float | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        """``(machine, section)``."""
        return (self.machine, self.section)


@dataclass(frozen=True)
class ScanProblem:
    """Something under the dataset root that is not a usable clip."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_CLIP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Clip))


def group_by_key(clips: Iterable[Clip]) -> dict[Key, list[Clip]]:
    """Clips grouped by (machine, section), keys in sorted order, clips in input order."""
    groups: dict[Key, list[Clip]] = {}
    for c in clips:
        groups.setdefault(c.key, []).append(c)
    return {key: groups[key] for key in sorted(groups)}


def _sort_key(c: Clip) -> tuple[str, str, str, str, str, str]:
    return (c.machine, c.section, c.split, c.name, c.partition, str(c.path))


class ClipTable(Sequence[Clip]):
    """Immutable, ordered (machine, section, split, name) collection of clips + scan problems."""

    def __init__(self, clips: Iterable[Clip] = (), problems: Iterable[ScanProblem] = ()) -> None:
        self._clips: tuple[Clip, ...] = tuple(sorted(clips, key=_sort_key))
        self.problems: list[ScanProblem] = list(problems)

    # --- Sequence -------------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> Clip: ...
    @overload
    def __getitem__(self, index: slice) -> ClipTable: ...
    def __getitem__(self, index: int | slice) -> Clip | ClipTable:
        if isinstance(index, slice):
            return ClipTable(self._clips[index], self.problems)
        return self._clips[index]

    def __len__(self) -> int:
        return len(self._clips)

    def __iter__(self) -> Iterator[Clip]:
        return iter(self._clips)

    def __repr__(self) -> str:
        splits = dict(sorted(Counter(c.split for c in self._clips).items()))
        parts = dict(sorted(Counter(c.partition for c in self._clips).items()))
        return (
            f"ClipTable({len(self)} clips, {len(self.machines())} machines, "
            f"{len(self.sections())} sections, splits={splits}, partitions={parts}, "
            f"problems={len(self.problems)})"
        )

    # --- queries --------------------------------------------------------------------------
    def filter(self, **criteria: Any) -> ClipTable:
        """Clips whose fields match all criteria.

        A value may be a scalar (equality, ``None`` included), a collection (membership; not a
        string), or a callable predicate. Keys: any :class:`Clip` field or ``key``.

        Example: ``table.filter(split="train", machine={"fan", "valve"}, label="normal")``.
        """
        valid = (*_CLIP_FIELDS, "key")
        for k in criteria:
            if k not in valid:
                raise ValueError(f"unknown filter field {k!r}; valid fields: {', '.join(valid)}")

        def is_many(k: str, want: Any) -> bool:
            if isinstance(want, str | bytes) or not isinstance(want, Collection):
                return False
            # key=("fan", "00") is one key, key=[("fan", "00"), ...] is several
            return not (
                k == "key"
                and isinstance(want, tuple)
                and len(want) == 2
                and all(isinstance(x, str) for x in want)
            )

        def match(clip: Clip) -> bool:
            for k, want in criteria.items():
                have = getattr(clip, k)
                if callable(want):
                    if not want(have):
                        return False
                elif is_many(k, want):
                    if have not in want:
                        return False
                elif have != want:
                    return False
            return True

        return ClipTable((c for c in self._clips if match(c)), self.problems)

    def machines(self) -> list[str]:
        """Sorted machine types."""
        return sorted({c.machine for c in self._clips})

    def sections(self) -> list[tuple[str, str]]:
        """Sorted ``(machine, section)`` keys."""
        return sorted({c.key for c in self._clips})

    def summary(self) -> list[dict[str, Any]]:
        """Per (partition, machine, section, split): counts by domain/label and clip seconds.

        Keys: partition, machine, section, split, clips, source, target, domain_hidden, normal,
        anomaly, label_hidden, source_normal, source_anomaly, target_normal, target_anomaly,
        seconds_min, seconds_max, seconds_total (None unless durations are known for all clips).
        """
        groups: dict[tuple[str, str, str, str], list[Clip]] = defaultdict(list)
        for c in self._clips:
            groups[(c.partition, c.machine, c.section, c.split)].append(c)
        rows: list[dict[str, Any]] = []
        for (part, machine, section, split), clips in sorted(groups.items()):
            dom = Counter(c.domain for c in clips)
            lab = Counter(c.label for c in clips)
            both = Counter((c.domain, c.label) for c in clips)
            secs = [c.seconds for c in clips]
            known = [s for s in secs if s is not None]
            complete = len(known) == len(secs)
            rows.append(
                {
                    "partition": part,
                    "machine": machine,
                    "section": section,
                    "split": split,
                    "clips": len(clips),
                    "source": dom["source"],
                    "target": dom["target"],
                    "domain_hidden": dom[None],
                    "normal": lab["normal"],
                    "anomaly": lab["anomaly"],
                    "label_hidden": lab[None],
                    "source_normal": both[("source", "normal")],
                    "source_anomaly": both[("source", "anomaly")],
                    "target_normal": both[("target", "normal")],
                    "target_anomaly": both[("target", "anomaly")],
                    "seconds_min": min(known) if complete and known else None,
                    "seconds_max": max(known) if complete and known else None,
                    "seconds_total": sum(known) if complete and known else None,
                }
            )
        return rows

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per clip (path as text, attribute_values as ``p=v;p=v``)."""
        return [
            {
                "path": str(c.path),
                "name": c.name,
                "machine": c.machine,
                "section": c.section,
                "domain": c.domain,
                "label": c.label,
                "split": c.split,
                "partition": c.partition,
                "year": c.year,
                "attributes": c.attributes,
                "attribute_values": ";".join(f"{p}={v}" for p, v in c.attribute_values),
                "seconds": c.seconds,
            }
            for c in self._clips
        ]

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_rows` as a CSV with header (atomic); returns the path."""
        path = Path(path)
        cols = [
            "path", "name", "machine", "section", "domain", "label", "split", "partition",
            "year", "attributes", "attribute_values", "seconds",
        ]  # fmt: skip
        with atomic_write(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
            writer.writeheader()
            for row in self.to_rows():
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return path


# ---------------------------------------------------------------------------------------------
# scanning
# ---------------------------------------------------------------------------------------------


class _Reporter:
    def __init__(self, on_error: str) -> None:
        self.on_error = on_error
        self.problems: list[ScanProblem] = []

    def __call__(self, path: Path, message: str, exc: BaseException | None = None) -> None:
        if self.on_error == "raise":
            if isinstance(exc, ClipNameError):
                raise exc
            raise ScanError(f"{path}: {message}") from exc
        logger.debug("scan problem: %s: %s", path, message)
        self.problems.append(ScanProblem(path, message))


def infer_year(path: str | os.PathLike[str]) -> int | None:
    """Year from the closest path component like ``dcase2023t2`` (case-insensitive), else None."""
    for part in reversed(Path(path).absolute().parts):
        if m := _YEAR_RE.search(part):
            return int(m[1])
    return None


def _infer_partition(path: Path) -> str:
    for part in reversed(path.absolute().parts):
        for key, dirname in PARTITION_DIRS.items():
            if part == dirname:
                return key
    return "unknown"


def _read_attribute_csv(path: Path, report: _Reporter) -> dict[str, tuple[tuple[str, str], ...]]:
    """Parse ``attributes_XX.csv`` → {base name: ((param, value), ...)}; problems are reported."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        report(path, f"cannot read attribute CSV: {err}", err)
        return {}
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as err:
        report(path, f"malformed attribute CSV: {err}", err)
        return {}
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        report(path, "empty attribute CSV (expected header 'file_name,d1p,d1v,...')")
        return {}
    header = [h.strip() for h in rows[0]]
    if not header or header[0] != "file_name":
        report(
            path,
            f"malformed attribute CSV: header must start with 'file_name' "
            f"(expected 'file_name,d1p,d1v,...'), got {','.join(header)!r}",
        )
        return {}
    # pair dNp / dNv columns
    cols: dict[int, dict[str, int]] = defaultdict(dict)
    for j, h in enumerate(header[1:], start=1):
        if m := _ATTR_COL.fullmatch(h):
            cols[int(m[1])][m[2]] = j
    pairs: list[tuple[int, int]] = []
    for n in sorted(cols):
        if set(cols[n]) != {"p", "v"}:
            report(path, f"malformed attribute CSV: column d{n}p or d{n}v missing in header")
            return {}
        pairs.append((cols[n]["p"], cols[n]["v"]))
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            report(
                path,
                f"malformed attribute CSV line {lineno}: {len(row)} fields, header has "
                f"{len(header)}",
            )
            continue
        row = row + [""] * (len(header) - len(row))
        fname = row[0].strip()
        if not fname:
            report(path, f"malformed attribute CSV line {lineno}: empty file_name")
            continue
        base = PurePosixPath(fname.replace("\\", "/")).name
        values = tuple(
            (row[p].strip(), row[v].strip()) for p, v in pairs if row[p].strip() or row[v].strip()
        )
        if base in out and out[base] != values:
            report(path, f"attribute CSV line {lineno}: conflicting duplicate entry for {base}")
            continue
        out[base] = values
    return out


_Attrs = dict[str, tuple[tuple[str, str], ...]]
_SplitDir = tuple[Path, str, str | None]  # (folder, split, domain from the folder name)


def _scan_machine(
    mdir: Path,
    *,
    partition: str,
    year: int | None,
    report: _Reporter,
    check_audio: bool,
) -> list[Clip]:
    listed = _machine_entries(mdir, report)
    if listed is None:
        return []
    split_dirs, attrs = listed
    clips: list[Clip] = []
    for sdir, folder_split, folder_domain in split_dirs:
        for p in _clip_files(sdir, report):
            clip = _clip_of_file(
                p, mdir.name, folder_split, folder_domain, partition, year, attrs, report
            )
            if clip is not None and check_audio:
                clip = _with_audio_checked(clip, report)
            if clip is not None:
                clips.append(clip)
    return clips


def _machine_entries(mdir: Path, report: _Reporter) -> tuple[list[_SplitDir], _Attrs] | None:
    """The split folders and attribute CSV rows of a machine folder (None: unreadable)."""
    attrs: _Attrs = {}
    split_dirs: list[_SplitDir] = []
    try:
        entries = sorted(os.scandir(mdir), key=lambda e: e.name)
    except OSError as err:
        report(mdir, f"cannot list machine folder: {err}", err)
        return None
    for entry in entries:
        p = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError as err:
            report(p, f"unreadable entry: {err}", err)
            continue
        if is_dir:
            _split_dir(p, mdir.name, split_dirs, report)
        elif _ATTR_CSV.fullmatch(entry.name):
            for base, vals in _read_attribute_csv(p, report).items():
                if base in attrs and attrs[base] != vals:
                    report(p, f"conflicting attributes for {base} across attribute CSVs")
                    continue
                attrs[base] = vals
        elif entry.name not in KNOWN_FILES:
            report(
                p, "unexpected file in machine folder (expected train/, test/, attributes_XX.csv)"
            )
    return split_dirs, attrs


def _split_dir(p: Path, machine: str, split_dirs: list[_SplitDir], report: _Reporter) -> None:
    if p.name in SPLIT_DIRS:
        split, dom = SPLIT_DIRS[p.name]
        split_dirs.append((p, split, dom))
    elif p.name in SKIPPED_DIRS:
        logger.info("skipping %s (baseline-generated copy of test/)", p)
    else:
        report(
            p,
            f"unexpected folder in machine folder {machine!r}; expected one of "
            f"{', '.join(SPLIT_DIRS)}",
        )


def _clip_files(sdir: Path, report: _Reporter) -> list[Path]:
    """Audio files of a split folder, sorted; anything else is reported."""
    try:
        entries = sorted(os.scandir(sdir), key=lambda e: e.name)
    except OSError as err:
        report(sdir, f"cannot list folder: {err}", err)
        return []
    out: list[Path] = []
    for entry in entries:
        p = Path(entry.path)
        try:
            if not entry.is_file():
                report(p, "unexpected non-file entry in a clip folder (ignored)")
                continue
        except OSError as err:
            report(p, f"unreadable entry: {err}", err)
            continue
        if not is_audio_file_name(entry.name):
            report(p, "not an audio file (expected .wav or .flac); ignored")
            continue
        out.append(p)
    return out


def _clip_of_file(
    p: Path,
    machine: str,
    folder_split: str,
    folder_domain: str | None,
    partition: str,
    year: int | None,
    attrs: _Attrs,
    report: _Reporter,
) -> Clip | None:
    try:
        cn = parse_clip_name(p.name)
    except ClipNameError as err:
        report(p, str(err), err)
        return None
    return _make_clip(p, cn, machine, folder_split, folder_domain, partition, year, attrs, report)


def _with_audio_checked(clip: Clip, report: _Reporter) -> Clip | None:
    """The clip with its duration, or None (reported) when the file is broken or non-finite."""
    try:
        info = audio_info(clip.path, check_samples=True)
    except AudioError as err:
        report(clip.path, str(err), err)
        return None
    return replace(clip, seconds=info.seconds)


def _make_clip(
    path: Path,
    cn: ClipName,
    machine: str,
    folder_split: str,
    folder_domain: str | None,
    partition: str,
    year: int | None,
    attrs: dict[str, tuple[tuple[str, str], ...]],
    report: _Reporter,
) -> Clip | None:
    split = folder_split
    if cn.style == "dcase2025-supplemental":
        split = "supplemental"
    elif folder_split == "supplemental":
        pass  # a regular name in supplemental/: keep it out of train
    elif cn.split is not None and cn.split != folder_split:
        report(
            path,
            f"name says split {cn.split!r} but the file is in a {folder_split!r} folder; "
            f"using the folder ({folder_split!r})",
        )
    domain = cn.domain
    if folder_domain is not None:
        if domain is None:
            domain = folder_domain  # type: ignore[assignment]
        elif domain != folder_domain:
            report(
                path,
                f"name says domain {domain!r} but the folder says {folder_domain!r}; using the name",
            )
    label = cn.label
    if split == "train" and label == "anomaly":
        report(path, "anomalous clip in a train folder (training data must be normal)")
    assert cn.section is not None  # every accepted form carries a section
    return Clip(
        path=path,
        name=cn.name,
        machine=machine,
        section=cn.section,
        domain=domain,
        label=label,
        split=split,
        partition=partition,
        # 2020 names (normal_id_00_…) exist only in the 2020 data: they fix the year when the
        # path does not (``stetho train`` then evaluates with the 2020 rules)
        year=year if year is not None or cn.style != "dcase2020" else 2020,
        attributes=cn.attributes,
        attribute_values=attrs.get(cn.name, ()),
    )


def _machine_dirs(base: Path, report: _Reporter) -> list[Path]:
    out: list[Path] = []
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError as err:
        report(base, f"cannot list folder: {err}", err)
        return out
    for entry in entries:
        p = Path(entry.path)
        try:
            if entry.is_dir():
                out.append(p)
            else:
                report(p, "unexpected file next to the machine folders (ignored)")
        except OSError as err:
            report(p, f"unreadable entry: {err}", err)
    return out


def scan_dataset(
    root: str | os.PathLike[str],
    *,
    year: int | None = None,
    partitions: Iterable[str] = ("dev", "eval"),
    on_error: Literal["report", "raise"] = "report",
    check_audio: bool = False,
) -> ClipTable:
    """Inventory a DCASE Task 2 dataset folder (layouts: see the module docstring).

    Args:
        root: Dataset root (``…/dcase2023t2``), a partition folder, a folder of machine
            folders, or one machine folder.
        year: Challenge year; None infers it from the path (``dcase2023t2`` → 2023) or leaves
            it None.
        partitions: Which of ``dev_data``/``eval_data`` to scan when ``root`` holds them.
        on_error: ``"report"`` collects problems in ``ClipTable.problems``; ``"raise"`` raises
            at the first one (:class:`ClipNameError` for a bad name, else :class:`ScanError`).
        check_audio: Also read every file header (and decode float-encoded files): corrupt,
            empty and non-finite (NaN/Inf) files become problems (and are left out), durations
            go to ``Clip.seconds``. Off by default (no file is opened).

    Returns:
        The :class:`ClipTable`.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    if on_error not in ("report", "raise"):
        raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
    parts = tuple(partitions)
    for p in parts:
        if p not in PARTITION_DIRS:
            raise ValueError(f"unknown partition {p!r}; valid: {', '.join(PARTITION_DIRS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root is not a folder: {root}")
    if year is None:
        year = infer_year(root)
    report = _Reporter(on_error)

    # (machine folder, partition)
    machine_dirs: list[tuple[Path, str]] = []
    if any((root / d).is_dir() for d in PARTITION_DIRS.values()):
        for part in parts:
            pdir = root / PARTITION_DIRS[part]
            if not pdir.is_dir():
                continue
            base = pdir / "raw" if (pdir / "raw").is_dir() else pdir
            machine_dirs += [(m, part) for m in _machine_dirs(base, report)]
    elif any((root / d).is_dir() for d in SPLIT_DIRS):
        machine_dirs.append((root, _infer_partition(root)))
    else:
        base = root / "raw" if (root / "raw").is_dir() else root
        partition = _infer_partition(base)
        machine_dirs += [(m, partition) for m in _machine_dirs(base, report)]

    clips: list[Clip] = []
    for mdir, part in machine_dirs:
        clips += _scan_machine(
            mdir, partition=part, year=year, report=report, check_audio=check_audio
        )
    if not clips:
        report(
            root,
            "no audio clips found; expected <root>/{dev_data,eval_data}/raw/<machine>/{train,test}/ "
            "or <root>/<machine>/{train,test}/",
        )
    table = ClipTable(clips, report.problems)
    logger.info("scanned %s: %r", root, table)
    return table


from stetho.data.summary import format_summary  # noqa: E402  (re-export; it needs ClipTable only for typing)
