"""Response and request models of the API (Pydantic), with the examples ``/docs`` shows.

The same models are what :mod:`stetho.serving.views` returns to the server-rendered dashboard.
Times are ISO 8601 in UTC (``2026-01-31T12:00:00Z``); scores are raw (``score``, the detector's
own scale) and normalised (``normalised``: 0 = the median normal clip, 1.0 = the threshold, see
docs/thresholds.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AckRequest",
    "Alarm",
    "AlarmList",
    "DailyList",
    "Day",
    "DetectorInfo",
    "DetectorList",
    "ErrorBody",
    "Health",
    "Machine",
    "MachineList",
    "MachineState",
    "Responses",
    "ScoreHistory",
    "ScoreResult",
    "StoredScore",
    "WindowDetail",
    "WindowList",
    "WindowSummary",
]

#: The ``responses=`` of a route (OpenAPI documentation of its error answers).
Responses = dict[int | str, dict[str, Any]]

MachineState = Literal["alarm", "anomalous", "normal", "no threshold", "no scores yet"]

_T = "2026-01-31T12:00:00Z"


def _example(**fields: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [fields]})


class ErrorBody(BaseModel):
    """Every error: its message says what went wrong and what to do."""

    model_config = _example(error="unknown machine 'pump': nothing stored and no detector has it")
    error: str


class ScoreResult(BaseModel):
    """One scored upload (``POST /v1/score``)."""

    model_config = _example(
        id=42,
        time=_T,
        machine="fan",
        section="00",
        score=1.31,
        normalised=1.08,
        threshold=1.19,
        decision=1,
        seconds=10.0,
        source="fan_line2_0930.wav",
        detector="plant",
        detector_name="plant",
        detector_id="3f2c9a",
        detector_version=1,
        alarm=None,
        nearest_ref="/data/fan/train/section_00_source_train_normal_0012.wav",
        has_audio=True,
        audio_url="/v1/windows/42/audio",
    )
    id: int | None = Field(description="stored window id (None without a store)")
    time: datetime
    machine: str
    section: str
    score: float = Field(description="raw anomaly score (higher = more anomalous)")
    normalised: float | None = Field(description="0 = median normal clip, 1.0 = threshold")
    threshold: float | None
    decision: int | None = Field(description="1 anomalous, 0 normal, None without threshold")
    seconds: float
    source: str = Field(description="the upload's file name, 'http' when unnamed")
    detector: str = Field(description="served detector name (same as detector_name)")
    detector_name: str
    detector_id: str
    detector_version: int
    alarm: Literal["opened", "closed"] | None = Field(description="alarm event of this window")
    nearest_ref: str | None = Field(description="nearest normal bank clip (anomalous windows)")
    has_audio: bool
    audio_url: str | None = None


class DetectorKey(BaseModel):
    machine: str
    section: str


class DetectorInfo(BaseModel):
    """A served detector: name, identity, version, keys and thresholds (more fields by kind)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "name": "plant",
                    "id": "3f2c9a",
                    "version": 2,
                    "kind": "fewshot",
                    "path": "runs/plant/detector",
                    "keys": [{"machine": "fan", "section": "00"}],
                }
            ]
        },
    )
    name: str
    id: str
    version: int
    path: str
    keys: list[Any] = Field(default_factory=list)


class DetectorList(BaseModel):
    detectors: list[DetectorInfo]


class Health(BaseModel):
    model_config = _example(status="ok", detectors=["plant"], store=True, stetho_version="0.1.0")
    status: str
    detectors: list[str]
    store: bool
    stetho_version: str


class Alarm(BaseModel):
    """An alarm event: opened when k of the last n windows were anomalous."""

    model_config = _example(
        id=7,
        machine="fan",
        section="00",
        opened=_T,
        closed=None,
        windows=3,
        peak_normalised=1.42,
        detector_name="plant",
        acknowledged=True,
        ack_note="bearing noise, maintenance booked",
        ack_time="2026-01-31T12:05:00Z",
        peak_score=1.61,
        n_windows=3,
        detector_id="3f2c9a",
        detector_version=1,
    )
    id: int
    machine: str
    section: str
    opened: datetime
    closed: datetime | None
    windows: int = Field(description="anomalous windows counted by the alarm")
    peak_normalised: float | None
    detector_name: str
    acknowledged: bool
    ack_note: str | None
    ack_time: datetime | None
    peak_score: float = Field(description="highest raw score of its anomalous windows")
    n_windows: int = Field(description="same as windows (kept for older clients)")
    detector_id: str
    detector_version: int


