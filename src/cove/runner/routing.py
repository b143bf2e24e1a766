"""Several runners as one :class:`cove.core.ports.Runner`: each call goes to the
runner its sandbox is on (the registry's ``runner_id``); a new sandbox (a create, or
the restore of one archived off its runner) goes where placement says.

Byte streams (toolbox calls, file transfers, previews) are the member's own
(:meth:`RemoteRunner.open_agent` / ``open_port``): nothing is buffered here. A call on
a sandbox whose runner is unreachable fails at once (``Unavailable``, a 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cove import errors
from cove.core.fleet import (
    IN_ARCHIVE,
    LOCAL,
    Constraint,
    RunnerInfo,
    RunnerState,
    RunnerStore,
    VolumeHome,
    hosts,
    lost_reason,
    place,
    volume_constraint,
)
from cove.core.ports import (
    AgentConnection,
    Capacity,
    ContainerSpec,
    ContainerStats,
    ContainerStatus,
    ImageConfig,
    NetworkPolicy,
    PulledImage,
    RegistryAuth,
    Resources,
    Runner,
)
from cove.runner import tls

log = logging.getLogger(__name__)
# How long a sandbox's runner is taken from memory: another API replica may move the
# sandbox (a drain, a restore elsewhere), as it may change its record (RECORD_SECONDS).
WHERE_SECONDS = 1.0


class MemberRunner(Runner, Protocol):
    def fetches_snapshots(self) -> bool: ...

    async def capacity(self) -> Capacity: ...

    def volume_store(self) -> str | None:
        """The id of the shared volumes dir it uses (None: its own)."""

    async def release(self, sandbox_id: str) -> None: ...


class RoutingRunner:
    """Implements :class:`cove.core.ports.Runner` over the registered runners.

    Args:
        store: the registry.
        local: the embedded runner (``local`` in the registry), if this host runs any.
        client_tls: the CA, certificate and key the API dials runners with.
    """

    def __init__(self, store: RunnerStore, *, local: MemberRunner | None = None,
                 client_tls: tuple[Path, Path, Path] | None = None) -> None:  # fmt: skip
        self.store = store
        self.members: dict[str, MemberRunner] = {}
        self._local = local
        self._tls = client_tls
        self._urls: dict[str, str | None] = {}
        self._infos: dict[str, RunnerInfo] = {}
        self._where: dict[str, tuple[str | None, float]] = {}  # sandbox id: (runner id, when)
        self._hung_up: set[str] = set()  # lost runners whose calls in flight were ended
        self._orphans: dict[str, str] = {}  # ids list_ids found with no record: runner id
        self._connect_all()

    def _connect_all(self) -> None:
        """The members the registry names now (blocking: at start); a runner that does
        not answer yet is tried again by the heartbeat."""
        from cove.runner.remote import RemoteRunner

        self._infos = {r.id: r for r in self.store.list()}
        for rid, info in self._infos.items():
            member = self._connect(info)
            if isinstance(member, RemoteRunner) and self._tls is not None:
                try:
                    member = RemoteRunner.connect(info.url or "", *self._tls, info.name)
                except errors.CoveError as exc:
                    log.warning("runner %s does not answer yet: %s", info.name, exc.message)
            if member is not None:
                self.members[rid], self._urls[rid] = member, info.url

    # ---- the registry ---------------------------------------------------

    async def sync(self) -> None:
        """Match the members to the registry: connect runners added since, drop the
        removed ones (the registry may change from the CLI at any time)."""
        infos = {r.id: r for r in self.store.list()}
        for rid in set(self.members) - set(infos):
            member = self.members.pop(rid)
            self._urls.pop(rid, None)
            if hasattr(member, "close"):
                await member.close()
        for rid, info in infos.items():
            if rid in self.members and self._urls.get(rid) == info.url:
                continue
            new = self._connect(info)
            if new is not None:
                old = self.members.get(rid)
                self.members[rid] = new
                self._urls[rid] = info.url
                if old is not None and old is not self._local and hasattr(old, "close"):
                    await old.close()
        self._infos = infos
        for rid, info in infos.items():  # lost: its calls in flight end (no new one starts)
            if info.reachable:
                self._hung_up.discard(rid)
            elif rid not in self._hung_up and hasattr(self.members.get(rid), "hang_up"):
                self._hung_up.add(rid)
                await self.members[rid].hang_up()  # type: ignore[attr-defined]
        self._where.clear()
        await self._refresh_members()  # their snapshots (locality)

    def _connect(self, info: RunnerInfo) -> MemberRunner | None:
        if info.url is None:
            return self._local if info.id == LOCAL else None
        from cove.runner.remote import RemoteRunner

        if self._tls is None:
            log.error("runner %s: set COVE_RUNNER_CA, COVE_RUNNER_CERT and COVE_RUNNER_KEY "
                      "to reach it", info.name)  # fmt: skip
            return None
        return RemoteRunner(info.url, tls.client_context(*self._tls), info.name)

    def member_map(self) -> Mapping[str, MemberRunner]:
        return self.members

    def _info(self, runner_id: str) -> RunnerInfo:
        info = self._infos.get(runner_id)
        if info is None:
            info = self._infos[runner_id] = self.store.get(runner_id)
        return info

    def _usable(self, runner_id: str) -> bool:
        try:
            info = self._info(runner_id)
        except errors.NotFound:
            return False
        return runner_id in self.members and info.reachable and info.state in (
            RunnerState.READY, RunnerState.CORDONED)  # fmt: skip

    def placeable(self) -> list[str]:
        """Ids of the runners that take new sandboxes (and pooled sandboxes' claims)."""
        return [rid for rid, info in self._infos.items() if rid in self.members
                and info.reachable and info.state is RunnerState.READY]  # fmt: skip

    def _runner_of(self, sandbox_id: str) -> str | None:
        now = time.monotonic()
        found = self._where.get(sandbox_id)
        if found is None or now - found[1] > WHERE_SECONDS:
            found = self._where[sandbox_id] = (self.store.runner_of(sandbox_id), now)
        return found[0]

    def _assigned(self, sandbox_id: str, runner_id: str | None) -> None:
        if not self.store.assign(sandbox_id, runner_id) and runner_id is not None:
            self._orphans[sandbox_id] = runner_id  # no record: a Dockerfile build's sandbox,
            # which this replica alone makes, uses and removes
        self._where[sandbox_id] = (runner_id, time.monotonic())

    def _member(self, runner_id: str) -> MemberRunner:
        """The runner ``runner_id``, if it answers.

        Raises:
            Unavailable: it is unreachable or no longer registered.
        """
        member = self.members.get(runner_id)
        try:
            info = self._info(runner_id)
        except errors.NotFound:
            info = None
        if member is None or info is None:
            raise errors.Unavailable(f"runner {runner_id} is not registered")
        if not info.reachable:  # as of this replica's last round: the keeper (another
            # replica's, maybe) may have seen it answer since
            info = self._infos[runner_id] = self.store.get(runner_id)
            if not info.reachable:
                raise errors.Unavailable(lost_reason(info.name))
        return member

    def _of(self, sandbox_id: str) -> MemberRunner:
        """The runner of a sandbox.

        Raises:
            Unavailable: it is on no runner, or its runner does not answer.
        """
        runner_id = self._runner_of(sandbox_id) or self._orphans.get(sandbox_id)
        if runner_id is None:
            raise errors.Unavailable(f"sandbox {sandbox_id} is on no runner (archived)")
        return self._member(runner_id)

    def _any(self) -> MemberRunner:
        """A runner that answers (for a sandbox on none: its archive is shared)."""
        for rid in self.placeable() or [r for r in self.members if self._usable(r)]:
            return self.members[rid]
        raise errors.Unavailable("no runner answers")

    def _current(self, avoid: frozenset[str] = frozenset()) -> list[RunnerInfo]:
        """The members as the registry has them now, not as of the keeper's last round:
        a runner cordoned or drained since must not take a new sandbox."""
        self._infos.update((r.id, r) for r in self.store.list())
        return [self._infos[rid] for rid in self.members
                if rid in self._infos and rid not in avoid]  # fmt: skip

    def _has(self, snapshot: str) -> Callable[[str], bool]:
        return lambda rid: self.members[rid].has_snapshot(snapshot)

    def _fetches(self, rid: str) -> bool:
        return self.members[rid].fetches_snapshots()

    async def admits(self, snapshot: str, volumes: Sequence[str] = ()) -> None:
        homes = self.store.volume_homes(list(volumes))

        def check() -> None:  # (the registry read first: the constraint reads it too)
            infos = self._current()
            hosts(infos, snapshot, self._has(snapshot), self._fetches, self._constraint(homes))

        try:
            check()
        except errors.Unavailable:
            # The runners' inventories as of this replica's last round: a snapshot made
            # since through another replica is not in them yet. Ask the runners.
            await self._refresh_members()
            check()

    async def _refresh_members(self) -> None:
        """Read the reachable members' inventories again (one that fails: the
        heartbeat tells)."""

        async def one(member: MemberRunner) -> None:
            with contextlib.suppress(errors.CoveError):
                await member.refresh()  # type: ignore[attr-defined]

        await asyncio.gather(*(one(m) for rid, m in self.members.items()
                               if hasattr(m, "refresh") and self._infos.get(rid) is not None
                               and self._infos[rid].reachable))  # fmt: skip

    def _constraint(self, homes: Mapping[str, VolumeHome]) -> Constraint | None:
        """Where the data of volumes with these homes is, as placement's constraint."""
        return volume_constraint(homes.values(), self._infos, self._volume_store)

    def _volume_store(self, runner_id: str) -> str | None:
        member = self.members.get(runner_id)
        return None if member is None else member.volume_store()

    def _place(self, spec: ContainerSpec, avoid: frozenset[str] = frozenset()
               ) -> tuple[str, dict[str, str]]:  # fmt: skip
        """Choose a runner for a sandbox new to it (none of ``avoid``; the one holding
        its volumes' data) and record it, and it as the home of volumes with none.
        Returns its id and the homes it gave volumes ({volume id: home})."""
        infos = self._current(avoid)
        volume_ids = [b.volume_id for b in spec.volumes]
        bound: dict[str, str] = {}
        while True:  # twice at most: after a binding every volume has a home
            homes = self.store.volume_homes(volume_ids)
            chosen = place(infos, self.store.allocations(), spec.resources, spec.snapshot,
                           self._has(spec.snapshot), self._fetches,
                           self._constraint(homes))  # fmt: skip
            unbound = [vid for vid, h in homes.items() if h.home in (None, IN_ARCHIVE)]
            if not unbound:
                break
            # Another replica may bind one of them at once: placed again on what won.
            home = self._volume_store(chosen.id) or chosen.id
            self.store.bind_volumes(unbound, home)
            bound = dict.fromkeys(unbound, home)
        self._assigned(spec.sandbox_id, chosen.id)
        log.info("sandbox %s placed on runner %s", spec.sandbox_id, chosen.name)
        return chosen.id, bound

    async def _at_home(self, spec: ContainerSpec, call: Callable[[MemberRunner], Any], *,
                       stay: bool) -> None:  # fmt: skip
        """``call`` on the sandbox's runner if ``stay`` and it is assigned one that keeps
        serving, else on a newly placed one; a placed runner that turns out not to answer
        (lost since its last heartbeat) is left for the next best."""
        runner_id = self._runner_of(spec.sandbox_id)
        if stay and runner_id is not None and self._usable(runner_id):
            await call(self._member(runner_id))
            return
        avoid: set[str] = set()
        while True:
            try:
                runner_id, bound = self._place(spec, frozenset(avoid))
            except errors.Unavailable:
                if not stay:  # nothing of it is on any runner: its delete needs none
                    self._assigned(spec.sandbox_id, None)
                raise
            try:
                await call(self._member(runner_id))
                return
            except errors.Unavailable as exc:
                if "unreachable" not in exc.message:
                    raise
                log.warning("runner %s: %s; placing sandbox %s elsewhere",
                            self._infos[runner_id].name, exc.message, spec.sandbox_id)  # fmt: skip
                for volume_id, home in bound.items():  # nothing of theirs reached it
                    self.store.move_volume(volume_id, home, None)
                avoid.add(runner_id)

    def _reachable(self) -> list[MemberRunner]:
        return [m for rid, m in self.members.items() if self._usable(rid)
                or (rid in self._infos and self._infos[rid].reachable)]  # fmt: skip

    # ---- inventory --------------------------------------------------------

    def has_snapshot(self, name: str) -> bool:
        return any(m.has_snapshot(name) for m in self.members.values())

    def has_isolation(self, name: str) -> bool:
        return any(m.has_isolation(name) for m in self.members.values())

    def has_local_image(self, image: str) -> bool:
        return any(m.has_local_image(image) for m in self.members.values())

    # ---- a sandbox new to a runner --------------------------------------------

    async def create(self, spec: ContainerSpec) -> None:
        """A new sandbox (or a recovered one whose files are gone): where placement says."""
        await self._at_home(spec, lambda m: m.create(spec), stay=False)

    async def restore(self, spec: ContainerSpec) -> None:
        """Back from its archive: on its runner if it still has one, else where placement
        says (the archive is in the shared store)."""
        await self._at_home(spec, lambda m: m.restore(spec), stay=True)

    async def fork(self, source_id: str, spec: ContainerSpec) -> None:
        runner_id = self._runner_of(source_id)
        member = self._of(source_id)
        assert runner_id is not None
        self._assigned(spec.sandbox_id, runner_id)
        await member.fork(source_id, spec)

    # ---- a sandbox on its runner ------------------------------------------------

    async def start(self, spec: ContainerSpec) -> None:
        await self._of(spec.sandbox_id).start(spec)

    async def adopt(self, spec: ContainerSpec) -> None:
        await self._of(spec.sandbox_id).adopt(spec)

    async def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        if self._runner_of(sandbox_id) is None and sandbox_id not in self._orphans:
            return  # on no runner: nothing of it runs anywhere
        await self._of(sandbox_id).stop(sandbox_id, force=force)

    async def destroy(self, sandbox_id: str) -> None:
        if self._runner_of(sandbox_id) is None and sandbox_id not in self._orphans:
            await self._any().destroy(sandbox_id)  # its archive, in the shared store
        else:
            await self._of(sandbox_id).destroy(sandbox_id)
        self._orphans.pop(sandbox_id, None)

    async def archive(self, sandbox_id: str) -> int:
        return await self._of(sandbox_id).archive(sandbox_id)

    async def release(self, sandbox_id: str) -> None:
        """Take an archived sandbox off its runner (its archive, in the shared store,
        stays): a later restore places it anew."""
        runner_id = self._runner_of(sandbox_id)
        if runner_id is not None:
            await self._member(runner_id).release(sandbox_id)
        self._assigned(sandbox_id, None)

    async def pause(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> None:
        await self._of(sandbox_id).resume(sandbox_id)

    async def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        return await self._of(sandbox_id).capture(sandbox_id, ref, config)

    async def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        await self._of(sandbox_id).resize(sandbox_id, resources, live=live)

    async def status(self, sandbox_id: str) -> ContainerStatus:
        if self._runner_of(sandbox_id) is None:
            return await self._any().status(sandbox_id)
        return await self._of(sandbox_id).status(sandbox_id)

    async def tidy(self, sandbox_id: str) -> None:
        if self._runner_of(sandbox_id) is not None:
            await self._of(sandbox_id).tidy(sandbox_id)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        await self._of(sandbox_id).set_network(sandbox_id, policy)

    async def stats(self, sandbox_id: str) -> ContainerStats:
        return await self._of(sandbox_id).stats(sandbox_id)

    async def open_agent(self, sandbox_id: str) -> AgentConnection:
        return await self._of(sandbox_id).open_agent(sandbox_id)

    async def open_port(self, sandbox_id: str, port: int) -> AgentConnection:
        return await self._of(sandbox_id).open_port(sandbox_id, port)

    async def preview_upstream(self, sandbox_id: str, port: int) -> str | None:
        return await self._of(sandbox_id).preview_upstream(sandbox_id, port)

    # ---- every runner -------------------------------------------------------------

    async def list_ids(self) -> set[str]:
        """Every sandbox on a runner that answers (those with no record are noted, so
        that their removal goes to their runner)."""
        found: set[str] = set()
        for rid, member in list(self.members.items()):
            if not self._infos.get(rid) or not self._infos[rid].reachable:
                continue
            try:
                ids = await member.list_ids()
            except errors.CoveError as exc:
                log.warning("runner %s: %s", self._infos[rid].name, exc.message)
                continue
            for sandbox_id in ids:
                if self._runner_of(sandbox_id) != rid:
                    self._orphans[sandbox_id] = rid
            found |= ids
        return found

    async def remove_stale_work(self) -> None:
        await self._each(lambda m: m.remove_stale_work())

    async def remove_snapshot(self, ref: str) -> None:
        await self._each(lambda m: m.remove_snapshot(ref))

    async def delete_volume(self, volume_id: str) -> None:
        """On the runner holding the volume's data (one of those sharing the volumes dir
        holding it); on every answering runner if it has none.

        Raises:
            Unavailable: no runner holding it answers (nothing is deleted).
        """
        found = self.store.volume_homes([volume_id]).get(volume_id)
        if found is None or found.home is None:
            await self._each(lambda m: m.delete_volume(volume_id))
            return
        home = found.home
        if home == IN_ARCHIVE:  # in the shared store: any runner reaches it
            await self._any().delete_volume(volume_id)
            return
        holders = [rid for rid in self.members if home in (rid, self._volume_store(rid))
                   and rid in self._infos and self._infos[rid].reachable]  # fmt: skip
        if not holders:
            raise errors.Unavailable(f"the runner holding volume {found.name}'s data does "
                                     f"not answer now: try again later")  # fmt: skip
        await self._member(holders[0]).delete_volume(volume_id)

    async def archive_volume(self, volume_id: str, runner_id: str | None = None) -> int:
        """Move the volume's data off ``runner_id`` (a drain; default: its home)."""
        if runner_id is None:
            found = self.store.volume_homes([volume_id]).get(volume_id)
            runner_id = found.home if found is not None else None
            if runner_id is None or runner_id not in self.members:
                raise errors.InvalidState(f"volume {volume_id} is on no runner")
        return await self._member(runner_id).archive_volume(volume_id)

    async def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        """On the runners holding ``source``; sharing snapshots, on one of them (else on
        one that fetches it first)."""
        return int(await self._first(
            lambda m: m.clone_snapshot(source, ref, config),
            lambda m: m.has_snapshot(source) or m.fetches_snapshots(),
            prefer=lambda m: m.has_snapshot(source)))  # fmt: skip

    async def import_image(self, ref: str, image: str) -> PulledImage:
        result: PulledImage = await self._first(lambda m: m.import_image(ref, image),
                                                lambda m: m.has_local_image(image))  # fmt: skip
        return result

    async def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None,
    ) -> PulledImage:  # fmt: skip
        """Every runner pulls it (a sandbox of it may be placed on any); the progress
        shown is the first one's."""
        members = self._reachable()
        if not members:
            raise errors.Unavailable("no runner answers")
        results = await asyncio.gather(*(m.pull_image(ref, image, auth, progress if i == 0
                                                      else None)
                                         for i, m in enumerate(members)),
                                       return_exceptions=True)  # fmt: skip
        return _first_ok(results)

    async def _each(self, call: Callable[[MemberRunner], Any]) -> None:
        results = await asyncio.gather(*(call(m) for m in self._reachable()),
                                       return_exceptions=True)  # fmt: skip
        for result in results:
            if isinstance(result, errors.CoveError):
                log.warning("runner call failed: %s", result.message)
            elif isinstance(result, BaseException):
                raise result

    async def _first(self, call: Callable[[MemberRunner], Any],
                     able: Callable[[MemberRunner], bool],
                     prefer: Callable[[MemberRunner], bool] | None = None) -> Any:  # fmt: skip
        """``call`` on every answering runner that is ``able`` (a snapshot made on each
        of them); the first result. When they all share their snapshots (a store they
        fetch from), on one alone: the next only if it failed (two uploads of one
        snapshot would race)."""
        members = [m for m in self._reachable() if able(m)]
        if not members:
            raise errors.Unavailable("no runner answers that can do it")
        if all(m.fetches_snapshots() for m in members):
            if prefer is not None:
                members.sort(key=lambda m: not prefer(m))
            failed: list[BaseException] = []
            for member in members:
                try:
                    return await call(member)
                except errors.CoveError as exc:
                    failed.append(exc)
            raise failed[0]
        if prefer is not None:
            members = [m for m in members if prefer(m)]
            if not members:
                raise errors.Unavailable("no runner answers that can do it")
        return _first_ok(await asyncio.gather(*(call(m) for m in members),
                                              return_exceptions=True))  # fmt: skip


def _first_ok(results: list[Any]) -> Any:
    """The first result that is not an error (else the first error, raised)."""
    for result in results:
        if not isinstance(result, BaseException):
            return result
    raise results[0]
