"""Quota arithmetic: what each state holds, totals with pending operations, the checks."""

from __future__ import annotations

import asyncio

import pytest

from cove.core.config import Settings
from cove.core.ports import Resources
from cove.core.quotas import (
    NOTHING,
    Charge,
    Holding,
    Quota,
    QuotaService,
    charge,
    check_count,
    check_per_sandbox,
    check_totals,
    total,
)
from cove.core.sandbox import SandboxState as S
from cove.errors import OrganizationQuotaExceeded, QuotaExceeded

R = Resources(cpu=2, memory=4, disk=10)


@pytest.mark.parametrize(("state", "held"), [
    (S.STARTED, Charge(2, 4, 10)), (S.CREATING, Charge(2, 4, 10)),
    (S.STOPPING, Charge(2, 4, 10)), (S.PENDING_BUILD, Charge(2, 4, 10)),
    (S.STOPPED, Charge(disk=10)), (S.PAUSED, Charge(disk=10)), (S.ARCHIVING, Charge(disk=10)),
    (S.ARCHIVED, NOTHING), (S.ERROR, NOTHING), (S.DESTROYING, NOTHING),
    (S.BUILD_FAILED, NOTHING), (S.RESIZING, Charge(2, 4, 10)),
])  # fmt: skip
def test_what_each_state_holds(state: S, held: Charge) -> None:
    assert charge(state, R) == held


def test_a_conditional_state_holds_what_was_held_before() -> None:
    assert charge(S.RESIZING, R, before=Charge(disk=10)) == Charge(disk=10)
    assert charge(S.SNAPSHOTTING, R, before=Charge(2, 4, 10)) == Charge(2, 4, 10)


def test_total_takes_the_larger_of_stored_and_pending() -> None:
    holdings = [Holding("a", S.STOPPED, R), Holding("b", S.STARTED, Resources(1, 1, 3))]
    assert total(holdings) == Charge(1, 1, 13)
    assert total(holdings, pending={"a": Charge(2, 4, 10)}) == Charge(3, 5, 13)
    assert total(holdings, pending={"new": Charge(1, 1, 1)}) == Charge(2, 2, 14)
    assert total(holdings, exclude="b") == Charge(disk=10)


def test_totals_check_only_what_grows_and_zero_is_no_limit() -> None:
    quota = Quota(cpu=4, memory=0, disk=20)
    check_totals(quota, Charge(4, 100, 20), Charge(0, 50, 0))  # memory: no limit
    with pytest.raises(OrganizationQuotaExceeded, match=r"^Total CPU limit exceeded\. "
                                                        r"Maximum allowed: 4\.\n"):
        check_totals(quota, Charge(3, 0, 0), Charge(2, 0, 0))
    with pytest.raises(OrganizationQuotaExceeded, match="Total disk limit exceeded. Maximum "
                                                        "allowed: 20GiB.\nConsider archiving"):
        check_totals(quota, Charge(0, 0, 15), Charge(0, 0, 6))
    check_totals(quota, Charge(9, 0, 0), Charge(0, 0, 1))  # over on CPU, but it adds none


def test_counts_and_per_sandbox_maxima() -> None:
    check_count("Volume", 9, 10)
    check_count("Volume", 100, 0)
    with pytest.raises(OrganizationQuotaExceeded, match="^Sandbox quota exceeded. Maximum "
                                                        "allowed: 10\n"):
        check_count("Sandbox", 10, 10)
    check_per_sandbox(Quota(), Resources(64, 64, 64))
    with pytest.raises(OrganizationQuotaExceeded,
                       match=r"^Memory request 4GB exceeds maximum allowed per sandbox \(2GB\)"):
        check_per_sandbox(Quota(max_memory_per_sandbox=2), R)


class MemoryQuotas:
    def __init__(self) -> None:
        self.rows: list[Holding] = []
        self.overrides: dict[str, int | None] = {}

    def holdings(self, organization_id: str) -> list[Holding]:
        return list(self.rows)

    def snapshot_usage(self, organization_id: str) -> tuple[int, int]:
        return 0, 0

    def volume_count(self, organization_id: str) -> int:
        return 0

    def quota_overrides(self, organization_id: str) -> dict[str, int | None]:
        return dict(self.overrides)

    def set_quota_overrides(self, organization_id: str, fields: dict[str, int | None]) -> None:
        self.overrides.update(fields)


def _service(tmp_path, **env: int) -> tuple[QuotaService, MemoryQuotas]:  # noqa: ANN001
    store = MemoryQuotas()
    settings = Settings(data_dir=tmp_path, runtime="fake", **env)  # type: ignore[arg-type]
    return QuotaService(settings=settings, store=store), store


