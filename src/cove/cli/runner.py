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

if TYPE_CHECKING:
    from cove.core.config import Settings

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

    from cove.runner import build_runtime, daemon, tls
    from cove.runner.local import LocalRunner

    assert settings.runner_ca and settings.runner_cert and settings.runner_key
    context = tls.server_context(settings.runner_ca, settings.runner_cert, settings.runner_key)
    local = LocalRunner(build_runtime(settings))
    inventory = daemon.Inventory(local, settings.snapshot_dir, settings.oci_layout_dir,
                                 settings.default_snapshot)  # fmt: skip
    app = daemon.create_app(local, inventory, port + 1)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            log_config=logs.config(log_level),
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
