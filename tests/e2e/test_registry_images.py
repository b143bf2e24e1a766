"""Images from registries, through the official SDK: real registries on loopback
(``docker-registry``), one of them behind htpasswd."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    Image,
)
from daytona_api_client import CreateDockerRegistry, DockerRegistryApi
from daytona_api_client.exceptions import NotFoundException

from cove.runner.storage.unpack import manifest
from tests.e2e.conftest import KEY, Server, run_ok, running_server
from tests.registry import (
    SECRET,
    HttpServer,
    ImageSpec,
    Registry,
    busybox_layer,
    entry,
    file,
    layer,
    layout,
    redirecting_registry,
    secret_service,
    verbose_registry,
)

pytestmark = pytest.mark.e2e
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_MB = 64
TINY = ImageSpec([busybox_layer()], env=(PATH, "FOO=from-image"), workdir="/srv/app")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("private"), user="alice", password="s3cret-pw").start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that reaches loopback registries over plain HTTP, and takes images of
    up to 64 MiB."""
    env = {"COVE_INSECURE_REGISTRIES": "127.0.0.1", "COVE_NETWORK": "none",
           "COVE_MAX_IMAGE_MB": str(MAX_MB)}
    with running_server(tmp_path_factory.mktemp("cove-images"), 5, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def tiny(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    return registry.push(layout(tmp_path_factory.mktemp("img") / "tiny", TINY), "e2e/tiny")


@pytest.fixture
def client(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))


def _other(server: Server) -> Daytona:
    key = server.org_key("images-other")
    return Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))


def _fails(client: Daytona, image: str | Image, reason: str) -> None:
    """Creating from ``image`` ends ``build_failed`` with ``reason`` (the sandbox is
    deleted afterwards)."""
    with pytest.raises(DaytonaError, match="(?i)build_failed"):
        client.create(CreateSandboxFromImageParams(image=image), timeout=120)
    failed = list(client.list())
    assert len(failed) == 1 and failed[0].state == "build_failed"
    assert re.search(reason, failed[0].error_reason or ""), failed[0].error_reason
    failed[0].delete()


def _snapshot_files(server: Server) -> set[str]:
    """What is in the snapshot dir, but its layer cache (shared, content-addressed) and
    the builds other processes run meanwhile (``.build-<ref>-<pid>``: the dir is shared
    by every test server of the host)."""
    assert server.settings.snapshot_dir is not None and server.proc is not None
    names = {p.name for p in server.settings.snapshot_dir.iterdir()} - {".images"}
    return {n for n in names
            if not (n.startswith(".build-") and not n.endswith(f"-{server.proc.pid}"))}


def test_create_from_a_registry_image_runs_it_with_its_config(
    client: Daytona, sandboxes: list, tiny: str
) -> None:
    logs: list[str] = []
    sb = client.create(CreateSandboxFromImageParams(image=tiny), timeout=120,
                       on_snapshot_create_logs=logs.append)  # fmt: skip
    sandboxes.append(sb)
    assert sb.user == "root"  # the image names no User
    out = run_ok(sb, "echo $FOO; pwd; id -u; cat /etc/marker")
    assert out == "from-image\n/srv/app\n0\nfrom-registry\n"
    text = "\n".join(logs)
    assert f"Pulling {tiny}" in text and "Copying blob" in text
    snaps = [s for s in client.snapshot.list().items if s.image_name == tiny]
    assert len(snaps) == 1 and snaps[0].state == "active"
    # A Dockerfile over the registry image builds on it, with its env.
    built = client.create(CreateSandboxFromImageParams(
        image=Image.base(tiny).run_commands("echo $FOO > /built.txt")), timeout=120)  # fmt: skip
    sandboxes.append(built)
    assert run_ok(built, "cat /built.txt; pwd") == "from-image\n/srv/app\n"


