"""The ``cove`` command: run the server, and use it from here or from afar.

``serve``, ``keys --local`` and ``snapshot build-default`` work on this host;
``sandbox``, ``snapshot``, ``volume`` and ``keys`` talk to a server's HTTP API
(``--api-url``, ``DAYTONA_API_URL``), as Daytona's SDK does.
"""

from __future__ import annotations

import logging
import logging.config
from pathlib import Path

import click

from cove.cli import output
from cove.cli.common import KEEP_ALIVE_SECONDS, local_settings
from cove.cli.keys import keys
from cove.cli.quota import quota
from cove.cli.runner import runner
from cove.cli.sandbox import sandbox
from cove.cli.snapshot import ensure_default_snapshot, snapshot
from cove.cli.volume import volume
from cove.core.config import Settings
from cove.hostfiles import prepare_host_dirs


@click.group()
@click.version_option(package_name="cove")
def main() -> None:
    """Cove: self-hosted sandboxes, wire-compatible with Daytona."""


main.add_command(sandbox)
main.add_command(snapshot)
main.add_command(volume)
main.add_command(keys)
main.add_command(quota)
main.add_command(runner)


@main.command()
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [3000].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where Cove keeps everything it owns [/var/lib/cove].")
@click.option("--log-level", default="info", show_default=True)
def serve(host: str | None, port: int | None, data_dir: Path | None, log_level: str) -> None:
    """Start the API server (builds the default snapshot first if it is missing)."""
    import uvicorn

    from cove.api import httpguard, logs
    from cove.api.app import create_app

    settings = local_settings(host=host, port=port, data_dir=data_dir)
    logging.config.dictConfig(logs.config(log_level))
    prepare_host_dirs(settings)
    if settings.runtime == "crun" and not settings.runner_url:
        ensure_default_snapshot(settings, force=False)
    first_key = _first_key(settings)
    ssh = f", SSH on port {settings.ssh_port}" if settings.ssh_port else ""
    output.stderr().print(f"Cove listening on {settings.base_url}{ssh} "
                          f"(data in {settings.data_dir})")  # fmt: skip
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=logs.config(log_level),
        **httpguard.server_options(settings),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=10,  # (TLS: the guard's, see httpguard)
    )
    _run(config, settings, first_key)


def _first_key(settings: Settings) -> str | None:
    """On a first start without ``COVE_API_KEY``: the admin key made now (else None)."""
    from cove.core.auth import AuthService
    from cove.server import open_database
    from cove.store.keys import SqlKeyStore

    engine = open_database(settings)
    try:
        return AuthService(settings, SqlKeyStore(engine)).bootstrap()
    finally:
        engine.dispose()


def _key_lines(settings: Settings, key: str) -> str:
    return ("\nCove created an admin API key for the organization 'default'; it is shown "
            "only once (only its hash is stored). To use it with the SDKs and `cove`:\n\n"
            f"export DAYTONA_API_URL={settings.base_url}/api\n"
            f"export DAYTONA_API_KEY={key}\n")  # fmt: skip


def _run(config: object, settings: Settings, first_key: str | None) -> None:
    """Run uvicorn; the first-start key is printed once its startup logs are out."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and first_key:
                click.echo(_key_lines(settings, first_key))

    Server(config).run()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
