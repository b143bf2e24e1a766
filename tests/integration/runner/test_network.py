"""Sandbox networking on the real runtime: NAT to two test remotes in their own netns
(R1, R2 in 198.18.0.0/16, routed via the host), DNS through Cove's forwarder,
the firewall, isolation between sandboxes and from the host, and clean removal."""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cove.core.ports import NetworkPolicy
from cove.runner.host.network import data_tag
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import link, ok, sh
from tests.nettools import R1, R1_NET, R2, R2_NET, FakeDns, Remote, nft_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remotes() -> Iterator[tuple[Remote, Remote]]:
    pair = (Remote(R1_NET).start(), Remote(R2_NET).start())
    yield pair
    for remote in pair:
        remote.stop()


def reaches(runtime: OciRuntime, sid: str, url: str) -> bool:
    res = sh(runtime, sid, f"curl -sS -m 2 {url}", timeout=20)
    return res.exit_code == 0 and b"remote " in res.stdout


def resolves(runtime: OciRuntime, sid: str, name: str) -> str:
    return sh(runtime, sid, f"getent ahostsv4 {name} | head -1", timeout=20).stdout.decode()


def test_outbound_nat_and_dns(runtime: OciRuntime, make_sandbox: SandboxFactory, remotes) -> None:
    sid = make_sandbox().sandbox_id
    assert reaches(runtime, sid, f"http://{R1}:8080/x")
    assert f"remote {R1} /y" in ok(runtime, sid, "curl -sS -m 5 http://remote.test:8080/y")
    assert "nameserver 198.19." in ok(runtime, sid, "cat /etc/resolv.conf")
    assert resolves(runtime, sid, "nothing.test") == ""


def test_block_all_and_live_change(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                   remotes) -> None:  # fmt: skip
    sid = make_sandbox(network=NetworkPolicy(block_all=True)).sandbox_id
    assert not reaches(runtime, sid, f"http://{R1}:8080/")
    assert resolves(runtime, sid, "remote.test") == ""
    runtime.set_network(sid, NetworkPolicy())  # live, no restart
    assert reaches(runtime, sid, f"http://{R1}:8080/")
    runtime.set_network(sid, NetworkPolicy(block_all=True))
    assert not reaches(runtime, sid, f"http://{R1}:8080/")


HOLD = """
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 8080), timeout=5)
open("/tmp/held-" + sys.argv[2], "w").close()
while not os.path.exists("/tmp/go-" + sys.argv[2]):
    time.sleep(0.05)
s.settimeout(3)
try:
    s.sendall(f"GET /{sys.argv[2]} HTTP/1.0\\r\\n\\r\\n".encode())
    print(b"".join(iter(lambda: s.recv(4096), b"")).decode(errors="replace"))
except OSError as exc:
    print("failed", exc)
"""


def _after_change(runtime: OciRuntime, sid: str, target: str, policy: NetworkPolicy,
                  meanwhile: Callable[[], object] = lambda: None) -> str:  # fmt: skip
    """Open a connection to ``target``:8080, call ``meanwhile``, set ``policy``, then send
    a request on it; returns what came back ("failed ..." when nothing did)."""
    tag = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(sh, runtime, sid, f"python3 -c '{HOLD}' {target} {tag}", timeout=60)
        ok(runtime, sid, f"until [ -e /tmp/held-{tag} ]; do sleep 0.05; done")
        meanwhile()
        runtime.set_network(sid, policy)
        ok(runtime, sid, f"touch /tmp/go-{tag}")
        return held.result().stdout.decode()


def test_a_narrower_policy_cuts_connections_it_no_longer_allows(
    runtime: OciRuntime, make_sandbox: SandboxFactory, remotes,
) -> None:  # fmt: skip
    """A connection opened before the change gets no further (a tenant holding one open
    to its own server would keep it for as long as it likes); one the new policy still
    allows goes on."""
    sid = make_sandbox().sandbox_id
    assert "failed" in _after_change(runtime, sid, R1, NetworkPolicy(block_all=True))
    runtime.set_network(sid, NetworkPolicy())
    only_r2 = NetworkPolicy(allow_cidrs=(f"{R2}/32",))
    assert "failed" in _after_change(runtime, sid, R1, only_r2)
    runtime.set_network(sid, NetworkPolicy())
    assert f"remote {R2} /" in _after_change(runtime, sid, R2, only_r2)
    assert f"remote {R2} /" in _after_change(runtime, sid, R2, only_r2)  # (the same again)


def test_cidr_allow_list(runtime: OciRuntime, make_sandbox: SandboxFactory, remotes) -> None:
    sid = make_sandbox(network=NetworkPolicy(allow_cidrs=(f"198.18.{R1_NET}.0/24",))).sandbox_id
    assert reaches(runtime, sid, f"http://{R1}:8080/")
    assert not reaches(runtime, sid, f"http://{R2}:8080/")
    runtime.set_network(sid, NetworkPolicy(allow_cidrs=(f"{R2}/32",)))
    assert not reaches(runtime, sid, f"http://{R1}:8080/")
    assert reaches(runtime, sid, f"http://{R2}:8080/")


def test_domain_allow_list_is_per_sandbox(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                          remotes) -> None:  # fmt: skip
    policy = NetworkPolicy(allow_domains=("remote.test", "*.wild.test"))
    a = make_sandbox(network=policy).sandbox_id
    b = make_sandbox(network=policy).sandbox_id
    assert not reaches(runtime, a, f"http://{R1}:8080/")  # not resolved yet
    assert resolves(runtime, a, "other.test") == ""  # not allowed
    assert reaches(runtime, a, "http://remote.test:8080/")
    assert reaches(runtime, a, "http://a.wild.test:8080/")
    assert reaches(runtime, a, f"http://{R1}:8080/")  # resolved by a, for a
    assert not reaches(runtime, a, f"http://{R2}:8080/")
    assert not reaches(runtime, b, f"http://{R1}:8080/")  # b resolved nothing


