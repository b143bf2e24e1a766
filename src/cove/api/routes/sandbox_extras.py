"""A sandbox's secrets (``PUT /sandbox/{id}/secrets``) and its metrics history
(``GET /sandbox/{id}/telemetry/metrics``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from cove.api.deps import PrincipalDep, ServicesDep
from cove.api.dto import iso, sandbox_public
from cove.errors import BadRequest
from cove.schemas.limits import NO_NUL
from cove.schemas.sandbox import SandboxPublic
from cove.schemas.secret import SandboxSecretsUpdate
from cove.schemas.telemetry import MetricDataPoint, MetricSeries, MetricsResponse

router = APIRouter(prefix="/sandbox", tags=["sandbox"])
MetricName = Annotated[str, Query(max_length=255, pattern=NO_NUL)]


@router.put("/{id_or_name}/secrets")
async def update_sandbox_secrets(
    id_or_name: str, body: SandboxSecretsUpdate, who: PrincipalDep, services: ServicesDep
) -> SandboxPublic:
    """Replace the secrets mounted in a sandbox (``[]`` detaches all). Processes started
    afterwards see the new set of env vars (each holding its secret's placeholder)."""
    sandbox = services.lifecycle.get(who.organization_id, id_or_name)
    mounts = services.secrets.resolve(who.organization_id, body.secrets, sandbox.env)
    services.secrets.mount(sandbox.id, mounts)
    return sandbox_public(sandbox, services.settings.toolbox_proxy_url)


@router.get("/{id_or_name}/telemetry/metrics")
async def sandbox_metrics(
    id_or_name: str, who: PrincipalDep, services: ServicesDep,
    start: Annotated[datetime, Query(alias="from")], to: datetime,
    metric_names: Annotated[list[MetricName] | None,
                            Query(alias="metricNames", max_length=64)] = None,
) -> MetricsResponse:  # fmt: skip
    """The sandbox's sampled metrics between ``from`` and ``to`` (ISO 8601), under
    Daytona's metric names (``metricNames`` filters; repeated or comma-separated)."""
    if start.tzinfo is None or to.tzinfo is None:
        raise BadRequest("from and to need a time zone (e.g. Z)")
    sandbox = services.lifecycle.get(who.organization_id, id_or_name)
    names = [n for raw in metric_names for n in raw.split(",") if n] if metric_names else None
    series = services.metrics.series(sandbox.id, start, to, names)
    return MetricsResponse(series=[
        MetricSeries(metric_name=name, data_points=[
            MetricDataPoint(timestamp=iso(at), value=value) for at, value in points])
        for name, points in series.items()
    ])  # fmt: skip
