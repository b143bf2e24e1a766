"""Parsing the Dockerfiles Cove can build: ``FROM <local snapshot>`` followed by
``RUN``, ``ENV`` and ``WORKDIR``.

``COPY`` and ``ADD`` are refused: the SDK uploads their context to object
storage, which this server does not have. ``LABEL``, ``EXPOSE``, ``CMD`` and
``ENTRYPOINT`` are skipped (a sandbox runs its own init); anything else
(``USER``, ``ARG``, ``SHELL``, a second ``FROM``...) is refused. The digest
(of the whole text) names the built snapshot, so the same Dockerfile is built once.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field

from cove.errors import BadRequest

_FROM = re.compile(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+\S+)?$", re.I)
_SKIPPED = frozenset({"LABEL", "EXPOSE", "CMD", "ENTRYPOINT"})


@dataclass(frozen=True)
class Step:
    """One instruction to execute: ``RUN`` (argv for the shell), ``ENV`` or ``WORKDIR``."""

    kind: str
    text: str  # the instruction as written, for logs and errors
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    path: str = ""


@dataclass(frozen=True)
class BuildPlan:
    base: str
    steps: tuple[Step, ...] = field(default=())
    digest: str = ""

    @property
    def env(self) -> dict[str, str]:
        """Every ``ENV`` of the Dockerfile, in order (later wins)."""
        return {k: v for step in self.steps for k, v in step.env}


def parse(dockerfile: str) -> BuildPlan:
    """The plan of a Dockerfile.

    Raises:
        BadRequest: no ``FROM`` first, a multi-stage build, or an instruction Cove
            cannot build (``COPY``/``ADD`` and anything unknown).
    """
    lines = _logical_lines(dockerfile)
    if not lines or lines[0][0] != "FROM":
        raise BadRequest("the Dockerfile must start with FROM <snapshot>")
    match = _FROM.match(lines[0][1])
    if match is None:
        raise BadRequest(f"invalid FROM line: {lines[0][1]!r}")
    steps = tuple(
        step for keyword, rest in lines[1:] if (step := _step(keyword, rest)) is not None
    )
    digest = hashlib.sha256(dockerfile.strip().encode()).hexdigest()
    return BuildPlan(base=match.group(1), steps=steps, digest=digest)


def _logical_lines(dockerfile: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _step(keyword: str, rest: str) -> Step | None:
    text = f"{keyword} {rest}"
    if keyword == "RUN":
        return Step("RUN", text, argv=_run_argv(rest))
    if keyword == "ENV":
        return Step("ENV", text, env=_env_pairs(rest))
    if keyword == "WORKDIR":
        path = _one_word(rest)
        if not path.startswith("/"):
            raise BadRequest(f"WORKDIR must be an absolute path: {text!r}")
        return Step("WORKDIR", text, path=path)
    if keyword in ("COPY", "ADD"):
        raise BadRequest(
            f"{keyword} is not supported: this server has no object storage for the build "
            "context; write files with RUN instead"
        )
    if keyword == "FROM":
        raise BadRequest("multi-stage Dockerfiles are not supported")
    if keyword in _SKIPPED:
        return None
    raise BadRequest(f"Dockerfile instruction {keyword} is not supported (RUN, ENV, WORKDIR are)")


def _run_argv(rest: str) -> tuple[str, ...]:
    if not rest:
        raise BadRequest("RUN needs a command")
    if rest.startswith("["):
        try:
            argv = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid RUN exec form: {rest!r}") from exc
        if not argv or not all(isinstance(a, str) for a in argv):
            raise BadRequest(f"invalid RUN exec form: {rest!r}")
        return tuple(argv)
    return ("/bin/sh", "-c", rest)


def _env_pairs(rest: str) -> tuple[tuple[str, str], ...]:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise BadRequest(f"invalid ENV: {rest!r}") from exc
    if not words:
        raise BadRequest("ENV needs a value")
    if "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        key, _, value = rest.partition(" ")
        return ((key, value.strip()),)
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise BadRequest(f"invalid ENV: {rest!r}")
        pairs.append((key, value))
    return tuple(pairs)


def _one_word(rest: str) -> str:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise BadRequest(f"invalid argument: {rest!r}") from exc
    if len(words) != 1:
        raise BadRequest(f"expected one argument, got {rest!r}")
    return words[0]