def test_a_name_taken_off_the_allow_list_is_closed_at_once(
    runtime: OciRuntime, make_sandbox: SandboxFactory, remotes,
) -> None:  # fmt: skip
    """The addresses a name resolved to stay allowed for its TTL (min 90 s) while it is
    listed; once it is not, they are closed (a TTL of a day would keep it open a day)."""
    sid = make_sandbox(network=NetworkPolicy(allow_domains=("remote.test",))).sandbox_id
    assert reaches(runtime, sid, "http://remote.test:8080/")
    both = NetworkPolicy(allow_domains=("remote.test", "other.test"))
    runtime.set_network(sid, both)  # a name added: what the others opened stays open
    assert reaches(runtime, sid, f"http://{R1}:8080/")
    runtime.set_network(sid, NetworkPolicy(allow_domains=("other.test",)))
    assert not reaches(runtime, sid, f"http://{R1}:8080/")
    assert reaches(runtime, sid, "http://other.test:8080/")
    assert resolves(runtime, sid, "remote.test") == ""
    # a connection it opened: on while its name is listed (even once its addresses
    # expired from the set), cut once it is not
    runtime.set_network(sid, NetworkPolicy(allow_domains=("remote.test",)))
    expire = lambda: subprocess.run(  # noqa: E731
        ["nft", "flush", "set", "inet", "cove", link(runtime, sid).dns_set], check=True)
    assert f"remote {R1} /" in _after_change(runtime, sid, "remote.test", both, expire)
    gone = NetworkPolicy(allow_domains=("other.test",))
    assert "failed" in _after_change(runtime, sid, "remote.test", gone)


SMUGGLE = """
import socket, struct
def question(name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return labels + bytes(1) + struct.pack("!HH", 1, 1)
server = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
head = struct.pack("!HHHHHH", 0x4242, 0x0100, 2, 0, 0, 0)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(head + question("remote.test") + question("other.test"), (server, 53))
reply = s.recv(512)
print(struct.unpack("!H", reply[:2])[0], reply[3] & 15)
"""


def test_a_second_question_is_not_smuggled_past_the_allow_list(
    runtime: OciRuntime, make_sandbox: SandboxFactory, fake_dns: FakeDns, remotes,
) -> None:  # fmt: skip
    """A query naming an allowed domain first and another second is refused (FORMERR)
    and never reaches the upstream, whose answer would open the second's address."""
    sid = make_sandbox(network=NetworkPolicy(allow_domains=("remote.test",))).sandbox_id
    before = len(fake_dns.queries)
    assert ok(runtime, sid, f"python3 -c '{SMUGGLE}'").split() == [str(0x4242), "1"]
    assert len(fake_dns.queries) == before
    assert not reaches(runtime, sid, f"http://{R2}:8080/")
    assert reaches(runtime, sid, "http://remote.test:8080/")  # one question: answered


def test_no_route_to_other_sandboxes_or_host(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                             remotes) -> None:  # fmt: skip
    a = make_sandbox().sandbox_id
    b = make_sandbox().sandbox_id
    b_addr, a_addr = runtime.address(b), runtime.address(a)
    assert a_addr and b_addr and a_addr != b_addr
    ok(runtime, b, "nohup python3 -m http.server 8000 >/dev/null 2>&1 & "
                   "until curl -s -o /dev/null localhost:8000; do sleep 0.05; done")  # fmt: skip
    # the host may dial in (preview proxy); another sandbox may not
    socket.create_connection((b_addr, 8000), timeout=5).close()
    assert sh(runtime, a, f"curl -sS -m 2 http://{b_addr}:8000/").exit_code != 0
    with socket.socket() as srv:  # a host service on every address
        srv.bind(("0.0.0.0", 0))
        srv.listen()
        port = srv.getsockname()[1]
        threading.Thread(target=lambda: srv.accept(), daemon=True).start()
        gw = _gateway(a_addr)
        for target in (gw, _gateway(b_addr), remotes[0].host):
            res = sh(runtime, a, f"curl -sS -m 2 http://{target}:{port}/", timeout=20)
            assert res.exit_code == 28, (target, res)  # timed out: dropped, not refused


def test_stop_start_and_destroy_clean_up(runtime: OciRuntime, make_sandbox: SandboxFactory,
                                         remotes) -> None:  # fmt: skip
    spec = make_sandbox(network=NetworkPolicy(allow_cidrs=(f"198.18.{R1_NET}.0/24",)))
    sid = spec.sandbox_id
    addr = runtime.address(sid)
    tag = data_tag(runtime._settings.data_dir)
    assert sid in nft_table()
    runtime.stop(sid, force=True)
    assert sid not in nft_table()
    assert tag not in subprocess.run(["ip", "-d", "link"], capture_output=True, text=True).stdout
    runtime.start(spec)
    assert runtime.address(sid) == addr
    assert reaches(runtime, sid, f"http://{R1}:8080/")
    assert not reaches(runtime, sid, f"http://{R2}:8080/")
    runtime.destroy(sid)
    assert sid not in nft_table()


def _gateway(addr: str) -> str:
    head, last = addr.rsplit(".", 1)
    return f"{head}.{int(last) - 1}"
