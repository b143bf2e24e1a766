"""Quotas and usage: ``GET /organizations/{organizationId}/usage`` (Daytona's
OrganizationUsageOverview) and Daytona's analytics API (``analyticsApiUrl`` in
``/api/config``: ``/api/analytics``): usage totals, per sandbox, periods and charts,
and the sandbox metrics its SDKs read there. Only the caller's organization: another
one's id is not found (404, as ``GET /organizations/{id}``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import iso
from cove.core.auth import Principal
from cove.core.metering import Totals
from cove.core.quotas import GIB, Quota, Usage
from cove.errors import BadRequest
from cove.schemas.limits import NO_NUL
from cove.schemas.usage import (
    AggregatedUsage,
    MetricPoint,
    OrganizationUsageOverview,
    RegionUsageOverview,
    SandboxUsage,
    UsageChartPoint,
    UsagePeriod,
)
from cove.server import Services

router = APIRouter(tags=["organizations"])
analytics = APIRouter(prefix="/analytics", tags=["analytics"])
OrgId = Annotated[str, Path(alias="organizationId", max_length=64)]
SandboxId = Annotated[str, Path(alias="sandboxId", max_length=255)]
From = Annotated[datetime, Query(alias="from")]
MetricNames = Annotated[str | None, Query(alias="metricNames", max_length=4096, pattern=NO_NUL)]
REGION = "local"  # the one region of a Cove server (sandboxes' default target)


@router.get("/organizations/{organizationId}/usage")
async def get_organization_usage_overview(
    organization_id: OrgId, who: PrincipalDep, services: ServicesDep
) -> OrganizationUsageOverview:
    """The organization's quotas and what it holds now."""
    _own(services, who, organization_id)
    quotas = services.quotas
    return _overview(quotas.quota(organization_id), quotas.usage(organization_id),
                     services.settings.max_cpu, services.settings.max_memory,
                     services.settings.max_disk)  # fmt: skip


@analytics.get("/organization/{organizationId}/usage/aggregated")
async def get_aggregated_usage(
    organization_id: OrgId, start: From, to: datetime, who: PrincipalDep, services: ServicesDep
) -> AggregatedUsage:
    """The organization's usage between ``from`` and ``to`` (RFC 3339), to the second."""
    _own(services, who, organization_id)
    meter = services.meter
    periods = meter.periods(organization_id, *_range(start, to))
    totals = meter.totals(periods, to)
    count = len({p.sandbox_id for p in periods})
    return AggregatedUsage.model_validate({**_totals(totals), "sandbox_count": count})


@analytics.get("/organization/{organizationId}/usage/sandbox")
async def get_usage_per_sandbox(
    organization_id: OrgId, start: From, to: datetime, who: PrincipalDep, services: ServicesDep
) -> list[SandboxUsage]:
    """The usage of each of the organization's sandboxes between ``from`` and ``to``."""
    _own(services, who, organization_id)
    meter = services.meter
    by_sandbox = meter.by_sandbox(meter.periods(organization_id, *_range(start, to)), to)
    return [SandboxUsage.model_validate({**_totals(t), "sandbox_id": sid})
            for sid, t in by_sandbox.items()]  # fmt: skip


@analytics.get("/organization/{organizationId}/usage/chart")
async def get_usage_chart(
    organization_id: OrgId, start: From, to: datetime, who: PrincipalDep, services: ServicesDep,
    region: Annotated[str | None, Query(max_length=64)] = None,
) -> list[UsageChartPoint]:  # fmt: skip
    """The organization's usage per interval between ``from`` and ``to`` (at most 200
    points, each a minute, 5 or 15 minutes, an hour, 6 hours, a day or a week)."""
    _own(services, who, organization_id)
    meter, span = services.meter, _range(start, to)
    periods = meter.periods(organization_id, *span) if region in (None, "", REGION) else []
    return [UsageChartPoint(
        time=iso(at), cpu=round(t.cpu_seconds), cpu_price=t.cpu_price,
        ram_gb=round(t.ram_gib_seconds), ram_price=t.ram_price,
        disk_gb=round(t.disk_gib_seconds), disk_price=t.disk_price,
    ) for at, t in meter.chart(periods, start, to)]  # fmt: skip


