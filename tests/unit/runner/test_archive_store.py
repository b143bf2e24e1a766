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
