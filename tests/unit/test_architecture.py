"""The architecture, read from the imports: each layer may depend only on what the
layering allows (docs/architecture.md draws it). A new import across the lines
fails here, not in review."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "cove"
# The agent's wire, shared by the server and the agent; the server's side of a call
# is ``cove.core.agent_call`` (in core).
WIRE = ("cove.agent.protocol", "cove.agent.mux")

# layer: (what it may import from cove, or None for "anything but the forbidden")
ALLOWED: dict[str, tuple[str, ...]] = {
    # The domain: itself, the errors, the API's schemas (its input types) and the
    # agent's wire format. Never the host, the database, HTTP or the wiring.
    "core": ("cove.core", "cove.errors", "cove.schemas", *WIRE),
    "schemas": ("cove.schemas",),
    # The host: its own modules, the domain's ports and settings, and the agent's
    # package (shipped into sandboxes from its path). ``OciRuntime.exec`` (tests and
    # benchmarks) talks to the agent through the server's gateway.
    "runner": ("cove.runner", "cove.core.ports", "cove.core.config", "cove.core.validation",
               "cove.core.toolbox", "cove.errors", "cove.hostfiles", "cove.agent",
               "cove.core.fleet",  # the registry's port and placement (routing)
               "cove.core.tarheaders"),  # reading tar archives nobody vouches for  # fmt: skip
    "store": ("cove.store", "cove.core.ports", "cove.core.sandbox", "cove.core.snapshots",
              "cove.core.volumes", "cove.core.registries", "cove.core.ssh_access",
              "cove.core.secrets", "cove.core.pool", "cove.core.keys", "cove.core.permissions",
              "cove.core.coordination", "cove.core.fleet", "cove.core.quotas",
              "cove.core.metering", "cove.core.periodic", "cove.core.buildlog",
              "cove.core.contexts", "cove.errors",
              "cove.hostfiles"),  # fmt: skip
    # HTTP transport: the domain and the wiring's Services; never the host or the
    # database directly. ``cove.web`` only names where the dashboard's built files are.
    "api": ("cove.api", "cove.core", "cove.errors", "cove.schemas", "cove.server", "cove.web"),
    # The dashboard's files: no code of Cove's (the page speaks the public API only).
    "web": (),
}


def _modules(layer: str) -> list[Path]:
    return sorted((SRC / layer).rglob("*.py"))


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute names imported by the module at run time (TYPE_CHECKING blocks skipped)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.Import):
                    found.extend((child.lineno, a.name) for a in child.names)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parts = package.split(".")
                        up = parts[: len(parts) - child.level + 1]
                        base = ".".join([*up, base] if base else up)
                    names = [f"{base}.{a.name}" for a in child.names]
                    found.extend((child.lineno, n) for n in names)

    visit(tree.body)
    return found


def _allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_they_may(layer: str) -> None:
    bad = []
    for path in _modules(layer):
        for lineno, name in _imports(path):
            if name.split(".")[0] != "cove":
                continue
            # ``from cove.core.ports import X`` also lists cove.core.ports.X: judge the module.
            if not _allowed(name, ALLOWED[layer]) and not _allowed(
                name.rsplit(".", 1)[0], ALLOWED[layer]
            ):
                bad.append(f"{path.relative_to(SRC)}:{lineno} imports {name}")
    assert bad == []


def test_every_layer_has_modules_to_check() -> None:
    """A renamed package must not leave a rule checking nothing."""
    assert all(_modules(layer) for layer in [*ALLOWED, "agent"])


SANDBOX_SCRIPTS = {"a11y_helper.py"}  # run by the agent as ``python3 -c``, never imported


def test_the_agent_runs_on_the_standard_library_alone() -> None:
    """``cove.agent`` is copied into every sandbox and run by its own Python:
    nothing outside the standard library and its own package. (Helpers the agent runs
    with the sandbox's ``python3``, never importing them, use the sandbox's packages.)"""
    bad = []
    for path in _modules("agent"):
        if path.name in SANDBOX_SCRIPTS:
            continue
        for lineno, name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("cove.agent") or top in sys.stdlib_module_names:
                continue
            if top == "__future__":
                continue
            bad.append(f"{path.relative_to(SRC)}:{lineno} imports {name}")
    assert bad == []


def test_the_rule_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "cove" / "core" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("from cove.store.sql import make_engine\nfrom . import ports\n"
                      "if TYPE_CHECKING:\n    from cove.runner import oci\n")  # fmt: skip
    global SRC
    saved, SRC = SRC, tmp_path / "cove"
    try:
        names = [n for _, n in _imports(module)]
    finally:
        SRC = saved
    assert "cove.store.sql.make_engine" in names and "cove.core.ports" in names
    assert not any(n.startswith("cove.runner") for n in names)
    assert not _allowed("cove.store.sql", ALLOWED["core"])
    assert _allowed("cove.core.ports", ALLOWED["core"])
