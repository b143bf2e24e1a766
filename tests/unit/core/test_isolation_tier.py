"""Choosing a sandbox's isolation tier: the cove.io/isolation label or the operator's
default, checked before anything is made, fixed for the sandbox's life."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.core import fork
from cove.core.config import Settings
from cove.core.lifecycle import LifecycleService
from cove.errors import BadRequest
from cove.runner.fake import FakeRuntime
from cove.schemas.sandbox import SandboxCreate
from tests.unit.api.conftest import AUTH

LABEL = "cove.io/isolation"


async def _create(lifecycle: LifecycleService, org: str, **fields: object):
    return await lifecycle.create(organization_id=org, request=SandboxCreate(**fields))


async def test_the_label_chooses_the_tier_and_the_runtime_is_told(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    plain = await _create(lifecycle, org, labels={"a": "1"})
    strong = await _create(lifecycle, org, labels={LABEL: "gvisor"})
    assert plain.labels == {"a": "1"}  # the user's labels, as given
    assert (plain.isolation, strong.isolation) == ("crun", "gvisor")
    assert runtime.specs[plain.id].isolation == "crun"
    assert runtime.specs[strong.id].isolation == "gvisor"


async def test_the_operator_default_applies_without_the_label(
    settings: Settings, lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    settings.default_isolation = "gvisor"
    sb = await _create(lifecycle, org)
    assert sb.isolation == "gvisor" and runtime.specs[sb.id].isolation == "gvisor"
    assert LABEL not in sb.labels
    explicit = await _create(lifecycle, org, labels={LABEL: "crun"})
    assert runtime.specs[explicit.id].isolation == "crun"


@pytest.mark.parametrize("tier", ["kata", "GVISOR", "gvisor "])
async def test_an_unknown_tier_is_refused_and_nothing_is_made(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime, tier: str
) -> None:
    with pytest.raises(BadRequest, match=LABEL):
        await _create(lifecycle, org, labels={LABEL: tier})
    assert runtime.calls == [] and lifecycle.list(org)[0] == []


async def test_a_tier_the_host_cannot_run_is_refused(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    runtime.isolations = {"crun"}  # runsc not installed
    with pytest.raises(BadRequest, match="not available"):
        await _create(lifecycle, org, labels={LABEL: "gvisor"})
    assert runtime.calls == [] and lifecycle.list(org)[0] == []


async def test_the_tier_is_fixed_for_life_and_forks_keep_it(
    lifecycle: LifecycleService, org: str, runtime: FakeRuntime
) -> None:
    sb = await _create(lifecycle, org, labels={LABEL: "gvisor"})
    with pytest.raises(BadRequest, match="fixed"):
        await lifecycle.update(org, sb.id, labels={LABEL: "crun"})
    kept = await lifecycle.update(org, sb.id, labels={"b": "2"})
    assert kept.labels == {"b": "2"} and kept.isolation == "gvisor"
    assert lifecycle.get(org, sb.id).isolation == "gvisor"  # (stored)
    child = await fork.fork(lifecycle, org, sb.id, name=None)
    assert child.isolation == "gvisor" and runtime.specs[child.id].isolation == "gvisor"
    await lifecycle.stop(org, sb.id)
    await lifecycle.start(org, sb.id)
    assert runtime.specs[sb.id].isolation == "gvisor"


def test_the_api_answers_400_in_daytonas_envelope(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    runtime.isolations = {"crun"}
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="test-key")
    with TestClient(create_app(settings, runtime=runtime)) as client:
        for tier, message in (("gvisor", "not available"), ("kata", LABEL)):
            r = client.post("/api/sandbox", json={"labels": {LABEL: tier}}, headers=AUTH)
            body = r.json()
            assert r.status_code == 400 and body["statusCode"] == 400
            assert body["code"] == "BAD_REQUEST" and message in body["message"]
        assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []
