"""What the request-id and HTTP-latency layer (``cove.api.observe.Observe``) adds to a
request: the same FastAPI route called through the ASGI interface directly, with
and without the layer, in one process (no sockets, no server).

    .venv/bin/python bench/observe.py [--n 20000]

Prints the median time per call of each and the difference (in microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from fastapi import FastAPI

from cove.api.metrics import Telemetry
from cove.api.observe import Observe


def _app() -> FastAPI:
    api = FastAPI()

    @api.get("/toolbox/{sandbox_id}/process/execute")
    async def execute(sandbox_id: str) -> dict[str, str]:
        return {"id": sandbox_id}

    return api


async def _per_call(app: Any, n: int) -> float:
    """Median seconds per call over batches of 100."""
    scope = {"type": "http", "method": "GET", "path": "/toolbox/abc/process/execute",
             "raw_path": b"/toolbox/abc/process/execute", "query_string": b"",
             "headers": [(b"host", b"x"), (b"x-request-id", b"bench-1")],
             "http_version": "1.1", "scheme": "http", "server": ("x", 80),
             "client": ("y", 1), "root_path": ""}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    batches = []
    for _ in range(n // 100):
        began = time.perf_counter()
        for _ in range(100):
            await app(dict(scope), receive, send)
        batches.append((time.perf_counter() - began) / 100)
    return statistics.median(batches)


async def main(n: int) -> None:
    bare = _app()
    observed = Observe(_app(), Telemetry(lambda: None))
    await _per_call(bare, 2000)  # warm up both
    await _per_call(observed, 2000)
    without, with_ = [], []
    for _ in range(5):  # interleaved, so drift hits both
        without.append(await _per_call(bare, n // 5))
        with_.append(await _per_call(observed, n // 5))
    a, b = statistics.median(without) * 1e6, statistics.median(with_) * 1e6
    print(f"without Observe: {a:.1f} us/call; with: {b:.1f} us/call; added: {b - a:.1f} us")  # noqa: T201


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
