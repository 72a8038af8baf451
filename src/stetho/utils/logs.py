"""Log output for people (text) or for log collectors (one JSON object per line).

``stetho --log-format json monitor monitor.yaml`` writes every log record — state changes of the
monitor, alarms, reloads, errors — as one JSON object per line on stderr, which journald, Loki or
any collector parses without a regular expression::

    {"time": "2026-12-07T14:32:42.118Z", "level": "WARNING", "logger": "stetho.serving.monitor",
     "message": "slider/00: alarm opened", "machine": "slider"}

Extra fields given with ``logger.info(..., extra={"machine": "slider"})`` are kept.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

__all__ = ["JsonFormatter", "json_line", "setup_logging"]

#: Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: int, fmt: Literal["text", "json"] = "text") -> None:
    """Configure the root logger: ``text`` (``LEVEL logger: message``) or ``json``.

    Like :func:`logging.basicConfig`, it leaves a root logger that already has handlers (an
    embedding application, a test runner) alone.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def json_line(message: str, *, logger: str = "stetho", level: int = logging.INFO) -> str:
    """``message`` as the JSON line :class:`JsonFormatter` writes (for status lines)."""
    record = logging.LogRecord(logger, level, __file__, 0, message, None, None)
    return JsonFormatter().format(record)
