"""Reading request bodies within limits: size cap, deadline, multipart, content types."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from stetho.serving.decode import RequestError

__all__ = ["ClientGone", "check_content_type", "drain", "form_file", "read_body"]

#: Bodies of refused requests up to this size are read and dropped so that the client gets the
#: error reply rather than a reset connection; larger ones are not read (connection closed).
_DRAIN_LIMIT = 64 * 2**20
#: Declared types that cannot hold audio (415). Anything else is decoded and judged by its
#: bytes: ``curl --data-binary @clip.wav`` sends ``application/x-www-form-urlencoded``.
_NOT_AUDIO = ("text/", "image/", "video/", "font/", "application/json", "application/xml")


class ClientGone(Exception):
    """The client went away while sending its request."""


async def drain(request: Request, length: int | None) -> None:
    """Read and drop at most :data:`_DRAIN_LIMIT` bytes of a refused request's body."""
    if length is not None and length > _DRAIN_LIMIT:
        return
    dropped = 0
    try:
        async for chunk in request.stream():
            dropped += len(chunk)
            if dropped > _DRAIN_LIMIT:
                return
    except ClientDisconnect:
        pass


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, within ``limit`` bytes and ``timeout`` seconds (413 / 408 / 400)."""
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
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout):
            if length is not None and length > limit:
                if request.headers.get("expect", "").lower() != "100-continue":
                    await drain(request, length)  # else the client waits for our answer
                raise too_large
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    await drain(request, None)
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(
            408,
            f"request body not received within {timeout:g} s (received {received} bytes)",
            {"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


async def form_file(request: Request, body: bytes, limit: int) -> tuple[bytes, dict[str, str]]:
    """The first file of a multipart body and its text fields."""

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
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields[name] = value
        elif data is None:
            data = await value.read()
    await form.close()
    if data is None:
        raise RequestError(400, "multipart/form-data body without a file field (e.g. -F file=@x)")
    return data, fields


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
