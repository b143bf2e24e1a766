"""Which HTTP routes the official Daytona SDKs call, and whether Cove serves them.

The routes come from the SDKs' generated API clients (method name -> HTTP method
and path), kept to the methods the SDKs' own code calls, plus the WebSocket
paths the SDKs build by hand. Python: ``daytona`` in this interpreter's
site-packages; TypeScript: ``@daytonaio/sdk`` in ``tests/ts/node_modules`` (when
installed). ``scripts/sdk-coverage`` writes ``spec/sdk-coverage.md``; a unit test
fails when an SDK route is neither served nor listed in ``KNOWN_GAPS``.
"""

from __future__ import annotations

import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TS_MODULES = ROOT / "tests" / "ts" / "node_modules"
TABLE = ROOT / "spec" / "sdk-coverage.md"
BASES = {"toolbox": "/toolbox/{sandboxId}", "api": "/api"}

# Routes the SDKs call that Cove does not serve, and why (keep this list true).
KNOWN_GAPS: dict[tuple[str, str], str] = {}
# git routes other than these are gaps ("git X is not served")
GIT_SERVED = {"add", "branches", "checkout", "clone", "commit", "config", "config/user",
              "credentials", "init", "pull", "push", "remotes", "reset", "restore", "status"}


@dataclass
class Route:
    method: str
    path: str
    callers: set[str] = field(default_factory=set)


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def python_routes() -> dict[tuple[str, str], Route]:
    """The routes the Python SDK calls (GET/POST/... and WebSocket as GET)."""
    site = _site_packages()
    generated: dict[str, tuple[str, str]] = {}
    for package, base in (("daytona_toolbox_api_client", "toolbox"), ("daytona_api_client", "api")):
        for module in sorted((site / package / "api").glob("*_api.py")):
            pattern = r"def _(\w+)_serialize\(.*?method='(\w+)',\s*resource_path='([^']+)'"
            for m in re.finditer(pattern, module.read_text(), re.S):
                generated[m.group(1)] = (m.group(2), BASES[base] + m.group(3))
    code = "\n".join(p.read_text() for p in (site / "daytona").rglob("*.py"))
    called = set(re.findall(r"api\w*\.(\w+)\(", code, re.I))
    called |= set(re.findall(r"\._(\w+)_serialize\(", code))
    routes: dict[tuple[str, str], Route] = {}
    for name in sorted(called & generated.keys()):
        method, path = generated[name]
        routes.setdefault((method, path), Route(method, path)).callers.add(f"py:{name}")
    for path, method in re.findall(r'"(/files/[\w-]+)",\s*"(\w+)"', code):  # signed file URLs
        key = (method, BASES["toolbox"] + path)
        routes.setdefault(key, Route(*key)).callers.add("py:(signed URL)")
    if "create-connect" in code:
        key = ("GET", "/toolbox/{sandboxId}/process/pty/create-connect")
        routes.setdefault(key, Route(*key)).callers.add("py:create_pty_session (ws)")
    return routes


def typescript_routes() -> dict[tuple[str, str], Route]:
    """The routes the TypeScript SDK calls (empty when it is not installed)."""
    sdk = TS_MODULES / "@daytonaio" / "sdk" / "cjs"
    if not sdk.is_dir():
        return {}
    generated: dict[str, tuple[str, str]] = {}
    for package, base in (("toolbox-api-client", "toolbox"), ("api-client", "api")):
        for module in sorted((TS_MODULES / "@daytona" / package / "src" / "api").glob("*.js")):
            pattern = r"(\w+): async \([^)]*\) => \{.*?localVarPath = `([^`]+)`.*?method: '(\w+)'"
            for m in re.finditer(pattern, module.read_text(), re.S):
                generated.setdefault(m.group(1), (m.group(3), BASES[base] + m.group(2)))
    code = "\n".join(p.read_text() for p in sdk.rglob("*.js"))
    routes: dict[tuple[str, str], Route] = {}
    for name in sorted(set(re.findall(r"[aA]pi\w*\.(\w+)\(", code)) & generated.keys()):
        method, path = generated[name]
        routes.setdefault((method, path), Route(method, path)).callers.add(f"ts:{name}")
    for raw in re.findall(r"basePath(?:\.replace\([^)]*\))?\}(/[^`?]+)", code):
        path = BASES["toolbox"] + re.sub(r"\$\{(\w+)\}", r"{\1}", raw)
        key = ("GET", path) if "/files/" not in path else ("POST", path)
        routes.setdefault(key, Route(*key)).callers.add("ts:(built by hand)")
    return routes


def sdk_routes() -> list[Route]:
    """Both SDKs' routes, merged."""
    merged = python_routes()
    for key, route in typescript_routes().items():
        merged.setdefault(key, Route(route.method, route.path)).callers |= route.callers
    return sorted(merged.values(), key=lambda r: (r.path, r.method))


def cove_routes() -> list[tuple[str, str]]:
    """(method, path) of every route Cove serves (WebSockets as GET)."""
    from fastapi import routing

    from cove.spec import app

    # Newer FastAPI keeps included routers lazily (iter_route_contexts flattens them).
    flatten = getattr(routing, "iter_route_contexts", lambda routes: routes)
    served = []
    for route in flatten(app().routes):
        methods = sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}) or ["GET"]
        served += [(method, route.path) for method in methods]
    return served


def _matches(sdk_path: str, cove_path: str) -> bool:
    ours, theirs = cove_path.split("/"), sdk_path.split("/")
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if a.startswith("{"):
            continue
        if a != b:
            return False
    return True


def served_by(route: Route, served: list[tuple[str, str]]) -> str | None:
    """The Cove path that answers ``route``, if any (the most literal one)."""
    hits = [p for m, p in served if m == route.method and _matches(route.path, p)]
    return min(hits, key=lambda p: p.count("{"), default=None)


def gap(route: Route) -> str | None:
    """Why Cove does not serve ``route`` (None when it is not a known gap)."""
    if route.path.startswith("/toolbox/{sandboxId}/git/"):
        rest = route.path.removeprefix("/toolbox/{sandboxId}/git/")
        return None if rest in GIT_SERVED else f"git {rest} is not served"
    for (method, prefix), why in KNOWN_GAPS.items():
        if why and method in ("*", route.method) and route.path.startswith(prefix):
            return why
    return None


def render() -> str:
    """``spec/sdk-coverage.md``."""
    served = cove_routes()
    rows, answered = [], 0
    routes = sdk_routes()
    for route in routes:
        where = served_by(route, served)
        answered += where is not None
        status = "yes" if where else f"no: {gap(route) or 'NOT A KNOWN GAP'}"
        callers = ", ".join(sorted(route.callers))
        rows.append(f"| {route.method} | `{route.path}` | {callers} | {status} |")
    header = [
        "# Routes the Daytona SDKs call, and what Cove answers",
        "",
        "Generated by `scripts/sdk-coverage` from `daytona` (Python) and `@daytonaio/sdk` "
        "(TypeScript, `tests/ts`); WebSockets count as GET. Never edit by hand.",
        "",
        f"**{len(routes)} routes; Cove answers {answered}.**",
        "",
        "| method | path | called by | Cove |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join(header + rows) + "\n"


if __name__ == "__main__":
    TABLE.write_text(render())
