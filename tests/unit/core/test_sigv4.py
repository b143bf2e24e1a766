"""Cove's SigV4 check against botocore's signer (the reference implementation)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from cove.core import sigv4

auth = pytest.importorskip("botocore.auth")
awsrequest = pytest.importorskip("botocore.awsrequest")
credentials = pytest.importorskip("botocore.credentials")

URL = "https://cove.example:3000/api/object-storage/s3/cove-contexts/org-1/abc/context.tar"


def _signed(body: bytes, secret: str = "s3cret", query: str = "partNumber=2&uploadId=u1"):
    req = awsrequest.AWSRequest(method="PUT", url=f"{URL}?{query}", data=body)
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    req.headers["x-amz-security-token"] = "tok"
    auth.SigV4Auth(credentials.Credentials("AK", secret, "tok"), "s3", "us-east-1").add_auth(req)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = "cove.example:3000"
    return headers, query


def _verify(headers: dict, query: str, secret: str = "s3cret", now: datetime | None = None):
    return sigv4.verify(method="PUT", path=URL.split(":3000", 1)[1], query=query,
                        headers=headers, secret=secret, now=now)  # fmt: skip


def test_a_botocore_signature_verifies_and_declares_its_payload() -> None:
    headers, query = _signed(b"part")
    assert _verify(headers, query) == hashlib.sha256(b"part").hexdigest()


@pytest.mark.parametrize("change", ["secret", "query", "header", "stale"])
def test_anything_changed_is_refused(change: str) -> None:
    headers, query = _signed(b"part")
    secret, now = "s3cret", None
    if change == "secret":
        secret = "other"
    elif change == "query":
        query = "partNumber=3&uploadId=u1"
    elif change == "header":
        headers["x-amz-security-token"] = "tok2"
    else:
        now = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(sigv4.SignatureError):
        _verify(headers, query, secret, now)


def test_unsigned_requests_are_refused() -> None:
    with pytest.raises(sigv4.SignatureError):
        sigv4.verify(method="PUT", path="/", query="", headers={}, secret="s")
