"""Network settings in the lifecycle: validation, live application, restart restore."""

from __future__ import annotations

import pytest

from cove.core.lifecycle import LifecycleService
from cove.core.ops import container_spec
from cove.core.ports import NetworkPolicy
from cove.core.reconcile import restore_networks
from cove.errors import BadRequest, RuntimeBackendError
from cove.runner.fake import FakeRuntime
from cove.schemas.sandbox import SandboxCreate


async def test_create_passes_the_policy_and_rejects_bad_lists(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str
) -> None:
    with pytest.raises(BadRequest):
        await lifecycle.create(organization_id=org,
                               request=SandboxCreate(domain_allow_list="x..y"))  # fmt: skip
    with pytest.raises(BadRequest, match="10.0.0.0/8 lies in 10.0.0.0/8, which this server"):
        await lifecycle.create(organization_id=org,
                               request=SandboxCreate(network_allow_list="10.0.0.0/8"))  # fmt: skip
    assert lifecycle.store.all() == []
    sb = await lifecycle.create(
        organization_id=org, request=SandboxCreate(network_allow_list="203.0.113.0/24")
    )
    assert container_spec(sb).network == NetworkPolicy(allow_cidrs=("203.0.113.0/24",))


async def test_update_only_applies_to_running_and_keeps_fields(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str
) -> None:
    sb = await lifecycle.create(organization_id=org, request=SandboxCreate())
    await lifecycle.stop(org, sb.id)
    sb = await lifecycle.update_network(org, sb.id, block_all=True, allow_list=None,
                                        domain_list=None)  # fmt: skip
    assert sb.network_block_all and sb.id not in runtime.networks
    sb = await lifecycle.update_network(org, sb.id, block_all=None, allow_list=None,
                                        domain_list="a.com")  # fmt: skip
    assert not sb.network_block_all and sb.domain_allow_list == "a.com"
    await lifecycle.start(org, sb.id)
    runtime.fail_on["set_network"] = "nft broke"
    with pytest.raises(RuntimeBackendError):
        await lifecycle.update_network(org, sb.id, block_all=True, allow_list=None,
                                       domain_list=None)  # fmt: skip
    assert not lifecycle.get(org, sb.id).network_block_all  # nothing stored


async def test_restore_networks_after_restart(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str
) -> None:
    on = await lifecycle.create(organization_id=org,
                                request=SandboxCreate(network_block_all=True))  # fmt: skip
    off = await lifecycle.create(organization_id=org, request=SandboxCreate())
    await lifecycle.stop(org, off.id)
    await restore_networks(lifecycle)
    assert runtime.networks == {on.id: NetworkPolicy(block_all=True)}
    runtime.fail_on["set_network"] = "nft broke"
    await restore_networks(lifecycle)  # logged, not raised


async def test_stored_list_survives_a_stricter_operator(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str
) -> None:
    """A list accepted under an exemption the operator later drops still starts: the
    firewall, not the API, keeps the now-blocked range closed."""
    _reconfigure(lifecycle, egress_allow=("10.5.0.0/16",))
    request = SandboxCreate(network_allow_list="10.5.0.0/16")
    sb = await lifecycle.create(organization_id=org, request=request)
    await lifecycle.stop(org, sb.id)
    _reconfigure(lifecycle, egress_allow=())
    await lifecycle.start(org, sb.id)
    await restore_networks(lifecycle)
    assert runtime.networks[sb.id] == NetworkPolicy(allow_cidrs=("10.5.0.0/16",))
    with pytest.raises(BadRequest, match="lies in 10.0.0.0/8"):
        await lifecycle.update_network(org, sb.id, block_all=None, allow_list="10.5.1.0/24",
                                       domain_list=None)  # fmt: skip
    assert lifecycle.get(org, sb.id).network_allow_list == "10.5.0.0/16"


def _reconfigure(lifecycle: LifecycleService, **update: object) -> None:
    """The operator changed a setting (as a restart with new settings would)."""
    lifecycle.settings = lifecycle.creator.settings = lifecycle.settings.model_copy(update=update)
