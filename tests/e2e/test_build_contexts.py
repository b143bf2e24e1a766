"""Build contexts (``Image.add_local_file`` / ``add_local_dir``) uploaded through the
official SDK to Cove's own S3 subset, against a real ``cove serve``.

The SDK's uploader (obstore) speaks only HTTPS; the test server is plain HTTP on
loopback, so its S3 client is allowed HTTP here (a deployment serves HTTPS).
Everything else is the SDK's own code.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from daytona import Daytona, DaytonaConfig, Image
from daytona._sync import object_storage as sdk_storage
from daytona._sync.snapshot import SnapshotService
from obstore.store import S3Store

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _http_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def store(*args: object, client_options: dict | None = None, **kw: object) -> S3Store:
        return S3Store(*args, client_options={**(client_options or {}), "allow_http": True},
                       **kw)  # type: ignore[arg-type]  # fmt: skip

    monkeypatch.setattr(sdk_storage, "S3Store", store)


def _key(server: Server, organization: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "cove.cli.main", "keys", "create", "--org", organization,
         "--data-dir", str(server.data_dir)], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def other(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=_key(server, "contexts-other"), api_url=server.api_url))


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
