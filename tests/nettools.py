"""Test peers for sandbox networking: "remote" hosts in network namespaces the
tests create (198.18.0.0/15 only, routed via the host) and a tiny DNS server.

Nothing here reaches beyond this machine.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Per test run, so that concurrent runs on one host do not share addresses.
_RUN = os.getpid() % 100
R1_NET, R2_NET = 2 * _RUN + 2, 2 * _RUN + 3  # 198.18.<n>.0/24 of the two remotes
R1, R2 = f"198.18.{R1_NET}.2", f"198.18.{R2_NET}.2"
# Addresses Cove blocks by default; a remote answers on them only for sandboxes
# steered to it (Remote.steer), so the host itself never routes them anywhere.
METADATA, LAN = "169.254.169.254", "10.254.254.2"
PRIVATE = (METADATA, LAN, "172.16.254.2", "192.168.254.2", "100.64.254.2")
TEST_NAMES = {"remote.test": R1, "other.test": R2, "a.wild.test": R1,
              "metadata.test": METADATA, "lan.test": LAN}  # fmt: skip


def sandbox_pool(offset: int) -> str:
    """A /24 of 198.19.0.0/16 for one test server's sandbox addresses."""
    return f"198.19.{(2 * _RUN + offset) % 256}.0/24"


def third_pool() -> str:
    """A /25 of 198.19.200.0-255.255 (unused by sandbox_pool) for a third test server,
    one that no address on the host lies in yet."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for i in range(112):
        third, fourth = 200 + (_RUN + i) % 112 // 2, 128 * ((_RUN + i) % 2)
        pool = ipaddress.ip_network(f"198.19.{third}.{fourth}/25")
        taken = [w.split("/")[0] for w in used.split() if w.startswith("198.19.")]
        if not any(ipaddress.ip_address(a) in pool for a in taken):
            return str(pool)
    raise RuntimeError("no free test pool in 198.19.200.0/21")


# A remote: netns tcv<hex>, veth tv<hex> (never "cv*": that prefix is Cove's),
# host side 198.18.<n>.1/24, remote side 198.18.<n>.2/24.
HTTP_PORT = 8080
_SERVER = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"remote {self.connection.getsockname()[0]} {self.path}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""
# A raw listener for one IP protocol (17: UDP, 6: TCP) and port: prints "ready", then
# per packet its UDP payload or TCP flags and its source; exits after a UDP b"last"
# or a plain TCP SYN.
_SINK = r"""
import socket, struct, sys
proto, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
print("ready", flush=True)
while True:
    pkt, peer = s.recvfrom(65535)
    l4 = pkt[(pkt[0] & 15) * 4:]
    if struct.unpack("!H", l4[2:4])[0] != port:
        continue
    what = l4[8:].decode(errors="replace") if proto == 17 else f"flags={l4[13]:#x}"
    print(what, peer[0], flush=True)
    if what in ("last", "flags=0x2"):
        break
"""


# Sends raw IPv4 packets (hex, as made by udp_packet/tcp_packet) given as one JSON list
# argument; needs CAP_NET_RAW in the network namespace it runs in.
SEND_RAW = r"""
import json, socket, sys
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
for packet in map(bytes.fromhex, json.loads(sys.argv[1])):
    raw.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))
