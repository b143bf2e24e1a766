"""A small client of Cove's HTTP API (Daytona's routes, as the SDK calls them).

The transport and the WebSocket opener can be injected, so tests run the CLI
against an in-process app; the API key is sent, never shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

DEFAULT_API_URL = "http://127.0.0.1:3000/api"
TIMEOUT = httpx.Timeout(30.0, read=None)  # commands and lifecycle calls may take long
# (url, headers) -> a context manager yielding the binary messages until the socket closes
WsConnect = Callable[[str, Mapping[str, str]], AbstractContextManager[Iterator[bytes]]]


class ApiError(Exception):
    """A call that failed: the server's one-line message, or why it could not be made."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Client:
    """Calls one Cove (or Daytona) server as one organization.

    Args:
        api_url: the API's base URL, ending in ``/api``.
        api_key: the bearer key.
        transport: an httpx transport to use instead of the network (tests).
        ws_connect: opens WebSockets (default: the ``websockets`` library).
    """

    def __init__(self, api_url: str, api_key: str, *, transport: httpx.BaseTransport | None = None,
                 ws_connect: WsConnect | None = None) -> None:  # fmt: skip
        self.api_url = api_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(headers=self._auth, transport=transport, timeout=TIMEOUT)
        self._ws_connect = ws_connect or _websockets_connect

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """``method`` on ``path`` below the API URL; the decoded JSON (None when empty).

        Raises:
            ApiError: the server refused (its message) or could not be reached.
        """
        try:
            return self.call_url(method, self.api_url + path, **kwargs)
        except ApiError as exc:
            if exc.status == 404 and not self.api_url.endswith("/api"):
                exc.message += f" (is {self.api_url} the API's URL? Cove's ends in /api)"
            raise

    def call_url(self, method: str, url: str, **kwargs: Any) -> Any:
        """Like :meth:`call`, on an absolute URL (a sandbox's toolbox)."""
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiError(_unreachable(url, exc)) from None
        except httpx.TimeoutException:
            raise ApiError(f"{_origin(url)} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {_origin(url)} failed: {exc}") from None
        if response.is_error:
            raise ApiError(error_message(response.status_code, response.content),
                           response.status_code)  # fmt: skip
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(f"{_origin(url)} answered something that is not JSON "
                           f"(is {self.api_url} a Cove API URL?)") from None  # fmt: skip

    def toolbox_url(self, sandbox: Mapping[str, Any]) -> str:
        """The base URL of a sandbox's toolbox, from its DTO (as the SDK finds it)."""
        base = str(sandbox.get("toolboxProxyUrl") or "").rstrip("/")
        return f"{base}/{sandbox['id']}"

    def toolbox(self, sandbox: Mapping[str, Any], method: str, path: str, **kwargs: Any) -> Any:
        """A toolbox call for ``sandbox`` (its DTO)."""
        return self.call_url(method, self.toolbox_url(sandbox) + path, **kwargs)

    def stream(self, url: str) -> AbstractContextManager[Iterator[bytes]]:
        """The binary messages of the WebSocket at ``url`` (http(s) is turned into ws(s))."""
        parts = urlsplit(url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        return self._ws_connect(urlunsplit(parts._replace(scheme=scheme)), self._auth)


def error_message(status: int, body: bytes | str) -> str:
    """The message of Daytona's error envelope, else a short account of the answer."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        envelope = None
    if isinstance(envelope, dict):
        message = envelope.get("message")
        if isinstance(message, list):  # Daytona's validation errors
            message = "; ".join(str(m) for m in message)
        if message:
            return one_line(str(message))
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    first = text.strip().splitlines()[0][:200] if text.strip() else ""
    return one_line(f"HTTP {status}" + (f": {first}" if first else ""))


def one_line(text: str) -> str:
    """``text`` on one line, without control characters (it may come from anyone)."""
    return "".join(c if c.isprintable() else " " for c in " ".join(text.split()))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _unreachable(url: str, exc: httpx.ConnectError) -> str:
    reason = "connection refused" if "refused" in str(exc).lower() else one_line(str(exc))
    return (f"cannot reach the server at {_origin(url)} ({reason}): is `cove serve` running "
            "there? Set --api-url or DAYTONA_API_URL to reach another server")  # fmt: skip


@contextmanager
def _websockets_connect(url: str, headers: Mapping[str, str]) -> Iterator[Iterator[bytes]]:
    """A WebSocket opened with the ``websockets`` library: its messages until it closes."""
    from websockets.exceptions import ConnectionClosedError, InvalidStatus
    from websockets.sync.client import connect

    try:
        connection = connect(url, additional_headers=dict(headers), max_size=None,
                             open_timeout=30)  # fmt: skip
    except InvalidStatus as exc:
        response = exc.response
        raise ApiError(error_message(response.status_code, bytes(response.body or b"")),
                       response.status_code) from None  # fmt: skip
    except OSError as exc:
        raise ApiError(f"cannot reach the server at {_origin(url)} ({exc})") from None

    def messages() -> Iterator[bytes]:
        try:
            for message in connection:
                yield message.encode() if isinstance(message, str) else message
        except ConnectionClosedError as exc:
            reason = exc.rcvd.reason if exc.rcvd else "the connection was lost"
            raise ApiError(one_line(reason or "the stream ended with an error")) from None

    with connection:
        yield messages()
