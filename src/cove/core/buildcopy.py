"""Running a ``COPY``/``ADD`` step in a build sandbox: the files it names are
repacked on the host (:mod:`cove.core.buildcontext`, never extracted there),
uploaded as one tar through the sandbox's agent, and extracted by the sandbox's
own ``tar`` as its root, so whatever the archive holds lands inside the build
sandbox's root filesystem and nowhere else.
"""

from __future__ import annotations

import asyncio
import shlex
import tempfile
import uuid
from pathlib import Path
from typing import IO

from cove.core.buildcontext import ADD_DIR, ContextError, Packed, pack
from cove.core.dockerfile import Step
from cove.core.ports import Runner
from cove.core.toolbox import agent_client
from cove.errors import BadRequest, CoveError

CHUNK = 1024 * 1024


class CopyStep:
    """One ``COPY``/``ADD`` into build sandbox ``build_id``."""

    def __init__(self, runner: Runner, build_id: str, tmp_dir: Path, limit: int) -> None:
        self.runner = runner
        self.build_id = build_id
        self.tmp_dir = tmp_dir
        self.limit = limit  # bytes of files one step may bring: the sandbox's disk

    async def upload(self, contexts: list[Path], step: Step) -> list[str]:
        """Put the step's files into the sandbox; returns the command (run there as root)
        that extracts them.

        Raises:
            BadRequest: a source is not in the contexts, the files are larger than
                the build sandbox's disk, or the upload failed.
        """
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"/.cove-copy-{uuid.uuid4().hex}.tar"
        with tempfile.TemporaryFile(dir=self.tmp_dir) as tar:
            try:
                packed = await asyncio.to_thread(
                    pack, contexts, step.sources, step.path, tar, limit=self.limit,
                    add=step.kind == "ADD",
                )  # fmt: skip
            except ContextError as exc:
                raise BadRequest(str(exc)) from exc
            tar.seek(0)
            await self._send(tar, name)
        return ["/bin/sh", "-c", _script(name, packed, step.chown)]

    async def _send(self, tar: IO[bytes], name: str) -> None:
        agent = agent_client(self.runner, self.build_id, "root", {})
        try:
            upload = await agent.write_file(name)
            try:
                while chunk := await asyncio.to_thread(tar.read, CHUNK):
                    await upload.send(chunk)
            except BaseException:
                await upload.abort()
                raise
            await upload.finish()
        except CoveError as exc:
            raise BadRequest(f"uploading the files into the build sandbox failed: {exc}") from exc


def _script(name: str, packed: Packed, chown: str | None) -> str:
    """Extract ``name`` at / (then ADD's archives where they go), chown what came."""
    f = shlex.quote(name)
    lines = [
        "set -e",
        "o=; if tar --version 2>/dev/null | grep -q GNU; then o=--no-overwrite-dir; fi",
        f"tar -xpf {f} -C / $o",
    ]
    if chown:
        lines.append(f"tar -tf {f} | sed 's|^|/|' | xargs -r -d '\\n' chown -h "
                     f"{shlex.quote(chown)} --")  # fmt: skip
    for archive, into in packed.extract:
        a, d = shlex.quote(archive), shlex.quote(into)
        lines.append(f"mkdir -p {d} && tar -xpf {a} -C {d}")
        if chown:
            lines.append(f"tar -tf {a} | sed 's|^|{into.rstrip('/')}/|' | "
                         f"xargs -r -d '\\n' chown -h {shlex.quote(chown)} --")  # fmt: skip
    lines.append(f"rm -rf {f} /{ADD_DIR}")
    return "\n".join(lines)
