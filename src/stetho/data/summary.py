"""A readable inventory of a scanned dataset (``stetho data scan``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stetho.data.scan import ClipTable

__all__ = ["format_summary"]


def format_summary(table: ClipTable, *, max_problems: int = 20) -> str:
    """Readable inventory: one line per (partition, machine, section, split) + the problems.

    Columns: clip counts by domain, by label, by (domain, label), clips without label, and the
    clip length in seconds ("?" unless scanned with ``check_audio=True``).
    """
    rows = table.summary()
    cols: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("partition", "<", lambda r: r["partition"]),
        ("machine", "<", lambda r: r["machine"]),
        ("sec", "<", lambda r: r["section"]),
        ("split", "<", lambda r: r["split"]),
        ("clips", ">", lambda r: str(r["clips"])),
        ("source", ">", lambda r: str(r["source"])),
        ("target", ">", lambda r: str(r["target"])),
        ("normal", ">", lambda r: str(r["normal"])),
        ("anomaly", ">", lambda r: str(r["anomaly"])),
        ("src N", ">", lambda r: str(r["source_normal"])),
        ("src A", ">", lambda r: str(r["source_anomaly"])),
        ("tgt N", ">", lambda r: str(r["target_normal"])),
        ("tgt A", ">", lambda r: str(r["target_anomaly"])),
        ("no label", ">", lambda r: str(r["label_hidden"])),
        (
            "seconds",
            ">",
            lambda r: (
                "?"
                if r["seconds_min"] is None
                else (
                    f"{r['seconds_min']:.2f}"
                    if abs(r["seconds_max"] - r["seconds_min"]) < 1e-9
                    else f"{r['seconds_min']:.2f}-{r['seconds_max']:.2f}"
                )
            ),
        ),
    ]
    cells = [[fn(r) for _, _, fn in cols] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            f"{v:{a}{w}}" for v, (_, a, _), w in zip(values, cols, widths, strict=True)
        ).rstrip()

    out = [line([h for h, _, _ in cols]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    years = sorted({str(c.year) for c in table if c.year is not None})
    out.append(
        f"{len(table)} clips, {len(table.machines())} machine types, "
        f"{len(table.sections())} sections"
        + (f", year {'/'.join(years)}" if years else ", year unknown")
    )
    if table.problems:
        out.append(f"{len(table.problems)} problem(s):")
        out += [f"  {p}" for p in table.problems[:max_problems]]
        if len(table.problems) > max_problems:
            out.append(f"  ... and {len(table.problems) - max_problems} more")
    else:
        out.append("no problems")
    return "\n".join(out)
