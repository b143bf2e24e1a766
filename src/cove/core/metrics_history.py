"""A bounded history of each started sandbox's metrics (Daytona's
``GET /sandbox/{id}/telemetry/metrics``).

Every ``COVE_METRICS_INTERVAL_SECONDS`` the server samples each started sandbox as
``/system/metrics`` does and keeps its newest ``COVE_METRICS_KEEP`` samples in
memory (a server restart starts them anew; a deleted sandbox's are dropped).
Samples are answered under Daytona's OpenTelemetry metric names.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cove.core import metrics
from cove.core.periodic import every
from cove.core.ports import Runner, SandboxStore
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import CoveError
from cove.schemas.toolbox_system import SystemMetrics

log = logging.getLogger(__name__)
CONCURRENCY = 8

# Daytona's metric name -> the field of /system/metrics it is.
METRIC_FIELDS: dict[str, str] = {
    "daytona.sandbox.cpu.utilization": "cpu_used_pct",
    "daytona.sandbox.cpu.limit": "cpu_count",
    "daytona.sandbox.memory.usage": "mem_used",
    "daytona.sandbox.memory.limit": "mem_total",
    "daytona.sandbox.memory.cache": "mem_cache",
    "daytona.sandbox.filesystem.usage": "disk_used",
    "daytona.sandbox.filesystem.total": "disk_total",
}


@dataclass(frozen=True)
class Sample:
    at: datetime
    values: tuple[float, ...]  # in the order of METRIC_FIELDS


class MetricsHistory:
    """The newest ``keep`` samples of each sandbox, taken every ``interval`` seconds."""

    def __init__(self, runner: Runner, store: SandboxStore, *, interval: float, keep: int) -> None:
        self.runner, self.store = runner, store
        self.interval, self.keep = interval, keep
        self._samples: dict[str, deque[Sample]] = {}

    def record(self, sandbox_id: str, reading: SystemMetrics) -> None:
        """Keep one reading (the oldest beyond ``keep`` is dropped)."""
        at = datetime.fromisoformat((reading.timestamp or "").replace("Z", "+00:00"))
        values = tuple(float(getattr(reading, f) or 0) for f in METRIC_FIELDS.values())
        ring = self._samples.setdefault(sandbox_id, deque(maxlen=self.keep))
        ring.append(Sample(at, values))

    def forget(self, sandbox_id: str) -> None:
        self._samples.pop(sandbox_id, None)

    def series(
        self, sandbox_id: str, start: datetime, end: datetime, names: Iterable[str] | None
    ) -> dict[str, list[tuple[datetime, float]]]:
        """Metric name -> its (time, value) points within [start, end], oldest first.
        Unknown names are left out; ``None`` means all."""
        wanted = [n for n in (names or METRIC_FIELDS) if n in METRIC_FIELDS]
        index = {name: i for i, name in enumerate(METRIC_FIELDS)}
        samples = [s for s in self._samples.get(sandbox_id, ()) if start <= s.at <= end]
        return {n: [(s.at, s.values[index[n]]) for s in samples] for n in dict.fromkeys(wanted)}

    async def sample_all(self) -> int:
        """Sample every started sandbox once; returns how many were sampled."""
        started = [sb for sb in self.store.all()
                   if sb.state is SandboxState.STARTED and sb.organization_id]  # fmt: skip
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(sandbox: Sandbox) -> bool:
            async with gate:
                try:
                    self.record(sandbox.id, await metrics.latest(self.runner, sandbox))
                    return True
                except CoveError as exc:  # stopped meanwhile
                    log.debug("metrics of %s: %s", sandbox.id, exc.message)
                    return False

        return sum(await asyncio.gather(*(one(sb) for sb in started)))

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        await every(self.interval, self.sample_all, "metrics sampling")
