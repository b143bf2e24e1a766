"""The composition root: the one place that chooses the server's parts and wires
them together (the API app and the CLI both start from here).

::

    api (HTTP, WebSocket, previews)  ──▶  core (domain: lifecycle, toolbox gateway, ...)
                                            │ ports: Runner, SandboxStore, EventSink
    server (this module) ──wires──▶  runtime.LocalRunner(crun | runsc | fake)
                                     store (SQLAlchemy: SQLite WAL or PostgreSQL)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import Engine

from cove.core.agent_client import AgentClient
from cove.core.api_keys import ApiKeyService
from cove.core.auth import AuthService
from cove.core.config import Settings
from cove.core.contexts import ContextStore
from cove.core.entrypoint import Launcher
from cove.core.images import ImageService
from cove.core.lifecycle import LifecycleService
from cove.core.links import delete_followers
from cove.core.metering import Meter, MeteredEvents, Prices
from cove.core.metrics_history import MetricsHistory
from cove.core.organizations import OrganizationService
from cove.core.ports import EventSink, Runner
from cove.core.previews import PreviewTokens
from cove.core.quotas import QuotaService
from cove.core.registries import RegistryService
from cove.core.sandbox import Sandbox
from cove.core.secrets import SecretService
from cove.core.signing import UrlSigner
from cove.core.snapshot_builds import SnapshotBuilds
from cove.core.snapshots import SnapshotService
from cove.core.ssh_access import SshAccessService
from cove.core.toolbox import ToolboxService, agent_client
from cove.core.volumes import VolumeService
from cove.core.warm_pools import WarmPoolService
from cove.hostfiles import prepare_host_dirs, secret_file
from cove.runner import build_runtime
from cove.runner.hostruntime import HostRuntime
from cove.runner.local import LocalRunner
from cove.runner.storage.volumes import LocalVolumeFiles
from cove.store.keys import SqlKeyStore
from cove.store.migrate import upgrade
from cove.store.pools import SqlPoolStore
from cove.store.registries import SqlRegistryStore
from cove.store.sealing import KEY_BYTES, AesGcmSealer
from cove.store.secretbox import SecretBox
from cove.store.secrets import SqlSecretStore
from cove.store.signing_keys import FileKeyStore
from cove.store.snapshots import SqlSnapshotStore
from cove.store.sql import SqlSandboxStore, make_engine
from cove.store.ssh_access import SqlSshAccessStore
from cove.store.usage import SqlQuotaStore, SqlUsageStore
from cove.store.volumes import SqlVolumeStore


@dataclass
class Services:
    """What the routers may call; built once at server start."""

    settings: Settings
    auth: AuthService
    lifecycle: LifecycleService
    toolbox: ToolboxService
    volumes: VolumeService
    snapshots: SnapshotService
    registries: RegistryService
    images: ImageService
    signer: UrlSigner
    contexts: ContextStore  # uploaded Dockerfile build contexts
    snapshot_builds: SnapshotBuilds  # POST /snapshots with buildInfo
    ssh: SshAccessService  # SSH access tokens (the gateway is cove.api.ssh)
    secrets: SecretService
    metrics: MetricsHistory  # the sampled history of started sandboxes' metrics
    warm_pools: WarmPoolService  # the organizations' warm pools (the keeper: lifecycle.pool)
    api_keys: ApiKeyService  # /api/api-keys
    organizations: OrganizationService  # /api/organizations
    quotas: QuotaService  # the organizations' quotas
    meter: Meter  # per-second usage of every sandbox
    # Preview tokens, under the secret kept in the data dir.
    previews: PreviewTokens = field(default_factory=lambda: PreviewTokens(os.urandom(32)))


def open_database(settings: Settings) -> Engine:
    """The server's database, migrated to the current schema."""
    engine = make_engine(settings.database_url or "")
    upgrade(engine)
    return engine


def load_tokens(data_dir: Path) -> PreviewTokens:
    """Preview tokens under the server's secret (made once, kept in the data dir)."""
    return PreviewTokens(secret_file(data_dir / "preview.key", lambda: os.urandom(32)))


def open_sealer(settings: Settings) -> AesGcmSealer:
    """What seals secrets kept in the database, under a key made once in the data dir."""
    return AesGcmSealer(secret_file(settings.data_dir / "registry.key",
                                    lambda: os.urandom(KEY_BYTES)))  # fmt: skip


def open_contexts(settings: Settings) -> ContextStore:
    """The build-context store in the data dir, under a secret kept there."""
    key = secret_file(settings.data_dir / "object-storage.key", lambda: os.urandom(32))
    return ContextStore(settings.data_dir / "contexts", key, settings.max_context_mb * 1024**2)


def load_ssh_host_key(data_dir: Path) -> bytes:
    """The SSH gateway's host key (Ed25519, OpenSSH format), made once in the data dir."""
    import asyncssh

    def make() -> bytes:
        return bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())

    return secret_file(data_dir / "ssh_host_ed25519_key", make)


def open_runner(settings: Settings, host: HostRuntime | None = None) -> Runner:
    """The runner ``settings`` name: a ``cove runner`` at COVE_RUNNER_URL (over mutual
    TLS), else this host's (``host``, or the configured runtime)."""
    if settings.runner_url and host is None:
        from cove.runner.remote import RemoteRunner

        assert settings.runner_ca and settings.runner_cert and settings.runner_key
        return RemoteRunner.connect(settings.runner_url, settings.runner_ca,
                                    settings.runner_cert, settings.runner_key)  # fmt: skip
    return LocalRunner(host or build_runtime(settings))


