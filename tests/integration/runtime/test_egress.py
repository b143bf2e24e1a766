"""The server's egress limits on the real runtime, attacked from inside sandboxes:
the default block of private, link-local (cloud metadata) and other special
ranges, the operator's exemptions and extra blocks, DNS rebinding onto blocked
addresses, the host's own addresses, spoofed source addresses and the
per-sandbox connection cap.

R1 answers HTTP on 198.18.<n>.2 and, for sandboxes steered to it, on one address
of each private range (nettools.PRIVATE); the host itself never routes those.
Two runtimes run side by side: the session's (default settings) and ``exempt``
(PRIVATE exempted, R2's network blocked, a cap of CAP connections).
"""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import NetworkPolicy
from cove.runtime.firewall import Link
from cove.runtime.layout import SandboxPaths
from cove.runtime.oci import OciRuntime
from tests.integration.conftest import MADE, SNAPSHOTS, SandboxFactory, sandbox_factory
from tests.integration.runtime.util import ok, sh
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
        max_connections=CAP,
    )  # fmt: skip
    yield OciRuntime(settings)
    assert_no_leaks(settings.data_dir, MADE.__contains__)


@pytest.fixture
def make_exempt(exempt: OciRuntime) -> Iterator[SandboxFactory]:
    """Sandboxes on the ``exempt`` runtime, destroyed afterwards."""
    with sandbox_factory(exempt) as make:
        yield make
    assert_no_leaks(exempt._settings.data_dir, MADE.__contains__)


def link(runtime: OciRuntime, sid: str) -> Link:
    net = runtime._net
    assert net is not None
    found = net.link(SandboxPaths.of(runtime._settings.data_dir, sid))
    assert found is not None
    return found


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


def py(runtime: OciRuntime, sid: str, script: str, *args: str, user: str = "daytona") -> str:
    """Run a Python script in the sandbox; it must succeed. Returns its stdout."""
    res = runtime.exec(sid, ["python3", "-c", textwrap.dedent(script), *args], user=user,
                       timeout=60)  # fmt: skip
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return res.stdout.decode()


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


_CONNECT_ALL = """
    import concurrent.futures, json, socket, sys
    port, addrs = int(sys.argv[1]), sys.argv[2:]
    def attempt(addr):
        try:
            socket.create_connection((addr, port), timeout=3).close()
            return "open"
        except TimeoutError:
            return "dropped"
        except OSError as exc:
            return f"error {exc.errno}"
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        print(json.dumps(dict(zip(addrs, pool.map(attempt, addrs)))))
"""
_DNS_QUERY = """
    import socket, struct, sys
    name = b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + b"\\0"
    query = struct.pack("!6H", 77, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(query, (sys.argv[1], 53))
        try:
            print("answered" if s.recv(4096)[:2] == query[:2] else "garbage")
        except TimeoutError:
            print("dropped")
"""


def test_host_addresses_are_unreachable(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                        r1: Remote) -> None:  # fmt: skip
    a, b = make_sandbox().sandbox_id, make_sandbox().sandbox_id
    addrs = _host_addresses()
    assert link(runtime, a).host in addrs and r1.host in addrs
    with _listener() as port:
        seen = json.loads(py(runtime, a, _CONNECT_ALL, str(port), *addrs))
    stable = set(addrs) & set(_host_addresses())  # other test runs come and go
    assert {k: v for k, v in seen.items() if k in stable} == dict.fromkeys(stable, "dropped")
    assert py(runtime, a, _DNS_QUERY, link(runtime, a).host, "x.test").strip() == "answered"
    # another sandbox's DNS listener (it may have another policy) is not reachable
    assert py(runtime, a, _DNS_QUERY, link(runtime, b).host, "x.test").strip() == "dropped"


_SEND_RAW = """
    import json, socket, struct, sys
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
    for src, dst, port, payload in json.loads(sys.argv[1]):
        data = bytes.fromhex(payload)
        udp = struct.pack("!4H", 40000, port, 8 + len(data), 0) + data
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        raw.sendto(ip + udp, (dst, 0))
"""
SINK_PORT = 9999


def test_spoofed_sources_are_dropped(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                     fake_dns: FakeDns, r1: Remote) -> None:  # fmt: skip
    sid, neighbour = make_sandbox().sandbox_id, make_sandbox().sandbox_id
    own = link(runtime, sid)
    assert _rp_filter(own.veth) == "1"
    assert _inject(runtime, sid, r1, [runtime.address(neighbour), R2, "203.0.113.9"]) == [
        f"last {r1.host}"  # the one from the sandbox's own address, masqueraded
    ]
    # the nft rule alone, without the kernel's reverse-path filter
    (Path("/proc/sys/net/ipv4/conf") / own.veth / "rp_filter").write_text("0\n")
    assert _inject(runtime, sid, r1, [R2, "203.0.113.9"]) == [f"last {r1.host}"]
    # nor can a spoofed query make Cove's DNS forwarder answer a victim
    spoofed, real = f"spoof-{uuid.uuid4().hex[:8]}.test", f"real-{uuid.uuid4().hex[:8]}.test"
    packet = [R1, own.host, 53, _dns_query(spoofed).hex()]
    py(runtime, sid, _SEND_RAW, json.dumps([packet]), user="root")
    py(runtime, sid, _DNS_QUERY, own.host, real)
    assert real in fake_dns.queries and spoofed not in fake_dns.queries
    runtime.set_network(sid, NetworkPolicy())
    assert _rp_filter(own.veth) == "1"  # every application turns it back on


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


def _inject(runtime: OciRuntime, sid: str, r1: Remote, sources: list[str | None]) -> list[str]:
    """Send one UDP datagram to R1 from each spoofed source, then one from the sandbox's
    own address; returns what R1 received ("<payload> <source>")."""
    own = runtime.address(sid)
    packets = [[src, R1, SINK_PORT, f"spoofed from {src}".encode().hex()] for src in sources]
    packets.append([own, R1, SINK_PORT, b"last".hex()])
    with r1.udp_sink(SINK_PORT) as sink:
        py(runtime, sid, _SEND_RAW, json.dumps(packets), user="root")
        out, _ = sink.communicate(timeout=30)
    return out.splitlines()


def _dns_query(name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return bytes.fromhex("004d01000001000000000000") + qname + bytes.fromhex("00010001")


def _rp_filter(veth_name: str) -> str:
    return (Path("/proc/sys/net/ipv4/conf") / veth_name / "rp_filter").read_text().strip()


def _set_elements(name: str) -> str:
    return subprocess.run(["nft", "list", "set", "inet", "cove", name], capture_output=True,
                          text=True).stdout  # fmt: skip


def _host_addresses() -> list[str]:
    """Every IPv4 address of the host but loopback (127/8 is the sandbox's own)."""
    out = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True,
                                    text=True).stdout)  # fmt: skip
    addrs = [a["local"] for ifc in out for a in ifc.get("addr_info", [])]
    return [a for a in addrs if not a.startswith("127.")]


class _listener:
    """A TCP listener on every address of the host, accepting in the background."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        try:
            while True:
                self.sock.accept()[0].close()
        except OSError:
            return

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
