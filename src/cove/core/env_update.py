"""``POST /toolbox/{id}/env``: change the environment later processes of a running
sandbox start with.

As with Daytona's daemon, processes, sessions and terminals started afterwards see
the change; running ones keep their environment; the change lasts until the sandbox
stops (it is kept in the sandbox record as ``runtime_env``, cleared by
:func:`cove.core.sandbox.transition`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cove.errors import BadRequest
from cove.schemas.limits import MAX_ENV_BYTES, MAX_ENV_VARS


def env_bytes(env: Mapping[str, str]) -> int:
    """What ``env`` takes as ``NAME=value`` strings."""
    return sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())


def updated_env(current: Mapping[str, str], set_: Mapping[str, str] | None,
                unset: Sequence[str] | None, unset_value_prefix: str | None,
                ) -> dict[str, str]:  # fmt: skip
    """``current`` without the ``unset`` names and, with ``unset_value_prefix``, without
    the variables whose value starts with it (but those ``set_`` sets), then ``set_``.

    Raises:
        BadRequest: the result grows beyond the limits of an environment at create.
    """
    set_ = dict(set_ or {})
    gone = set(unset or ())
    env = {k: v for k, v in current.items() if k not in gone}
    if unset_value_prefix:
        env = {k: v for k, v in env.items() if k in set_ or not v.startswith(unset_value_prefix)}
    env.update(set_)
    if len(env) > max(MAX_ENV_VARS, len(current)):
        raise BadRequest(f"the environment would hold {len(env)} variables, "
                         f"at most {MAX_ENV_VARS}")  # fmt: skip
    if env_bytes(env) > max(MAX_ENV_BYTES, env_bytes(current)):
        raise BadRequest(f"environment variables would take {env_bytes(env)} bytes, "
                         f"at most {MAX_ENV_BYTES}")  # fmt: skip
    return env
