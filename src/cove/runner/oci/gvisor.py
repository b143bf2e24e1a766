"""The gVisor tier: a sandbox run by ``runsc`` on the crun tier's host preparation.

The host side is the crun tier's (``container.prepare_host``: id range, disk,
user and network namespaces, idmapped layers, volumes, veth, firewall, DNS).
What differs, and why:

- User namespace: runsc makes its own from ``uidMappings`` (its gofer cannot
  join one by path), with the crun tier's outer map: the sandbox's ids
  0..65535 and the agent's 65536 on the sandbox's host range.
- Init runs as the agent uid with the agent's capabilities. gVisor has no
  ambient capabilities and gives a non-root init none, so init starts as root
  and takes the agent uid itself, keeping them (``cove-init --become``); it
  execs the agent with effective uid 0 and the agent takes the agent uid back
  before it serves, keeping them too (``--become`` of the agent).
- The agent's channel: runsc cannot hand a listening socket to the container,
  so the agent binds ``agent.sock`` itself in ``chan/``, a host directory only
  the agent uid may enter, bound at ``/dev/.cove/chan`` (``--host-uds=create``).
- The workload: gVisor cannot ``setns`` into a user namespace, so every command
  gets a new one, nested in the sandbox's; its cgroup is one of gVisor's own
  (``pids`` controller), which the agent makes its own uid's at start, so the
  workload (whose root is uid 0 there) cannot leave its cgroup or raise its
  limit. gVisor has no ``cgroup.kill``: a kill SIGKILLs the cgroup's processes
  until none is left.
- Seccomp: runsc's OCI seccomp returns EPERM for every refusal (glibc then
  cannot make threads: it needs ENOSYS from ``clone3``), so the agent installs
  Cove's filter, compiled on the host (``runner/oci/seccomp_bpf.py``), in every
  process it starts.
- Limits: the sentry, its gofer and helpers live in the host cgroup
  ``<group>``, where Cove writes cpu, memory and pids limits itself (runsc sets
  none on a cgroup it did not make), memory and pids with headroom for gVisor.
  Inside, gVisor's pids cgroup bounds the workload. Memory is not bounded
  inside gVisor: past the host limit the host's OOM killer ends the sentry,
  and with it the sandbox (reported stopped).
- ``/tmp`` is bound from the sandbox's own root file system (runsc would put a
  memory-backed tmpfs there); there is no ``/dev/mqueue``.
- Paths: runsc's gofer and sentry run as the sandbox's root host uid and must
  search every directory of the paths config.json names, so these are binds in
  the sandbox's view (``runner/oci/gvisor_view.py``), outside the data dir, which
  stays root's alone.
- Processes: ``runsc run`` goes through a reaper of the sandbox's own, which
  reaps the sentry and gofer at once (``runner/oci/runsc.py``); stop waits for it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cove.core.config import Settings
from cove.core.ports import ContainerSpec
from cove.errors import Busy, RuntimeBackendError, Unavailable
from cove.runner.host import cgroups, idrange
from cove.runner.host.network import Network
from cove.runner.host.waiting import readable
from cove.runner.layout import Metadata, SandboxPaths, write_json
from cove.runner.oci import agent_setup as agentlink
from cove.runner.oci import gvisor_view, seccomp_bpf, spec
from cove.runner.oci.agent_setup import AgentSetup
from cove.runner.oci.container import Helpers, HostSide, _pidfd, prepare_host
from cove.runner.oci.crun import _tail
from cove.runner.oci.runsc import Runsc

CHAN_MOUNT = "/dev/.cove/chan"
SECCOMP_MOUNT = "/dev/.cove/seccomp.bpf"
GVISOR_MEMORY = 256 * 1024**2  # the sentry's and the agent's own memory, above the sandbox's
KILL_WAIT = 10.0
AGENT_WAIT = 30.0


def bring_up(
    runsc: Runsc, settings: Settings, spec_: ContainerSpec, paths: SandboxPaths, *,
    meta: Metadata, helpers: Helpers, agent: AgentSetup | None, net: Network | None,
) -> Metadata:  # fmt: skip
    """Mount and make what is missing and ``runsc run`` the sandbox (the caller
    cleans up on error). Returns the metadata as it now is."""
    host = prepare_host(settings, spec_, paths, meta=meta, helpers=helpers, net=net)
    _make_chan(paths, host.ids)
    set_limits(host.group, cpu=spec_.resources.cpu, memory=spec_.resources.memory,
               pids=settings.pids_limit)  # fmt: skip
    view = gvisor_view.make(settings.data_dir, spec_.sandbox_id, host.ids.base)
    parts = _parts(view, settings, paths, host, helpers=helpers, agent=agent, net=net)
    base = spec.build(spec_, settings, parts, nofile_hard=spec.nofile_hard())
    rootfs, chan = view.bind("rootfs", paths.rootfs), view.bind("chan", paths.chan)
    write_json(paths.bundle / "config.json", config(base, host.ids, rootfs, chan, host.group))
    runsc.run_detached(spec_.sandbox_id, paths.bundle, paths.log, view=view.path)
    if agent is not None:
        _await_agent(paths)
    return host.meta


def _parts(
    view: gvisor_view.View, settings: Settings, paths: SandboxPaths, host: HostSide, *,
    helpers: Helpers, agent: AgentSetup | None, net: Network | None,
) -> spec.HostParts:  # fmt: skip
    """What the host prepared, as binds in the sandbox's view."""
    ro_binds = dict(agent.binds) if agent else {}
    ro_binds[SECCOMP_MOUNT] = seccomp_bpf.ensure_filter(settings.data_dir)
    return spec.HostParts(
        init_binary=view.bind("init", helpers.init, readonly=True),
        cove_dir=view.bind("cove", helpers.cove_dir, readonly=True),
        etc_dir=view.bind("etc", paths.mapped_disk / "etc"),
        userns=paths.userns, agent_uid=idrange.AGENT_UID, group=host.group, netns=paths.netns,
        resolv=net is not None, service=_service(agent, settings) if agent else (),
        ro_binds={dst: view.bind(f"ro-{n}", src, readonly=True)
                  for n, (dst, src) in enumerate(sorted(ro_binds.items()))},
        binds=[(dst, view.bind(f"vol-{n}", src)) for n, (dst, src) in enumerate(host.binds)],
    )  # fmt: skip


