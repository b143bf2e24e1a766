"""``cove sandbox ...``: sandboxes over the server's API."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping
from typing import Any, get_args
from urllib.parse import quote

import click

from cove.cli import output, process
from cove.cli.common import Api, api_command, key_values
from cove.cli.output import Column, field, labels_cell
from cove.schemas.sandbox import StateFilter

# States a sandbox passes through on its way somewhere: worth waiting out.
TRANSITIONAL = {"creating", "restoring", "starting", "stopping", "archiving", "pending_build",
                "building_snapshot", "pulling_snapshot", "resizing", "destroying", "resuming",
                "pausing", "snapshotting"}  # fmt: skip
FAILED = {"error", "build_failed"}

LIST_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("STATE", output.state_cell),
    ("SNAPSHOT", field("snapshot")), ("CPU", field("cpu")), ("MEMORY", field("memory")),
    ("DISK", field("disk")), ("LABELS", labels_cell), ("CREATED", field("createdAt")),
]  # fmt: skip
INFO_ROWS: list[Column] = [
    ("ID", field("id")), ("Name", field("name")), ("State", output.state_cell),
    ("Error", field("errorReason")), ("Snapshot", field("snapshot")), ("User", field("user")),
    ("CPU", field("cpu")), ("Memory (GiB)", field("memory")), ("Disk (GiB)", field("disk")),
    ("Labels", labels_cell), ("Public", field("public")),
    ("Auto-stop (min)", field("autoStopInterval")),
    ("Auto-archive (min)", field("autoArchiveInterval")),
    ("Auto-delete (min)", field("autoDeleteInterval")),
    ("Created", field("createdAt")), ("Last activity", field("lastActivityAt")),
]  # fmt: skip


@click.group()
def sandbox() -> None:
    """Create, run commands in, and manage sandboxes."""


@sandbox.command("list")
@click.option("--label", "labels", multiple=True, callback=key_values, metavar="K=V",
              help="Only sandboxes with this label (repeatable).")
@click.option("--state", "states", multiple=True, type=click.Choice(get_args(StateFilter)),
              help="Only sandboxes in this state (repeatable).")
@api_command
def list_sandboxes(api: Api, labels: dict[str, str], states: tuple[str, ...]) -> None:
    """List the organization's sandboxes."""
    params: dict[str, Any] = {"limit": 200}
    if labels:
        params["labels"] = json.dumps(labels)
    if states:
        params["states"] = list(states)
    items: list[dict[str, Any]] = []
    while True:
        page = api.client.call("GET", "/sandbox", params=params)
        items.extend(page["items"])
        if not page.get("nextCursor"):
            break
        params["cursor"] = page["nextCursor"]
    output.show(items, api.json, lambda rows: output.table(rows, LIST_COLUMNS))


@sandbox.command()
@click.option("--snapshot", help="The snapshot to start from [the server's default].")
@click.option("--name", help="A name, unique in the organization [the id].")
@click.option("--user", help="The user commands run as [the snapshot's].")
@click.option("--cpu", type=click.IntRange(min=1), help="CPU cores.")
@click.option("--memory", type=click.IntRange(min=1), help="Memory in GiB.")
@click.option("--disk", type=click.IntRange(min=1), help="Disk in GiB.")
@click.option("--env", "env", multiple=True, callback=key_values, metavar="K=V",
              help="An environment variable (repeatable).")
@click.option("--label", "labels", multiple=True, callback=key_values, metavar="K=V",
              help="A label (repeatable).")
@click.option("--auto-stop", type=click.IntRange(min=0), metavar="MIN",
              help="Stop after this many idle minutes (0: never).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
              help="Seconds to wait for it to start.")
@api_command
def create(api: Api, snapshot: str | None, name: str | None, user: str | None,
           cpu: int | None, memory: int | None, disk: int | None, env: dict[str, str],
           labels: dict[str, str], auto_stop: int | None, timeout: float) -> None:  # fmt: skip
    """Create a sandbox and wait until it has started; prints its id."""
    body: dict[str, Any] = {"env": env, "labels": labels, "volumes": []}
    optional = {"snapshot": snapshot, "name": name, "user": user, "cpu": cpu, "memory": memory,
                "disk": disk, "autoStopInterval": auto_stop}  # fmt: skip
    body.update({k: v for k, v in optional.items() if v is not None})
    with output.progress("Creating the sandbox..."):
        created = api.client.call("POST", "/sandbox", json=body)
        created = _settle(api, created, timeout)
    _report(api, created, "started")


@sandbox.command()
@click.argument("sandbox_id", metavar="ID")
@api_command
def info(api: Api, sandbox_id: str) -> None:
    """Show one sandbox (by id or name)."""
    found = _get(api, sandbox_id)
    output.show(found, api.json, lambda item: output.details(item, INFO_ROWS))


