"""Admission of scoring requests and the scoring of one upload (``POST /v1/score``).

A request is admitted while fewer than ``concurrency + queue`` are in and the bodies they
received fit the pending-bytes budget; decoding and scoring run in a worker thread under a
semaphore of ``concurrency`` slots (see :class:`Admission`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from stetho.serving.body import (
    BodyPace,
    ClientGone,
    check_content_type,
    drain,
    form_file,
    read_body,
)
from stetho.serving.decode import RequestError, decode_pcm, decode_upload
from stetho.serving.metrics import ServiceMetrics
from stetho.serving.service import ScoringService

__all__ = ["Admission", "ScoreEndpoint"]

logger = logging.getLogger(__name__)

#: Longest source name kept from an upload (multipart file name or ``?name=``).
MAX_SOURCE_NAME = 255


class _Ticket:
    """The bytes one admitted request holds (its body as received so far)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0


class Admission:
    """Bounded admission and a semaphore for decoding + scoring.

    A request is admitted while fewer than ``concurrency + queue`` are in. Its body is then
    reserved as it arrives, chunk by chunk: while the bodies received by the requests in fit in
    ``budget`` bytes it goes on, beyond that it gets 503. A declared Content-Length reserves
    nothing, so clients declaring large bodies and sending them slowly (also cut by the body's
    minimum rate) cannot keep others out; memory stays bounded however many clients connect.
    """

    def __init__(self, concurrency: int, queue: int, timeout: float, budget: int) -> None:
        self.capacity = concurrency + queue
        self.budget = budget
        self.admitted = 0
        self.pending = 0  # bytes received by admitted requests
        self.timeout = timeout
        self.slots = asyncio.Semaphore(concurrency)

    def _busy(self) -> RequestError:
        return RequestError(
            503,
            f"server busy: {self.admitted} scoring requests in progress or waiting "
            f"({self.pending / 2**20:.1f} MiB received; limits {self.capacity} requests, "
            f"{self.budget / 2**20:g} MiB); retry shortly",
            {"Retry-After": "1", "Connection": "close"},
        )

    def enter(self) -> _Ticket:
        """Admit a request (503 when ``concurrency + queue`` are in); give the ticket to
        :meth:`reserve` for each chunk of its body and to :meth:`leave` at the end."""
        if self.admitted >= self.capacity:
            raise self._busy()
        self.admitted += 1
        return _Ticket()

    def reserve(self, ticket: _Ticket, nbytes: int) -> None:
        """Hold ``nbytes`` more for ``ticket`` (503 when the budget is spent)."""
        if self.pending + nbytes > self.budget:
            raise self._busy()
        self.pending += nbytes
        ticket.held += nbytes

    def leave(self, ticket: _Ticket) -> None:
        self.admitted -= 1
        self.pending -= ticket.held
        ticket.held = 0


class ScoreEndpoint:
    """``POST /v1/score``: admission, body, key, then decoding + scoring in a worker thread."""

    def __init__(self, service: ScoringService, metrics: ServiceMetrics) -> None:
        limits = service.limits
        self.service = service
        self.limits = limits
        self.metrics = metrics
        self.admission = Admission(
            limits.max_concurrency,
            limits.max_queue,
            limits.queue_timeout,
            max(int(limits.max_pending_mb * 2**20), limits.max_body_bytes),
        )
        self.pace = BodyPace(
            limits.body_timeout, limits.min_body_rate_kib * 1024, limits.body_grace
        )

    async def _refuse_busy(self, request: Request, err: RequestError) -> RequestError:
        """Count a 503 and drop what the client still sends (at the minimum rate), so that it
        reads the reply rather than a reset connection."""
        self.metrics.rejected.labels("busy").inc()
        await drain(request, None, self.pace)
        return err

    async def _read(self, request: Request, ticket: _Ticket) -> bytes:
        def reserve(n: int) -> None:
            self.admission.reserve(ticket, n)

        try:
            return await read_body(request, self.limits.max_body_bytes, self.pace, reserve)
        except RequestError as err:
            if err.status == 503:  # drained by read_body
                self.metrics.rejected.labels("busy").inc()
            raise

    async def _run(self, entry: Any, key: tuple[str, str], *args: Any) -> dict[str, Any]:
        """Decode and score in a worker thread once a scoring slot is free."""
        admission = self.admission
        try:
            await asyncio.wait_for(admission.slots.acquire(), admission.timeout)
        except TimeoutError:
            self.metrics.rejected.labels("queue_timeout").inc()
            raise RequestError(
                503, f"no scoring slot free within {admission.timeout:g} s; retry later"
            ) from None
        try:
            self.metrics.in_progress.inc()
            return await run_in_threadpool(_decode_and_score, self.service, entry, key, *args)
        finally:
            self.metrics.in_progress.dec()
            admission.slots.release()

    async def __call__(
        self,
        request: Request,
        key: tuple[str | None, str | None, str | None],
        pcm: tuple[int | None, str, int, int],
        name: str | None = None,
    ) -> Response:
        """``key`` = (machine, section, detector) from the query; ``pcm`` = (rate, format,
        channels, channel); ``name`` = the recording's name (``?name=``; default: the multipart
        file name, else ``"http"``)."""
        try:
            ticket = self.admission.enter()
        except RequestError as err:
            raise await self._refuse_busy(request, err) from None
        limits = self.limits
        try:
            machine, section, detector = key
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            body = await self._read(request, ticket)
            check_content_type(ctype, pcm[0] is not None)
            if ctype == "multipart/form-data":
                body, fields, filename = await form_file(request, body, limits.max_body_bytes)
                machine = machine or fields.get("machine")
                section = section or fields.get("section")
                detector = detector or fields.get("detector")
                name = name or fields.get("name") or filename
            entry, resolved = self.service.resolve(machine, section, detector)
            source = _source_name(name)
            result = await self._run(entry, resolved, body, *pcm, source)
            self.metrics.scores.labels(resolved[0], resolved[1], entry.name).inc()
            if result.get("has_audio"):
                result["audio_url"] = f"/v1/windows/{result['id']}/audio"
            else:
                result["audio_url"] = None
            return JSONResponse(result)
        except ClientGone:
            logger.debug("client disconnected while sending its request")
            return Response(status_code=400)
        except RequestError as err:
            if err.status in (408, 413):
                self.metrics.rejected.labels("timeout" if err.status == 408 else "too_large").inc()
            raise
        finally:
            self.admission.leave(ticket)


def _decode_and_score(
    service: ScoringService,
    entry: Any,
    key: tuple[str, str],
    body: bytes,
    rate: int | None,
    fmt: str,
    channels: int,
    channel: int,
    source: str = "http",
) -> dict[str, Any]:
    limits = service.limits
    sr = int(entry.scorer.sample_rate)
    if rate is None:
        wave, seconds = decode_upload(body, sr, limits.max_seconds)
    else:
        wave, seconds = decode_pcm(body, rate, fmt, channels, channel, sr, limits.max_seconds)
    return service.score(entry, key, wave, seconds, source)


def _source_name(name: str | None) -> str:
    """The name a window of an upload is stored under: its base name, printable, bounded."""
    if not name:
        return "http"
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch for ch in base if ch.isprintable()).strip()
    return clean[:MAX_SOURCE_NAME] or "http"
