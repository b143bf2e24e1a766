"""Build contexts (``Image.add_local_file`` / ``add_local_dir``) uploaded through the
official SDK to Cove's own S3 subset, against a real ``cove serve``.

The SDK's uploader (obstore) speaks only HTTPS; the test server is plain HTTP on
loopback, so its S3 client is allowed HTTP here (a deployment serves HTTPS).
Everything else is the SDK's own code.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
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
from daytona._sync import object_storage as sdk_storage
from daytona._sync.snapshot import SnapshotService
from obstore.store import S3Store

from cove.testing import ServerProcess
from tests.e2e.conftest import KEY, Server, run_ok

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def store(*args: object, client_options: dict | None = None, **kw: object) -> S3Store:
        return S3Store(*args, client_options={**(client_options or {}), "allow_http": True},
                       **kw)  # type: ignore[arg-type]  # fmt: skip

    monkeypatch.setattr(sdk_storage, "S3Store", store)


def _key(server: Server, organization: str) -> str:
    return server.org_key(organization)


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    return _key(server, "contexts-other")


@pytest.fixture(scope="module")
def other(server: Server, other_key: str) -> Daytona:
    return Daytona(DaytonaConfig(api_key=other_key, api_url=server.api_url))


def _post_build(server: Server, key: str, name: str, dockerfile: str, hashes: list[str]):
    body = {"name": name, "buildInfo": {"dockerfileContent": dockerfile, "contextHashes": hashes}}
    return httpx.post(f"{server.api_url}/snapshots", json=body,
                      headers={"Authorization": f"Bearer {key}"})  # fmt: skip


@pytest.fixture
def context_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40000)  # 10 MB: multipart
    yield root


def _upload(client: Daytona, image: Image) -> list[str]:
    return SnapshotService.process_image_context(client._object_storage_api, image)


def _stored(server: Server, org: str, digest: str) -> Path:
    return server.data_dir / "contexts" / org / f"{digest}.tar"


def _store(client: Daytona, **overrides: str) -> tuple[S3Store, str]:
    grant = client._object_storage_api.get_push_access()
    fields = {"access_key_id": grant.access_key, "secret_access_key": grant.secret,
              "session_token": grant.session_token, **overrides}  # fmt: skip
    store = S3Store(bucket=grant.bucket, endpoint=grant.storage_url, region=grant.region,
                    client_options={"allow_http": True, "timeout": timedelta(seconds=30)},
                    retry_config={"max_retries": 0}, **fields)  # fmt: skip
    return store, grant.organization_id


def test_contexts_upload_once_content_addressed(
    server: Server, daytona: Daytona, context_dir: Path
) -> None:
    image = Image.base("cove-default").add_local_dir(str(context_dir), "/app").add_local_file(
        str(context_dir / "a.txt"), "/etc/a.txt")  # fmt: skip
    hashes = _upload(daytona, image)
    org = daytona._object_storage_api.get_push_access().organization_id
    paths = [_stored(server, org, h) for h in hashes]
    assert len(set(hashes)) == 2 and all(p.is_file() for p in paths)
    before = [p.stat().st_mtime_ns for p in paths]
    assert _upload(daytona, image) == hashes  # found by HEAD: not uploaded again
    assert [p.stat().st_mtime_ns for p in paths] == before
    assert paths[0].stat().st_size > 10_000_000
    assert paths[0].stat().st_mode & 0o077 == 0


def test_an_organizations_contexts_take_a_bounded_share_and_make_room(tmp_path: Path) -> None:
    """COVE_MAX_CONTEXTS_MB: an upload that does not fit, while the organization's
    contexts were all used within the hour, is refused with the reason; once one is
    older, it is removed to make room (the SDK uploads it again when a build needs it)."""
    (tmp_path / "data").mkdir()
    limits = {"COVE_MAX_CONTEXT_MB": "1", "COVE_MAX_CONTEXTS_MB": "2", "COVE_NETWORK": "none"}
    server = ServerProcess(tmp_path / "data", api_key=KEY, env=limits)
    images = []
    for n in range(3):
        (tmp_path / f"f{n}").write_bytes(os.urandom(700_000))
        images.append(Image.base("cove-default").add_local_file(str(tmp_path / f"f{n}"), "/f"))
    try:
        server.start()
        client = Daytona(DaytonaConfig(api_key=server.org_key("share"), api_url=server.api_url))
        org = client._object_storage_api.get_push_access().organization_id
        first, second = (_upload(client, image)[0] for image in images[:2])
        with pytest.raises(Exception, match="COVE_MAX_CONTEXTS_MB"):  # (obstore's own error)
            _upload(client, images[2])
        stored = server.data_dir / "contexts" / org
        assert sorted(p.name for p in stored.iterdir()) == sorted([f"{first}.tar", f"{second}.tar"])
        long_ago = time.time() - 7200
        os.utime(stored / f"{first}.tar", (long_ago, long_ago))
        third = _upload(client, images[2])[0]
        assert sorted(p.name for p in stored.iterdir()) == sorted([f"{second}.tar", f"{third}.tar"])
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_push_access_is_scoped_and_never_the_api_key(
    server: Server, daytona: Daytona, other: Daytona, context_dir: Path
) -> None:
    grant = daytona._object_storage_api.get_push_access()
    assert server.api_key not in (grant.access_key, grant.secret, grant.session_token)
    hashes = _upload(daytona, Image.base("cove-default").add_local_file(
        str(context_dir / "a.txt"), "/a.txt"))  # fmt: skip
    theirs, their_org = _store(other)
    assert their_org != grant.organization_id
    key = f"{grant.organization_id}/{hashes[0]}/context.tar"
    with pytest.raises(Exception, match="403|AccessDenied|denied"):
        theirs.head(key)
    with pytest.raises(Exception, match="403|AccessDenied|denied"):
        theirs.put(key, b"overwritten")
    assert _stored(server, grant.organization_id, hashes[0]).read_bytes() != b"overwritten"


@pytest.mark.parametrize("tamper", ["secret_access_key", "session_token"])
def test_forged_credentials_are_refused(daytona: Daytona, tamper: str) -> None:
    grant = daytona._object_storage_api.get_push_access()
    bad = {"secret_access_key": "0" * 64,
           "session_token": grant.session_token.replace(".", ".0", 1)}[tamper]  # fmt: skip
    store, org = _store(daytona, **{tamper: bad})
    with pytest.raises(Exception, match="403|AccessDenied|denied"):
        store.put(f"{org}/{hashlib.md5(b'x').hexdigest()}/context.tar", b"x")


def test_only_context_keys_may_be_written(daytona: Daytona) -> None:
    store, org = _store(daytona)
    aaa = "a" * 32
    for key in (f"{org}/notahash/context.tar", "x/y/z", f"{org}/{aaa}/other.tar",
                f"{org}/{aaa}/context.tar/more", f"{org}x/{aaa}/context.tar"):  # fmt: skip
        with pytest.raises(Exception, match="403|AccessDenied|denied|400|InvalidRequest"):
            store.put(key, b"data")


def test_image_with_local_files_builds_and_runs(
    daytona: Daytona, sandboxes: list, context_dir: Path
) -> None:
    image = (
        Image.base("cove-default")
        .add_local_file(str(context_dir / "a.txt"), "/etc/cove-a.txt")
        .add_local_dir(str(context_dir), "/app")
        .env({"GREETING": "hi there"})
        .workdir("/app")
        .run_commands("echo $GREETING > built.txt", "id -un > /app/ran-as.txt")
        .entrypoint(["/bin/sleep", "infinity"])
    )
    logs: list[str] = []
    sb = daytona.create(CreateSandboxFromImageParams(image=image),
                        on_snapshot_create_logs=logs.append, timeout=600)  # fmt: skip
    sandboxes.append(sb)
    assert run_ok(sb, "cat /etc/cove-a.txt") == "alpha\n"
    assert run_ok(sb, "cat /app/a.txt /app/built.txt /app/ran-as.txt") == "alpha\nhi there\nroot\n"
    digest = hashlib.sha256((context_dir / "sub" / "b.bin").read_bytes()).hexdigest()
    assert run_ok(sb, "sha256sum < /app/sub/b.bin").split()[0] == digest
    assert run_ok(sb, "pwd").strip() == "/app"
    assert any("COPY" in line for line in logs)


def _name() -> str:
    return f"ctx-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def snapshots(daytona: Daytona) -> Iterator[list[str]]:
    """Names of snapshots to delete after the test, whatever happens."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            daytona.snapshot.delete(name)
        except Exception:  # noqa: BLE001 - never made, or already gone
            pass


