"""A small DNS forwarder on each sandbox's host-side address (UDP port 53).

Every sandbox's /etc/resolv.conf points at its own host-side address, where
this forwarder listens. A query is forwarded to the host's upstream resolvers
unless the sandbox's policy says otherwise:

* ``block_all``: every query is refused;
* a domain allow-list: names outside it get NXDOMAIN, and the IPv4 addresses
  in an allowed answer are handed to ``on_resolved`` (which adds them to that
  sandbox's nft set) *before* the answer is sent back.

An answer is checked again against the policy in force when it comes back (a query
forwarded before the sandbox got an allow-list without its name opens nothing).

One thread receives, decides and forwards (never waiting on an upstream); a
small pool updates allow-lists.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cove.core.ports import NetworkPolicy

log = logging.getLogger(__name__)
Resolved = Callable[[list[tuple[str, int]]], None]
FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 1, 2, 3, 4, 5
UPSTREAM_TIMEOUT = 3.0


FORWARD = object()  # a query the policy lets through to the upstream resolvers
# Queries of one sandbox waiting on the upstream (or on its allow-list's update) at
# once, and of all sandboxes: more are dropped (the sandbox's resolver asks again).
# (Each holds a socket; an answer usually comes within milliseconds.)
SANDBOX_IN_FLIGHT = 32
IN_FLIGHT = 1024
BURST = 64  # queries taken from one sandbox's socket per turn of the loop


@dataclass(eq=False)
class _View:
    sock: socket.socket
    policy: NetworkPolicy
    on_resolved: Resolved
    hosts: dict[str, str]  # names answered by Cove itself (a linked sandbox's owner)
    in_flight: int = 0


@dataclass(eq=False)
class _Pending:
    """A query forwarded to ``upstream``, its answer awaited on ``sock`` until ``deadline``."""

    view: _View
    query: bytes
    peer: tuple[str, int]
    upstream: int
    sock: socket.socket
    deadline: float


class DnsForwarder:
    """Listens for many sandboxes, answers each according to its own policy.

    One thread runs everything but the allow-lists' updates: it receives the
    sandboxes' queries, answers those the policy decides at once, and forwards
    the rest without waiting for the upstream (each on a socket of its own,
    connected to the upstream, so no other host can answer it), so one sandbox's
    slow names hold up no other sandbox's. The addresses of an answer under an
    allow-list go to a small pool that updates the sandbox's nft set, then sends
    the answer. Each sandbox has at most SANDBOX_IN_FLIGHT queries under way, and all
    of them at most IN_FLIGHT: past that, a new query takes the place of the oldest of
    the sandbox with the most (see ``_make_room``), so that a few sandboxes flooding
    keep no other from being answered."""

    def __init__(self, upstreams: list[tuple[str, int]]) -> None:
        self.upstreams = upstreams
        self._sel = selectors.DefaultSelector()
        self._views: dict[str, _View] = {}
        self._pending: dict[socket.socket, _Pending] = {}  # (the loop thread's own)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._allow = ThreadPoolExecutor(2, thread_name_prefix="cove-dns-allow")
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="cove-dns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving every sandbox, and the forwarder's threads."""
        self._stopping = True
        self._wake_w.send(b"x")
        self._thread.join()
        self._allow.shutdown()
        for sandbox_id in list(self._views):
            self.close(sandbox_id)
        for pending in list(self._pending.values()):
            self._drop(pending)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

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
        """Stop listening for the sandbox (its queries under way are let go)."""
        with self._lock:
            view = self._views.pop(sandbox_id, None)
            if view is None:
                return
            self._sel.unregister(view.sock)
            view.sock.close()

    def policy(self, sandbox_id: str) -> NetworkPolicy | None:
        """The policy the sandbox's queries are answered under (None: not served)."""
        with self._lock:
            view = self._views.get(sandbox_id)
            return view.policy if view is not None else None

    def serving(self, sandbox_id: str) -> bool:
        with self._lock:
            return sandbox_id in self._views

    def in_flight(self, sandbox_id: str) -> int:
        """The sandbox's queries under way."""
        with self._lock:
            view = self._views.get(sandbox_id)
            return view.in_flight if view is not None else 0

    def _loop(self) -> None:
        while not self._stopping:
            first = next(iter(self._pending.values()), None)  # the first due (see _expire)
            wait = 1.0 if first is None else max(0.0, first.deadline - time.monotonic())
            for key, _ in self._sel.select(timeout=min(wait, 1.0)):
                if key.data is None:
                    self._wake_r.recv(64)
                elif isinstance(key.data, _Pending):
                    if self._pending.get(key.data.sock) is key.data:  # (not let go just now)
                        self._upstream_answer(key.data)
                else:
                    self._queries(key.data)
            self._expire()

    def _queries(self, sandbox_id: str) -> None:
        with self._lock:
            view = self._views.get(sandbox_id)
        if view is None:
            return
        for _ in range(BURST):
            try:
                query, peer = view.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = decide(view.policy, query, view.hosts)
            except Exception:  # noqa: BLE001 - one bad query must not stop the forwarder
                log.exception("DNS query failed")
                reply = None
            if reply is FORWARD:
                self._forward(view, query, peer)
            elif isinstance(reply, bytes):
                _send(view, reply, peer)

    def _forward(self, view: _View, query: bytes, peer: tuple[str, int],
                 upstream: int = 0) -> None:  # fmt: skip
        """Send ``query`` to the upstream resolver ``upstream`` (or, past the last one,
        answer SERVFAIL); a query over the sandbox's or the forwarder's bound is dropped."""
        if upstream == 0:
            with self._lock:
                if view.in_flight >= SANDBOX_IN_FLIGHT:
                    return
                if self._in_flight >= IN_FLIGHT and not self._make_room(view):
                    return
                view.in_flight += 1
                self._in_flight += 1
        while upstream < len(self.upstreams):
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError:  # (out of descriptors)
                break
            try:
                sock.setblocking(False)
                sock.connect(self.upstreams[upstream])  # (its answers only)
                sock.send(query)
            except OSError:
                sock.close()
                upstream += 1
                continue
            pending = _Pending(view, query, peer, upstream, sock,
                               time.monotonic() + UPSTREAM_TIMEOUT)  # fmt: skip
            self._pending[sock] = pending
            self._sel.register(sock, selectors.EVENT_READ, pending)
            return
        self._done(view, error_reply(query, SERVFAIL), peer)

    def _make_room(self, view: _View) -> bool:
        """(Under the lock, the forwarder's bound reached.) Let go the oldest query of
        the sandbox with the most under way, if it has more than ``view`` would with
        this one: sandboxes flooding with names no upstream answers share the bound
        with the others rather than hold it (its resolver asks again)."""
        heaviest = max(self._views.values(), key=lambda other: other.in_flight, default=view)
        if heaviest.in_flight <= view.in_flight + 1:
            return False
        oldest = next((p for p in self._pending.values() if p.view is heaviest), None)
        if oldest is None:  # (all its queries are with the allow-list's pool)
            return False
        self._drop(oldest)
        heaviest.in_flight -= 1
        self._in_flight -= 1
        return True

    def _upstream_answer(self, pending: _Pending) -> None:
        try:
            answer = pending.sock.recv(65535)
        except OSError:  # (refused: nothing listens there) the next upstream
            self._drop(pending)
            self._forward(pending.view, pending.query, pending.peer, pending.upstream + 1)
            return
        if answer[:2] != pending.query[:2]:
            return  # not its answer: wait on
        self._drop(pending)
        view = pending.view
        now = decide(view.policy, pending.query, view.hosts)  # (its policy may have changed)
        if now is not FORWARD:  # its name is no longer let through: nor its addresses
            refused = error_reply(pending.query, REFUSED)
            self._done(view, now if isinstance(now, bytes) else refused, pending.peer)
            return
        if not pending.view.policy.allow_domains:
            self._done(pending.view, answer, pending.peer)
            return
        try:
            found = [(ip, max(ttl, 60) + 30) for ip, ttl in a_records(answer)]
        except (IndexError, ValueError, struct.error):  # (an answer it cannot read)
            self._done(pending.view, error_reply(pending.query, SERVFAIL), pending.peer)
            return
        if not found:
            self._done(pending.view, answer, pending.peer)
            return
        self._allow.submit(self._allow_then_answer, pending, found, answer)

    def _allow_then_answer(self, pending: _Pending, found: list[tuple[str, int]],
                           answer: bytes) -> None:  # fmt: skip
        """(The pool.) The answer's addresses into the sandbox's allow-list, then the
        answer: the sandbox's first connection to them finds them allowed."""
        try:
            pending.view.on_resolved(found)
        except Exception:  # noqa: BLE001 - the sandbox gets no answer it cannot use
            log.exception("the addresses of a DNS answer were not allowed")
            answer = error_reply(pending.query, SERVFAIL)
        self._done(pending.view, answer, pending.peer)

    def _expire(self) -> None:
        """Ask the next upstream what the last one did not answer in time. (Deadlines
        are kept in the order queries were sent: each is that moment + a constant.)"""
        now = time.monotonic()
        while (first := next(iter(self._pending.values()), None)) and first.deadline <= now:
            self._drop(first)
            self._forward(first.view, first.query, first.peer, first.upstream + 1)

    def _drop(self, pending: _Pending) -> None:
        del self._pending[pending.sock]
        self._sel.unregister(pending.sock)
        pending.sock.close()

    def _done(self, view: _View, reply: bytes, peer: tuple[str, int]) -> None:
        with self._lock:
            view.in_flight -= 1
            self._in_flight -= 1
        _send(view, reply, peer)


def _send(view: _View, reply: bytes, peer: tuple[str, int]) -> None:
    try:
        view.sock.sendto(reply, peer)
    except OSError:
        pass  # (closed: the sandbox is gone)


def decide(policy: NetworkPolicy, query: bytes, hosts: dict[str, str] | None = None,
           ) -> bytes | object | None:  # fmt: skip
    """What ``query`` gets under ``policy``: an answer now, FORWARD (to the upstream
    resolvers), or None (not a query: dropped).

    Only a standard query of one question is answered or forwarded: the policy checks
    that question, and a second one (or an update, a notify) would reach the upstream
    resolver unchecked, and its answer's addresses the allow-list."""
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
    return FORWARD


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
    """The first question's name of a query (None: not a query, or cut short)."""
    if len(msg) < 12 or msg[2] & 0x80 or struct.unpack("!H", msg[4:6])[0] < 1:
        return None
    try:
        name, end = _name(msg, 12)
    except (IndexError, ValueError):
        return None
    return name if end + 4 <= len(msg) else None


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
