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
from cove.core.buildlog import BuildLogs
from cove.core.config import Settings
from cove.core.contexts import ContextStore
from cove.core.coordination import Coordination, LocalCoordination, alone
from cove.core.entrypoint import Launcher
from cove.core.fleet import LOCAL, Fleet
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
from cove.runner.routing import RoutingRunner
from cove.runner.storage.volumes import VolumeDir
from cove.store.build_logs import SqlBuildLogStore
from cove.store.fingerprints import SqlFingerprints
from cove.store.keys import SqlKeyStore
from cove.store.migrate import upgrade
from cove.store.pools import SqlPoolStore
from cove.store.registries import SqlRegistryStore
from cove.store.revocations import SqlRevocations
from cove.store.runners import SqlRunnerStore
from cove.store.s3_contexts import S3Contexts
from cove.store.sealing import KEY_BYTES, AesGcmSealer
from cove.store.secretbox import SecretBox
from cove.store.secrets import SqlSecretStore
from cove.store.signing_keys import FileKeyStore, SqlSigningKeyStore
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
    # Per-sandbox locks across API replicas and the once-only jobs' lease.
    coordination: Coordination = field(default_factory=LocalCoordination)
    fleet: Fleet | None = None  # several runners' keeper (None: one host)
    # Preview tokens, under the secret kept in the data dir.
    previews: PreviewTokens = field(default_factory=lambda: PreviewTokens(os.urandom(32)))


def open_database(settings: Settings) -> Engine:
    """The server's database, migrated to the current schema."""
    engine = make_engine(settings.database_url or "")
    upgrade(engine)
    return engine


def load_tokens(data_dir: Path, engine: Engine | None = None) -> PreviewTokens:
    """Preview tokens under the server's secret (made once, kept in the data dir);
    early expiries kept in the server's database (``engine``; shared by replicas, if
    several), so that they outlive a restart as the secret does (else in memory)."""
    return PreviewTokens(secret_file(data_dir / "preview.key", lambda: os.urandom(32)),
                         SqlRevocations(engine) if engine is not None else None)  # fmt: skip


def open_sealer(settings: Settings) -> AesGcmSealer:
    """What seals secrets kept in the database, under a key made once in the data dir."""
    return AesGcmSealer(secret_file(settings.data_dir / "registry.key",
                                    lambda: os.urandom(KEY_BYTES)))  # fmt: skip


def context_key(settings: Settings) -> bytes:
    """The secret the build contexts' push credentials are signed with (the data dir's)."""
    return secret_file(settings.data_dir / "object-storage.key", lambda: os.urandom(32))


def open_contexts(settings: Settings) -> ContextStore:
    """The build-context store in the data dir, and in the S3 bucket of
    COVE_ARCHIVE_S3_* if there is one (the API replicas share it)."""
    shared = None
    if settings.archive_s3_bucket:
        shared = S3Contexts(settings.archive_s3_bucket, prefix=settings.archive_s3_prefix,
                            endpoint_url=settings.archive_s3_endpoint,
                            region=settings.archive_s3_region)  # fmt: skip
    return ContextStore(settings.data_dir / "contexts", context_key(settings),
                        settings.max_context_mb * 1024**2, shared,
                        max_total=settings.max_contexts_mb * 1024**2,
                        keep_seconds=settings.context_keep_days * 86400)  # fmt: skip


def load_ssh_host_key(data_dir: Path) -> bytes:
    """The SSH gateway's host key (Ed25519, OpenSSH format), made once in the data dir."""
    import asyncssh

    def make() -> bytes:
        return bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())

    return secret_file(data_dir / "ssh_host_ed25519_key", make)


# ---- several API replicas (docs/deployment.md) ----------------------------------


def open_coordination(settings: Settings) -> Coordination:
    """Advisory locks and leases on PostgreSQL (several replicas may share it); one
    host's in-process locks on SQLite."""
    url = settings.database_url or ""
    if not url.startswith("postgresql"):
        return LocalCoordination()
    from cove.store.coordination import PgCoordination

    return PgCoordination(url, settings.lease_seconds)


# The data dir's secrets every replica of one deployment must hold alike (copied from
# the first replica's data dir before the others start; see docs/deployment.md).
REPLICA_KEY_FILES = ("preview.key", "registry.key", "secrets.key", "object-storage.key",
                     "ssh_host_ed25519_key")  # fmt: skip


