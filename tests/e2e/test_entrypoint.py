"""An image's ENTRYPOINT + CMD runs at every start of a sandbox made from it, in the
reserved session ``entrypoint``, through the official SDK (images pushed to a loopback
registry)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConfig,
)

from tests.e2e.conftest import KEY, Server, run_ok, running_server
from tests.registry import ImageSpec, Registry, busybox_layer, entry, file, layer, layout

pytestmark = pytest.mark.e2e
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A supervisor in the style of supervisord: starts a long-running worker, says so, stays up.
SUPERVISOR = b"""#!/bin/sh
echo "supervisor up: uid=$(id -u) cwd=$(pwd) FOO=$FOO args=$*"
sh -c 'echo $$ > $HOME/worker.pid; exec sleep 100000' &
echo "worker started"
wait
"""


def _image(**config: object) -> ImageSpec:
    tools = layer([entry(f"bin/{tool}", tarfile.SYMTYPE, target="busybox")
                   for tool in ("sleep", "false", "rm")]  # fmt: skip
                  + [entry("usr", tarfile.DIRTYPE), entry("usr/local", tarfile.DIRTYPE),
                     entry("usr/local/bin", tarfile.DIRTYPE),
                     file("usr/local/bin/supervise", SUPERVISOR, mode=0o755)])
    return ImageSpec([busybox_layer(), tools], env=(PATH, "FOO=from-image"),  # type: ignore[arg-type]
                     workdir="/srv/app", **config)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's COVE_OCI_LAYOUT_DIR."""
    return tmp_path_factory.mktemp("entry-layouts")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, layouts: Path) -> Iterator[Server]:
    env = {"COVE_INSECURE_REGISTRIES": "127.0.0.1", "COVE_NETWORK": "none",
           "COVE_OCI_LAYOUT_DIR": str(layouts)}
    with running_server(tmp_path_factory.mktemp("cove-entry"), 4, env) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))


def _push(registry: Registry, tmp: pytest.TempPathFactory, name: str, **config: object) -> str:
    return registry.push(layout(tmp.mktemp("img") / name, _image(**config)), f"entry/{name}")


def _worker_runs(sb) -> bool:  # noqa: ANN001 - an SDK Sandbox
    out = sb.process.exec("cat /proc/$(cat $HOME/worker.pid)/cmdline")
    return out.exit_code == 0 and out.result.startswith("sleep")


