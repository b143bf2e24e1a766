"""The ``cove`` CLI against the whole app in process: the fake runtime, the real
toolbox agent (commands run on the host as the test's user), and an httpx
transport that hands the CLI's requests to the app."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.cli.main import main
from cove.core.config import Settings
from cove.runner.fake import FakeRuntime
from tests.unit.agent.conftest import agent_path  # noqa: F401 - a fixture

KEY = "test-key"
URL = "http://cove.test/api"


class AppTransport(httpx.BaseTransport):
    """Sends the CLI's requests to the in-process app (whatever host they name)."""

    def __init__(self, app: TestClient) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        got = self.app.request(request.method, str(request.url), content=request.read(),
                               headers=dict(request.headers))  # fmt: skip
        headers = {k: v for k, v in got.headers.items()
                   if k.lower() not in ("content-encoding", "content-length")}  # fmt: skip
        return httpx.Response(got.status_code, headers=headers, content=got.content)


def app_websockets(app: TestClient):  # noqa: ANN201 - a cove.cli.client.WsConnect
    @contextmanager
    def connect(url: str, headers: Mapping[str, str]) -> Iterator[Iterator[bytes]]:
        with app.websocket_connect(url, headers=dict(headers)) as ws:
            def messages() -> Iterator[bytes]:
                while True:
                    message = ws.receive()
                    if message["type"] == "websocket.close":
                        return
                    yield message.get("bytes") or message.get("text", "").encode()
            yield messages()

    return connect


class Cove:
    """Runs ``cove`` as a user would, against the app, with a key of an organization."""

    def __init__(self, app: TestClient, data_dir: Path, key: str = KEY) -> None:
        self.app = app
        self.data_dir = data_dir
        self.key = key

    def __call__(self, *args: str, key: str | None = None) -> Result:
        env = {"DAYTONA_API_URL": URL, "DAYTONA_API_KEY": key or self.key,
               "COVE_API_KEY": "", "COVE_API_URL": ""}  # fmt: skip
        obj = {"transport": AppTransport(self.app), "ws_connect": app_websockets(self.app)}
        return CliRunner().invoke(main, list(args), env=env, obj=obj)

    def ok(self, *args: str, key: str | None = None) -> Result:
        result = self(*args, key=key)
        assert result.exit_code == 0, (result.output, result.stderr)
        return result

    def json(self, *args: str, key: str | None = None) -> object:
        return json.loads(self.ok(*args, "--json", key=key).stdout)

    def local(self, *args: str) -> Result:
        """A command on this host's database (``keys``)."""
        return CliRunner().invoke(main, [*args, "--data-dir", str(self.data_dir)])


@pytest.fixture
def runtime(agent_path: str) -> FakeRuntime:  # noqa: F811
    return FakeRuntime(agent_path=agent_path)


@pytest.fixture
def app(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", runtime="fake", api_key=KEY)
    with TestClient(create_app(settings, runtime=runtime)) as c:
        yield c


@pytest.fixture
def cove(app: TestClient, tmp_path: Path) -> Cove:
    return Cove(app, tmp_path / "data")


@pytest.fixture
def other_key(cove: Cove) -> str:
    """A key of another organization, made as an operator makes it."""
    result = cove.local("keys", "create", "--org", "other")
    assert result.exit_code == 0, result.output
    return result.stdout.strip()