def check_replica_keys(settings: Settings, engine: Engine) -> None:
    """On a shared database: the data dir's secrets must be those of the replicas
    before (recorded by the first). Raises RuntimeError naming the file otherwise."""
    # each made now if missing (as the first replica does), to be compared
    load_tokens(settings.data_dir), open_sealer(settings), context_key(settings)
    SecretBox.in_dir(settings.data_dir)
    if settings.ssh_port:
        load_ssh_host_key(settings.data_dir)
    recorded = SqlFingerprints(engine)
    for name in REPLICA_KEY_FILES:
        path = settings.data_dir / name
        if path.exists() and not recorded.matches(name, path.read_bytes()):
            raise RuntimeError(
                f"{path} differs from the other API replicas' (on this database): copy it "
                "from the first replica's data dir (see docs/deployment.md)")


def shared_by_replicas(settings: Settings) -> bool:
    """Whether the database may be shared by several API replicas (PostgreSQL): what
    one replica issues (URL signing keys, early-expired preview tokens) is kept there."""
    return (settings.database_url or "").startswith("postgresql")


# ---------------------------------------------------------------------------------


def open_runner(settings: Settings, host: HostRuntime | None = None) -> LocalRunner:
    """This host's runner (``host``, or the configured runtime)."""
    return LocalRunner(host or build_runtime(settings), settings.data_dir,
                       VolumeDir.of(settings))  # fmt: skip


def volume_home(settings: Settings) -> str:
    """On one host, where every volume's data is: this host's runner, or the volumes
    dir it shares with runners added later."""
    return VolumeDir.of(settings).shared_id or LOCAL


# ---- several runners (issue 14) ----------------------------------------------------


def open_runners(settings: Settings, engine: Engine, host: HostRuntime | None = None
                 ) -> tuple[Runner, RoutingRunner | None]:  # fmt: skip
    """The runner the services use: this host's alone (one host, the default), or the
    routing runner over the registry when it names a runner on another host
    (``cove runner add``, or COVE_RUNNER_URL: the ``local`` runner's address)."""
    store = SqlRunnerStore(engine)
    if settings.runner_url and host is None:
        store.set_url(LOCAL, settings.runner_url)
    runners = store.list()
    if all(r.url is None for r in runners) and any(r.id == LOCAL for r in runners):
        return open_runner(settings, host), None
    local = None
    if any(r.id == LOCAL and r.url is None for r in runners):
        local = open_runner(settings, host)
    client_tls = None
    if settings.runner_ca and settings.runner_cert and settings.runner_key:
        client_tls = (settings.runner_ca, settings.runner_cert, settings.runner_key)
    routing = RoutingRunner(store, local=local, client_tls=client_tls)
    return routing, routing


def open_fleet(settings: Settings, routing: RoutingRunner | None,
               lifecycle: LifecycleService) -> Fleet | None:  # fmt: skip
    """The keeper of several runners (heartbeats, losses, drains), or None on one host."""
    if routing is None:
        return None
    pool = lifecycle.pool
    if pool is not None:
        pool.runners = routing.placeable  # a claim takes a sandbox on a placeable runner
    return Fleet(lifecycle=lifecycle, store=routing.store, members=routing.member_map,
                 sync=routing.sync, releaser=routing, interval=settings.runner_heartbeat_seconds,
                 lost_after=settings.runner_lost_seconds)  # fmt: skip


# ---- (end of several runners) --------------------------------------------------------


