"""``cove runner``: run this host's sandboxes for an API on another host, and its
certificates (``cove runner certs``)."""

from __future__ import annotations

import asyncio
import logging
import logging.config
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from cove.api import logs
from cove.cli.output import Column, field

if TYPE_CHECKING:
    from cove.core.config import Settings
    from cove.core.fleet import RunnerInfo
    from cove.store.runners import SqlRunnerStore

console = Console(stderr=True)
DEFAULT_PORT = 3100


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True,
              help="HTTPS port of calls; byte streams use the next one.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the runner keeps its sandboxes [/var/lib/cove].")
@click.option("--log-level", default="info", show_default=True)
@click.pass_context
def runner(ctx: click.Context, host: str, port: int, data_dir: Path | None,
           log_level: str) -> None:  # fmt: skip
    """Serve this host's sandboxes to a Cove API on another host.

    Mutual TLS: COVE_RUNNER_CA, COVE_RUNNER_CERT and COVE_RUNNER_KEY name the CA, the
    runner's certificate and its key (see ``cove runner certs``).
    """
    if ctx.invoked_subcommand is not None:
        return
    from cove.cli.common import local_settings
    from cove.cli.snapshot import ensure_default_snapshot
    from cove.hostfiles import prepare_host_dirs

    settings = local_settings(data_dir=data_dir)
    missing = [n for n in ("runner_ca", "runner_cert", "runner_key")
               if getattr(settings, n) is None]  # fmt: skip
    if missing:
        raise click.ClickException("set " + ", ".join(f"COVE_{n.upper()}" for n in missing))
    logging.config.dictConfig(logs.config(log_level))  # ISO timestamps
    prepare_host_dirs(settings)
    if settings.runtime == "crun":
        ensure_default_snapshot(settings, force=False)
    console.print(f"Cove runner listening on https://{host}:{port} (streams on {port + 1}, "
                  f"data in {settings.data_dir})")  # fmt: skip
    asyncio.run(_serve(settings, host, port, log_level))


async def _serve(settings: Settings, host: str, port: int, log_level: str) -> None:
    """Serve calls on ``port`` and streams on the next one until SIGTERM or ^C."""
    import uvicorn

    from cove.cli.common import KEEP_ALIVE_SECONDS
    from cove.runner import build_runtime, daemon, tls
    from cove.runner.local import LocalRunner
    from cove.runner.storage.volumes import VolumeDir

    assert settings.runner_ca and settings.runner_cert and settings.runner_key
    context = tls.server_context(settings.runner_ca, settings.runner_cert, settings.runner_key)
    local = LocalRunner(build_runtime(settings), settings.data_dir, VolumeDir.of(settings))
    inventory = daemon.Inventory(local, settings.snapshot_dir, settings.oci_layout_dir,
                                 settings.default_snapshot)  # fmt: skip
    app = daemon.create_app(local, inventory, port + 1)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            log_config=logs.config(log_level),
                            timeout_keep_alive=KEEP_ALIVE_SECONDS,
                            timeout_graceful_shutdown=10)  # fmt: skip
    config.load()
    config.ssl = context  # mutual TLS, the same context as the stream port's
    stream_server = daemon.StreamServer(local)
    streams = await stream_server.start(host, port + 1, context)
    try:
        await uvicorn.Server(config).serve()
    finally:
        streams.close()
        stream_server.close_all()


@runner.group()
def certs() -> None:
    """The runners' CA and certificates."""


@certs.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True,
              help="Where the CA is kept (made 0700).")
def certs_init(directory: Path) -> None:
    """Make the CA that signs runners' and APIs' certificates."""
    from cove.runner import tls

    try:
        path = tls.init_ca(directory)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"CA certificate: {path} (its key stays in {directory})")


@certs.command("issue")
@click.option("--dir", "directory", type=click.Path(path_type=Path), required=True)
@click.option("--name", required=True, help="Certificate name (also its file names).")
@click.option("--server", is_flag=True, help="A runner's certificate (else an API's).")
@click.option("--host", "hosts", multiple=True,
              help="A runner's DNS name or IP address, as the API dials it (repeatable).")
def certs_issue(directory: Path, name: str, server: bool, hosts: tuple[str, ...]) -> None:
    """Issue a runner's (--server) or an API's certificate under the CA in --dir."""
    from cove.runner import tls

    try:
        cert, key = tls.issue(directory, name, server=server, hosts=hosts)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"certificate: {cert}\nkey: {key}")


# ---- the runners registry (run where the API runs: its database) ----------------------

REGISTRY_COLUMNS: list[Column] = [
    ("NAME", field("name")), ("URL", field("url")), ("STATE", field("state")),
    ("SANDBOXES", field("sandboxes")), ("VOLUMES", field("volumes")), ("CPU", field("cpu")),
    ("MEMORY GiB", field("memoryGiB")),
    ("DISK FREE GiB", field("diskFreeGiB")), ("LAST HEARTBEAT", field("lastHeartbeat")),
]  # fmt: skip
data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                               help="The API's data directory [/var/lib/cove].")


