"""Linked sandboxes (``linked_sandbox`` at create), through the official SDK: the
linked (ephemeral) sandbox reaches its owner by name, and nothing else reaches
either; another organization cannot link; the owner's deletion takes the linked
sandbox with it and leaves no rule behind."""

from __future__ import annotations

import subprocess
import uuid

import httpx
import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, DaytonaError

from tests.e2e.conftest import KEY, Server, run_ok
from tests.nettools import nft_table

pytestmark = pytest.mark.e2e
PORT = 8000


def _serve(sb, port: int = PORT) -> None:  # noqa: ANN001 - an SDK Sandbox
    """Start python's http.server in the sandbox and wait until it answers."""
    run_ok(sb, f"mkdir -p /tmp/www && echo served-by-{sb.name} > /tmp/www/index.html")
    sb.process.create_session("www")
    sb.process.execute_session_command("www", _async(
        f"cd /tmp/www && exec python3 -m http.server {port}"))  # fmt: skip
    run_ok(sb, f"for i in $(seq 100); do curl -s localhost:{port} && break; sleep 0.1; done")


def _async(command: str):  # noqa: ANN202
    from daytona import SessionExecuteRequest

    return SessionExecuteRequest(command=command, run_async=True)


def _get(sb, url: str) -> str | None:  # noqa: ANN001
    """The body ``url`` answers inside ``sb`` (None: it could not be reached)."""
    res = sb.process.exec(f"curl -sS -m 3 {url}", timeout=20)
    return res.result if res.exit_code == 0 else None


def _address(sb) -> str:  # noqa: ANN001
    """The sandbox's own IPv4 address."""
    return run_ok(sb, "python3 -c \"import socket; s = socket.socket(2, 2); "
                      "s.connect(('192.0.2.1', 9)); print(s.getsockname()[0])\"").strip()


def _resolver(sb) -> str:  # noqa: ANN001
    """The host-side address where Cove answers the sandbox's DNS."""
    return run_ok(sb, "awk '/^nameserver/ {print $2}' /etc/resolv.conf").strip()


def _listening(ip: str) -> bool:
    """Whether a DNS listener of Cove is bound on the host at ``ip``."""
    out = subprocess.run(["ss", "-ulnH"], capture_output=True, text=True, check=True).stdout
    return f"{ip}:53 " in out


def _other_org(server: Server) -> str:
    return server.org_key("linked-other")


def _create(server: Server, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.api_url}/sandbox", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"})  # fmt: skip


def test_a_linked_sandbox_reaches_its_owner_by_name_and_nothing_else(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    owner_name = f"owner-{uuid.uuid4().hex[:8]}"
    owner = daytona.create(CreateSandboxFromSnapshotParams(name=owner_name))
    sandboxes.append(owner)
    linked = daytona.create(CreateSandboxFromSnapshotParams(linked_sandbox=owner_name,
                                                            ephemeral=True))  # fmt: skip
    sandboxes.append(linked)
    third = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(third)
    other_key = _other_org(server)
    stranger = Daytona(DaytonaConfig(api_key=other_key, api_url=server.api_url)).create()
    sandboxes.append(stranger)
    assert linked.linked_sandbox_id == owner.id
    assert daytona.get(linked.id).linked_sandbox_id == owner.id
    assert owner.linked_sandbox_id is None
    _serve(owner)
    _serve(linked)
    _serve(third)
    # The linked sandbox reaches its owner by name.
    assert _get(linked, f"http://{owner_name}:{PORT}/") == f"served-by-{owner_name}\n"
    owner_ip = run_ok(linked, f"getent hosts {owner_name}").split()[0]
    linked_ip, third_ip = _address(linked), _address(third)
    assert _get(linked, f"http://{owner_ip}:{PORT}/") is not None
    # Nothing else: the owner cannot dial the linked sandbox, a sandbox of the same
    # organization that is not linked reaches neither, nor does another organization's;
    # the linked sandbox reaches no other sandbox; the name means nothing elsewhere.
    assert _get(owner, f"http://{linked_ip}:{PORT}/") is None
    assert _get(linked, f"http://{third_ip}:{PORT}/") is None
    for outsider in (third, stranger):
        assert _get(outsider, f"http://{owner_ip}:{PORT}/") is None
        assert _get(outsider, f"http://{linked_ip}:{PORT}/") is None
        assert outsider.process.exec(f"getent hosts {owner_name}").exit_code != 0
    # Deleting the owner deletes the linked sandbox, and their rules and DNS go.
    resolvers = [_resolver(sb) for sb in (owner, linked)]
    assert all(_listening(ip) for ip in resolvers)
    owner.delete()
    with pytest.raises(DaytonaError, match="(?i)not found"):
        daytona.get(linked.id)
    table = nft_table()
    assert owner.id not in table and linked.id not in table
    assert third.id in table
    assert not any(_listening(ip) for ip in resolvers)


def test_links_are_checked_at_create(server: Server, daytona: Daytona, sandboxes: list) -> None:
    owner = daytona.create()
    sandboxes.append(owner)
    before = {sb.id for sb in daytona.list()}
    # Not ephemeral: a clear 400, nothing created.
    res = _create(server, KEY, {"linkedSandbox": owner.id})
    assert res.status_code == 400 and "ephemeral" in res.json()["message"], res.text
    res = _create(server, KEY, {"linkedSandbox": owner.id, "autoDeleteInterval": 5})
    assert res.status_code == 400 and "ephemeral" in res.json()["message"]
    # Another organization's sandbox, or one that does not exist: 404.
    res = _create(server, _other_org(server), {"linkedSandbox": owner.id, "autoDeleteInterval": 0})
    assert res.status_code == 404, res.text
    res = _create(server, KEY, {"linkedSandbox": "no-such-sandbox", "autoDeleteInterval": 0})
    assert res.status_code == 404
    assert {sb.id for sb in daytona.list()} == before
    # Links do not chain.
    linked = daytona.create(CreateSandboxFromSnapshotParams(linked_sandbox=owner.id,
                                                            ephemeral=True))  # fmt: skip
    sandboxes.append(linked)
    res = _create(server, KEY, {"linkedSandbox": linked.id, "autoDeleteInterval": 0})
    assert res.status_code == 400 and "linked" in res.json()["message"]
    # Linked by id, the owner's name (here its id) resolves too; and still after the
    # owner restarted (its address is kept until it is deleted).
    _serve(owner)
    assert _get(linked, f"http://{owner.name}:{PORT}/") is not None
    owner.stop()
    owner.start()
    _serve(owner)
    assert _get(linked, f"http://{owner.name}:{PORT}/") is not None
