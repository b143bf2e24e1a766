"""What the CLI prints: rich tables for people, ``--json`` for programs, progress on
stderr only when it is a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cove.cli.client import one_line

# A column: (header, how to get the cell from one item)
Column = tuple[str, Callable[[Mapping[str, Any]], object]]


def field(name: str) -> Callable[[Mapping[str, Any]], object]:
    """A column getter of one field of an item."""
    return lambda item: item.get(name)


def labels_cell(item: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((item.get("labels") or {}).items()))


STATE_STYLES = {"started": "green", "active": "green", "ready": "green", "stopped": "yellow",
                "archived": "dim", "error": "red", "build_failed": "red"}  # fmt: skip


def state_cell(item: Mapping[str, Any]) -> Text:
    """The item's state, coloured on a terminal (green running, red failed)."""
    state = str(item.get("state"))
    return Text(one_line(state), style=STATE_STYLES.get(state, ""))


def _stdout() -> Console:
    # As Docker's tables: never cut nor folded (a narrow terminal wraps the lines).
    return Console(file=sys.stdout, width=100_000, highlight=False, soft_wrap=True)


def stderr() -> Console:
    """A console on stderr (messages for people, never data)."""
    return Console(file=sys.stderr)


def _cell(value: object) -> Text:
    """A cell as plain text: no markup from the data, no control characters."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, Text):
        return value
    return Text(one_line(str(value)))


def emit_json(data: object) -> None:
    """``data`` as indented JSON on stdout (the API's own camelCase fields)."""
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def table(items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    """A table of ``items``, one row each."""
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for header, _ in columns:
        grid.add_column(header, no_wrap=True)
    for item in items:
        grid.add_row(*(_cell(get(item)) for _, get in columns))
    _stdout().print(grid)


def details(item: Mapping[str, Any], rows: Sequence[Column]) -> None:
    """One item as a two-column table (field, value)."""
    grid = Table(box=None, pad_edge=False, show_header=False)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    for header, get in rows:
        grid.add_row(header, _cell(get(item)))
    _stdout().print(grid)


def show(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """``data`` as JSON, or rendered for people."""
    if as_json:
        emit_json(data)
    else:
        render(data)


@contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on stderr while the block runs, only when stderr is a terminal."""
    stderr = sys.stderr
    if not stderr.isatty():
        with nullcontext():
            yield
        return
    with Console(file=stderr).status(message):
        yield