@analytics.get("/organization/{organizationId}/sandbox/{sandboxId}/usage")
async def get_sandbox_usage_periods(
    organization_id: OrgId, sandbox_id: SandboxId, start: From, to: datetime,
    who: PrincipalDep, services: ServicesDep,
) -> list[UsagePeriod]:  # fmt: skip
    """What the sandbox held, period by period, between ``from`` and ``to`` (each
    clipped to the range; an open one has no ``endAt``)."""
    _own(services, who, organization_id)
    meter = services.meter
    periods = meter.periods(organization_id, *_range(start, to), sandbox_id=sandbox_id)
    return [UsagePeriod(
        start_at=iso(p.start_at), end_at=iso(p.end_at) if p.end_at else None, cpu=p.held.cpu,
        ram_gb=p.held.memory, disk_gb=p.held.disk, price=meter.totals([p], to).price,
    ) for p in periods]  # fmt: skip


@analytics.get("/organization/{organizationId}/sandbox/{sandboxId}/telemetry/metrics")
async def get_sandbox_metrics(
    organization_id: OrgId, sandbox_id: SandboxId, start: From, to: datetime,
    who: PrincipalDep, services: ServicesDep, metric_names: MetricNames = None,
) -> list[MetricPoint]:  # fmt: skip
    """The sandbox's sampled metrics (as ``/sandbox/{id}/telemetry/metrics``), flat."""
    _own(services, who, organization_id)
    sandbox = services.lifecycle.get(organization_id, sandbox_id)
    names = [n for n in (metric_names or "").split(",") if n] or None
    series = services.metrics.series(sandbox.id, *_range(start, to), names)
    return [MetricPoint(metric_name=name, timestamp=iso(at), value=value)
            for name, points in series.items() for at, value in points]  # fmt: skip


def _own(services: Services, who: Principal, organization_id: str) -> None:
    """Raises NotFound for any organization but the caller's (as /organizations/{id})."""
    services.organizations.get(who, organization_id)


def _range(start: datetime, to: datetime) -> tuple[datetime, datetime]:
    if start.tzinfo is None or to.tzinfo is None:
        raise BadRequest("from and to need a time zone (e.g. Z)")
    if to <= start:
        raise BadRequest("to must be after from")
    if start.year < 1970 or to.year > 9000:
        raise BadRequest("from and to must lie between 1970 and 9000")
    return start, to


def _totals(t: Totals) -> dict[str, object]:
    return {
        "first_start": iso(t.first_start) if t.first_start else None,
        "last_end": iso(t.last_end) if t.last_end else None,
        "total_cpu_seconds": round(t.cpu_seconds), "total_ram_gb_seconds": round(t.ram_gib_seconds),
        "total_disk_gb_seconds": round(t.disk_gib_seconds), "total_price": t.price,
    }  # fmt: skip


def _overview(quota: Quota, usage: Usage, max_cpu: int, max_memory: int,
              max_disk: int) -> OrganizationUsageOverview:  # fmt: skip
    region = RegionUsageOverview(
        region_id=REGION, total_cpu_quota=quota.cpu, current_cpu_usage=usage.compute.cpu,
        total_memory_quota=quota.memory, current_memory_usage=usage.compute.memory,
        total_disk_quota=quota.disk, current_disk_usage=usage.compute.disk,
        max_cpu_per_sandbox=_lower(max_cpu, quota.max_cpu_per_sandbox),
        max_memory_per_sandbox=_lower(max_memory, quota.max_memory_per_sandbox),
        max_disk_per_sandbox=_lower(max_disk, quota.max_disk_per_sandbox),
    )  # fmt: skip
    return OrganizationUsageOverview(
        region_usage=[region], total_snapshot_quota=quota.snapshots,
        current_snapshot_usage=usage.snapshots, total_volume_quota=quota.volumes,
        current_volume_usage=usage.volumes, total_sandbox_quota=quota.sandboxes,
        current_sandbox_usage=usage.sandboxes,
        total_snapshot_storage_quota=quota.snapshot_storage,
        current_snapshot_storage_usage=round(usage.snapshot_bytes / GIB, 3),
    )  # fmt: skip


def _lower(server: int, organization: int | None) -> int:
    """The per-sandbox maximum in force: the server's, or the organization's if lower."""
    return server if organization is None else min(server, organization)
