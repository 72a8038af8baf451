"""Serving: a saved detector scores files and folders, live streams and HTTP requests.

>>> det = Detector.load("runs/x/detector")                                 # doctest: +SKIP
>>> print(format_records(score_paths(det, ["recordings/"])))               # doctest: +SKIP
>>> for ev in score_pcm_stream(sys.stdin.buffer, 16000, detector=det, machine="fan",
...                            section="00"): print(ev)                   # doctest: +SKIP
>>> serve(det, "127.0.0.1", 8000)                                          # doctest: +SKIP
"""

from stetho.serving.files import (
    CSV_COLUMNS,
    KeyResolutionError,
    ScoreRecord,
    expand_paths,
    format_records,
    resolve_key,
    score_paths,
    write_records_csv,
)
from stetho.serving.http import ScoringHTTPServer, make_server, serve
from stetho.serving.stream import (
    DEFAULT_WINDOW_SECONDS,
    PCM_DTYPES,
    StreamEvent,
    StreamScorer,
    score_pcm_stream,
)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_WINDOW_SECONDS",
    "PCM_DTYPES",
    "KeyResolutionError",
    "ScoreRecord",
    "ScoringHTTPServer",
    "StreamEvent",
    "StreamScorer",
    "expand_paths",
    "format_records",
    "make_server",
    "resolve_key",
    "score_paths",
    "score_pcm_stream",
    "serve",
    "write_records_csv",
]
