"""Wire models of the toolbox API (what the SDK's toolbox client speaks)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cove.schemas.base import WireModel
from cove.schemas.limits import (
    MAX_ENV_VARS,
    MAX_TIMEOUT,
    EnvMap,
    EnvName,
    EnvValue,
    SandboxPath,
    Text,
)


class ExecuteRequest(WireModel):
    command: Text
    cwd: SandboxPath | None = None
    envs: EnvMap | None = None
    timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)


class ExecuteResponse(WireModel):
    exit_code: int
    result: str


class CodeRunRequest(WireModel):
    code: Text
    language: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.+-]*$")
    argv: list[Text] | None = Field(default=None, max_length=1024)
    envs: EnvMap | None = None
    timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)


class _ChartModel(BaseModel):
    """Daytona's chart fields are snake_case on the wire; types as strict as the SDK's
    (its Python client rejects a chart of other types), numbers finite (JSON's)."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class ChartPart(_ChartModel):
    """One element of a chart: a series (label, points), a bar (label, group, value),
    a pie wedge (label, angle, radius), a box (label, min, quartiles, median, max,
    outliers), or a composite chart's sub-chart (type, title, labels, elements)."""

    label: str | None = None
    points: list[list[float]] | None = None
    group: str | None = None
    value: str | None = None
    angle: float | None = None
    radius: float | None = None
    min: float | None = None
    first_quartile: float | None = None
    median: float | None = None
    third_quartile: float | None = None
    max: float | None = None
    outliers: list[float] | None = None
    type: str | None = None
    title: str | None = None
    png: str | None = None
    x_label: str | None = None
    y_label: str | None = None


class _ChartAxes(_ChartModel):
    """The ticks and scales of a chart's axes."""

    x_ticks: list[float] | None = None
    x_tick_labels: list[str] | None = None
    x_scale: str | None = None
    y_ticks: list[float] | None = None
    y_tick_labels: list[str] | None = None
    y_scale: str | None = None


class ChartElement(ChartPart, _ChartAxes):
    """A chart's element; a sub-chart of a composite chart also has its own elements
    and axes (the SDK keeps them as extra properties)."""

    elements: list[ChartPart] | None = None


class Chart(_ChartAxes):
    """A matplotlib figure as ``code_run`` returns it (``png`` is base64)."""

    type: str | None = None
    title: str | None = None
    png: str | None = None
    elements: list[ChartElement] | None = None
    x_label: str | None = None
    y_label: str | None = None


class ChartArtifact(_ChartModel):
    """An artifact line's JSON (after its marker): only charts are artifacts."""

    type: Literal["chart"]
    value: Chart


class CodeRunArtifacts(WireModel):
    charts: list[Chart] = Field(default_factory=list)


class CodeRunResponse(WireModel):
    exit_code: int
    result: str
    artifacts: CodeRunArtifacts = Field(default_factory=CodeRunArtifacts)


class DirResponse(WireModel):
    dir: str


class EnvUpdate(WireModel):
    set: EnvMap | None = None
    unset: list[Text] | None = None


class UpdateEnvRequest(WireModel):
    """``POST /env``: names to remove, then variables to set, for processes started later."""

    set: EnvMap | None = None
    unset: list[EnvName] | None = Field(default=None, max_length=MAX_ENV_VARS)
    unset_value_prefix: EnvValue | None = Field(default=None, min_length=1)
