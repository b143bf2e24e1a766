"""Quotas and usage on the wire: Daytona's ``GET /organizations/{id}/usage``
(OrganizationUsageOverview) and its analytics API's usage models (``models.*``)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel


class RegionUsageOverview(WireModel):
    """The organization's quota and current usage in one region (Cove has one)."""

    region_id: str
    sandbox_class: str = "container"
    total_cpu_quota: int  # 0: no limit
    current_cpu_usage: int
    total_memory_quota: int
    current_memory_usage: int
    total_disk_quota: int
    current_disk_usage: int
    total_gpu_quota: int = 0
    current_gpu_usage: int = 0
    max_cpu_per_sandbox: int | None
    max_memory_per_sandbox: int | None
    max_disk_per_sandbox: int | None
    max_disk_per_non_ephemeral_sandbox: int | None = None
    max_cpu_per_gpu: int | None = None
    max_memory_per_gpu: int | None = None
    max_disk_per_gpu: int | None = None


class OrganizationUsageOverview(WireModel):
    region_usage: list[RegionUsageOverview]
    total_snapshot_quota: int
    current_snapshot_usage: int
    total_volume_quota: int
    current_volume_usage: int
    # Cove's own: the sandbox count and snapshot storage quotas (GiB) and usage.
    total_sandbox_quota: int = 0
    current_sandbox_usage: int = 0
    total_snapshot_storage_quota: int = 0
    current_snapshot_storage_usage: float = 0.0


class AggregatedUsage(WireModel):
    """models.AggregatedUsage: an organization's totals over a range."""

    first_start: str | None = None
    last_end: str | None = None
    sandbox_count: int = 0
    total_cpu_seconds: int = Field(default=0, serialization_alias="totalCPUSeconds")
    total_ram_gb_seconds: int = Field(default=0, serialization_alias="totalRAMGBSeconds")
    total_disk_gb_seconds: int = Field(default=0, serialization_alias="totalDiskGBSeconds")
    total_gpu_seconds: int = Field(default=0, serialization_alias="totalGPUSeconds")
    total_price: float = 0.0


class SandboxUsage(WireModel):
    """models.SandboxUsage: one sandbox's totals over a range."""

    sandbox_id: str
    first_start: str | None = None
    last_end: str | None = None
    total_cpu_seconds: int = Field(default=0, serialization_alias="totalCPUSeconds")
    total_ram_gb_seconds: int = Field(default=0, serialization_alias="totalRAMGBSeconds")
    total_disk_gb_seconds: int = Field(default=0, serialization_alias="totalDiskGBSeconds")
    total_gpu_seconds: int = Field(default=0, serialization_alias="totalGPUSeconds")
    total_price: float = 0.0


class UsagePeriod(WireModel):
    """models.UsagePeriod: what a sandbox held (vCPUs, GiB) from startAt to endAt
    (absent: it still does); ``price`` is that of the period within the range."""

    start_at: str
    end_at: str | None = None
    cpu: int
    ram_gb: int = Field(serialization_alias="ramGB")
    disk_gb: int = Field(serialization_alias="diskGB")
    gpu: int = 0
    price: float


class UsageChartPoint(WireModel):
    """models.UsageChartPoint: usage in the bucket starting at ``time`` (vCPU-seconds,
    GiB-seconds of memory and disk) and its price."""

    time: str
    cpu: int
    cpu_price: float
    ram_gb: int = Field(serialization_alias="ramGB")
    ram_price: float
    disk_gb: int = Field(serialization_alias="diskGB")
    disk_price: float


class MetricPoint(WireModel):
    """models.MetricPoint: one sample of a sandbox metric (the analytics API's
    ``/telemetry/metrics``)."""

    metric_name: str
    timestamp: str
    value: float
