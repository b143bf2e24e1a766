"""The committed contracts match the code (run scripts/gen-spec after a change)."""

from __future__ import annotations

import pytest

from cove import spec


@pytest.mark.parametrize(("name", "build"), [("openapi.json", spec.openapi),
                                             ("toolbox.json", spec.toolbox)])
def test_spec_is_current(name: str, build) -> None:  # noqa: ANN001
    committed = (spec.SPEC_DIR / name).read_text()
    assert committed == spec.render(build()), f"spec/{name} is stale: run scripts/gen-spec"
