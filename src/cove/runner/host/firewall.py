"""Cove's nftables rules: one table (``inet cove``), kernel-kept across server restarts.

Base chains (shared by every sandbox and every Cove server on the host, rewritten
idempotently; they must stay the same in every version)::

    forward      iifname vmap @egress      each sandbox veth jumps to its eg_<key> chain
                 iifname "cv*" drop        a veth we do not know
                 oifname "cv*" established,related accept, else drop (nothing dials in)
    input        iifname vmap @ingress     each sandbox veth jumps to its in_<key> chain
                 iifname "cv*" drop
    postrouting  ip saddr @masq oifname != "cv*" masquerade

Per server (``<t>`` is its data dir tag; comment ``"<tag>"``, rewritten with every
sandbox's rules, removed with the server's last sandbox)::

    block_<t>  the ranges no sandbox may reach (validation.blocked_ranges)

Per sandbox (``<key>`` is its veth suffix; every chain and set carries the
comment ``"<tag> <sandbox id>"`` so leftovers can be found after a crash)::

    eg_<key>   source is not the sandbox's address: drop (anti-spoofing); IPv6 drop;
               replies (to a linked sandbox) accept; established with the policy's
               mark (see policy_mark) accept, else checked again below;
               invalid (untracked, so never NATed) drop;
               to its linked owner (its address through its veth) accept;
               to another sandbox drop;
               to @block_<t> drop;
               a new connection past the cap (@conn_<key>): reject;
               then the policy: accept all | drop all | @cidr_<key> / @dns_<key> accept, drop
               (each accept marks the connection with the policy's mark)
    in_<key>   anti-spoofing; established accept; DNS to its own host-side address
               (within the cap) accept when a socket bound to that address takes it
               (Cove's forwarder: not one bound to every address of the host, which
               would answer whatever the policy while the forwarder is down); drop
    cidr_<key> the networkAllowList ranges
    dns_<key>  addresses Cove's DNS forwarder resolved for that sandbox's allowed
               names, each with a timeout at least as long as its record's TTL
    (a linked owner's replies come back as established traffic of the owner's
    chain; the owner cannot dial in)
    conn_<key> the sandbox's tracked connections (``ct count``), shared by both chains
               and never flushed, so changing the policy does not reset the count
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cove.core.ports import NetworkPolicy
from cove.errors import RuntimeBackendError
from cove.runner.host.proc import run

TABLE = "inet cove"
VETH_PREFIX = "cv"
LOCK = "/run/cove-nft.lock"

_BASE = f"""
add table {TABLE}
add chain {TABLE} forward {{ type filter hook forward priority -1 ; policy accept ; }}
add chain {TABLE} input {{ type filter hook input priority -1 ; policy accept ; }}
add chain {TABLE} postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}
add map {TABLE} egress {{ type ifname : verdict ; }}
add map {TABLE} ingress {{ type ifname : verdict ; }}
add set {TABLE} masq {{ type ipv4_addr ; }}
flush chain {TABLE} forward
flush chain {TABLE} input
flush chain {TABLE} postrouting
add rule {TABLE} forward iifname vmap @egress
add rule {TABLE} forward iifname "{VETH_PREFIX}*" drop
add rule {TABLE} forward oifname "{VETH_PREFIX}*" ct state established,related accept
add rule {TABLE} forward oifname "{VETH_PREFIX}*" drop
add rule {TABLE} input iifname vmap @ingress
add rule {TABLE} input iifname "{VETH_PREFIX}*" drop
add rule {TABLE} postrouting ip saddr @masq oifname != "{VETH_PREFIX}*" masquerade
"""


@dataclass(frozen=True)
class Link:
    """The host's view of one sandbox's connection."""

    sandbox_id: str
    tag: str  # identifies the server's data dir in comments
    key: str  # veth name suffix, unique per sandbox
    host: str  # host-side address (gateway and DNS server of the sandbox)
    guest: str  # the sandbox's address

    @property
    def veth(self) -> str:
        return VETH_PREFIX + self.key

    @property
    def dns_set(self) -> str:
        return f"dns_{self.key}"

    @property
    def comment(self) -> str:
        return f"{self.tag} {self.sandbox_id}"


@dataclass(frozen=True)
class Egress:
    """What a server allows every one of its sandboxes, whatever their policy."""

    blocked: tuple[str, ...]  # IPv4 ranges no sandbox may reach
    max_connections: int  # concurrent tracked connections per sandbox


def block_set(tag: str) -> str:
    """Name of the server's set of blocked ranges."""
    return "block_" + tag.replace("-", "_")


