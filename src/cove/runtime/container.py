"""Bringing one sandbox's container up on the host, and taking it down again.

Up: mount the ext4 image, write /etc/hostname and /etc/hosts into it, mount
the overlay, write config.json and ``crun run --detach`` (init then runs the
toolbox agent). Down: SIGTERM, a
grace period, SIGKILL to every process, ``crun delete``, unmount, remove cgroups.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

from cove.core.config import Settings
from cove.core.ports import ContainerSpec
from cove.errors import RuntimeBackendError
from cove.runtime import cgroups, disk, mounts, spec, volumes
from cove.runtime.agent import AgentSetup
from cove.runtime.crun import Crun
from cove.runtime.layout import Metadata, SandboxPaths, write_json

KILL_WAIT = 10.0


def stop_container(crun: Crun, container_id: str, grace: float) -> None:
    """Stop the container's processes and delete it from crun; idempotent.

    Args:
        crun: The crun client.
        container_id: The container (the sandbox id).
        grace: Seconds init gets after SIGTERM to end everything; 0 kills at once.
    """
    state = crun.state(container_id)
    if state is None:
        return
    if state.get("status") == "paused":
        crun.resume(container_id)  # frozen tasks cannot act on signals
    pidfd = _pidfd(int(state.get("pid") or 0)) if state.get("status") != "stopped" else None
    try:
        if pidfd is not None:
            _terminate(crun, container_id, pidfd, grace)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    crun.delete(container_id)


def bring_up(
    crun: Crun, settings: Settings, spec_: ContainerSpec, paths: SandboxPaths, *,
    meta: Metadata, init_binary: Path, agent: AgentSetup | None,
    netns: Path | None = None, nameserver: str | None = None,
) -> None:  # fmt: skip
    """Mount what is not mounted yet and run the container (the caller cleans up on error).

    ``netns``: network namespace file to join, ``nameserver`` for its resolv.conf.
    """
    if not mounts.is_mounted(paths.disk):
        disk.mount(paths.image, paths.disk)
    try:
        for d in (paths.upper, paths.work, paths.etc, paths.rootfs):
            d.mkdir(parents=True, exist_ok=True)
        (paths.etc / "hostname").write_text(f"{spec_.hostname}\n")
        (paths.etc / "hosts").write_text(_hosts(spec_.hostname))
        if nameserver:
            (paths.etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions edns0\n")
    except OSError as exc:
        raise RuntimeBackendError(f"cannot prepare {paths.disk}: {exc}") from exc
    if not mounts.is_mounted(paths.rootfs):
        mounts.mount_overlay(Path(meta.lower), paths.upper, paths.work, paths.rootfs)
    config = spec.build(
        spec_,
        settings,
        init_binary=init_binary,
        etc_dir=paths.etc,
        nofile_hard=spec.nofile_hard(),
        service=agent.argv if agent else (),
        ro_binds=agent.binds if agent else None,
        netns=netns,
    )
    config["mounts"].extend(volumes.oci_mounts(settings.data_dir, spec_.volumes))
    write_json(paths.bundle / "config.json", config)
    with cgroups.creating():
        crun.run_detached(spec_.sandbox_id, paths.bundle, paths.log)


def tear_down(crun: Crun, sandbox_id: str, paths: SandboxPaths) -> None:
    """Delete the container, unmount overlay and image, remove cgroups.

    Every step is tried even when an earlier one failed; the first error is raised.
    """
    steps = (
        lambda: crun.delete(sandbox_id),
        lambda: mounts.unmount(paths.rootfs),
        lambda: mounts.unmount(paths.disk),
        lambda: cgroups.remove(sandbox_id),
    )
    errors: list[RuntimeBackendError] = []
    for step in steps:
        try:
            step()
        except RuntimeBackendError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _hosts(hostname: str) -> str:
    ipv6 = "::1\tlocalhost ip6-localhost ip6-loopback\n"
    return f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n{ipv6}"


def _terminate(crun: Crun, container_id: str, pidfd: int, grace: float) -> None:
    if grace > 0:
        crun.kill(container_id, "TERM")
        if _exited(pidfd, grace):
            return
    crun.kill(container_id, "KILL", all_processes=True)
    _exited(pidfd, KILL_WAIT)


def _pidfd(pid: int) -> int | None:
    if pid <= 0:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # already gone


def _exited(pidfd: int, timeout: float) -> bool:
    readable, _, _ = select.select([pidfd], [], [], timeout)
    return bool(readable)
