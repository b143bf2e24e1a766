"""Registry passwords are sealed at rest (AES-GCM under the data dir's registry.key):
the database never holds one in the clear, a sealed value opens only in its own row
and under its own key, and rows written before sealing read (and get sealed) as they
are."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from cove.core import imageref
from cove.core.config import Settings
from cove.core.registries import RegistryService
from cove.errors import BadRequest
from cove.server import open_sealer
from cove.store.keys import SqlKeyStore
from cove.store.registries import SqlRegistryStore
from cove.store.sealing import PREFIX, AesGcmSealer

SECRET = "s3cret-Pa55word"
IMAGE = imageref.parse("ghcr.io/team/app:v1")


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def service(db: Engine, key: bytes) -> RegistryService:
    return RegistryService(SqlRegistryStore(db), AesGcmSealer(key))


@pytest.fixture
def org(db: Engine) -> str:
    return SqlKeyStore(db).ensure_organization("a")


def stored(db: Engine, registry_id: str) -> str:
    with db.connect() as conn:
        return conn.execute(text("SELECT password FROM docker_registries WHERE id = :id"),
                            {"id": registry_id}).scalar_one()  # fmt: skip


def set_stored(db: Engine, registry_id: str, value: str) -> None:
    with db.begin() as conn:
        conn.execute(text("UPDATE docker_registries SET password = :p WHERE id = :id"),
                     {"p": value, "id": registry_id})  # fmt: skip


def test_the_database_never_holds_the_password(db: Engine, service: RegistryService,
                                               org: str) -> None:  # fmt: skip
    made = service.create(org, name="r", url="ghcr.io", username="u", password=SECRET)
    assert stored(db, made.id).startswith(PREFIX) and SECRET not in stored(db, made.id)
    service.update(org, made.id, name="r2", url="ghcr.io", username="u", password="new-" + SECRET)
    assert stored(db, made.id).startswith(PREFIX) and SECRET not in stored(db, made.id)
    auth = service.auth_for(org, IMAGE)
    assert auth is not None and auth.password == "new-" + SECRET
    assert SECRET not in repr(auth) and SECRET not in repr(service.get(org, made.id))


def test_an_update_without_password_keeps_it(service: RegistryService, org: str) -> None:
    made = service.create(org, name="r", url="ghcr.io", username="u", password="p" * 4096)
    service.update(org, made.id, name="renamed", url="ghcr.io", username="v")
    auth = service.auth_for(org, IMAGE)
    assert auth is not None and (auth.username, auth.password) == ("v", "p" * 4096)


def test_a_sealed_password_moved_to_another_row_does_not_open(
    db: Engine, service: RegistryService, org: str
) -> None:
    """Who can write the database but not read the key cannot hand one organization's
    password to another's registry."""
    other = SqlKeyStore(db).ensure_organization("b")
    victim = service.create(org, name="v", url="ghcr.io", username="u", password=SECRET)
    thief = service.create(other, name="t", url="ghcr.io", username="u", password="mine")
    set_stored(db, thief.id, stored(db, victim.id))
    with pytest.raises(BadRequest, match="cannot be decrypted"):
        service.auth_for(other, IMAGE)


@pytest.mark.parametrize("tamper", ["flip a byte", "truncate", "not base64", "other key"])
def test_a_tampered_or_foreign_value_does_not_open(db: Engine, service: RegistryService,
                                                   org: str, tamper: str) -> None:  # fmt: skip
    made = service.create(org, name="r", url="ghcr.io", username="u", password=SECRET)
    value = stored(db, made.id)
    body = value[len(PREFIX) :]
    forged = {
        "flip a byte": PREFIX + body[:20] + ("A" if body[20] != "A" else "B") + body[21:],
        "truncate": PREFIX + body[:16],
        "not base64": PREFIX + "%%%%",
        "other key": AesGcmSealer(os.urandom(32)).seal(SECRET, made.id),
    }[tamper]
    set_stored(db, made.id, forged)
    with pytest.raises(BadRequest, match="cannot be decrypted"):
        service.auth_for(org, IMAGE)
    # The registry can still be listed, changed and deleted.
    assert [r.id for r in service.list(org)] == [made.id]
    service.update(org, made.id, name="r", url="ghcr.io", username="u", password="again")
    auth = service.auth_for(org, IMAGE)
    assert auth is not None and auth.password == "again"
    service.delete(org, made.id)


def test_old_plain_rows_read_as_they_are_and_get_sealed(
    db: Engine, service: RegistryService, org: str
) -> None:
    made = service.create(org, name="r", url="ghcr.io", username="u", password="x")
    set_stored(db, made.id, SECRET)  # as a server before sealing wrote it
    auth = service.auth_for(org, IMAGE)
    assert auth is not None and auth.password == SECRET
    assert service.seal_plain() == 1 and service.seal_plain() == 0
    assert stored(db, made.id).startswith(PREFIX) and SECRET not in stored(db, made.id)
    auth = service.auth_for(org, IMAGE)
    assert auth is not None and auth.password == SECRET


def test_each_seal_is_fresh(key: bytes) -> None:
    sealer = AesGcmSealer(key)
    one, two = sealer.seal(SECRET, "r"), sealer.seal(SECRET, "r")
    assert one != two and sealer.open(one, "r") == sealer.open(two, "r") == SECRET
    with pytest.raises(ValueError):
        AesGcmSealer(b"short")


def test_the_key_is_made_once_and_root_only(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    settings = Settings(data_dir=tmp_path, runtime="fake")
    sealed = open_sealer(settings).seal(SECRET, "r")
    path = tmp_path / "registry.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    assert open_sealer(settings).open(sealed, "r") == SECRET
    assert SECRET not in caplog.text
