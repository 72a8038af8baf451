"""The period the dashboard shows, and how it picks it.

The dashboard's records are the JSON API's own models (:mod:`stetho.serving.api.models`:
``Machine``, ``WindowSummary``, ``WindowDetail``, ``Alarm``), read through the service's views
(:mod:`stetho.serving.views`), so that the page and the API never disagree.

The default period is fitted to the data: from the first to the last window scored in the week
before the latest one (to now while scores are still coming in; at least 20 s; 3 % margins), so that
a few minutes of scores fill the chart instead of being squeezed into one line of a 24 h axis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stetho.utils.errors import InputError

__all__ = [
    "PRESETS",
    "Period",
    "choose_period",
    "parse_time",
]


def parse_time(value: Any, name: str = "time") -> datetime:
    """An aware UTC datetime from a datetime or an ISO 8601 string (naive: UTC).

    Raises:
        InputError: not a time.
    """
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(
                f"{name}={value!r} is not a time: use ISO 8601, e.g. 2026-01-31T12:00 (UTC)"
            ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)


# -- the period shown ----------------------------------------------------------------------------
#: Range presets of the page: name → (label, length; None = fitted to the data).
PRESETS: dict[str, tuple[str, timedelta | None]] = {
    "fit": ("all data", None),
    "1h": ("last hour", timedelta(hours=1)),
    "1d": ("last day", timedelta(days=1)),
    "7d": ("last week", timedelta(days=7)),
}
_FIT_LOOKBACK = timedelta(days=7)  # a fitted period covers at most the week before the latest
_MIN_SPAN = timedelta(seconds=20)  # a fitted period is never shorter (not in the paper)


@dataclass(frozen=True)
class Period:
    """The time range the page shows and how it was chosen."""

    start: datetime
    end: datetime
    preset: str  # a key of PRESETS or "custom"
    note: str = ""

    @property
    def label(self) -> str:
        """Words for the period, e.g. ``last hour`` or ``all data``."""
        return PRESETS[self.preset][0] if self.preset in PRESETS else "custom"


def choose_period(
    preset: str | None,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    data_times: Iterable[datetime] = (),
) -> Period:
    """The period to show.

    Args:
        preset: ``fit`` (default), ``1h``, ``1d``, ``7d`` or ``custom``.
        start, end: The custom range (either may be missing: the other end of the data or now).
        now: The current time (aware).
        data_times: Times of the stored windows (any order); used by ``fit`` and to fill a
            missing custom bound.

    Raises:
        InputError: an unknown preset or a custom range that ends before it starts.
    """
    preset = preset or ("custom" if (start or end) else "fit")
    if preset not in PRESETS and preset != "custom":
        raise InputError(
            f"range={preset!r} is unknown: use one of {', '.join(PRESETS)} or custom (with from/to)"
        )
    length = PRESETS.get(preset, ("", None))[1]
    if length is not None:
        return Period(now - length, now, preset)
    times = sorted(t for t in data_times if t is not None)
    if preset == "custom":
        lo = start or (times[0] if times else now - timedelta(days=1))
        hi = end or now
        if hi <= lo:
            raise InputError(
                f"the range ends ({hi:%Y-%m-%d %H:%M} UTC) before it starts "
                f"({lo:%Y-%m-%d %H:%M} UTC): pick a 'to' after 'from'"
            )
        return Period(lo, hi, "custom")
    if not times:
        return Period(now - timedelta(days=1), now, "fit", "no scores yet: showing the last day")
    last = times[-1]
    first = next(t for t in times if t >= last - _FIT_LOOKBACK)
    if timedelta(0) <= now - last <= max((last - first) / 4, _MIN_SPAN / 2):
        last = now  # scores are still coming: the period runs to now
    span = max(last - first, _MIN_SPAN)
    margin = span * 0.03
    note = "older scores exist: pick a custom range to see them" if first > times[0] else ""
    return Period(last - span - margin, last + margin, "fit", note)