@contextmanager
def _host_lock() -> Iterator[None]:
    """Serialize changes to the shared table between every Cove server on the host
    (the last sandbox's removal deletes the table)."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


Peer = tuple[str, str]  # a linked owner's (address, host-side veth name)


def apply(link: Link, policy: NetworkPolicy, egress: Egress, peers: tuple[Peer, ...] = (), *,
          forget: bool = False, mark: int | None = None) -> None:  # fmt: skip
    """Install (or atomically replace) the rules of one sandbox; it may open connections
    to ``peers`` (its linked owner: that address through that veth only). ``forget``
    empties its set of resolved addresses (else kept while it has an allowed name);
    ``mark``: the connection mark (default: ``policy_mark``).

    Raises:
        RuntimeBackendError: nft refused them.
    """
    _APPLIES.submit(script(link, policy, egress, peers, forget=forget, mark=mark))


class _GroupCommit:
    """Installs the scripts of concurrent ``apply`` calls together: each ``nft`` run
    first reads every chain and set of the table (a cost that grows with the host's
    sandboxes: 16 ms at 250 sandboxes, 52 ms at 1,000 on an idle 2-core host), so
    the scripts that arrive while one run holds the lock go together in the next
    run, in one transaction (when nft refuses it, each script alone: a script nft
    refuses fails alone, the others are installed). Removals are batched the same
    way (:func:`_install_removals`)."""

    def __init__(self, install: Callable[[list[tuple[Any, Future[None]]]], None]) -> None:
        self._install = install  # runs a batch, settling each item's future
        self._queue = threading.Lock()  # guards _pending
        self._turn = threading.Lock()  # one run at a time (in this process)
        self._pending: list[tuple[Any, Future[None]]] = []

    def submit(self, item: object) -> None:
        done: Future[None] = Future()
        with self._queue:
            self._pending.append((item, done))
        with self._turn:
            if not done.done():  # else the run before this turn installed it
                with self._queue:
                    batch, self._pending = self._pending, []
                try:
                    with _host_lock():
                        self._install(batch)
                except BaseException as exc:  # handed to every waiter of the batch
                    for _text, waiting in batch:
                        if not waiting.done():
                            waiting.set_exception(exc)
        done.result()


def _install(batch: list[tuple[str, Future[None]]]) -> None:
    """One ``nft -f`` of every script; when nft refuses it, each script on its own."""
    if len(batch) > 1:
        joined = _BASE + "".join(text.removeprefix(_BASE) for text, _done in batch)
        if run(["nft", "-f", "-"], input=joined.encode(), check=False).returncode == 0:
            for _text, done in batch:
                done.set_result(None)
            return
    for text, done in batch:
        try:
            run(["nft", "-f", "-"], input=text.encode())
            done.set_result(None)
        except RuntimeBackendError as exc:
            done.set_exception(exc)


_APPLIES = _GroupCommit(_install)


def script(link: Link, policy: NetworkPolicy, egress: Egress, peers: tuple[Peer, ...] = (), *,
           forget: bool = False, mark: int | None = None) -> str:  # fmt: skip
    """The nft script that installs ``link``'s rules for ``policy`` in one transaction
    (``forget``, ``mark``: see ``apply``)."""
    k, c = link.key, f'comment "{link.comment}"'
    block, intervals = block_set(link.tag), "type ipv4_addr ; flags interval ; auto-merge"
    lines = [
        _BASE,
        f'add set {TABLE} {block} {{ {intervals} ; comment "{link.tag}" ; }}',
        f"flush set {TABLE} {block}",
        f"add chain {TABLE} eg_{k} {{ {c} ; }}",
        f"add chain {TABLE} in_{k} {{ {c} ; }}",
        f"add set {TABLE} cidr_{k} {{ {intervals} ; {c} ; }}",
        f"add set {TABLE} dns_{k} {{ type ipv4_addr ; flags timeout ; {c} ; }}",
        f"add set {TABLE} conn_{k} {{ type ipv4_addr ; size 16 ; flags dynamic ; {c} ; }}",
        f"flush chain {TABLE} eg_{k}",
        f"flush chain {TABLE} in_{k}",
        f"flush set {TABLE} cidr_{k}",
    ]
    if egress.blocked:
        lines.append(f"add element {TABLE} {block} {{ {', '.join(egress.blocked)} }}")
    cidrs = [c for c in policy.allow_cidrs if ":" not in c]
    if cidrs:
        lines.append(f"add element {TABLE} cidr_{k} {{ {', '.join(cidrs)} }}")
    if forget or not policy.allow_domains:
        lines.append(f"flush set {TABLE} dns_{k}")
    lines += _rules(link, policy, egress, peers, mark or policy_mark(policy, egress, peers))
    lines += [
        f'add element {TABLE} egress {{ "{link.veth}" : jump eg_{k} }}',
        f'add element {TABLE} ingress {{ "{link.veth}" : jump in_{k} }}',
        f"add element {TABLE} masq {{ {link.guest} {c} }}",
    ]
    return "\n".join(lines) + "\n"


def _rules(link: Link, policy: NetworkPolicy, egress: Egress, peers: tuple[Peer, ...],
           mark: int) -> list[str]:  # fmt: skip
    """The rules of the sandbox's two chains: the server's limits, then its policy."""
    k = link.key
    eg, in_ = f"add rule {TABLE} eg_{k}", f"add rule {TABLE} in_{k}"
    cap = f"ct state new add @conn_{k} {{ ip saddr ct count over {egress.max_connections} }}"
    dns = f"ip daddr {link.host} udp dport 53"
    accept = f"ct mark set {mark} accept"
    return [
        f"{eg} ip saddr != {link.guest} drop",
        f"{eg} meta nfproto ipv6 drop",
        f"{eg} ct state established,related ct direction reply accept",  # (to a linked one)
        f"{eg} ct state established,related ct mark {mark} accept",
        f"{eg} ct state invalid drop",  # untracked: would leave un-NATed
        *(f'{eg} ip daddr {ip} oifname "{veth}" {accept}' for ip, veth in peers),  # its owner
        f'{eg} oifname "{VETH_PREFIX}*" drop',
        f"{eg} ip daddr @{block_set(link.tag)} drop",
        f"{eg} {cap} reject",
        *_verdicts(eg, k, policy, accept),
        f"{in_} ip saddr != {link.guest} drop",
        f"{in_} ct state established,related accept",
        f"{in_} {dns} {cap} reject",
        f"{in_} {dns} socket wildcard 0 accept",  # Cove's forwarder, not a host's server
        f"{in_} drop",
    ]


def _verdicts(eg: str, k: str, policy: NetworkPolicy, accept: str) -> list[str]:
    if policy.block_all:
        return [f"{eg} drop"]
    if not policy.restricted:
        return [f"{eg} {accept}"]
    rules = []
    if policy.allow_cidrs:
        rules.append(f"{eg} ip daddr @cidr_{k} {accept}")
    if policy.allow_domains:
        rules.append(f"{eg} ip daddr @dns_{k} {accept}")
    return [*rules, f"{eg} drop"]


def policy_mark(policy: NetworkPolicy, egress: Egress, peers: tuple[Peer, ...]) -> int:
    """The conntrack mark of the connections ``policy`` let out (never 0, the mark of a
    connection no rule marked). A connection's packets pass at once while it carries
    the mark of the rules in place; one opened under other rules (a policy since
    narrowed: block-all set on a sandbox holding a connection to its own server) is
    checked again, packet by packet, and marked anew if they still let it out. The same
    policy gives the same mark (a restart re-applying it cuts nothing), and a name of an
    allow-list whose addresses expired from the set does not cut what it opened. (Another
    program of the host marking these connections would only have them checked again.)"""
    what = repr((policy.block_all, policy.allow_cidrs, policy.allow_domains, egress.blocked,
                 peers)).encode()  # fmt: skip
    return int.from_bytes(hashlib.sha256(what).digest()[:4], "big") or 1


def widens(policy: NetworkPolicy, before: NetworkPolicy) -> bool:
    """Whether ``policy`` lets out everything ``before`` did (judged by its entries: a
    CIDR list counts as wider only when it keeps every entry)."""
    if policy.peers != before.peers:
        return False
    if before.block_all or not policy.restricted:
        return True
    if policy.block_all or not before.restricted:
        return False
    return (set(before.allow_cidrs) <= set(policy.allow_cidrs)
            and set(before.allow_domains) <= set(policy.allow_domains))  # fmt: skip


def allow_addresses(link: Link, addresses: list[tuple[str, int]]) -> None:
    """Let the sandbox reach ``addresses`` (IPv4, timeout in seconds) until they expire."""
    if not addresses:
        return
    elements = ", ".join(f"{ip} timeout {ttl}s" for ip, ttl in addresses)
    # "add" keeps an existing element's timeout; delete-then-add refreshes it.
    cmd = f"add element {TABLE} {link.dns_set} {{ {elements} }}\n"
    run(["nft", "-f", "-"], input=cmd.encode())


def remove(sandbox_id: str, tag: str, link: Link | None = None) -> None:
    """Remove every rule, set and chain of the sandbox; the table too once it is empty.

    With its ``link``, by name, without listing the table (which grows with every
    sandbox of the host; concurrent removals go in one nft run, see
    :class:`_GroupCommit`); else, or when that finds something missing (a crash
    between two steps), by listing the table.
    """
    if link is None:
        with _host_lock():
            _remove(sandbox_id, tag)
    else:
        _REMOVALS.submit(link)


def _removal_script(link: Link) -> str:
    """The nft commands deleting ``link``'s objects by name."""
    k = link.key
    cmds = [f'delete element {TABLE} egress {{ "{link.veth}" }}',
            f'delete element {TABLE} ingress {{ "{link.veth}" }}',
            f"delete element {TABLE} masq {{ {link.guest} }}",
            f"delete chain {TABLE} eg_{k}", f"delete chain {TABLE} in_{k}",
            *(f"delete set {TABLE} {s}_{k}" for s in ("cidr", "dns", "conn"))]  # fmt: skip
    return "\n".join(cmds) + "\n"


