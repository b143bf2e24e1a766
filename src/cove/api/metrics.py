"""``GET /metrics``: the server's Prometheus metrics, for the operator.

Served only when ``COVE_METRICS_TOKEN`` is set, to ``Authorization: Bearer <token>``
(else a 404): the numbers span every organization. No metric is labelled with a
sandbox's id, name or labels (privacy, and a tenant must not be able to grow the
series); pools are labelled with their pool id.

Each app has a registry of its own (several apps in one process do not collide).
"""

from __future__ import annotations

import hmac
import os
import re
import shutil
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cove.core.sandbox import SandboxState
from cove.errors import CoveError, NotFound, ToolboxError, Unauthorized, Unavailable

if TYPE_CHECKING:
    from cove.server import Services

OPERATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SANE_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
MAX_CODES = 64  # distinct agent error codes kept apart; the rest count as OTHER


class Telemetry:
    """The app's metrics: its registry, what core and the middleware record into it.

    Args:
        services: the app's services once started (None before).
    """

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.operations = Histogram(
            "cove_operation_duration_seconds", "Lifecycle operations' durations.",
            ["operation"], buckets=OPERATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.http = Histogram(
            "cove_http_request_duration_seconds",
            "HTTP requests' durations by route template and status class.",
            ["route", "status"], buckets=HTTP_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.agent_errors = Counter(
            "cove_agent_errors", "Sandbox agent errors answered, by code.", ["code"],
            registry=self.registry,
        )  # fmt: skip
        self._codes: set[str] = set()
        self.registry.register(_StateCollector(services))

    def observe(self, operation: str, seconds: float) -> None:
        """A lifecycle operation's duration (core's :class:`~cove.core.telemetry.Recorder`)."""
        self.operations.labels(operation).observe(seconds)

    def error(self, exc: CoveError) -> None:
        """Count an agent's error (ToolboxError, Unavailable) on its way to the client."""
        if not isinstance(exc, ToolboxError | Unavailable):
            return
        code = exc.code if SANE_CODE.fullmatch(exc.code) else "OTHER"
        if code not in self._codes:  # a lying agent must not grow the series
            if len(self._codes) >= MAX_CODES:
                code = "OTHER"
            self._codes.add(code)
        self.agent_errors.labels(code).inc()

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class _StateCollector:
    """What is read at each scrape: sandboxes by state, pools, host capacity."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        services = self.services()
        if services is None:
            return
        yield from _sandboxes(services)
        yield from _pools(services)
        yield from _host(services.settings.data_dir)


def _sandboxes(services: Services) -> Iterator[Metric]:
    owned: Tally[str] = Tally()
    pooled: Tally[tuple[str, str]] = Tally()
    for sb in services.lifecycle.store.all():
        if sb.organization_id:
            owned[sb.state.value] += 1
        else:
            pooled[(sb.warm_pool_id or "", sb.state.value)] += 1
    tenants = GaugeMetricFamily("cove_sandboxes", "Organizations' sandboxes by state.",
                                labels=["state"])  # fmt: skip
    for state in SandboxState:
        tenants.add_metric([state.value], owned[state.value])
    yield tenants
    waiting = GaugeMetricFamily("cove_pool_sandboxes", "Pooled sandboxes by pool and state.",
                                labels=["pool", "state"])  # fmt: skip
    for (pool, name), count in sorted(pooled.items()):
        waiting.add_metric([pool, name], count)
    yield waiting


def _pools(services: Services) -> Iterator[Metric]:
    keeper = services.lifecycle.pool
    if keeper is None:
        return
    members = keeper.members()
    size = GaugeMetricFamily("cove_pool_size", "Warm pools' target sizes.", labels=["pool"])
    ready = GaugeMetricFamily("cove_pool_waiting", "Started sandboxes waiting in each pool.",
                              labels=["pool"])  # fmt: skip
    for pool in keeper.pools():
        size.add_metric([pool.id], pool.size)
        up = [sb for sb in members.get(pool.id, []) if sb.state is SandboxState.STARTED]
        ready.add_metric([pool.id], len(up))
    claims = CounterMetricFamily("cove_pool_claims", "Creates a warm pool served.",
                                 labels=["pool"])  # fmt: skip
    for pool_id, count in sorted(dict(keeper.claims).items()):
        claims.add_metric([pool_id], count)
    cold = CounterMetricFamily("cove_pool_cold_fallbacks",
                               "Creates no pooled sandbox served (booted cold).")  # fmt: skip
    cold.add_metric([], keeper.cold_fallbacks)
    yield from (size, ready, claims, cold)


def _host(data_dir: Path) -> Iterator[Metric]:
    yield GaugeMetricFamily("cove_host_cpus", "The host's CPUs.", value=os.cpu_count() or 0)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    yield GaugeMetricFamily("cove_host_memory_bytes", "The host's memory.", value=total)
    yield GaugeMetricFamily("cove_host_memory_available_bytes",
                            "The host's memory available for new work.",
                            value=_mem_available())  # fmt: skip
    yield GaugeMetricFamily("cove_host_disk_free_bytes", "Free space of the data directory.",
                            value=shutil.disk_usage(data_dir).free)  # fmt: skip


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def install(api: FastAPI, telemetry: Telemetry, token: str | None) -> None:
    """Serve ``GET /metrics`` (only with ``token``, to ``Authorization: Bearer <token>``)."""

    @api.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not token:
            raise NotFound("Not Found")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("a valid metrics token is required")
        return Response(telemetry.render(), media_type=CONTENT_TYPE_LATEST)
