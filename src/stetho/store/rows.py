"""Row types of the score-history store (plain frozen dataclasses, no database code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stetho.utils.errors import StethoError

__all__ = [
    "MAX_TIME",
    "MIN_TIME",
    "AlarmRow",
    "MachineState",
    "ScoreRow",
    "ScoredWindow",
    "StoreError",
    "as_utc",
    "utc_now",
]


class StoreError(StethoError, RuntimeError):
    """The score store cannot be opened, migrated or written (the message says what to do)."""

    exit_code = 1
    http_status = 503


class StoreUnreachableError(StoreError):
    """The database server did not answer (it may still be starting): worth waiting for."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


#: The earliest and latest times the store can hold (what :func:`as_utc` clamps to).
MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)


def as_utc(value: datetime, what: str = "time") -> datetime:
    """``value`` converted to UTC; naive datetimes are refused (ambiguous wall-clock time).

    A time whose UTC equivalent lies outside years 1..9999 (``0001-01-01T00:00+14:00`` is
    still 31 December of year 0 in UTC) is clamped to :data:`MIN_TIME` / :data:`MAX_TIME`:
    as a range bound it means "from the beginning" / "until the end".

    Raises:
        ValueError: ``value`` has no time zone.
    """
    offset = value.utcoffset() if value.tzinfo is not None else None
    if offset is None:
        raise ValueError(
            f"{what} {value.isoformat()} has no time zone; pass an aware datetime, e.g. "
            "datetime.now(datetime.UTC)"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return MIN_TIME if offset > timedelta(0) else MAX_TIME


@dataclass(frozen=True)
class ScoreRow:
    """One scored window: the one record type of a score, from the detector to the store.

    ``stetho serve`` (HTTP uploads), ``stetho monitor`` (every source) and ``stetho detect --db``
    build these; the store writes and reads them; the API and the dashboard show them.

    Attributes:
        time: When the window was recorded/scored (aware; stored as UTC).
        machine, section: What was scored (section as ``"00"``).
        source: Where the audio came from: the upload's file name (multipart file name or
            ``?name=``), the recording's path (monitor folder/WAV source, ``detect --db``) or the
            stream's name (``stdin``, a sound card); ``"http"`` for an unnamed upload.
        window_start, window_end: Window bounds in seconds from the start of the source
            recording/stream.
        score: Raw anomaly score (higher = more anomalous).
        threshold: Decision threshold in force, or None.
        decision: 1 anomalous, 0 normal, None without a threshold.
        detector_id, detector_version: Which detector version produced the score.
        id: Database id (None before the row is stored).
        detector_name: The name the detector is served under (``--detector NAME=DIR``).
        normalised: ``detector.normalise(score)``: 0 = the median normal clip, 1.0 = the
            threshold (docs/thresholds.md); None when the detector has none for the key.
        nearest_ref: Path of the normal bank clip nearest to the window (as the detector
            recorded it), or None.
        audio: File name of the window's audio kept in the store's audio folder, or None.
        nearest_audio: File name of the copy of ``nearest_ref`` kept there, or None.
    """

    time: datetime
    machine: str
    section: str
    source: str
    window_start: float
    window_end: float
    score: float
    threshold: float | None
    decision: int | None
    detector_id: str
    detector_version: int
    id: int | None = None
    detector_name: str = ""
    normalised: float | None = None
    nearest_ref: str | None = None
    audio: str | None = None
    nearest_audio: str | None = None


#: The one record type of a scored window (the store's name for it is :class:`ScoreRow`).
ScoredWindow = ScoreRow


@dataclass(frozen=True)
class AlarmRow:
    """One alarm event of a (machine, section).

    Attributes:
        id: Database id.
        machine, section: The alarming machine.
        opened: Time of the window that opened the alarm.
        closed: Time of the window that closed it (None while open).
        peak_score: Highest score of the anomalous windows counted by the alarm.
        n_windows: Anomalous windows counted: those in the opening history plus every anomalous
            window while open.
        detector_id, detector_version: Detector of the window that opened the alarm.
        detector_name: The served name of that detector ("" when unknown).
        peak_normalised: Highest normalised score of those windows (None when unknown).
        ack_time: When the alarm was acknowledged (None: not yet).
        ack_note: The note given with the acknowledgement.
    """

    id: int
    machine: str
    section: str
    opened: datetime
    closed: datetime | None
    peak_score: float
    n_windows: int
    detector_id: str
    detector_version: int
    detector_name: str = ""
    peak_normalised: float | None = None
    ack_time: datetime | None = None
    ack_note: str | None = None

    @property
    def acknowledged(self) -> bool:
        """Whether someone acknowledged the alarm."""
        return self.ack_time is not None


@dataclass(frozen=True)
class MachineState:
    """Where a (machine, section) stands: its latest score, open alarm and number of scores."""

    machine: str
    section: str
    last: ScoreRow | None
    open_alarm: AlarmRow | None
    n_scores: int
