"""Turning a create or resize request into something the lifecycle can act on.

Everything here runs before anything is created, so bad input never leaves a
half-made sandbox behind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from cove.core.config import Settings
from cove.core.env_update import env_bytes
from cove.core.ports import ISOLATIONS, ImageConfig, NetworkPolicy, Resources
from cove.errors import BadRequest, QuotaExceeded
from cove.schemas.limits import MAX_ENV_BYTES, MAX_ENV_VARS, MAX_PATH, USER_NAME
from cove.schemas.sandbox import SandboxCreate, SandboxResize

LANGUAGE_LABEL = "code-toolbox-language"
ISOLATION_LABEL = "cove.io/isolation"
LANGUAGES = frozenset({"python", "typescript", "javascript"})
MAX_ALLOW_LIST = 10
MAX_DOMAINS = 50
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_COMMAND = 32 * 1024  # an image's Entrypoint, or Cmd: what a Dockerfile's line may say
# Docker's ``user[:group]``, each a name (as a requested user is) or a numeric id.
_ID = rf"(?:{USER_NAME.strip('^$')}|[0-9]{{1,10}})"
IMAGE_USER = re.compile(rf"^{_ID}(?::{_ID})?$")
# What no sandbox reaches unless the operator exempts it (COVE_EGRESS_ALLOW):
# "this network", RFC 1918, CGNAT, loopback, link-local (cloud metadata),
# multicast, and reserved 240/4 with the limited broadcast address.
DEFAULT_EGRESS_BLOCK = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
Net = ipaddress.IPv4Network


def check_limits(resources: Resources, settings: Settings) -> None:
    """Raise QuotaExceeded when a resource is outside 1..max."""
    limits = {
        "cpu": (resources.cpu, settings.max_cpu, "vCPUs"),
        "memory": (resources.memory, settings.max_memory, "GiB of memory"),
        "disk": (resources.disk, settings.max_disk, "GiB of disk"),
    }
    for name, (value, maximum, unit) in limits.items():
        if value < 1:
            raise QuotaExceeded(f"{name} must be at least 1, got {value}")
        if value > maximum:
            raise QuotaExceeded(
                f"{name} {value} exceeds the per-sandbox limit of {maximum} {unit}"
            )


def requested_resources(req: SandboxCreate, settings: Settings) -> Resources:
    resources = Resources(
        cpu=req.cpu if req.cpu is not None else settings.default_cpu,
        memory=req.memory if req.memory is not None else settings.default_memory,
        disk=req.disk if req.disk is not None else settings.default_disk,
    )
    if req.gpu:
        raise BadRequest("GPUs are not available on this server")
    check_limits(resources, settings)
    return resources


def check_labels(labels: dict[str, str]) -> None:
    language = labels.get(LANGUAGE_LABEL)
    if language is not None and language not in LANGUAGES:
        raise BadRequest(
            f"label {LANGUAGE_LABEL} must be one of {', '.join(sorted(LANGUAGES))}"
        )


def check_image_config(config: ImageConfig) -> None:
    """Check what Cove keeps of an image's config, written by whoever pushed the image,
    as the API checks what a client asks for: its User becomes a sandbox's user (as a
    requested one), its Entrypoint or Cmd is returned by every listing of snapshots,
    all of it is stored with the snapshot and started with its sandboxes.

    Raises:
        BadRequest: a field past its bound (named, with the bound), or a User that is
            no ``user[:group]`` of names or ids.
    """
    if config.user is not None and not IMAGE_USER.match(config.user):
        shown = config.user if len(config.user) <= 64 else f"{config.user[:64]}..."
        raise BadRequest(f"the image's User {shown!r} is not a user name or uid "
                         "(user[:group])")  # fmt: skip
    for field, words in (("Entrypoint", config.entrypoint), ("Cmd", config.cmd)):
        size = sum(len(word) + 1 for word in words)
        if size > MAX_COMMAND:
            raise BadRequest(f"the image's {field} takes {size} characters, "
                             f"at most {MAX_COMMAND}")  # fmt: skip
        if any("\0" in word for word in words):
            raise BadRequest(f"the image's {field} holds a NUL character")
    if len(config.env) > MAX_ENV_VARS:
        raise BadRequest(f"the image's Env has {len(config.env)} variables, "
                         f"at most {MAX_ENV_VARS}")  # fmt: skip
    if env_bytes(config.env) > MAX_ENV_BYTES:
        raise BadRequest(f"the image's Env takes {env_bytes(config.env)} bytes, "
                         f"at most {MAX_ENV_BYTES}")  # fmt: skip
    if config.workdir is not None and len(config.workdir) > MAX_PATH:
        raise BadRequest(f"the image's WorkingDir is {len(config.workdir)} characters long, "
                         f"at most {MAX_PATH}")  # fmt: skip


def isolation(labels: Mapping[str, str], settings: Settings,
              available: Callable[[str], bool]) -> str:  # fmt: skip
    """A new sandbox's isolation tier: its ``cove.io/isolation`` label, else
    ``COVE_DEFAULT_ISOLATION``.

    Raises:
        BadRequest: an unknown tier, or one this host cannot run.
    """
    tier = labels.get(ISOLATION_LABEL) or settings.default_isolation
    if tier not in ISOLATIONS:
        raise BadRequest(f"label {ISOLATION_LABEL} must be one of {', '.join(ISOLATIONS)}")
    if not available(tier):
        raise BadRequest(f"isolation {tier!r} is not available on this server "
                         "(gvisor needs runsc installed)")  # fmt: skip
    return tier


def check_isolation_label(labels: Mapping[str, str], tier: str) -> None:
    """New labels of an existing sandbox may not name another tier (it is fixed at create).

    Raises:
        BadRequest: they do.
    """
    if labels.get(ISOLATION_LABEL, tier) != tier:
        raise BadRequest(f"label {ISOLATION_LABEL} is fixed at create ({tier})")


def check_network(allow_list: str | None) -> None:
    """Validate a comma-separated CIDR allow-list (at most 10 entries)."""
    _cidrs(allow_list)


def network_policy(
    block_all: bool, allow_list: str | None, domain_list: str | None,
    settings: Settings | None = None,
) -> NetworkPolicy:  # fmt: skip
    """The firewall a sandbox's network fields ask for.

    With ``settings`` (a user's request, not a stored sandbox), a CIDR lying wholly
    inside the server's blocked ranges is refused: it could never open anything. One
    that only overlaps them is accepted; the firewall keeps the blocked part closed.

    Raises:
        BadRequest: an invalid CIDR or host name, too many entries, or a blocked CIDR.
    """
    cidrs = _cidrs(allow_list)
    if settings is not None:
        _check_not_blocked(cidrs, settings)
    domains = _domains(domain_list)
    return NetworkPolicy(block_all=block_all, allow_cidrs=cidrs, allow_domains=domains)


def blocked_ranges(settings: Settings) -> tuple[Net, ...]:
    """The IPv4 ranges no sandbox of this server may reach: the default block and
    ``egress_block``, minus ``egress_allow``."""
    return _blocked(settings.egress_block, settings.egress_allow)


@lru_cache(maxsize=8)
def _blocked(extra: tuple[str, ...], exempt: tuple[str, ...]) -> tuple[Net, ...]:
    ranges = _nets((*DEFAULT_EGRESS_BLOCK, *extra))
    for hole in _nets(exempt):
        ranges = _without(ranges, hole)
    return tuple(ipaddress.collapse_addresses(ranges))


def _check_not_blocked(cidrs: tuple[str, ...], settings: Settings) -> None:
    blocked = blocked_ranges(settings)
    for cidr in map(Net, cidrs):
        pieces = [cidr]
        for block in blocked:
            pieces = _without(pieces, block)
        if not pieces:
            listed = _nets((*DEFAULT_EGRESS_BLOCK, *settings.egress_block))
            inside = ", ".join(str(n) for n in listed if n.overlaps(cidr))
            raise BadRequest(
                f"networkAllowList: {cidr} lies in {inside}, which this server blocks "
                "for every sandbox"
            )


def _without(ranges: Iterable[Net], hole: Net) -> list[Net]:
    """``ranges`` with the addresses of ``hole`` taken out."""
    out: list[Net] = []
    for net in ranges:
        if net.subnet_of(hole):
            continue
        out.extend(net.address_exclude(hole) if hole.subnet_of(net) else [net])
    return out


def _nets(cidrs: Iterable[str]) -> list[Net]:
    return [Net(c, strict=False) for c in cidrs]


def _cidrs(allow_list: str | None) -> tuple[str, ...]:
    entries = _entries(allow_list)
    if len(entries) > MAX_ALLOW_LIST:
        raise BadRequest(f"networkAllowList takes at most {MAX_ALLOW_LIST} CIDRs")
    out = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise BadRequest(f"networkAllowList: invalid CIDR '{entry}'") from exc
        if net.version != 4:
            raise BadRequest(f"networkAllowList: only IPv4 ranges are supported, got '{entry}'")
        out.append(str(net))
    return tuple(out)


def _domains(domain_list: str | None) -> tuple[str, ...]:
    entries = [e.lower().rstrip(".") for e in _entries(domain_list)]
    if len(entries) > MAX_DOMAINS:
        raise BadRequest(f"domainAllowList takes at most {MAX_DOMAINS} names")
    for entry in entries:
        name = entry[2:] if entry.startswith("*.") else entry
        if len(name) > 253 or not all(_LABEL.match(part) for part in name.split(".")):
            raise BadRequest(f"domainAllowList: invalid host name '{entry}'")
    return tuple(entries)


def _entries(raw: str | None) -> list[str]:
    return [e.strip() for e in (raw or "").split(",") if e.strip()]


def resized(current: Resources, req: SandboxResize, settings: Settings) -> Resources:
    new = Resources(
        cpu=req.cpu if req.cpu is not None else current.cpu,
        memory=req.memory if req.memory is not None else current.memory,
        disk=req.disk if req.disk is not None else current.disk,
    )
    if req.gpu:
        raise BadRequest("GPUs are not available on this server")
    check_limits(new, settings)
    return new


def check_live_resize(current: Resources, new: Resources) -> None:
    """A started sandbox may only grow its CPU and memory."""
    if new.disk != current.disk:
        raise BadRequest("Disk can only be resized while the sandbox is stopped")
    if new.cpu < current.cpu or new.memory < current.memory:
        raise BadRequest(
            "CPU and memory can only be decreased while the sandbox is stopped"
        )
