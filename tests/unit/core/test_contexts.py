"""The build-context store's credentials and clean-up (the S3 wire is in the e2e tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cove.core.contexts import TTL, AccessDenied, ContextStore
from cove.errors import BadRequest


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
    later = time.time() + TTL + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AccessDenied, match="expired"):
        store.authorize("PUT", "/", "", headers)
