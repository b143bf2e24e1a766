"""API keys are checked without a query per call, yet a revoked key stops working.

The server trusts a key it checked for ``COVE_AUTH_CACHE_SECONDS``; a key revoked
with ``cove keys revoke`` (another process, straight in the database) is refused
once that time has passed; one revoked through the server's own service at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.cli.main import main
from cove.core.auth import AuthService, hash_key
from cove.core.config import Settings
from cove.core.keys import ApiKey
from cove.core.sandbox import utcnow
from cove.errors import Unauthorized
from cove.server import open_database
from cove.store.keys import SqlKeyStore


def _cli(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(main, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_a_key_revoked_by_the_cli_stops_working_for_the_running_server(
    client: TestClient, tmp_path: Path
) -> None:
    key = _cli("keys", "create", "--org", "acme", "--name", "ci", "--data-dir", str(tmp_path))
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/sandbox", headers=auth).status_code == 200
    assert _cli("keys", "revoke", "ci", "--org", "acme", "--data-dir", str(tmp_path))
    deadline = time.monotonic() + 30  # far beyond COVE_AUTH_CACHE_SECONDS (1 s)
    while client.get("/api/sandbox", headers=auth).status_code == 200:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    r = client.get("/api/sandbox", headers=auth)
    assert r.status_code == 401 and r.json()["message"] == "Invalid API key"
    # ... on the toolbox too
    assert client.post("/toolbox/any/process/execute", json={"command": "true"},
                       headers=auth).status_code == 401  # fmt: skip


def test_revoking_an_unknown_key_fails(client: TestClient, tmp_path: Path) -> None:
    del client
    result = CliRunner().invoke(main, ["keys", "revoke", "nobody", "--org", "acme",
                                       "--data-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code != 0 and "has no key named 'nobody'" in result.output


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def services(tmp_path: Path) -> tuple[AuthService, SqlKeyStore, Clock]:
    settings = Settings(data_dir=tmp_path, runtime="fake", auth_cache_seconds=5)
    keys = SqlKeyStore(open_database(settings))
    clock = Clock()
    return AuthService(settings, keys, clock), keys, clock


def test_a_key_removed_elsewhere_works_only_until_the_cache_time_ends(
    services: tuple[AuthService, SqlKeyStore, Clock],
) -> None:
    auth, keys, clock = services
    key = auth.create_key("acme")
    org = auth.authenticate(f"Bearer {key}").organization_id
    other_process = AuthService(Settings(data_dir=Path("/nonexistent"), runtime="fake"), keys)
    assert other_process.revoke_key(key)
    clock.now += 4.9
    assert auth.authenticate(f"Bearer {key}").organization_id == org  # trusted a while
    clock.now += 0.2
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {key}")


def test_a_key_revoked_through_the_service_stops_at_once(
    services: tuple[AuthService, SqlKeyStore, Clock],
) -> None:
    auth, _keys, _clock = services
    key = auth.create_key("acme")
    auth.authenticate(f"Bearer {key}")
    assert auth.revoke_key(key)
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {key}")
    assert not auth.revoke_key(key)


def test_unknown_keys_are_not_remembered(
    services: tuple[AuthService, SqlKeyStore, Clock],
) -> None:
    auth, keys, _clock = services
    with pytest.raises(Unauthorized):
        auth.authenticate("Bearer cove_later")
    org = keys.ensure_organization("acme")
    key = ApiKey(id="k", organization_id=org, name="k", permissions=None, mask="m",
                 created_at=utcnow())  # fmt: skip
    keys.add_key(key, hash_key("cove_later"))
    assert auth.authenticate("Bearer cove_later").organization_id == org  # works at once


def test_without_a_cache_time_every_call_asks_the_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, runtime="fake", auth_cache_seconds=0)
    keys = SqlKeyStore(open_database(settings))
    auth = AuthService(settings, keys, Clock())
    key = auth.create_key("acme")
    auth.authenticate(f"Bearer {key}")
    found = keys.key_for(hash_key(key))
    assert found is not None and keys.delete_key(found.id)
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {key}")


def test_a_key_of_other_than_ascii_characters_is_refused_as_any_wrong_key(
    client: TestClient,
) -> None:
    """A header's bytes are Latin-1 text: compared with the server's key, such a "key"
    is a 401 like any wrong one (not a server error)."""
    hostile = {"Authorization": b"Bearer t\xe9st-key"}
    for path in ("/api/sandbox", "/api/volumes"):
        r = client.get(path, headers=hostile)
        assert r.status_code == 401 and r.json()["message"] == "Invalid API key", path
