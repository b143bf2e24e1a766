"""The wire between the API and a ``cove runner``: which Runner calls cross it, how
their arguments and answers are encoded, and how errors come back.

A call is ``POST /v1/call/<method>`` with a JSON object of its arguments; the answer
is ``{"result": ...}``, or an HTTP error status with ``{"error": {"type", "message"}}``
(``type`` names a class of :mod:`cove.errors`). ``pull_image`` answers with JSON
lines: ``{"progress": line}`` as the pull goes, then the result or the error. The
port's dataclasses are encoded field by field (pydantic), and decoded with their
types checked on both sides.

A byte stream (a sandbox's agent or one of its ports) is a TLS connection to the
runner's stream port: one JSON line ``{"sandbox": id, "port": n | null}`` (null: the
agent), one JSON line back (``{"ok": true}`` or ``{"error": ...}``), then raw bytes
both ways.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

from pydantic import TypeAdapter

from cove import errors
from cove.core.ports import (
    Capacity,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
)

SID = "sandbox_id"
# method: ({argument: type}, result type or None)
METHODS: dict[str, tuple[dict[str, Any], Any]] = {
    "create": ({"spec": ContainerSpec}, None),
    "start": ({"spec": ContainerSpec}, None),
    "adopt": ({"spec": ContainerSpec}, None),
    "stop": ({SID: str, "force": bool}, None),
    "destroy": ({SID: str}, None),
    "archive": ({SID: str}, int),
    "restore": ({"spec": ContainerSpec}, None),
    "pause": ({SID: str}, None),
    "resume": ({SID: str}, None),
    "fork": ({"source_id": str, "spec": ContainerSpec}, None),
    "capture": ({SID: str, "ref": str, "config": ImageConfig | None}, int),
    "clone_snapshot": ({"source": str, "ref": str, "config": ImageConfig}, int),
    "import_image": ({"ref": str, "image": str}, PulledImage),
    "pull_image": ({"ref": str, "image": str, "auth": RegistryAuth | None}, PulledImage),
    "remove_snapshot": ({"ref": str}, None),
    "delete_volume": ({"volume_id": str}, None),
    "archive_volume": ({"volume_id": str}, int),
    "resize": ({SID: str, "resources": Resources, "live": bool}, None),
    "status": ({SID: str}, ContainerStatus),
    "list_ids": ({}, list[str]),
    "tidy": ({SID: str}, None),
    "remove_stale_work": ({}, None),
    "set_network": ({SID: str, "policy": NetworkPolicy}, None),
    "stats": ({SID: str}, ContainerStats),
    # Not of the Runner port: the API's placement and drains ask them.
    "capacity": ({}, Capacity),
    "release": ({SID: str}, None),
}
# Calls after which the runner's snapshot inventory may have changed.
INVENTORY_CHANGES = {"capture", "clone_snapshot", "import_image", "pull_image",
                     "remove_snapshot"}  # fmt: skip
# Names that reach host paths on the runner: one path component, never hidden.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,199}$")
_NAMED = {SID, "source_id", "ref", "source", "volume_id"}
ERRORS: dict[str, type[errors.CoveError]] = {
    cls.__name__: cls
    for cls in (errors.BadRequest, errors.QuotaExceeded, errors.NotFound, errors.Conflict,
                errors.InvalidState, errors.Timeout, errors.RuntimeBackendError,
                errors.Unavailable, errors.Busy, errors.PayloadTooLarge)
}  # fmt: skip


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def encode(tp: Any, value: Any) -> Any:
    """``value`` (of type ``tp``) as JSON-ready data."""
    return _adapter(tp).dump_python(value, mode="json")


def decode(tp: Any, data: Any) -> Any:
    """Data received for type ``tp``, checked.

    Raises:
        pydantic.ValidationError: ``data`` is not a ``tp``.
    """
    value = _adapter(tp).validate_python(data)
    if isinstance(value, ContainerSpec):  # a sequence arrives as a list: as sent, a tuple
        value = dataclasses.replace(value, volumes=tuple(value.volumes))
    return value


def encode_args(method: str, args: dict[str, Any]) -> dict[str, Any]:
    params, _ = METHODS[method]
    return {name: encode(tp, args[name]) for name, tp in params.items()}


def decode_args(method: str, data: object) -> dict[str, Any]:
    """The arguments of ``method`` from a request body.

    Raises:
        BadRequest: an unknown method, a missing or mistyped argument, or a name that
            would reach outside the runner's directories.
    """
    if method not in METHODS or not isinstance(data, dict):
        raise errors.BadRequest(f"no such runner call: {method!r}")
    params, _ = METHODS[method]
    if set(data) != set(params):
        raise errors.BadRequest(f"{method}: expected arguments {sorted(params)}")
    try:
        args = {name: decode(tp, data[name]) for name, tp in params.items()}
    except ValueError as exc:
        raise errors.BadRequest(f"{method}: {exc}") from None
    for name in _NAMED & set(args):
        check_name(args[name])
    if "spec" in args:
        check_name(args["spec"].sandbox_id)
        for bind in args["spec"].volumes:
            check_name(bind.volume_id)
    return args


def check_name(name: str) -> str:
    """``name`` if it is a safe sandbox id or snapshot ref (one path component).

    Raises:
        BadRequest: it is not.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise errors.BadRequest(f"bad name {name!r}")
    return name


def error_body(exc: BaseException) -> dict[str, Any]:
    """The wire form of an error the runner raised (anything foreign is a runtime error)."""
    if isinstance(exc, errors.CoveError) and type(exc).__name__ in ERRORS:
        return {"type": type(exc).__name__, "message": exc.message}
    return {"type": "RuntimeBackendError", "message": f"runner failed: {type(exc).__name__}"}


def error_from(body: object, fallback: str) -> errors.CoveError:
    """The error a runner sent (``fallback`` as the message when it sent none usable)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        cls = ERRORS.get(str(err.get("type")), errors.RuntimeBackendError)
        return cls(err["message"])
    return errors.RuntimeBackendError(fallback)