def test_by_digest_and_cached(
    client: Daytona, sandboxes: list, tmp_path: Path
) -> None:
    (tmp_path / "reg").mkdir()
    reg = Registry(tmp_path / "reg").start()
    try:
        ref = reg.push(layout(tmp_path / "cached", ImageSpec([busybox_layer("cached")])), "cached")
        by_digest = f"{reg.host}/cached@{reg.digest(ref)}"
        first = client.create(CreateSandboxFromImageParams(image=by_digest), timeout=120)
        sandboxes.append(first)
        assert run_ok(first, "cat /etc/marker") == "cached\n"
    finally:
        reg.stop()
    # The registry is gone: the same image comes from the snapshot pulled before.
    again = client.create(CreateSandboxFromImageParams(image=by_digest), timeout=120)
    sandboxes.append(again)
    assert run_ok(again, "cat /etc/marker") == "cached\n"
    assert client.get(again.id).snapshot == client.get(first.id).snapshot


def test_failed_pulls_end_build_failed_and_leave_nothing(
    server: Server, client: Daytona, registry: Registry
) -> None:
    before, snapshots = _snapshot_files(server), client.snapshot.list().total
    _fails(client, f"{registry.host}/e2e/no-such-image:v1", "manifest unknown")
    _fails(client, f"127.0.0.1:{_closed_port()}/e2e/tiny:v1", "connection refused")
    _fails(client, Image.base(f"{registry.host}/e2e/nope:v2").run_commands("true"),
           "manifest unknown")  # fmt: skip
    with pytest.raises(DaytonaError, match="not allowed"):  # this server pulls from loopback only
        client.create(CreateSandboxFromImageParams(image="python:3.12"))
    assert list(client.list()) == []
    assert client.snapshot.list().total == snapshots
    assert _snapshot_files(server) - before == set()  # (others share the dir: only new ones count)


def _blobs(server: Server) -> set[str]:
    assert server.settings.snapshot_dir is not None
    cache = server.settings.snapshot_dir / ".images/blobs-public/sha256"  # (no credentials)
    return {p.name for p in cache.iterdir()} if cache.is_dir() else set()


def test_images_over_the_size_cap_fail_and_leave_nothing(
    server: Server, client: Daytona, registry: Registry, tmp_path: Path
) -> None:
    """A layer bomb (a few KiB that unpack to 200 MiB) and an image whose download
    alone passes COVE_MAX_IMAGE_MB: both refused before unpacking (the second one before
    its layer is even downloaded), with the reason; no snapshot, and none of their
    blobs stays in the layer cache."""
    zeros = ImageSpec([layer([file("bomb", bytes(200 * 2**20))])])
    noise = ImageSpec([layer([file("noise", os.urandom((MAX_MB + 2) * 2**20))])])
    bomb = registry.push(layout(tmp_path / "bomb", zeros), "e2e/bomb")
    big = registry.push(layout(tmp_path / "big", noise), "e2e/big")
    big_layer = manifest(tmp_path / "big", "v1")["layers"][0]["digest"]
    files, blobs = _snapshot_files(server), _blobs(server)
    _fails(client, bomb, rf"larger than COVE_MAX_IMAGE_MB \({MAX_MB} MiB\) unpacked")
    too_big = rf"larger than COVE_MAX_IMAGE_MB \({MAX_MB} MiB\): its layers take 6\d MiB compr"
    pushed = len(registry.log.read_bytes())
    try:
        with pytest.raises(DaytonaError, match=too_big):
            client.snapshot.create(CreateSnapshotParams(name="too-big", image=big))
        snap = client.snapshot.get("too-big")
        assert snap.state == "error" and re.search(too_big, snap.error_reason or "")
    finally:
        client.snapshot.delete(client.snapshot.get("too-big"))
    assert f"/blobs/{big_layer}".encode() not in registry.log.read_bytes()[pushed:]
    assert _snapshot_files(server) - files == set()
    assert _blobs(server) - blobs == set()


