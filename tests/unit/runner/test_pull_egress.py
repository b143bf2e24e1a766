"""A pull connects where the tenant's registry says (redirects, token realms) only if
a sandbox could reach it: never the host's loopback, its own addresses, private or
link-local networks, unless the operator lists that registry."""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.host.egress import Egress, _relay, upstream_proxy
from cove.runner.storage import registry
from tests.registry import (
    SECRET,
    Answer,
    HttpServer,
    ImageSpec,
    Registry,
    busybox_layer,
    layout,
    realm_registry,
    redirecting_registry,
    secret_service,
)


def _host_address() -> str | None:
    """This host's address on its default route (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, snapshot_dir=tmp_path / "snapshots",
                    pull_timeout_seconds=120)  # fmt: skip


@pytest.fixture
def internal() -> Iterator[HttpServer]:
    server = HttpServer("127.0.0.1", secret_service)
    yield server
    server.close()


@pytest.mark.parametrize("hostile_registry", [redirecting_registry, realm_registry])
def test_a_registry_cannot_send_a_pull_to_the_hosts_loopback(
    settings: Settings, internal: HttpServer, hostile_registry: Callable[[str], Answer],
) -> None:  # fmt: skip
    """The operator lists the tenant's registry (here on loopback, plain HTTP); its
    manifest redirects (or its token realm points) to another port of the host's
    loopback: nothing reaches it, and nothing of its answer comes back in the pull's
    error."""
    hostile = HttpServer("127.0.0.1", hostile_registry(f"http://{internal.host}"))
    settings.insecure_registries = [hostile.host]
    try:
        with pytest.raises(RuntimeBackendError) as failed:
            registry.pull(settings, "snap", f"{hostile.host}/x:v1", None)
    finally:
        hostile.close()
    assert hostile.asked  # (the registry was asked)
    assert internal.asked == []
    assert SECRET not in failed.value.message
    assert not (settings.snapshot_dir / "snap").exists()  # type: ignore[operator]


def test_a_registry_cannot_redirect_a_pull_to_the_hosts_own_address(
    settings: Settings,
) -> None:  # fmt: skip
    """A redirect to the host's own (non-loopback) address goes through the pull's
    proxy, which refuses it and says why."""
    address = _host_address()
    if address is None:
        pytest.skip("this host has no address besides loopback")
    exposed = HttpServer(address, secret_service)
    hostile = HttpServer("127.0.0.1", redirecting_registry(f"http://{exposed.host}"))
    settings.insecure_registries = [hostile.host]
    try:
        with pytest.raises(RuntimeBackendError,
                           match=rf"{address} is not public: see COVE_EGRESS_ALLOW") as failed:
            registry.pull(settings, "snap", f"{hostile.host}/x:v1", None)
    finally:
        hostile.close()
        exposed.close()
    assert exposed.asked == []
    assert SECRET not in failed.value.message


def test_an_image_cannot_name_a_registry_on_loopback_the_operator_did_not_list(
    settings: Settings, internal: HttpServer,
) -> None:  # fmt: skip
    """``localhost:<port>/x``: Go never proxies loopback names, so it is reached in the
    pull's own namespace, where nothing listens but a registry the operator lists."""
    settings.insecure_registries = ["127.0.0.1:1"]
    for name in (f"localhost:{internal.port}", f"127.0.0.1:{internal.port}"):
        with pytest.raises(RuntimeBackendError):
            registry.pull(settings, "snap", f"{name}/x:v1", None)
    assert internal.asked == []


def test_an_image_cannot_name_the_hosts_own_address(settings: Settings) -> None:
    """Reached through the proxy (``CONNECT``), which refuses it and says why."""
    address = _host_address()
    if address is None:
        pytest.skip("this host has no address besides loopback")
    exposed = HttpServer(address, secret_service)
    try:
        with pytest.raises(RuntimeBackendError, match=rf"{address} is not public: see "
                                                      "COVE_EGRESS_ALLOW"):  # fmt: skip
            registry.pull(settings, "snap", f"{exposed.host}/x:v1", None)
    finally:
        exposed.close()


def test_a_listed_registry_on_loopback_is_pulled_from(tmp_path: Path,
                                                     settings: Settings) -> None:  # fmt: skip
    (tmp_path / "reg").mkdir()
    local = Registry(tmp_path / "reg").start()
    try:
        image = local.push(layout(tmp_path / "img", ImageSpec([busybox_layer()])), "app")
        settings.insecure_registries = [local.host]
        assert registry.pull(settings, "snap", image, None).digest.startswith("sha256:")
    finally:
        local.stop()


@pytest.fixture
def lan_registry(tmp_path: Path) -> Iterator[tuple[Registry, str, str]]:
    address = _host_address()
    if address is None:
        pytest.skip("this host has no address besides loopback")
    (tmp_path / "reg").mkdir()
    lan = Registry(tmp_path / "reg", bind=address).start()
    try:
        image = lan.push(layout(tmp_path / "img", ImageSpec([busybox_layer()])), "app")
        yield lan, image, address
    finally:
        lan.stop()


def test_a_listed_registry_elsewhere_is_pulled_through_the_proxy(
    settings: Settings, lan_registry: tuple[Registry, str, str],
) -> None:  # fmt: skip
    """On the host's own address (not loopback: Go sends it to the proxy, which lets
    it through because the operator lists it), over HTTPS first, then plain HTTP."""
    lan, image, _address = lan_registry
    settings.insecure_registries = [lan.host]
    # with the descriptors a server of many sandboxes has open (past select()'s 1024)
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        assert registry.pull(settings, "snap", image, None).digest.startswith("sha256:")
    finally:
        for fd in held:
            os.close(fd)
    assert (settings.snapshot_dir / "snap").is_dir()  # type: ignore[operator]