def build_services(
    settings: Settings, events: EventSink, host: HostRuntime | None = None
) -> Services:
    """Every service of a server on ``settings``; ``host`` overrides the configured
    host runtime (tests). Prints the admin API key when it made one."""
    prepare_host_dirs(settings)
    engine = open_database(settings)
    auth = AuthService(settings, SqlKeyStore(engine))
    key = auth.bootstrap()
    if key:
        print(f"Cove created an admin API key (shown only once): {key}", flush=True)  # noqa: T201
    runner = open_runner(settings, host)
    store = SqlSandboxStore(engine)
    volumes = VolumeService(
        store=SqlVolumeStore(engine), files=LocalVolumeFiles(settings.data_dir), sandboxes=store
    )
    snapshots = SnapshotService(
        store=SqlSnapshotStore(engine), runner=runner, sandboxes=store,
        default_name=settings.default_snapshot, public=settings.public_snapshots,
    )  # fmt: skip
    snapshots.fail_interrupted()
    registries = RegistryService(SqlRegistryStore(engine), open_sealer(settings))
    registries.seal_plain()
    images = ImageService(snapshots=snapshots, registries=registries, runner=runner,
                          allowed=settings.allowed_registries)  # fmt: skip
    contexts = open_contexts(settings)
    meter = open_meter(settings, engine)
    lifecycle = LifecycleService(
        settings=settings, store=store, runner=runner, events=MeteredEvents(meter, events),
        volumes=volumes, snapshots=snapshots, images=images,
    )  # fmt: skip
    quotas = lifecycle.creator.quotas = QuotaService(settings=settings,
                                                     store=SqlQuotaStore(engine))  # fmt: skip
    volumes.admit_new, snapshots.admit_new = quotas.admit_volume, quotas.admit_snapshot
    lifecycle.creator.use_contexts(contexts)
    pool_store = SqlPoolStore(engine)
    warm_pools = WarmPoolService(
        settings=settings, keeper=lifecycle.use_pools(pool_store), store=pool_store,
        ref_for=lifecycle.creator._usable_snapshot, snapshots=snapshots,
    )  # fmt: skip
    secrets = lifecycle.creator.secrets = SecretService(
        SqlSecretStore(engine, SecretBox.in_dir(settings.data_dir)))
    toolbox = ToolboxService(lifecycle.ops, settings.output_limit)
    toolbox.extra_env = lambda sb: secrets.env(sb.id)
    history = MetricsHistory(runner, store, interval=settings.metrics_interval_seconds,
                             keep=settings.metrics_keep)  # fmt: skip
    lifecycle.ops.removed_hooks.append(lambda sb: _forget_metrics(history, sb))
    lifecycle.ops.started_hooks.append(Launcher(
        lambda sb: snapshots.get(sb.organization_id, sb.snapshot).image_config,
        lambda sb, user: _agent_as(toolbox, sb, user)))  # fmt: skip
    signer = UrlSigner(FileKeyStore(settings.data_dir / "signing-keys"))
    lifecycle.ops.removed_hooks.append(lambda sb: _forget_key(signer, sb))
    lifecycle.ops.removed_hooks.append(partial(delete_followers, lifecycle))
    ssh = SshAccessService(SqlSshAccessStore(engine), store, enabled=bool(settings.ssh_port))
    lifecycle.ops.removed_hooks.append(lambda sb: _forget_ssh(ssh, sb))
    return Services(
        settings=settings, auth=auth, lifecycle=lifecycle, toolbox=toolbox, volumes=volumes,
        snapshots=snapshots, registries=registries, images=images, signer=signer,
        contexts=contexts,
        snapshot_builds=SnapshotBuilds(
            settings=settings, snapshots=snapshots, builder=lifecycle.creator.builder,
            images=images, contexts=contexts,
        ),
        previews=load_tokens(settings.data_dir), ssh=ssh, secrets=secrets, metrics=history,
        warm_pools=warm_pools, api_keys=ApiKeyService(auth),
        organizations=OrganizationService(auth.keys), quotas=quotas, meter=meter,
    )  # fmt: skip


def open_meter(settings: Settings, engine: Engine) -> Meter:
    """The usage meter on the server's database, at the configured prices."""
    prices = Prices(cpu=settings.price_cpu, memory=settings.price_memory,
                    disk=settings.price_disk, free_disk=settings.price_free_disk)  # fmt: skip
    return Meter(SqlUsageStore(engine), prices, settings.usage_heartbeat_seconds)


def _agent_as(toolbox: ToolboxService, sandbox: Sandbox, user: str) -> AgentClient:
    """The sandbox's agent, acting as ``user`` (the image's, for its entrypoint)."""
    return agent_client(toolbox.runner, sandbox.id, user, toolbox.env(sandbox), toolbox.links,
                        toolbox.output_limit)  # fmt: skip


async def _forget_ssh(ssh: SshAccessService, sandbox: Sandbox) -> None:
    ssh.forget(sandbox.id)


async def _forget_metrics(history: MetricsHistory, sandbox: Sandbox) -> None:
    history.forget(sandbox.id)


async def _forget_key(signer: UrlSigner, sandbox: Sandbox) -> None:
    signer.forget(sandbox.id)