def test_snapshot_create_streams_logs_records_config_and_is_cached(
    daytona: Daytona, sandboxes: list, snapshots: list[str], context_dir: Path
) -> None:
    token = uuid.uuid4().hex  # this image was never built before
    image = (
        Image.base("cove-default")
        .add_local_file(str(context_dir / "a.txt"), "/opt/a.txt")
        .env({"TOKEN": token})
        .workdir("/srv")
        .run_commands("for i in 1 2 3; do echo line-$i-$TOKEN; done", "cp /opt/a.txt here.txt")
        .entrypoint(["/bin/sleep"])
        .cmd(["infinity"])
    )
    first, second = _name(), _name()
    snapshots += [first, second]
    logs: list[str] = []
    snap = daytona.snapshot.create(CreateSnapshotParams(name=first, image=image),
                                   on_logs=logs.append, timeout=600)  # fmt: skip
    assert snap.state == "active"
    assert snap.entrypoint == ["/bin/sleep"]
    assert f"line-3-{token}" in "\n".join(logs)
    assert logs[0].startswith(f"Creating snapshot {first}") and "BUILDING" in logs[0], logs[:3]

    logs2: list[str] = []
    again = daytona.snapshot.create(CreateSnapshotParams(name=second, image=image),
                                    on_logs=logs2.append, timeout=600)  # fmt: skip
    assert again.state == "active"
    text = "\n".join(logs2)
    assert "no rebuild" in text and f"line-1-{token}" not in text

    sb = daytona.create(CreateSandboxFromSnapshotParams(snapshot=second), timeout=120)
    sandboxes.append(sb)
    assert run_ok(sb, "cat here.txt; echo $TOKEN; pwd") == f"alpha\n{token}\n/srv\n"


