"""A sandbox captured as a snapshot through the official SDK, against copying its
snapshot's files whole.

Run as root after ``make setup``::

    .venv/bin/python bench/capture.py [--n 3]

Prints, from one run (times in ms, p50/p95): the SDK's ``sandbox.create_snapshot``
of a started sandbox of the default snapshot whose root wrote ``--mb`` MiB of files of its
own and changed a few of the snapshot's; and, as baselines on the same host and
disk, a tar copy of the default snapshot's rootfs (what a capture of the whole
merged view cost before: owners, modes, attributes, holes) and a hard-linked copy
of it (``cp -a --link``: the least a capture that links every file can cost).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from lifecycle import row, timed  # bench/lifecycle.py

from cove.runner.storage.archive import TAR_FLAGS
from cove.testing import SHARED_SNAPSHOTS, ServerProcess

KEY = "bench-key"
TAR = " ".join(TAR_FLAGS)  # the capture's own


def changes(mb: int) -> str:
    return (f"head -c {mb << 20} /dev/urandom > /root/data.bin && echo changed > /etc/motd "
            "&& rm -r /usr/share/doc/bash && chmod 600 /etc/issue.net")  # fmt: skip


def default_rootfs() -> Path:
    found = sorted(SHARED_SNAPSHOTS.glob("cove-default/*/rootfs"))
    if not found:
        raise SystemExit("no default snapshot: run make setup first")
    return found[-1]


def copies(rootfs: Path, n: int) -> tuple[list[float], list[float]]:
    """(tar copy ms, hard-linked copy ms) of ``rootfs``, on its own file system."""
    tar_ms, link_ms = [], []
    for _ in range(n):
        with tempfile.TemporaryDirectory(dir=rootfs.parents[2], prefix=".bench-") as tmp:
            into = Path(tmp, "rootfs")
            into.mkdir()
            tar_ms.append(timed(lambda into=into: subprocess.run(
                f"tar --create --file=- --sparse --directory={rootfs} {TAR} . | "
                f"tar --extract --file=- --directory={into} --same-owner --same-permissions "
                f"{TAR}", shell=True, check=True)))  # fmt: skip
            linked = Path(tmp, "linked")
            link_ms.append(timed(lambda linked=linked: subprocess.run(
                ["cp", "-a", "--link", "--no-target-directory", str(rootfs), str(linked)],
                check=True)))  # fmt: skip
    return tar_ms, link_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="captures (and copies) per figure")
    parser.add_argument("--mb", type=int, default=64, help="MiB the sandbox writes")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-capture-"))
    server = ServerProcess(data_dir, api_key=KEY)
    server.start()
    sdk_ms: list[float] = []
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        sb = daytona.create(CreateSandboxFromSnapshotParams(os_user="root", auto_stop_interval=0))
        done = sb.process.exec(changes(args.mb), timeout=120)
        assert done.exit_code == 0, done.result
        for i in range(args.n):
            name = f"bench-capture-{i}"
            sdk_ms.append(timed(lambda name=name: sb.create_snapshot(name, timeout=600)))
            daytona.snapshot.delete(daytona.snapshot.get(name))
        sb.delete()
    finally:
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    rootfs = default_rootfs()
    tar_ms, link_ms = copies(rootfs, args.n)
    base = sorted(tar_ms)[len(tar_ms) // 2]
    size = subprocess.run(["du", "-sh", str(rootfs)], capture_output=True, text=True,
                          check=True).stdout.split()[0]  # fmt: skip
    print(f"n={args.n}; times in ms; default snapshot {size}, sandbox wrote {args.mb} MiB")  # noqa: T201
    print(f"{'':<36} {'p50':>9} {'p95':>9}  vs tar copy")  # noqa: T201
    print(row("tar copy of the snapshot (before)", tar_ms, base))  # noqa: T201
    print(row("cp -a --link of the snapshot", link_ms, base))  # noqa: T201
    print(row("SDK create_snapshot (capture)", sdk_ms, base))  # noqa: T201


if __name__ == "__main__":
    main()
