"""``cove keys ...``: API keys, through a server's API (``/api/api-keys``), or in this
host's database with ``--local`` (also implied by ``--org`` and ``--data-dir``): the
operator's way, which makes organizations and keys holding every permission."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click

from cove.cli import output
from cove.cli.common import api_options, api_session, local_settings
from cove.cli.output import Column, field
from cove.core.permissions import ALL, Permission, ordered
from cove.store.keys import SqlKeyStore

F = TypeVar("F", bound=Callable[..., Any])
MIN_PREFIX = 4  # an id prefix shorter than this is too easy to mistype into another key
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _permissions_cell(item: Mapping[str, Any]) -> str:
    held = item.get("permissions") or []
    return "all" if set(held) >= set(ALL) else ",".join(held) or "(none)"


COLUMNS: list[Column] = [
    ("ID", field("userId")), ("NAME", field("name")), ("KEY", field("value")),
    ("PERMISSIONS", _permissions_cell), ("CREATED", field("createdAt")),
    ("LAST USED", field("lastUsedAt")), ("EXPIRES", field("expiresAt")),
]  # fmt: skip
LOCAL_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("ORGANIZATION", field("organization")),
    ("PERMISSIONS", _permissions_cell), ("CREATED", field("createdAt")),
    ("LAST USED", field("lastUsedAt")), ("EXPIRES", field("expiresAt")),
]  # fmt: skip


@click.group()
def keys() -> None:
    """List, create and revoke API keys (over the API; on this host with --local)."""


def keys_command(func: F) -> F:
    """The options of every ``keys`` command: the API's, and the local database's."""
    func = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                        help="The server's data directory [/var/lib/cove] "
                             "(implies --local).")(func)  # fmt: skip
    func = click.option("--local", is_flag=True,
                        help="Work on this host's database, not through the API.")(func)
    return api_options(click.pass_context(func))  # type: ignore[return-value]


def _expiry(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``--expires``: a duration from now (``30d``, ``12h``, ``90m``, ``2w``) or an ISO
    date or time (UTC unless it says otherwise)."""
    if value is None:
        return None
    matched = re.fullmatch(r"(\d+)([smhdw])", value.strip())
    if matched:
        return datetime.now(UTC) + timedelta(seconds=int(matched[1]) * UNITS[matched[2]])
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a duration (30d, 12h, 90m) nor an "
                                 "ISO date or time", ctx, param) from None  # fmt: skip
    return at if at.tzinfo else at.replace(tzinfo=UTC)


permission_option = click.option(
    "--permission", "permissions", multiple=True, metavar="PERMISSION",
    type=click.Choice([str(p) for p in Permission]),
    help="A permission the key holds, repeat it (Daytona's: write:sandboxes, "
         "delete:sandboxes, read:volumes, manage:api_keys, ...). Default: those of the "
         "calling key (--local: all of them).")  # fmt: skip
expires_option = click.option("--expires", callback=_expiry, default=None,
                              help="When the key stops working: 30d, 12h, or an ISO date.")


@keys.command("create")
@click.option("--name", default="key", show_default=True, help="The key's name.")
@permission_option
@expires_option
@click.option("-q", "--quiet", is_flag=True, help="Print the key alone.")
@click.option("--org", "organization", default=None,
              help="Organization the key belongs to, created if missing (implies --local; "
                   "default: 'default').")  # fmt: skip
@keys_command
def create_key(ctx: click.Context, api_url: str, api_key: str | None, as_json: bool,
               local: bool, data_dir: Path | None, organization: str | None, name: str,
               permissions: Sequence[str], expires: datetime | None,
               quiet: bool) -> None:  # fmt: skip
    """Create an API key and print it, once (only its hash is stored).

    Through the API it is printed as `export` lines to paste into a shell; with
    --local (on the server's host), alone, for scripts.
    """
    if local or organization or data_dir:
        from cove.core.auth import AuthService

        store = _store(data_dir)
        wanted = frozenset(Permission(p) for p in permissions) if permissions else None
        settings = local_settings(data_dir=data_dir)
        click.echo(AuthService(settings, store).create_key(
            organization or "default", name=name, permissions=wanted, expires_at=expires))
        return
    with api_session(ctx, api_url, api_key, as_json) as api:
        held = permissions or api.client.call("GET", "/api-keys/current")["permissions"]
        body = {"name": name, "permissions": list(held),
                "expiresAt": expires.isoformat() if expires else None}  # fmt: skip
        made = api.client.call("POST", "/api-keys", json=body)
        if as_json:
            output.emit_json(made)
        elif quiet:
            click.echo(made["value"])
        else:
            click.echo(f"export DAYTONA_API_URL={api.client.api_url}\n"
                       f"export DAYTONA_API_KEY={made['value']}")  # fmt: skip


