"""Proxy-task classes for ArcFace fine-tuning: one class per (machine, section, attributes).

The paper trains the backbone to classify *normal training* clips by their machine type, section
and attribute combination (the opaque attribute tail of the file name, e.g. ``car_A2_spd_28V``).
Clips without attributes (``None`` or the literal ``noAttribute``) fall back to one class per
(machine, section). Class ids are strings ``"machine/section/attributes"`` (or
``"machine/section"``), sorted, and the map is a :class:`~stetho.utils.config.ConfigBase` so it is
stored with the model as JSON::

    cmap = build_class_map(table.filter(split="train"))
    y = cmap.index(clip)            # int in [0, len(cmap))
    cmap.save("classes.json")
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, cast

from stetho.utils.config import ConfigBase
from stetho.utils.errors import StethoError

__all__ = [
    "NO_ATTRIBUTE",
    "ClassMap",
    "ClipLike",
    "UnknownClassError",
    "build_class_map",
    "class_id",
]

#: Attribute tail that DCASE uses for clips without attributes.
NO_ATTRIBUTE = "noAttribute"


class ClipLike(Protocol):
    """The fields of :class:`stetho.data.Clip` that the class map reads."""

    @property
    def name(self) -> str: ...
    @property
    def machine(self) -> str: ...
    @property
    def section(self) -> str: ...
    @property
    def attributes(self) -> str | None: ...


class UnknownClassError(StethoError, LookupError):
    """A clip's (machine, section, attributes) combination is not in the class map."""

    http_status = 404


def class_id(clip: ClipLike) -> str:
    """The proxy class id of a clip: ``"machine/section/attributes"`` or ``"machine/section"``.

    Clips whose attributes are ``None``, empty or ``noAttribute`` use ``"machine/section"``.
    """
    attrs = clip.attributes
    if attrs is None or attrs.strip("_") == "" or attrs == NO_ATTRIBUTE:
        return f"{clip.machine}/{clip.section}"
    return f"{clip.machine}/{clip.section}/{attrs}"


@dataclass
class ClassMap(ConfigBase):
    """Sorted list of proxy class ids; ``index(clip)`` gives the integer label.

    Attributes:
        classes: Class ids ``"machine/section[/attributes]"``, sorted and unique.
    """

    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if dup:
            raise ValueError(f"class map has duplicate class ids: {dup}")
        self._lookup: dict[str, int] = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.classes)

    def _table(self) -> dict[str, int]:
        # Rebuild if someone edited ``classes`` in place after construction.
        if len(self._lookup) != len(self.classes):
            self._lookup = {c: i for i, c in enumerate(self.classes)}
        return self._lookup

    def index(self, clip: ClipLike) -> int:
        """Integer label of a clip.

        Raises:
            UnknownClassError: the clip's combination was not among the training classes; the
                message lists the known classes of the clip's (machine, section).
        """
        cid = class_id(clip)
        table = self._table()
        if cid in table:
            return table[cid]
        prefix = f"{clip.machine}/{clip.section}"
        known = [c for c in self.classes if c == prefix or c.startswith(prefix + "/")]
        raise UnknownClassError(
            f"clip {clip.name!r}: class {cid!r} is not one of the {len(self.classes)} training "
            f"classes (unseen machine/section/attribute combination); known classes for "
            f"{prefix}: {known if known else 'none'}"
        )

    def __contains__(self, clip: object) -> bool:
        if isinstance(clip, str):
            return clip in self._table()
        return class_id(cast(ClipLike, clip)) in self._table()

    def name(self, index: int) -> str:
        """Class id of an integer label."""
        return self.classes[index]


def build_class_map(clips: Iterable[ClipLike]) -> ClassMap:
    """Build the class map from training clips.

    Args:
        clips: The *training* clips (normal sounds). Clips whose ``split`` is ``"test"`` are
            refused, so test labels can never leak into the proxy task.

    Returns:
        A :class:`ClassMap` with one sorted class per (machine, section, attribute combination);
        clips without attributes map to (machine, section).

    Raises:
        ValueError: no clips, or a test clip was given.
    """
    ids: set[str] = set()
    n = 0
    for clip in clips:
        if getattr(clip, "split", None) == "test":
            raise ValueError(
                f"build_class_map expects training clips only, got test clip {clip.name!r}; "
                "pass e.g. table.filter(split='train')"
            )
        ids.add(class_id(clip))
        n += 1
    if n == 0:
        raise ValueError("build_class_map needs at least one training clip, got none")
    return ClassMap(classes=sorted(ids))
