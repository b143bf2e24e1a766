"""Shared configuration of every wire model: camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """A model spoken in camelCase, accepting snake_case from Python callers.

    Strict: a JSON ``0`` is no boolean and ``false`` no number (what the schema says).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              strict=True)


class ErrorEnvelope(WireModel):
    """Daytona's error body."""

    status_code: int
    message: str
    code: str
    source: str = "DAYTONA_API"
    error: str
    timestamp: str
    path: str | None = None
    method: str | None = None