def _registry(data_dir: Path | None) -> tuple[Settings, SqlRunnerStore]:
    from cove.cli.common import local_settings
    from cove.server import open_database
    from cove.store.runners import SqlRunnerStore

    settings = local_settings(data_dir=data_dir)
    return settings, SqlRunnerStore(open_database(settings))


def _public(info: RunnerInfo, held: int, volumes: int) -> dict[str, object]:
    cap = info.capacity
    return {"id": info.id, "name": info.name, "url": info.url or "(embedded)",
            "state": str(info.shown_state), "sandboxes": held, "volumes": volumes,
            "cpu": cap.cpu,
            "memoryGiB": round(cap.memory / 1024**3, 1),
            "diskFreeGiB": round(cap.disk_free / 1024**3, 1),
            "lastHeartbeat": info.last_heartbeat.isoformat() if info.last_heartbeat
            else "-"}  # fmt: skip


def _find(store: SqlRunnerStore, name: str) -> RunnerInfo:
    from cove.errors import NotFound

    try:
        return store.get(name)
    except NotFound:
        raise click.ClickException(f"no runner called {name}") from None


@runner.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--no-check", is_flag=True, help="Register it without calling it first.")
@data_dir_option
def add_runner(name: str, url: str, no_check: bool, data_dir: Path | None) -> None:
    """Register the ``cove runner`` at URL (https://host:port) as NAME.

    The API dials it with COVE_RUNNER_CA, COVE_RUNNER_CERT and COVE_RUNNER_KEY (its
    client certificate); unless --no-check, it is called once now with them.
    """
    from cove.errors import CoveError
    from cove.runner.remote import RemoteRunner

    settings, store = _registry(data_dir)
    if not url.startswith("https://"):
        raise click.ClickException("the URL must be https://host:port")
    if not no_check:
        if not (settings.runner_ca and settings.runner_cert and settings.runner_key):
            raise click.ClickException("set COVE_RUNNER_CA, COVE_RUNNER_CERT and COVE_RUNNER_KEY"
                                       " (the API's client certificate)")  # fmt: skip
        try:
            RemoteRunner.connect(url, settings.runner_ca, settings.runner_cert,
                                 settings.runner_key)  # fmt: skip
        except (CoveError, ValueError, OSError) as exc:
            raise click.ClickException(f"{url}: {exc}") from None
    try:
        info = store.add(name, url)
    except CoveError as exc:
        raise click.ClickException(exc.message) from None
    console.print(f"runner {info.name} added ({info.url}); a running API takes it within a "
                  f"heartbeat")  # fmt: skip


@runner.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def list_runners(as_json: bool, data_dir: Path | None) -> None:
    """The registered runners: state, sandboxes, volumes (whose data only it holds),
    capacity, last heartbeat."""
    from cove.cli import output

    _, store = _registry(data_dir)
    rows = [_public(r, len(store.sandboxes_on(r.id)), len(store.volumes_on(r.id)))
            for r in store.list()]  # volumes: those whose data is in its own volumes dir
    output.show(rows, as_json, lambda found: output.table(found, REGISTRY_COLUMNS))


def _set_state(name: str, data_dir: Path | None, state: str, what: str) -> None:
    from cove.core.fleet import RunnerState

    _, store = _registry(data_dir)
    info = _find(store, name)
    store.set_state(info.id, RunnerState(state))
    console.print(f"runner {info.name} {what}")


@runner.command("cordon")
@click.argument("name")
@data_dir_option
def cordon(name: str, data_dir: Path | None) -> None:
    """Place no new sandbox on NAME (its sandboxes keep running)."""
    _set_state(name, data_dir, "cordoned", "cordoned: no new sandbox goes there")


@runner.command("uncordon")
@click.argument("name")
@data_dir_option
def uncordon(name: str, data_dir: Path | None) -> None:
    """Let NAME take new sandboxes again (ends a cordon or a drain)."""
    _set_state(name, data_dir, "ready", "ready")


@runner.command("drain")
@click.argument("name")
@data_dir_option
def drain(name: str, data_dir: Path | None) -> None:
    """Move every sandbox off NAME: the API stops and archives each to the shared
    archive store (COVE_ARCHIVE_S3_*) and a later start restores it on another runner;
    then the data of the volumes it holds goes there too, to come back on the runner
    a sandbox mounting it is placed on next."""
    _set_state(name, data_dir, "draining", "draining: its sandboxes are being archived")


@runner.command("remove")
@click.argument("name")
@data_dir_option
def remove(name: str, data_dir: Path | None) -> None:
    """Unregister NAME (refused while sandboxes, or volumes' data, are on it: drain it
    first)."""
    from cove.errors import CoveError

    _, store = _registry(data_dir)
    info = _find(store, name)
    try:
        store.remove(info.id)
    except CoveError as exc:
        raise click.ClickException(exc.message) from None
    console.print(f"runner {info.name} removed")
