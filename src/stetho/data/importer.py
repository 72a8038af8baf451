# Over 500 lines: one import job with its validation; the hardening branch splits it.
"""Turn plain folders of recordings into a DCASE Task 2 tree that stetho can train on.

A plant engineer's recordings have arbitrary names (``pump/2026-03-01_0800.wav``). The pipeline
reads the DCASE layout, so :func:`import_recordings` links (or copies) each recording to::

    <out_root>/dev_data/raw/<machine>/train/section_<XX>_<domain>_train_normal_<NNNN>_<tail>.wav
    <out_root>/dev_data/raw/<machine>/test/section_<XX>_<domain>_test_<normal|anomaly>_<NNNN>_<tail>.wav
    <out_root>/dev_data/raw/<machine>/import_manifest.csv

``tail`` is the ``attributes`` text or ``noAttribute``; it is the proxy-class key of fine-tuning,
so it is constant per import and never derived from the original file name. Indices continue after
the clips already present, so repeated imports append; a recording whose content (SHA-256) is
already in the manifest is skipped. FLAC sources keep ``.flac``. The manifest maps every generated
name to its absolute source path, SHA-256, split, label, domain and section.

Example::

    import_recordings("data/pump", "pump", train=["recordings/"], test_anomaly=["faulty/"])
    # then: stetho train --data data/pump --out runs/pump
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stetho.data.audio import AudioError, audio_info
from stetho.data.names import ClipNameError, is_audio_file_name, parse_clip_name
from stetho.data.scan import scan_dataset
from stetho.utils.errors import StethoError
from stetho.utils.io import atomic_write, atomic_write_text

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "BadRecording",
    "ImportSummary",
    "ManifestEntry",
    "RecordingImportError",
    "import_recordings",
    "read_manifest",
    "run_import",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Mode = Literal["symlink", "copy"]
Domain = Literal["source", "target"]

#: File name of the manifest in ``<out_root>/dev_data/raw/<machine>/``.
MANIFEST_NAME = "import_manifest.csv"
#: Manifest columns, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "name", "split", "label", "domain", "section", "sha256", "source",
)  # fmt: skip

_MACHINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_ATTR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")
_SUPPORTED_YEARS = (2021, 2022, 2023, 2024, 2025)
_MAX_INDEX = 9999
# (split, label) of each group of sources, in the order they are imported
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("train", "train", "normal"),
    ("test_normal", "test", "normal"),
    ("test_anomaly", "test", "anomaly"),
)


class RecordingImportError(StethoError, ValueError):
    """Some recordings cannot be imported; nothing was written. ``bad`` lists them."""

    def __init__(self, message: str, bad: Sequence[BadRecording] = ()) -> None:
        super().__init__(message)
        self.bad: tuple[BadRecording, ...] = tuple(bad)


@dataclass(frozen=True)
class BadRecording:
    """A source file that cannot be imported and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class ManifestEntry:
    """One row of the import manifest.

    Attributes:
        name: Generated clip name (in ``train/`` or ``test/`` of the machine folder).
        split: "train" or "test".
        label: "normal" or "anomaly".
        domain: "source" or "target".
        section: Two-digit section.
        sha256: Hex SHA-256 of the source file's content.
        source: Absolute path of the source recording.
    """

    name: str
    split: str
    label: str
    domain: str
    section: str
    sha256: str
    source: Path