def build_services(
    settings: Settings, events: EventSink, host: HostRuntime | None = None
) -> Services:
    """Every service of a server on ``settings``; ``host`` overrides the configured
    host runtime (tests). Prints the admin API key when it made one."""
    prepare_host_dirs(settings)
    engine = open_database(settings)
    if shared_by_replicas(settings):  # before anything is sealed or signed
        check_replica_keys(settings, engine)
    auth = AuthService(settings, SqlKeyStore(engine))
    key = auth.bootstrap()
    if key:
        print(f"Cove created an admin API key (shown only once): {key}", flush=True)  # noqa: T201
    runner, routing = open_runners(settings, engine, host)
    coordination = open_coordination(settings)
    coordination.renew()  # announced before it judges what others left
    store = SqlSandboxStore(engine)
    volumes = VolumeService(store=SqlVolumeStore(engine), runner=runner, sandboxes=store,
                            home=None if routing else volume_home(settings))  # fmt: skip
    snapshots = SnapshotService(
        store=SqlSnapshotStore(engine), runner=runner, sandboxes=store,
        default_name=settings.default_snapshot, public=settings.public_snapshots,
    )  # fmt: skip
    if alone(coordination):  # else another replica's pulls and builds may be under way
        snapshots.fail_interrupted()
    registries = RegistryService(SqlRegistryStore(engine), open_sealer(settings))
    registries.seal_plain()
    images = ImageService(snapshots=snapshots, registries=registries, runner=runner,
                          allowed=settings.allowed_registries,
                          max_pulls=settings.max_pulls)  # fmt: skip
    contexts = open_contexts(settings)
    contexts.key_works = auth.key_works
    meter = open_meter(settings, engine)
    lifecycle = LifecycleService(
        settings=settings, store=store, runner=runner, events=MeteredEvents(meter, events),
        volumes=volumes, snapshots=snapshots, images=images,
    )  # fmt: skip
    quotas = lifecycle.creator.quotas = QuotaService(settings=settings,
                                                     store=SqlQuotaStore(engine))  # fmt: skip
    volumes.admit_new, snapshots.admit_new = quotas.admit_volume, quotas.admit_snapshot
    lifecycle.creator.use_contexts(contexts)
    build_logs = BuildLogs(SqlBuildLogStore(engine), replica=coordination.replica_id)
    lifecycle.creator.use_build_logs(build_logs)
    lifecycle.ops.coordination = quotas.coordination = coordination
    pool_store = SqlPoolStore(engine)
    warm_pools = WarmPoolService(
        settings=settings, keeper=lifecycle.use_pools(pool_store), store=pool_store,
        ref_for=lifecycle.creator._usable_snapshot, snapshots=snapshots,
    )  # fmt: skip
    secrets = lifecycle.creator.secrets = SecretService(
        SqlSecretStore(engine, SecretBox.in_dir(settings.data_dir)))
    toolbox = ToolboxService(lifecycle.ops, settings.output_limit, settings.max_sandbox_requests,
                             settings.max_organization_requests, settings.relays)  # fmt: skip
    toolbox.extra_env = lambda sb: secrets.env(sb.id)
    warm_pools.keeper.links, warm_pools.keeper.claimed = toolbox.links, toolbox.records.put
    lifecycle.creator.booted = toolbox.records.put
    lifecycle.ops.removed_hooks.append(lambda sb: toolbox.links.forget(sb.id))
    history = MetricsHistory(runner, store, interval=settings.metrics_interval_seconds,
                             keep=settings.metrics_keep)  # fmt: skip
    lifecycle.ops.removed_hooks.append(lambda sb: _forget_metrics(history, sb))
    lifecycle.ops.started_hooks.append(Launcher(
        lambda sb: snapshots.get(sb.organization_id, sb.snapshot).image_config,
        lambda sb, user: _agent_as(toolbox, sb, user)))  # fmt: skip
    signer = UrlSigner(
        SqlSigningKeyStore(engine, open_sealer(settings)) if shared_by_replicas(settings)
        else FileKeyStore(settings.data_dir / "signing-keys"))  # fmt: skip
    lifecycle.ops.removed_hooks.append(lambda sb: _forget_key(signer, sb))
    lifecycle.ops.removed_hooks.append(partial(delete_followers, lifecycle))
    ssh = SshAccessService(SqlSshAccessStore(engine), store, enabled=bool(settings.ssh_port))
    lifecycle.ops.removed_hooks.append(lambda sb: _forget_ssh(ssh, sb))
    previews = load_tokens(settings.data_dir, engine)
    return Services(
        settings=settings, auth=auth, lifecycle=lifecycle, toolbox=toolbox, volumes=volumes,
        snapshots=snapshots, registries=registries, images=images, signer=signer,
        contexts=contexts,
        snapshot_builds=SnapshotBuilds(
            settings=settings, snapshots=snapshots, builder=lifecycle.creator.builder,
            images=images, contexts=contexts, logs=build_logs,
        ),
        previews=previews, ssh=ssh, secrets=secrets, metrics=history,
        warm_pools=warm_pools, api_keys=ApiKeyService(auth, coordination),
        organizations=OrganizationService(auth.keys), coordination=coordination,
        quotas=quotas, meter=meter,
        fleet=open_fleet(settings, routing, lifecycle),
    )  # fmt: skip


def open_meter(settings: Settings, engine: Engine) -> Meter:
    """The usage meter on the server's database, at the configured prices."""
    prices = Prices(cpu=settings.price_cpu, memory=settings.price_memory,
                    disk=settings.price_disk, free_disk=settings.price_free_disk)  # fmt: skip
    return Meter(SqlUsageStore(engine), prices, settings.usage_heartbeat_seconds)


def _agent_as(toolbox: ToolboxService, sandbox: Sandbox, user: str) -> AgentClient:
    """The sandbox's agent, acting as ``user`` (the image's, for its entrypoint)."""
    return agent_client(toolbox.runner, sandbox.id, user, toolbox.env(sandbox), toolbox.links,
                        toolbox.output_limit, sandbox.organization_id)  # fmt: skip


async def _forget_ssh(ssh: SshAccessService, sandbox: Sandbox) -> None:
    ssh.forget(sandbox.id)


async def _forget_metrics(history: MetricsHistory, sandbox: Sandbox) -> None:
    history.forget(sandbox.id)


async def _forget_key(signer: UrlSigner, sandbox: Sandbox) -> None:
    signer.forget(sandbox.id)