def test_a_failing_run_is_build_failed_with_its_reason(
    daytona: Daytona, snapshots: list[str]
) -> None:
    name = _name()
    snapshots.append(name)
    image = Image.base("cove-default").run_commands(f"echo oops-{name} >&2; exit 7")
    with pytest.raises(DaytonaError, match=f"exit code 7[\\s\\S]*oops-{name}"):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), timeout=600)
    snap = daytona.snapshot.get(name)
    assert snap.state == "build_failed" and "exit code 7" in (snap.error_reason or "")
    with pytest.raises(DaytonaError):  # nothing to create a sandbox from
        daytona.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=60)


def test_another_organization_cannot_build_from_your_context(
    server: Server, daytona: Daytona, other: Daytona, other_key: str, context_dir: Path
) -> None:
    image = Image.base("cove-default").add_local_file(str(context_dir / "a.txt"), "/a.txt")
    mine = _upload(daytona, image)
    r = _post_build(server, other_key, _name(), image.dockerfile(), mine)
    assert r.status_code == 400 and "was not uploaded" in r.json()["message"]
    body = {"buildInfo": {"dockerfileContent": image.dockerfile(), "contextHashes": mine}}
    r = httpx.post(f"{server.api_url}/sandbox", json=body,
                   headers={"Authorization": f"Bearer {other_key}"})  # fmt: skip
    assert r.status_code == 400 and "was not uploaded" in r.json()["message"]
    assert not [s for s in other.snapshot.list().items if s.name.startswith("ctx-")]
    assert not list(other.list())