class AlarmList(BaseModel):
    alarms: list[Alarm] = Field(description="newest first")


class AckRequest(BaseModel):
    model_config = _example(note="bearing noise, maintenance booked")
    note: str = Field("", max_length=2000, description="what was found or done")


class Machine(BaseModel):
    """Where a machine/section stands; every key a served detector knows is listed."""

    model_config = _example(
        machine="fan",
        section="00",
        state="normal",
        detector_name="plant",
        last_normalised=0.31,
        score=0.92,
        threshold=1.19,
        decision=0,
        time=_T,
        alarm_open=False,
        n_scores=1440,
        source="folder:/data/in/fan_0930.wav",
        detector_id="3f2c9a",
        detector_version=1,
        open_alarm=None,
    )
    machine: str
    section: str
    state: MachineState
    detector_name: str
    last_normalised: float | None
    score: float | None = Field(description="latest raw score")
    threshold: float | None
    decision: int | None
    time: datetime | None
    alarm_open: bool
    n_scores: int | None = Field(description="stored windows (None without a store)")
    source: str | None
    detector_id: str | None
    detector_version: int | None
    open_alarm: Alarm | None


class MachineList(BaseModel):
    machines: list[Machine]


#: The example window of every window model.
_WINDOW: dict[str, Any] = {
    "id": 42,
    "time": _T,
    "machine": "fan",
    "section": "00",
    "score": 1.31,
    "normalised": 1.08,
    "threshold": 1.19,
    "decision": 1,
    "source": "fan_line2_0930.wav",
    "detector_name": "plant",
    "detector_version": 1,
    "has_audio": True,
}


class WindowSummary(BaseModel):
    """One scored window (a stored row)."""

    model_config = _example(**_WINDOW)
    id: int | None
    time: datetime
    machine: str
    section: str
    score: float
    normalised: float | None
    threshold: float | None
    decision: int | None
    source: str
    detector_name: str
    detector_version: int
    has_audio: bool


class WindowDetail(WindowSummary):
    """One window with its nearest normal bank clip and the URLs of the kept audio."""

    model_config = _example(
        **_WINDOW,
        detector_id="3f2c9a",
        window_start=0.0,
        window_end=10.0,
        nearest_ref="/data/fan/train/section_00_source_train_normal_0012.wav",
        audio_url="/v1/windows/42/audio",
        nearest_audio_url="/v1/windows/42/nearest.wav",
    )
    detector_id: str
    window_start: float
    window_end: float
    nearest_ref: str | None = Field(description="path of the nearest normal bank clip")
    audio_url: str | None
    nearest_audio_url: str | None


class WindowList(BaseModel):
    windows: list[WindowSummary]


class StoredScore(BaseModel):
    """A stored window as ``/v1/machines/{machine}/scores`` lists it."""

    model_config = _example(
        id=42,
        time=_T,
        machine="fan",
        section="00",
        source="fan_line2_0930.wav",
        window_start=0.0,
        window_end=10.0,
        score=0.92,
        normalised=0.31,
        threshold=1.19,
        decision=0,
        detector_id="3f2c9a",
        detector_version=1,
        detector_name="plant",
    )
    id: int | None
    time: datetime
    machine: str
    section: str
    source: str
    window_start: float
    window_end: float
    score: float
    normalised: float | None
    threshold: float | None
    decision: int | None
    detector_id: str
    detector_version: int
    detector_name: str


class ScoreHistory(BaseModel):
    machine: str
    scores: list[StoredScore] = Field(description="oldest first")


class Day(BaseModel):
    model_config = _example(day="2026-01-31", n=1440, mean=0.81, max=1.31, n_anomalous=3)
    day: str
    n: int
    mean: float
    max: float
    n_anomalous: int


class DailyList(BaseModel):
    machine: str
    days: list[Day]
