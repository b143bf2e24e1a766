"""Searching files: by content (``fs_find``), by name glob (``fs_search``), and
replacing text in files (``fs_replace``), with Daytona's semantics: the content
pattern is a literal substring, binary files are skipped, symlinked
directories are not followed, and results name files under the path as given.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from typing import Any

from . import fs_transfer, protocol
from .agent import Request, op
from .files import LINE_LIMIT, failing_as, reach, resolve, send_items, user_of

SNIFF = 512


def _walk(root: str) -> Iterator[tuple[str, str]]:
    """(absolute path, path relative to ``root``) of every non-directory below ``root``."""
    if not os.path.isdir(root):
        yield root, os.path.basename(root)
        return
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(directory, name)
            yield full, os.path.relpath(full, root)


def _shown(given: str, root: str, full: str) -> str:
    if os.path.isdir(root):
        return os.path.normpath(os.path.join(given, os.path.relpath(full, root)))
    return given


def _matches(path: str, shown: str, needle: bytes) -> Iterator[dict[str, Any]]:
    try:
        with open(fs_transfer.open_file(path), "rb") as f:
            if b"\0" in f.read(SNIFF):
                return
            f.seek(0)
            line = 1
            while chunk := f.readline(LINE_LIMIT):
                if needle in chunk:
                    text = chunk.rstrip(b"\r\n").decode(errors="replace")
                    yield {"file": shown, "line": line, "content": text}
                if chunk.endswith(b"\n"):
                    line += 1
    except (OSError, protocol.AgentError):
        return


def _search_args(request: Request) -> tuple[str, str, str]:
    """The path as given, where it resolves inside the sandbox (it must exist), and
    the non-empty pattern."""
    given = request.arg("path")
    root = resolve(user_of(request), given)
    pattern = request.arg("pattern")
    if not pattern:
        raise protocol.bad_request("pattern is required")
    with failing_as(root):
        os.stat(root)
    return given, root, pattern


@op("fs_find", cancel_when_abandoned=True)
async def find(request: Request) -> dict[str, Any]:
    """Lines containing ``pattern`` in the files below ``path``."""
    given, root, pattern = _search_args(request)
    needle = pattern.encode()
    found = (match for full, _ in _walk(root) if os.path.isfile(full)
             for match in _matches(full, _shown(given, root, full), needle))
    await send_items(request, found)
    return {}


@op("fs_search", cancel_when_abandoned=True)
async def search(request: Request) -> dict[str, Any]:
    """Files below ``path`` whose name (or, with a ``/``, relative path) matches the glob."""
    given, root, pattern = _search_args(request)
    regex = glob_regex(pattern)
    by_path = "/" in pattern
    found = (_shown(given, root, full) for full, rel in _walk(root)
             if regex.fullmatch(rel if by_path else os.path.basename(rel)))
    await send_items(request, found)
    return {}


@op("fs_replace")
async def replace(request: Request) -> dict[str, Any]:
    """Replace every ``pattern`` (a literal) by ``newValue`` in each of ``files``."""
    user = user_of(request)
    pattern = request.arg("pattern").encode()
    value = request.arg("newValue", str, "").encode()
    if not pattern:
        raise protocol.bad_request("pattern is required")
    results = []
    for given in request.arg("files", list):
        try:
            with reach(resolve(user, str(given))) as place:
                if not place.exists():
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
                fd = os.open(place.inode, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "r+b") as f:
                content = f.read()
                f.seek(0)
                f.truncate()
                f.write(content.replace(pattern, value))
            results.append({"file": given, "success": True})
        except (OSError, protocol.AgentError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc.message
            results.append({"file": given, "success": False, "error": f"{given}: {reason}"})
    return {"results": results}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob with ``*``, ``?``, ``[...]``, ``{a,b}`` and ``**`` (any depth) as a regex."""
    return re.compile(_translate(pattern), re.DOTALL)


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            piece, i = _token(pattern, i)
            out.append(piece)
    return "".join(out)


def _token(pattern: str, i: int) -> tuple[str, int]:
    char = pattern[i]
    if char == "*":
        return "[^/]*", i + 1
    if char == "?":
        return "[^/]", i + 1
    if char == "[":
        end = pattern.find("]", i + 2)
        if end != -1:
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            body = re.escape(body[1:] if negate else body).replace("\\-", "-")
            return f"[{'^' if negate else ''}{body}]", end + 1
    if char == "{":
        alternatives, end = _braces(pattern, i)
        if end != -1:
            return "(?:" + "|".join(_translate(a) for a in alternatives) + ")", end + 1
    if char == "\\" and i + 1 < len(pattern):
        return re.escape(pattern[i + 1]), i + 2
    return re.escape(char), i + 1


def _braces(pattern: str, start: int) -> tuple[list[str], int]:
    """The comma-separated alternatives of the brace group at ``start`` and its end."""
    depth, parts, begin = 0, [], start + 1
    for j in range(start, len(pattern)):
        if pattern[j] == "{":
            depth += 1
        elif pattern[j] == "}":
            depth -= 1
            if depth == 0:
                parts.append(pattern[begin:j])
                return parts, j
        elif pattern[j] == "," and depth == 1:
            parts.append(pattern[begin:j])
            begin = j + 1
    return [], -1