@dataclass(frozen=True)
class ImportSummary:
    """Outcome of :func:`run_import`.

    Attributes:
        root: Dataset root to train on (``stetho train --data ROOT``).
        machine_dir: ``<root>/dev_data/raw/<machine>``.
        manifest: The manifest CSV.
        mode: "symlink" or "copy".
        imported: Clips written by this call.
        already_imported: Sources skipped because their content is already in the dataset (or
            was given twice).
        bad: Sources left out with ``skip_bad=True`` (unreadable audio, not .wav/.flac, ...).
        total: All manifest entries after the import.
        notes: Warnings about the resulting machine folder (scan problems, test clips of one
            label only: then ``stetho train`` cannot evaluate).
    """

    root: Path
    machine_dir: Path
    manifest: Path
    mode: str
    imported: tuple[ManifestEntry, ...]
    already_imported: tuple[Path, ...]
    bad: tuple[BadRecording, ...]
    total: tuple[ManifestEntry, ...]
    notes: tuple[str, ...] = ()

    def counts(self, which: Literal["imported", "total"] = "imported") -> dict[str, int]:
        """Clip counts per ``"split/label"`` (e.g. ``{"train/normal": 10}``)."""
        rows = self.imported if which == "imported" else self.total
        return dict(sorted(Counter(f"{e.split}/{e.label}" for e in rows).items()))

    def format(self) -> str:
        """Short human-readable summary (what the CLI prints)."""
        verb = "linked" if self.mode == "symlink" else "copied"
        out = [f"{len(self.imported)} recording(s) {verb} into {self.machine_dir}"]
        new, tot = self.counts("imported"), self.counts("total")
        for key in sorted(set(new) | set(tot)):
            out.append(f"  {key:<13} +{new.get(key, 0):<5} (now {tot.get(key, 0)})")
        if self.already_imported:
            out.append(f"{len(self.already_imported)} already imported (skipped)")
        if self.bad:
            out.append(f"{len(self.bad)} unreadable file(s) skipped:")
            out += [f"  {b}" for b in self.bad]
        out += [f"note: {n}" for n in self.notes]
        out.append(f"manifest: {self.manifest}")
        out.append(
            f"train with: stetho train --data {self.root} --out runs/{self.machine_dir.name}"
        )
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------