def _install_removals(batch: list[tuple[Link, Future[None]]]) -> None:
    """Delete the objects of every link in one nft run; when nft refuses it (one of
    them misses something), each link alone, by listing the table if need be. Then
    the table once it is empty, and a server's shared set once it has no sandbox."""
    joined = "".join(_removal_script(link) for link, _done in batch)
    together = run(["nft", "-f", "-"], input=joined.encode(), check=False).returncode == 0
    for link, done in batch:
        try:
            if not together and run(["nft", "-f", "-"], input=_removal_script(link).encode(),
                                    check=False).returncode:  # fmt: skip
                _remove(link.sandbox_id, link.tag)
            done.set_result(None)
        except RuntimeBackendError as exc:
            done.set_exception(exc)
    owners = _masq_comments()
    if owners is not None and not owners:
        run(["nft", "delete", "table", *TABLE.split()], check=False)
    elif owners is not None:
        for tag in {link.tag for link, _done in batch}:
            if not any(o.startswith(tag + " ") for o in owners):
                run(["nft", "delete", "set", *TABLE.split(), block_set(tag)], check=False)


def _masq_comments() -> list[str] | None:
    """The comments (``"<tag> <sandbox id>"``) of every sandbox address of the table's
    ``masq`` set: one per sandbox with rules, of any server (None: no table)."""
    done = run(["nft", "-j", "list", "set", *TABLE.split(), "masq"], check=False)
    if done.returncode != 0:
        return None
    found = []
    for item in json.loads(done.stdout).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            inner = elem.get("elem", {}) if isinstance(elem, dict) else {}
            found.append(str(inner.get("comment", "")))
    return found


