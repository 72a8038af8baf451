"""A small HTTP scoring service on the standard library (``http.server``).

::

    server = make_server(det, "127.0.0.1", 8000)        # port=0 picks a free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # curl --data-binary @clip.wav "http://127.0.0.1:8000/score?machine=fan&section=00"
    server.shutdown(); server.server_close()

    serve(det, "127.0.0.1", 8000)                       # blocking, Ctrl-C stops it

Endpoints:

* ``GET /health`` → ``{"status": "ok"}``
* ``GET /info`` → keys, thresholds, backbone, sample rate, stetho version
* ``POST /score?machine=…&section=…`` with a WAV/FLAC body → ``{score, decision, threshold,
  machine, section, seconds}``; ``machine``/``section`` may be left out when the detector has a
  single key.

Errors are JSON ``{"error": "…"}`` with a 4xx status naming the problem: missing parameters
(400), unknown machine/section listing the valid ones (404), undecodable, empty or unscorable
(e.g. too short) audio (400), missing Content-Length (411), body too large (413), unknown path
(404), wrong method (405).
Requests are scored one at a time (a lock serialises model access). Bind to ``127.0.0.1`` unless
the service must be reachable from other machines; there is no authentication.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

import stetho
from stetho.data.names import normalize_section
from stetho.scoring.threshold import decide

if TYPE_CHECKING:
    from stetho.detector.scorer import Scorer

__all__ = ["ScoringHTTPServer", "make_server", "serve"]

logger = logging.getLogger(__name__)

#: Unused request bodies up to this size are read and dropped before an error reply.
_DRAIN_LIMIT = 64 * 2**20


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ScoringHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` that holds the detector, a scoring lock and the body limit."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], detector: Scorer, max_body_bytes: int) -> None:
        self.detector = detector
        self.max_body_bytes = max_body_bytes
        self.lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def _keys_text(detector: Scorer) -> str:
    return ", ".join(f"{m}/{s}" for m, s in detector.keys) or "none"


def _info(detector: Scorer) -> dict[str, Any]:
    return detector.describe()


def _decode(body: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not body:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, "empty request body: send a WAV or FLAC file")
    try:
        data, rate = sf.read(io.BytesIO(body), dtype="float32", always_2d=True)  # (N, C)
    except Exception as err:  # soundfile raises several types for garbage input
        raise _HTTPError(
            HTTPStatus.BAD_REQUEST,
            f"cannot decode the request body as WAV/FLAC audio ({len(body)} bytes): {err}",
        ) from err
    if data.shape[0] == 0:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, "the audio in the request body has no samples")
    return np.ascontiguousarray(data[:, 0]), int(rate)  # channel 0, as load_audio


class _Handler(BaseHTTPRequestHandler):
    server: ScoringHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = f"stetho/{stetho.__version__}"

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, payload: dict[str, Any], **headers: str) -> None:
        body = (json.dumps(payload) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        routes = {"/health": "GET", "/info": "GET", "/score": "POST"}
        try:
            if path not in routes:
                self._discard_body()
                raise _HTTPError(
                    HTTPStatus.NOT_FOUND,
                    f"unknown path {path!r}; endpoints: GET /health, GET /info, POST /score",
                )
            if routes[path] != method:
                self._discard_body()
                raise _HTTPError(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"{path} accepts {routes[path]} only, not {method}",
                )
            if path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok"})
            elif path == "/info":
                self._send(HTTPStatus.OK, _info(self.server.detector))
            else:
                self._send(HTTPStatus.OK, self._score())
        except _HTTPError as err:
            extra = {"Allow": routes[path]} if err.status == HTTPStatus.METHOD_NOT_ALLOWED else {}
            self._send(err.status, {"error": err.message}, **extra)
        except Exception as err:  # never kill the server thread on a bug; report it
            logger.exception("error while handling %s %s", method, self.path)
            self.close_connection = True
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {err}"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- /score ------------------------------------------------------------------------------
    def _discard_body(self, length: int | None = None) -> None:
        """Read and drop a request body we will not use, so that the client receives our error
        reply instead of a reset connection; bodies above :data:`_DRAIN_LIMIT` are not read and
        the connection is closed."""
        if length is None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
        if length < 0 or length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _read_body(self) -> bytes:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise _HTTPError(
                HTTPStatus.LENGTH_REQUIRED,
                "missing Content-Length header (chunked bodies are not accepted)",
            )
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise _HTTPError(
                HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length_text!r}"
            ) from None
        limit = self.server.max_body_bytes
        if length > limit:
            self._discard_body(length)
            raise _HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes exceeds the limit of {limit} bytes "
                f"({limit / 2**20:g} MiB)",
            )
        return self.rfile.read(length)

    def _key(self) -> tuple[str, str]:
        det = self.server.detector
        query = parse_qs(urlsplit(self.path).query)
        machine = query.get("machine", [None])[-1]
        section = query.get("section", [None])[-1]
        keys = list(det.keys)
        if machine is None or section is None:
            if len(keys) == 1:
                m, s = keys[0]
                machine = m if machine is None else machine
                section = s if section is None else section
            else:
                missing = [n for n, v in (("machine", machine), ("section", section)) if v is None]
                raise _HTTPError(
                    HTTPStatus.BAD_REQUEST,
                    f"missing query parameter(s) {', '.join(missing)}: use "
                    f"/score?machine=<m>&section=<XX>; valid machine/section: {_keys_text(det)}",
                )
        key = (machine, normalize_section(section))
        if key not in keys:
            raise _HTTPError(
                HTTPStatus.NOT_FOUND,
                f"unknown machine/section {key[0]!r}/{key[1]!r}; valid: {_keys_text(det)}",
            )
        return key

    def _score(self) -> dict[str, Any]:
        body = self._read_body()  # first: an error reply must not leave the body unread
        key = self._key()
        wave, rate = _decode(body)
        det = self.server.detector
        with self.server.lock:
            try:
                score = float(det.score_waveforms([wave], key[0], key[1], sample_rate=rate)[0])
            except ValueError as err:  # audio the model cannot take, e.g. too short
                raise _HTTPError(
                    HTTPStatus.BAD_REQUEST,
                    f"cannot score the audio ({wave.shape[0]} samples at {rate} Hz): {err}",
                ) from err
        thr = det.thresholds.get(key)
        return {
            "score": score,
            "decision": None if thr is None else int(decide([score], thr)[0]),
            "threshold": None if thr is None else float(thr),
            "machine": key[0],
            "section": key[1],
            "seconds": wave.shape[0] / rate,
        }


def make_server(
    detector: Scorer, host: str = "127.0.0.1", port: int = 0, max_body_mb: float = 50
) -> ScoringHTTPServer:
    """Create (and bind) the scoring server; call ``serve_forever()`` to run it.

    Args:
        detector: A fitted detector.
        host: Interface to bind (default: loopback only).
        port: TCP port; 0 picks a free one (see ``server.server_address`` / ``server.url``).
        max_body_mb: Largest accepted request body in MiB.
    """
    if max_body_mb <= 0:
        raise ValueError(f"max_body_mb must be > 0, got {max_body_mb}")
    return ScoringHTTPServer((host, port), detector, int(max_body_mb * 2**20))


def serve(
    detector: Scorer, host: str = "127.0.0.1", port: int = 8000, max_body_mb: float = 50
) -> None:
    """Run the scoring server until interrupted (Ctrl-C)."""
    server = make_server(detector, host, port, max_body_mb)
    logger.info("stetho scoring server on %s (keys: %s)", server.url, _keys_text(detector))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping the scoring server")
    finally:
        server.server_close()
