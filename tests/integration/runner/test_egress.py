"""The server's egress limits on the real runtime, attacked from inside sandboxes:
the default block of private, link-local (cloud metadata) and other special
ranges, the operator's exemptions and extra blocks, DNS rebinding onto blocked
addresses and the per-sandbox connection cap (test_boundary.py: the host's own
addresses, spoofing).

R1 answers HTTP on 198.18.<n>.2 and, for sandboxes steered to it, on one address
of each private range (nettools.PRIVATE); the host itself never routes those.
Two runtimes run side by side: the session's (default settings) and ``exempt``
(PRIVATE exempted, R2's network blocked, a cap of CAP connections).
"""

from __future__ import annotations

import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import NetworkPolicy
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SNAPSHOTS, SandboxFactory, sandbox_factory
from tests.integration.runner.util import link, ok, sh
from tests.leaks import assert_no_leaks
from tests.nettools import (
    LAN,
    METADATA,
    PRIVATE,
    R1,
    R1_NET,
    R2,
    R2_NET,
    FakeDns,
    Remote,
    third_pool,
)

pytestmark = pytest.mark.integration
CAP = 6


@pytest.fixture(scope="module")
def r1() -> Iterator[Remote]:
    remote = Remote(R1_NET, extra=PRIVATE).start()
    yield remote
    remote.stop()


@pytest.fixture(scope="module")
def r2() -> Iterator[Remote]:
    remote = Remote(R2_NET).start()
    yield remote
    remote.stop()


@pytest.fixture(scope="module")
def exempt(tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns,
           default_rootfs: Path) -> Iterator[OciRuntime]:  # fmt: skip
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cove-egress"), snapshot_dir=SNAPSHOTS,
        stop_grace_seconds=2.0, network_pool=third_pool(), dns_upstream=fake_dns.upstream,
        egress_allow=",".join(PRIVATE), egress_block=f"198.18.{R2_NET}.0/24",
        max_connections=CAP, cgroup_parent=f"cove-it-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    yield OciRuntime(settings)
    assert_no_leaks(settings.data_dir, settings.cgroup_parent)


@pytest.fixture
def make_exempt(exempt: OciRuntime) -> Iterator[SandboxFactory]:
    """Sandboxes on the ``exempt`` runtime, destroyed afterwards."""
    with sandbox_factory(exempt) as make:
        yield make
    assert_no_leaks(exempt._settings.data_dir, exempt._settings.cgroup_parent)


@pytest.fixture
def steered(r1: Remote) -> Iterator:
    """``steer(runtime, sid)`` routes the sandbox's packets for PRIVATE to R1."""
    done: list[str] = []

    def steer(runtime: OciRuntime, sid: str) -> str:
        name = link(runtime, sid).veth
        r1.steer(name)
        done.append(name)
        return sid

    yield steer
    for name in done:
        r1.unsteer(name)


def fetch(runtime: OciRuntime, sid: str, host: str) -> str:
    """``ok``, ``dropped`` (timed out) or ``failed: ...`` for GET http://host:8080/."""
    res = sh(runtime, sid, f"curl -sS -m 2 http://{host}:8080/", user="daytona", timeout=20)
    if res.exit_code == 0 and b"remote " in res.stdout:
        return "ok"
    return "dropped" if res.exit_code == 28 else f"failed: {res.exit_code} {res.stderr!r}"


def test_private_ranges_are_blocked_unless_exempted(
    runtime: OciRuntime, make_sandbox: SandboxFactory, exempt: OciRuntime,
    make_exempt: SandboxFactory, steered, r2: Remote,
) -> None:  # fmt: skip
    plain = steered(runtime, make_sandbox().sandbox_id)
    all_ = steered(runtime, make_sandbox(network=NetworkPolicy(allow_cidrs=("0.0.0.0/0",)))
                   .sandbox_id)  # fmt: skip
    other = steered(exempt, make_exempt().sandbox_id)
    assert fetch(runtime, plain, R1) == "ok"  # 198.18.0.0/15 is not blocked
    assert fetch(runtime, plain, R2) == "ok"
    for addr in PRIVATE:
        assert fetch(runtime, plain, addr) == "dropped", addr
        assert fetch(runtime, all_, addr) == "dropped", addr  # 0.0.0.0/0 only overlaps
        assert fetch(exempt, other, addr) == "ok", addr  # the operator's exemptions
    assert fetch(exempt, other, R1) == "ok"
    assert fetch(exempt, other, R2) == "dropped"  # the operator's extra block


