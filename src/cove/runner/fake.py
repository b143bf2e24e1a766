"""An in-memory HostRuntime for fast unit tests of ``core`` and ``api``.

Never the default: ``cove serve`` always runs real containers. Failures can be
injected per method with ``fail_on``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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
from cove.errors import InvalidState, RuntimeBackendError, Unavailable

C = ContainerStatus


@dataclass
class _Box:
    status: ContainerStatus
    resources: Resources
    files: dict[str, bytes] = field(default_factory=dict)


TAR_END = 1024  # the two zero blocks that end every tar archive


class FakeRuntime:
    """Keeps each sandbox's status and files in a dict."""

    def __init__(
        self, snapshots: Sequence[str] = ("cove-default",), agent_path: str | None = None
    ) -> None:
        self.snapshots = set(snapshots)
        # Toolbox calls go to an agent listening here (tests run one in process).
        self.agent_path = agent_path
        self.boxes: dict[str, _Box] = {}
        self.archives: dict[str, dict[str, bytes]] = {}
        self.fail_on: dict[str, str] = {}
        self.images: set[str] = set()  # what import_image can resolve
        self.image_configs: dict[str, ImageConfig] = {}  # their configs (else empty)
        # what pull_image can pull: normalized reference -> (digest, config, password)
        self.registry: dict[str, tuple[str, ImageConfig, str | None]] = {}
        self.pulls: list[tuple[str, RegistryAuth | None]] = []
        self.calls: list[tuple[str, str]] = []
        self.networks: dict[str, NetworkPolicy] = {}
        self.isolations = {"crun", "gvisor"}  # tiers this fake pretends to have
        self.specs: dict[str, ContainerSpec] = {}  # the last spec of each sandbox
        self.stale_work_removals = 0

    def _check(self, method: str, sandbox_id: str) -> None:
        self.calls.append((method, sandbox_id))
        if method in self.fail_on:
            raise RuntimeBackendError(self.fail_on[method])

    def has_snapshot(self, name: str) -> bool:
        return name in self.snapshots

    def fetches_snapshots(self) -> bool:
        return False

    def has_local_image(self, image: str) -> bool:
        return image in self.images

    def has_isolation(self, name: str) -> bool:
        return name in self.isolations

    def create(self, spec: ContainerSpec) -> None:
        self._check("create", spec.sandbox_id)
        self.specs[spec.sandbox_id] = spec
        self.boxes[spec.sandbox_id] = _Box(C.STOPPED, spec.resources)

    def start(self, spec: ContainerSpec) -> None:
        self._check("start", spec.sandbox_id)
        self.specs[spec.sandbox_id] = spec
        box = self.boxes.get(spec.sandbox_id)
        if box is None:
            raise RuntimeBackendError(f"no filesystem for {spec.sandbox_id}")
        box.status = C.RUNNING

    def stop(self, sandbox_id: str, *, force: bool = False) -> None:
        self._check("stop", sandbox_id)
        box = self.boxes.get(sandbox_id)
        if box is not None:
            box.status = C.STOPPED

    def destroy(self, sandbox_id: str) -> None:
        self._check("destroy", sandbox_id)
        self.boxes.pop(sandbox_id, None)
        self.archives.pop(sandbox_id, None)

    def release(self, sandbox_id: str) -> None:
        if sandbox_id in self.boxes or sandbox_id not in self.archives:
            raise InvalidState(f"sandbox {sandbox_id} is not archived")

    def archive(self, sandbox_id: str) -> int:
        self._check("archive", sandbox_id)
        box = self.boxes.pop(sandbox_id)
        self.archives[sandbox_id] = box.files
        return TAR_END + sum(len(v) for v in box.files.values())  # never empty, like a tar

    def restore(self, spec: ContainerSpec) -> None:
        self._check("restore", spec.sandbox_id)
        files = self.archives.pop(spec.sandbox_id)
        self.boxes[spec.sandbox_id] = _Box(C.STOPPED, spec.resources, files)

    def pause(self, sandbox_id: str) -> None:
        self._check("pause", sandbox_id)
        box = self.boxes.get(sandbox_id)
        if box is None or box.status is not C.RUNNING:
            raise RuntimeBackendError(f"sandbox {sandbox_id} is not running")
        box.status = C.PAUSED

    def resume(self, sandbox_id: str) -> None:
        self._check("resume", sandbox_id)
        box = self.boxes.get(sandbox_id)
        if box is not None and box.status is C.PAUSED:
            box.status = C.RUNNING

    def fork(self, source_id: str, spec: ContainerSpec) -> None:
        self._check("fork", spec.sandbox_id)
        self.specs[spec.sandbox_id] = spec
        source = self.boxes.get(source_id)
        if source is None:
            raise RuntimeBackendError(f"sandbox {source_id} has no writable layer to fork")
        self.boxes[spec.sandbox_id] = _Box(C.STOPPED, spec.resources, dict(source.files))

    def capture(self, sandbox_id: str, ref: str, config: ImageConfig | None = None) -> int:
        self._check("capture", sandbox_id)
        if sandbox_id not in self.boxes:
            raise RuntimeBackendError(f"sandbox {sandbox_id} has no writable layer")
        self.snapshots.add(ref)
        return 1

    def clone_snapshot(self, source: str, ref: str, config: ImageConfig) -> int:
        self._check("clone_snapshot", ref)
        if source not in self.snapshots:
            raise RuntimeBackendError(f"snapshot {source} not found")
        self.snapshots.add(ref)
        return 1

    def import_image(self, ref: str, image: str) -> PulledImage:
        self._check("import_image", ref)
        if image not in self.images:
            raise RuntimeBackendError(f"image '{image}' cannot be resolved")
        self.snapshots.add(ref)
        return PulledImage(size=1, digest="", config=self.image_configs.get(image, ImageConfig()))

    def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
    ) -> PulledImage:  # fmt: skip
        self._check("pull_image", ref)
        self.pulls.append((image, auth))
        if image not in self.registry:
            raise RuntimeBackendError(f"image '{image}' not found in its registry")
        digest, config, password = self.registry[image]
        if password is not None and (auth is None or auth.password != password):
            raise RuntimeBackendError(f"image '{image}': authentication required")
        if progress is not None:
            progress(f"Pulled {image}")
        self.snapshots.add(ref)
        return PulledImage(size=1, digest=digest, config=config)

    def remove_snapshot(self, ref: str) -> None:
        self.snapshots.discard(ref)

    def resize(self, sandbox_id: str, resources: Resources, *, live: bool) -> None:
        self._check("resize", sandbox_id)
        if sandbox_id in self.boxes:
            self.boxes[sandbox_id].resources = resources

    def status(self, sandbox_id: str) -> ContainerStatus:
        if sandbox_id in self.boxes:
            return self.boxes[sandbox_id].status
        return C.ARCHIVED if sandbox_id in self.archives else C.ABSENT

    def list_ids(self) -> set[str]:
        return set(self.boxes) | set(self.archives)

    def tidy(self, sandbox_id: str) -> None:
        self._check("tidy", sandbox_id)

    def remove_stale_work(self) -> None:
        self.stale_work_removals += 1

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
        self._check("exec", sandbox_id)
        return ExecResult(0, " ".join(argv).encode(), b"")

    def stats(self, sandbox_id: str) -> ContainerStats:
        return ContainerStats(0, 0, 1)

    def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        self._check("set_network", sandbox_id)
        self.networks[sandbox_id] = policy

    def adopt(self, spec: ContainerSpec) -> None:
        self._check("adopt", spec.sandbox_id)
        box = self.boxes.get(spec.sandbox_id)
        if box is None or box.status != C.RUNNING or spec.isolation != "crun":
            raise RuntimeBackendError(f"sandbox {spec.sandbox_id} cannot be adopted")
        if len(spec.hostname.encode()) > 64:  # the kernel's limit
            raise RuntimeBackendError(f"cannot set hostname {spec.hostname!r}")
        self.specs[spec.sandbox_id] = spec

    def address(self, sandbox_id: str) -> str | None:
        box = self.boxes.get(sandbox_id)
        return "127.0.0.1" if box is not None and box.status == C.RUNNING else None

    def agent_socket(self, sandbox_id: str) -> socket.socket:
        box = self.boxes.get(sandbox_id)
        if box is None or box.status != C.RUNNING or self.agent_path is None:
            raise Unavailable(f"sandbox {sandbox_id} has no agent")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.agent_path)
        return sock