@sandbox.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("sandbox_id", metavar="ID")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@api_command
def exec_(api: Api, sandbox_id: str, command: tuple[str, ...]) -> None:
    """Run a command in a started sandbox: cove sandbox exec ID -- CMD...

    One argument is a shell line (-- 'ls | wc -l'); several are quoted as words.
    Streams its stdout and stderr to ours as they come and exits with its exit code.
    """
    line = command[0] if len(command) == 1 else shlex.join(command)
    found = _get(api, sandbox_id)
    collected: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def collect(stream: str, data: bytes) -> None:
        collected[stream] += data

    try:
        code = process.run(api.client, found, line, collect if api.json else process.print_chunk)
    except KeyboardInterrupt:
        sys.exit(130)
    if api.json:
        output.emit_json({"exitCode": code, **{k: v.decode(errors="replace")
                                                for k, v in collected.items()}})  # fmt: skip
    sys.exit(code if isinstance(code, int) and 0 <= code <= 255 else 1)


@sandbox.command()
@click.argument("sandbox_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Keep printing output as it comes.")
@api_command
def logs(api: Api, sandbox_id: str, follow: bool) -> None:
    """Print the output of the sandbox's entrypoint (stdout and stderr)."""
    found = _get(api, sandbox_id)
    if not follow:
        got = api.client.toolbox(found, "GET", "/process/session/entrypoint/logs")
        if api.json:
            output.emit_json(got)
            return
        click.echo(got.get("stdout") or "", nl=False)
        click.echo(got.get("stderr") or "", nl=False, err=True)
        return
    url = api.client.toolbox_url(found) + "/process/session/entrypoint/logs?follow=true"
    try:
        process.follow(api.client, url, process.json_lines if api.json else process.print_chunk)
    except KeyboardInterrupt:
        sys.exit(130)


def _lifecycle(action: str, doing: str, settled: str) -> None:
    """Register ``cove sandbox <action> ID``: POST the action, wait, print the id."""

    @sandbox.command(name=action, help=f"{action.capitalize()} a sandbox (by id or name).")
    @click.argument("sandbox_id", metavar="ID")
    @click.option("--timeout", type=click.FloatRange(min=0), default=600, show_default=True,
                  help="Seconds to wait for it to settle.")
    @api_command
    def run(api: Api, sandbox_id: str, timeout: float) -> None:
        with output.progress(f"{doing} {sandbox_id}..."):
            done = api.client.call("POST", f"/sandbox/{_quote(sandbox_id)}/{action}")
            done = _settle(api, done, timeout)
        _report(api, done, settled)


_lifecycle("start", "Starting", "started")
_lifecycle("stop", "Stopping", "stopped")
_lifecycle("archive", "Archiving", "archived")


@sandbox.command()
@click.argument("sandbox_id", metavar="ID")
@click.option("--force", "-f", is_flag=True, help="Delete it even while it runs.")
@api_command
def delete(api: Api, sandbox_id: str, force: bool) -> None:
    """Delete a sandbox and its files (a started one only with --force)."""
    found = _get(api, sandbox_id)
    if not force and found["state"] in ("started", "paused"):
        raise click.ClickException(
            f"sandbox {found['id']} is {found['state']}: stop it first or use --force")
    deleted = api.client.call("DELETE", f"/sandbox/{found['id']}")
    if api.json:
        output.emit_json(deleted)
    else:
        click.echo(found["id"])


def _get(api: Api, id_or_name: str) -> dict[str, Any]:
    return api.client.call("GET", f"/sandbox/{_quote(id_or_name)}")


def _quote(id_or_name: str) -> str:
    """A path segment: an id or name never escapes it (``../``, ``?``, ``#``)."""
    return quote(id_or_name, safe="")


def _settle(api: Api, current: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The sandbox once it has left the transitional states (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while current["state"] in TRANSITIONAL:
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"sandbox {current['id']} is still {current['state']} after {timeout:g} s")
        time.sleep(0.25)
        current = api.client.call("GET", f"/sandbox/{current['id']}")
    return current


def _report(api: Api, sandbox_dto: Mapping[str, Any], wanted: str) -> None:
    """Print the sandbox (JSON) or its id; a sandbox that failed is an error."""
    state = sandbox_dto["state"]
    if api.json:
        output.emit_json(sandbox_dto)
    if state in FAILED:
        reason = sandbox_dto.get("errorReason") or "no reason given"
        raise click.ClickException(f"sandbox {sandbox_dto['id']} is in state {state}: {reason}")
    if not api.json:
        click.echo(sandbox_dto["id"])
        if state != wanted:
            click.echo(f"note: the sandbox is {state}", err=True)
