"""Host uid/gid ranges of sandboxes' user namespaces, leased durably and host-wide.

Every sandbox gets a range of its own: ``RANGE`` ids starting at ``base``. Its
user namespace maps the sandbox's uids 0..65535 to ``base``..``base+65535``
(root in a sandbox is nobody on the host), and uid ``AGENT_UID`` (65536) to
``base+65536``: the id the sandbox's init and toolbox agent run as, which no
process of the sandbox's workload can take (see ``agent/confine.py``).

Ranges are claimed in a registry shared by every Cove server on the host
(``/var/lib/cove-ids/<index>`` holds ``<data dir>\\n<sandbox id>``, made with
O_EXCL, so two servers never collide), and recorded in the sandbox's own
directory (``ids.json``) so that it keeps its range across stops, archives and
restarts. Files on disk carry the sandbox's own ids (0 for its root), so a
range can change without touching them (forks get a new one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cove.errors import RuntimeBackendError

REGISTRY = Path("/var/lib/cove-ids")
FIRST = 1 << 28  # far above the ids of host users and /etc/subuid ranges
STRIDE = 1 << 17
COUNT = ((1 << 31) - FIRST) // STRIDE  # ranges stay below 2**31 (signed-int safe)
SIZE = 65536  # ids a sandbox's workload may use
AGENT_UID = SIZE  # the agent's id inside the sandbox's outer user namespace
LEASE = "ids.json"


@dataclass(frozen=True)
class IdRange:
    """One sandbox's ids on the host."""

    index: int

    @property
    def base(self) -> int:
        """Host id of the sandbox's root."""
        return FIRST + self.index * STRIDE

    @property
    def agent(self) -> int:
        """Host id of the sandbox's init and agent."""
        return self.base + AGENT_UID

    @property
    def outer_map(self) -> str:
        """``inside:outside:count`` of the outer user namespace (workload ids + agent)."""
        return f"0:{self.base}:{SIZE + 1}"

    @property
    def inner_map(self) -> str:
        """The workload namespace's map, relative to the outer one (identity on 0..65535)."""
        return f"0:0:{SIZE}"


def lease(root: Path, data_dir: Path, registry: Path = REGISTRY) -> IdRange:
    """The range of the sandbox whose directory is ``root``; claimed on first use.

    Raises:
        RuntimeBackendError: every range of the host is taken.
    """
    found = current(root)
    if found is not None:
        return found
    try:
        registry.mkdir(mode=0o700, parents=True, exist_ok=True)
        taken = {int(n) for n in os.listdir(registry) if n.isdigit()}
        for index in (i for i in range(COUNT) if i not in taken):
            try:
                fd = os.open(registry / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{data_dir}\n{root.name}\n")
            tmp = root / f".{LEASE}.tmp"
            tmp.write_text(json.dumps({"index": index}))
            os.replace(tmp, root / LEASE)
            return IdRange(index)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot lease ids for {root.name}: {exc}") from exc
    raise RuntimeBackendError("every sandbox id range of this host is taken")


def current(root: Path) -> IdRange | None:
    """The sandbox's leased range, or None when it has none yet."""
    try:
        index = int(json.loads((root / LEASE).read_text())["index"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return IdRange(index) if 0 <= index < COUNT else None


def release(root: Path, data_dir: Path, registry: Path = REGISTRY) -> None:
    """Give the sandbox's range back (only its own claim is removed; found in the
    registry when its directory lost the record)."""
    found = current(root)
    if found is not None:
        _drop(registry / str(found.index), data_dir, root.name)
    else:
        sweep(data_dir, keep=set(claims(data_dir, registry)) - {root.name}, registry=registry)
    (root / LEASE).unlink(missing_ok=True)


def sweep(data_dir: Path, keep: set[str], registry: Path = REGISTRY) -> None:
    """Release the claims of ``data_dir``'s sandboxes that are not in ``keep``."""
    try:
        names = os.listdir(registry)
    except FileNotFoundError:
        return
    for name in names:
        owner = _owner(registry / name)
        if owner is not None and owner[0] == str(data_dir) and owner[1] not in keep:
            _drop(registry / name, str(data_dir), owner[1])


def claims(data_dir: Path, registry: Path = REGISTRY) -> list[str]:
    """Sandbox ids of ``data_dir`` holding a claim (for leak checks)."""
    try:
        names = os.listdir(registry)
    except FileNotFoundError:
        return []
    owners = (_owner(registry / n) for n in names)
    return [o[1] for o in owners if o is not None and o[0] == str(data_dir)]


def _owner(claim: Path) -> tuple[str, str] | None:
    try:
        lines = claim.read_text().splitlines()
    except OSError:
        return None
    return (lines[0], lines[1]) if len(lines) >= 2 else None


def _drop(claim: Path, data_dir: Path | str, sandbox_id: str) -> None:
    if _owner(claim) == (str(data_dir), sandbox_id):
        claim.unlink(missing_ok=True)
