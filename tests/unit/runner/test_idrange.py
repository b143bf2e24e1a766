"""Host id ranges: a claim handed from one holder to a sandbox stays claimed throughout,
and only its holder can hand it on or drop it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.host import idrange


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "ids"


def test_a_transferred_range_is_claimed_by_the_sandbox_and_recorded_in_its_dir(
    tmp_path: Path, registry: Path,
) -> None:  # fmt: skip
    stock, data = tmp_path / "data" / "ns-stock", tmp_path / "data"
    holder = stock / "123.abc"
    holder.mkdir(parents=True)
    ids = idrange.lease(holder, stock, registry)
    sandbox = data / "sandboxes" / "sb-1"
    sandbox.mkdir(parents=True)
    idrange.transfer(ids, (stock, "123.abc"), sandbox, data, registry)
    assert idrange.owners(registry) == {ids.index: (str(data), "sb-1")}
    assert idrange.held(data, registry) == {ids.index: "sb-1"} and not idrange.held(stock, registry)
    assert idrange.current(sandbox) == ids
    assert sorted(p.name for p in registry.iterdir()) == [str(ids.index)]  # no temp file left
    # The sandbox's claim is released as any other; the old holder can no longer drop it.
    idrange.drop(ids, (stock, "123.abc"), registry)
    assert idrange.claims(data, registry) == ["sb-1"]
    idrange.release(sandbox, data, registry)
    assert idrange.owners(registry) == {}


def test_only_the_holder_of_a_claim_can_hand_it_on(tmp_path: Path, registry: Path) -> None:
    holder = tmp_path / "stock" / "1.a"
    holder.mkdir(parents=True)
    ids = idrange.lease(holder, tmp_path / "stock", registry)
    sandbox = tmp_path / "sb"
    sandbox.mkdir()
    with pytest.raises(RuntimeBackendError):
        idrange.transfer(ids, (tmp_path / "stock", "1.b"), sandbox, tmp_path, registry)
    assert idrange.owners(registry) == {ids.index: (str(tmp_path / "stock"), "1.a")}
    assert idrange.current(sandbox) is None


def test_a_lease_never_takes_a_range_under_transfer(tmp_path: Path, registry: Path) -> None:
    holder = tmp_path / "stock" / "1.a"
    holder.mkdir(parents=True)
    ids = idrange.lease(holder, tmp_path / "stock", registry)
    (registry / f".{ids.index}.99.tmp").write_text("half written\n")  # (a transfer's temp)
    other = tmp_path / "other"
    other.mkdir()
    assert idrange.lease(other, tmp_path, registry).index != ids.index
    assert set(idrange.owners(registry)) == {ids.index, ids.index + 1}
