"""Parse DCASE Task 2 clip file names (2020–2025) with the tolerant grammar of the protocol §1.3.

Accepted forms (``.wav`` or ``.flac``, extension case-insensitive):

* 2021–2025 train / dev test: ``section_XX_<source|target>_[train_|test_]<normal|anomaly>_NNNN[_tail]``
  (the split token is optional: 2024 eval RoboticArm omits it; the tail is opaque and may be
  ``noAttribute`` or empty with a trailing ``_``).
* 2021 eval test: ``section_XX_<source|target>_test_NNNN`` (label hidden).
* 2022–2025 anonymised eval test: ``section_XX_NNNN``.
* 2025 supplemental: ``section_XX_<prefix>_NNNN[_tail]`` with a prefix other than the domain, split
  and label words (e.g. ``machine``); the prefix is recorded in ``attributes``.
* 2020: ``<normal|anomaly>_id_XX_NNNNNNNN`` (dev) and ``id_XX_NNNNNNNN`` (eval test).

Nothing is ever inferred from the index.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal, cast

from stetho.utils.errors import StethoError

__all__ = [
    "AUDIO_EXTENSIONS",
    "CLIP_NAME_PATTERNS",
    "ClipName",
    "ClipNameError",
    "Key",
    "PlacementError",
    "as_key",
    "is_audio_file_name",
    "normalize_section",
    "parse_clip_name",
    "place_file",
]

#: (machine, section), e.g. ("fan", "00"): the key of every per-section model, score and threshold.
Key = tuple[str, str]


def as_key(key: Key | str) -> Key:
    """A ``(machine, section)`` key from a tuple or a ``"machine/section"`` string.

    Raises:
        ValueError: a string without ``/``.
    """
    if isinstance(key, str):
        machine, _, section = key.rpartition("/")
        if not machine:
            raise ValueError(f"expected a (machine, section) key or 'machine/section', got {key!r}")
        return (machine, section)
    return (str(key[0]), str(key[1]))


def normalize_section(section: str | int) -> str:
    """``"0"``, ``0``, ``"section_00"`` → ``"00"``; other strings are returned unchanged."""
    s = str(section).strip()
    if s.lower().startswith("section_"):
        s = s[len("section_") :]
    return s.zfill(2) if s.isdigit() and len(s) < 2 else s


Domain = Literal["source", "target"]
Label = Literal["normal", "anomaly"]
Split = Literal["train", "test"]
Style = Literal["dcase2021+", "anonymous", "dcase2020", "dcase2025-supplemental"]

#: File extensions (lower case) accepted as audio clips.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")

#: Human-readable list of the accepted name forms (used in error messages).
CLIP_NAME_PATTERNS: tuple[str, ...] = (
    "section_XX_<source|target>_[train_|test_]<normal|anomaly>_NNNN[_<attributes>].wav  (2021-2025)",
    "section_XX_<source|target>_test_NNNN.wav  (2021 eval test, label hidden)",
    "section_XX_NNNN.wav  (2022-2025 anonymised eval test)",
    "section_XX_<prefix>_NNNN[_<tail>].wav  (2025 supplemental, e.g. section_00_machine_0001_.wav)",
    "<normal|anomaly>_id_XX_NNNNNNNN.wav  (2020 dev)",
    "id_XX_NNNNNNNN.wav  (2020 eval test)",
)

_RESERVED = frozenset({"source", "target", "train", "test", "normal", "anomaly"})

# 2021–2025 labelled form; the split token is optional (2024 eval RoboticArm).
_RE_LABELLED = re.compile(
    r"section_(?P<sec>\d{2})_(?P<domain>source|target)_(?:(?P<split>train|test)_)?"
    r"(?P<label>normal|anomaly)_(?P<idx>\d{4})(?:_(?P<attrs>.*))?"
)
# 2021 eval test: domain known, label hidden.
_RE_2021_EVAL = re.compile(r"section_(?P<sec>\d{2})_(?P<domain>source|target)_test_(?P<idx>\d{4})")
# 2022–2025 anonymised eval test.
_RE_ANON = re.compile(r"section_(?P<sec>\d{2})_(?P<idx>\d{4})")
# 2025 supplemental: a free prefix word instead of the domain.
_RE_SUPPL = re.compile(
    r"section_(?P<sec>\d{2})_(?P<prefix>[A-Za-z][A-Za-z0-9-]*)_(?P<idx>\d{4})(?:_(?P<attrs>.*))?"
)
# 2020 dev (labelled) and eval (unlabelled).
_RE_2020 = re.compile(r"(?:(?P<label>normal|anomaly)_)?id_(?P<sec>\d{2})_(?P<idx>\d{8})")


class ClipNameError(StethoError, ValueError):
    """A file name that matches none of the accepted DCASE clip-name forms."""


@dataclass(frozen=True)
class ClipName:
    """Everything a DCASE clip file name says about the clip.

    Attributes:
        name: Base name including the extension.
        section: Two-digit section ("00".."06"); for 2020 names the machine id ("04").
        domain: "source"/"target", or None when the name does not carry it.
        label: "normal"/"anomaly", or None when hidden.
        split: "train"/"test" only when the token is present in the name.
        index: The NNNN (or 8-digit 2020) index as text; carries no meaning.
        attributes: Opaque attribute tail (e.g. "car_A2_spd_28V" or "noAttribute"); None when
            absent or empty. For 2025 supplemental clips: the prefix (e.g. "machine"), followed by
            "_<tail>" when a tail is present.
        style: Which name family matched.
    """

    name: str
    section: str | None
    domain: Domain | None
    label: Label | None
    split: Split | None
    index: str | None
    attributes: str | None
    style: Style


def _split_extension(name: str) -> tuple[str, str]:
    lower = name.lower()
    for ext in AUDIO_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext) :]
    return name, ""


def is_audio_file_name(name: str | os.PathLike[str]) -> bool:
    """True when the base name ends with an accepted audio extension (case-insensitive)."""
    return _split_extension(PurePath(name).name)[1] != ""


def _error(name: str, why: str) -> ClipNameError:
    patterns = "\n  ".join(CLIP_NAME_PATTERNS)
    return ClipNameError(
        f"cannot parse clip file name {name!r}: {why}. Accepted forms (.wav or .flac):\n  {patterns}"
    )


def parse_clip_name(name: str | os.PathLike[str]) -> ClipName:
    """Parse a DCASE clip file name (a base name or a path; only the base name is used).

    Args:
        name: File name such as ``section_00_source_test_anomaly_0012_car_A2_spd_28V.wav``.

    Returns:
        The parsed :class:`ClipName`.

    Raises:
        ClipNameError: The name matches none of :data:`CLIP_NAME_PATTERNS`; the message names the
            file and lists the accepted forms.
    """
    base = PurePath(name).name if not isinstance(name, str) else re.split(r"[\\/]", name)[-1]
    stem, ext = _split_extension(base)
    if not ext:
        raise _error(base, "expected a .wav or .flac extension")

    if m := _RE_LABELLED.fullmatch(stem):
        return ClipName(
            name=base,
            section=m["sec"],
            domain=cast(Domain, m["domain"]),
            label=cast(Label, m["label"]),
            split=cast(Split | None, m["split"]),
            index=m["idx"],
            attributes=m["attrs"] or None,
            style="dcase2021+",
        )
    if m := _RE_2021_EVAL.fullmatch(stem):
        return ClipName(
            name=base,
            section=m["sec"],
            domain=cast(Domain, m["domain"]),
            label=None,
            split="test",
            index=m["idx"],
            attributes=None,
            style="dcase2021+",
        )
    if m := _RE_ANON.fullmatch(stem):
        return ClipName(
            name=base,
            section=m["sec"],
            domain=None,
            label=None,
            split=None,
            index=m["idx"],
            attributes=None,
            style="anonymous",
        )
    if (m := _RE_SUPPL.fullmatch(stem)) and m["prefix"].lower() not in _RESERVED:
        attrs = m["prefix"] + (f"_{m['attrs']}" if m["attrs"] else "")
        return ClipName(
            name=base,
            section=m["sec"],
            domain=None,
            label=None,
            split=None,
            index=m["idx"],
            attributes=attrs,
            style="dcase2025-supplemental",
        )
    if m := _RE_2020.fullmatch(stem):
        return ClipName(
            name=base,
            section=m["sec"],
            domain=None,
            label=cast(Label | None, m["label"]),
            split=None,
            index=m["idx"],
            attributes=None,
            style="dcase2020",
        )
    raise _error(base, "the name matches no DCASE Task 2 clip-name form")


class PlacementError(StethoError, ValueError):
    """The (machine, section) of a file is unknown to the detector or cannot be inferred."""


def _fmt_keys(keys: Sequence[Key]) -> str:
    return ", ".join(f"{m}/{s}" for m, s in keys) or "none"


def place_file(
    path: str | os.PathLike[str],
    keys: Sequence[Key],
    machine: str | None = None,
    section: str | None = None,
) -> Key:
    """The (machine, section) an audio file belongs to: the one rule of every command.

    In order: the values given; the detector's only key; the machine from the nearest enclosing
    folder named like one of the detector's machines (``<machine>/test/…``), else its only
    machine; the section from a DCASE file name, else that machine's only section.

    Args:
        path: The audio file.
        keys: The detector's (machine, section) keys.
        machine, section: Given values (either may be None).

    Raises:
        PlacementError: the key cannot be inferred or the detector has no model for it; the
            message names the file and lists the detector's keys.
    """
    p = Path(path)
    keys = [(str(m), str(s)) for m, s in keys]
    sec = normalize_section(section) if section is not None else None
    if machine is None and sec is None and len(keys) == 1:
        return keys[0]
    machines = sorted({m for m, _ in keys})
    if machine is None:
        machine = next((part.name for part in p.parents if part.name in machines), None)
        if machine is None and len(machines) == 1:
            machine = machines[0]
    if sec is None:
        try:
            sec = parse_clip_name(p.name).section
        except ClipNameError:
            sections = sorted({s for m, s in keys if m == machine})
            sec = sections[0] if len(sections) == 1 else None
    if machine is None or sec is None:
        missing = " and ".join(w for w, v in (("machine", machine), ("section", sec)) if v is None)
        raise PlacementError(
            f"{p}: cannot infer the {missing} (expected a DCASE layout such as "
            f"<machine>/test/section_XX_….wav); pass --machine and --section. The detector "
            f"knows: {_fmt_keys(keys)}"
        )
    key = (str(machine), sec)
    if key not in keys:
        raise PlacementError(
            f"{p}: the detector has no model for machine {key[0]!r} section {key[1]!r}; it "
            f"knows: {_fmt_keys(keys)} (pass --machine/--section or a detector fitted on it)"
        )
    return key
