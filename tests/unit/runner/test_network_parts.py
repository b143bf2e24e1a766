"""Pure parts of sandbox networking: DNS wire handling, name matching, nft script,
the egress settings."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import NetworkPolicy
from cove.errors import CoveError, RuntimeBackendError
from cove.runner.host import dns, firewall
from cove.runner.host.firewall import Egress, Link
from tests.nettools import FakeDns


def _query(name: str, qid: int = 7) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def _answer(query: bytes, ip: str, ttl: int) -> bytes:
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)
    return query[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + query[12:] + rr


def test_names_and_records() -> None:
    q = _query("www.Example.com")
    assert dns.question_name(q) == "www.Example.com"
    assert dns.a_records(_answer(q, "198.18.0.9", 42)) == [("198.18.0.9", 42)]
    refused = dns.error_reply(q, dns.NXDOMAIN)
    assert refused[:2] == q[:2] and refused[3] & 0x0F == dns.NXDOMAIN
    assert dns.question_name(refused) is None  # an answer, not a query


def test_allowed_names() -> None:
    patterns = ("example.com", "*.wild.org")
    assert dns.allowed("EXAMPLE.com.", patterns)
    assert not dns.allowed("www.example.com", patterns)
    assert dns.allowed("a.b.wild.org", patterns)
    assert not dns.allowed("wild.org", patterns) and not dns.allowed("evilwild.org", patterns)


def test_decisions_under_policies() -> None:
    q = _query("api.wild.org")
    assert dns.decide(NetworkPolicy(block_all=True), q)[3] & 15 == dns.REFUSED
    assert dns.decide(NetworkPolicy(allow_domains=("other.org",)), q)[3] & 15 == dns.NXDOMAIN
    assert dns.decide(NetworkPolicy(allow_domains=("*.wild.org",)), q) is dns.FORWARD
    assert dns.decide(NetworkPolicy(), q) is dns.FORWARD
    assert dns.decide(NetworkPolicy(), q[:-2]) is None  # cut short: dropped
    assert dns.decide(NetworkPolicy(), q[:12]) is None


def test_only_a_query_of_one_question_is_forwarded() -> None:
    """A sandbox allowed one domain cannot smuggle a second question (or an update)
    past the check to the upstream resolver, nor its answers into the allow-list."""
    allow = NetworkPolicy(allow_domains=("*.wild.org",))
    q = _query("api.wild.org")
    two = q[:4] + struct.pack("!H", 2) + q[6:] + _query("exfil-data.evil.net")[12:]
    reply = dns.decide(allow, two)
    assert reply[:2] == q[:2] and reply[3] & 15 == dns.FORMERR
    update = q[:2] + struct.pack("!H", 5 << 11) + q[4:]  # opcode 5: UPDATE
    assert dns.decide(allow, update)[3] & 15 == dns.NOTIMP
    assert dns.decide(allow, q) is dns.FORWARD


class Upstream(FakeDns):
    """FakeDns that never answers names under ``slow.test`` (as an authoritative
    server that does not answer leaves a resolver waiting)."""

    def _answer(self, q: bytes) -> bytes:
        answer = super()._answer(q)
        return b"" if self.queries[-1].endswith("slow.test") else answer


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream({"api.wild.org": "198.18.0.9", "fast.test": "198.18.0.10"})
    yield server
    server.close()


@pytest.fixture
def forwarder(upstream: Upstream) -> Iterator[dns.DnsForwarder]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port nothing serves
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()
    fwd = dns.DnsForwarder([closed, ("127.0.0.1", upstream.port)])
    yield fwd
    fwd.stop()


def _ask(address: str, query: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(20)
        s.sendto(query, (address, 53))
        return s.recv(4096)


_HOSTS = itertools.count(1)  # (each listener an address of its own)


def _listen(fwd: dns.DnsForwarder, sandbox_id: str, policy: NetworkPolicy,
            on: dns.Resolved) -> str:  # fmt: skip
    address = f"127.83.{os.getpid() % 250}.{next(_HOSTS)}"
    fwd.serve(sandbox_id, address, policy, on)
    return address


def test_an_answer_allowed_reaches_the_sandbox_after_its_addresses(
    forwarder: dns.DnsForwarder,
) -> None:  # fmt: skip
    """Forwarded (past an upstream that refuses, to the next), its addresses handed to
    the allow-list first, then sent: at least the TTL, at least a minute."""
    allowed: list = []

    def allow(found: list) -> None:
        time.sleep(0.2)  # (an answer sent before this returned would find it empty)
        allowed.extend(found)

    address = _listen(forwarder, "sb-a", NetworkPolicy(allow_domains=("*.wild.org",)), allow)
    reply = _ask(address, _query("api.wild.org"))
    assert dns.a_records(reply) == [("198.18.0.9", 5)]
    assert allowed == [("198.18.0.9", 90)]
    assert _ask(address, _query("nope.other.org"))[3] & 15 == dns.NXDOMAIN
    assert forwarder.in_flight("sb-a") == 0


def test_a_sandbox_waiting_on_slow_names_holds_up_no_other(
    forwarder: dns.DnsForwarder, upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A flood of queries no upstream answers: the sandbox's are capped (the rest
    dropped), and another sandbox is answered meanwhile."""
    monkeypatch.setattr(dns, "UPSTREAM_TIMEOUT", 60.0)  # the flood waits throughout
    flood = _listen(forwarder, "sb-flood", NetworkPolicy(), print)
    other = _listen(forwarder, "sb-other", NetworkPolicy(), print)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(3 * dns.SANDBOX_IN_FLIGHT):
            s.sendto(_query(f"q{n}.slow.test", qid=n), (flood, 53))
        deadline = time.monotonic() + 20
        while forwarder.in_flight("sb-flood") < dns.SANDBOX_IN_FLIGHT:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert dns.a_records(_ask(other, _query("fast.test"))) == [("198.18.0.10", 5)]
        assert forwarder.in_flight("sb-flood") == dns.SANDBOX_IN_FLIGHT  # still waiting

    def slow() -> int:
        return len([q for q in upstream.queries if q.endswith("slow.test")])

    while slow() < dns.SANDBOX_IN_FLIGHT:  # (each got past the refusing upstream first)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    assert slow() == dns.SANDBOX_IN_FLIGHT  # the rest never left the host


