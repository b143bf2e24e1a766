"""Bringing one sandbox's container up on the host, and taking it down again.

Up: lease the sandbox's host id range, mount its disk image, make its user and
network namespaces, mount its root file system and volumes with its ids
(``runner/host/rootfs.py``), make its cgroups (``runner/host/cgtree.py``), bind its
agent's socket, write config.json and ``crun run --detach``; then move init
above the workload's limits and let it start the toolbox agent.

Down: SIGTERM, a grace period, SIGKILL to every process, ``crun delete``,
unmount, remove cgroups.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cove.core.config import Settings
from cove.core.ports import ContainerSpec
from cove.errors import RuntimeBackendError
from cove.runner.host import cgroups, cgtree, idrange, rootfs
from cove.runner.host.network import Network
from cove.runner.host.nsstock import NamespaceStock
from cove.runner.host.waiting import readable
from cove.runner.layout import Metadata, SandboxPaths, write_json
from cove.runner.oci import agent_setup as agentlink
from cove.runner.oci import gvisor_view, seccomp_bpf, spec
from cove.runner.oci.agent_setup import AgentSetup
from cove.runner.oci.crun import Crun
from cove.runner.oci.prestarted import Prestarted, PrestartedAgents
from cove.runner.storage import volumes

KILL_WAIT = 10.0
GIB = 1024**3
# crun installs this BPF program (base64) instead of compiling config.json's seccomp
# section itself on every run (~20 ms); it is the same profile compiled by the same
# libseccomp (``seccomp_bpf``), once per data dir.
SECCOMP_BPF = "run.oci.seccomp_bpf_data"
log = logging.getLogger(__name__)
# Networks being wired while their containers start (mostly waits on `ip` and `nft`).
_WIRING = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cove-net")


@dataclass(frozen=True)
class Helpers:
    """Host binaries a start needs."""

    init: Path  # cove-init
    nsexec: Path  # cove-nsexec
    cove_dir: Path  # the mount points of /dev/.cove (``initbin.ensure_cove_dir``)


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
    meta: Metadata, helpers: Helpers, agent: AgentSetup | None, net: Network | None,
    prestarted: PrestartedAgents | None = None, stock: NamespaceStock | None = None,
) -> Metadata:  # fmt: skip
    """Mount and make what is missing and run the container (the caller cleans up
    on error). Returns the metadata as it now is (its layer converted)."""
    host = prepare_host(settings, spec_, paths, meta=meta, helpers=helpers, net=net,
                        wire_later=True, stock=stock)  # fmt: skip
    try:
        _run(crun, settings, spec_, paths, host, helpers=helpers, agent=agent, net=net,
             prestarted=prestarted)  # fmt: skip
    except BaseException:
        host.drop_network()  # nothing wires while the caller tears down
        raise
    host.settle_network()
    return host.meta


def _run(
    crun: Crun, settings: Settings, spec_: ContainerSpec, paths: SandboxPaths, host: HostSide,
    *, helpers: Helpers, agent: AgentSetup | None, net: Network | None,
    prestarted: PrestartedAgents | None,
) -> None:  # fmt: skip
    ids, group, binds = host.ids, host.group, host.binds
    delegation = cgtree.prepare(group, memory=spec_.resources.memory * GIB,
                                pids=settings.pids_limit, agent_uid=ids.agent)  # fmt: skip
    listener = agentlink.listen(paths.agent_socket)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    workns = os.open(paths.workns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fds = [go_r, listener.fileno(), workns, *delegation.fds]
        idle = settings.agent_idle_seconds
        service = _service(agent, delegation, first_fd=spec.GO_FD, idle=idle) if agent else ()
        parts = spec.HostParts(
            init_binary=helpers.init, cove_dir=helpers.cove_dir,
            etc_dir=paths.mapped_disk / "etc", userns=paths.userns,
            agent_uid=idrange.AGENT_UID, group=group, netns=paths.netns, resolv=net is not None,
            service=service, listen_fd=spec.GO_FD + 1 if idle > 0 else None,
            ro_binds=agent.binds if agent else {}, binds=binds,
        )  # fmt: skip
        config = spec.build(spec_, settings, parts, nofile_hard=spec.nofile_hard())
        config["annotations"] = {SECCOMP_BPF: seccomp_bpf.encoded_filter(settings.data_dir)}
        write_json(paths.bundle / "config.json", config)
        init_pid = crun.run_detached(spec_.sandbox_id, paths.bundle, paths.log, fds=fds,
                                     cgroup2=cgtree.unified_join(group))  # fmt: skip
        cgtree.settle(group, init_pid, ids.agent)
        taken = prestarted.take() if prestarted is not None and agent is not None else None
        if taken is None or agent is None:
            os.write(go_w, b"1")
        else:
            _hand_over(taken, config, parts, init_pid, paths.log, fds[1:], go_w,
                       args=parts.service[len(agent.argv):])  # fmt: skip
    finally:
        for fd in (go_r, go_w, workns):
            os.close(fd)
        listener.close()
        delegation.close()


def _hand_over(taken: Prestarted, config: dict[str, Any], parts: spec.HostParts, init_pid: int,
               log_path: Path, service_fds: list[int], go_w: int, *, args: Sequence[str]
               ) -> None:  # fmt: skip
    """Make a pre-started agent the sandbox's agent and tell init its pid; if it
    does not take, init starts the agent itself (a plain go)."""
    process = config["process"]
    order = {
        "uid": parts.agent_uid, "gid": parts.agent_uid,
        "caps": [spec.CAPABILITY_NUMBERS[c] for c in process["capabilities"]["ambient"]],
        "nofile": process["rlimits"][0]["hard"], "oom": process["oomScoreAdj"],
        "env": spec.held_env(process["env"]), "args": list(args),
        "seccomp": config["annotations"][SECCOMP_BPF], "first_fd": spec.GO_FD + 1,
    }  # fmt: skip
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        pid = taken.hand_over(init_pid, parts.group, order, [devnull, out, out, *service_fds])
    except RuntimeBackendError as exc:
        log.warning("starting the agent the usual way: %s", exc)
        os.write(go_w, b"1")
        return
    finally:
        os.close(devnull)
        os.close(out)
    os.write(go_w, b"p%d" % pid)
    try:
        taken.run()
    except OSError as exc:  # (init starts the agent on the next call)
        log.warning("the pre-started agent of %s went away: %s", parts.group, exc)


@dataclass(frozen=True)
class HostSide:
    """What :func:`prepare_host` made ready for a container."""

    ids: idrange.IdRange
    group: str
    binds: list[tuple[str, Path]]  # volumes: container path -> staged mount point
    meta: Metadata
    wiring: Future[Any] | None = None  # the network, still being wired

    def settle_network(self) -> None:
        """Wait until the network is wired.

        Raises:
            RuntimeBackendError: wiring it failed.
        """
        if self.wiring is not None:
            self.wiring.result()

    def drop_network(self) -> None:
        """Wait until the wiring is over, whatever its outcome (before a tear-down)."""
        if self.wiring is not None:
            futures.wait([self.wiring])


def prepare_host(
    settings: Settings, spec_: ContainerSpec, paths: SandboxPaths, *, meta: Metadata,
    helpers: Helpers, net: Network | None, wire_later: bool = False,
    stock: NamespaceStock | None = None,
) -> HostSide:  # fmt: skip
    """What every isolation tier needs before its runtime runs: the id range, the
    disk, the user and network namespaces, the idmapped layers and volumes. A first
    start takes its range and namespaces from ``stock`` when it has a set ready.

    With ``wire_later``, the network namespace's veth, firewall and DNS are set up
    in a worker thread while the caller goes on (the runtime only needs the
    namespace itself); the caller must :meth:`HostSide.settle_network` before
    anything of the sandbox runs the workload's code, and before a tear-down.
    """
    ids = idrange.current(paths.root)  # (a sandbox keeps its range for life)
    taken = stock.take(paths) if ids is None and stock is not None else None
    ids = ids or taken or idrange.lease(paths.root, settings.data_dir)
    group = cgroups.group_of(settings.cgroup_parent, spec_.sandbox_id)
    rootfs.mount_disk(paths)
    fresh = rootfs.make_namespaces(helpers.nsexec, paths, ids) or taken is not None
    wiring = None
    if net is not None:
        _write_etc(paths, spec_.hostname, nameserver=net.lease(paths).host)
        if wire_later:
            wiring = _WIRING.submit(net.up, paths, spec_.network, fresh=fresh)
        else:
            net.up(paths, spec_.network, fresh=fresh)
    else:
        _write_etc(paths, spec_.hostname, nameserver=None)
    try:
        rootfs.mount_layers(helpers.nsexec, paths, meta)
        if meta.layer_xattrs != "user":  # converted
            meta = Metadata(**{**meta.__dict__, "layer_xattrs": "user"})
            paths.write_metadata(meta)
        binds = _stage_volumes(settings, spec_, paths)
    except BaseException:
        HostSide(ids, group, [], meta, wiring).drop_network()
        raise
    return HostSide(ids, group, binds, meta, wiring)


class Deleter(Protocol):
    """A runtime client that forgets containers (Crun, Runsc)."""

    def delete(self, container_id: str) -> None: ...


def tear_down(client: Deleter, sandbox_id: str, paths: SandboxPaths, group: str, *,
              reused: bool = True) -> None:  # fmt: skip
    """Delete the container, unmount everything of it (a gVisor view first: it holds
    binds of the rest), remove its cgroups and socket (``reused``: see
    ``rootfs.unmount_all``).

    Every step is tried even when an earlier one failed; the first error is raised.
    """
    steps = (
        lambda: client.delete(sandbox_id),
        lambda: gvisor_view.remove(paths.data_dir, sandbox_id),
        lambda: rootfs.unmount_all(paths, reused=reused),
        lambda: cgroups.remove(group),
        lambda: paths.agent_socket.unlink(missing_ok=True),
        lambda: paths.chan_socket.unlink(missing_ok=True),
    )
    errors: list[RuntimeBackendError] = []
    for step in steps:
        try:
            step()
        except RuntimeBackendError as exc:
            errors.append(exc)
        except OSError as exc:
            errors.append(RuntimeBackendError(f"cannot clean up {sandbox_id}: {exc}"))
    if errors:
        raise errors[0]


def _service(agent: AgentSetup, delegation: cgtree.Delegation, *, first_fd: int,
             idle: float = 0.0) -> list[str]:  # fmt: skip
    """The agent's command line, naming the descriptors init hands it (go is first_fd);
    with ``idle`` > 0 it exits after that many idle seconds (see init.c)."""
    listen_fd, userns_fd = first_fd + 1, first_fd + 2
    join = [str(userns_fd + 1 + i) for i in range(len(delegation.join))]
    kill_fd = userns_fd + 1 + len(delegation.join)
    caps = ",".join(str(spec.CAPABILITY_NUMBERS[c]) for c in spec.WORKLOAD_CAPABILITIES)
    return [*agent.argv, "--listen-fd", str(listen_fd), "--userns-fd", str(userns_fd),
            "--join-fds", ",".join(join), "--kill-fd", str(kill_fd),
            "--kill-mode", delegation.kill_mode, "--caps", caps, "--spare-helper", spec.INIT_PATH,
            *(["--idle-exit", f"{idle:g}"] if idle > 0 else [])]  # fmt: skip


def _stage_volumes(settings: Settings, spec_: ContainerSpec, paths: SandboxPaths
                   ) -> list[tuple[str, Path]]:  # fmt: skip
    where = volumes.VolumeDir.of(settings)
    sources: list[int] = []
    try:
        for bind in spec_.volumes:
            sources.append(where.open(bind))
        staged = rootfs.stage_binds(paths, sources)
    finally:
        for fd in sources:
            os.close(fd)
    return [(b.mount_path, s) for b, s in zip(spec_.volumes, staged, strict=True)]


def _write_etc(paths: SandboxPaths, hostname: str, *, nameserver: str | None) -> None:
    try:
        paths.etc.mkdir(parents=True, exist_ok=True)
        _rewrite(paths.etc / "hostname", f"{hostname}\n")
        _rewrite(paths.etc / "hosts", _hosts(hostname))
        if nameserver:
            _rewrite(paths.etc / "resolv.conf", f"nameserver {nameserver}\noptions edns0\n")
    except OSError as exc:
        raise RuntimeBackendError(f"cannot prepare {paths.disk}: {exc}") from exc


def _rewrite(path: Path, text: str) -> None:
    """Make the file at ``path`` hold ``text``, written over its old content in place
    (created when missing; never through a symlink). Not truncated to nothing first: a
    file emptied and written again is written back by ext4 on close (its
    ``auto_da_alloc``), ~0.15 ms a file on a sandbox's loop-mounted disk, 0.01 in place.
    (Its readers are the sandbox's processes, through a bind mount: no tenant's runs
    while a start or a warm pool's claim writes it.)"""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _hosts(hostname: str) -> str:
    ipv6 = "::1\tlocalhost ip6-localhost ip6-loopback\n"
    return f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n{ipv6}"


def _terminate(crun: Crun, container_id: str, pidfd: int, grace: float) -> None:
    """SIGTERM to init (it passes it on to every process), then SIGKILL to init: the
    kernel then kills every process of its pid namespace, wherever its cgroup."""
    if grace > 0:
        crun.kill(container_id, "TERM")
        if readable(pidfd, grace):
            return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return
    readable(pidfd, KILL_WAIT)


def _pidfd(pid: int) -> int | None:
    if pid <= 0:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # already gone


