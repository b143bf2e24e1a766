"""Server configuration, read once from ``COVE_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/cove")
    return Path.home() / ".local" / "share" / "cove"


def _ipv4_ranges(value: object) -> tuple[str, ...]:
    """``"10.1.0.0/16, 192.0.2.7"`` (or a sequence) as normalized IPv4 CIDRs."""
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"'{item}' is not an IPv4 range such as 10.1.0.0/16") from None
        if net.version != 4:
            raise ValueError(f"'{item}': only IPv4 ranges (sandboxes get no IPv6)")
        out.append(str(net))
    return tuple(out)


# Comma-separated IPv4 CIDRs (COVE_EGRESS_ALLOW=10.1.0.0/16,192.0.2.7).
Ipv4Ranges = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_ipv4_ranges)]


class Settings(BaseSettings):
    """Everything ``cove serve`` can be told. Explicit arguments win over the environment."""

    model_config = SettingsConfigDict(env_prefix="COVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 3000
    data_dir: Path = Field(default_factory=_default_data_dir)
    # SQLAlchemy URL; default: SQLite (WAL) in the data dir. PostgreSQL works too,
    # e.g. postgresql+psycopg://user:pass@host/db
    database_url: str | None = None
    # When set, accepted as an admin key of the default organization.
    api_key: str | None = None
    # Base URL clients use to reach this server (toolboxProxyUrl is derived from it).
    public_url: str | None = None
    # Where read-only snapshot root filesystems are cached. Default: the host's shared
    # one (<default data dir>/snapshots, /var/lib/cove/snapshots for root) whatever the
    # data dir, so that a server with a new data dir does not build the default again.
    snapshot_dir: Path | None = None
    archive_dir: Path | None = None
    # Where a runner keeps volume data: by default its own <data dir>/volumes; set, a
    # directory every runner of a fleet mounts alike (NFS, CephFS), so that a volume's
    # sandboxes may run on any runner of it (see docs/deployment.md).
    volumes_dir: Path | None = None
    # GiB a new volume may hold (a sparse ext4 image in a runner's own volumes dir;
    # a shared COVE_VOLUMES_DIR keeps directories). 0: directories, unbounded.
    volume_size_gb: int = Field(default=10, ge=0)
    # Archives go to this S3 bucket instead of archive_dir when set (needs cove[s3];
    # credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or other AWS sources).
    archive_s3_bucket: str | None = None
    archive_s3_endpoint: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO
    archive_s3_region: str | None = None
    archive_s3_prefix: str = ""
    default_snapshot: str = "cove-default"
    # Largest Dockerfile build context (one Image.add_local_file/dir archive) accepted.
    max_context_mb: int = Field(default=2048, ge=1)
    # What one organization's build contexts may take in the data dir, all together
    # (its least recently used make room; at least max_context_mb), and how long an
    # unused one is kept.
    max_contexts_mb: int = Field(default=8192, ge=1)
    context_keep_days: float = Field(default=7, gt=0)
    # Snapshots placed on the host by hand that every organization may use
    # (``COVE_PUBLIC_SNAPSHOTS=name1,name2``); any other is its organization's alone.
    public_snapshots: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Where `POST /snapshots {"imageName": "name:tag"}` looks for OCI image layouts
    # (``<dir>/<name>``, as made by ``skopeo copy ... oci:<dir>/<name>:<tag>``).
    oci_layout_dir: Path | None = None
    # Registry credentials for pulls when the organization has none for that registry:
    # a docker-style auth.json ({"auths": {"host": {"auth": base64(user:pass)}}}).
    registry_auth: Path | None = None
    # Registries (host[:port]) pulled from without TLS verification, over HTTP if
    # they do not speak HTTPS (e.g. a local mirror): COVE_INSECURE_REGISTRIES=h1,h2:5000
    insecure_registries: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The only registries images may be pulled from (host or host:port; empty: any).
    # Pulls connect only where a sandbox may (see egress_allow), or to a registry
    # listed here or in insecure_registries (e.g. one on the LAN or on 127.0.0.1).
    allowed_registries: Annotated[list[str], NoDecode] = Field(default_factory=list)
    pull_timeout_seconds: float = 1800.0  # one image pull, all layers
    # Largest image pulled or imported: its layers, compressed and unpacked (MiB).
    max_image_mb: int = Field(default=10240, ge=1)
    runtime: str = "crun"  # "crun" (real isolation) or "fake" (unit tests only)
    # Isolation tier of sandboxes created without the cove.io/isolation label:
    # "crun" or "gvisor" (runsc).
    default_isolation: str = Field(default="crun", pattern=r"^(crun|gvisor)$")

    # Warm pools: started sandboxes of the default snapshot at the default resources
    # kept ready for any organization's creates, grown to recent demand up to
    # ``pool_adaptive_max`` (see core/pool_demand.py); and the most sandboxes one
    # organization's own pools (/api/warm-pools) may keep, all together.
    pool_size: int = Field(default=2, ge=0, le=1000)
    pool_adaptive_max: int = Field(default=16, ge=0, le=1000)
    pool_max: int = Field(default=10, ge=0, le=1000)

    default_cpu: int = 1
    default_memory: int = 1
    default_disk: int = 3
    max_cpu: int = 4
    max_memory: int = 8
    max_disk: int = 10
    pids_limit: int = 1024
    # Each organization's quota unless the operator sets its own (``cove org quota set``):
    # vCPUs and GiB of memory of its running sandboxes, GiB of disk of its unarchived
    # ones, how many sandboxes, snapshots (and their GiB) and volumes it may have. 0: no limit.
    quota_cpu: int = Field(default=0, ge=0)
    quota_memory: int = Field(default=0, ge=0)
    quota_disk: int = Field(default=0, ge=0)
    quota_sandboxes: int = Field(default=0, ge=0)
    quota_snapshots: int = Field(default=0, ge=0)
    quota_snapshot_storage: int = Field(default=0, ge=0)
    quota_volumes: int = Field(default=0, ge=0)
    # Usage prices (Daytona's list prices, USD): per vCPU-second, per GiB-second of
    # memory and of disk; each sandbox's first price_free_disk GiB of disk are free.
    price_cpu: float = Field(default=0.000014, ge=0)
    price_memory: float = Field(default=0.0000045, ge=0)
    price_disk: float = Field(default=0.00000003, ge=0)
    price_free_disk: int = Field(default=5, ge=0)
    # How often open usage periods are marked as still running (what a crash can lose
    # of a sandbox that died with the server).
    usage_heartbeat_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Bytes of output execute, code-run and a session command's logs return at most
    # (the first half and the newest half, with a marker line between).
    output_limit: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # The cgroup every sandbox's cgroup is made in (<hierarchy>/<parent>/<sandbox id>);
    # servers sharing a host may use different ones.
    cgroup_parent: str = Field(default="cove", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    # Whether the host's cgroup root is set to ``favordynmods`` (Linux 6.0+), making a
    # process's move between cgroups cheap (see runner/host/hostprep.py).
    cgroup_favor_dynmods: bool = True
    stop_grace_seconds: float = 3.0
    # How long a fresh start waits for the sandbox's toolbox agent to answer; past it,
    # the start fails (the sandbox is ``error``, nothing of it runs).
    agent_ready_seconds: float = Field(default=30.0, gt=0, le=600)
    # A sandbox's toolbox agent exits after this many seconds with no request and
    # nothing of it alive (sessions, processes, PTYs, interpreter contexts); the next
    # call starts it again. 0: it never exits.
    agent_idle_seconds: float = Field(default=300.0, ge=0)
    # How many toolbox agents the host keeps started ahead of sandboxes (Python's
    # start-up done): a cold start hands one to its sandbox instead of waiting for
    # its init to start one (see cove/agent/prestart.py). 0: none.
    agent_prestart: int = Field(default=1, ge=0, le=16)
    # Sets of a sandbox's namespaces (user, workload, network) the host keeps made
    # ahead: a sandbox's first start takes one instead of making them (see
    # cove/runner/host/nsstock.py). 0: none.
    ns_stock: int = Field(default=2, ge=0, le=16)
    # How long a checked API key is trusted without asking the database again (a key
    # revoked by ``cove keys revoke`` stops working within this time); 0: every call.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # How often the host is checked for sandboxes whose container died.
    watch_seconds: float = 5.0
    # How many seconds a lifecycle minute (auto-stop/archive/delete) lasts.
    minute_seconds: float = 60.0
    default_auto_stop_interval: int = 15
    # Metrics history: how often each started sandbox is sampled, and how many samples
    # of each are kept (in memory).
    metrics_interval_seconds: float = Field(default=60.0, gt=0, le=86400)
    metrics_keep: int = Field(default=1440, ge=1, le=100_000)
    # The bearer token Prometheus sends to scrape /metrics (None: /metrics is a 404).
    metrics_token: str | None = None
    default_auto_archive_interval: int = 7 * 24 * 60
    default_auto_delete_interval: int = -1
    # Sandbox networking: "nat" (own netns, veth, NAT, DNS forwarder, firewall) or
    # "none" (loopback only).
    network: str = "nat"
    # Addresses of sandbox veth pairs (one /31 each); must not overlap host networks.
    network_pool: str = "10.213.0.0/16"
    # Where Cove's DNS forwarder sends queries: "host[:port],..."; default: /etc/resolv.conf.
    dns_upstream: str | None = None
    # Sandbox egress. Blocked by default: private (RFC 1918), CGNAT, link-local (cloud
    # metadata), loopback, 0/8, multicast and reserved ranges. egress_allow exempts
    # ranges from that (e.g. a registry on the LAN); egress_block adds ranges. Image
    # pulls (and where their registries redirect) follow the same rule.
    egress_allow: Ipv4Ranges = ()
    egress_block: Ipv4Ranges = ()
    # Concurrent tracked connections per sandbox (its share of the host's conntrack table).
    max_connections: int = Field(default=4096, ge=1)
    # Snapshots of one organization built from Dockerfiles at once (0: no limit): each
    # runs in a build sandbox of the default resources that no sandbox quota counts.
    max_builds: int = Field(default=4, ge=0)
    # Image pulls of one organization at once on a replica (0: no limit); more wait in
    # line. Below the runner's PULL_WORKERS: one organization's registry, as slow as it
    # likes, cannot keep every other organization's pulls waiting.
    max_pulls: int = Field(default=2, ge=0)
    # Toolbox requests under way on one sandbox at once (0: no limit); one more is a
    # 429. The server holds up to a stream window (1 MiB) of the agent's data for each
    # (a download whose client reads nothing): this bounds what one sandbox's requests
    # hold of the server's memory.
    max_sandbox_requests: int = Field(default=512, ge=0)
    # Toolbox requests under way on all the sandboxes of one organization at once, on a
    # replica (0: no limit); one more is a 429. With the cap above, this bounds what
    # one organization's requests hold of the server (not only one sandbox's): its
    # many sandboxes' stalled downloads at most this many stream windows.
    max_organization_requests: int = Field(default=2048, ge=0)
    # Plain commands (``process.execute``) answered by a relay, a process waiting in
    # the sandbox that talks to the server itself, with no agent on the way (see
    # cove/core/relay.py); off: every command goes through the agent.
    relays: bool = True
    # What one HTTP client may hold before any key is checked (cove/api/httpguard.py):
    # open connections per address (an IPv6 one by its /64; 0: no cap; behind a
    # reverse proxy every client has the proxy's address), open connections in all
    # (default: a quarter of the open-files limit), seconds to send a request head,
    # and the head's size (request line and headers).
    http_max_connections_per_client: int = Field(default=1024, ge=0)
    http_max_connections: int | None = Field(default=None, ge=0)
    http_header_seconds: float = Field(default=20, ge=0)
    http_max_head_bytes: int = Field(default=32768, ge=1024)
    # Preview host names {port}-{sandboxId}.<domain> are proxied when set.
    preview_domain: str | None = None
    # Serve HTTPS with this certificate (PEM chain) and key; both or neither. The SDK
    # uploads build contexts over HTTPS only (see README, Build contexts).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The SSH gateway (``ssh -p <port> <token>@host``, tokens from POST
    # /sandbox/{id}/ssh-access) listens on host:ssh_port; 0 turns it off.
    ssh_port: int = Field(default=2222, ge=0, le=65535)
    # A runner on another host (``cove runner``): ``cove serve`` calls it at this
    # https:// URL instead of running sandboxes itself. The CA that signed the runners'
    # and the API's certificates, and this process's own certificate and key (the same
    # three name the runner's own in ``cove runner``).
    runner_url: str | None = None
    runner_ca: Path | None = None
    runner_cert: Path | None = None
    runner_key: Path | None = None
    # Several API replicas (on PostgreSQL): a Redis URL (redis://host:6379/0) through
    # which every replica's Socket.IO clients get the events of the others; unset: in
    # this process only. A lease (the once-only jobs', a replica's liveness) lasts
    # this long without renewal: a dead replica's jobs move to another within it.
    events_url: str | None = None
    lease_seconds: float = Field(default=15.0, ge=1, le=600)
    # Several runners (``cove runner add``): the API pings each every this many seconds;
    # one silent for ``runner_lost_seconds`` is unreachable (its sandboxes ``error``).
    runner_heartbeat_seconds: float = Field(default=5.0, gt=0)
    runner_lost_seconds: float = Field(default=30.0, gt=0)

    @field_validator("public_snapshots", "insecure_registries", "allowed_registries",
                     mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = self.data_dir.absolute()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'cove.db'}"
        if self.snapshot_dir is None:
            self.snapshot_dir = _default_data_dir() / "snapshots"
        if self.archive_dir is None:
            self.archive_dir = self.data_dir / "archives"
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("COVE_TLS_CERT and COVE_TLS_KEY go together")
        if self.runner_url and None in (self.runner_ca, self.runner_cert, self.runner_key):
            raise ValueError("COVE_RUNNER_URL needs COVE_RUNNER_CA, COVE_RUNNER_CERT and "
                             "COVE_RUNNER_KEY")
        if self.runner_url and not self.runner_url.startswith("https://"):
            raise ValueError("COVE_RUNNER_URL must be https://host:port")
        return self

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def ssh_host(self) -> str:
        """The host name clients reach the SSH gateway at (that of :attr:`base_url`)."""
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def toolbox_proxy_url(self) -> str:
        return f"{self.base_url}/toolbox"


def registry_listed(registry: str, entries: list[str]) -> bool:
    """Whether ``registry`` (``host[:port]``) is one of ``entries``: ``host`` stands for
    every port of that host, ``host:port`` for that port only."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return any(e.lower() in (registry.lower(), host.lower()) for e in entries)
