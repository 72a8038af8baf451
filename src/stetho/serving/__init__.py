"""Serving: a saved detector scores files and folders, live streams and HTTP requests.

>>> det = Detector.load("runs/x/detector")                                 # doctest: +SKIP
>>> print(format_records(score_paths(det, ["recordings/"])))               # doctest: +SKIP
>>> for ev in score_pcm_stream(sys.stdin.buffer, 16000, detector=det, machine="fan",
...                            section="00"): print(ev)                   # doctest: +SKIP
>>> serve(det, "127.0.0.1", 8000)                                          # doctest: +SKIP

The HTTP service (``stetho serve``: API, dashboard, metrics) is :func:`create_app` over a
:class:`ScoringService`, run by :func:`run_server` or :class:`BackgroundServer`; see
``docs/service.md``.
"""

from stetho.serving.api import create_app
from stetho.serving.decode import RequestError, decode_pcm, decode_upload
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
from stetho.serving.registry import DetectorEntry, DetectorRegistry, parse_detector_spec
from stetho.serving.server import BackgroundServer, bind_socket, run_server, serve
from stetho.serving.service import ScoringService, ServiceLimits
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
    "BackgroundServer",
    "DetectorEntry",
    "DetectorRegistry",
    "KeyResolutionError",
    "RequestError",
    "ScoreRecord",
    "ScoringService",
    "ServiceLimits",
    "StreamEvent",
    "StreamScorer",
    "bind_socket",
    "create_app",
    "decode_pcm",
    "decode_upload",
    "expand_paths",
    "format_records",
    "parse_detector_spec",
    "resolve_key",
    "run_server",
    "score_paths",
    "score_pcm_stream",
    "serve",
    "write_records_csv",
]
