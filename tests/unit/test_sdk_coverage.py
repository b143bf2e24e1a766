"""Every route the Daytona SDKs call is served by Cove or listed as a known gap, the
list of gaps is true, and spec/sdk-coverage.md is current."""

from __future__ import annotations

import pytest

from cove import sdk_coverage as cov


@pytest.fixture(scope="module")
def served() -> list[tuple[str, str]]:
    return cov.cove_routes()


def test_the_python_sdk_is_read() -> None:
    routes = cov.python_routes()
    assert ("POST", "/toolbox/{sandboxId}/lsp/completions") in routes
    assert ("GET", "/toolbox/{sandboxId}/system/metrics") in routes
    assert len(routes) > 100


def test_every_sdk_route_is_served_or_a_known_gap(served: list[tuple[str, str]]) -> None:
    unknown = [f"{r.method} {r.path} ({', '.join(sorted(r.callers))})" for r in cov.sdk_routes()
               if cov.served_by(r, served) is None and cov.gap(r) is None]
    assert unknown == [], "SDK routes Cove does not serve (serve them, or add to KNOWN_GAPS)"


def test_known_gaps_are_true(served: list[tuple[str, str]]) -> None:
    """A gap that Cove now serves, or that no SDK route falls in, must leave the list."""
    routes = cov.sdk_routes()
    served_gaps = [r.path for r in routes if cov.gap(r) and cov.served_by(r, served)]
    assert served_gaps == []
    for (method, prefix), why in cov.KNOWN_GAPS.items():
        assert any(r.path.startswith(prefix) and method in ("*", r.method) for r in routes), why


def test_the_lsp_metrics_and_entrypoint_routes_are_served(served: list[tuple[str, str]]) -> None:
    wanted = [r for r in cov.sdk_routes() if "/lsp/" in r.path or "/system/" in r.path
              or "/entrypoint" in r.path]  # fmt: skip
    assert len(wanted) >= 10
    for route in wanted:
        assert cov.served_by(route, served), route


@pytest.mark.skipif(not cov.TS_MODULES.is_dir(), reason="TypeScript SDK not installed (tests/ts)")
def test_the_committed_table_is_current() -> None:
    stale = "spec/sdk-coverage.md is stale: run scripts/sdk-coverage"
    assert cov.TABLE.read_text() == cov.render(), stale
