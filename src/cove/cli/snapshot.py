"""``cove snapshot ...``: snapshots over the API, and the default snapshot's local build."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from cove.cli import output
from cove.cli.common import Api, api_command, local_settings
from cove.cli.output import Column, field
from cove.core.config import Settings
from cove.hostfiles import prepare_host_dirs

COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("STATE", output.state_cell),
    ("IMAGE", field("imageName")), ("CPU", field("cpu")), ("MEMORY", field("mem")),
    ("DISK", field("disk")), ("CREATED", field("createdAt")),
]  # fmt: skip
ROWS: list[Column] = [
    ("ID", field("id")), ("Name", field("name")), ("State", output.state_cell),
    ("Image", field("imageName")), ("General", field("general")), ("Size (GiB)", field("size")),
    ("Entrypoint", field("entrypoint")), ("CPU", field("cpu")),
    ("Memory (GiB)", field("mem")), ("Disk (GiB)", field("disk")),
    ("Error", field("errorReason")), ("Created", field("createdAt")),
    ("Last used", field("lastUsedAt")),
]  # fmt: skip


@click.group()
def snapshot() -> None:
    """List, inspect and delete snapshots; build the default one on this host."""


@snapshot.command("list")
@api_command
def list_snapshots(api: Api) -> None:
    """List the snapshots the organization can use."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        got = api.client.call("GET", "/snapshots", params={"page": page, "limit": 200})
        items.extend(got["items"])
        if page >= got.get("totalPages", 1):
            break
        page += 1
    output.show(items, api.json, lambda rows: output.table(rows, COLUMNS))


@snapshot.command()
@click.argument("name_or_id", metavar="NAME")
@api_command
def info(api: Api, name_or_id: str) -> None:
    """Show one snapshot (by name or id)."""
    got = api.client.call("GET", f"/snapshots/{quote(name_or_id, safe='')}")
    output.show(got, api.json, lambda item: output.details(item, ROWS))


@snapshot.command()
@click.argument("name_or_id", metavar="NAME")
@api_command
def delete(api: Api, name_or_id: str) -> None:
    """Delete a snapshot (refused while sandboxes use it)."""
    got = api.client.call("GET", f"/snapshots/{quote(name_or_id, safe='')}")
    api.client.call("DELETE", f"/snapshots/{quote(got['id'], safe='')}")
    if api.json:
        output.emit_json(got)
    else:
        click.echo(got["name"])


@snapshot.command("build-default")
@click.option("--force", is_flag=True, help="Rebuild even if it is up to date.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def build_default(force: bool, data_dir: Path | None) -> None:
    """Build the default snapshot (Debian bookworm) on this host unless it is current."""
    settings = local_settings(data_dir=data_dir)
    prepare_host_dirs(settings)
    path = ensure_default_snapshot(settings, force=force)
    output.stderr().print(f"default snapshot ready: {path}")


def ensure_default_snapshot(settings: Settings, *, force: bool) -> Path:
    """Build the default snapshot unless it is current, showing the build's progress."""
    from cove.runner.storage.snapshot import ensure_default_snapshot as ensure

    console = output.stderr()

    def progress(line: str) -> None:
        console.print(f"[dim]snapshot[/dim] {line.rstrip()}", highlight=False)

    return ensure(settings, force=force, progress=progress)
