"""Each sandbox's own network: a persistent netns, a veth pair to the host, NAT, DNS.

Layout (IPv4 only; the pool is ``Settings.network_pool``, split into /31 pairs)::

    host   cv<key>  <host addr>/31   <-- veth -->   eth0  <guest addr>/31   sandbox netns
                                                     default via <host addr>
                                                     resolv.conf: nameserver <host addr>

The netns is a bind-mounted nsfs file, ``<sandbox dir>/netns``, that crun joins
(``linux.namespaces[{type: network, path}]``). The address pair is leased once
(``<sandbox dir>/net.json``) and kept until the sandbox is destroyed. The
network exists while the sandbox runs: ``down`` (on stop) removes the netns
(the veth pair goes with it), the nft rules and the DNS listener; ``up`` brings
all back. Rules and interfaces are kernel state, so they outlive a crash of
the server; ``up``/``apply`` on a running sandbox re-attach the DNS forwarder.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import os
import threading
from pathlib import Path

from cove.core.config import Settings
from cove.core.ports import NetworkPolicy
from cove.core.validation import blocked_ranges
from cove.errors import RuntimeBackendError
from cove.runner.host import firewall, mounts
from cove.runner.host.dns import DnsForwarder, upstreams
from cove.runner.host.firewall import Egress, Link
from cove.runner.host.proc import run
from cove.runner.layout import SandboxPaths, remove_file, sandboxes_dir

LEASE = "net.json"
RULES = "firewall"  # "on" while the sandbox's nft rules may exist, "off" once removed
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
IPV4_CONF = Path("/proc/sys/net/ipv4/conf")


def data_tag(data_dir: Path) -> str:
    """Short id of a server's data dir, written into every nft comment of its sandboxes."""
    return "cove-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]


