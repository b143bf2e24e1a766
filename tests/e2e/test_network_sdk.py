"""Sandbox networking through the official SDK: outbound access and DNS, the
firewall fields at create and via ``update_network_settings`` on a running
sandbox, removal with the sandbox, and survival of a ``kill -9`` of the server.

The remotes are HTTP servers in network namespaces this test creates (R1, R2 in
198.18.0.0/16, routed via the host); names resolve through a test DNS server
that the server's forwarder uses as upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from daytona.common.errors import DaytonaError

from tests.e2e.conftest import KEY, Server
from tests.nettools import R1, R1_NET, R2, R2_NET, Remote, nft_table

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def remotes() -> Iterator[tuple[Remote, Remote]]:
    pair = (Remote(R1_NET).start(), Remote(R2_NET).start())
    yield pair
    for remote in pair:
        remote.stop()


def fetch(sb, url: str) -> bool:  # noqa: ANN001
    res = sb.process.exec(f"curl -sS -m 2 {url}", timeout=20)
    return res.exit_code == 0 and "remote " in res.result


def test_outbound_and_dns(daytona: Daytona, sandboxes: list, remotes) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    assert fetch(sb, f"http://{R1}:8080/")
    assert (
        f"remote {R1} /dns" in sb.process.exec("curl -sS -m 5 http://remote.test:8080/dns").result
    )


def test_firewall_fields_and_live_updates(daytona: Daytona, sandboxes: list, remotes) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams(network_block_all=True))
    sandboxes.append(sb)
    assert sb.network_block_all is True
    assert not fetch(sb, f"http://{R1}:8080/")

    sb.update_network_settings(network_allow_list=f"198.18.{R1_NET}.0/24")
    assert sb.network_block_all is False and sb.network_allow_list == f"198.18.{R1_NET}.0/24"
    assert fetch(sb, f"http://{R1}:8080/") and not fetch(sb, f"http://{R2}:8080/")

    with pytest.raises(DaytonaError):
        sb.update_network_settings(network_allow_list="10.0.0.0/33")
    with pytest.raises(DaytonaError):
        sb.update_network_settings(network_allow_list=",".join(f"10.0.{i}.0/24" for i in range(11)))
    with pytest.raises(DaytonaError):
        sb.update_network_settings(domain_allow_list="bad_name!.test")
    with pytest.raises(DaytonaError, match="169.254.0.0/16, which this server blocks"):
        sb.update_network_settings(network_allow_list="169.254.169.254/32")  # cloud metadata
    sb.refresh_data()
    assert sb.network_allow_list == f"198.18.{R1_NET}.0/24"  # nothing changed
    assert fetch(sb, f"http://{R1}:8080/")

    sb.update_network_settings(network_allow_list="", domain_allow_list="other.test")
    assert fetch(sb, "http://other.test:8080/") and not fetch(sb, f"http://{R1}:8080/")
    sb.update_network_settings(network_block_all=False)  # general access again
    assert fetch(sb, f"http://{R1}:8080/") and fetch(sb, f"http://{R2}:8080/")


def test_domain_list_at_create(daytona: Daytona, sandboxes: list, remotes) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams(domain_allow_list="*.wild.test"))
    sandboxes.append(sb)
    assert not fetch(sb, f"http://{R1}:8080/")
    assert fetch(sb, "http://a.wild.test:8080/")
    assert not fetch(sb, "http://remote.test:8080/")  # the name is not allowed
    assert not fetch(sb, f"http://{R2}:8080/")


def test_rules_gone_after_delete(daytona: Daytona, remotes) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams(network_allow_list=f"{R1}/32"))
    assert sb.id in nft_table()
    sb.delete()
    assert sb.id not in nft_table()


def test_kill9_keeps_network_and_rules(server: Server, daytona: Daytona, sandboxes: list,
                                       remotes) -> None:  # fmt: skip
    sb = daytona.create(CreateSandboxFromSnapshotParams(network_allow_list=f"{R1}/32"))
    open_sb = daytona.create()
    sandboxes.extend([sb, open_sb])
    server.kill9()
    server.start()
    client = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    sb, open_sb = client.get(sb.id), client.get(open_sb.id)
    assert fetch(sb, f"http://{R1}:8080/") and not fetch(sb, f"http://{R2}:8080/")
    assert fetch(open_sb, "http://remote.test:8080/")  # DNS forwarder is back
    sb.update_network_settings(network_block_all=True)
    assert not fetch(sb, f"http://{R1}:8080/")
