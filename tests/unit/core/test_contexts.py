"""The build-context store's credentials and clean-up (the S3 wire is in the e2e tests)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.contexts import TTL, AccessDenied, ContextStore, NoSuchKey, PushAccess, TooLarge
from cove.errors import BadRequest
from cove.store.s3_contexts import S3Contexts


def _store(tmp_path: Path) -> ContextStore:
    return ContextStore(tmp_path / "contexts", b"k" * 32, 1024)


def test_abandoned_uploads_and_partial_bodies_are_removed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old = store.start_upload("org-1", f"org-1/{'a' * 32}/context.tar")
    fresh = store.start_upload("org-1", f"org-1/{'b' * 32}/context.tar")
    part = store.new_part_file(store.object_path("org-1", f"org-1/{'a' * 32}/context.tar"))
    part.write_bytes(b"half")
    past = time.time() - TTL - 10
    for path in (store.root / ".uploads" / old, part):
        os.utime(path, (past, past))
    assert store.remove_stale() == 2
    assert not part.exists() and not (store.root / ".uploads" / old).exists()
    assert (store.root / ".uploads" / fresh).is_dir()


def test_an_upload_is_its_organizations_and_keys(tmp_path: Path) -> None:
    store = _store(tmp_path)
    key = f"org-1/{'a' * 32}/context.tar"
    upload = store.start_upload("org-1", key)
    with pytest.raises(AccessDenied):
        store.upload_dir("org-2", key, upload)
    with pytest.raises(AccessDenied):
        store.upload_dir("org-1", f"org-1/{'c' * 32}/context.tar", upload)
    with pytest.raises(AccessDenied):
        store.start_upload("org-1", f"org-2/{'a' * 32}/context.tar")


def test_a_build_reads_only_its_organizations_contexts(tmp_path: Path) -> None:
    store = _store(tmp_path)
    path = store.object_path("org-1", f"org-1/{'a' * 32}/context.tar")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"tar")
    assert store.context("org-1", "a" * 32) == path
    for org, digest in (("org-2", "a" * 32), ("org-1", "../org-2/x"), ("org-1", "b" * 32)):
        with pytest.raises(BadRequest):
            store.context(org, digest)


def test_credentials_expire_and_name_their_organization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    grant = store.push_access("org-1")
    headers = {"x-amz-security-token": grant.session_token}
    with pytest.raises(AccessDenied, match="signed"):  # valid token, but no signature
        store.authorize("PUT", "/", "", headers)
    forged = grant.session_token.replace(".", ".x", 1)
    with pytest.raises(AccessDenied, match="invalid security token"):
        store.authorize("PUT", "/", "", {"x-amz-security-token": forged})
    # a header's Latin-1 text: refused as any forgery (not a TypeError, a 500)
    with pytest.raises(AccessDenied, match="invalid security token"):
        store.authorize("PUT", "/", "", {"x-amz-security-token": forged + "\u00e9"})
    later = time.time() + TTL + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AccessDenied, match="expired"):
        store.authorize("PUT", "/", "", headers)


@pytest.fixture
def bucket() -> Iterator[object]:
    """An in-process S3 bucket (moto) the two replicas' stores share."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
        s3.create_bucket(Bucket="shared")
        yield s3


def _replicas(tmp_path: Path, s3: object) -> tuple[ContextStore, ContextStore]:
    """Two API replicas' stores: data dirs of their own, one bucket."""
    return tuple(  # type: ignore[return-value]
        ContextStore(tmp_path / name / "contexts", b"k" * 32, 20 * 1024 * 1024,
                     S3Contexts("shared", prefix="cove/", client=s3))  # fmt: skip
        for name in ("a", "b")
    )


def _part(store: ContextStore, org: str, key: str, upload: str, number: int, data: bytes) -> None:
    tmp, room = store.receive_part(org, key, upload, number)
    assert room >= len(data)
    tmp.write_bytes(data)
    store.add_part(org, key, upload, number, tmp)