class Network:
    """Sets up and tears down sandbox networks for one server (one data dir)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool = ipaddress.ip_network(settings.network_pool)
        self.tag = data_tag(settings.data_dir)
        self._alloc = threading.Lock()
        self._taken: set[int] | None = None  # leased indexes (a superset, see lease)
        self._dns: DnsForwarder | None = None
        self._marks: dict[str, int] = {}  # each running sandbox's connection mark
        blocked = tuple(str(net) for net in blocked_ranges(settings))
        self._egress = Egress(blocked=blocked, max_connections=settings.max_connections)

    @property
    def dns(self) -> DnsForwarder:
        with self._alloc:
            if self._dns is None:
                self._dns = DnsForwarder(upstreams(self._settings.dns_upstream))
            return self._dns

    def netns_path(self, paths: SandboxPaths) -> Path:
        return paths.netns

    def link(self, paths: SandboxPaths) -> Link | None:
        """The sandbox's lease, or None when it never had one."""
        try:
            index = int(json.loads((paths.root / LEASE).read_text())["index"])
        except (OSError, ValueError, KeyError):
            return None
        return self._link(paths.root.name, index)

    def up(self, paths: SandboxPaths, policy: NetworkPolicy, *, fresh: bool) -> Path:
        """Wire the sandbox's network namespace (made by ``runner/host/rootfs.py``; ``fresh``
        when just made) and make sure its veth, rules and DNS exist; returns the netns file."""
        link = self.lease(paths)
        netns = self.netns_path(paths)
        # Its /proc/sys/net entry, not /sys/class/net: in this process's network namespace
        # (a runner in a namespace of its own may see another one's /sys).
        veth = IPV4_CONF / link.veth
        if fresh or not veth.exists():
            if veth.exists():
                run(["ip", "link", "del", link.veth])  # a leftover wired to an old netns
            self._wire(link, netns)
        if IP_FORWARD.read_text().strip() != "1":
            IP_FORWARD.write_text("1\n")
        (paths.root / RULES).write_text("on\n")  # (before: a crash may leave some)
        self.apply(paths.root.name, link, policy)
        return netns

    def apply(self, sandbox_id: str, link: Link, policy: NetworkPolicy) -> None:
        """Install the rules for ``policy`` (under the server's egress limits), turn on
        strict reverse-path filtering on the veth and (re)attach the DNS forwarder.

        The addresses its allowed names resolved to are forgotten when a name it served
        them for is no longer allowed (they would stay open for their TTL). A policy that
        lets out all the one before it did keeps that one's connection mark (see
        ``firewall.policy_mark``): a name added to the list does not have the connections
        already open checked again (one whose name's addresses expired would be cut)."""
        peers = self._peers(policy)
        hosts = {name: peer.guest for name, peer in peers.items()}
        owners = tuple((peer.guest, peer.veth) for peer in peers.values())
        before = self.dns.policy(sandbox_id)
        forget = before is not None and not set(before.allow_domains) <= set(policy.allow_domains)
        kept = self._marks.get(sandbox_id) if before and firewall.widens(policy, before) else None
        mark = kept or firewall.policy_mark(policy, self._egress, owners)
        firewall.apply(link, policy, self._egress, owners, forget=forget, mark=mark)
        self._marks[sandbox_id] = mark
        strict_rp_filter(link.veth)
        self.dns.serve(
            sandbox_id, link.host, policy, lambda found: firewall.allow_addresses(link, found),
            hosts,
        )

    def _peers(self, policy: NetworkPolicy) -> dict[str, Link]:
        """The addresses of the sandboxes ``policy`` links to, by name (leased ones only:
        a peer's address is kept from its first start until it is deleted)."""
        found = {}
        for name, peer_id in policy.peers:
            peer = self.link(SandboxPaths.of(self._settings.data_dir, peer_id))
            if peer is not None:
                found[name] = peer
        return found

    def down(self, paths: SandboxPaths) -> None:
        """Remove the DNS listener, rules, veth and netns of the sandbox (idempotent)."""
        sandbox_id = paths.root.name
        self._marks.pop(sandbox_id, None)
        if self._dns is not None:
            self._dns.close(sandbox_id)
        self._remove_rules(paths)
        veth = self._link(sandbox_id, 0).veth  # named from the id: found even without a lease
        if (IPV4_CONF / veth).exists():
            run(["ip", "link", "del", veth], check=False)
        netns = self.netns_path(paths)
        mounts.unmount(netns)
        remove_file(netns)

    def _remove_rules(self, paths: SandboxPaths) -> None:
        """Remove the sandbox's nft rules: by name when it knows they were installed
        (``RULES`` says "on"), not at all when it knows they are gone ("off"); else
        (a sandbox started by an older version) by listing the table."""
        marker = paths.root / RULES
        try:
            state = marker.read_text().strip()
        except OSError:
            state = ""
        if state == "off":
            return
        firewall.remove(paths.root.name, self.tag, self.link(paths) if state == "on" else None)
        if state:
            marker.write_text("off\n")

    def _wire(self, link: Link, netns: Path) -> None:
        host = f"{link.host}/31"
        alias = f"{link.tag}:{link.sandbox_id}"
        add = f"link add {link.veth} type veth peer name eth0 netns"
        batch = (f"addr add {host} dev {link.veth}\nlink set {link.veth} alias {alias}\n"
                 f"link set {link.veth} up\n")  # fmt: skip
        if any(c in str(netns) for c in '"\\\n'):  # a path one `ip -batch` line cannot hold
            run(["ip", *add.split(), str(netns)])
        else:  # one `ip` for the host's side
            batch = f'{add} "{netns}"\n{batch}'
        run(["ip", "-batch", "-"], input=batch.encode())
        inside = (f"link set lo up\naddr add {link.guest}/31 dev eth0\nlink set eth0 up\n"
                  f"route add default via {link.host}\n")  # fmt: skip
        run(["nsenter", f"--net={netns}", "ip", "-batch", "-"], input=inside.encode())

    def lease(self, paths: SandboxPaths) -> Link:
        """The sandbox's address pair, leased on first use (kept until it is destroyed).

        Raises:
            RuntimeBackendError: the pool is exhausted.
        """
        with self._alloc:
            link = self.link(paths)
            if link is not None:
                return link
            index = self._free_index()
            tmp = paths.root / f".{LEASE}.tmp"
            tmp.write_text(json.dumps({"index": index}))
            os.replace(tmp, paths.root / LEASE)
            return self._link(paths.root.name, index)

    def _free_index(self) -> int:
        """An index no lease holds. The leases on disk are read once, then kept in
        memory with every index leased since (leases are only made here): indexes
        of destroyed sandboxes are found again when the pool seems exhausted, so a
        lease costs the same however many sandboxes there are.

        Raises:
            RuntimeBackendError: the pool is exhausted.
        """
        size = self._pool.num_addresses // 2
        for rescan in (self._taken is None, True):
            if rescan:
                self._taken = self._leased()
            assert self._taken is not None
            start = max(self._taken, default=0) + 1  # (the next one: usually free)
            order = itertools.chain(range(start, size), range(1, min(start, size)))
            index = next((i for i in order if i not in self._taken), None)
            if index is not None:
                self._taken.add(index)
                return index
        raise RuntimeBackendError(f"network pool {self._pool} is exhausted")

    def _leased(self) -> set[int]:
        taken = set()
        for lease in sandboxes_dir(self._settings.data_dir).glob(f"*/{LEASE}"):
            try:
                taken.add(int(json.loads(lease.read_text())["index"]))
            except (OSError, ValueError, KeyError):
                continue
        return taken

    def _link(self, sandbox_id: str, index: int) -> Link:
        base = int(self._pool.network_address) + 2 * index
        key = hashlib.sha256(f"{self.tag} {sandbox_id}".encode()).hexdigest()[:12]
        return Link(
            sandbox_id=sandbox_id, tag=self.tag, key=key,
            host=str(ipaddress.IPv4Address(base)), guest=str(ipaddress.IPv4Address(base + 1)),
        )  # fmt: skip


def strict_rp_filter(veth: str) -> None:
    """Drop packets arriving on ``veth`` whose source is not routed back through it
    (the kernel's own anti-spoofing, beside the nft rule)."""
    try:
        (IPV4_CONF / veth / "rp_filter").write_text("1\n")
    except OSError as exc:
        raise RuntimeBackendError(f"cannot turn on rp_filter on {veth}: {exc}") from exc
