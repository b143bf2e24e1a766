"""Parsing the Dockerfiles Cove builds: ``FROM <snapshot or image>`` followed by any
instruction the SDK's ``Image`` emits: ``RUN``, ``ENV``, ``WORKDIR``, ``COPY`` and
``ADD`` (from the uploaded build contexts, ``--chown`` honoured), ``USER``, ``ARG``
(defaults; ``$VAR``/``${VAR}``/``${VAR:-x}``/``${VAR:+x}`` substituted as Docker does),
``LABEL``, ``ENTRYPOINT``, ``CMD`` (recorded with the snapshot) and ``EXPOSE``
(ignored). ``SHELL``, ``ONBUILD``, ``HEALTHCHECK``, ``VOLUME``, ``STOPSIGNAL``, a
second ``FROM`` and ``ADD <url>`` are refused.

The digest (of the text and the context hashes) names the built snapshot, so the
same Dockerfile over the same context is built once.

The server parses what any caller sends, so parsing costs time and memory bounded
by the text: at most MAX_INSTRUCTIONS instructions (each RUN keeps the ARGs before
it), and the instructions whose variables are substituted at most MAX_LINE
characters each and MAX_SUBSTITUTED together once substituted (an ENV made of ten
of the one before grows tenfold a line).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from cove.core.validation import IMAGE_USER
from cove.errors import BadRequest

_FROM = re.compile(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+\S+)?$", re.I)
# ``${name:-word`` without its ``}`` matches to the end of the line (an error then):
# else each one scanned, and backtracked over, the rest of the line again.
_VAR = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?(\}|\Z)|(\w+))")
_NAME = re.compile(r"^[A-Za-z_]\w*$")
_FLAG = re.compile(r"^--(chown|chmod|link|from|checksum|keep-git-dir|exclude|parents)(?:=(.*))?$")
SHOWN = 120  # characters of a line an error quotes
MAX_INSTRUCTIONS = 1000  # (BuildKit's overlay snapshots stop at 127 layers)
# Characters of one instruction whose variables are substituted, substituted (shlex,
# which splits it, takes time growing with the square of a word's length: 32 KiB,
# about a sandbox's longest env value, take ~50 ms), and of them all.
MAX_LINE = 32 * 1024
MAX_SUBSTITUTED = 256 * 1024
_SUBSTITUTED = frozenset({"ENV", "WORKDIR", "COPY", "ADD", "USER", "LABEL", "EXPOSE", "ARG"})


@dataclass(frozen=True)
class Step:
    """One instruction to execute: ``RUN`` (argv for the shell), ``ENV``, ``WORKDIR``,
    ``COPY``/``ADD`` (``sources`` into ``path``) or ``USER``."""

    kind: str
    text: str  # the instruction as written, for logs and errors
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    path: str = ""
    sources: tuple[str, ...] = ()
    chown: str | None = None
    user: str = ""
    args: tuple[tuple[str, str], ...] = ()  # ARGs in scope (a RUN's environment only)


@dataclass(frozen=True)
class BuildPlan:
    base: str
    steps: tuple[Step, ...] = field(default=())
    digest: str = ""
    context_hashes: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def env(self) -> dict[str, str]:
        """Every ``ENV`` of the Dockerfile, in order (later wins)."""
        return {k: v for step in self.steps for k, v in step.env}

    @property
    def user(self) -> str | None:
        """The last ``USER`` (what the image runs as), if any."""
        users = [s.user for s in self.steps if s.kind == "USER"]
        return users[-1] if users else None

    @property
    def workdir(self) -> str | None:
        dirs = [s.path for s in self.steps if s.kind == "WORKDIR"]
        return dirs[-1] if dirs else None


def parse(dockerfile: str, context_hashes: Sequence[str] = ()) -> BuildPlan:
    """The plan of a Dockerfile built over the given uploaded contexts.

    Raises:
        BadRequest: no ``FROM`` first, a multi-stage build, or an instruction Cove
            cannot build.
    """
    lines = _logical_lines(dockerfile)
    if len(lines) > MAX_INSTRUCTIONS:
        raise BadRequest(f"a Dockerfile may have at most {MAX_INSTRUCTIONS} instructions")
    while lines and lines[0][0] == "ARG":  # ARG before FROM: only FROM may use it
        lines.pop(0)
    if not lines or lines[0][0] != "FROM":
        raise BadRequest("the Dockerfile must start with FROM <snapshot or image>")
    match = _FROM.match(lines[0][1])
    if match is None:
        raise BadRequest(f"invalid FROM line: {_shown(lines[0][1])}")
    parser = _Parser()
    for keyword, rest in lines[1:]:
        parser.add(keyword, rest)
    if not context_hashes and any(st.kind in ("COPY", "ADD") for st in parser.steps):
        raise BadRequest("COPY/ADD need an uploaded build context "
                         "(Image.add_local_file / add_local_dir)")  # fmt: skip
    blob = json.dumps({"dockerfile": dockerfile.strip(), "contexts": list(context_hashes)})
    return BuildPlan(
        base=match.group(1), steps=tuple(parser.steps),
        digest=hashlib.sha256(blob.encode()).hexdigest(),
        context_hashes=tuple(context_hashes), entrypoint=parser.entrypoint, cmd=parser.cmd,
        labels=tuple(parser.labels.items()),
    )  # fmt: skip


class _Parser:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.args: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.entrypoint: tuple[str, ...] = ()
        self.cmd: tuple[str, ...] = ()
        self.workdir = "/"
        self._substituted = 0  # characters of the substituted instructions so far

    def add(self, keyword: str, rest: str) -> None:
        text = f"{keyword} {rest}"
        if keyword in _SUBSTITUTED:
            rest = self._substitute(text, rest)
        handler = getattr(self, f"_{keyword.lower()}", None)
        if handler is None or keyword in ("FROM",):
            if keyword == "FROM":
                raise BadRequest("multi-stage Dockerfiles are not supported")
            raise BadRequest(f"Dockerfile instruction {keyword} is not supported")
        handler(text, rest)

    def _substitute(self, text: str, rest: str) -> str:
        """``rest`` (of the instruction ``text``) with its variables substituted.

        Raises:
            BadRequest: a ``${`` without its ``}``, or past MAX_LINE or MAX_SUBSTITUTED.
        """
        room = MAX_LINE - len(rest)

        def one(m: re.Match[str]) -> str:
            nonlocal room
            if m.group(1) and not m.group(4):
                raise BadRequest(f"missing '}}' in {_shown(text)}")
            name = m.group(1) or m.group(5)
            value = self.env[name] if name in self.env else self.args.get(name)
            if m.group(2) == "-":
                value = value if value else m.group(3)
            elif m.group(2) == "+":
                value = m.group(3) if value else ""
            room -= len(value or "")
            if room < 0:
                raise BadRequest(f"an instruction is longer than {MAX_LINE} characters "
                                 f"with its variables substituted: {_shown(text)}")  # fmt: skip
            return value or ""

        if room < 0:
            raise BadRequest(f"an instruction is longer than {MAX_LINE} characters: "
                             f"{_shown(text)}")  # fmt: skip
        out = _VAR.sub(one, rest.replace("\\$", "\0")).replace("\0", "$")
        self._substituted += len(out)
        if self._substituted > MAX_SUBSTITUTED:
            raise BadRequest(f"the Dockerfile's {', '.join(sorted(_SUBSTITUTED))} instructions "
                             f"come to more than {MAX_SUBSTITUTED} characters with their "
                             "variables substituted")  # fmt: skip
        return out

    def _run(self, text: str, rest: str) -> None:
        self.steps.append(Step("RUN", text, argv=_run_argv(rest), args=tuple(self.args.items())))

    def _env(self, text: str, rest: str) -> None:
        pairs = _pairs(rest, "ENV")
        self.env.update(pairs)
        self.steps.append(Step("ENV", text, env=pairs))

    def _workdir(self, text: str, rest: str) -> None:
        path = _one_word(rest)
        if not path.startswith("/"):
            path = f"{self.workdir.rstrip('/')}/{path}"
        self.workdir = path
        self.steps.append(Step("WORKDIR", text, path=path))

    def _copy(self, text: str, rest: str, kind: str = "COPY") -> None:
        flags, words = _flags_and_words(rest, kind)
        if len(words) < 2:
            raise BadRequest(f"{kind} needs a source and a destination: {_shown(text)}")
        *sources, dest = words
        if "from" in flags:
            raise BadRequest(f"{kind} --from is not supported (single-stage builds only)")
        for src in sources:
            if kind == "ADD" and re.match(r"^[a-z]+://", src):
                raise BadRequest(f"ADD from a URL is not supported: {_shown(src)}")
        if not dest.startswith("/"):
            dest = f"{self.workdir.rstrip('/')}/{dest}"
        if len(sources) > 1 and not dest.endswith("/"):
            raise BadRequest(f"{kind} with several sources needs a directory (ending in /)")
        self.steps.append(Step(kind, text, sources=tuple(sources), path=dest,
                               chown=flags.get("chown") or None))  # fmt: skip

    def _add(self, text: str, rest: str) -> None:
        self._copy(text, rest, "ADD")

    def _user(self, text: str, rest: str) -> None:
        user = _one_word(rest)
        if not IMAGE_USER.match(user):  # the user of the sandboxes, as a requested one
            raise BadRequest(f"USER {_shown(user)} is not a user name or uid (user[:group])")
        self.steps.append(Step("USER", text, user=user))

    def _arg(self, text: str, rest: str) -> None:
        name, eq, default = _one_word(rest).partition("=")
        if not _NAME.match(name):
            raise BadRequest(f"invalid ARG: {_shown(text)}")
        self.args[name] = default if eq else self.args.get(name, "")

    def _label(self, text: str, rest: str) -> None:
        self.labels.update(_pairs(rest, "LABEL"))

    def _entrypoint(self, text: str, rest: str) -> None:
        self.entrypoint = _exec_or_shell(rest, "ENTRYPOINT")

    def _cmd(self, text: str, rest: str) -> None:
        self.cmd = _exec_or_shell(rest, "CMD")

    def _expose(self, text: str, rest: str) -> None:
        return None


def _shown(text: str) -> str:
    """A piece of the Dockerfile as an error quotes it: at most SHOWN characters."""
    return repr(text if len(text) <= SHOWN else f"{text[:SHOWN]}...")


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


def _run_argv(rest: str) -> tuple[str, ...]:
    if not rest:
        raise BadRequest("RUN needs a command")
    return _exec_or_shell(rest, "RUN")


def _exec_or_shell(rest: str, kind: str) -> tuple[str, ...]:
    if not rest:
        return ()
    if rest.startswith("["):
        try:
            argv = json.loads(rest)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"invalid {kind} exec form: {_shown(rest)}") from exc
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise BadRequest(f"invalid {kind} exec form: {_shown(rest)}")
        if kind == "RUN" and not argv:
            raise BadRequest(f"invalid {kind} exec form: {_shown(rest)}")
        return tuple(argv)
    return ("/bin/sh", "-c", rest)


def _flags_and_words(rest: str, kind: str) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    rest = rest.strip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        match = _FLAG.match(word)
        if match is None:
            raise BadRequest(f"unknown {kind} option {_shown(word)}")
        if match.group(1) not in ("chown", "from", "link"):
            raise BadRequest(f"{kind} --{match.group(1)} is not supported")
        flags[match.group(1)] = match.group(2) or ""
    try:
        words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"invalid {kind}: {_shown(rest)}") from exc
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise BadRequest(f"invalid {kind} JSON form: {_shown(rest)}")
    return flags, words


def _pairs(rest: str, kind: str) -> tuple[tuple[str, str], ...]:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise BadRequest(f"invalid {kind}: {_shown(rest)}") from exc
    if not words:
        raise BadRequest(f"{kind} needs a value")
    if "=" not in words[0]:  # legacy form: KEY value with spaces
        key, _, value = rest.partition(" ")
        return ((key, value.strip()),)
    pairs = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise BadRequest(f"invalid {kind}: {_shown(rest)}")
        pairs.append((key, value))
    return tuple(pairs)


def _one_word(rest: str) -> str:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise BadRequest(f"invalid argument: {_shown(rest)}") from exc
    if len(words) != 1:
        raise BadRequest(f"expected one argument, got {_shown(rest)}")
    return words[0]
