"""One exception base for everything stetho raises on purpose.

Every domain error derives from :class:`StethoError` (and, for backward compatibility, from the
builtin it used to be: ``ValueError``, ``RuntimeError``, ``LookupError``), and carries

* ``exit_code`` — what the ``stetho`` command returns (2: the input or the request is wrong),
* ``http_status`` — what the HTTP API answers (400 bad request, 404 unknown machine or detector,
  413 too large, 422 unprocessable audio or folder, 503 store or service unavailable).

The CLI (:func:`stetho.cli.main`) and the API map errors in one place each, from these two
attributes; no error stetho raises reaches the user as a traceback.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = [
    "InputError",
    "NotFoundError",
    "StethoError",
    "UnavailableError",
    "error_message",
]


class StethoError(Exception):
    """Base of stetho's domain errors; the message says what went wrong and what to do.

    Attributes:
        exit_code: Exit status of the ``stetho`` command for this error.
        http_status: HTTP status of the API's answer for this error.
    """

    exit_code: int = 2
    http_status: int = HTTPStatus.BAD_REQUEST


class InputError(StethoError, ValueError):
    """Bad input: a file, a setting or a request that stetho cannot use (HTTP 400)."""


class NotFoundError(StethoError, KeyError):
    """An unknown machine, section, detector or record (HTTP 404)."""

    http_status = HTTPStatus.NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its message; this one does not
        return str(self.args[0]) if self.args else ""


class UnavailableError(StethoError, RuntimeError):
    """A service stetho needs (store, detector, source) cannot be used right now (HTTP 503)."""

    exit_code = 1
    http_status = HTTPStatus.SERVICE_UNAVAILABLE


def error_message(err: BaseException) -> str:
    """The user-facing text of an error (a ``KeyError``'s message without its quotes)."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)
