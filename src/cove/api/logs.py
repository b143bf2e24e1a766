"""Log lines with an ISO timestamp and the id of the request they were written for.

Each HTTP request or WebSocket gets a request id (the client's ``X-Request-Id`` when
it is a sane token, else a new one), kept in a context variable while it is served
(tasks it starts inherit it); every log record made meanwhile carries it as
``request_id`` ("-" outside a request).
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str] = ContextVar("cove_request_id", default="-")
SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_factory_installed = False


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-Id`` if it is a sane token, else a new id."""
    for name, value in headers:
        if name == b"x-request-id":
            if SANE_ID.fullmatch(value):
                return value.decode()
            break
    return os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    """Gives a record the current request id (for handlers fed by other factories)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class IsoFormatter(logging.Formatter):
    """Timestamps as ISO 8601 in UTC, to the millisecond."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")


def install() -> None:
    """Make every log record carry the current request id (once per process)."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (also uvicorn's ``log_config``): one stderr
    handler, ISO timestamps and request ids, uvicorn's loggers through it."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"cove": {"()": IsoFormatter, "format": FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "cove",
                                "filters": ["request_id"], "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"handlers": [], "level": level, "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }  # fmt: skip