@pytest.mark.parametrize(("address", "reachable"), [
    ("93.184.215.14", True), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
    ("127.0.0.1", False), ("10.213.0.5", False), ("169.254.169.254", False),
    ("192.168.1.1", False), ("100.64.0.1", False), ("::1", False), ("fd00::1", False),
    ("fe80::1", False), ("::ffff:127.0.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
])  # fmt: skip
def test_what_a_pull_may_reach(settings: Settings, address: str, reachable: bool) -> None:
    with Egress(settings, "docker.io") as egress:
        assert egress.may_reach(address) is reachable


def test_egress_allow_opens_a_range_to_pulls_too(settings: Settings) -> None:
    settings.egress_allow = ("10.1.0.0/16",)
    with Egress(settings, "docker.io") as egress:
        assert egress.may_reach("10.1.2.3")
        assert not egress.may_reach("10.2.0.1")


class OperatorProxy:
    """The host's own forward proxy (``HTTP(S)_PROXY``): CONNECT and absolute-form
    requests, each line and ``Proxy-Authorization`` kept in ``asked``; 407 without
    ``auth`` when one is set."""

    def __init__(self, auth: str | None = None) -> None:
        self.asked: list[tuple[str, str | None]] = []
        self.auth = auth
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:])
            self.asked.append((lines[0], fields.get("Proxy-Authorization")))
            if self.auth and fields.get("Proxy-Authorization") != self.auth:
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
                return
            method, target, version = lines[0].split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                first, reply = rest, b"HTTP/1.1 200 Connection established\r\n\r\n"
            else:
                url = urlsplit(target)
                host, port = url.hostname or "", str(url.port or 80)
                kept = [line for line in lines[1:] if not line.startswith("Proxy-")]
                origin = url._replace(scheme="", netloc="").geturl()
                first = "\r\n".join([f"{method} {origin} {version}", *kept, "", ""]).encode()
                first, reply = first + rest, b""
            _relay(conn, [(host.strip("[]"), int(port))], first, reply=reply)

    def close(self) -> None:
        self.listener.close()


def test_a_host_behind_its_own_proxy_pulls_through_it(
    settings: Settings, lan_registry: tuple[Registry, str, str], internal: HttpServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``HTTPS_PROXY``/``HTTP_PROXY`` of the server: each checked connection goes on
    through the operator's proxy, with its credentials, to the checked address; what
    the check refuses never reaches the proxy."""
    lan, image, address = lan_registry
    operator = OperatorProxy(auth="Basic " + base64.b64encode(b"op:p@ss").decode())
    url = f"http://op:p%40ss@127.0.0.1:{operator.port}"
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings.insecure_registries = [lan.host]
    try:
        assert registry.pull(settings, "snap", image, None).digest.startswith("sha256:")
        lines = [line for line, _auth in operator.asked]
        assert f"CONNECT {lan.host} HTTP/1.1" in lines  # HTTPS first (it speaks HTTP)
        assert any(line.startswith(f"GET http://{lan.host}/v2/") for line in lines)
        assert all(auth == operator.auth for _line, auth in operator.asked)
        asked = len(operator.asked)
        hostile = HttpServer("127.0.0.1", redirecting_registry(f"http://{internal.host}"))
        try:  # a redirect to the host's loopback: refused before the operator's proxy
            settings.insecure_registries = [hostile.host]
            with pytest.raises(RuntimeBackendError):
                registry.pull(settings, "snap2", f"{hostile.host}/x:v1", None)
        finally:
            hostile.close()
        assert internal.asked == []
        assert not any(internal.host in line for line, _ in operator.asked[asked:])
    finally:
        operator.close()


def test_no_proxy_names_what_is_reached_directly(
    settings: Settings, lan_registry: tuple[Registry, str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    lan, image, address = lan_registry
    operator = OperatorProxy()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{operator.port}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{operator.port}")
    monkeypatch.setenv("NO_PROXY", f"example.invalid,{address}")
    settings.insecure_registries = [lan.host]
    try:
        assert registry.pull(settings, "snap", image, None).digest.startswith("sha256:")
        # (Asked of its registry only: once in a CI run, a CONNECT to 127.0.0.1 of
        # another test's pull in this process reached this test's proxy.)
        assert not any(address in line for line, _auth in operator.asked), operator.asked
    finally:
        operator.close()


@pytest.mark.parametrize(("env", "scheme", "host", "expected"), [
    ({}, "https", "r.example", None),
    ({"https": "http://p:3128"}, "https", "r.example", (("p", 3128), [])),
    ({"https": "p:3128"}, "https", "r.example", (("p", 3128), [])),
    ({"all": "http://p"}, "http", "r.example", (("p", 80), [])),
    ({"http": "http://p:1"}, "https", "r.example", None),
    ({"https": "http://u:a%3Ab@p:1"}, "https", "r.example",
     (("p", 1), [b"Proxy-Authorization: Basic " + base64.b64encode(b"u:a:b")])),
    ({"https": "http://p:1", "no": ".example"}, "https", "r.example", None),
    ({"https": "http://p:1", "no": "*"}, "https", "r.example", None),
    ({"https": "https://p:1"}, "https", "r.example",
     "Bad Gateway: the host's https proxy must be http://host:port"),
])  # fmt: skip
def test_which_proxy_of_the_hosts_a_pull_uses(env: dict[str, str], scheme: str, host: str,
                                              expected: object) -> None:  # fmt: skip
    assert upstream_proxy(env, scheme, host) == expected