def _remove(sandbox_id: str, tag: str) -> None:
    table = _table()
    if table is None:
        return
    comment = f"{tag} {sandbox_id}"
    others = {o["comment"] for o in table if o["kind"] == "set"
              and " " in o.get("comment", "")} - {comment}  # fmt: skip
    cmds = _removal(table, comment) if others else [f"delete table {TABLE}"]
    if cmds:
        run(["nft", "-f", "-"], input=("\n".join(cmds) + "\n").encode())
    if others and not any(o.startswith(tag + " ") for o in others):
        # the server's last sandbox: its shared set goes too (best effort: a leftover
        # is harmless and goes with the next removal)
        for obj in table:
            if obj["kind"] == "set" and obj.get("comment") == tag:
                run(["nft", "delete", "set", *TABLE.split(), obj["name"]], check=False)


def _removal(table: list[dict], comment: str) -> list[str]:
    """Commands deleting the chains, sets and map elements of the sandbox."""
    # (nft 1.0.6 does not show chain comments in JSON: sets identify the sandbox)
    sets = [o["name"] for o in table if o["kind"] == "set" and o.get("comment") == comment]
    keys = {name.split("_", 1)[1] for name in sets}
    names = {o["name"] for o in table if o["kind"] == "chain"}
    chains = [f"{p}_{k}" for k in sorted(keys) for p in ("eg", "in") if f"{p}_{k}" in names]
    cmds = []
    for key in keys:
        veth = VETH_PREFIX + key
        for mapname in ("egress", "ingress"):
            if _has_element(table, mapname, veth):
                cmds.append(f'delete element {TABLE} {mapname} {{ "{veth}" }}')
    for addr in _masq_for(table, comment):
        cmds.append(f"delete element {TABLE} masq {{ {addr} }}")
    cmds += [f"delete chain {TABLE} {c}" for c in chains]
    return cmds + [f"delete set {TABLE} {s}" for s in sets]


