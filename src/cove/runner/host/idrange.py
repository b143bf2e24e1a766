"""Host uid/gid ranges of sandboxes' user namespaces, leased durably and host-wide.

Every sandbox gets a range of its own: ``RANGE`` ids starting at ``base``. Its
user namespace maps the sandbox's uids 0..65535 to ``base``..``base+65535``
(root in a sandbox is nobody on the host), and uid ``AGENT_UID`` (65536) to
``base+65536``: the id the sandbox's init and toolbox agent run as, which no
process of the sandbox's workload can take (see ``agent/confine.py``). The
namespace is owned by ``base+65537``, which it does not map and no process keeps:
what the sandbox's processes are charged on the host (queued signals, message
queues, locked memory, processes) is counted for it alone (see nsexec.c).

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
OWNER_OFFSET = SIZE + 1  # the host id owning the outer namespace, after its map
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
    def owner(self) -> int:
        """Host id owning the sandbox's user namespace (mapped in none)."""
        return self.base + OWNER_OFFSET

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
            _record(root, index)
            return IdRange(index)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot lease ids for {root.name}: {exc}") from exc
    raise RuntimeBackendError("every sandbox id range of this host is taken")


def transfer(ids: IdRange, holder: tuple[Path, str], root: Path, data_dir: Path,
             registry: Path = REGISTRY) -> None:  # fmt: skip
    """Give range ``ids``, claimed by ``holder`` (its data dir and name, as :func:`lease`
    wrote them), to the sandbox whose directory is ``root``: the claim is rewritten to
    name the sandbox (one rename: the range is never unclaimed meanwhile), then the
    sandbox's directory records it.

    Raises:
        RuntimeBackendError: the claim is not ``holder``'s, or could not be rewritten.
    """
    claim = registry / str(ids.index)
    if _owner(claim) != (str(holder[0]), holder[1]):
        raise RuntimeBackendError(f"the claim of id range {ids.index} is not {holder[1]}'s")
    tmp = registry / f".{ids.index}.{os.getpid()}.tmp"  # (not a number: never a claim)
    try:
        tmp.write_text(f"{data_dir}\n{root.name}\n")
        os.replace(tmp, claim)
        _record(root, ids.index)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RuntimeBackendError(f"cannot hand id range {ids.index} to {root.name}: {exc}"
                                  ) from exc  # fmt: skip


def _record(root: Path, index: int) -> None:
    tmp = root / f".{LEASE}.tmp"
    tmp.write_text(json.dumps({"index": index}))
    os.replace(tmp, root / LEASE)


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
    for index, name in held(data_dir, registry).items():
        if name not in keep:
            _drop(registry / str(index), str(data_dir), name)


def claims(data_dir: Path, registry: Path = REGISTRY) -> list[str]:
    """Sandbox ids of ``data_dir`` holding a claim (for leak checks)."""
    return list(held(data_dir, registry).values())


def held(data_dir: Path, registry: Path = REGISTRY) -> dict[int, str]:
    """The ranges claimed for ``data_dir``: index -> the name that claimed it."""
    return {i: o[1] for i, o in owners(registry).items() if o[0] == str(data_dir)}


def owners(registry: Path = REGISTRY) -> dict[int, tuple[str, str]]:
    """Every claim of the host: index -> (data dir, name)."""
    try:
        names = [n for n in os.listdir(registry) if n.isdigit()]
    except FileNotFoundError:
        return {}
    found = {int(n): _owner(registry / n) for n in names}
    return {i: o for i, o in found.items() if o is not None}


def drop(ids: IdRange, holder: tuple[Path, str], registry: Path = REGISTRY) -> None:
    """Remove the claim of range ``ids`` if it is still ``holder``'s (data dir, name)."""
    _drop(registry / str(ids.index), holder[0], holder[1])


def _owner(claim: Path) -> tuple[str, str] | None:
    try:
        lines = claim.read_text().splitlines()
    except OSError:
        return None
    return (lines[0], lines[1]) if len(lines) >= 2 else None


def _drop(claim: Path, data_dir: Path | str, sandbox_id: str) -> None:
    if _owner(claim) == (str(data_dir), sandbox_id):
        claim.unlink(missing_ok=True)
