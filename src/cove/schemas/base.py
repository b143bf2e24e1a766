"""Shared configuration of every wire model: camelCase on the wire."""

from __future__ import annotations

import types
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


class IntegralNumbers(BaseModel):
    """Strict, but a JSON number with an integral value is an integer (``286.0``), as
    JSON Schema says; ``286.5``, ``true`` and ``"286"`` are not."""

    @model_validator(mode="before")
    @classmethod
    def _integral(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = _integer_fields(cls)
        return {key: int(value) if key in names and type(value) is float and value.is_integer()
                else value for key, value in data.items()}  # fmt: skip


@cache
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The names and aliases of a model's fields of type ``int`` (or ``int | None``)."""
    found = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        is_union = get_origin(annotation) in (Union, types.UnionType)
        kinds = {_bare(a) for a in get_args(annotation)} if is_union else {annotation}
        if int in kinds and float not in kinds:
            found.update({name, field.alias or name})
    return frozenset(found)


def _bare(annotation: Any) -> Any:
    """``int`` for ``Annotated[int, ...]``."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


class WireModel(IntegralNumbers):
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
