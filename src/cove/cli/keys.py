"""``cove keys ...``: API keys, in this host's database (run where the server runs)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from cove.cli import output
from cove.cli.common import local_settings
from cove.cli.output import Column, field
from cove.store.keys import KeyInfo, SqlKeyStore

COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("ORGANIZATION", field("organization")),
    ("CREATED", field("createdAt")),
]  # fmt: skip
MIN_PREFIX = 4  # an id prefix shorter than this is too easy to mistype into another key

data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="The server's data directory [/var/lib/cove].")


@click.group()
def keys() -> None:
    """Manage API keys (talks to the database directly)."""


def _store(data_dir: Path | None) -> SqlKeyStore:
    from cove.server import open_database

    return SqlKeyStore(open_database(local_settings(data_dir=data_dir)))


@keys.command("create")
@click.option("--org", "organization", default="default", show_default=True,
              help="Organization the key belongs to (created if missing).")
@click.option("--name", default="key", show_default=True)
@data_dir_option
def create_key(organization: str, name: str, data_dir: Path | None) -> None:
    """Create an API key and print it (it is stored only as a hash)."""
    from cove.core.auth import AuthService
    from cove.server import open_database

    settings = local_settings(data_dir=data_dir)
    engine = open_database(settings)
    click.echo(AuthService(settings, SqlKeyStore(engine)).create_key(organization, name=name))


@keys.command("list")
@click.option("--org", "organization", default=None, help="Only this organization's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def list_keys(organization: str | None, as_json: bool, data_dir: Path | None) -> None:
    """List API keys: id, name, organization, creation (never the key itself)."""
    found = [_public(k) for k in _store(data_dir).list_keys(organization)]
    output.show(found, as_json, lambda rows: output.table(rows, COLUMNS))


@keys.command("revoke")
@click.argument("name_or_prefix")
@click.option("--org", "organization", default="default", show_default=True,
              help="Organization the key belongs to.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def revoke_key(name_or_prefix: str, organization: str, as_json: bool,
               data_dir: Path | None) -> None:  # fmt: skip
    """Revoke one key of an organization, by its name or the start of its id.

    A name or prefix that matches several keys revokes none (use a longer prefix of
    the id). The key set in COVE_API_KEY is not in the database: unset it instead.
    """
    store = _store(data_dir)
    candidates = store.list_keys(organization)
    matches = [k for k in candidates if k.name == name_or_prefix] or [
        k for k in candidates
        if len(name_or_prefix) >= MIN_PREFIX and k.id.startswith(name_or_prefix)]  # fmt: skip
    if not matches:
        raise click.ClickException(
            f"organization {organization!r} has no key named {name_or_prefix!r} nor one whose "
            f"id starts with it (ids are matched from {MIN_PREFIX} characters on)")
    if len(matches) > 1:
        ids = ", ".join(k.id for k in matches)
        raise click.ClickException(
            f"{len(matches)} keys match {name_or_prefix!r} ({ids}): give a longer id prefix")
    store.delete_key(matches[0].id)
    if as_json:
        output.emit_json(_public(matches[0]))
    else:
        click.echo(matches[0].id)


def _public(key: KeyInfo) -> dict[str, str]:
    """A key's JSON fields, in the API's camelCase."""
    fields = asdict(key)
    fields["createdAt"] = fields.pop("created_at")
    return fields
