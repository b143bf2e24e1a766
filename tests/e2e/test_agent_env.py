"""The sandbox's env vars reach its user's processes, never the loader of its agent.

Attack: create a sandbox with ``LD_PRELOAD`` naming a file the workload writes,
write a library there, restart the sandbox (its agent starts again). The
library must load into the user's commands (what the user asked for) and not
into the agent, which runs outside the workload's user namespace.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona

EVIL = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/loaded-by-%d", (int)getuid());
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}
"""


def test_ld_preload_loads_into_user_commands_not_into_the_agent(
    daytona: Daytona, sandboxes: list, tmp_path: Path
) -> None:
    source, library = tmp_path / "evil.c", tmp_path / "evil.so"
    source.write_text(EVIL)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    sb = daytona.create(CreateSandboxFromSnapshotParams(
        env_vars={"LD_PRELOAD": "/var/tmp/evil.so"}, auto_stop_interval=0))
    sandboxes.append(sb)
    sb.fs.upload_file(library.read_bytes(), "/var/tmp/evil.so")
    sb.stop()
    sb.start()  # the agent starts again, now with the library in place
    user = sb.process.exec("id -u").result.strip().splitlines()[-1]
    loaded = sb.process.exec("ls /tmp").result.split()
    assert f"loaded-by-{user}" in loaded, loaded  # the user's commands get LD_PRELOAD
    assert not [name for name in loaded if name.startswith("loaded-by-")
                and name != f"loaded-by-{user}"], loaded  # nobody else loaded it
    assert sb.process.exec("echo $LD_PRELOAD").result.strip() == "/var/tmp/evil.so"
