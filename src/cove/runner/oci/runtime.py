"""OciRuntime: sandboxes as crun (or runsc) containers over overlayfs on a per-sandbox
ext4 image.

A sandbox's isolation tier is fixed at create and kept in its metadata:
``crun`` (``runner/oci/container.py``) or ``gvisor`` (``runner/oci/gvisor.py``);
every operation looks it up there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from cove.core.config import Settings
from cove.core.ports import (
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
)
from cove.errors import CoveError, InvalidState, RuntimeBackendError, Timeout
from cove.runner.host import cgroups, cgtree, disk, firewall, freezer, hostprep, idrange, mounts
from cove.runner.host.blank_disks import BlankDisks
from cove.runner.host.foreground import Foreground
from cove.runner.host.network import Network
from cove.runner.host.nsstock import NamespaceStock
from cove.runner.host.proc import foreign_errors
from cove.runner.layout import Metadata, SandboxPaths, sandboxes_dir
from cove.runner.oci import adopt, agent_setup, gvisor, gvisor_view, spec
from cove.runner.oci.agent_setup import AgentSetup
from cove.runner.oci.container import Helpers, bring_up, stop_container, tear_down
from cove.runner.oci.crun import Crun, container_ids
from cove.runner.oci.initbin import ensure_cove_dir, ensure_init_binary, ensure_nsexec_binary
from cove.runner.oci.prestarted import PrestartedAgents
from cove.runner.oci.runsc import Runsc
from cove.runner.oci.runsc import available as runsc_available
from cove.runner.storage import archive, capture, registry, unpack
from cove.runner.storage.archive_store import build_archive_store
from cove.runner.storage.fork import copy_layer
from cove.runner.storage.snapshot import pinned, snapshot_rootfs
from cove.runner.storage.snapshot_share import SnapshotShare

ALIVE = ("running", "paused")
log = logging.getLogger(__name__)


class OciRuntime:
    """The real isolation backend (implements :class:`cove.runner.hostruntime.HostRuntime`)."""

    def __init__(self, settings: Settings) -> None:
        """Args:
        settings: Server settings (data, snapshot and archive dirs, limits).
        """
        self._settings = settings
        self._archives = build_archive_store(settings)
        self._shared = SnapshotShare.of(settings)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._client: Crun | None = None
        self._gvisor: Runsc | None = None
        self._net = Network(settings) if settings.network == "nat" else None
        self._foreground = Foreground()  # (what is made ahead waits for its starts)
        self._blank_disks = BlankDisks(settings.data_dir, mount_ahead=True,
                                       idle=self._foreground.wait_idle)  # fmt: skip
        self._prestarted: PrestartedAgents | None = None
        self._stock = NamespaceStock(settings.data_dir,
                                     partial(ensure_nsexec_binary, settings.data_dir),
                                     settings.ns_stock, idle=self._foreground.wait_idle)

    # -- helpers ---------------------------------------------------------

    @property
    def _crun(self) -> Crun:
        with self._guard:
            if self._client is None:
                self._client = Crun(self._init_binary())
            return self._client

    @property
    def _runsc(self) -> Runsc:
        with self._guard:
            if self._gvisor is None:
                self._gvisor = Runsc(self._init_binary())
            return self._gvisor

    def _client_of(self, tier: str) -> Crun | Runsc:
        return self._runsc if tier == "gvisor" else self._crun

    def _tier(self, paths: SandboxPaths) -> str:
        """The sandbox's isolation tier (when its metadata is gone: gvisor if runsc
        knows it, else crun)."""
        try:
            return paths.read_metadata().isolation
        except RuntimeBackendError:
            known = runsc_available() and self._runsc.known(paths.root.name)
            return "gvisor" if known else "crun"

    def _init_binary(self) -> Path:
        return ensure_init_binary(self._settings.data_dir)

    def _helpers(self) -> Helpers:
        data = self._settings.data_dir
        return Helpers(init=ensure_init_binary(data), nsexec=ensure_nsexec_binary(data),
                       cove_dir=ensure_cove_dir(data))  # fmt: skip

    def _agent_setup(self) -> AgentSetup | None:
        return agent_setup.cached_setup(self._settings.data_dir)

    def _prestarted_agents(self, agent: AgentSetup | None) -> PrestartedAgents | None:
        """The agents started ahead of crun sandboxes (made at the first start)."""
        count = self._settings.agent_prestart
        if agent is None or count <= 0:
            return None
        with self._guard:
            if self._prestarted is None:
                self._prestarted = PrestartedAgents(agent_setup.prestart_command(agent), count)
            return self._prestarted

    @contextmanager
    def _locked(self, sandbox_id: str) -> Iterator[SandboxPaths]:
        paths = SandboxPaths.of(self._settings.data_dir, sandbox_id)
        with self._guard:
            lock = self._locks.setdefault(sandbox_id, threading.Lock())
        with lock, foreign_errors():
            yield paths

    def _group(self, sandbox_id: str) -> str:
        return cgroups.group_of(self._settings.cgroup_parent, sandbox_id)

    def _alive(self, sandbox_id: str, tier: str | None = None) -> dict[str, object] | None:
        if tier is None:
            tier = self._tier(SandboxPaths.of(self._settings.data_dir, sandbox_id))
        state = self._client_of(tier).state(sandbox_id)
        return state if state and state.get("status") in ALIVE else None

    # -- HostRuntime ---------------------------------------------------------

    def has_snapshot(self, name: str) -> bool:
        """Whether snapshot ``name`` has a root filesystem on this host."""
        if not name or "/" in name or name.startswith("."):
            return False
        return snapshot_rootfs(self._settings, name).is_dir()

    def fetches_snapshots(self) -> bool:
        """Whether snapshots this host lacks come from the shared store (S3 archives)."""
        return self._shared is not None

    def _need_snapshot(self, name: str) -> None:
        """Fetch snapshot ``name`` from the shared store if this host lacks it (once,
        however many sandboxes of it start meanwhile)."""
        if self._shared is not None and _shareable(name, self._settings.default_snapshot) \
                and not self.has_snapshot(name):  # fmt: skip
            with foreign_errors():
                self._shared.ensure(name, lambda: self.has_snapshot(name))

    def _share(self, ref: str, size: int) -> int:
        """Upload the new snapshot ``ref`` to the shared store; on failure it is
        removed here too (a snapshot other runners cannot fetch would only fail
        later, elsewhere)."""
        if self._shared is None:
            return size
        try:
            with foreign_errors():
                self._shared.push(ref)
        except BaseException:
            capture.remove(self._snapshots, ref)
            raise
        return size

    def has_local_image(self, image: str) -> bool:
        """Whether ``image`` names a local OCI layout under COVE_OCI_LAYOUT_DIR."""
        return capture.has_local_image(self._settings.oci_layout_dir, image)

    def has_isolation(self, name: str) -> bool:
        """crun always; gvisor when runsc is installed."""
        return name == "crun" or (name == "gvisor" and runsc_available())

    def create(self, spec_: ContainerSpec) -> None:
        """Record the lower rootfs and make the sparse ext4 image (one made ahead if
        there is one, mounted at ``disk/`` when it was mounted ahead); start nothing."""
        with self._foreground.start(), self._locked(spec_.sandbox_id) as paths:
            if paths.image.exists() and paths.metadata.exists():
                return
            self._need_snapshot(spec_.snapshot)
            if not self.has_snapshot(spec_.snapshot):
                raise RuntimeBackendError(f"snapshot {spec_.snapshot!r} is not available")
            try:
                with pinned(self._settings, spec_.snapshot) as lower:
                    paths.root.mkdir(parents=True, exist_ok=True)
                    env = {**unpack.image_env(lower), **spec_.env}  # (as start has it)
                    paths.write_metadata(_metadata(replace(spec_, env=env), str(lower), "user",
                                                   spec_.isolation))  # fmt: skip
                if not self._blank_disks.take(paths.image, spec_.resources.disk,
                                              mount_at=paths.disk):  # fmt: skip
                    disk.create_image(paths.image, spec_.resources.disk)
            except BaseException:
                shutil.rmtree(paths.root, ignore_errors=True)
                raise

    def start(self, spec_: ContainerSpec) -> None:
        """Mount image and overlay, write the bundle and ``crun run --detach``."""
        with self._foreground.start(), self._locked(spec_.sandbox_id) as paths:
            meta = paths.read_metadata()
            client = self._client_of(meta.isolation)
            state = client.state(spec_.sandbox_id)
            if state is not None and state.get("status") in ALIVE:
                return
            if not paths.image.is_file():
                raise RuntimeBackendError(f"sandbox {spec_.sandbox_id} has no writable layer")
            if state is not None:
                client.delete(spec_.sandbox_id)  # a dead leftover
            hostprep.prepare(favor_dynmods=self._settings.cgroup_favor_dynmods)
            image_env = unpack.image_env(Path(meta.lower))  # the image's Env and WorkingDir
            spec_ = replace(spec_, env={**image_env, **spec_.env})
            now = _metadata(spec_, meta.lower, meta.layer_xattrs, meta.isolation)
            if now != meta:
                paths.write_metadata(now)
                meta = now
            agent = self._agent_setup()
            try:
                if meta.isolation == "gvisor":
                    gvisor.bring_up(client, self._settings, spec_, paths,  # type: ignore[arg-type]
                                    meta=meta, helpers=self._helpers(), agent=agent, net=self._net)
                else:
                    bring_up(client, self._settings, spec_, paths,  # type: ignore[arg-type]
                             meta=meta, helpers=self._helpers(), agent=agent, net=self._net,
                             prestarted=self._prestarted_agents(agent),
                             stock=self._stock)  # fmt: skip
                if agent is not None:
                    self._await_agent(paths, meta.isolation)
            except BaseException:
                try:
                    self._stop(spec_.sandbox_id, paths, force=True)
                except RuntimeBackendError:
                    log.exception("cleaning up failed start of %s", spec_.sandbox_id)
                raise

    def _await_agent(self, paths: SandboxPaths, tier: str) -> None:
        """Return once the sandbox's agent answers (see ``agent_setup.wait_ready``):
        a started sandbox serves its first toolbox call at once."""
        sock = paths.chan_socket if tier == "gvisor" else paths.agent_socket
        agent_setup.wait_ready(sock, self._settings.agent_ready_seconds,
                               alive=_init_alive(paths.bundle / "init.pid"))  # fmt: skip

    def _tear_down(self, sandbox_id: str, paths: SandboxPaths, *, reused: bool = True) -> None:
        client = self._client_of(self._tier(paths))
        try:
            tear_down(client, sandbox_id, paths, self._group(sandbox_id), reused=reused)
        finally:
            if self._net is not None:
                self._net.down(paths)

    def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        """Terminate the container (SIGTERM, grace, SIGKILL), delete it, unmount."""
        with self._locked(sandbox_id) as paths:
            self._stop(sandbox_id, paths, force)

    def _stop(self, sandbox_id: str, paths: SandboxPaths, force: bool, *, reused: bool = True
              ) -> None:  # fmt: skip
        """(``reused``: the disk image is used again, see ``rootfs.unmount_all``.)"""
        grace = 0.0 if force else self._settings.stop_grace_seconds
        if freezer.is_frozen(self._group(sandbox_id)):
            freezer.thaw(self._group(sandbox_id))  # frozen tasks act on no signal, not SIGKILL
        if self._tier(paths) == "gvisor":
            gvisor.stop(self._runsc, sandbox_id, grace)
            gvisor.forget_mount_points(paths)
        else:
            stop_container(self._crun, sandbox_id, grace)
        self._tear_down(sandbox_id, paths, reused=reused)

    def destroy(self, sandbox_id: str) -> None:
        """Stop, then remove the sandbox directory, its archive and its cgroups."""
        with self._locked(sandbox_id) as paths:
            self._stop(sandbox_id, paths, force=True, reused=False)
            mounts.unmount_under(paths.root)
            if mounts.mounted_under(paths.root):
                raise RuntimeBackendError(f"{paths.root} still has mounts")
            idrange.release(paths.root, self._settings.data_dir)
            try:
                shutil.rmtree(paths.root, ignore_errors=False)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RuntimeBackendError(f"cannot remove {paths.root}: {exc}") from exc
            self._archives.delete(sandbox_id)  # the archive and any half-written one
            cgroups.remove(self._group(sandbox_id))

    def release(self, sandbox_id: str) -> None:
        """Remove what this host keeps of an archived sandbox (its directory, lease,
        cgroups) and keep its archive, for another runner to restore it from (a drain).

        Raises:
            InvalidState: it has a live copy, or no archive to come back from.
        """
        if not self._settings.archive_s3_bucket:
            raise InvalidState("this runner keeps archives on its own disk: set "
                               "COVE_ARCHIVE_S3_BUCKET (shared) to move sandboxes off it")
        with self._locked(sandbox_id) as paths:
            if paths.image.is_file() or self._alive(sandbox_id):
                raise InvalidState(f"sandbox {sandbox_id} is not archived")
            if not self._archives.exists(sandbox_id):
                raise InvalidState(f"sandbox {sandbox_id} has no archive to restore from")
            mounts.unmount_under(paths.root)
            if mounts.mounted_under(paths.root):
                raise RuntimeBackendError(f"{paths.root} still has mounts")
            idrange.release(paths.root, self._settings.data_dir)
            shutil.rmtree(paths.root, ignore_errors=True)
            cgroups.remove(self._group(sandbox_id))

    def archive(self, sandbox_id: str) -> int:
        """Stream the stopped sandbox's upper dir into the archive store; delete disk.img."""
        with self._locked(sandbox_id) as paths:
            if self._alive(sandbox_id):
                raise RuntimeBackendError(f"sandbox {sandbox_id} is running")
            if not paths.image.is_file():
                size = self._archives.size(sandbox_id)
                if size is not None:
                    return size
                raise RuntimeBackendError(f"sandbox {sandbox_id} has nothing to archive")
            self._tear_down(sandbox_id, paths)
            return archive.archive_into(paths, self._archives, sandbox_id)

    def restore(self, spec_: ContainerSpec) -> None:
        """Stream the archive into a fresh image (checked as it goes; it only replaces
        anything once complete), then delete the archive."""
        sandbox_id = spec_.sandbox_id
        with self._locked(sandbox_id) as paths:
            if paths.image.is_file():
                self._archives.delete(sandbox_id)  # restored already (or never archived)
                return
            if not self._archives.exists(sandbox_id):
                raise RuntimeBackendError(f"the archive of sandbox {sandbox_id} is missing")
            if not paths.metadata.is_file():
                self._need_snapshot(spec_.snapshot)
                with pinned(self._settings, spec_.snapshot) as lower:
                    paths.root.mkdir(parents=True, exist_ok=True)
                    paths.write_metadata(_metadata(spec_, str(lower), "trusted", spec_.isolation))
            archive.restore_from(self._archives, sandbox_id, paths, spec_.resources.disk)
            self._archives.delete(sandbox_id)

    def pause(self, sandbox_id: str) -> None:
        """Freeze every task of the running container (freezer cgroup, bounded retries)."""
        with self._locked(sandbox_id) as paths:
            if not self._alive(sandbox_id):
                raise RuntimeBackendError(f"sandbox {sandbox_id} is not running")
            if self._tier(paths) == "gvisor":  # (a frozen sentry answers no runsc call)
                self._runsc.pause(sandbox_id)
                return
            freezer.freeze(self._group(sandbox_id))

    def resume(self, sandbox_id: str) -> None:
        """Thaw the container's tasks."""
        with self._locked(sandbox_id) as paths:
            if not self._alive(sandbox_id):
                raise RuntimeBackendError(f"sandbox {sandbox_id} is not running")
            if self._tier(paths) == "gvisor":
                self._runsc.resume(sandbox_id)
                return
            freezer.thaw(self._group(sandbox_id))

    def fork(self, source_id: str, spec_: ContainerSpec) -> None:
        """Copy the source's ext4 image (quiesced if it runs) into a new sandbox."""
        with self._locked(source_id) as src:
            meta = src.read_metadata()
            dst = SandboxPaths.of(self._settings.data_dir, spec_.sandbox_id)
            copy_layer(self._group(source_id), src, dst, alive=self._alive(source_id) is not None)
            try:
                dst.write_metadata(_metadata(spec_, meta.lower, meta.layer_xattrs, meta.isolation))
            except BaseException:
                shutil.rmtree(dst.root, ignore_errors=True)
                raise

    def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        """Copy the sandbox's merged root filesystem into a new snapshot ``ref`` (with
        ``config`` as its image config, else its own snapshot's)."""
        with self._locked(sandbox_id) as paths:
            meta = paths.read_metadata()
            alive = self._alive(sandbox_id) is not None
            size = capture.capture_sandbox(
                self._snapshots, ref, self._group(sandbox_id), paths, meta, alive=alive,
                config=config,
            )
        return self._share(ref, size)

    def import_image(self, ref: str, image: str) -> PulledImage:
        """Unpack a local OCI layout's image into a new snapshot ``ref``."""
        with foreign_errors():
            pulled = capture.import_oci(self._snapshots, ref, self._settings.oci_layout_dir,
                                        image, self._settings.max_image_mb * 2**20)  # fmt: skip
        self._share(ref, pulled.size)
        return pulled

    def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
    ) -> PulledImage:  # fmt: skip
        """Pull ``image`` from its registry into a new snapshot ``ref``."""
        with foreign_errors():
            return registry.pull(self._settings, ref, image, auth, progress, cancel)

    def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        """Make snapshot ``ref`` a copy of snapshot ``source`` (hard links) with ``config``."""
        self._need_snapshot(source)
        with foreign_errors():
            size = capture.clone_snapshot(
                self._snapshots, snapshot_rootfs(self._settings, source), ref, config
            )
        return self._share(ref, size)

    def remove_snapshot(self, ref: str) -> None:
        """Delete snapshot ``ref`` here and from the shared store; never the default one."""
        if not _shareable(ref, self._settings.default_snapshot):
            return
        if self._shared is None:
            if self.has_snapshot(ref):
                capture.remove(self._snapshots, ref)
            return
        with self._shared.held(ref), foreign_errors():  # (no fetch of it runs meanwhile)
            self._shared.delete(ref)
            if self.has_snapshot(ref):
                capture.remove(self._snapshots, ref)

    @property
    def _snapshots(self) -> Path:
        assert self._settings.snapshot_dir is not None
        return self._settings.snapshot_dir

    def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        """Live: ``crun update`` cpu/memory. Stopped: resize the ext4 image too."""
        with self._locked(sandbox_id) as paths:
            alive = self._alive(sandbox_id)
            if live:
                if not alive:
                    raise RuntimeBackendError(f"sandbox {sandbox_id} is not running")
                if self._tier(paths) == "gvisor":
                    gvisor.set_limits(self._group(sandbox_id), cpu=resources.cpu,
                                      memory=resources.memory, pids=self._settings.pids_limit)
                    return
                res = spec.resources(resources.cpu, resources.memory, self._settings)
                update = {"cpu": res["cpu"], "memory": res["memory"]}
                cgtree.set_limits(self._group(sandbox_id), memory=resources.memory * spec.GIB,
                                  pids=self._settings.pids_limit)  # fmt: skip
                self._crun.update(sandbox_id, update, paths.root / "update.json")
                return
            if alive:
                raise RuntimeBackendError(f"sandbox {sandbox_id} must be stopped to resize disk")
            if paths.image.is_file():
                mounts.unmount(paths.rootfs)
                mounts.unmount(paths.disk)
                disk.resize(paths.image, resources.disk)

    def status(self, sandbox_id: str) -> ContainerStatus:
        """RUNNING/PAUSED per crun, else STOPPED (image), ARCHIVED (archive) or ABSENT."""
        paths = SandboxPaths.of(self._settings.data_dir, sandbox_id)
        state = self._alive(sandbox_id, self._tier(paths))
        if state is not None:
            paused = state.get("status") == "paused" or freezer.is_frozen(self._group(sandbox_id))
            return ContainerStatus.PAUSED if paused else ContainerStatus.RUNNING
        if paths.image.is_file():
            return ContainerStatus.STOPPED
        if self._archives.exists(sandbox_id):
            return ContainerStatus.ARCHIVED
        return ContainerStatus.ABSENT

    def list_ids(self) -> set[str]:
        """Sandbox dirs, crun and runsc containers with a bundle of ours, gVisor views,
        network rules, archives and id leases."""
        root = sandboxes_dir(self._settings.data_dir)
        with foreign_errors():
            ids = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
            ids |= container_ids(self._crun.list(), root)
            if runsc_available():
                ids |= container_ids(self._runsc.list(), root)
            ids |= gvisor_view.sandbox_ids(self._settings.data_dir)
            if self._net is not None:
                ids |= set(firewall.owned(self._net.tag).values())
            ids |= self._archives.keys()
            ids |= set(idrange.claims(self._settings.data_dir))
        return ids

    def tidy(self, sandbox_id: str) -> None:
        """Unmount a capture's view; remove half-written archives, a half-restored
        image, and an archive beside a complete image (the live copy wins: the
        archive was either not finished with or already restored)."""
        with self._locked(sandbox_id) as paths:
            capture.remove_view(paths)
            self._archives.remove_partial(sandbox_id)
            archive.remove_partial_restore(paths)
            if paths.image.is_file() and self._archives.exists(sandbox_id):
                log.info("sandbox %s: removing an archive its disk image supersedes", sandbox_id)
                self._archives.delete(sandbox_id)

    def remove_stale_work(self) -> None:
        """Captures, imports and snapshot removals of dead servers (see capture), and
        what their namespace stocks left (see ``NamespaceStock.sweep``)."""
        with foreign_errors():
            for name in capture.remove_stale_work(self._snapshots):
                log.warning("removed %s, left by an interrupted snapshot build", name)
            self._stock.sweep()

    def exec(
        self,
        sandbox_id: str,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the running sandbox as ``user`` (default: the sandbox's user),
        started by its agent like every process of the sandbox.

        Raises:
            Timeout: it ran past ``timeout``; everything it started was killed.
            RuntimeBackendError: the sandbox is not running.
        """
        paths = SandboxPaths.of(self._settings.data_dir, sandbox_id)
        if not argv:
            raise RuntimeBackendError("empty command")
        meta = paths.read_metadata()
        message = {"op": "exec", "command": shlex.join(argv), "user": user or meta.user,
                   "env": dict(env or {}), "cwd": cwd, "timeout": timeout, "separate": True}
        try:
            return asyncio.run(self._exec(sandbox_id, message))
        except CoveError as exc:
            if exc.status_code == 408:
                raise Timeout(exc.message) from exc
            if isinstance(exc, RuntimeBackendError):
                raise
            raise RuntimeBackendError(exc.message) from exc

    async def _exec(self, sandbox_id: str, message: dict[str, Any]) -> ExecResult:
        from cove.agent import protocol
        from cove.core.toolbox import agent_call
        from cove.runner.local import LocalRunner

        out, err = bytearray(), bytearray()
        async with agent_call(LocalRunner(self), sandbox_id, message) as call:
            async for kind, payload in call.frames():
                if kind == protocol.STDOUT:
                    out += payload
                elif kind == protocol.STDERR:
                    err += payload
            code = int(call.result["exitCode"])
        return ExecResult(exit_code=code, stdout=bytes(out), stderr=bytes(err))

    def stats(self, sandbox_id: str) -> ContainerStats:
        """CPU time, memory and task count of the running sandbox (from its cgroups), and
        the use of its disk (its mounted image)."""
        stats = cgroups.stats(self._group(sandbox_id))
        used, total = disk.usage(SandboxPaths.of(self._settings.data_dir, sandbox_id).disk)
        return dataclasses.replace(stats, disk_used=used, disk_total=total)

    def agent_socket(self, sandbox_id: str) -> socket.socket:
        """A new (non-blocking) stream socket connected to the sandbox's toolbox agent.

        Raises:
            Unavailable: the sandbox does not run. Busy: its agent's queue is full.
        """
        paths = SandboxPaths.of(self._settings.data_dir, sandbox_id)
        if paths.chan_socket.exists():  # the gVisor tier's agent binds its own
            return agent_setup.connect(paths.chan_socket)
        return agent_setup.connect(paths.agent_socket)

    def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        """Replace the running sandbox's firewall rules and DNS policy at once."""
        with self._locked(sandbox_id) as paths:
            if self._net is None or not self._alive(sandbox_id):
                return
            link = self._net.link(paths)
            if link is None:
                raise RuntimeBackendError(f"sandbox {sandbox_id} has no network")
            self._net.apply(sandbox_id, link, policy)

    def adopt(self, spec_: ContainerSpec) -> None:
        """The running sandbox (a warm pool's) takes on ``spec_``'s hostname, user and
        env, as a cold start of ``spec_`` would have set them (its firewall:
        ``set_network``)."""
        with self._locked(spec_.sandbox_id) as paths:
            meta = paths.read_metadata()
            if meta.isolation != "crun":
                raise RuntimeBackendError(f"sandbox {spec_.sandbox_id} cannot be adopted")
            link = self._net.link(paths) if self._net is not None else None
            adopt.adopt(paths, meta, self._group(spec_.sandbox_id), spec_,
                        link.host if link else None)  # fmt: skip

    def address(self, sandbox_id: str) -> str | None:
        """The running sandbox's address on its veth (None without networking)."""
        paths = SandboxPaths.of(self._settings.data_dir, sandbox_id)
        link = self._net.link(paths) if self._net is not None else None
        return link.guest if link is not None else None


def _shareable(name: str, default: str) -> bool:
    """Whether snapshot ``name`` may be in the shared store: one path component, never
    hidden, not the default snapshot (each runner builds its own)."""
    return bool(name) and "/" not in name and not name.startswith(".") and name != default


def _init_alive(pid_file: Path) -> Callable[[], bool] | None:
    """Whether the container's init (its pid in ``pid_file``) still runs; None when
    the pid is not known."""
    try:
        stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
    except (OSError, ValueError):
        return None

    def alive() -> bool:
        try:
            text = stat.read_text()
        except OSError:
            return False
        return text[text.rindex(")") + 2] != "Z"

    return alive


def _metadata(spec_: ContainerSpec, lower: str, layer_xattrs: str, isolation: str) -> Metadata:
    return Metadata(lower=lower, hostname=spec_.hostname, user=spec_.user, env=dict(spec_.env),
                    layer_xattrs=layer_xattrs, isolation=isolation)  # fmt: skip