def _await_agent(paths: SandboxPaths) -> None:
    """Wait until the agent listens (the server connects to a socket the agent binds,
    not to one the host bound beforehand as on crun)."""
    deadline = time.monotonic() + AGENT_WAIT
    while not _listening(paths.chan_socket):
        if time.monotonic() > deadline:
            raise RuntimeBackendError(f"the toolbox agent did not start within {AGENT_WAIT:.0f} s: "
                                      + _tail(paths.log, 0).decode(errors="replace")[-300:])
        time.sleep(0.002)


def config(base: dict[str, Any], ids: idrange.IdRange, rootfs: Path, chan: Path, group: str
           ) -> dict[str, Any]:  # fmt: skip
    """The crun tier's config.json, changed where runsc needs it (see the module);
    ``rootfs`` and ``chan`` are their binds in the sandbox's view."""
    process = base["process"]
    args = process["args"]
    become = [args[0], "--become", str(idrange.AGENT_UID)]  # (no --go-fd: no host step
    process["args"] = [*become, *args[args.index("--"):]] if "--" in args else become  # waits)
    process["user"] = {"uid": 0, "gid": 0}  # (init takes the agent uid itself)
    process["capabilities"].pop("ambient", None)
    base["root"]["path"] = str(rootfs)
    linux = base["linux"]
    linux["namespaces"] = [{"type": "user"} if n["type"] == "user" else n
                           for n in linux["namespaces"] if n["type"] != "cgroup"]  # fmt: skip
    mapping = [{"containerID": 0, "hostID": ids.base, "size": idrange.SIZE + 1}]
    linux["uidMappings"], linux["gidMappings"] = mapping, [dict(m) for m in mapping]
    linux["cgroupsPath"] = f"/{group}"
    linux.pop("seccomp")  # the agent's own (see the module)
    mounts = [m for m in base["mounts"] if m["destination"] != "/dev/mqueue"]
    if (rootfs / "tmp").is_dir():
        mounts.append({"destination": "/tmp", "type": "bind", "source": str(rootfs / "tmp"),
                       "options": ["bind", "rw", "nosuid", "nodev"]})  # fmt: skip
    mounts += [
        {"destination": CHAN_MOUNT, "type": "bind", "source": str(chan),
         "options": ["bind", "rw", "nosuid", "nodev", "noexec"]},
    ]  # fmt: skip
    base["mounts"] = mounts
    return base


def set_limits(group: str, *, cpu: int, memory: int, pids: int) -> None:
    """The sandbox's cpu, memory and pids limits on the host cgroup of its sentry
    (made here when missing), with headroom for gVisor itself.

    Raises:
        RuntimeBackendError: a cgroup file could not be written.
    """
    quota, period = cpu * spec.CPU_PERIOD, spec.CPU_PERIOD
    mem = memory * spec.GIB + GVISOR_MEMORY
    host_pids = 4 * pids + 512  # (a process of the sandbox has up to 3 host tasks)
    if cgroups.mode() is cgroups.CgroupMode.UNIFIED:
        d = cgroups.ROOT / group
        files = {"memory.max": mem, "memory.swap.max": 0, "pids.max": host_pids,
                 "cpu.max": f"{quota} {period}"}  # fmt: skip
        _write_all([(d, files)])
        return
    memory_dir = cgroups.controller_dir(group, "memory")
    limits = {"memory.limit_in_bytes": mem, "memory.memsw.limit_in_bytes": mem}
    if _read_int(memory_dir / "memory.memsw.limit_in_bytes") < mem:  # growing: memsw
        limits = dict(reversed(limits.items()))  # first, as memsw is never below the limit
    _write_all([
        (memory_dir, limits),
        (cgroups.controller_dir(group, "pids"), {"pids.max": host_pids}),
        (cgroups.controller_dir(group, "cpu"),
         {"cpu.cfs_period_us": period, "cpu.cfs_quota_us": quota}),
    ])  # fmt: skip


