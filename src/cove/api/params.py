"""Bounded path and query parameters of the toolbox routes (see ``schemas/limits.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import Path, Query
from fastapi._compat import field_annotation_is_sequence
from starlette.requests import HTTPConnection

from cove.errors import BadRequest
from cove.schemas.limits import MAX_ID, MAX_PATH, NO_NUL

# A path inside the sandbox, as a query parameter.
SandboxPathQuery = Annotated[str, Query(min_length=1, max_length=MAX_PATH, pattern=NO_NUL)]
OptionalPathQuery = Annotated[
    str | None, Query(min_length=1, max_length=MAX_PATH, pattern=NO_NUL)
]
# A glob or a text to look for.
PatternQuery = Annotated[str, Query(min_length=1, max_length=MAX_PATH, pattern=NO_NUL)]
# An octal file mode ("755") and a user or group name or number.
ModeQuery = Annotated[str | None, Query(pattern=r"^[0-7]{1,4}$")]
OwnerQuery = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")]
# The id of a session, command, terminal or interpreter context, in the URL path.
AgentIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=NO_NUL)]


async def single_query_values(conn: HTTPConnection) -> None:
    """Refuse a query parameter of one value given more than once (``?path=a&path=b``):
    the document says it is one value, and which one would count is a guess.

    Raises:
        BadRequest: such a parameter is repeated.
    """
    dependant = getattr(conn.scope.get("route"), "dependant", None)
    counts = Counter(key for key, _ in conn.query_params.multi_items())
    for field in getattr(dependant, "query_params", ()):
        listed = field_annotation_is_sequence(field.field_info.annotation)
        if counts[field.alias] > 1 and not listed:
            raise BadRequest(f"{field.alias}: may be given only once")