def test_an_image_of_more_files_than_its_cap_allows_fails_and_leaves_nothing(
    server: Server, client: Daytona, registry: Registry, tmp_path: Path
) -> None:
    """Every file an image unpacks takes an inode of the host's file system, shared by
    everything on it, whatever its size: 5,000 empty files (30 KiB pushed, 3 MiB by
    their size) are more than a cap of 64 MiB allows (one per 16 KiB: 4,096). Refused
    before unpacking, with the reason; no snapshot, and none of its blobs is kept."""
    many = ImageSpec([busybox_layer(), layer([file(f"many/{n}") for n in range(5000)])])
    ref = registry.push(layout(tmp_path / "many", many), "e2e/many")
    files, blobs = _snapshot_files(server), _blobs(server)
    _fails(client, ref, rf"more than {MAX_MB * 64} files \(COVE_MAX_IMAGE_MB \({MAX_MB} MiB\)")
    assert _snapshot_files(server) - files == set()
    assert _blobs(server) - blobs == set()


def test_every_gzip_member_of_a_layer_counts_against_the_cap(
    server: Server, client: Daytona, registry: Registry, tmp_path: Path
) -> None:
    """A layer of two gzip members (a first of one small file, a second of 200 MiB of
    zeros): umoci unpacks both, so both count; refused before unpacking, no snapshot
    left and none of its blobs kept."""
    first = io.BytesIO()
    tar = tarfile.open(fileobj=first, mode="w", format=tarfile.PAX_FORMAT)
    tar.addfile(tarfile.TarInfo("innocent"))  # (no end-of-archive blocks: more follows)
    both = gzip.compress(first.getvalue(), mtime=0) + layer([file("bomb", bytes(200 * 2**20))])
    ref = registry.push(layout(tmp_path / "two", ImageSpec([busybox_layer(), both])), "e2e/two")
    files, blobs = _snapshot_files(server), _blobs(server)
    _fails(client, ref, rf"larger than COVE_MAX_IMAGE_MB \({MAX_MB} MiB\) unpacked")
    assert _snapshot_files(server) - files == set()
    assert _blobs(server) - blobs == set()


def test_an_image_config_past_coves_bounds_fails_the_pull_and_leaves_nothing(
    server: Server, client: Daytona, registry: Registry, tmp_path: Path
) -> None:
    """What Cove keeps of an image's config is written by whoever pushed the image: a
    Cmd of 1 MiB (returned by every listing of snapshots) and a User of 1 MiB that is no
    user name (it would be the sandbox's, in every listing of sandboxes) fail the pull,
    the field and its bound named; no snapshot and none of their files are left."""
    long_cmd = ImageSpec([busybox_layer()], cmd=("/bin/sh", "-c", "x" * 2**20))
    bad_user = ImageSpec([busybox_layer()], user="u" * 2**20)
    cmd_ref = registry.push(layout(tmp_path / "cmd", long_cmd), "e2e/long-cmd")
    user_ref = registry.push(layout(tmp_path / "user", bad_user), "e2e/bad-user")
    files, snapshots = _snapshot_files(server), client.snapshot.list().total
    too_long = r"Cmd takes 1048588 characters, at most 32768"
    try:
        with pytest.raises(DaytonaError, match=too_long):
            client.snapshot.create(CreateSnapshotParams(name="e2e-long-cmd", image=cmd_ref))
        snap = client.snapshot.get("e2e-long-cmd")
        assert snap.state == "error" and not snap.entrypoint
        assert re.search(too_long, snap.error_reason or "") and len(snap.error_reason or "") < 1024
    finally:
        client.snapshot.delete(client.snapshot.get("e2e-long-cmd"))
    _fails(client, user_ref, r"^umoci unpack --image exited 1: .*cannot parse user spec: "
                             r"'?u{100,512}\.\.\.\(\d+ characters\)\.\.\.u{100,512}'?: "
                             r"no matching entries in passwd file$")
    assert client.snapshot.list().total == snapshots
    assert _snapshot_files(server) - files == set()


