"""Turning a create or resize request into something the lifecycle can act on.

Everything here runs before anything is created, so bad input never leaves a
half-made sandbox behind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping

from cove.core.config import Settings
from cove.core.ports import ISOLATIONS, NetworkPolicy, Resources
from cove.errors import BadRequest, QuotaExceeded
from cove.schemas.sandbox import SandboxCreate, SandboxResize

LANGUAGE_LABEL = "code-toolbox-language"
ISOLATION_LABEL = "cove.io/isolation"
LANGUAGES = frozenset({"python", "typescript", "javascript"})
MAX_ALLOW_LIST = 10
MAX_DOMAINS = 50
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


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


def with_isolation(
    labels: Mapping[str, str], settings: Settings, available: Callable[[str], bool]
) -> dict[str, str]:
    """The labels of a new sandbox, with its isolation tier resolved: the
    ``cove.io/isolation`` label, else ``COVE_DEFAULT_ISOLATION``.

    Raises:
        BadRequest: an unknown tier, or one this host cannot run.
    """
    tier = labels.get(ISOLATION_LABEL) or settings.default_isolation
    if tier not in ISOLATIONS:
        raise BadRequest(f"label {ISOLATION_LABEL} must be one of {', '.join(ISOLATIONS)}")
    if not available(tier):
        raise BadRequest(f"isolation {tier!r} is not available on this server "
                         "(gvisor needs runsc installed)")  # fmt: skip
    return {**labels, ISOLATION_LABEL: tier}


def isolation_of(labels: Mapping[str, str]) -> str:
    """A sandbox's tier (sandboxes made before tiers existed have no label: crun)."""
    return labels.get(ISOLATION_LABEL) or "crun"


def kept_isolation(current: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """New labels for an existing sandbox: its tier cannot change (it is kept when
    the new labels leave it out).

    Raises:
        BadRequest: the new labels name another tier.
    """
    tier = isolation_of(current)
    if new.get(ISOLATION_LABEL, tier) != tier:
        raise BadRequest(f"label {ISOLATION_LABEL} is fixed at create ({tier})")
    return {**new, ISOLATION_LABEL: tier}


def check_network(allow_list: str | None) -> None:
    """Validate a comma-separated CIDR allow-list (at most 10 entries)."""
    _cidrs(allow_list)


def network_policy(
    block_all: bool, allow_list: str | None, domain_list: str | None
) -> NetworkPolicy:
    """The firewall a sandbox's network fields ask for.

    Raises:
        BadRequest: an invalid CIDR or host name, or too many entries.
    """
    return NetworkPolicy(
        block_all=block_all, allow_cidrs=_cidrs(allow_list), allow_domains=_domains(domain_list)
    )


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
