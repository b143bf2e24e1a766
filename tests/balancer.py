"""A tiny HTTP load balancer for tests: each request goes to the next of several
upstreams in turn (round robin), so consecutive requests of one client land on
different API replicas. Host headers are passed through (S3 signatures cover them),
request bodies are read whole (tests send small ones), responses are streamed (a
followed build log). Every request is recorded with the upstream that served it.

``pick`` may override the turn for some requests (a test's worst case: a build's
log asked of the replica that did not start the build). No WebSockets: SDK clients
behind it use polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse

from cove.testing import free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
              "proxy-authorization", "proxy-authenticate"}  # fmt: skip


@dataclass
class Balancer:
    upstreams: list[str]  # base URLs, e.g. http://127.0.0.1:3001
    port: int = field(default_factory=free_port)
    # (method, path) -> the upstream's index, or None: the next in turn
    pick: Callable[[Balancer, str, str], int | None] = lambda _b, _m, _p: None
    served: list[tuple[str, str, int]] = field(default_factory=list)
    _turn: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def which(self, method: str, path: str) -> list[int]:
        """The upstreams that served ``method path`` so far, in order."""
        return [i for m, p, i in self.served if m == method and p == path]

    def _next(self, method: str, path: str) -> int:
        chosen = self.pick(self, method, path)
        if chosen is None:
            chosen = self._turn % len(self.upstreams)
            self._turn += 1
        self.served.append((method, path, chosen))
        return chosen

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        chosen = self._next(request.method, request.url.path)
        raw = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = self.upstreams[chosen] + raw.decode() + (f"?{query.decode()}" if query else "")
        headers = [(k, v) for k, v in request.headers.raw
                   if k.decode().lower() not in HOP_BY_HOP]  # fmt: skip
        client = httpx.AsyncClient(timeout=httpx.Timeout(600.0))
        upstream = await client.send(
            client.build_request(request.method, url, headers=headers,
                                 content=await request.body()),
            stream=True,
        )  # fmt: skip
        reply = [(k, v) for k, v in upstream.headers.raw
                 if k.decode().lower() not in HOP_BY_HOP]  # fmt: skip

        async def close() -> None:
            await upstream.aclose()
            await client.aclose()

        response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                     background=BackgroundTask(close))  # fmt: skip
        response.raw_headers = [(k.lower(), v) for k, v in reply]
        await response(scope, receive, send)


@contextmanager
def balancing(balancer: Balancer) -> Iterator[Balancer]:
    """Run ``balancer`` on 127.0.0.1:``balancer.port`` in a thread of its own."""
    server = uvicorn.Server(uvicorn.Config(balancer, host="127.0.0.1", port=balancer.port,
                                           log_level="warning", lifespan="off"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the balancer did not start")
            time.sleep(0.05)
        yield balancer
    finally:
        server.should_exit = True
        thread.join(30)