def test_dns_rebinding_does_not_open_blocked_addresses(
    runtime: OciRuntime, make_sandbox: SandboxFactory, exempt: OciRuntime,
    make_exempt: SandboxFactory, steered,
) -> None:  # fmt: skip
    policy = NetworkPolicy(allow_domains=("metadata.test", "lan.test", "remote.test"))
    sid = steered(runtime, make_sandbox(network=policy).sandbox_id)
    other = steered(exempt, make_exempt(network=policy).sandbox_id)
    assert ok(runtime, sid, "getent ahostsv4 metadata.test").startswith(METADATA)
    assert ok(runtime, sid, "getent ahostsv4 lan.test").startswith(LAN)
    resolved = _set_elements(link(runtime, sid).dns_set)
    assert METADATA in resolved and LAN in resolved  # the forwarder did add them
    assert fetch(runtime, sid, "metadata.test") == "dropped"
    assert fetch(runtime, sid, "lan.test") == "dropped"
    assert fetch(runtime, sid, "remote.test") == "ok"
    assert fetch(exempt, other, "metadata.test") == "ok"  # reachable where exempted
    assert fetch(exempt, other, "lan.test") == "ok"


def test_connection_cap(exempt: OciRuntime, make_exempt: SandboxFactory, r1: Remote) -> None:
    sid, other = make_exempt().sandbox_id, make_exempt().sandbox_id
    ok(exempt, sid, f"cat > /tmp/hold.py <<'EOF'\n{textwrap.dedent(_HOLD)}EOF")
    ok(exempt, sid, f"nohup python3 /tmp/hold.py {R1} {CAP} >/tmp/hold.out 2>&1 &", user="daytona")
    assert _wait_for(exempt, sid, "held") == f"held {CAP}, then ConnectionRefusedError"
    assert fetch(exempt, sid, R1).startswith("failed: 7")  # refused at once, not hanging
    exempt.set_network(sid, NetworkPolicy())  # a policy change does not reset the count
    assert fetch(exempt, sid, R1).startswith("failed: 7")
    assert fetch(exempt, other, R1) == "ok"  # other sandboxes are not affected
    assert ok(exempt, sid, "echo alive") == "alive\n"
    ok(exempt, sid, "touch /tmp/release")
    assert _wait_for(exempt, sid, "after") == "after: connected"
    assert fetch(exempt, sid, R1) == "ok"


_HOLD = """
    import os, socket, sys, time
    host, n = sys.argv[1], int(sys.argv[2])
    held = [socket.create_connection((host, 8080), timeout=5) for _ in range(n)]
    try:
        socket.create_connection((host, 8080), timeout=5)
        extra = "connected"
    except OSError as exc:
        extra = type(exc).__name__
    print(f"held {len(held)}, then {extra}", flush=True)
    while not os.path.exists("/tmp/release"):
        time.sleep(0.05)
    for s in held:
        s.close()
    for _ in range(100):  # closing takes a few packets
        try:
            socket.create_connection((host, 8080), timeout=5).close()
            print("after: connected", flush=True)
            break
        except OSError as exc:
            time.sleep(0.05)
    else:
        print("after:", type(exc).__name__, flush=True)
"""


def _wait_for(runtime: OciRuntime, sid: str, prefix: str) -> str:
    for _ in range(600):
        out = sh(runtime, sid, "cat /tmp/hold.out").stdout.decode()
        found = [line for line in out.splitlines() if line.startswith(prefix)]
        if found:
            return found[0]
        sh(runtime, sid, "sleep 0.05")
    raise AssertionError(f"no '{prefix}' line: {out!r}")


def _set_elements(name: str) -> str:
    return subprocess.run(["nft", "list", "set", "inet", "cove", name], capture_output=True,
                          text=True).stdout  # fmt: skip
