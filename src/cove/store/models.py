"""Database rows. Runtime internals never reach the API through these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class OrganizationRow(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    # sha256 of the key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Daytona's permission strings; NULL: an operator's key, holding all of them.
    permissions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Written in batches, at most about once a minute per key.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                          nullable=True)  # fmt: skip
    # What lists show of the key (cove_****...abc); NULL for keys made before 0010.
    masked: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The id of the key that created this one through the API (NULL: the operator).
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SandboxRow(Base):
    __tablename__ = "sandboxes"
    __table_args__ = (
        Index("ix_sandboxes_org_name", "organization_id", "name", unique=True),
        Index("ix_sandboxes_org_seq", "organization_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    # NULL: a warm pool's unclaimed sandbox (no organization sees it).
    organization_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(255))
    snapshot: Mapped[str] = mapped_column(String(255))
    user: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    isolation: Mapped[str] = mapped_column(String(16), default="crun", server_default="crun")
    state: Mapped[str] = mapped_column(String(32), index=True)
    error_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    recoverable: Mapped[bool] = mapped_column(Boolean, default=False)
    cpu: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    env: Mapped[dict[str, str]] = mapped_column(JSON)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    network_block_all: Mapped[bool] = mapped_column(Boolean, default=False)
    network_allow_list: Mapped[str | None] = mapped_column(Text, nullable=True)
    domain_allow_list: Mapped[str | None] = mapped_column(Text, nullable=True)
    auto_stop_interval: Mapped[int] = mapped_column(Integer)
    auto_archive_interval: Mapped[int] = mapped_column(Integer)
    auto_delete_interval: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_activity_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # [{"volume_id", "mount_path", "subpath"}]; NULL in rows made before volumes.
    volumes: Mapped[list[dict[str, str]] | None] = mapped_column(JSON, nullable=True)
    linked_sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    linked_sandbox_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What POST /toolbox/{id}/env made of env while the sandbox runs (NULL: env).
    runtime_env: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    auto_pause_interval: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The TTL: when it is destroyed whatever its state (NULL: never).
    auto_destroy_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True, index=True
    )
    # The warm pool an unclaimed sandbox waits in (or the token of the claim taking it).
    warm_pool_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    # The runner it lives on (NULL: on none, its archive in the shared store). Written
    # by the routing runner only (cove.runner.routing), never by ``save``.
    runner_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True,
                                                  default="local")


class RunnerRow(Base):
    """A host that runs sandboxes (``cove runner``; ``local``: the embedded one), with
    the capacity it last reported. ``state`` is the operator's (ready, cordoned,
    draining); ``reachable`` the heartbeat's."""

    __tablename__ = "runners"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    cpu: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    memory: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    memory_free: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    disk: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    disk_free: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    sandboxes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_sandboxes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reachable: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                            nullable=True)  # fmt: skip
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WarmPoolRow(Base):
    """An organization's warm pool: how many started sandboxes of a snapshot to keep."""

    __tablename__ = "warm_pools"
    __table_args__ = (
        Index("ix_warm_pools_org_snapshot", "organization_id", "snapshot", "target", unique=True),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    snapshot: Mapped[str] = mapped_column(String(255))  # the runtime ref
    target: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    cpu: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    isolation: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(64))
    error_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VolumeRow(Base):
    __tablename__ = "volumes"
    __table_args__ = (Index("ix_volumes_org_name", "organization_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Where its data is: a runner's id, or the id of a volumes dir runners share
    # (COVE_VOLUMES_DIR); None until a sandbox first mounts it.
    home: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class SnapshotRow(Base):
    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_org_name", "organization_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(32))
    image_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)  # bytes
    # Snapshots pulled from a registry: the manifest digest and the image's config
    # ({"env", "workdir", "user", "entrypoint", "cmd"}).
    digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    image_config: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    cpu: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class DockerRegistryRow(Base):
    """An organization's registry credentials (the password is never sent back)."""

    __tablename__ = "docker_registries"
    __table_args__ = (Index("ix_docker_registries_org", "organization_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    username: Mapped[str] = mapped_column(Text)
    password: Mapped[str] = mapped_column(Text)
    project: Mapped[str] = mapped_column(Text, default="")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SshAccessRow(Base):
    """A token that opens SSH sessions to one sandbox until it expires (only its hash)."""

    __tablename__ = "ssh_access"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(String(64), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    # sha256 of the token; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The API key that asked for the grant: the grant ends with it (revoked or expired).
    # NULL: COVE_API_KEY's, or a grant made before 0017.
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class SecretRow(Base):
    """An organization's secret: its value only as AES-GCM ciphertext (nonce first)."""

    __tablename__ = "secrets"
    __table_args__ = (Index("ix_secrets_org_name", "organization_id", "name", unique=True),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    hosts: Mapped[list[str]] = mapped_column(JSON)
    placeholder: Mapped[str] = mapped_column(String(128))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SandboxSecretRow(Base):
    """A secret mounted in a sandbox as the env var ``env_name`` (gone with either)."""

    __tablename__ = "sandbox_secrets"
    __table_args__ = (Index("ix_sandbox_secrets_secret", "secret_id"),)

    sandbox_id: Mapped[str] = mapped_column(
        ForeignKey("sandboxes.id", ondelete="CASCADE"), primary_key=True
    )
    env_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    secret_id: Mapped[str] = mapped_column(ForeignKey("secrets.id", ondelete="CASCADE"))


class LeaseRow(Base):
    """A lease one API replica holds until ``expires_at`` (the database's clock): the
    once-only jobs' (``jobs``), or a replica's own (``replica:<id>``, its liveness)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SigningKeyRow(Base):
    """A sandbox's URL signing key, sealed (several API replicas share these)."""

    __tablename__ = "signing_keys"

    sandbox_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)


class RevokedTokenRow(Base):
    """A signed preview token expired early (kept until it would have expired)."""

    __tablename__ = "revoked_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class KeyFingerprintRow(Base):
    """A fingerprint of one of the data dir's secrets, as the first API replica had it:
    every other replica must hold the same secret (never the secret itself)."""

    __tablename__ = "key_fingerprints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))


class OrganizationQuotaRow(Base):
    """The operator's quota of one organization; NULL: the server's default (COVE_QUOTA_*)."""

    __tablename__ = "organization_quotas"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    cpu: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory: Mapped[int | None] = mapped_column(Integer, nullable=True)
    disk: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sandboxes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshots: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshot_storage: Mapped[int | None] = mapped_column(Integer, nullable=True)
    volumes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cpu_per_sandbox: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_memory_per_sandbox: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_disk_per_sandbox: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsagePeriodRow(Base):
    """What one sandbox held (vCPUs, GiB of memory and disk) from start_at to end_at
    (NULL: it still does; seen_at: when that was last confirmed). Kept after the
    sandbox is deleted: usage history outlives it."""

    __tablename__ = "usage_periods"
    __table_args__ = (
        Index("ix_usage_periods_org_start", "organization_id", "start_at"),
        Index("ix_usage_periods_sandbox", "sandbox_id", "start_at"),
        Index("ix_usage_periods_open", "end_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sandbox_id: Mapped[str] = mapped_column(String(64))
    organization_id: Mapped[str] = mapped_column(String(64))
    cpu: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BuildLogRow(Base):
    """A sandbox's or snapshot's build log (``sandbox:<id>``, ``snapshot:<id>``): the
    replica writing it, the build sandbox it runs in, whether it is finished."""

    __tablename__ = "build_logs"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    replica: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(80))
    done: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BuildLogChunkRow(Base):
    """A piece of a build log's text (at most :data:`cove.core.buildlog.CHUNK` bytes)."""

    __tablename__ = "build_log_chunks"

    log_id: Mapped[str] = mapped_column(
        ForeignKey("build_logs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
