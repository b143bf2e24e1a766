"""From domain entities to wire models."""

from __future__ import annotations

from datetime import datetime

from cove.core.sandbox import Sandbox, archive_minutes
from cove.schemas.sandbox import SandboxPublic, SandboxVolume


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sandbox_public(sandbox: Sandbox, toolbox_proxy_url: str) -> SandboxPublic:
    return SandboxPublic(
        id=sandbox.id,
        organization_id=sandbox.organization_id,
        name=sandbox.name,
        user=sandbox.user,
        target=sandbox.target,
        env=sandbox.env,
        labels=sandbox.labels,
        public=sandbox.public,
        network_block_all=sandbox.network_block_all,
        network_allow_list=sandbox.network_allow_list,
        domain_allow_list=sandbox.domain_allow_list,
        cpu=sandbox.resources.cpu,
        memory=sandbox.resources.memory,
        disk=sandbox.resources.disk,
        toolbox_proxy_url=toolbox_proxy_url,
        snapshot=sandbox.snapshot,
        state=str(sandbox.state),
        desired_state=sandbox.desired_state,
        error_reason=sandbox.error_reason,
        recoverable=sandbox.recoverable,
        auto_stop_interval=sandbox.auto_stop_interval,
        auto_archive_interval=archive_minutes(sandbox.auto_archive_interval),
        auto_delete_interval=sandbox.auto_delete_interval,
        auto_pause_interval=sandbox.auto_pause_interval,
        auto_destroy_at=iso(sandbox.auto_destroy_at) if sandbox.auto_destroy_at else None,
        linked_sandbox_id=sandbox.linked_sandbox_id,
        created_at=iso(sandbox.created_at),
        updated_at=iso(sandbox.updated_at),
        last_activity_at=iso(sandbox.last_activity_at),
        volumes=[
            SandboxVolume(volume_id=v.volume_id, mount_path=v.mount_path, subpath=v.subpath or None)
            for v in sandbox.volumes
        ],
    )
