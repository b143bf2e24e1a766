"""An :class:`~cove.runner.storage.archive_store.ArchiveStore` in an S3(-compatible) bucket.

Objects are ``<prefix><key>.tar.zst`` (another ``suffix`` may be given). ``put``
streams through a multipart upload that is completed only after the caller's check
passed, and aborted otherwise, so a broken archive never becomes an object. Needs ``boto3``
(``pip install 'cove[s3]'``); credentials come from the usual AWS sources
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from cove.errors import RuntimeBackendError
from cove.runner.storage.archive_store import CHUNK, SUFFIX


class S3ArchiveStore:
    def __init__(
        self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
        region: str | None = None, client: Any = None, suffix: str = SUFFIX,
    ) -> None:  # fmt: skip
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise RuntimeBackendError("the S3 archive store needs boto3 (cove[s3])") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix
        self.suffix = suffix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}{self.suffix}"

    def put(self, key: str, stream: IO[bytes], check: Callable[[], None]) -> int:
        name = self._name(key)
        with _s3_errors(f"upload {name}"):
            upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        try:
            parts, size = self._parts(name, upload, stream)
            check()
            with _s3_errors(f"upload {name}"):
                self.s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload,
                    MultipartUpload={"Parts": parts},
                )  # fmt: skip
            return size
        except BaseException:
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise

    def _parts(self, name: str, upload: str, stream: IO[bytes]) -> tuple[list[dict], int]:
        parts: list[dict[str, Any]] = []
        size = 0
        while True:
            chunk = _read_full(stream, CHUNK)
            if not chunk and parts:
                return parts, size
            number = len(parts) + 1
            with _s3_errors(f"upload {name}"):
                done = self.s3.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload, PartNumber=number, Body=chunk
                )
            parts.append({"ETag": done["ETag"], "PartNumber": number})
            size += len(chunk)
            if len(chunk) < CHUNK:
                return parts, size

    @contextmanager
    def get(self, key: str) -> Iterator[IO[bytes]]:
        with _s3_errors(f"archive of {key}"):
            body = self.s3.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        try:
            yield body
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError (404) or transport
            if _status(exc) == 404:
                return None
            raise RuntimeBackendError(f"S3 head {self._name(key)}: {exc}") from exc
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        with _s3_errors(f"delete {self._name(key)}"):
            self.s3.delete_object(Bucket=self.bucket, Key=self._name(key))
        self.remove_partial(key)

    def remove_partial(self, key: str) -> None:
        """Abort the multipart uploads of ``key`` a killed server left open (their parts
        are stored, and billed, until aborted)."""
        name = self._name(key)
        with _s3_errors(f"abort uploads of {name}"):
            pages = self.s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=name
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] == name:
                        self.s3.abort_multipart_upload(
                            Bucket=self.bucket, Key=name, UploadId=upload["UploadId"]
                        )

    def keys(self) -> set[str]:
        found: set[str] = set()
        with _s3_errors("list archives"):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix) :]
                    if name.endswith(self.suffix) and "/" not in name:
                        found.add(name[: len(name) - len(self.suffix)])
        return found


def _read_full(stream: IO[bytes], size: int) -> bytes:
    """Read up to ``size`` bytes, fewer only at the end of the stream."""
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeBackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore raises many unrelated types
        raise RuntimeBackendError(f"S3 {what} failed: {exc}") from exc
