"""``GET /sandbox/{id}/telemetry/metrics``: Daytona's MetricsResponse."""

from __future__ import annotations

from cove.schemas.base import WireModel


class MetricDataPoint(WireModel):
    timestamp: str
    value: float


class MetricSeries(WireModel):
    metric_name: str
    data_points: list[MetricDataPoint]


class MetricsResponse(WireModel):
    series: list[MetricSeries]
