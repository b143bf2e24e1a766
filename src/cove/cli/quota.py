"""``cove quota ...``: organizations' quotas, in this host's database (run where the
server runs; a running server reads them at its next check)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cove.cli import output
from cove.cli.common import local_settings

if TYPE_CHECKING:
    from cove.core.quotas import QuotaService
    from cove.store.keys import SqlKeyStore

# option name -> Quota field (0: no limit; "default": back to the server's COVE_QUOTA_*)
OPTIONS = {
    "cpu": "cpu", "memory": "memory", "disk": "disk", "sandboxes": "sandboxes",
    "snapshots": "snapshots", "snapshot-storage": "snapshot_storage", "volumes": "volumes",
    "max-cpu-per-sandbox": "max_cpu_per_sandbox",
    "max-memory-per-sandbox": "max_memory_per_sandbox",
    "max-disk-per-sandbox": "max_disk_per_sandbox",
}  # fmt: skip
data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="The server's data directory [/var/lib/cove].")


@click.group()
def quota() -> None:
    """Organizations' quotas (talks to the database directly)."""


def _service(data_dir: Path | None) -> tuple[QuotaService, SqlKeyStore]:
    from cove.core.quotas import QuotaService
    from cove.server import open_database
    from cove.store.keys import SqlKeyStore
    from cove.store.usage import SqlQuotaStore

    settings = local_settings(data_dir=data_dir)
    engine = open_database(settings)
    return QuotaService(settings=settings, store=SqlQuotaStore(engine)), SqlKeyStore(engine)


def _limit(value: str) -> int | None:
    if value == "default":
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or 'default'") from None
    if number < 0:
        raise click.BadParameter("a quota is at least 0 (0: no limit)")
    return number


def _quota_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(OPTIONS):
        unit = " (GiB)" if name in ("memory", "disk", "snapshot-storage") else ""
        func = click.option(f"--{name}", OPTIONS[name], default=None, metavar="N|default",
                            help=f"{name.replace('-', ' ')}{unit}")(func)  # fmt: skip
    return func


@quota.command("set")
@click.argument("organization")
@_quota_options
@data_dir_option
def set_quota(organization: str, data_dir: Path | None, **limits: str | None) -> None:
    """Set ORGANIZATION's quota (created if missing): totals of its running sandboxes'
    vCPUs and memory, its unarchived sandboxes' disk, how many sandboxes, snapshots
    (and GiB of them) and volumes; per-sandbox maxima. 0: no limit."""
    fields = {name: _limit(value) for name, value in limits.items() if value is not None}
    if not fields:
        raise click.UsageError("name at least one quota, e.g. --cpu 8")
    service, keys = _service(data_dir)
    found = service.set_quota(keys.ensure_organization(organization), **fields)
    _print(organization, asdict(found), as_json=False)


@quota.command("show")
@click.argument("organization")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def show_quota(organization: str, as_json: bool, data_dir: Path | None) -> None:
    """Show ORGANIZATION's quota and what it holds now."""
    service, keys = _service(data_dir)
    org_id = keys.ensure_organization(organization)
    usage = service.usage(org_id)
    held = {"cpu": usage.compute.cpu, "memory": usage.compute.memory,
            "disk": usage.compute.disk, "sandboxes": usage.sandboxes,
            "snapshots": usage.snapshots, "volumes": usage.volumes,
            "snapshot_storage": round(usage.snapshot_bytes / 2**30, 3)}  # fmt: skip
    _print(organization, asdict(service.quota(org_id)), as_json=as_json, used=held)


def _print(organization: str, limits: dict[str, int | None], *, as_json: bool,
           used: dict[str, float] | None = None) -> None:  # fmt: skip
    rows = [{"quota": name.replace("_", "-"), "limit": limits[name],
             **({"used": used.get(name)} if used is not None else {})}
            for name in limits]  # fmt: skip
    columns: list[output.Column] = [("QUOTA", output.field("quota")),
                                    ("LIMIT", lambda r: _shown(r["limit"]))]  # fmt: skip
    if used is not None:
        columns.append(("USED", lambda r: "" if r["used"] is None else r["used"]))
    output.show({"organization": organization, "quota": limits, **({"used": used} if used else {})}
                if as_json else rows, as_json, lambda items: output.table(items, columns))


def _shown(limit: int | None) -> str:
    return "server's" if limit is None else ("none" if limit == 0 else str(limit))
