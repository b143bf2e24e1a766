"""Bounds on what clients may send, as annotated types the OpenAPI shows.

Every string that reaches a sandbox's agent, a command line, the database or a
file name is free of NUL; sizes are bounded so that one tenant cannot make the
server (or its database) hold megabytes per request. README.md ("Limits")
lists the figures.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

NO_NUL = r"^[^\x00]*$"
MAX_PATH = 4096  # Linux PATH_MAX
MAX_ENV_VARS = 512
MAX_ENV_NAME = 256
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_BYTES = 128 * 1024  # Linux MAX_ARG_STRLEN: what one NAME=value may be in execve
MAX_LABELS = 64
MAX_LABEL_KEY = 253
MAX_LABEL_VALUE = 1024
MAX_NAME = 255
MAX_ID = 255
MAX_INTERVAL = 2**31 - 1  # minutes; what a 32-bit database column holds
MAX_TIMEOUT = 2**31 - 1  # seconds
MAX_BODY = 1024 * 1024  # request bodies other than file uploads

# A string with no NUL (what execve, paths and PostgreSQL text cannot carry).
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
# A path inside a sandbox: 1..4096 characters, no NUL.
SandboxPath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH, pattern=NO_NUL)]
# An id of an object kept by the agent (session, command, terminal, context).
AgentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID, pattern=NO_NUL)]
# An environment variable's name: no '=', no NUL (POSIX), and its value.
EnvName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ENV_NAME, pattern=r"^[^=\x00]+$")
]
EnvValue = Annotated[str, StringConstraints(max_length=MAX_ENV_VALUE, pattern=NO_NUL)]
LabelKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_LABEL_KEY, pattern=NO_NUL)
]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE, pattern=NO_NUL)]
# A plain name (sandbox, volume): letters, digits, '-', '_', '.'.
PLAIN_NAME = r"^[A-Za-z0-9_.-]+$"
# A Linux user name as useradd accepts it.
USER_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"


def _env_size(env: dict[str, str] | None) -> dict[str, str] | None:
    size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in (env or {}).items())
    if size > MAX_ENV_BYTES:
        raise ValueError(f"environment variables take {size} bytes, at most {MAX_ENV_BYTES}")
    return env


def _keys_as_property_names(schema: dict[str, Any]) -> None:
    """Pydantic spells a key pattern as ``patternProperties`` (which lets other keys
    through); the keys' constraints belong in ``propertyNames``."""
    for pattern, values in schema.pop("patternProperties", {}).items():
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values


# Environment variables as a request carries them (bounded in count and in bytes).
EnvMap = Annotated[
    dict[EnvName, EnvValue],
    Field(max_length=MAX_ENV_VARS, json_schema_extra=_keys_as_property_names),
    AfterValidator(_env_size),
]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(max_length=MAX_LABELS, json_schema_extra=_keys_as_property_names),
]
Minutes = Annotated[int, Field(ge=0, le=MAX_INTERVAL)]