def owned(tag: str) -> dict[str, str]:
    """Sandbox ids with rules from the server whose data dir has ``tag``, by chain name."""
    out = {}
    for obj in _table() or []:
        comment = obj.get("comment") or ""
        if obj.get("kind") == "set" and comment.startswith(tag + " "):
            out[obj["name"]] = comment.split(" ", 1)[1]
    return out


def _table() -> list[dict] | None:
    done = run(["nft", "-j", "list", "table", *TABLE.split()], check=False)
    if done.returncode != 0:
        return None
    objs = []
    for item in json.loads(done.stdout).get("nftables", []):
        for kind in ("chain", "set", "map"):
            if kind in item:
                objs.append({"kind": kind, **item[kind]})
    return objs


def _has_element(table: list[dict], mapname: str, veth: str) -> bool:
    for obj in table:
        if obj["kind"] == "map" and obj["name"] == mapname:
            return any(isinstance(e, list) and e[0] == veth for e in obj.get("elem", []))
    return False


def _masq_for(table: list[dict], comment: str) -> list[str]:
    found = []
    for obj in table:
        if obj["kind"] == "set" and obj["name"] == "masq":
            for elem in obj.get("elem", []):
                inner = elem.get("elem", {}) if isinstance(elem, dict) else {}
                if inner.get("comment") == comment:
                    found.append(str(inner["val"]))
    return found


_REMOVALS = _GroupCommit(_install_removals)
