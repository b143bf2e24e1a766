"""schemathesis against the served OpenAPI of a real ``cove serve`` with real sandboxes.

Every operation is fuzzed (schemathesis' examples, coverage, fuzzing and stateful
phases, a bounded number of examples each) with every check but one; any 5xx, any
answer the document does not describe (status, content type, body) or any request
breaking the document that is not refused fails the test.

Path parameters name live objects, so requests reach the code behind them: toolbox
operations a started sandbox (with a session, a command, a command reading its input,
a terminal, an interpreter context, a running desktop, a Python language server, a git
repository, a project and a file), lifecycle operations a second sandbox, volumes a
volume, snapshots the default snapshot. Body and query fields that name those (git
``path``, ``branch``, LSP ``pathToProject`` and ``uri``, file paths, desktop process
names) are drawn from schemathesis dictionaries most of the time, random otherwise.
Ending the fixtures (``DELETE`` of a sandbox, volume, snapshot, session, terminal or
context, and every ``stop``) runs last, in a second pass. Not fuzzed: ``fork`` and
``snapshot`` of a sandbox (each call copies a whole file system, minutes on a small
host; tests/e2e/test_pause_fork.py and test_snapshots.py drive them).

Checks:
- ``positive_data_acceptance`` is off: it wants every schema-valid request to succeed,
  but much of what a valid request means is beyond a schema (files in the sandbox,
  CIDR lists, resources within this server's limits, the sandbox's state), and Daytona
  answers 400 there; tests/unit/api assert those 400s one by one.
- ``max_response_time`` is off: no timing thresholds in tests (creating, archiving and
  restoring real sandboxes on a loaded 2-core host takes what it takes).
- ``negative_data_rejection`` also accepts 413 (a body above the limit is refused
  before its content is looked at).

The seed is fixed (``COVE_FUZZ_SEED`` picks another, ``random`` a new one each run) so
that a run is repeatable; longer campaigns with fresh seeds (and ``COVE_FUZZ_EXAMPLES``
above 10) are run by hand, and each failure they find becomes a test of its own
(tests/unit/api/test_fuzz_findings.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import KEY, Server, running_server

pytestmark = pytest.mark.e2e
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "missing_required_header", "unsupported_method", "allow_header_conformance",
          "use_after_free", "ensure_resource_availability", "ignored_auth",
          "object_level_authorization")  # all but positive_data_acceptance, max_response_time
# operation ids: what ends a fixture (the desktop and the language server too)
LAST = r"^(delete_(sandbox|volume|snapshot|session|context)|kill_pty|stop)_"
NOT_FUZZED = LAST.replace("^(", "^(fork_sandbox|snapshot_sandbox|", 1)
SEED = os.environ.get("COVE_FUZZ_SEED", "20261204")
EXAMPLES = int(os.environ.get("COVE_FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cove-fuzz"), 5) as srv:
        yield srv


# What the fixture sandbox holds for the operations to work on (paths in its user's home).
HOME = "/home/daytona"
SETUP = f"""set -e; cd {HOME}
git init -q -b main fuzz-repo; cd fuzz-repo; echo hi > README; git add README
git -c user.name=fuzz -c user.email=fuzz@example.com commit -q -m first; git branch other
git clone -q --bare . ../fuzz-remote.git; git remote add origin ../fuzz-remote.git
git fetch -q origin; git branch -q -u origin/main
cd {HOME}; mkdir -p fuzz-project; printf "def hello():\\n    return 1\\n" > fuzz-project/main.py
echo hello > fuzz-file.txt; touch fuzz-hold"""
# Reads its input until the sandbox goes; schemathesis reuses the commands it sees listed,
# and a copy of it must not wedge the session it runs in (the file is gone by then).
READING = f"rm {HOME}/fuzz-hold && exec cat > /dev/null"
DICTIONARIES = {  # values the fuzzer draws (often, not always) for these parameters
    "repo": [f"{HOME}/fuzz-repo", "fuzz-repo"],
    "branch": ["main", "other"],
    "remote": ["origin"],
    "tracked": ["README"],
    "file": [f"{HOME}/fuzz-file.txt", "fuzz-file.txt", f"{HOME}/fuzz-repo/README"],
    "project": [f"{HOME}/fuzz-project"],
    "language": ["python"],  # typescript's servers are heavy on a small host
    "uri": [f"file://{HOME}/fuzz-project/main.py", "main.py"],
    "desktop": ["xvfb", "wm", "x11vnc", "novnc"],
    "no_delay": [0],  # typing 10 000 characters 12 ms apart takes 2 minutes
}


def _objects(srv: Server) -> dict[str, str]:
    """Live objects for the path parameters."""
    api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)

    def call(method: str, path: str, **kwargs: object) -> dict:
        r = api.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code < 300, r.text
        return r.json() if r.content else {}

    box = call("POST", "/api/sandbox", json={"name": "fuzz-toolbox"})["id"]
    life = call("POST", "/api/sandbox", json={"name": "fuzz-lifecycle"})["id"]
    volume = call("POST", "/api/volumes", json={"name": "fuzz-volume"})
    tb = f"/toolbox/{box}"
    assert call("POST", f"{tb}/process/execute", json={"command": f"sh -c '{SETUP}'"}
                )["exitCode"] == 0  # fmt: skip
    for session in ("fuzz-session", "fuzz-input"):
        call("POST", f"{tb}/process/session", json={"sessionId": session})
    command = call("POST", f"{tb}/process/session/fuzz-session/exec",
                   json={"command": "echo hi"})["cmdId"]  # fmt: skip
    reading = call("POST", f"{tb}/process/session/fuzz-input/exec",
                   json={"command": READING, "runAsync": True})["cmdId"]  # fmt: skip
    call("POST", f"{tb}/process/pty", json={"id": "fuzz-pty"})
    context = call("POST", f"{tb}/process/interpreter/context", json={})["id"]
    call("POST", f"{tb}/computeruse/start")
    call("POST", f"{tb}/lsp/start", json={"languageId": "python",
                                          "pathToProject": f"{HOME}/fuzz-project"})
    return {"box": box, "life": life, "volume": volume["id"], "volume_name": volume["name"],
            "command": command, "reading": reading, "context": context}  # fmt: skip


def _toml(values: dict[str, object]) -> str:
    """A TOML inline table of parameters: a string, or a dictionary to draw from."""
    items = (f'"{k}" = "{v}"' if isinstance(v, str) else
             f'"{k}" = {{ dictionary = "{v[0]}", probability = {v[1]} }}'  # type: ignore[index]
             for k, v in values.items())  # fmt: skip
    return "{ " + ", ".join(items) + " }"


def _config(o: dict[str, str]) -> str:
    box = {"path.sandbox_id": o["box"]}
    ids = {**box, "path.session_id": "fuzz-session", "path.command_id": o["command"],
           "path.context_id": o["context"]}  # fmt: skip
    often = 0.8
    # The first [[operations]] entry whose regex matches an operation applies to it.
    operations = [
        ("^/toolbox/.*/process/pty/", {**box, "path.session_id": "fuzz-pty"}),
        ("^/toolbox/.*/command/.*/input$", {**ids, "path.session_id": "fuzz-input",
                                             "path.command_id": o["reading"]}),
        ("^/toolbox/.*/git/", {**box, "body.path": ("repo", often), "query.path": ("repo", often),
                               "body.branch": ("branch", 0.5), "body.name": ("branch", 0.3),
                               "body.files[*]": ("tracked", 0.5), "body.remote": ("remote", 0.5)}),
        ("^/toolbox/.*/computeruse/process/", {**box, "path.process_name": ("desktop", often)}),
        ("^/toolbox/.*/computeruse/", {**box, "body.delay": ("no_delay", often)}),
        ("^/toolbox/.*/lsp/", {**box, "body.languageId": ("language", often),
                               "query.languageId": ("language", often),
                               "body.pathToProject": ("project", often),
                               "query.pathToProject": ("project", often),
                               "body.uri": ("uri", often), "query.uri": ("uri", often)}),
        ("^/toolbox/.*/files/", {**box, "query.path": ("file", 0.5),
                                 "query.source": ("file", 0.3), "body.paths[*]": ("file", 0.5)}),
        ("^/toolbox/", ids),
        ("^/api/sandbox/", {"path.id_or_name": o["life"]}),
        ("^/api/volumes/", {"path.volume_id": o["volume"], "path.name": o["volume_name"]}),
        ("^/api/snapshots/", {"path.id_or_name": "cove-default"}),
    ]
    dictionaries = "\n".join(f"{name} = {{ values = {values!r} }}"
                             for name, values in DICTIONARIES.items())  # fmt: skip
    entries = "\n".join(f'[[operations]]\ninclude-path-regex = "{regex}"\nparameters = '
                        f"{_toml(params)}" for regex, params in operations)  # fmt: skip
    return f"""
headers = {{ Authorization = "Bearer {KEY}" }}
workers = 1
[generation]
max-examples = {EXAMPLES}
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
[dictionaries]
{dictionaries}
{entries}
"""


def _schemathesis(srv: Server, config: Path, *selection: str) -> tuple[int, str]:
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "--no-color", "--config-file", str(config), "run", f"{srv.url}/openapi.json",
           "--checks", ",".join(CHECKS),
           "--request-timeout", "120", *selection]  # fmt: skip
    if SEED != "random":
        cmd += ["--seed", SEED]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200,
                          cwd=config.parent)  # its example database: in the test's tmp
    return done.returncode, done.stdout + done.stderr


@pytest.mark.timeout(2 * 1200 + 200)  # two schemathesis runs of at most 1200 s
def test_no_server_error_nor_schema_violation(fuzz_server: Server, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(_objects(fuzz_server)))
    first = _schemathesis(fuzz_server, config, "--exclude-operation-id-regex", NOT_FUZZED)
    last = _schemathesis(fuzz_server, config, "--include-operation-id-regex", LAST)
    for code, output in (first, last):
        print(output if code else output[-1500:])  # noqa: T201 - failures, or the figures
        assert code == 0, "schemathesis found failures (above)"
