"""``cove volume ...``: volumes over the API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from cove.cli import output
from cove.cli.client import ApiError
from cove.cli.common import Api, api_command
from cove.cli.output import Column, field

COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("STATE", output.state_cell),
    ("CREATED", field("createdAt")), ("LAST USED", field("lastUsedAt")),
]  # fmt: skip


@click.group()
def volume() -> None:
    """List, create and delete volumes (storage sandboxes mount)."""


@volume.command("list")
@api_command
def list_volumes(api: Api) -> None:
    """List the organization's volumes."""
    items = api.client.call("GET", "/volumes")
    output.show(items, api.json, lambda rows: output.table(rows, COLUMNS))


@volume.command()
@click.argument("name")
@api_command
def create(api: Api, name: str) -> None:
    """Create a volume; prints its id."""
    made = api.client.call("POST", "/volumes", json={"name": name})
    if api.json:
        output.emit_json(made)
    else:
        click.echo(made["id"])


@volume.command()
@click.argument("name_or_id", metavar="NAME")
@api_command
def delete(api: Api, name_or_id: str) -> None:
    """Delete a volume and its data (refused while a sandbox mounts it)."""
    found = _find(api, name_or_id)
    api.client.call("DELETE", f"/volumes/{quote(found['id'], safe='')}")
    if api.json:
        output.emit_json(found)
    else:
        click.echo(found["name"])


def _find(api: Api, name_or_id: str) -> dict[str, Any]:
    """A volume by id, else by name."""
    segment = quote(name_or_id, safe="")
    try:
        return api.client.call("GET", f"/volumes/{segment}")
    except ApiError as exc:
        if exc.status != 404:
            raise
    return api.client.call("GET", f"/volumes/by-name/{segment}")