def test_a_supervisor_entrypoint_runs_at_create_and_after_a_restart(
    client: Daytona, sandboxes: list, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ref = _push(registry, tmp_path_factory, "supervisor", user="daytona",
                entrypoint=("/usr/local/bin/supervise", "--flag"), cmd=("worker",))  # fmt: skip
    sb = client.create(CreateSandboxFromImageParams(image=ref), timeout=120)
    sandboxes.append(sb)
    session = sb.process.get_entrypoint_session()
    assert session.session_id == "entrypoint" and len(session.commands) == 1
    assert session.commands[0].command.startswith("/usr/local/bin/supervise --flag worker")
    for _ in range(2):
        run_ok(sb, "i=0; while ! test -s $HOME/worker.pid && test $i -lt 300; do "
                   "sleep 0.1; i=$((i+1)); done")
        assert _worker_runs(sb)
        logs = sb.process.get_entrypoint_logs()
        assert ("supervisor up: uid=1000 cwd=/srv/app FOO=from-image args=--flag worker"
                in logs.stdout), logs.output  # fmt: skip
        assert "worker started" in logs.stdout
        assert sb.process.get_entrypoint_session().commands[0].exit_code is None  # still up
        run_ok(sb, "rm $HOME/worker.pid")
        sb.stop()
        sb.start()
        assert sb.state == "started"
    # The session stays reserved: users cannot take it over.
    with pytest.raises(Exception, match="(?i)reserved|exists"):
        sb.process.create_session("entrypoint")


@pytest.mark.parametrize(
    ("config", "expected", "code"),
    [
        ({"entrypoint": ("/bin/sh", "-c", "echo shell-form $FOO; exit 3")}, "shell-form from-image",
         3),
        ({"cmd": ("echo", "cmd", "only")}, "cmd only", 0),
        ({"entrypoint": ("/no/such/program",), "cmd": ("x",)}, "/no/such/program", 127),
    ],
    ids=["shell-form-exits", "cmd-only", "missing-program"],
)
def test_an_entrypoint_that_ends_or_fails_leaves_the_sandbox_started(
    client: Daytona, sandboxes: list, registry: Registry,
    tmp_path_factory: pytest.TempPathFactory, config: dict, expected: str, code: int,
) -> None:  # fmt: skip
    ref = _push(registry, tmp_path_factory, f"ends{code}", **config)
    sb = client.create(CreateSandboxFromImageParams(image=ref), timeout=120)
    sandboxes.append(sb)
    assert sb.state == "started"
    run_ok(sb, "true")
    # The session's command ends; its logs tell why.
    command = sb.process.get_entrypoint_session().commands[0]
    for _ in range(100):
        command = sb.process.get_entrypoint_session().commands[0]
        if command.exit_code is not None:
            break
        run_ok(sb, "sleep 0.1")
    assert command.exit_code == code
    assert expected in sb.process.get_entrypoint_logs().output
    assert client.get(sb.id).state == "started"


def test_a_snapshots_own_entrypoint_replaces_the_images(
    client: Daytona, sandboxes: list, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ref = _push(registry, tmp_path_factory, "override", user="daytona",
                entrypoint=("/bin/false",), cmd=("worker",))  # fmt: skip
    name = "entry-override"
    snap = client.snapshot.create(CreateSnapshotParams(
        name=name, image=ref, entrypoint=["/usr/local/bin/supervise", "--override"]))  # fmt: skip
    try:
        assert snap.state == "active" and snap.entrypoint == ["/usr/local/bin/supervise",
                                                              "--override"]  # fmt: skip
        sb = client.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=120)
        sandboxes.append(sb)
        command = sb.process.get_entrypoint_session().commands[0]
        # as docker run --entrypoint: the image's CMD goes too
        assert command.command.startswith("/usr/local/bin/supervise --override <")
        run_ok(sb, "i=0; while ! test -s $HOME/worker.pid && test $i -lt 300; do "
                   "sleep 0.1; i=$((i+1)); done")  # fmt: skip
        assert _worker_runs(sb)
        assert "args=--override\n" in sb.process.get_entrypoint_logs().stdout
    finally:
        for sb in sandboxes:
            sb.delete()
        sandboxes.clear()
        client.snapshot.delete(client.snapshot.get(name))


def test_an_oci_layout_image_runs_its_entrypoint_as_a_pulled_one_does(
    client: Daytona, sandboxes: list, layouts: Path
) -> None:
    """``POST /snapshots`` of a local OCI layout keeps the image's config: its
    Entrypoint + Cmd run at start as its User, with its env and working directory."""
    layout(layouts / "entry-local", _image(user="daytona", entrypoint=("/usr/local/bin/supervise",),
                                           cmd=("local",)))  # fmt: skip
    name = "entry-local-snap"
    snap = client.snapshot.create(CreateSnapshotParams(name=name, image="entry-local:v1"))
    try:
        assert snap.state == "active"
        sb = client.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=120)
        sandboxes.append(sb)
        run_ok(sb, "i=0; while ! test -s $HOME/worker.pid && test $i -lt 300; do "
                   "sleep 0.1; i=$((i+1)); done")  # fmt: skip
        assert _worker_runs(sb)
        logs = sb.process.get_entrypoint_logs().stdout
        assert "supervisor up: uid=1000 cwd=/srv/app FOO=from-image args=local\n" in logs
    finally:
        for sb in sandboxes:
            sb.delete()
        sandboxes.clear()
        client.snapshot.delete(client.snapshot.get(name))
