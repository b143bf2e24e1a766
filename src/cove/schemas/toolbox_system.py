"""Wire models of the toolbox's system endpoints (``/system/...``)."""

from __future__ import annotations

from cove.schemas.base import WireModel


class SystemMetrics(WireModel):
    """``GET /system/metrics``: the sandbox's current use of its CPU, memory and disk
    (bytes; ``cpuUsedPct`` of all its vCPUs together, 0-100)."""

    cpu_count: int | None = None
    cpu_used_pct: float | None = None
    mem_total: int | None = None
    mem_used: int | None = None
    mem_cache: int | None = None
    disk_total: int | None = None
    disk_used: int | None = None
    disk_free: int | None = None
    timestamp: str | None = None
    timestamp_unix: int | None = None
