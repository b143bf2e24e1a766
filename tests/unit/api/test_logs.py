"""`cove serve`'s log lines: ISO timestamps, request ids, secrets still redacted."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from cove.api import logredact

# What `cove serve` does, in its own process (dictConfig replaces every handler):
# create_app installs the redaction and the request ids, uvicorn applies the config.
SCRIPT = """
import logging, logging.config
from cove.api import logredact, logs
logging.config.dictConfig(logs.config("info"))
logredact.install()
logs.install()
logging.config.dictConfig(logs.config("info"))
token = logs.REQUEST_ID.set("rid-7")
logging.getLogger("uvicorn.access").info(
    '%s - "%s %s HTTP/%s" %d', "1.2.3.4", "GET", "/x?token=s3cret", "1.1", 200)
logging.getLogger("cove.core.ops").info("inside")
logs.REQUEST_ID.reset(token)
logging.getLogger("cove.test").warning("outside")
"""
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_lines_have_a_timestamp_the_request_id_and_no_secret() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    assert re.fullmatch(STAMP + r' INFO uvicorn\.access \[rid-7\] 1\.2\.3\.4 - "GET '
                        r'/x\?token=\*\*\* HTTP/1\.1" 200', lines[0]), lines  # fmt: skip
    assert re.fullmatch(STAMP + r" INFO cove\.core\.ops \[rid-7\] inside", lines[1]), lines
    assert re.fullmatch(STAMP + r" WARNING cove\.test \[-\] outside", lines[2]), lines


def test_a_signed_preview_urls_token_is_redacted_from_the_path() -> None:
    """A signed preview URL carries its token in the path (``/preview/s/{token}/...``):
    it opens the sandbox's port as ``token=`` does, and is redacted the same way."""
    path = "/preview/s/abc234xyz/page?token=t&x=1"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("1.2.3.4", "GET", path, "1.1", 200),
                               None)  # fmt: skip
    assert logredact.RedactSecrets().filter(record)
    assert record.getMessage() == '1.2.3.4 - "GET /preview/s/***/page?token=***&x=1 HTTP/1.1" 200'


# A real uvicorn, as `cove serve` runs it, answering WebSocket handshakes (one
# accepted, one refused as the preview proxy refuses).
WEBSOCKETS = """
import logging.config, socket, threading, time
import uvicorn
from websockets.sync.client import connect
from cove.api import logredact, logs

async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        accept = scope["path"].endswith("/open")
        await send({"type": "websocket.accept"} if accept else
                   {"type": "websocket.close", "code": 1008})

logging.config.dictConfig(logs.config("info"))
logredact.install()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info",
                                       log_config=None, ws="websockets-sansio", lifespan="off"))
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
for path in ("/preview/s/s3cretsigned/open", "/preview/sid/8080/open?token=s3cret",
             "/preview/sid/8080/shut?token=s3cret"):
    try:
        with connect(f"ws://127.0.0.1:{port}{path}"):
            pass
    except Exception:
        pass
server.should_exit = True
"""


def test_a_websockets_handshake_line_shows_no_token() -> None:
    """uvicorn logs a WebSocket's handshake, path and query included, on
    ``uvicorn.error``, not the access log: a browser reaches a private preview's
    WebSocket with ``?token=`` (the sandbox's preview token, good for every port for
    the sandbox's life) or a signed URL's path, and neither may be written there."""
    done = subprocess.run([sys.executable, "-c", WEBSOCKETS], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if '"WebSocket ' in line]
    assert len(lines) == 3, done.stderr
    assert "s3cret" not in done.stderr, lines
    assert '"WebSocket /preview/s/***/open" [accepted]' in lines[0], lines
    assert '"WebSocket /preview/sid/8080/shut?token=***" 403' in lines[2], lines
