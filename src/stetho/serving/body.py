"""Reading request bodies within limits: size cap, deadline, minimum rate, multipart, types.

A body must arrive whole within ``timeout`` seconds and, once a ``grace`` period is over, at no
less than ``min_rate`` bytes per second on average (counted from the end of the grace period):
a client trickling a byte a second is cut with 408 after about ``grace`` seconds instead of
holding its connection and its memory for the whole ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from stetho.serving.decode import RequestError

__all__ = ["BodyPace", "ClientGone", "check_content_type", "drain", "form_file", "read_body"]

#: Bodies of refused requests up to this size are read and dropped so that the client gets the
#: error reply rather than a reset connection; larger ones are not read (connection closed).
_DRAIN_LIMIT = 64 * 2**20
#: Declared types that cannot hold audio (415). Anything else is decoded and judged by its
#: bytes: ``curl --data-binary @clip.wav`` sends ``application/x-www-form-urlencoded``.
_NOT_AUDIO = ("text/", "image/", "video/", "font/", "application/json", "application/xml")


class ClientGone(Exception):
    """The client went away while sending its request."""


@dataclass(frozen=True)
class BodyPace:
    """How fast a request body must arrive.

    Attributes:
        timeout: Seconds for the whole body.
        min_rate: Bytes per second, on average after ``grace`` (0: no minimum rate).
        grace: Seconds before the minimum rate applies (a client's slow start, one TCP window).
    """

    timeout: float
    min_rate: float = 0.0
    grace: float = 0.0

    def deadline(self, start: float, received: int) -> float:
        """The loop time by which more of the body must have arrived, having ``received``
        bytes of it since ``start``."""
        end = start + self.timeout
        if self.min_rate > 0:
            end = min(end, start + self.grace + received / self.min_rate)
        return end

    def too_slow(self, received: int, elapsed: float) -> RequestError:
        """The 408 for a body cut after ``elapsed`` seconds."""
        if elapsed >= self.timeout or self.min_rate <= 0:
            why = f"not received within {self.timeout:g} s"
        else:
            why = (
                f"arriving slower than {self.min_rate / 1024:g} KiB/s after {self.grace:g} s "
                "(server option --min-body-rate-kib)"
            )
        return RequestError(
            408,
            f"request body {why} (received {received} bytes in {elapsed:.1f} s)",
            {"Connection": "close"},
        )


async def drain(
    request: Request,
    length: int | None,
    pace: BodyPace | None = None,
    chunks: AsyncIterator[bytes] | None = None,
) -> None:
    """Read and drop at most :data:`_DRAIN_LIMIT` bytes of a refused request's body (within
    ``pace``'s deadlines; a slower client is simply left).

    Args:
        request: The request.
        length: Its declared Content-Length (more than the limit: nothing is read).
        pace: Deadlines of the draining (None: none).
        chunks: The body iterator already started by the caller (``request.stream()`` can be
            started only once).
    """
    if length is not None and length > _DRAIN_LIMIT:
        return
    dropped = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(None if pace is None else pace.deadline(start, 0)) as deadline:
            async for chunk in chunks if chunks is not None else request.stream():
                dropped += len(chunk)
                if dropped > _DRAIN_LIMIT:
                    return
                if pace is not None:
                    deadline.reschedule(pace.deadline(start, dropped))
    except (ClientDisconnect, TimeoutError):
        pass


async def read_body(
    request: Request,
    limit: int,
    pace: BodyPace | float,
    on_chunk: Callable[[int], None] | None = None,
) -> bytes:
    """The request body, within ``limit`` bytes and the deadlines of ``pace`` (413 / 408 / 400).

    Args:
        request: The request.
        limit: Largest body (bytes); larger gets 413.
        pace: Deadlines (a number: seconds for the whole body, no minimum rate).
        on_chunk: Called with the size of every chunk received before it is kept (e.g. to
            reserve memory); a :class:`RequestError` it raises refuses the request (the rest of
            the body is drained first, so the client reads the reply).
    """
    if not isinstance(pace, BodyPace):
        pace = BodyPace(float(pace))
    length: int | None = None
    if (text := request.headers.get("content-length")) is not None:
        try:
            length = int(text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise RequestError(400, f"invalid Content-Length {text!r}") from None
    too_large = RequestError(
        413,
        f"request body of {length if length is not None else 'more than ' + str(limit)} bytes "
        f"exceeds the limit of {limit} bytes ({limit / 2**20:g} MiB; server option "
        "--max-body-mb)",
    )
    if length is not None and length > limit:
        if request.headers.get("expect", "").lower() != "100-continue":
            await drain(request, length, pace)  # else the client waits for our answer
        raise too_large
    chunks: list[bytes] = []
    received = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream = request.stream()
    refused: RequestError | None = None
    try:
        async with asyncio.timeout(pace.deadline(start, 0)) as deadline:
            async for chunk in stream:
                received += len(chunk)
                if received > limit:
                    refused = too_large
                    break
                if on_chunk is not None and chunk:
                    try:
                        on_chunk(len(chunk))
                    except RequestError as err:
                        refused = err
                        break
                chunks.append(chunk)
                deadline.reschedule(pace.deadline(start, received))
    except TimeoutError:
        raise pace.too_slow(received, loop.time() - start) from None
    except ClientDisconnect:
        raise ClientGone from None
    if refused is not None:
        chunks.clear()
        await drain(request, None, pace, stream)
        raise refused
    return b"".join(chunks)


async def form_file(
    request: Request, body: bytes, limit: int
) -> tuple[bytes, dict[str, str], str | None]:
    """The first file of a multipart body, its text fields and the file's name (or None)."""

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=16, max_part_size=limit
        )
    except Exception as err:  # malformed multipart: python-multipart raises several types
        raise RequestError(400, f"malformed multipart/form-data body: {err}") from err
    fields: dict[str, str] = {}
    data = None
    filename = None
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields[name] = value
        elif data is None:
            data = await value.read()
            filename = value.filename or None
    await form.close()
    if data is None:
        raise RequestError(400, "multipart/form-data body without a file field (e.g. -F file=@x)")
    return data, fields, filename


def check_content_type(ctype: str, raw_pcm: bool) -> None:
    """415 for a declared type that cannot be audio (JSON, text, images, …)."""
    not_audio = ctype.startswith(_NOT_AUDIO) or ctype.endswith(("+json", "+xml"))
    if raw_pcm or not not_audio:
        return
    raise RequestError(
        415,
        f"unsupported Content-Type {ctype!r}: send audio/wav, audio/flac, "
        "application/octet-stream, multipart/form-data, or raw PCM with ?rate=",
    )