def test_private_registry_needs_the_organizations_credentials(
    server: Server, client: Daytona, sandboxes: list, private: Registry, tmp_path: Path
) -> None:
    ref = private.push(layout(tmp_path / "priv", ImageSpec([busybox_layer("private")])), "team/app")
    _fails(client, ref, "authentication required")
    api = DockerRegistryApi(client._api_client)
    made = api.create_registry(CreateDockerRegistry(
        name="team", url=f"http://{private.host}/", username="alice", password="s3cret-pw"))
    listed = httpx.get(f"{server.api_url}/docker-registry",
                       headers={"Authorization": f"Bearer {KEY}"}).text  # fmt: skip
    assert made.id in listed and "s3cret-pw" not in listed and "password" not in listed
    # Sealed at rest: the database (and its journal) never holds the password.
    stored = [p for p in server.data_dir.iterdir() if ".db" in p.name]
    assert stored and not any(b"s3cret-pw" in p.read_bytes() for p in stored)
    assert (server.data_dir / "registry.key").stat().st_mode & 0o777 == 0o600
    assert api.get_registry(made.id).username == "alice"

    other = _other(server)
    other_api = DockerRegistryApi(other._api_client)
    assert other_api.list_registries() == []
    with pytest.raises(NotFoundException):
        other_api.get_registry(made.id)
    with pytest.raises(NotFoundException):
        other_api.delete_registry(made.id)
    _fails(other, ref, "authentication required")  # A's credentials are not B's

    sb = client.create(CreateSandboxFromImageParams(image=ref), timeout=120)
    sandboxes.append(sb)
    assert run_ok(sb, "cat /etc/marker") == "private\n"
    api.delete_registry(made.id)
    assert api.list_registries() == []


def test_snapshot_from_a_registry_image(
    client: Daytona, sandboxes: list, tiny: str
) -> None:
    snap = client.snapshot.create(CreateSnapshotParams(name="e2e-pulled", image=tiny))
    assert snap.state == "active" and snap.image_name == tiny and snap.entrypoint == ["/bin/sh"]
    sb = client.create(CreateSandboxFromSnapshotParams(snapshot="e2e-pulled"), timeout=120)
    sandboxes.append(sb)
    assert run_ok(sb, "echo $FOO; pwd") == "from-image\n/srv/app\n"
    sb.delete()
    sandboxes.remove(sb)
    client.snapshot.delete(snap)
    with pytest.raises(DaytonaError, match="manifest unknown"):
        client.snapshot.create(CreateSnapshotParams(name="e2e-missing", image=f"{tiny}-gone"))
    assert client.snapshot.get("e2e-missing").state == "error"
    client.snapshot.delete(client.snapshot.get("e2e-missing"))


def test_a_registry_cannot_send_the_pull_to_the_hosts_own_services(
    server: Server, client: Daytona
) -> None:  # fmt: skip
    """A tenant's registry (this server pulls from any port of 127.0.0.1) redirects
    its manifests to another service on the host's loopback, then to the Cove API
    itself: the pull fails without calling either, and the snapshot's error carries
    nothing of their answers."""
    internal = HttpServer("127.0.0.1", secret_service)
    hostile = [HttpServer("127.0.0.1", redirecting_registry(to))
               for to in (f"http://{internal.host}", server.api_url)]  # fmt: skip
    try:
        for n, registry in enumerate(hostile):
            with pytest.raises(DaytonaError):
                client.snapshot.create(CreateSnapshotParams(name=f"e2e-ssrf-{n}",
                                                            image=f"{registry.host}/x:v1"))
            snap = client.snapshot.get(f"e2e-ssrf-{n}")
            reason = snap.error_reason or ""
            client.snapshot.delete(snap)
            assert snap.state == "error" and registry.asked, reason
            assert SECRET not in reason and "statusCode" not in reason, reason
    finally:
        for each in (internal, *hostile):
            each.close()
    assert internal.asked == []


