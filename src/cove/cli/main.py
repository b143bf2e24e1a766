"""The ``cove`` command: run the server and administer it on this host."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console

from cove.core.config import Settings
from cove.hostfiles import prepare_host_dirs

console = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    """The settings, or a one-line error per invalid ``COVE_*`` value (exit status 1)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"COVE_{str(e['loc'][0]).upper() if e['loc'] else 'settings'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise click.ClickException("invalid configuration: " + "; ".join(problems)) from None


@click.group()
@click.version_option(package_name="cove")
def main() -> None:
    """Cove: self-hosted sandboxes, wire-compatible with Daytona."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [3000].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where Cove keeps everything it owns [/var/lib/cove].")
@click.option("--log-level", default="info", show_default=True)
def serve(host: str | None, port: int | None, data_dir: Path | None, log_level: str) -> None:
    """Start the API server (builds the default snapshot first if it is missing)."""
    import uvicorn

    from cove.api.app import create_app

    settings = _settings(host=host, port=port, data_dir=data_dir)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    prepare_host_dirs(settings)
    if settings.runtime == "crun":
        _ensure_default_snapshot(settings, force=False)
    ssh = f", SSH on port {settings.ssh_port}" if settings.ssh_port else ""
    console.print(f"Cove listening on {settings.base_url}{ssh} (data in {settings.data_dir})")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        ws="websockets-sansio",
        timeout_graceful_shutdown=10,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )


@main.group()
def snapshot() -> None:
    """Manage snapshots on this host."""


@snapshot.command("build-default")
@click.option("--force", is_flag=True, help="Rebuild even if it is up to date.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def build_default(force: bool, data_dir: Path | None) -> None:
    """Build the default snapshot (Debian bookworm) unless it is current."""
    settings = _settings(data_dir=data_dir)
    prepare_host_dirs(settings)
    path = _ensure_default_snapshot(settings, force=force)
    console.print(f"default snapshot ready: {path}")


def _ensure_default_snapshot(settings: Settings, *, force: bool) -> Path:
    from cove.runner.storage.snapshot import ensure_default_snapshot

    def progress(line: str) -> None:
        console.print(f"[dim]snapshot[/dim] {line.rstrip()}", highlight=False)

    return ensure_default_snapshot(settings, force=force, progress=progress)


@main.group()
def keys() -> None:
    """Manage API keys (talks to the database directly)."""


@keys.command("create")
@click.option("--org", "organization", default="default", show_default=True,
              help="Organization the key belongs to (created if missing).")
@click.option("--name", default="key", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def create_key(organization: str, name: str, data_dir: Path | None) -> None:
    """Create an API key and print it (it is stored only as a hash)."""
    from cove.core.auth import AuthService
    from cove.server import open_database
    from cove.store.keys import SqlKeyStore

    settings = _settings(data_dir=data_dir)
    engine = open_database(settings)
    click.echo(AuthService(settings, SqlKeyStore(engine)).create_key(organization, name=name))



@keys.command("revoke")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def revoke_key(data_dir: Path | None) -> None:
    """Delete the API key read from standard input (a running server stops taking it
    within COVE_AUTH_CACHE_SECONDS)."""
    from cove.core.auth import AuthService
    from cove.server import open_database
    from cove.store.keys import SqlKeyStore

    settings = _settings(data_dir=data_dir)
    engine = open_database(settings)
    key = click.get_text_stream("stdin").readline()
    if not AuthService(settings, SqlKeyStore(engine)).revoke_key(key):
        raise click.ClickException("no such API key")
    click.echo("revoked")


if __name__ == "__main__":
    main()
