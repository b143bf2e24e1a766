"""The warm pool through the official SDK, on real sandboxes: a pooled create is what
a cold one would be (hostname, env, user, firewall, intervals, name, labels), claims
never share a sandbox, the pool refills, grows with demand and survives ``kill -9``,
and no organization ever sees a pooled sandbox."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    VolumeMount,
)
from daytona.common.errors import DaytonaError
from daytona_api_client.exceptions import ApiException

from tests.e2e.conftest import KEY, Server, running_server
from tests.e2e.test_network_sdk import fetch, remotes  # noqa: F401 - a fixture
from tests.nettools import R1, R2, FakeDns

pytestmark = pytest.mark.e2e
SIZE = 3
OPERATOR = "cove-operator-pool"


@pytest.fixture(scope="module")
def pool_server(tmp_path_factory: pytest.TempPathFactory, e2e_dns: FakeDns) -> Iterator[Server]:
    env = {"COVE_DNS_UPSTREAM": e2e_dns.upstream, "COVE_POOL_SIZE": str(SIZE),
           "COVE_POOL_ADAPTIVE_MAX": "0"}  # a fixed size: these tests count its sandboxes
    with running_server(tmp_path_factory.mktemp("cove-pool"), 6, env) as srv:
        yield srv  # its teardown drains the pools


def unowned(srv: Server, state: str | None = None) -> list[str]:
    """Ids of the sandboxes no organization owns (the pool's), from the database."""
    query = "SELECT id FROM sandboxes WHERE organization_id IS NULL"
    if state:
        query += f" AND state = '{state}' AND warm_pool_id = '{OPERATOR}'"
    with sqlite3.connect(srv.data_dir / "cove.db") as db:
        return [row[0] for row in db.execute(query)]


def wait_for(check, what: str, seconds: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.1)


def full(srv: Server) -> list[str]:
    wait_for(lambda: len(unowned(srv, "started")) == SIZE, f"{SIZE} pooled sandboxes ready")
    return unowned(srv, "started")


@pytest.fixture
def client(pool_server: Server) -> Iterator[Daytona]:
    made = Daytona(DaytonaConfig(api_key=KEY, api_url=pool_server.api_url))
    yield made
    for sb in list(made.list()):
        made.delete(sb)


def out(sb, command: str) -> str:  # noqa: ANN001
    result = sb.process.exec(command)
    assert result.exit_code == 0, result.result
    return result.result.strip()


def test_a_pooled_create_carries_every_setting(pool_server: Server, client: Daytona,
                                                remotes) -> None:  # noqa: F811  # fmt: skip
    pooled = full(pool_server)
    sb = client.create(CreateSandboxFromSnapshotParams(
        name="pooled-one", labels={"team": "a"}, env_vars={"GREETING": "hi there"},
        os_user="root", network_allow_list=f"{R1}/32", auto_stop_interval=7,
        auto_archive_interval=9, auto_delete_interval=30, public=True))  # fmt: skip
    assert sb.id in pooled
    got = client.get("pooled-one")
    assert got.id == sb.id and got.labels["team"] == "a" and got.user == "root"
    assert (got.auto_stop_interval, got.auto_archive_interval, got.auto_delete_interval) == (
        7, 9, 30)
    assert got.public is True and got.network_allow_list == f"{R1}/32"
    assert out(sb, "hostname") == "pooled-one" and out(sb, "cat /etc/hostname") == "pooled-one"
    assert "pooled-one" in out(sb, "cat /etc/hosts")
    assert out(sb, "echo $GREETING") == "hi there" and out(sb, "id -un") == "root"
    assert out(sb, "echo $HOSTNAME") == "pooled-one"  # as a cold start sets it
    assert fetch(sb, f"http://{R1}:8080/") and not fetch(sb, f"http://{R2}:8080/")
    blocked = client.create(CreateSandboxFromSnapshotParams(network_block_all=True))
    assert blocked.id in pooled and not fetch(blocked, f"http://{R1}:8080/")
    opened = client.create(CreateSandboxFromSnapshotParams(name="open"))
    assert opened.id in pooled and fetch(opened, "http://remote.test:8080/")  # DNS too
    assert out(opened, "id -un") == "daytona" and out(opened, "hostname") == "open"
    full(pool_server)  # refilled


def test_what_no_pool_serves_goes_cold(pool_server: Server, client: Daytona) -> None:
    pooled = full(pool_server)
    volume = client.volume.get("pool-vol", create=True)
    wait_for(lambda: client.volume.get("pool-vol").state == "ready", "volume ready", 30)
    try:
        with_volume = client.create(CreateSandboxFromSnapshotParams(
            volumes=[VolumeMount(volume_id=volume.id, mount_path="/data")]))  # fmt: skip
        assert with_volume.id not in pooled
        assert out(with_volume, "test -d /data && echo yes") == "yes"
        client.delete(with_volume)
    finally:
        wait_for(lambda: _deleted(client, "pool-vol"), "volume deleted", 30)


def _deleted(client: Daytona, name: str) -> bool:
    try:
        client.volume.delete(client.volume.get(name))
    except DaytonaError:
        return True
    return False


def test_concurrent_creates_never_share(pool_server: Server, client: Daytona) -> None:
    pooled = set(full(pool_server))

    async def burst() -> list:
        async with AsyncDaytona(DaytonaConfig(api_key=KEY, api_url=pool_server.api_url)) as dt:
            return await asyncio.gather(*(dt.create(CreateSandboxFromSnapshotParams(
                name=f"burst-{i}", env_vars={"N": str(i)})) for i in range(8)))  # fmt: skip

    made = asyncio.run(burst())
    assert len({sb.id for sb in made}) == 8 and pooled <= {sb.id for sb in made}
    for i in range(len(made)):
        one = client.get(f"burst-{i}")
        assert out(one, "echo $N") == str(i) and out(one, "hostname") == f"burst-{i}"
    full(pool_server)


def test_pooled_sandboxes_are_no_ones(pool_server: Server, client: Daytona) -> None:
    pooled = full(pool_server)
    other = Daytona(DaytonaConfig(api_key=pool_server.org_key("pool-other"),
                                  api_url=pool_server.api_url))  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    for who in (client, other):
        assert list(who.list()) == []
        for sandbox_id in pooled:
            with pytest.raises(DaytonaError):
                who.get(sandbox_id)
    for sandbox_id in pooled:  # nor through the toolbox
        r = httpx.post(f"{pool_server.url}/toolbox/{sandbox_id}/process/execute",
                       json={"command": "id"}, headers=headers)  # fmt: skip
        assert r.status_code == 404
    # A pooled sandbox's id as a name is just a name; claimed, the sandbox is theirs alone.
    theirs = other.create(CreateSandboxFromSnapshotParams(name=pooled[0]))
    try:
        assert theirs.name == pooled[0] and out(theirs, "hostname") == pooled[0]
        with pytest.raises(DaytonaError):
            client.get(theirs.id)
        with pytest.raises(DaytonaError):
            client.get(pooled[0])
        assert list(client.list()) == []
    finally:
        other.delete(theirs)


def test_kill9_keeps_the_pool_sound(pool_server: Server, client: Daytona) -> None:
    pooled = full(pool_server)
    runtime = pool_server.runtime()
    pool_server.kill9()
    runtime.stop(pooled[0], force=True)  # one dies while the server is down
    pool_server.start()
    after = full(pool_server)
    assert set(pooled[1:]) <= set(after) and pooled[0] not in after
    fresh = Daytona(DaytonaConfig(api_key=KEY, api_url=pool_server.api_url))
    sb = fresh.create(CreateSandboxFromSnapshotParams(name="after-crash", env_vars={"A": "b"}))
    assert sb.id in after and out(sb, "echo $A") == "b"
    assert out(sb, "hostname") == "after-crash"
    wait_for(lambda: set(runtime.list_ids()) == set(unowned(pool_server)) | {sb.id},
             "nothing on the host but the pool and the sandbox")


def test_an_organizations_warm_pools(pool_server: Server, client: Daytona) -> None:
    other = Daytona(DaytonaConfig(api_key=pool_server.org_key("pool-rival"),
                                  api_url=pool_server.api_url))  # fmt: skip
    pool = client.warm_pool.create("cove-default", pool=1)
    try:
        assert (pool.snapshot, pool.pool, pool.os_user, pool.cpu) == ("cove-default", 1,
                                                                      "daytona", 1)
        with pytest.raises(ApiException, match="409"):
            client.warm_pool.create("cove-default", pool=1)  # one per snapshot and target
        assert other.warm_pool.list() == []
        for attempt in (lambda: other.warm_pool.update(pool.id, pool=5),
                        lambda: other.warm_pool.delete(pool.id)):  # fmt: skip
            with pytest.raises(ApiException, match="404"):
                attempt()
        wait_for(lambda: client.warm_pool.list()[0].current_size == 1, "the pool filled")
        updated = client.warm_pool.update(pool.id, pool=2)
        assert updated.pool == 2
        wait_for(lambda: client.warm_pool.list()[0].current_size == 2, "the pool grew")
    finally:
        client.warm_pool.delete(pool.id)
    assert client.warm_pool.list() == []
    wait_for(lambda: len(unowned(pool_server)) == SIZE, "its sandboxes destroyed")


def test_the_operators_pool_grows_with_a_burst(tmp_path, e2e_dns: FakeDns) -> None:  # noqa: ANN001
    env = {"COVE_DNS_UPSTREAM": e2e_dns.upstream, "COVE_POOL_SIZE": "1",
           "COVE_POOL_ADAPTIVE_MAX": "3"}  # fmt: skip
    with running_server(tmp_path, 7, env) as srv:
        wait_for(lambda: len(unowned(srv, "started")) == 1, "1 pooled sandbox ready")
        client = Daytona(DaytonaConfig(api_key=KEY, api_url=srv.api_url))
        made = [client.create(CreateSandboxFromSnapshotParams()) for _ in range(4)]
        wait_for(lambda: len(unowned(srv, "started")) == 3, "the pool grown to its bound")
        time.sleep(1)  # (a keeper round more: it stays at its bound)
        pooled = set(unowned(srv, "started"))
        assert len(pooled) == 3
        again = [client.create(CreateSandboxFromSnapshotParams()) for _ in range(3)]
        assert {sb.id for sb in again} == pooled  # the next burst is served warm
        for sb in made + again:
            assert out(sb, "echo ok") == "ok"
            client.delete(sb)
