"""A pull connects where the tenant's registry says (redirects, token realms) only if
a sandbox could reach it: never the host's loopback, its own addresses, private or
link-local networks, unless the operator lists that registry."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.host.egress import Egress
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


def test_a_listed_registry_elsewhere_is_pulled_through_the_proxy(
    tmp_path: Path, settings: Settings,
) -> None:  # fmt: skip
    """On the host's own address (not loopback: Go sends it to the proxy, which lets
    it through because the operator lists it), over HTTPS first, then plain HTTP."""
    address = _host_address()
    if address is None:
        pytest.skip("this host has no address besides loopback")
    (tmp_path / "reg").mkdir()
    lan = Registry(tmp_path / "reg", bind=address).start()
    try:
        image = lan.push(layout(tmp_path / "img", ImageSpec([busybox_layer()])), "app")
        settings.insecure_registries = [lan.host]
        # with the descriptors a server of many sandboxes has open (past select()'s 1024)
        held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
        try:
            assert registry.pull(settings, "snap", image, None).digest.startswith("sha256:")
        finally:
            for fd in held:
                os.close(fd)
        assert (settings.snapshot_dir / "snap").is_dir()  # type: ignore[operator]
    finally:
        lan.stop()


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
