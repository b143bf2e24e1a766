"""A started sandbox's current use of its resources, as Daytona's daemon reports it
(``GET /toolbox/{id}/system/metrics``), from the runner's view of its cgroups and disk.

CPU use is a rate: it is measured over ``SAMPLE_SECONDS`` between two readings.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from cove.core.ports import Runner
from cove.core.sandbox import Sandbox
from cove.schemas.toolbox_system import SystemMetrics

SAMPLE_SECONDS = 0.2
GIB = 1024**3


async def latest(runner: Runner, sandbox: Sandbox) -> SystemMetrics:
    """The sandbox's CPU, memory and disk use now.

    Raises:
        RuntimeBackendError: the sandbox stopped meanwhile.
    """
    first, began = await runner.stats(sandbox.id), time.monotonic()
    await asyncio.sleep(SAMPLE_SECONDS)
    now, ended = await runner.stats(sandbox.id), time.monotonic()
    cpus = sandbox.resources.cpu
    busy = max(now.cpu_usage_ns - first.cpu_usage_ns, 0) / 1e9
    percent = min(100.0, 100.0 * busy / ((ended - began) * cpus)) if cpus > 0 else 0.0
    total_disk = now.disk_total or sandbox.resources.disk * GIB
    stamp = datetime.now(UTC)
    return SystemMetrics(
        cpu_count=cpus, cpu_used_pct=round(percent, 2),
        mem_total=sandbox.resources.memory * GIB, mem_used=now.memory_bytes,
        mem_cache=now.cache_bytes, disk_total=total_disk, disk_used=now.disk_used,
        disk_free=max(total_disk - now.disk_used, 0),
        timestamp=stamp.isoformat().replace("+00:00", "Z"), timestamp_unix=int(stamp.timestamp()),
    )  # fmt: skip