def stop(runsc: Runsc, container_id: str, grace: float) -> None:
    """SIGTERM to init, a grace period, SIGKILL; then ``runsc delete``, which is
    quick once the sentry is gone (a delete of a live sandbox takes seconds), and
    its reaper's exit (it ends once everything of the sandbox is reaped)."""
    state = runsc.state(container_id)
    if state is None:
        return
    pid = int(state.get("pid") or 0)
    alive = state.get("status") in ("running", "paused", "created")
    pidfd, reaper = (_pidfd(pid), _reaper_of(pid)) if alive else (None, None)
    try:
        if pidfd is not None:
            if state.get("status") == "paused":
                runsc.resume(container_id)
            _terminate(runsc, container_id, pidfd, grace)
        runsc.delete(container_id)
        if reaper is not None:
            readable(reaper, KILL_WAIT)
    finally:
        for fd in (pidfd, reaper):
            if fd is not None:
                os.close(fd)


def _reaper_of(pid: int) -> int | None:
    """A pidfd of the reaper (``cove-init --reap``, see ``runner/oci/runsc.py``) whose
    child the sentry ``pid`` is; None when it has none (say, it was killed)."""
    parent = _parent(pid)
    try:
        if parent is None or not Path(f"/proc/{parent}/comm").read_text().startswith("cove-init"):
            return None
    except OSError:
        return None
    fd = _pidfd(parent)
    if fd is not None and _parent(pid) != parent:  # (it ended meanwhile: not ours)
        os.close(fd)
        return None
    return fd


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def forget_mount_points(paths: SandboxPaths) -> None:
    """Remove the empty mount points runsc's gofer made for the agent's binds in the
    sandbox's own layer (under ``/dev``, which a tmpfs covers in the sandbox: nothing
    of the sandbox can be there)."""
    cove = paths.upper / "dev" / ".cove"
    if not cove.is_dir():
        return
    for top, dirs, files in os.walk(cove, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            os.rmdir(os.path.join(top, name))
    os.rmdir(cove)
    try:
        os.rmdir(cove.parent)
    except OSError:
        pass  # (not empty: the image's own /dev, copied up)


def _terminate(runsc: Runsc, container_id: str, pidfd: int, grace: float) -> None:
    if grace > 0:
        runsc.kill(container_id, "TERM")  # init passes it on to every process
        if readable(pidfd, grace):
            return
    runsc.kill(container_id, "KILL")
    if readable(pidfd, KILL_WAIT):
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # the sentry itself
    except ProcessLookupError:
        return
    readable(pidfd, KILL_WAIT)


def _service(agent: AgentSetup, settings: Settings) -> list[str]:
    """The agent's command line on this tier (see ``cove.agent.confine``)."""
    caps = ",".join(str(spec.CAPABILITY_NUMBERS[c]) for c in spec.WORKLOAD_CAPABILITIES)
    return [*agent.argv, "--become", str(idrange.AGENT_UID),
            "--listen-path", f"{CHAN_MOUNT}/agent.sock", "--userns", "new",
            "--cgroup-root", "/sys/fs/cgroup",
            "--pids-max", str(settings.pids_limit), "--kill-mode", "loop", "--caps", caps,
            "--seccomp", SECCOMP_MOUNT, "--peer-check", "off"]  # fmt: skip


def _listening(path: Path) -> bool:
    try:
        agentlink.connect(path).close()
        return True
    except Busy:
        return True
    except Unavailable:
        return False


def _make_chan(paths: SandboxPaths, ids: idrange.IdRange) -> None:
    """``chan/``, the agent uid's alone."""
    try:
        paths.chan.mkdir(exist_ok=True)
        os.chown(paths.chan, ids.agent, ids.agent)
        os.chmod(paths.chan, 0o700)
        paths.chan_socket.unlink(missing_ok=True)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot prepare {paths.chan}: {exc}") from exc


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 1 << 62  # (not there yet: unlimited)


def _write_all(targets: Sequence[tuple[Path, Mapping[str, object]]]) -> None:
    for directory, files in targets:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot create cgroup {directory}: {exc}") from exc
        for name, value in files.items():
            path = directory / name
            try:
                path.write_text(str(value))
            except FileNotFoundError:
                continue  # (memsw without swap accounting)
            except OSError as exc:
                raise RuntimeBackendError(f"cannot write {path}: {exc.strerror}") from exc