def test_a_context_uploaded_in_parts_through_both_replicas_is_built_on_either(
    tmp_path: Path, bucket: object,
) -> None:  # fmt: skip
    a, b = _replicas(tmp_path, bucket)
    key = f"org-1/{'a' * 32}/context.tar"
    upload = a.start_upload("org-1", key)
    first, second = b"1" * (5 * 1024 * 1024), b"2" * 1000
    _part(b, "org-1", key, upload, 1, first)  # each part through another replica
    _part(a, "org-1", key, upload, 2, second)
    with pytest.raises(BadRequest):
        a.context("org-1", "a" * 32)  # not complete yet
    stored = b.complete_upload("org-1", key, upload, [1, 2])
    assert stored.size == len(first) + len(second)
    assert a.head("org-1", key).size == stored.size  # A never saw it whole
    assert a.fetched("org-1", "a" * 32).read_bytes() == first + second
    with pytest.raises(BadRequest):
        b.context("org-2", "a" * 32)  # another organization's


def test_a_shared_upload_is_its_keys_and_bounded(tmp_path: Path, bucket: object) -> None:
    a, b = _replicas(tmp_path, bucket)
    key = f"org-1/{'a' * 32}/context.tar"
    upload = a.start_upload("org-1", key)
    with pytest.raises(NoSuchKey):  # the bucket ties the upload to its key (its org's)
        b.receive_part("org-2", f"org-2/{'a' * 32}/context.tar", upload, 1)
    with pytest.raises(NoSuchKey):
        b.receive_part("org-1", key, "../../etc", 1)
    _part(a, "org-1", key, upload, 1, b"x" * (5 * 1024 * 1024))
    _tmp, room = b.receive_part("org-1", key, upload, 2)
    assert room == a.max_bytes - 5 * 1024 * 1024  # the parts through A count on B
    b.abort_upload("org-1", key, upload)
    with pytest.raises(NoSuchKey):
        a.complete_upload("org-1", key, upload, [1])


def test_a_single_put_is_shared(tmp_path: Path, bucket: object) -> None:
    a, b = _replicas(tmp_path, bucket)
    key = f"org-1/{'c' * 32}/context.tar"
    tmp = a.new_part_file(a.object_path("org-1", key))
    tmp.write_bytes(b"tar bytes")
    a.put("org-1", key, tmp)
    assert b.fetched("org-1", "c" * 32).read_bytes() == b"tar bytes"


def _kept(store: ContextStore, org: str, digest: str, size: int, used_ago: float) -> Path:
    """A context of ``size`` bytes the organization last used ``used_ago`` seconds ago."""
    path = store.object_path(org, f"{org}/{digest * 32}/context.tar")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - used_ago
    os.utime(path, (when, when))
    return path


def _share(tmp_path: Path) -> ContextStore:
    return ContextStore(tmp_path / "contexts", b"k" * 32, 1000, max_total=2500)


def test_an_organizations_share_makes_room_from_its_least_recently_used(tmp_path: Path) -> None:
    store = _share(tmp_path)
    old = _kept(store, "org-1", "a", 1000, used_ago=3 * TTL)
    older = _kept(store, "org-1", "b", 1000, used_ago=4 * TTL)
    others = _kept(store, "org-2", "c", 1000, used_ago=9 * TTL)
    assert store.reserve("org-1", 500) == 500  # fits: nothing removed
    assert older.exists()
    assert store.reserve("org-1", 1000) == 1000  # the least recently used makes room
    assert not older.exists() and old.exists() and others.exists()
    assert store.reserve("org-1", 1000) == 1000  # (the other two are still coming in)
    assert not old.exists() and others.exists()


def test_contexts_used_lately_or_by_a_build_are_never_removed_for_room(tmp_path: Path) -> None:
    store = _share(tmp_path)
    fresh = _kept(store, "org-1", "a", 1000, used_ago=TTL / 2)
    building = _kept(store, "org-1", "b", 1000, used_ago=3 * TTL)
    with store.pinned([building]):
        assert store.reserve("org-1", 1000) == 500  # only what is left is granted
        with pytest.raises(TooLarge, match="take 2500 bytes of the 2500"):
            store.reserve("org-1", 1)
        assert fresh.exists() and building.exists()
    store.release("org-1", 500)
    assert store.reserve("org-1", 1000) == 1000  # the build is over: its context goes
    assert not building.exists() and fresh.exists()