def _hostile_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("ctx/../../../../../../tmp/cove-escaped-dotdot", b"escaped")
        add("/tmp/cove-escaped-absolute", b"escaped")
        add("ctx/link", kind=tarfile.SYMTYPE, link="/tmp")
        add("ctx/link/cove-escaped-symlink", b"escaped")
        add("ctx/dev", kind=tarfile.CHRTYPE)
        add("ctx/ok.txt", b"fine")
    return buf.getvalue()


def test_hostile_context_archives_stay_inside_the_build(
    server: Server, daytona: Daytona, snapshots: list[str], sandboxes: list
) -> None:
    store, org = _store(daytona)
    digest = hashlib.md5(uuid.uuid4().bytes).hexdigest()
    store.put(f"{org}/{digest}/context.tar", _hostile_tar())
    name = _name()
    snapshots.append(name)
    dockerfile = 'FROM cove-default\nCOPY ["ctx", "/dest"]\nADD ["tmp", "/dest2"]\n'
    r = _post_build(server, KEY, name, dockerfile, [digest])
    assert r.status_code == 200, r.text
    for _ in range(600):
        snap = daytona.snapshot.get(name)
        if snap.state not in ("building", "pending"):
            break
        time.sleep(0.5)
    assert snap.state == "active", snap.error_reason
    for leaked in ("cove-escaped-dotdot", "cove-escaped-absolute", "cove-escaped-symlink"):
        assert not Path("/tmp", leaked).exists()
    sb = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=120)
    sandboxes.append(sb)
    listing = run_ok(sb, "cd /dest && find . | sort; ls /dest2; ls /tmp")
    assert "./ok.txt" in listing and "./dev" not in listing
    assert "cove-escaped-symlink" not in listing and "cove-escaped-dotdot" not in listing
    assert run_ok(sb, "readlink /dest/link") == "/tmp\n"


def test_user_arg_label_chown_and_add_of_an_archive(
    daytona: Daytona, snapshots: list[str], sandboxes: list, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx2"
    (ctx / "pkg").mkdir(parents=True)
    (ctx / "a.txt").write_text("owned\n")
    (ctx / "pkg" / "inside.txt").write_text("unpacked\n")
    with tarfile.open(ctx / "pkg.tar.gz", "w:gz") as tar:
        tar.add(ctx / "pkg", arcname="pkg")
    image = Image.base("cove-default").dockerfile_commands([
        "ARG WHO=daytona",
        "ARG DIR=/work",
        "COPY --chown=daytona:daytona a.txt ${DIR}/a.txt",
        "COPY pkg.tar.gz /tmp/pkg-copy.tar.gz",
        "ADD pkg.tar.gz /opt/unpacked/",
        "LABEL team=cove",
        "USER ${WHO}",
        "RUN id -un > /home/daytona/who.txt && echo ${DIR:-none} >> /home/daytona/who.txt",
    ], context_dir=str(ctx))  # fmt: skip
    name = _name()
    snapshots.append(name)
    daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), timeout=600)
    sb = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=120)
    sandboxes.append(sb)
    assert run_ok(sb, "id -un") == "daytona\n"
    assert run_ok(sb, "cat /home/daytona/who.txt") == "daytona\n/work\n"
    assert run_ok(sb, "stat -c %U /work/a.txt; cat /work/a.txt") == "daytona\nowned\n"
    assert run_ok(sb, "cat /opt/unpacked/pkg/inside.txt") == "unpacked\n"


def test_the_dockerfiles_user_is_the_sandboxs(daytona: Daytona, sandboxes: list) -> None:
    image = Image.base("cove-default").dockerfile_commands(["USER root", "RUN id -un"])
    sb = daytona.create(CreateSandboxFromImageParams(image=image), timeout=600)
    sandboxes.append(sb)
    assert run_ok(sb, "id -un") == "root\n"
