"""Archive and restore through the SDK, with the local store and with S3 (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, DaytonaError
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import KEY, Server, running_server
from tests.s3server import CREDENTIALS, client, moto_server

pytestmark = pytest.mark.e2e
BUCKET = "cove-archives"
# 200 MB: 150 MB in one incompressible file, the rest in 2,000 files of 25 kB.
FILL = """
set -e
mkdir -p /home/daytona/big/many
head -c 150000000 /dev/urandom > /home/daytona/big/one.bin
for i in $(seq 1 2000); do head -c 25000 /dev/urandom > /home/daytona/big/many/f$i; done
ln -s one.bin /home/daytona/big/link
chmod 600 /home/daytona/big/many/f7
"""
# Names, types, modes, owners, sizes and targets (a directory's own size depends on
# its history, not its content), then every file's bytes.
HASH = ("cd /home/daytona/big && find . \\( -type d -printf '%p d %m %U:%G\\n' \\) -o "
        "-printf '%p %y %m %U:%G %s %l\\n' | sort | sha256sum && "
        "find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum")  # fmt: skip


class S3:
    def __init__(self, endpoint: str) -> None:
        self.s3 = client(endpoint)

    def key(self, sandbox_id: str) -> str:
        return f"sbx/{sandbox_id}.tar.zst"

    def read(self, sandbox_id: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=self.key(sandbox_id))["Body"].read()

    def write(self, sandbox_id: str, blob: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=self.key(sandbox_id), Body=blob)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, S3]]:
    with moto_server() as endpoint:
        S3(endpoint).s3.create_bucket(Bucket=BUCKET)
        env = {**CREDENTIALS, "COVE_ARCHIVE_S3_BUCKET": BUCKET,
               "COVE_ARCHIVE_S3_ENDPOINT": endpoint, "COVE_ARCHIVE_S3_PREFIX": "sbx/"}  # fmt: skip
        with running_server(tmp_path_factory.mktemp("cove-s3"), 3, env) as srv:
            yield srv, S3(endpoint)
        assert S3(endpoint).s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


class Blobs:
    """Read and overwrite a sandbox's stored archive, whichever store it is in."""

    def __init__(self, server: Server, s3: S3 | None) -> None:
        self.server, self.s3 = server, s3

    def read(self, sandbox_id: str) -> bytes:
        if self.s3:
            return self.s3.read(sandbox_id)
        return (self.server.data_dir / "archives" / f"{sandbox_id}.tar.zst").read_bytes()

    def write(self, sandbox_id: str, blob: bytes) -> None:
        if self.s3:
            self.s3.write(sandbox_id, blob)
        else:
            (self.server.data_dir / "archives" / f"{sandbox_id}.tar.zst").write_bytes(blob)


@pytest.fixture(params=["local", "s3"])
def setup(request: pytest.FixtureRequest, server: Server) -> Iterator[tuple[Daytona, Blobs]]:
    if request.param == "local":
        srv, s3 = server, None
    else:
        srv, s3 = request.getfixturevalue("s3_server")
    client_ = Daytona(DaytonaConfig(api_key=KEY, api_url=srv.api_url))
    yield client_, Blobs(srv, s3)


def _sh(sb, script: str, timeout: int = 300) -> str:
    result = sb.process.exec(script, timeout=timeout)
    assert result.exit_code == 0, result.result
    return result.result


def test_200_mb_restore_byte_identical(setup: tuple[Daytona, Blobs]) -> None:
    daytona, blobs = setup
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    try:
        _sh(sb, FILL)
        before = _sh(sb, HASH)
        sb.archive()
        sb.refresh_data()
        assert sb.state == SandboxState.ARCHIVED
        assert len(blobs.read(sb.id)) > 150_000_000
        sb.start(timeout=300)
        assert _sh(sb, HASH) == before
    finally:
        sb.delete()


def test_corrupt_archive_is_reported_and_kept(setup: tuple[Daytona, Blobs]) -> None:
    daytona, blobs = setup
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    try:
        _sh(sb, "head -c 3000000 /dev/urandom > /home/daytona/noise")
        sb.archive()
        blob = bytearray(blobs.read(sb.id))
        blob[len(blob) // 2] ^= 0xFF
        blobs.write(sb.id, bytes(blob))
        with pytest.raises(DaytonaError, match="restore failed"):
            sb.start()
        got = daytona.get(sb.id)
        assert got.state == SandboxState.ERROR and "restore failed" in (got.error_reason or "")
        assert blobs.read(sb.id) == bytes(blob)  # kept as it was
    finally:
        sb.delete()
