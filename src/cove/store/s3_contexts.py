"""Build contexts in an S3(-compatible) bucket (``<prefix>contexts/<org>/<hash>.tar``),
shared by the API replicas: implements :class:`cove.core.contexts.SharedObjects`.

A multipart upload through Cove's S3 subset is the bucket's own multipart upload
(its upload id is the bucket's), so its parts may each reach another replica. Needs
``boto3`` (``pip install 'cove[s3]'``); credentials come from the usual AWS sources.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cove.core.contexts import NoSuchKey, TooLarge
from cove.errors import RuntimeBackendError

READ = 1024 * 1024


class S3Contexts:
    def __init__(
        self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
        region: str | None = None, client: Any = None,
    ) -> None:  # fmt: skip
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise RuntimeBackendError("shared build contexts need boto3 (cove[s3])") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.s3 = client
        self.bucket = bucket
        self.prefix = f"{prefix}contexts/"

    def _key(self, name: str) -> str:
        return self.prefix + name

    def size(self, name: str) -> int | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError (404) or transport
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise RuntimeBackendError(f"S3 head {self._key(name)}: {exc}") from exc
        return int(head["ContentLength"])

    def upload(self, name: str, path: Path) -> None:
        with _s3_errors(f"upload {self._key(name)}"):
            self.s3.upload_file(str(path), self.bucket, self._key(name))

    def download(self, name: str, into: IO[bytes], limit: int) -> None:
        with _s3_errors(f"download {self._key(name)}"):
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        try:
            got = 0
            while chunk := body.read(READ):
                got += len(chunk)
                if got > limit:
                    raise TooLarge(f"a context may be at most {limit} bytes")
                into.write(chunk)
        finally:
            body.close()

    def start(self, name: str) -> str:
        with _s3_errors(f"upload {self._key(name)}"):
            reply = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self._key(name))
        return str(reply["UploadId"])

    def parts(self, name: str, upload_id: str) -> dict[int, tuple[str, int]]:
        self._check(name, upload_id)
        found: dict[int, tuple[str, int]] = {}
        with _s3_errors(f"parts of {self._key(name)}"):
            pages = self.s3.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=self._key(name), UploadId=upload_id)  # fmt: skip
            for page in pages:
                for part in page.get("Parts", []):
                    found[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
        return found

    def _check(self, name: str, upload_id: str) -> None:
        """Raises NoSuchKey unless ``upload_id`` is an upload of this very object (not
        every S3-compatible store ties an upload's parts to its key)."""
        key = self._key(name)
        with _s3_errors(f"uploads of {key}"):
            pages = self.s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=key)  # fmt: skip
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"] == key and upload["UploadId"] == upload_id:
                        return
        raise NoSuchKey(upload_id)

    def put_part(self, name: str, upload_id: str, number: int, path: Path) -> str:
        self._check(name, upload_id)
        with _s3_errors(f"upload {self._key(name)}"), path.open("rb") as body:
            reply = self.s3.upload_part(Bucket=self.bucket, Key=self._key(name), Body=body,
                                        UploadId=upload_id, PartNumber=number)  # fmt: skip
        return str(reply["ETag"])

    def complete(self, name: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        with _s3_errors(f"upload {self._key(name)}"):
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self._key(name), UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            )  # fmt: skip

    def abort(self, name: str, upload_id: str) -> None:
        self._check(name, upload_id)
        with _s3_errors(f"abort {self._key(name)}"):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self._key(name),
                                           UploadId=upload_id)  # fmt: skip

    def remove_stale(self, before: float) -> int:
        """Abort the multipart uploads begun before ``before`` (epoch seconds): their
        credentials expired, so no one finishes them; returns how many."""
        stale = 0
        with _s3_errors("list context uploads"):
            pages = self.s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix)  # fmt: skip
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < before:
                        self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])  # fmt: skip
                        stale += 1
        return stale


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """An unknown upload is S3's NoSuchUpload (a 404 to the client); other failures are
    the backend's."""
    try:
        yield
    except (NoSuchKey, TooLarge, RuntimeBackendError):
        raise
    except Exception as exc:  # noqa: BLE001 - botocore raises many unrelated types
        if _code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
            raise NoSuchKey(what) from exc
        raise RuntimeBackendError(f"S3 {what} failed: {exc}") from exc
