"""What the commands share: the server's address and key, ``--json``, errors as one
line and exit status 1, and the local settings of commands that work on this host."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from cove.cli.client import DEFAULT_API_URL, ApiError, Client
from cove.core.config import Settings

F = TypeVar("F", bound=Callable[..., Any])
# How long the servers (``cove serve``, ``cove runner``) keep an idle HTTP connection
# open: longer than the clients keep theirs (aiohttp, the async SDK's, 15 s; httpx 5 s).
# At uvicorn's default of 5 s a client reusing a connection as the server closed it
# got "Server disconnected" for a POST it may not retry (1-2 of 100 creates at once
# after a pause of ~5 s, `bench/throughput.py`).
KEEP_ALIVE_SECONDS = 30


@dataclass
class Api:
    """What an API command gets: a client of the server and the output mode."""

    client: Client
    json: bool


def api_options(func: F) -> F:
    """Give a command ``--api-url``, ``--api-key`` and ``--json``."""
    func = click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (the API's fields).")(func)  # fmt: skip
    func = click.option("--api-key", envvar=["DAYTONA_API_KEY", "COVE_API_KEY"],
                        show_envvar=True, help="The API key (never printed).")(func)  # fmt: skip
    return click.option("--api-url", envvar=["DAYTONA_API_URL", "COVE_API_URL"],
                        show_envvar=True, default=DEFAULT_API_URL, show_default=True,
                        help="The server's API URL.")(func)  # fmt: skip


@contextmanager
def api_session(ctx: click.Context, api_url: str, api_key: str | None,
                as_json: bool) -> Iterator[Api]:  # fmt: skip
    """An :class:`Api` for the block; an :class:`ApiError` in it becomes
    ``Error: <message>``, status 1."""
    if not api_key:
        raise click.ClickException(
            "no API key: pass --api-key or set DAYTONA_API_KEY (`cove serve` prints one "
            "on its first start; `cove keys create` makes more)")
    injected = ctx.find_root().obj or {}
    client = Client(api_url, api_key, transport=injected.get("transport"),
                    ws_connect=injected.get("ws_connect"))  # fmt: skip
    try:
        yield Api(client, as_json)
    except ApiError as exc:
        hint = " (check --api-key or DAYTONA_API_KEY)" if exc.status == 401 else ""
        raise click.ClickException(exc.message + hint) from None
    finally:
        client.close()


def api_command(func: F) -> F:
    """Give a command ``--api-url``, ``--api-key`` and ``--json``, and call it with an
    :class:`Api` first (see :func:`api_session`)."""

    @api_options
    @click.pass_context
    @functools.wraps(func)
    def wrapper(ctx: click.Context, api_url: str, api_key: str | None, as_json: bool,
                *args: Any, **kwargs: Any) -> Any:  # fmt: skip
        with api_session(ctx, api_url, api_key, as_json) as api:
            return func(api, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def key_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
               ) -> dict[str, str]:  # fmt: skip
    """A click callback: ``K=V`` options into a dict (the value may hold ``=``)."""
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        pairs[key] = rest
    return pairs


def local_settings(**overrides: object) -> Settings:
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