def test_a_registrys_endless_error_is_cut_short(server: Server, client: Daytona) -> None:
    """A tenant's registry answers with an error message of 16 MiB, which skopeo prints
    whole on one line: the pull fails with the start of it, and neither the sandbox's
    error (in every listing) nor its build log keeps the rest."""
    hostile = HttpServer("127.0.0.1", verbose_registry(16 * 2**20))
    try:
        with pytest.raises(DaytonaError, match="(?i)build_failed"):
            client.create(CreateSandboxFromImageParams(image=f"{hostile.host}/e2e/x:v1"),
                          timeout=120)  # fmt: skip
    finally:
        hostile.close()
    (failed,) = client.list()
    try:
        reason = failed.error_reason or ""
        assert "manifest unknown: MMMM" in reason and len(reason) < 64 * 2**10
        logs = httpx.get(f"{server.api_url}/sandbox/{failed.id}/build-logs",
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=60)  # fmt: skip
        assert logs.status_code == 200 and "manifest unknown: MMMM" in logs.text
        assert len(logs.text) < 256 * 2**10
    finally:
        failed.delete()


def test_hostile_layers_cannot_reach_the_host(
    server: Server, client: Daytona, registry: Registry, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("host file\n")
    mark = f"cove-pwned-{uuid.uuid4().hex[:8]}"
    hostile = layer([
        entry("escape", tarfile.SYMTYPE, target=str(outside)),
        entry("root-link", tarfile.SYMTYPE, target="/"),
        entry("dotdot", tarfile.SYMTYPE, target="../../../../../../.."),
        entry("evil-mem", tarfile.CHRTYPE, mode=0o666),
        file("suid", b"#!/bin/sh\n", mode=0o4755),
    ])
    through = layer([
        file("escape/pwned", b"x"),
        file(f"root-link/tmp/{mark}", b"x"),
        file(f"dotdot/tmp/{mark}-2", b"x"),
        file(f"../../../../tmp/{mark}-3", b"x"),
    ])
    linked = layer([entry("hardlink", tarfile.LNKTYPE, target=str(victim))])
    snaps = []
    for name, layers in (("e2e-hostile", [busybox_layer(), hostile, through]),
                         ("e2e-hardlink", [busybox_layer(), linked])):  # fmt: skip
        ref = registry.push(layout(tmp_path / name, ImageSpec(layers)), f"e2e/{name}")
        try:
            client.snapshot.create(CreateSnapshotParams(name=name, image=ref))
        except DaytonaError:  # refusing the image is fine; escaping is not
            pass
        snaps.append(client.snapshot.get(name))
    assert list(outside.iterdir()) == []
    assert not [p for p in Path("/tmp").iterdir() if p.name.startswith(mark)]
    assert victim.read_text() == "host file\n" and victim.stat().st_nlink == 1
    hostile_snap, linked_snap = snaps
    assert hostile_snap.state == "active", hostile_snap.error_reason
    assert linked_snap.state == "error" and "hardlink" in (linked_snap.error_reason or "")
    assert server.settings.snapshot_dir is not None
    rootfs = server.settings.snapshot_dir / hostile_snap.id / "rootfs"
    assert (rootfs / "escape").is_symlink() and (rootfs / "root-link").is_symlink()
    assert not (rootfs / "evil-mem").exists()  # device nodes are dropped
    inside = [p.relative_to(rootfs) for p in rootfs.rglob(f"{mark}*")]
    assert sorted(str(p) for p in inside) == [f"tmp/{mark}", f"tmp/{mark}-2", f"tmp/{mark}-3"]
    sb = client.create(CreateSandboxFromSnapshotParams(snapshot="e2e-hostile"), timeout=120)
    try:
        assert run_ok(sb, f"cat {outside}/pwned") == "x"  # inside the sandbox's own root
    finally:
        sb.delete()
    for snap in snaps:
        client.snapshot.delete(snap)


def _closed_port() -> int:
    from cove.testing import free_port

    return free_port()
