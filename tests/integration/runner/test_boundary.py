"""The boundary between sandboxes and the host, attacked from inside a sandbox: the
host's own addresses (IPv4 on every interface, IPv6 link-local), other sandboxes'
DNS listeners, spoofed source addresses (raw packets sent in the sandbox's network
namespace by host root, as sandbox root cannot) and packets conntrack cannot track.
R1 is a remote in its own netns (see tests.nettools) that records what reaches it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.ports import NetworkPolicy
from cove.runner.layout import SandboxPaths
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import link, ok, py, sh
from tests.nettools import R1, R1_NET, R2, SEND_RAW, FakeDns, Remote, tcp_packet, udp_packet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def r1() -> Iterator[Remote]:
    remote = Remote(R1_NET).start()
    yield remote
    remote.stop()


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


def test_dns_reaches_no_other_server_of_the_host(runtime: OciRuntime,
                                                 make_sandbox: SandboxFactory) -> None:  # fmt: skip
    """While Cove's forwarder does not listen for a sandbox (its server stopped or
    restarting, the sandbox running on), the sandbox's queries to its host-side address
    reach no DNS server of the host listening on every address: it would answer them
    whatever the sandbox's policy (a block-all sandbox's names, leaking out)."""
    sid = make_sandbox(network=NetworkPolicy(block_all=True)).sandbox_id
    host = link(runtime, sid).host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rogue:
        rogue.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rogue.bind(("0.0.0.0", 53))
        threading.Thread(target=_answer_all, args=(rogue,), daemon=True).start()
        assert runtime._net is not None
        runtime._net.dns.close(sid)  # (as a server that is down)
        assert py(runtime, sid, _DNS_QUERY, host, "x.test").strip() == "dropped"
        runtime.set_network(sid, NetworkPolicy(block_all=True))  # the forwarder is back
        assert py(runtime, sid, _DNS_QUERY, host, "x.test").strip() == "answered"


def _answer_all(sock: socket.socket) -> None:
    """Answer every query on ``sock`` (with no records) until it is closed."""
    try:
        while True:
            query, peer = sock.recvfrom(4096)
            sock.sendto(query[:2] + b"\x81\x80" + query[4:], peer)
    except OSError:
        return


def test_no_ipv6_to_the_host(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    """IPv6 needs no route on a link: the host side of the veth has a link-local
    address, and a dual-stack service there must still be out of reach."""
    sid = make_sandbox().sandbox_id
    target = f"{_link_local(link(runtime, sid).veth)}%eth0"
    for _ in range(200):  # until the sandbox's own link-local address is usable
        inside = ok(runtime, sid, "cat /proc/net/if_inet6").split("\n")
        if any(f.split()[-1] == "eth0" and not int(f.split()[4], 16) & 0x40 for f in inside if f):
            break
        sh(runtime, sid, "sleep 0.05")
    with _listener(socket.AF_INET6) as port:
        seen = json.loads(py(runtime, sid, _CONNECT_ALL, str(port), target))
    assert seen == {target: "dropped"}


SINK_PORT = 9999


def test_spoofed_sources_are_dropped(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                     fake_dns: FakeDns, r1: Remote) -> None:  # fmt: skip
    sid, neighbour = make_sandbox().sandbox_id, make_sandbox().sandbox_id
    own = link(runtime, sid)
    raw = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)"
    res = runtime.exec(sid, ["python3", "-c", raw], user="root", timeout=30)
    assert res.exit_code != 0 and b"PermissionError" in res.stderr  # hence _send from the host
    assert _rp_filter(own.veth) == "1"
    assert _inject(runtime, sid, r1, [runtime.address(neighbour), R2, "203.0.113.9"]) == [
        f"last {r1.host}"  # the one from the sandbox's own address, masqueraded
    ]
    # the nft rule alone, without the kernel's reverse-path filter
    (Path("/proc/sys/net/ipv4/conf") / own.veth / "rp_filter").write_text("0\n")
    assert _inject(runtime, sid, r1, [R2, "203.0.113.9"]) == [f"last {r1.host}"]
    # nor can a spoofed query make Cove's DNS forwarder answer a victim
    spoofed, real = f"spoof-{uuid.uuid4().hex[:8]}.test", f"real-{uuid.uuid4().hex[:8]}.test"
    _send(runtime, sid, [udp_packet(R1, own.host, 53, _dns_query(spoofed))])
    py(runtime, sid, _DNS_QUERY, own.host, real)
    assert real in fake_dns.queries and spoofed not in fake_dns.queries
    runtime.set_network(sid, NetworkPolicy())
    assert _rp_filter(own.veth) == "1"  # every application turns it back on


def test_invalid_packets_do_not_leave_unmasqueraded(
    runtime: OciRuntime, make_sandbox: SandboxFactory, r1: Remote
) -> None:
    """Packets conntrack cannot track (here SYN+FIN) would skip NAT and carry the
    sandbox's own address out."""
    sid = make_sandbox().sandbox_id
    own = runtime.address(sid)
    assert own is not None
    with r1.sink(6, SINK_PORT) as sink:
        _send(runtime, sid, [tcp_packet(own, R1, SINK_PORT, 0x03),
                             tcp_packet(own, R1, SINK_PORT, 0x02)])  # fmt: skip
        out, _ = sink.communicate(timeout=30)
    assert out.splitlines() == [f"flags=0x2 {r1.host}"]


