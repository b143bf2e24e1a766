"""A small DNS forwarder on each sandbox's host-side address (UDP port 53).

Every sandbox's /etc/resolv.conf points at its own host-side address, where
this forwarder listens. A query is forwarded to the host's upstream resolvers
unless the sandbox's policy says otherwise:

* ``block_all``: every query is refused;
* a domain allow-list: names outside it get NXDOMAIN, and the IPv4 addresses
  in an allowed answer are handed to ``on_resolved`` (which adds them to that
  sandbox's nft set) *before* the answer is sent back.

One selector thread receives; a small pool of threads forwards.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cove.core.ports import NetworkPolicy

log = logging.getLogger(__name__)
Resolved = Callable[[list[tuple[str, int]]], None]
FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 1, 2, 3, 4, 5
UPSTREAM_TIMEOUT = 3.0


@dataclass
class _View:
    sock: socket.socket
    policy: NetworkPolicy
    on_resolved: Resolved
    hosts: dict[str, str]  # names answered by Cove itself (a linked sandbox's owner)


class DnsForwarder:
    """Listens for many sandboxes, answers each according to its own policy."""

    def __init__(self, upstreams: list[tuple[str, int]]) -> None:
        self.upstreams = upstreams
        self._sel = selectors.DefaultSelector()
        self._views: dict[str, _View] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="cove-dns")
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._loop, name="cove-dns", daemon=True).start()

    def serve(self, sandbox_id: str, address: str, policy: NetworkPolicy, on: Resolved,
              hosts: dict[str, str] | None = None) -> None:  # fmt: skip
        """Listen on ``address``:53 for the sandbox (or just update its policy); ``hosts``
        (name: IPv4 address) are answered from here, whatever the policy."""
        hosts = {name.lower(): ip for name, ip in (hosts or {}).items()}
        with self._lock:
            view = self._views.get(sandbox_id)
            if view is not None:
                view.policy, view.on_resolved, view.hosts = policy, on, hosts
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND
            sock.bind((address, 53))
            sock.setblocking(False)
            self._views[sandbox_id] = _View(sock, policy, on, hosts)
            self._sel.register(sock, selectors.EVENT_READ, sandbox_id)
        self._wake_w.send(b"x")

    def close(self, sandbox_id: str) -> None:
        with self._lock:
            view = self._views.pop(sandbox_id, None)
            if view is None:
                return
            self._sel.unregister(view.sock)
            view.sock.close()

    def serving(self, sandbox_id: str) -> bool:
        with self._lock:
            return sandbox_id in self._views

    def _loop(self) -> None:
        while True:
            for key, _ in self._sel.select(timeout=1.0):
                if key.data is None:
                    self._wake_r.recv(64)
                    continue
                with self._lock:
                    view = self._views.get(key.data)
                if view is None:
                    continue
                try:
                    data, peer = view.sock.recvfrom(4096)
                except OSError:
                    continue
                self._pool.submit(self._answer, view, data, peer)

    def _answer(self, view: _View, query: bytes, peer: tuple[str, int]) -> None:
        try:
            reply = self.resolve(view.policy, view.on_resolved, query, view.hosts)
        except Exception:  # noqa: BLE001 - one bad query must not stop the forwarder
            log.exception("DNS query failed")
            reply = error_reply(query, SERVFAIL)
        if reply:
            try:
                view.sock.sendto(reply, peer)
            except OSError:
                pass

    def resolve(self, policy: NetworkPolicy, on: Resolved, query: bytes,
                hosts: dict[str, str] | None = None) -> bytes | None:  # fmt: skip
        """The answer to ``query`` under ``policy`` (None: not a query; dropped).

        Only a standard query of one question is answered or forwarded: the policy
        checks that question, and a second one (or an update, a notify) would reach
        the upstream resolver unchecked, and its answer's addresses the allow-list."""
        name = question_name(query)
        if name is None:
            return None
        if (query[2] >> 3) & 0x0F != 0:  # the opcode: not a QUERY
            return error_reply(query, NOTIMP)
        if struct.unpack("!H", query[4:6])[0] != 1:
            return error_reply(query, FORMERR)
        own = (hosts or {}).get(name.lower().rstrip("."))
        if own is not None:
            return host_reply(query, own)
        if policy.block_all:
            return error_reply(query, REFUSED)
        if policy.allow_domains and not allowed(name, policy.allow_domains):
            return error_reply(query, NXDOMAIN)
        answer = self._forward(query)
        if answer is None:
            return error_reply(query, SERVFAIL)
        if policy.allow_domains:
            on([(ip, max(ttl, 60) + 30) for ip, ttl in a_records(answer)])
        return answer

    def _forward(self, query: bytes) -> bytes | None:
        for host, port in self.upstreams:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(UPSTREAM_TIMEOUT)
                try:
                    s.sendto(query, (host, port))
                    while True:
                        data, _ = s.recvfrom(65535)
                        if data[:2] == query[:2]:
                            return data
                except OSError:
                    continue
        return None


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` matches an entry: exact, or ``*.suffix`` for any subdomain."""
    name = name.rstrip(".").lower()
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]):
                return True
        elif name == pattern:
            return True
    return False


def upstreams(
    setting: str | None, resolv_conf: Path = Path("/etc/resolv.conf")
) -> list[tuple[str, int]]:
    """``host[:port],...`` from the setting, else the host's resolv.conf nameservers."""
    if setting:
        entries = [e.strip() for e in setting.split(",") if e.strip()]
    else:
        try:
            lines = resolv_conf.read_text().splitlines()
        except OSError:
            lines = []
        words = [ln.split() for ln in lines]
        entries = [w[1] for w in words if len(w) > 1 and w[0] == "nameserver"]
        entries = [e for e in entries if ":" not in e] or ["127.0.0.53"]
    out = []
    for entry in entries:
        host, _, port = entry.partition(":")
        out.append((host, int(port or 53)))
    return out


# ---- wire format (RFC 1035), only as much as a forwarder needs ----------


def question_name(msg: bytes) -> str | None:
    if len(msg) < 12 or msg[2] & 0x80 or struct.unpack("!H", msg[4:6])[0] < 1:
        return None
    try:
        name, _ = _name(msg, 12)
    except (IndexError, ValueError):
        return None
    return name


def error_reply(query: bytes, rcode: int) -> bytes:
    """``query`` turned into an answer with no records and ``rcode``."""
    end = _question_end(query)
    flags = 0x8000 | (struct.unpack("!H", query[2:4])[0] & 0x0100) | 0x0080 | rcode
    return query[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[12:end]


def host_reply(query: bytes, address: str, ttl: int = 30) -> bytes:
    """The answer to ``query`` for a name of ``address``: its A record (other types:
    no records)."""
    end = _question_end(query)
    qtype = struct.unpack("!H", query[end - 4 : end - 2])[0]
    flags = 0x8400 | (struct.unpack("!H", query[2:4])[0] & 0x0100) | 0x0080
    count = 1 if qtype == 1 else 0
    reply = query[:2] + struct.pack("!HHHHH", flags, 1, count, 0, 0) + query[12:end]
    if count:
        reply += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(address)
    return reply


def a_records(msg: bytes) -> list[tuple[str, int]]:
    """IPv4 addresses and TTLs in the answer section."""
    qd, an = struct.unpack("!HH", msg[4:8])
    pos = 12
    for _ in range(qd):
        _, pos = _name(msg, pos)
        pos += 4
    out = []
    for _ in range(an):
        _, pos = _name(msg, pos)
        rtype, _cls, ttl, size = struct.unpack("!HHIH", msg[pos : pos + 10])
        pos += 10
        if rtype == 1 and size == 4:
            out.append((socket.inet_ntoa(msg[pos : pos + 4]), ttl))
        pos += size
    return out


def _question_end(msg: bytes) -> int:
    _, pos = _name(msg, 12)
    return pos + 4


def _name(msg: bytes, pos: int) -> tuple[str, int]:
    labels: list[str] = []
    end = None
    for _ in range(128):
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length == 0:
            return ".".join(labels), end if end is not None else pos + 1
        labels.append(msg[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    raise ValueError("name too long")