"""


def udp_packet(src: str, dst: str, port: int, payload: bytes) -> str:
    """A UDP datagram from ``src`` (any address) as an IPv4 packet, in hex."""
    return _ip(src, dst, 17, struct.pack("!4H", 40000, port, 8 + len(payload), 0) + payload)


def tcp_packet(src: str, dst: str, port: int, flags: int) -> str:
    """A TCP segment with ``flags`` (0x02: SYN) and a valid checksum, in hex."""
    head = struct.pack("!HHIIBBHHH", 40000, port, 1, 0, 5 << 4, flags, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    csum = _checksum(pseudo + head)
    return _ip(src, dst, 6, head[:16] + struct.pack("!H", csum) + head[18:])


def _ip(src: str, dst: str, proto: int, l4: bytes) -> str:
    # (the kernel fills in the header checksum)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    return (header + l4).hex()


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Remote:
    """An HTTP server at 198.18.<n>.2:8080 in its own netns, routed via the host;
    also on the ``extra`` addresses, for the sandboxes it is steered to. It answers
    every GET with a line naming itself, or serves the files of ``directory``."""

    def __init__(self, n: int, extra: tuple[str, ...] = (), directory: Path | None = None
                 ) -> None:  # fmt: skip
        self.n = n
        self.extra = extra
        self.directory = directory
        self.table = str(4000 + n)  # routing table of the steered sandboxes
        suffix = uuid.uuid4().hex[:8]
        self.netns = f"tcv{suffix}"
        self.veth = f"tv{suffix}"
        self.host = f"198.18.{n}.1"
        self.addr = f"198.18.{n}.2"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{HTTP_PORT}"

    def start(self) -> Remote:
        sh = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
           "netns", self.netns)  # fmt: skip
        sh("ip", "addr", "add", f"{self.host}/24", "dev", self.veth)
        sh("ip", "link", "set", self.veth, "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{self.addr}/24", "dev", "eth0")
        sh("ip", "-n", self.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        sh("ip", "-n", self.netns, "route", "add", "default", "via", self.host)
        for addr in self.extra:
            sh("ip", "-n", self.netns, "addr", "add", f"{addr}/32", "dev", "eth0")
            sh("ip", "route", "add", f"{addr}/32", "dev", self.veth, "table", self.table)
        serve = (["-m", "http.server", "--bind", "0.0.0.0", "--directory", str(self.directory)]
                 if self.directory is not None else ["-c", _SERVER])  # fmt: skip
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, *serve, str(HTTP_PORT)],
            start_new_session=True, stderr=subprocess.DEVNULL,
        )
        _wait_tcp(self.addr, HTTP_PORT)
        return self

    def steer(self, veth: str) -> None:
        """Route what arrives on ``veth`` (a sandbox's) for the extra addresses here."""
        subprocess.run(["ip", "rule", "add", "iif", veth, "lookup", self.table], check=True)

    def unsteer(self, veth: str) -> None:
        subprocess.run(["ip", "rule", "del", "iif", veth, "lookup", self.table],
                       capture_output=True)  # fmt: skip

    @contextmanager
    def sink(self, proto: int, port: int) -> Iterator[subprocess.Popen[str]]:
        """A raw listener in the remote's netns (see _SINK), killed afterwards."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", _SINK, str(proto),
             str(port)], stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


def _wait_tcp(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class FakeDns:
    """Answers A queries for ``records`` (name → IPv4) on 127.0.0.1; NXDOMAIN otherwise."""

    def __init__(self, records: dict[str, str], ttl: int = 5) -> None:
        self.records = records
        self.ttl = ttl
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._closing = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _loop(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
                if self._closing:
                    return
                if answer := self._answer(data):  # (b"": none)
                    self.sock.sendto(answer, peer)
            except OSError:
                return

    def _answer(self, q: bytes) -> bytes:
        pos, labels = 12, []
        while q[pos]:
            labels.append(q[pos + 1 : pos + 1 + q[pos]].decode())
            pos += 1 + q[pos]
        qtype = struct.unpack("!H", q[pos + 1 : pos + 3])[0]
        question = q[12 : pos + 5]
        name = ".".join(labels).lower()
        self.queries.append(name)
        ip = self.records.get(name)
        if ip is None:
            return q[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question
        if qtype != 1:
            return q[:2] + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + question
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, self.ttl, 4) + socket.inet_aton(ip)
        return q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + rr

    def close(self) -> None:
        """Stop answering: the thread is woken and ended before the socket is closed
        (with one left blocked on its closed socket, a FakeDns made later in the same
        process was seen to miss queries)."""
        self._closing = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:
            wake.sendto(b"", ("127.0.0.1", self.port))
        self._thread.join(5)
        self.sock.close()


def nft_table() -> str:
    return subprocess.run(["nft", "list", "table", "inet", "cove"], capture_output=True,
                          text=True).stdout  # fmt: skip


def tag_of(data_dir: Path) -> str:
    from cove.runner.host.network import data_tag

    return data_tag(data_dir)
