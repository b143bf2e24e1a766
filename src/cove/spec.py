"""The contracts between processes, as committed files (``spec/``).

``spec/openapi.json`` is the HTTP API (generated from ``create_app``) and
``spec/toolbox.json`` the agent protocol (generated from the agent's handler
registry). ``scripts/gen-spec`` writes them; a test fails when they are stale.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"


def openapi() -> dict[str, Any]:
    return app().openapi()


def app() -> FastAPI:
    """The server's FastAPI application (on the fake runtime), for its routes."""
    from fastapi import FastAPI

    from cove.api.app import create_app
    from cove.core.config import Settings
    from cove.runner.fake import FakeRuntime

    app = create_app(Settings(runtime="fake", api_key="spec", data_dir=Path("/nonexistent")),
                     runtime=FakeRuntime())
    while not isinstance(app, FastAPI):
        app = getattr(app, "app", None) or app.other_asgi_app  # type: ignore[attr-defined]
    return app


def toolbox() -> dict[str, Any]:
    from cove.agent import agent, protocol

    agent.load_handlers()
    return {
        "socket": "agent.sock in the sandbox's directory on the host (inherited by the agent)",
        "framing": inspect.getdoc(protocol),
        "frames": {"J": "json", "O": "stdout", "E": "stderr", "D": "data", "Z": "end",
                   "A": "accepted", "W": "window update", "X": "reset"},
        "ops": {name: inspect.getdoc(fn) or "" for name, fn in sorted(agent.HANDLERS.items())},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write() -> None:
    SPEC_DIR.mkdir(exist_ok=True)
    (SPEC_DIR / "openapi.json").write_text(render(openapi()))
    (SPEC_DIR / "toolbox.json").write_text(render(toolbox()))


if __name__ == "__main__":
    write()