def read_manifest(path: PathLike) -> list[ManifestEntry]:
    """Read an import manifest (empty list when the file does not exist).

    Raises:
        ValueError: The file lacks one of :data:`MANIFEST_COLUMNS`.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"malformed import manifest {path}: missing column(s) {', '.join(missing)}; "
                f"expected header {','.join(MANIFEST_COLUMNS)}"
            )
        return [
            ManifestEntry(
                name=row["name"],
                split=row["split"],
                label=row["label"],
                domain=row["domain"],
                section=row["section"],
                sha256=row["sha256"],
                source=Path(row["source"]),
            )
            for row in reader
        ]


def _write_manifest(path: Path, entries: Sequence[ManifestEntry]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for e in entries:
        writer.writerow([e.name, e.split, e.label, e.domain, e.section, e.sha256, str(e.source)])
    atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# collecting and checking sources
# ---------------------------------------------------------------------------------------------


def _as_list(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _walk_audio(folder: Path, exclude: Path) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted; hidden entries and ``exclude`` skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and (here / d).resolve() != exclude  # not our own output
        )
        found += [
            here / f for f in sorted(filenames) if not f.startswith(".") and is_audio_file_name(f)
        ]
    return found


def _collect(
    group: str, paths: Iterable[Path], exclude: Path, bad: list[BadRecording]
) -> list[Path]:
    """Resolved source files of one group; non-audio files given explicitly go to ``bad``."""
    out: list[Path] = []
    for p in paths:
        p = p.expanduser()
        if p.is_dir():
            files = _walk_audio(p, exclude)
            if not files:
                raise FileNotFoundError(
                    f"no .wav/.flac recordings found under {p} (given as {group.replace('_', '-')})"
                )
            out += [f.resolve() for f in files]
        elif p.is_file():
            if is_audio_file_name(p.name):
                out.append(p.resolve())
            else:
                bad.append(BadRecording(p.resolve(), "not a .wav or .flac file"))
        else:
            raise FileNotFoundError(f"recording or folder not found: {p}")
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _existing_max_index(machine_dir: Path) -> dict[tuple[str, str, str, str], int]:
    """Highest index per (section, domain, split, label) among the clips already present."""
    best: dict[tuple[str, str, str, str], int] = {}
    for split in ("train", "test"):
        folder = machine_dir / split
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            try:
                cn = parse_clip_name(entry.name)
            except ClipNameError:
                continue
            if cn.section is None or cn.domain is None or cn.label is None or cn.index is None:
                continue
            key = (cn.section, cn.domain, split, cn.label)
            best[key] = max(best.get(key, -1), int(cn.index))
    return best


def _validate(
    machine: str, section: str, domain: str, attributes: str | None, mode: str, year: int
) -> None:
    if "_" in machine:
        raise ValueError(
            f"invalid machine name {machine!r}: '_' is not allowed (the DCASE evaluator splits "
            f"result file names like anomaly_score_<machine>_section_00_test.csv on '_'); "
            f"use e.g. {machine.replace('_', '-')!r}"
        )
    if not _MACHINE_RE.fullmatch(machine):
        raise ValueError(
            f"invalid machine name {machine!r}: use letters, digits and '-' (e.g. 'pump-A')"
        )
    if not re.fullmatch(r"\d{2}", section):
        raise ValueError(f"invalid section {section!r}: expected two digits like '00'")
    if domain not in ("source", "target"):
        raise ValueError(f"invalid domain {domain!r}; valid: 'source', 'target'")
    if attributes is not None and not _ATTR_RE.fullmatch(attributes):
        raise ValueError(
            f"invalid attributes {attributes!r}: use letters, digits and _ . + = - "
            "(e.g. 'speed_1500'), starting with a letter or digit"
        )
    if mode not in ("symlink", "copy"):
        raise ValueError(f"invalid mode {mode!r}; valid: 'symlink', 'copy'")
    if year not in _SUPPORTED_YEARS:
        raise ValueError(
            f"year {year} not supported for imports; valid: {', '.join(map(str, _SUPPORTED_YEARS))}"
        )


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------


def _copy(src: Path, dest: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    with open(src, "rb") as fin, atomic_write(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            digest.update(chunk)
            fout.write(chunk)
        if digest.hexdigest() != sha256:
            raise OSError(f"{src} changed while it was being imported; run the import again")
    shutil.copystat(src, dest)


def run_import(
    out_root: PathLike,
    machine: str,
    *,
    train: PathLike | Iterable[PathLike],
    test_normal: PathLike | Iterable[PathLike] = (),
    test_anomaly: PathLike | Iterable[PathLike] = (),
    section: str = "00",
    domain: Domain = "source",
    attributes: str | None = None,
    mode: Mode = "symlink",
    check_audio: bool = True,
    skip_bad: bool = False,
    year: int = 2023,
) -> ImportSummary:
    """Import recordings into ``<out_root>/dev_data/raw/<machine>/`` and return a summary.

    Same arguments as :func:`import_recordings`, which returns only the dataset root.

    Raises:
        RecordingImportError: Unreadable / non-audio sources (each named with its cause) and
            ``skip_bad=False``; nothing is written.
        ValueError: Invalid arguments, a recording given both as train and as test (or as test
            normal and test anomaly), or content already imported under another split/label.
        FileNotFoundError: A given path does not exist, or a folder holds no recordings.
    """
    _validate(machine, section, domain, attributes, mode, year)
    root = Path(out_root).expanduser().absolute()
    machine_dir = root / "dev_data" / "raw" / machine
    manifest_path = machine_dir / MANIFEST_NAME
    tail = attributes if attributes is not None else "noAttribute"
    sources = {"train": train, "test_normal": test_normal, "test_anomaly": test_anomaly}

    bad: list[BadRecording] = []
    planned = _plan(sources, machine_dir, bad)  # 1. source files per (split, label)
    n_given = len(planned) + len(bad)  # bad so far: explicit non-audio files
    if not n_given:
        raise ValueError("nothing to import: pass train, test_normal and/or test_anomaly paths")
    hashed = _check_and_hash(planned, check_audio, bad)  # 2. audio checks, content hashes
    if bad and not skip_bad:
        raise RecordingImportError(
            f"{len(bad)} of {n_given} recording(s) cannot be imported (nothing was written; "
            "fix or remove them, or pass skip_bad=True / --skip-bad to import the others):\n"
            + "\n".join(f"  {b}" for b in bad),
            bad,
        )
    for b in bad:
        logger.warning("skipping unreadable recording %s", b)

    # 3. skip content already in the dataset; refuse content imported under another label
    listed = read_manifest(manifest_path)
    existing = [e for e in listed if os.path.lexists(_dest(machine_dir, e))]
    for e in listed:
        if e not in existing:
            logger.info("manifest entry %s: the clip was removed; dropping the entry", e.name)
    todo, dupes = _new_content(hashed, existing, domain, section)
    new = _name_new(todo, machine_dir, machine, section, domain, tail)  # 4. generated names
    total = existing + new
    written = _write(new, machine_dir, mode)  # 5. files, then the manifest (rolled back together)
    try:
        if new or len(existing) != len(listed):
            _write_manifest(manifest_path, total)
    except BaseException:
        _unlink_all(written)
        raise

    notes = _dataset_notes(machine_dir, year)
    summary = ImportSummary(
        root=root,
        machine_dir=machine_dir,
        manifest=manifest_path,
        mode=mode,
        imported=tuple(new),
        already_imported=tuple(dupes),
        bad=tuple(bad),
        total=tuple(total),
        notes=tuple(notes),
    )
    logger.info("imported into %s: %s", machine_dir, summary.counts())
    return summary


def _plan(
    sources: dict[str, PathLike | Iterable[PathLike]], machine_dir: Path, bad: list[BadRecording]
) -> list[tuple[Path, str, str]]:
    """``(source, split, label)`` of every recording; one file given twice is refused."""
    planned: list[tuple[Path, str, str]] = []
    seen: dict[Path, str] = {}
    conflicts: list[str] = []
    for group, split, label in _GROUPS:
        for src in _collect(group, _as_list(sources[group]), machine_dir.resolve(), bad):
            prev = seen.get(src)
            if prev is None:
                seen[src] = f"{split}/{label}"
                planned.append((src, split, label))
            elif prev != f"{split}/{label}":
                conflicts.append(f"  {src}: given as {prev} and as {split}/{label}")
    if conflicts:
        raise ValueError(
            "recordings given for more than one split/label (anomalies in a train folder?):\n"
            + "\n".join(conflicts)
        )
    return planned


def _check_and_hash(
    planned: list[tuple[Path, str, str]], check_audio: bool, bad: list[BadRecording]
) -> list[tuple[Path, str, str, str]]:
    """``(source, split, label, sha256)`` of the readable recordings; the others go to ``bad``.

    With ``check_audio``, headers are read and float-encoded files decoded (NaN/Inf refused).
    """
    hashed: list[tuple[Path, str, str, str]] = []
    rates: Counter[tuple[int, int]] = Counter()
    for src, split, label in planned:
        if check_audio:
            try:
                info = audio_info(src, check_samples=True)
            except AudioError as err:
                bad.append(BadRecording(src, str(err)))
                continue
            rates[(info.samplerate, info.channels)] += 1
        try:
            digest = _sha256(src)
        except OSError as err:
            bad.append(BadRecording(src, f"cannot read file: {err}"))
            continue
        hashed.append((src, split, label, digest))
    if len(rates) > 1:
        logger.warning(
            "recordings have different sample rates/channel counts %s; stetho resamples them to "
            "the model rate and uses channel 0",
            ", ".join(f"{n}x {r} Hz/{c} ch" for (r, c), n in sorted(rates.items())),
        )
    return hashed


def _new_content(
    hashed: list[tuple[Path, str, str, str]],
    existing: list[ManifestEntry],
    domain: Domain,
    section: str,
) -> tuple[list[tuple[Path, str, str, str]], list[Path]]:
    """Recordings whose content is not imported yet, and the already imported ones."""
    by_hash = {e.sha256: e for e in existing}
    dupes: list[Path] = []
    todo: list[tuple[Path, str, str, str]] = []
    for src, split, label, digest in hashed:
        prev_e = by_hash.get(digest)
        if prev_e is not None:
            if (prev_e.split, prev_e.label) != (split, label):
                raise ValueError(
                    f"{src} has the same content as {prev_e.source}, already imported as "
                    f"{prev_e.split}/{prev_e.label} ({prev_e.name}); it cannot also be "
                    f"{split}/{label}"
                )
            logger.info("%s already imported as %s; skipped", src, prev_e.name)
            dupes.append(src)
            continue
        by_hash[digest] = ManifestEntry("", split, label, domain, section, digest, src)
        todo.append((src, split, label, digest))
    return todo, dupes


def _name_new(
    todo: list[tuple[Path, str, str, str]],
    machine_dir: Path,
    machine: str,
    section: str,
    domain: Domain,
    tail: str,
) -> list[ManifestEntry]:
    """Manifest entries with generated names, indices after the existing ones."""
    next_index = {k: v + 1 for k, v in _existing_max_index(machine_dir).items()}
    new: list[ManifestEntry] = []
    for src, split, label, digest in todo:
        key = (section, domain, split, label)
        idx = next_index.get(key, 0)
        if idx > _MAX_INDEX:
            raise ValueError(
                f"more than {_MAX_INDEX + 1} {domain} {split}/{label} clips in section {section} "
                f"of {machine}: use another section for further recordings"
            )
        next_index[key] = idx + 1
        ext = ".flac" if src.suffix.lower() == ".flac" else ".wav"
        name = f"section_{section}_{domain}_{split}_{label}_{idx:04d}_{tail}{ext}"
        new.append(ManifestEntry(name, split, label, domain, section, digest, src))
    return new


def _unlink_all(paths: list[Path]) -> None:
    for dest in paths:
        dest.unlink(missing_ok=True)


def _write(new: list[ManifestEntry], machine_dir: Path, mode: Mode) -> list[Path]:
    """Link or copy the new recordings; all of them are removed again if one fails."""
    written: list[Path] = []
    try:
        for e in new:
            dest = _dest(machine_dir, e)
            if os.path.lexists(dest):
                raise FileExistsError(f"refusing to overwrite existing clip {dest}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if mode == "symlink":
                os.symlink(e.source, dest)
            else:
                _copy(e.source, dest, e.sha256)
            written.append(dest)
    except BaseException:
        _unlink_all(written)
        raise
    return written


def _dataset_notes(machine_dir: Path, year: int) -> list[str]:
    """Problems of the resulting dataset (scan problems, test sections lacking a label)."""
    notes: list[str] = []
    if machine_dir.is_dir():
        table = scan_dataset(machine_dir, year=year)
        notes += [f"dataset check: {p}" for p in table.problems]
        for sec in sorted({c.section for c in table.filter(split="test")}):
            labels = {c.label for c in table.filter(split="test", section=sec)}
            for have, missing in (("normal", "anomaly"), ("anomaly", "normal")):
                if labels == {have}:
                    notes.append(
                        f"section {sec} has {have} test recordings but no {missing} ones: an "
                        f"evaluation needs both (add test_{missing} / --test-{missing} recordings)"
                    )
    for note in notes:
        logger.warning("%s", note)
    return notes


def _dest(machine_dir: Path, e: ManifestEntry) -> Path:
    return machine_dir / e.split / e.name


def import_recordings(
    out_root: PathLike,
    machine: str,
    *,
    train: PathLike | Iterable[PathLike],
    test_normal: PathLike | Iterable[PathLike] = (),
    test_anomaly: PathLike | Iterable[PathLike] = (),
    section: str = "00",
    domain: Domain = "source",
    attributes: str | None = None,
    mode: Mode = "symlink",
    check_audio: bool = True,
    skip_bad: bool = False,
    year: int = 2023,
) -> Path:
    """Import plain recordings as a DCASE-layout dataset that ``stetho train`` reads.

    Args:
        out_root: Dataset root to create or extend (``<out_root>/dev_data/raw/<machine>/``).
        machine: Machine type, letters/digits/``-`` (no ``_``: DCASE evaluator convention).
        train: Normal recordings for training: files and/or folders (searched recursively for
            .wav/.flac; hidden entries skipped).
        test_normal: Normal recordings kept out of training for the evaluation.
        test_anomaly: Known-faulty recordings (test only).
        section: Two-digit section, e.g. one per physical machine of the same type.
        domain: ``"source"``, or ``"target"`` for recordings of a changed operating condition.
        attributes: Attribute tail of the generated names (the fine-tuning proxy class, e.g.
            ``"speed_1500"``); default ``noAttribute``. Never taken from the original names.
        mode: ``"symlink"`` (absolute links to the sources) or ``"copy"`` (atomic copies).
        check_audio: Open every header first (and decode float-encoded files to refuse NaN/Inf
            samples); unreadable or non-finite files are reported.
        skip_bad: Import the readable files and log the bad ones instead of failing.
        year: DCASE rules year of the dataset (2021–2025 share the generated name form).

    Returns:
        The dataset root (``stetho train --data ROOT``); :func:`run_import` returns details.

    Raises:
        RecordingImportError: Unreadable sources and ``skip_bad=False`` (nothing is written);
            the message names every bad file and its cause.
        ValueError: Invalid arguments or conflicting split/label assignments.
        FileNotFoundError: A path that does not exist or a folder without recordings.
    """
    return run_import(
        out_root,
        machine,
        train=train,
        test_normal=test_normal,
        test_anomaly=test_anomaly,
        section=section,
        domain=domain,
        attributes=attributes,
        mode=mode,
        check_audio=check_audio,
        skip_bad=skip_bad,
        year=year,
    ).root