def test_sandboxes_flooding_share_the_forwarders_bound_with_the_others(
    forwarder: dns.DnsForwarder, upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Two sandboxes' floods of names no upstream answers fill the forwarder's bound,
    in equal shares; a third sandbox is still answered (one of a flood's oldest
    queries let go for it)."""
    monkeypatch.setattr(dns, "UPSTREAM_TIMEOUT", 60.0)
    monkeypatch.setattr(dns, "SANDBOX_IN_FLIGHT", 6)
    monkeypatch.setattr(dns, "IN_FLIGHT", 10)
    floods = {sb: _listen(forwarder, sb, NetworkPolicy(), print) for sb in ("sb-f1", "sb-f2")}
    other = _listen(forwarder, "sb-other", NetworkPolicy(), print)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(20):
            for address in floods.values():
                s.sendto(_query(f"q{n}.slow.test", qid=n), (address, 53))
        deadline = time.monotonic() + 20
        while sum(forwarder.in_flight(sb) for sb in floods) < dns.IN_FLIGHT:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # (the floods' last queries read: each dropped, or let one go)
        assert [forwarder.in_flight(sb) for sb in floods] == [5, 5]
        assert dns.a_records(_ask(other, _query("fast.test"))) == [("198.18.0.10", 5)]
        assert sorted(forwarder.in_flight(sb) for sb in floods) == [4, 5]
        assert forwarder.in_flight("sb-other") == 0


class Late(FakeDns):
    """FakeDns holding its answers until ``go`` is set (the tenant's own name server,
    answering when it likes)."""

    def __init__(self, records: dict[str, str], ttl: int) -> None:
        self.asked, self.go = threading.Event(), threading.Event()
        super().__init__(records, ttl)

    def _answer(self, q: bytes) -> bytes:
        self.asked.set()
        self.go.wait(20)
        return super()._answer(q)


def test_a_late_answer_opens_nothing_the_policy_no_longer_allows() -> None:
    """A query forwarded under one policy and answered after the sandbox got an allow-list
    without its name: its addresses are not allowed (they would stay open for the TTL the
    tenant's server gives them), and the sandbox gets the new policy's answer."""
    late = Late({"x.late.test": "198.18.0.66"}, ttl=86400)
    fwd = dns.DnsForwarder([("127.0.0.1", late.port)])
    allowed: list = []
    try:
        address = _listen(fwd, "sb-late", NetworkPolicy(), allowed.extend)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(20)
            s.sendto(_query("x.late.test"), (address, 53))
            assert late.asked.wait(20)
            fwd.serve("sb-late", address, NetworkPolicy(allow_domains=("ok.test",)),
                      allowed.extend)  # fmt: skip
            late.go.set()
            reply = s.recv(4096)
        assert reply[3] & 15 == dns.NXDOMAIN and not dns.a_records(reply)
        assert allowed == []
    finally:
        fwd.stop()
        late.close()


def test_upstreams(tmp_path) -> None:  # noqa: ANN001
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 10.0.0.2\nnameserver fe80::1\n")
    assert dns.upstreams(None, conf) == [("10.0.0.2", 53)]
    both = [("127.0.0.1", 5300), ("10.1.1.1", 53)]
    assert dns.upstreams("127.0.0.1:5300, 10.1.1.1", conf) == both


EGRESS = Egress(blocked=("10.0.0.0/8", "169.254.0.0/16"), max_connections=100)


def test_nft_script_per_policy() -> None:
    link = Link("sb-1", "cove-x", "abc", "10.0.0.2", "10.0.0.3")
    open_ = firewall.script(link, NetworkPolicy(), EGRESS)
    mark = firewall.policy_mark(NetworkPolicy(), EGRESS, ())
    assert f"add rule inet cove eg_abc ct mark set {mark} accept" in open_
    assert "ip daddr 10.0.0.2 udp dport 53 socket wildcard 0 accept" in open_
    only = NetworkPolicy(allow_cidrs=("10.9.0.0/16",))
    cidr = firewall.script(link, only, EGRESS)
    narrow = firewall.policy_mark(only, EGRESS, ())
    assert "add element inet cove cidr_abc { 10.9.0.0/16 }" in cidr
    assert (f"eg_abc ip daddr @cidr_abc ct mark set {narrow} accept\n"
            "add rule inet cove eg_abc drop") in cidr  # fmt: skip
    blocked = firewall.script(link, NetworkPolicy(block_all=True, allow_cidrs=("10.9.0.0/16",)),
                              EGRESS)  # fmt: skip
    assert "eg_abc drop" in blocked and "@cidr_abc" not in "".join(_chain(blocked, "eg_abc"))
    names = NetworkPolicy(allow_domains=("a.com",))
    assert "flush set inet cove dns_abc" not in firewall.script(link, names, EGRESS)
    assert "flush set inet cove dns_abc" in firewall.script(link, names, EGRESS, forget=True)


def test_a_connection_carries_the_mark_of_the_policy_that_let_it_out() -> None:
    """Another policy (or another server's blocks) marks anew; the same one, the same."""
    policies = [NetworkPolicy(), NetworkPolicy(block_all=True),
                NetworkPolicy(allow_cidrs=("10.9.0.0/16",)),
                NetworkPolicy(allow_domains=("a.com",)), NetworkPolicy(allow_domains=("b.com",))]
    marks = {firewall.policy_mark(p, EGRESS, ()) for p in policies}
    marks.add(firewall.policy_mark(NetworkPolicy(), Egress(blocked=(), max_connections=100), ()))
    marks.add(firewall.policy_mark(NetworkPolicy(), EGRESS, (("10.0.0.5", "cvdef"),)))
    assert len(marks) == len(policies) + 2 and 0 not in marks
    assert firewall.policy_mark(NetworkPolicy(), EGRESS, ()) == firewall.policy_mark(
        NetworkPolicy(), Egress(blocked=EGRESS.blocked, max_connections=7), ())


def test_a_policy_widens_another_when_it_lets_out_all_it_did() -> None:
    """(Then the connections open keep their mark: see Network.apply.)"""
    P, a, b = NetworkPolicy, ("a.com",), ("a.com", "b.com")
    cidr = ("10.9.0.0/16",)
    assert firewall.widens(P(allow_domains=b), P(allow_domains=a))
    assert firewall.widens(P(allow_cidrs=cidr, allow_domains=a), P(allow_cidrs=cidr))
    assert firewall.widens(P(), P(allow_cidrs=cidr)) and firewall.widens(P(), P())
    assert firewall.widens(P(allow_domains=a), P(block_all=True))
    assert not firewall.widens(P(allow_domains=a), P(allow_domains=b))
    assert not firewall.widens(P(allow_domains=a), P(allow_cidrs=cidr))
    assert not firewall.widens(P(allow_domains=a), P())
    assert not firewall.widens(P(block_all=True), P(allow_domains=a))
    assert not firewall.widens(P(), P(peers=(("o", "sb-0"),)))


def _chain(script: str, chain: str) -> list[str]:
    prefix = f"add rule inet cove {chain} "
    return [line[len(prefix):] for line in script.splitlines() if line.startswith(prefix)]


def test_nft_egress_limits_come_before_the_policy() -> None:
    link = Link("sb-1", "cove-x", "abc", "10.0.0.2", "10.0.0.3")
    script = firewall.script(link, NetworkPolicy(allow_domains=("a.com",)), EGRESS)
    mark = firewall.policy_mark(NetworkPolicy(allow_domains=("a.com",)), EGRESS, ())
    assert "add element inet cove block_cove_x { 10.0.0.0/8, 169.254.0.0/16 }" in script
    cap = "ct state new add @conn_abc { ip saddr ct count over 100 } reject"
    assert _chain(script, "eg_abc") == [
        "ip saddr != 10.0.0.3 drop",  # anti-spoofing first
        "meta nfproto ipv6 drop",
        "ct state established,related ct direction reply accept",
        f"ct state established,related ct mark {mark} accept",  # else checked again
        "ct state invalid drop",
        'oifname "cv*" drop',
        "ip daddr @block_cove_x drop",  # before any allow-list, DNS-learnt addresses too
        cap,
        f"ip daddr @dns_abc ct mark set {mark} accept",
        "drop",
    ]
    dns = "ip daddr 10.0.0.2 udp dport 53"
    assert _chain(script, "in_abc") == [
        "ip saddr != 10.0.0.3 drop", "ct state established,related accept",
        f"{dns} {cap}", f"{dns} socket wildcard 0 accept", "drop",
    ]  # fmt: skip
    assert "flush set inet cove conn_abc" not in script  # a policy change keeps the count
    none = firewall.script(link, NetworkPolicy(), Egress(blocked=(), max_connections=1))
    assert "add element inet cove block_cove_x" not in none  # everything exempted


def test_egress_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setenv("COVE_EGRESS_ALLOW", "10.1.2.3, 192.168.7.0/24")
    monkeypatch.setenv("COVE_EGRESS_BLOCK", "203.0.113.0/24")
    monkeypatch.setenv("COVE_MAX_CONNECTIONS", "64")
    settings = Settings(data_dir=tmp_path)
    assert settings.egress_allow == ("10.1.2.3/32", "192.168.7.0/24")
    assert settings.egress_block == ("203.0.113.0/24",)
    assert settings.max_connections == 64
    assert Settings(data_dir=tmp_path, egress_allow=["10.0.0.0/8"]).egress_allow == ("10.0.0.0/8",)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("COVE_EGRESS_ALLOW", "10.0.0.0/8,nope", "'nope' is not an IPv4 range"),
    ("COVE_EGRESS_BLOCK", "fd00::/8", "only IPv4 ranges"),
    ("COVE_MAX_CONNECTIONS", "0", "greater than or equal to 1"),
])  # fmt: skip
def test_invalid_egress_settings_stop_the_server(tmp_path: Path, name: str, value: str,
                                                 message: str) -> None:  # fmt: skip
    env = {**os.environ, name: value, "COVE_RUNTIME": "fake"}
    done = subprocess.run(
        [sys.executable, "-m", "cove.cli.main", "serve", "--data-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"{name}: " in done.stderr and message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cove.db").exists()  # nothing started


def test_a_linked_sandbox_reaches_only_its_owners_address() -> None:
    link = Link("sb-1", "cove-x", "abc", "10.0.0.2", "10.0.0.3")
    peers = (("10.0.0.5", "cvdef"),)
    rules = _chain(firewall.script(link, NetworkPolicy(block_all=True), EGRESS, peers), "eg_abc")
    mark = firewall.policy_mark(NetworkPolicy(block_all=True), EGRESS, peers)
    owner = f'ip daddr 10.0.0.5 oifname "cvdef" ct mark set {mark} accept'  # its veth only
    assert rules.index("ct state invalid drop") < rules.index(owner) < rules.index(
        'oifname "cv*" drop') < rules.index("ip daddr @block_cove_x drop")
    # without a peer, no such rule: a policy change never keeps an old link
    plain = firewall.script(link, NetworkPolicy(), EGRESS)
    assert "10.0.0.5" not in plain


def test_the_owners_name_is_answered_by_cove_whatever_the_policy() -> None:
    hosts = {"owner-1": "10.0.0.5"}
    policy = NetworkPolicy(block_all=True)
    reply = dns.decide(policy, _query("Owner-1"), hosts)
    assert reply[:2] == _query("Owner-1")[:2] and reply[3] & 15 == 0
    assert dns.a_records(reply) == [("10.0.0.5", 30)]
    aaaa = _query("owner-1")[:-4] + struct.pack("!HH", 28, 1)
    empty = dns.decide(policy, aaaa, hosts)
    assert empty[3] & 15 == 0 and dns.a_records(empty) == []
    other = dns.decide(policy, _query("owner-2"), hosts)
    assert other[3] & 15 == dns.REFUSED


def test_address_leases_are_unique_and_come_back_after_a_destroy(tmp_path: Path) -> None:
    """Leases are kept in memory after the first scan; a destroyed sandbox's pair is
    leased again once the pool seems exhausted."""
    from cove.runner.host.network import Network
    from cove.runner.layout import SandboxPaths

    settings = Settings(data_dir=tmp_path, network_pool="100.127.0.0/29")  # 3 pairs
    net = Network(settings)
    boxes = [SandboxPaths.of(tmp_path, f"sb{i}") for i in range(4)]
    for box in boxes:
        box.root.mkdir(parents=True)
    guests = {net.lease(box).guest for box in boxes[:3]}
    assert len(guests) == 3
    assert net.lease(boxes[0]).guest in guests  # a sandbox keeps its lease
    with pytest.raises(CoveError, match="exhausted"):
        net.lease(boxes[3])
    freed = net.lease(boxes[1]).guest
    shutil.rmtree(boxes[1].root)  # destroyed
    assert net.lease(boxes[3]).guest == freed
    assert Network(settings).lease(boxes[3]).guest == freed  # read back from disk


def test_applies_that_meet_go_in_one_nft_run_and_a_refused_one_fails_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import Future

    runs: list[str] = []

    def fake_run(argv: list[str], *, input: bytes, check: bool = True) -> object:
        text = input.decode()
        runs.append(text)
        refused = "bad" in text
        if refused and check:
            raise RuntimeBackendError("nft refused")
        return subprocess.CompletedProcess(argv, 1 if refused else 0)

    monkeypatch.setattr(firewall, "run", fake_run)
    batch = [(firewall._BASE + f"\nadd chain {t}\n", Future()) for t in ("a", "bad", "c")]
    firewall._install(batch)  # type: ignore[arg-type]
    assert all(f"add chain {t}\n" in runs[0] for t in ("a", "bad", "c"))
    assert runs[0].count(firewall._BASE) == 1
    assert len(runs) == 4  # the refused whole, then each alone
    assert batch[0][1].result() is None and batch[2][1].result() is None
    with pytest.raises(CoveError):
        batch[1][1].result()
    runs.clear()
    good = [(firewall._BASE + f"\nadd chain {t}\n", Future()) for t in ("d", "e")]
    firewall._install(good)  # type: ignore[arg-type]
    assert len(runs) == 1 and all(done.result() is None for _t, done in good)


def test_removals_that_meet_go_in_one_nft_run_and_a_partial_one_is_found_by_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import Future

    runs: list[str] = []
    listed: list[str] = []

    def fake_run(argv: list[str], *, input: bytes = b"", check: bool = True) -> object:
        text = input.decode()
        runs.append(text or " ".join(argv))
        refused = "gone" in text  # a sandbox whose rules a crash left half-removed
        return subprocess.CompletedProcess(argv, 1 if refused else 0, stdout=b'{"nftables": []}')

    monkeypatch.setattr(firewall, "run", fake_run)
    monkeypatch.setattr(firewall, "_remove", lambda sid, tag: listed.append(sid))
    links = [Link(sandbox_id=s, tag="t", key=k, host="10.0.0.2", guest="10.0.0.3")
             for s, k in (("a", "k1"), ("gone", "gone1"))]  # fmt: skip
    batch = [(link, Future()) for link in links]
    firewall._install_removals(batch)  # type: ignore[arg-type]
    assert "eg_k1" in runs[0] and "eg_gone1" in runs[0]  # together first
    assert listed == ["gone"] and all(done.result() is None for _l, done in batch)
    assert any("delete table" in r for r in runs)  # no sandbox has rules left
