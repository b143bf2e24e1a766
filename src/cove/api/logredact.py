"""Secrets in URLs stay out of the logs: the access log, and the line uvicorn writes
for a WebSocket's handshake (on ``uvicorn.error``: a browser reaches a private
preview's WebSocket with ``?token=``), show ``token=`` (SSH access, preview tokens)
and ``signature=`` (signed file URLs) query values, and the token in a signed preview
URL's path (``/preview/s/{token}``), as ``***``."""

from __future__ import annotations

import logging
import re

SECRET_QUERY = re.compile(r"([?&](?:token|signature)=)[^&#\s]*", re.IGNORECASE)
SIGNED_PATH = re.compile(r"^(/preview/s/)[^/?#\s]+")


class RedactSecrets(logging.Filter):
    """Rewrites the arguments of an access-log record (its path with the query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def _redact(text: str) -> str:
    return SIGNED_PATH.sub(r"\1***", SECRET_QUERY.sub(r"\1***", text))


def install() -> None:
    """Redact uvicorn's access log and its WebSockets' handshake lines; keep asyncssh
    (which names the SSH user, a token) to warnings."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
