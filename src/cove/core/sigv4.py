"""Checking AWS Signature Version 4 on requests to Cove's own S3 subset
(see :mod:`cove.core.contexts`): header-signed requests only, as the SDK's
uploader (``obstore``) sends them.

The signing key is derived from the secret Cove handed out with the
credentials; the request is accepted only if its signature over the method,
path, query, signed headers and declared payload hash matches, and its date is
within :data:`SKEW` of now.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote

SKEW = timedelta(minutes=15)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<scope>\d{8}/[^/]+/s3/aws4_request),"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


class SignatureError(Exception):
    """The request is not signed, or not signed with the expected secret."""


def access_key_of(authorization: str | None) -> str:
    """The access key id an ``Authorization`` header claims.

    Raises:
        SignatureError: not a SigV4 header.
    """
    match = _AUTH.match(authorization or "")
    if match is None:
        raise SignatureError("the request is not signed with AWS4-HMAC-SHA256")
    return match.group("key")


def verify(
    *, method: str, path: str, query: str, headers: Mapping[str, str], secret: str,
    now: datetime | None = None,
) -> str:  # fmt: skip
    """Check the request's signature; returns the payload hash it declares
    (``x-amz-content-sha256``: a hex SHA-256 the caller must compare with the body,
    or ``UNSIGNED-PAYLOAD``).

    Args:
        path: the raw (percent-encoded) request path, as sent.
        headers: the request headers, names in lower case.

    Raises:
        SignatureError: missing, malformed, stale or wrong.
    """
    match = _AUTH.match(headers.get("authorization", ""))
    if match is None:
        raise SignatureError("the request is not signed with AWS4-HMAC-SHA256")
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError("x-amz-date is missing or malformed") from exc
    if abs((now or datetime.now(UTC)) - when) > SKEW:
        raise SignatureError("the request's date is too far from the server's time")
    scope = match.group("scope")
    if not scope.startswith(amz_date[:8]):
        raise SignatureError("the credential scope's date is not the request's")
    signed = match.group("headers").split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        raise SignatureError("host and x-amz-date must be signed")
    payload = headers.get("x-amz-content-sha256", "")
    if not payload:
        raise SignatureError("x-amz-content-sha256 is missing")
    canonical = "\n".join([
        method.upper(), path or "/", _canonical_query(query),
        "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed),
        ";".join(signed), payload,
    ])  # fmt: skip
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest(),
    ])  # fmt: skip
    day, region, service, _ = scope.split("/")
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group("sig")):
        raise SignatureError("the request signature does not match")
    return payload


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)
