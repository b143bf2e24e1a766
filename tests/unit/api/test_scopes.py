"""The permission each route needs of an API key: the table is complete, and a key
holding nothing reads what Daytona lets it read and changes nothing."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.testclient import TestClient

from cove.api import scopes
from cove.api.deps import get_principal
from cove.api.routes import __path__ as routes_path
from cove.core.auth import AuthService, Principal
from cove.core.config import Settings
from cove.core.keys import hash_key
from cove.core.permissions import ALL, Permission, parse, require_all
from cove.core.sandbox import utcnow
from cove.errors import BadRequest, Forbidden, Unauthorized
from cove.server import open_database
from cove.store.keys import SqlKeyStore
from tests.unit.api.conftest import AUTH, create_sandbox


def _routes() -> Iterator[APIRoute | APIWebSocketRoute]:
    for info in pkgutil.iter_modules(routes_path):
        module = importlib.import_module(f"cove.api.routes.{info.name}")
        for router in (getattr(module, name, None) for name in ("router", "toolbox_router",
                                                                "analytics")):
            if router is not None:
                yield from (r for r in router.routes if isinstance(r, APIRoute | APIWebSocketRoute))


def _needs_key(route: APIRoute | APIWebSocketRoute) -> bool:
    def calls(dependant) -> Iterator[object]:  # noqa: ANN001
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    return get_principal in set(calls(route.dependant))


def test_every_route_that_takes_a_key_is_in_the_table() -> None:
    names = set()
    for route in _routes():
        name = f"{route.endpoint.__module__}.{route.endpoint.__name__}"
        names.add(name.removeprefix(scopes.ROUTES))
        if _needs_key(route):
            assert scopes.needed(route.endpoint) is not scopes.EVERY, (
                f"{name} is missing from cove.api.scopes.NEEDS")
    assert set(scopes.NEEDS) <= names, set(scopes.NEEDS) - names  # no stale entry


@pytest.mark.parametrize(("endpoint", "permission"), [
    ("sandboxes.create_sandbox", Permission.WRITE_SANDBOXES),
    ("sandboxes.delete_sandbox", Permission.DELETE_SANDBOXES),
    ("sandboxes.list_sandboxes", None),
    ("toolbox_process.execute", Permission.WRITE_SANDBOXES),
    ("volumes.list_volumes", Permission.READ_VOLUMES),
    ("volumes.delete_volume", Permission.DELETE_VOLUMES),
    ("snapshots.delete_snapshot", Permission.DELETE_SNAPSHOTS),
    ("docker_registry.create_registry", Permission.WRITE_REGISTRIES),
    ("secrets.list_secrets", Permission.MANAGE_SECRETS),
])  # fmt: skip
def test_the_mapping_follows_daytona(endpoint: str, permission: Permission | None) -> None:
    assert scopes._lookup(scopes.ROUTES + endpoint) == permission


def test_a_route_not_in_the_table_needs_every_permission() -> None:
    assert scopes._lookup("cove.api.routes.someday.new_route") is scopes.EVERY
    assert scopes.needed(None) is scopes.EVERY
    narrow = Principal("org", frozenset({Permission.WRITE_SANDBOXES}))
    with pytest.raises(Forbidden):
        scopes.check(narrow, {"route": None})
    scopes.check(Principal("org"), {"route": None})  # an operator's key may


def test_permission_names_are_checked() -> None:
    assert parse(["write:sandboxes"]) == {Permission.WRITE_SANDBOXES}
    with pytest.raises(BadRequest, match="write:everything"):
        parse(["write:everything"])
    with pytest.raises(Forbidden, match="delete:sandboxes"):
        require_all(frozenset({Permission.WRITE_SANDBOXES}), ALL, "assigning")


def _key(client: TestClient, permissions: list[str], **extra: object) -> dict[str, str]:
    r = client.post("/api/api-keys", json={"name": f"k{len(permissions)}{extra}",
                                           "permissions": permissions, **extra},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['value']}"}


def test_a_key_without_permissions_reads_but_changes_nothing(client: TestClient) -> None:
    sandbox = create_sandbox(client)
    nothing = _key(client, [])
    assert client.get("/api/sandbox", headers=nothing).json()["items"][0]["id"] == sandbox["id"]
    assert client.get(f"/api/sandbox/{sandbox['id']}", headers=nothing).status_code == 200
    for method, path in (("POST", f"/api/sandbox/{sandbox['id']}/stop"),
                         ("DELETE", f"/api/sandbox/{sandbox['id']}"),
                         ("GET", "/api/volumes"), ("GET", "/api/secret/paginated"),
                         ("GET", "/api/api-keys"),
                         ("POST", f"/toolbox/{sandbox['id']}/process/execute"),
                         ("GET", f"/toolbox/{sandbox['id']}/files/download?path=/etc/hostname"),
                         ("GET", f"/api/sandbox/{sandbox['id']}/signing-key")):  # fmt: skip
        r = client.request(method, path, headers=nothing, json={"command": "true"})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["code"] == "FORBIDDEN"
    writer = _key(client, ["write:sandboxes"])
    assert client.delete(f"/api/sandbox/{sandbox['id']}", headers=writer).status_code == 403
    r = client.post(f"/toolbox/{sandbox['id']}/process/execute", json={"command": "true"},
                    headers=writer)  # fmt: skip
    assert r.status_code != 403, r.text  # past the check (the fake sandbox has no agent)
    assert client.get(f"/api/sandbox/{sandbox['id']}", headers=nothing).json()["state"] == (
        "started")


def test_a_key_name_is_one_path_segment(client: TestClient) -> None:
    r = client.post("/api/api-keys", json={"name": "a/b", "permissions": []}, headers=AUTH)
    assert r.status_code == 400


def test_an_expiry_without_a_zone_is_utc(client: TestClient) -> None:
    at = (utcnow() + timedelta(hours=1)).replace(tzinfo=None, microsecond=0)
    key = _key(client, [], expiresAt=at.isoformat())
    current = client.get("/api/api-keys/current", headers=key).json()
    assert current["expiresAt"] == at.isoformat() + ".000Z"


def test_a_cached_key_stops_at_its_expiry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:  # fmt: skip
    settings = Settings(data_dir=tmp_path, runtime="fake", auth_cache_seconds=60)
    auth = AuthService(settings, SqlKeyStore(open_database(settings)))
    now = utcnow()
    key = auth.create_key("acme", expires_at=now + timedelta(minutes=5))
    assert auth.authenticate(f"Bearer {key}").key is not None  # now trusted for 60 s
    monkeypatch.setattr("cove.core.auth.utcnow", lambda: now + timedelta(minutes=5))
    with pytest.raises(Unauthorized, match="This API key has expired"):
        auth.authenticate(f"Bearer {key}")


def test_a_keys_use_is_noted_once_a_minute(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, runtime="fake")
    keys = SqlKeyStore(open_database(settings))
    clock = [100.0]
    auth = AuthService(settings, keys, clock=lambda: clock[0])
    value = auth.create_key("acme")
    for _ in range(50):
        auth.authenticate(f"Bearer {value}")
    assert len(auth.usage._pending) == 1
    auth.usage.flush()
    first = keys.key_for(hash_key(value)).last_used_at  # type: ignore[union-attr]
    assert first is not None
    clock[0] += 30
    auth.authenticate(f"Bearer {value}")
    assert auth.usage._pending == {}  # not again within the minute
    clock[0] += 31
    auth.authenticate(f"Bearer {value}")
    assert len(auth.usage._pending) == 1
