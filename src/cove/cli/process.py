"""Commands in a sandbox, as ``cove sandbox exec`` and ``logs`` run them: output
streamed as it comes (a session's command followed over a WebSocket)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import click

from cove.cli.client import ApiError, Client

MARKERS = {b"\x01\x01\x01": "stdout", b"\x02\x02\x02": "stderr"}
EXIT_CODE_WAIT = 10.0  # seconds for the exit code to be recorded once the output ended
# (stream, data) -> None
Sink = Callable[[str, bytes], None]


def print_chunk(stream: str, data: bytes) -> None:
    """Write a chunk of output to the CLI's own stream of that name, at once."""
    out = (sys.stderr if stream == "stderr" else sys.stdout).buffer
    out.write(data)
    out.flush()


def json_lines(stream: str, data: bytes) -> None:
    """A chunk as one JSON object a line: ``{"stream", "data"}``."""
    click.echo(json.dumps({"stream": stream, "data": data.decode(errors="replace")}))


def follow(client: Client, url: str, sink: Sink) -> None:
    """Pass each chunk of the output streamed at ``url`` to ``sink`` until it ends."""
    with client.stream(url) as messages:
        for message in messages:
            head = message[:3]
            if head in MARKERS:
                sink(MARKERS[head], message[3:])
            else:
                sink("stdout", message)


def run(client: Client, sandbox: Mapping[str, Any], line: str, sink: Sink) -> int | None:
    """Run a shell line in a session of its own, streaming its output to ``sink``;
    its exit code. The session (and what still runs in it) is deleted afterwards,
    also when the caller is interrupted."""
    base = "/process/session"
    session = f"cove-cli-{uuid.uuid4().hex[:12]}"
    client.toolbox(sandbox, "POST", base, json={"sessionId": session})
    try:
        started = client.toolbox(sandbox, "POST", f"{base}/{session}/exec",
                                 json={"command": line, "runAsync": True})  # fmt: skip
        command = f"{base}/{session}/command/{started['cmdId']}"
        follow(client, client.toolbox_url(sandbox) + command + "/logs?follow=true", sink)
        return _exit_code(client, sandbox, command)
    finally:
        try:
            client.toolbox(sandbox, "DELETE", f"{base}/{session}")
        except ApiError:
            pass  # the sandbox stopped meanwhile: its sessions went with it


def _exit_code(client: Client, sandbox: Mapping[str, Any], command: str) -> int | None:
    deadline = time.monotonic() + EXIT_CODE_WAIT
    while True:
        code = client.toolbox(sandbox, "GET", command).get("exitCode")
        if code is not None or time.monotonic() > deadline:
            return code
        time.sleep(0.05)
