"""A runner on another host: :class:`cove.core.ports.Runner` over mutual TLS to a
``cove runner`` (the wire is :mod:`cove.runner.wire`).

Its errors reach tenants (an API error, a sandbox's ``errorReason``): they name the
runner as its operator did (``cove runner add --name``), never its address, ports or
what the connection said of them; the server's log has those, for the operator.

The synchronous questions (snapshots, local images, isolation tiers, whether it
fetches snapshots it lacks) are answered from the inventory the runner sent at
connect time, read again after every call that may change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from cove import errors
from cove.core.ports import (
    AgentConnection,
    Capacity,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
)
from cove.runner import tls, wire

log = logging.getLogger(__name__)
CONNECT_SECONDS = 10.0
MAX_CALLS = 256  # calls at once to one runner (streams are not counted)
# Bytes of one answer, or of one line of a pull's, read at most: a runner host taken
# over must not grow the API (every runner's, every tenant's) at will. The largest a
# runner sends is a pulled image's config (unpack.MAX_CONFIG), escaped as JSON.
MAX_REPLY = 32 * 2**20
# What a runner's capacity may say (the registry's columns: INTEGER counts, BIGINT
# bytes); past it the heartbeat round of every runner failed on writing it down.
MAX_COUNT, MAX_BYTES = 2**31 - 1, 2**63 - 1
COUNTS = {"cpu", "sandboxes", "max_sandboxes"}
STREAM_LIMIT = 2**20  # a stream reader's buffer, as asyncio's unix connections
# Calls that take no long work on the runner: a runner silent this long is lost (a
# create, an archive or a pull waits as long as the work takes).
QUICK = {"status", "list_ids", "stats", "capacity", "set_network", "pause", "resume"}
QUICK_TIMEOUT = httpx.Timeout(CONNECT_SECONDS, read=30.0, pool=None)


class RemoteRunner:
    """Implements :class:`cove.core.ports.Runner` by calling a ``cove runner``."""

    def __init__(self, url: str, context: ssl.SSLContext, name: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"COVE_RUNNER_URL must be https://host:port, not {url!r}")
        self.url, self.host, self._ssl = url.rstrip("/"), parts.hostname, context
        self._called = f"runner {name}" if name else "the runner"  # in errors, not its url
        self._client = self._new_client()
        self._inventory: dict[str, Any] = {}
        self._volume_store: str | None = None
        self._fetches = False
        self.stream_port = 0

    def _new_client(self) -> httpx.AsyncClient:
        # A call takes as long as the runner's work (a create, an archive, a pull); calls
        # wait for a free connection rather than fail.
        timeout = httpx.Timeout(CONNECT_SECONDS, read=None, pool=None)
        limits = httpx.Limits(max_connections=MAX_CALLS, max_keepalive_connections=32)
        return httpx.AsyncClient(base_url=self.url, verify=self._ssl, timeout=timeout,
                                 limits=limits, trust_env=False)  # fmt: skip

    async def hang_up(self) -> None:
        """End the calls in flight (each fails Unavailable, as on a lost connection): the
        runner is lost. A call waits as long as the runner's work takes, so those to a
        host gone silent would hold their sandboxes' locks for good (and the fleet's
        keeper, waiting on them to mark the sandboxes ``error``)."""
        old, self._client = self._client, self._new_client()
        await old.aclose()

    @classmethod
    def connect(cls, url: str, ca: Path, cert: Path, key: Path,
                name: str | None = None) -> RemoteRunner:  # fmt: skip
        """A runner at ``url``, its inventory read (blocking: call it at start; its
        error, for the operator, names ``url``).

        Raises:
            RuntimeBackendError: it cannot be reached or refused us.
        """
        runner = cls(url, tls.client_context(ca, cert, key), name)
        try:
            with httpx.Client(verify=runner._ssl, timeout=CONNECT_SECONDS, trust_env=False
                              ) as client, client.stream("GET", f"{runner.url}/v1/info"
                                                         ) as resp:  # fmt: skip
                body = bytearray()
                for chunk in resp.iter_bytes():
                    _add(body, chunk)
                runner._take(_checked(resp.status_code, body))
        except httpx.HTTPError as exc:
            raise errors.RuntimeBackendError(f"runner {url} unreachable: {exc}") from None
        return runner

    def _take(self, info: Any) -> None:
        """The runner's inventory (all of it, or nothing of a malformed one).

        Raises:
            RuntimeBackendError: it is malformed.
        """
        try:
            port = int(info["stream_port"])
            inventory = {k: set(info[k]) for k in ("snapshots", "local_images", "isolations")}
        except (KeyError, TypeError, ValueError):
            raise errors.RuntimeBackendError(f"{self._called} sent a malformed inventory"
                                             ) from None  # fmt: skip
        if not 1 <= port <= 65535:
            raise errors.RuntimeBackendError(f"{self._called} sent a malformed inventory "
                                             f"(stream port {port})")  # fmt: skip
        self.stream_port, self._inventory = port, inventory
        store = info.get("volume_store")  # absent: a runner of before volumes on runners
        self._volume_store = store if isinstance(store, str) else None
        self._fetches = info.get("fetches_snapshots") is True

    async def refresh(self) -> None:
        """Read the runner's inventory again."""
        self._take(await self._send("GET", "/v1/info", timeout=QUICK_TIMEOUT))

    def has_snapshot(self, name: str) -> bool:
        return name in self._inventory.get("snapshots", ())

    def has_local_image(self, image: str) -> bool:
        return image.startswith("oci:") or image.partition(":")[0] in self._inventory.get(
            "local_images", ())  # fmt: skip

    def has_isolation(self, name: str) -> bool:
        return name in self._inventory.get("isolations", ())

    def volume_store(self) -> str | None:
        """The id of the shared volumes dir the runner uses (None: its own)."""
        return self._volume_store

    def fetches_snapshots(self) -> bool:
        return self._fetches

    async def admits(self, snapshot: str, volumes: Sequence[str] = ()) -> None:
        """Every snapshot: the create says when it is missing."""

    async def _send(self, verb: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of the runner's answer.

        Raises:
            CoveError: the runner's error (as the class it named), or it is lost.
        """
        try:
            async with self._client.stream(verb, path, **kwargs) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    _add(body, chunk)
                return _checked(resp.status_code, body)
        except httpx.ConnectError as exc:  # nothing was sent: the call may go elsewhere
            raise errors.Unavailable(self._failed("unreachable", exc)) from None
        except httpx.TransportError as exc:  # lost mid-call, or silent past a quick timeout
            raise errors.Unavailable(self._failed("lost the call", exc)) from None
        except httpx.HTTPError as exc:
            raise errors.RuntimeBackendError(self._failed("failed the call", exc)) from None

    def _failed(self, what: str, exc: BaseException) -> str:
        """The error of a call that failed ``what``: the log has the runner's address and
        the failure, the message (a tenant's) neither."""
        log.warning("runner at %s %s: %r", self.url, what, exc)
        return f"{self._called} {what}"

    async def _call(self, method: str, **args: Any) -> Any:
        body = wire.encode_args(method, args)
        try:
            timeout = QUICK_TIMEOUT if method in QUICK else httpx.USE_CLIENT_DEFAULT
            result = await self._send("POST", f"/v1/call/{method}", json=body,
                                      timeout=timeout)  # fmt: skip
            return self._decoded(wire.METHODS[method][1], result, method)
        finally:
            if method in wire.INVENTORY_CHANGES:
                # Never in place of the call's own outcome: a runner slow to list its
                # inventory now is read again by the next heartbeat.
                with contextlib.suppress(errors.CoveError):
                    await self.refresh()

    async def create(self, spec: ContainerSpec) -> None:
        await self._call("create", spec=spec)

    async def start(self, spec: ContainerSpec) -> None:
        await self._call("start", spec=spec)

    async def adopt(self, spec: ContainerSpec) -> None:
        await self._call("adopt", spec=spec)

    async def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        await self._call("stop", sandbox_id=sandbox_id, force=force)

    async def destroy(self, sandbox_id: str) -> None:
        await self._call("destroy", sandbox_id=sandbox_id)

    async def archive(self, sandbox_id: str) -> int:
        return await self._call("archive", sandbox_id=sandbox_id)

    async def restore(self, spec: ContainerSpec) -> None:
        await self._call("restore", spec=spec)

    async def pause(self, sandbox_id: str) -> None:
        await self._call("pause", sandbox_id=sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        await self._call("resume", sandbox_id=sandbox_id)

    async def fork(self, source_id: str, spec: ContainerSpec) -> None:
        await self._call("fork", source_id=source_id, spec=spec)

    async def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        return await self._call("capture", sandbox_id=sandbox_id, ref=ref, config=config)

    async def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        return await self._call("clone_snapshot", source=source, ref=ref, config=config)

    async def import_image(self, ref: str, image: str) -> PulledImage:
        return await self._call("import_image", ref=ref, image=image)

    async def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None,
    ) -> PulledImage:  # fmt: skip
        """The pull runs on the runner; its progress lines come back as they are made."""
        body = wire.encode_args("pull_image", {"ref": ref, "image": image, "auth": auth})
        last: Any = None
        try:
            async with self._client.stream("POST", "/v1/call/pull_image", json=body) as resp:
                pending = bytearray()
                async for chunk in resp.aiter_bytes():
                    _add(pending, chunk)
                    if resp.status_code != 200 or b"\n" not in chunk:
                        continue
                    *lines, rest = pending.split(b"\n")
                    pending = bytearray(rest)
                    for line in lines:
                        last = self._line(line, last)
                        if (isinstance(last, dict) and "progress" in last
                                and progress is not None):  # fmt: skip
                            progress(str(last["progress"]))
                if resp.status_code != 200:
                    _checked(resp.status_code, pending)
                last = self._line(pending, last)
        except httpx.HTTPError as exc:
            raise errors.RuntimeBackendError(self._failed("failed the call", exc)) from None
        finally:
            await self.refresh()
        if not isinstance(last, dict) or "result" not in last:
            raise wire.error_from(last, "the runner's pull ended without a result")
        return self._decoded(PulledImage, last, "pull_image")

    def _line(self, line: bytes | bytearray, last: Any) -> Any:
        """A line of a pull's answer, decoded (``last`` for an empty one).

        Raises:
            RuntimeBackendError: it is not JSON.
        """
        if not line.strip():
            return last
        try:
            return json.loads(line)
        except ValueError:
            raise errors.RuntimeBackendError(f"{self._called} answered a malformed "
                                             f"pull_image") from None  # fmt: skip

    def _decoded(self, tp: Any, answer: dict[str, Any], method: str) -> Any:
        """The result of a successful answer, checked as a ``tp``.

        Raises:
            RuntimeBackendError: it has none, or not a ``tp``: the runner's failure (its
                callers, the fleet's keeper and the reconciler, expect a CoveError).
        """
        try:
            return wire.decode(tp, answer["result"])
        except (KeyError, ValueError):  # (pydantic's ValidationError is a ValueError)
            raise errors.RuntimeBackendError(f"{self._called} answered a malformed "
                                             f"{method}") from None  # fmt: skip

    async def remove_snapshot(self, ref: str) -> None:
        await self._call("remove_snapshot", ref=ref)

    async def delete_volume(self, volume_id: str) -> None:
        await self._call("delete_volume", volume_id=volume_id)

    async def archive_volume(self, volume_id: str) -> int:
        return await self._call("archive_volume", volume_id=volume_id)

    async def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        await self._call("resize", sandbox_id=sandbox_id, resources=resources, live=live)

    async def status(self, sandbox_id: str) -> ContainerStatus:
        return await self._call("status", sandbox_id=sandbox_id)

    async def list_ids(self) -> set[str]:
        return set(await self._call("list_ids"))

    async def tidy(self, sandbox_id: str) -> None:
        await self._call("tidy", sandbox_id=sandbox_id)

    async def remove_stale_work(self) -> None:
        await self._call("remove_stale_work")

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        await self._call("set_network", sandbox_id=sandbox_id, policy=policy)

    async def stats(self, sandbox_id: str) -> ContainerStats:
        return await self._call("stats", sandbox_id=sandbox_id)

    async def capacity(self) -> Capacity:
        """What the runner's host has and has left.

        Raises:
            RuntimeBackendError: a figure out of range (negative, or past MAX_COUNT or
                MAX_BYTES).
        """
        found: Capacity = await self._call("capacity")
        for name, value in dataclasses.asdict(found).items():
            if not 0 <= value <= (MAX_COUNT if name in COUNTS else MAX_BYTES):
                raise errors.RuntimeBackendError(f"{self._called} answered a malformed "
                                                 f"capacity ({name})")  # fmt: skip
        return found

    async def release(self, sandbox_id: str) -> None:
        await self._call("release", sandbox_id=sandbox_id)

    async def open_agent(self, sandbox_id: str) -> AgentConnection:
        return await self._stream(sandbox_id, None)

    async def open_port(self, sandbox_id: str, port: int) -> AgentConnection:
        return await self._stream(sandbox_id, port)

    async def preview_upstream(self, sandbox_id: str, port: int) -> str | None:
        """None: a port of a sandbox on another host is reached through open_port."""
        return None

    async def _stream(self, sandbox_id: str, port: int | None) -> AgentConnection:
        """A TLS connection to the runner's stream port, spliced there to the sandbox.

        Raises:
            Unavailable: the runner cannot be reached, or the sandbox (port) there.
            Busy: its agent takes no connections now.
        """
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.stream_port, ssl=self._ssl, limit=STREAM_LIMIT),
                CONNECT_SECONDS)  # fmt: skip
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise errors.Unavailable(self._failed("unreachable", exc)) from None
        try:
            writer.write((json.dumps({"sandbox": sandbox_id, "port": port}) + "\n").encode())
            line = await asyncio.wait_for(reader.readline(), 2 * CONNECT_SECONDS)
            answer = json.loads(line) if line else None
        except (OSError, ssl.SSLError, TimeoutError, ValueError):
            answer = None
        if isinstance(answer, dict) and answer.get("ok") is True:
            return reader, writer
        writer.close()
        if answer is None:
            raise errors.Unavailable(f"{self._called} hung up")
        raise wire.error_from(answer, "the runner refused the stream")

    async def close(self) -> None:
        await self._client.aclose()


def _add(body: bytearray, chunk: bytes) -> None:
    """``chunk`` added to what is read of an answer (or of a line of it).

    Raises:
        RuntimeBackendError: that is past MAX_REPLY bytes.
    """
    body += chunk
    if len(body) > MAX_REPLY:
        raise errors.RuntimeBackendError(f"the runner's answer is too large "
                                         f"(over {MAX_REPLY} bytes)")  # fmt: skip


def _checked(status: int, content: bytes | bytearray) -> Any:
    """The JSON body of a successful answer.

    Raises:
        CoveError: the runner's error, as the class it named.
    """
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if status != 200 or not isinstance(body, dict):
        raise wire.error_from(body, f"runner answered {status}")
    return body