def _inject(runtime: OciRuntime, sid: str, r1: Remote, sources: list[str | None]) -> list[str]:
    """Send one UDP datagram to R1 from each spoofed source, then one from the sandbox's
    own address; returns what R1 received ("<payload> <source>")."""
    own = runtime.address(sid)
    assert own is not None
    packets = [udp_packet(src, R1, SINK_PORT, f"spoofed from {src}".encode())
               for src in sources if src]  # fmt: skip
    with r1.sink(17, SINK_PORT) as sink:
        _send(runtime, sid, [*packets, udp_packet(own, R1, SINK_PORT, b"last")])
        out, _ = sink.communicate(timeout=30)
    return out.splitlines()


def _send(runtime: OciRuntime, sid: str, packets: list[str]) -> None:
    """Send raw packets from inside the sandbox's network namespace, as host root (more
    than a tenant can: sandbox root gets no raw socket, see test_spoofed_sources...)."""
    netns = SandboxPaths.of(runtime._settings.data_dir, sid).netns
    subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", SEND_RAW,
                    json.dumps(packets)], check=True, timeout=60)  # fmt: skip


def _dns_query(name: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return bytes.fromhex("004d01000001000000000000") + qname + bytes.fromhex("00010001")


def _rp_filter(veth_name: str) -> str:
    return (Path("/proc/sys/net/ipv4/conf") / veth_name / "rp_filter").read_text().strip()


def _host_addresses() -> list[str]:
    """Every IPv4 address of the host but loopback (127/8 is the sandbox's own)."""
    out = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True,
                                    text=True).stdout)  # fmt: skip
    addrs = [a["local"] for ifc in out for a in ifc.get("addr_info", [])]
    return [a for a in addrs if not a.startswith("127.")]


def _link_local(dev: str) -> str:
    """The (usable, so no longer tentative) IPv6 link-local address of a host device."""
    for _ in range(200):
        out = json.loads(subprocess.run(["ip", "-j", "-6", "addr", "show", "dev", dev],
                                        capture_output=True, text=True).stdout)  # fmt: skip
        found = [a["local"] for ifc in out for a in ifc.get("addr_info", [])
                 if a.get("scope") == "link" and not a.get("tentative")]  # fmt: skip
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{dev} has no IPv6 link-local address")


class _listener:
    """A TCP listener on every address of the host, accepting in the background."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family

    def __enter__(self) -> int:
        self.sock = socket.socket(self.family)
        self.sock.bind(("::" if self.family == socket.AF_INET6 else "0.0.0.0", 0))
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