def test_overrides_win_over_defaults(tmp_path) -> None:  # noqa: ANN001
    service, _ = _service(tmp_path, quota_cpu=8, quota_volumes=3)
    assert (service.quota("o").cpu, service.quota("o").volumes) == (8, 3)
    service.set_quota("o", cpu=2)
    assert (service.quota("o").cpu, service.quota("o").volumes) == (2, 3)
    service.set_quota("o", cpu=None)
    assert service.quota("o").cpu == 8
    with pytest.raises(ValueError):
        service.set_quota("o", cpu=-1)
    with pytest.raises(ValueError):
        service.set_quota("o", gpus=1)


def test_an_admitted_operation_holds_its_share_until_it_ends(tmp_path) -> None:  # noqa: ANN001
    service, store = _service(tmp_path, quota_cpu=2)
    one = Resources(1, 1, 1)

    async def scenario() -> None:
        async with service.admit("o", "a", charge(S.CREATING, one), one, new=True):
            async with service.admit("o", "b", charge(S.CREATING, one), one, new=True):
                with pytest.raises(OrganizationQuotaExceeded):
                    async with service.admit("o", "c", charge(S.CREATING, one), one, new=True):
                        pass
                assert service.usage("o").compute.cpu == 2
            store.rows.append(Holding("b", S.STARTED, one))  # b was stored meanwhile
        assert service.usage("o").compute.cpu == 1  # a was not stored: nothing left of it

    asyncio.run(scenario())


def test_without_totals_an_admission_reads_no_holdings(tmp_path) -> None:  # noqa: ANN001
    service, store = _service(tmp_path)
    service.set_quota("o", max_cpu_per_sandbox=2)
    one = Resources(1, 1, 1)
    read: list[str] = []
    holdings = store.holdings
    store.holdings = lambda org: read.append(org) or holdings(org)  # type: ignore[method-assign]

    async def scenario() -> None:
        async with service.admit("o", "a", charge(S.CREATING, one), one, new=True):
            assert not read  # no total, no count: nothing to read on a create's path
            assert service.usage("o").compute.cpu == 1  # but it is held meanwhile
        with pytest.raises(OrganizationQuotaExceeded):  # the per-sandbox maxima still hold
            big = Resources(3, 1, 1)
            async with service.admit("o", "b", charge(S.CREATING, big), big, new=True):
                pass
        service.set_quota("o", sandboxes=1)
        store.rows.append(Holding("a", S.STARTED, one))
        with pytest.raises(OrganizationQuotaExceeded, match="Sandbox quota exceeded"):
            async with service.admit("o", "c", charge(S.CREATING, one), one, new=True):
                pass

    asyncio.run(scenario())


def test_concurrent_admissions_never_both_pass(tmp_path) -> None:  # noqa: ANN001
    service, store = _service(tmp_path, quota_cpu=1)
    one = Resources(1, 1, 1)
    passed: list[str] = []

    async def create(name: str) -> None:
        async with service.admit("o", name, charge(S.CREATING, one), one, new=True):
            await asyncio.sleep(0.01)  # the insert, while others try
            store.rows.append(Holding(name, S.CREATING, one))
            passed.append(name)

    async def scenario() -> list[object]:
        return await asyncio.gather(*(create(f"s{i}") for i in range(8)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert len(passed) == 1
    assert sum(isinstance(r, OrganizationQuotaExceeded) for r in results) == 7


def test_a_stopped_sandbox_growing_its_disk(tmp_path) -> None:  # noqa: ANN001
    service, store = _service(tmp_path, quota_disk=12)
    store.rows.append(Holding("a", S.STOPPED, R))

    async def resize(disk: int) -> None:
        new = Resources(2, 4, disk)
        async with service.admit("o", "a", charge(S.STOPPED, new), new):
            pass

    asyncio.run(resize(12))
    with pytest.raises(OrganizationQuotaExceeded, match="Total disk limit"):
        asyncio.run(resize(13))


def test_concurrent_snapshots_never_both_pass(tmp_path) -> None:  # noqa: ANN001
    """A snapshot admitted counts until its record is stored (a capture takes a while)."""
    service, store = _service(tmp_path, quota_snapshots=1)
    stored: list[int] = []
    store.snapshot_usage = lambda organization_id: (len(stored), 0)  # type: ignore[method-assign]

    async def snapshot(n: int) -> None:
        async with service.admit_snapshot("o"):
            await asyncio.sleep(0.01)  # the capture, while others try
            stored.append(n)

    async def scenario() -> list[object]:
        return await asyncio.gather(*(snapshot(n) for n in range(4)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert len(stored) == 1
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 3
    with pytest.raises(QuotaExceeded, match="^Snapshot quota exceeded. Maximum allowed: 1\n"):
        asyncio.run(snapshot(9))