def test_a_head_or_a_build_marks_a_context_used(tmp_path: Path) -> None:
    store = _share(tmp_path)
    asked = _kept(store, "org-1", "a", 1000, used_ago=3 * TTL)
    built = _kept(store, "org-1", "b", 1000, used_ago=3 * TTL)
    etag = store.stat(asked).etag
    assert store.head("org-1", f"org-1/{'a' * 32}/context.tar").etag == etag  # (unchanged)
    store.context("org-1", "b" * 32)
    assert store.reserve("org-1", 1000) == 500  # neither may go
    assert asked.exists() and built.exists()


def test_unused_contexts_and_abandoned_uploads_are_pruned(tmp_path: Path) -> None:
    store = ContextStore(tmp_path / "contexts", b"k" * 32, 1000, keep_seconds=86400)
    stale = _kept(store, "org-1", "a", 10, used_ago=86400 + 60)
    kept = _kept(store, "org-1", "b", 10, used_ago=86400 - 60)
    pinned = _kept(store, "org-2", "c", 10, used_ago=9 * 86400)
    upload = store.start_upload("org-1", f"org-1/{'d' * 32}/context.tar")
    past = time.time() - TTL - 10
    os.utime(store.root / ".uploads" / upload, (past, past))
    with store.pinned([pinned]):
        assert store.prune() == 2
    assert not stale.exists() and kept.exists() and pinned.exists()
    assert not (store.root / ".uploads" / upload).exists()


def test_parts_of_uploads_and_bodies_coming_in_count(tmp_path: Path) -> None:
    store = _share(tmp_path)
    key = f"org-1/{'a' * 32}/context.tar"
    upload = store.start_upload("org-1", key)
    tmp, room = store.receive_part("org-1", key, upload, 1)
    tmp.write_bytes(b"p" * 1000)
    store.add_part("org-1", key, upload, 1, tmp)
    assert store.reserve("org-2", 1000) == 1000  # another organization's share
    assert store.reserve("org-1", 1000) == 1000
    assert store.reserve("org-1", 1000) == 500  # 1000 in parts, 1000 coming in
    store.abort_upload("org-1", key, upload)
    assert store.reserve("org-1", 1000) == 1000


def _signed_put(grant: PushAccess, path: str) -> dict[str, str]:
    """The headers of a PUT of ``path`` signed with ``grant`` (botocore's signer)."""
    auth = pytest.importorskip("botocore.auth")
    awsrequest = pytest.importorskip("botocore.awsrequest")
    credentials = pytest.importorskip("botocore.credentials")
    req = awsrequest.AWSRequest(method="PUT", url=f"https://cove.example{path}", data=b"x")
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    creds = credentials.Credentials(grant.access_key, grant.secret, grant.session_token)
    auth.SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    return {**{k.lower(): v for k, v in req.headers.items()}, "host": "cove.example"}


def test_credentials_end_with_the_api_key_that_asked_for_them(tmp_path: Path) -> None:
    """Push access asked for with a stored API key works while that key does; once it
    is revoked or expires, the credentials are refused though unexpired themselves.
    COVE_API_KEY's (no key id) are bound by their expiry alone."""
    store = _store(tmp_path)
    working = {"key-1"}
    store.key_works = working.__contains__
    path = "/api/object-storage/s3/cove-contexts/org-1/" + "a" * 32 + "/context.tar"
    keyed = store.push_access("org-1", "key-1")
    operators = store.push_access("org-1")
    assert store.authorize("PUT", path, "", _signed_put(keyed, path))[0] == "org-1"
    working.clear()  # the key is revoked (or expired)
    with pytest.raises(AccessDenied, match="revoked"):
        store.authorize("PUT", path, "", _signed_put(keyed, path))
    assert store.authorize("PUT", path, "", _signed_put(operators, path))[0] == "org-1"
    store.key_works = None  # not told how to check keys: keyed credentials are refused
    with pytest.raises(AccessDenied, match="revoked"):
        store.authorize("PUT", path, "", _signed_put(store.push_access("org-1", "key-1"), path))
