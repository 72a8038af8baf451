"""The one progress bar: drawn on terminals, silent in logs and pipes."""

from __future__ import annotations

import io

import pytest

from stetho.utils.progress import progress_bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize("tty", [False, True])
def test_bar_draws_on_a_terminal_only(tty: bool) -> None:
    out = _Stream(tty)
    with progress_bar(total=3, desc="embedding", file=out) as bar:
        for _ in range(3):
            bar.update(1)
    drawn = out.getvalue()
    assert ("embedding" in drawn) is tty  # a log file gets no half-drawn "0%|" line
    assert list(progress_bar(range(3), desc="x", file=_Stream(False))) == [0, 1, 2]


def test_a_caller_can_still_switch_it_off_on_a_terminal() -> None:
    out = _Stream(True)
    with progress_bar(total=2, desc="download", file=out, disable=True) as bar:
        bar.update(2)
    assert out.getvalue() == ""
