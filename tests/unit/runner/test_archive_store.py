"""Both archive stores: local directory and S3 (a real moto server on loopback)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.storage.archive_store import CHUNK, ArchiveStore, LocalArchiveStore
from cove.runner.storage.s3_archive import S3ArchiveStore
from tests.s3server import client, moto_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArchiveStore:
    if request.param == "local":
        return LocalArchiveStore(tmp_path / "archives")
    s3 = client(request.getfixturevalue("s3_endpoint"))
    bucket = f"b-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    return S3ArchiveStore(bucket, prefix="cove/", client=s3)


def _ok() -> None:
    pass


def test_round_trip_of_a_multi_part_stream(store: ArchiveStore) -> None:
    blob = os.urandom(2 * CHUNK + 12345)
    assert not store.exists("a") and store.size("a") is None
    assert store.put("a", io.BytesIO(blob), _ok) == len(blob)
    assert store.exists("a") and store.size("a") == len(blob)
    with store.get("a") as stream:
        assert stream.read() == blob
    assert store.keys() == {"a"}
    store.delete("a")
    store.delete("a")  # idempotent
    assert not store.exists("a") and store.keys() == set()


def test_empty_stream(store: ArchiveStore) -> None:
    assert store.put("e", io.BytesIO(b""), _ok) == 0
    with store.get("e") as stream:
        assert stream.read() == b""


def test_failed_check_stores_nothing(store: ArchiveStore) -> None:
    def bad() -> None:
        raise RuntimeBackendError("tar exited 2")

    with pytest.raises(RuntimeBackendError, match="tar exited 2"):
        store.put("x", io.BytesIO(os.urandom(CHUNK + 1)), bad)
    assert not store.exists("x") and store.keys() == set()


def test_missing_archive(store: ArchiveStore) -> None:
    with pytest.raises(RuntimeBackendError):
        with store.get("nope"):
            pass


def test_local_remove_partial_removes_only_that_keys_temp_files(tmp_path: Path) -> None:
    store = LocalArchiveStore(tmp_path)
    store.put("a", io.BytesIO(b"done"), _ok)
    killed = [tmp_path / ".a.tar.zst.4242.tmp", tmp_path / ".a.tar.zst.77.tmp"]
    other = tmp_path / ".ab.tar.zst.4242.tmp"  # another sandbox's archive in progress
    for path in [*killed, other]:
        path.write_bytes(b"half")
    store.remove_partial("a")
    assert not any(p.exists() for p in killed)
    assert other.exists() and store.exists("a")


def test_s3_remove_partial_aborts_only_that_keys_uploads(s3_endpoint: str) -> None:
    s3 = client(s3_endpoint)
    bucket = f"b-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=bucket)
    store = S3ArchiveStore(bucket, prefix="cove/", client=s3)
    for name in ("cove/a.tar.zst", "cove/a.tar.zst", "cove/ab.tar.zst"):  # as a kill left them
        upload = s3.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
        s3.upload_part(Bucket=bucket, Key=name, UploadId=upload, PartNumber=1, Body=b"x")
    store.remove_partial("a")
    left = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["cove/ab.tar.zst"]
    store.delete("ab")  # delete takes half-written copies too
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
