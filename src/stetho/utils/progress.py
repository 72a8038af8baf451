"""One progress bar for long work: shown on a terminal, silent in logs and pipes.

::

    from stetho.utils.progress import progress_bar

    for item in progress_bar(items, desc="embedding"):
        ...
    with progress_bar(total=n, desc="embedding") as bar:
        bar.update(1)

``tqdm`` with ``disable=None`` (off when stderr is not a terminal, so a log file or a CI job
gets no half-drawn ``0%|`` lines), ``leave=False`` and the terminal's width.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    initial: int = 0,
    **kwargs: Any,
) -> Any:
    """A ``tqdm`` bar shown on terminals only (extra ``kwargs`` go to ``tqdm``, e.g. ``unit``)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", None)
    return tqdm(iterable, total=total, desc=desc, initial=initial, leave=False,
                dynamic_ncols=True, **kwargs)  # fmt: skip