@keys.command("list")
@click.option("--org", "organization", default=None,
              help="Only this organization's keys (implies --local).")
@keys_command
def list_keys(ctx: click.Context, api_url: str, api_key: str | None, as_json: bool,
              local: bool, data_dir: Path | None, organization: str | None) -> None:  # fmt: skip
    """List API keys: name, masked value, permissions, use, expiry (never a key)."""
    if local or organization or data_dir:
        found = _local_keys(data_dir, organization)
        output.show(found, as_json, lambda rows: output.table(rows, LOCAL_COLUMNS))
        return
    with api_session(ctx, api_url, api_key, as_json) as api:
        items = api.client.call("GET", "/api-keys")
        output.show(items, as_json, lambda rows: output.table(rows, COLUMNS))


@keys.command("revoke")
@click.argument("name_or_prefix")
@click.option("--org", "organization", default=None,
              help="Organization the key belongs to (implies --local; default: 'default').")
@keys_command
def revoke_key(ctx: click.Context, api_url: str, api_key: str | None, as_json: bool,
               local: bool, data_dir: Path | None, organization: str | None,
               name_or_prefix: str) -> None:  # fmt: skip
    """Revoke one key, by its name or the start of its id.

    A name or prefix that matches several keys revokes none (use a longer prefix of
    the id). The key set in COVE_API_KEY is not in the database: unset it instead.
    """
    if local or organization or data_dir:
        org = organization or "default"
        found = _one(_local_keys(data_dir, org), name_or_prefix, "id", f"organization {org!r}")
        _store(data_dir).delete_key(found["id"])
        _done(found, found["id"], as_json)
        return
    with api_session(ctx, api_url, api_key, as_json) as api:
        found = _one(api.client.call("GET", "/api-keys"), name_or_prefix, "userId",
                     "the organization")  # fmt: skip
        user, name = quote(found["userId"], safe=""), quote(found["name"], safe="")
        api.client.call("DELETE", f"/api-keys/{user}/{name}")
        _done(found, found["userId"], as_json)


def _one(candidates: list[dict[str, Any]], wanted: str, id_field: str,
         where: str) -> dict[str, Any]:  # fmt: skip
    """The key named ``wanted``, else the one whose id starts with it."""
    matches = [k for k in candidates if k["name"] == wanted] or [
        k for k in candidates
        if len(wanted) >= MIN_PREFIX and str(k[id_field]).startswith(wanted)]  # fmt: skip
    if not matches:
        raise click.ClickException(
            f"{where} has no key named {wanted!r} nor one whose id starts with it "
            f"(ids are matched from {MIN_PREFIX} characters on)")
    if len(matches) > 1:
        ids = ", ".join(str(k[id_field]) for k in matches)
        raise click.ClickException(
            f"{len(matches)} keys match {wanted!r} ({ids}): give a longer id prefix")
    return matches[0]


def _done(found: dict[str, Any], key_id: str, as_json: bool) -> None:
    if as_json:
        output.emit_json(found)
    else:
        click.echo(key_id)


def _store(data_dir: Path | None) -> SqlKeyStore:
    from cove.server import open_database

    return SqlKeyStore(open_database(local_settings(data_dir=data_dir)))


def _local_keys(data_dir: Path | None, organization: str | None) -> list[dict[str, Any]]:
    """The keys in this host's database (of one organization, by name), as JSON fields."""
    store = _store(data_dir)
    names = {o.id: o.name for o in store.organizations()}
    return [{
        "id": k.id, "name": k.name, "organization": names.get(k.organization_id, "?"),
        "permissions": ordered(k.held), "createdAt": _iso(k.created_at),
        "lastUsedAt": _iso(k.last_used_at), "expiresAt": _iso(k.expires_at),
        "value": k.mask,
    } for k in store.list_keys()
        if organization is None or names.get(k.organization_id) == organization]  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")
