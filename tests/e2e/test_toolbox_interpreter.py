"""The code interpreter through the official SDK (sync and async), in real sandboxes."""

from __future__ import annotations

import time

import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaTimeoutError,
)

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
COUNT = "import time\nfor i in range(5):\n    print(i)\n    time.sleep(0.2)"


@pytest.fixture(scope="module")
def daytona_module(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))


@pytest.fixture(scope="module")
def sb(daytona_module: Daytona):
    sandbox = daytona_module.create(CreateSandboxFromSnapshotParams(env_vars={"X": "1"}))
    yield sandbox
    sandbox.delete()


def test_state_persists_and_output_arrives_through_callbacks(sb) -> None:
    out: list[str] = []
    err: list[str] = []
    r = sb.code_interpreter.run_code("x = 1\nimport sys\nprint('o'); print('e', file=sys.stderr)",
                                     on_stdout=lambda m: out.append(m.output),
                                     on_stderr=lambda m: err.append(m.output))
    assert (r.stdout, r.stderr, r.error) == ("o\n", "e\n", None)
    assert (out, err) == (["o\n"], ["e\n"])
    assert sb.code_interpreter.run_code("print(x)").stdout == "1\n"


def test_runs_as_the_sandbox_user_in_its_home_with_its_env(sb) -> None:
    r = sb.code_interpreter.run_code(
        "import os, getpass, subprocess\nprint(getpass.getuser(), os.getcwd(), os.environ['X'],"
        " os.environ['Y'])\nsubprocess.run(['sh', '-c', 'echo child $Y'])", envs={"Y": "2"})
    assert r.stdout == "daytona /home/daytona 1 2\nchild 2\n"
    r = sb.code_interpreter.run_code("import os; print(os.environ.get('Y'))")
    assert r.stdout == "None\n"


def test_output_streams_while_the_code_runs(sb) -> None:
    arrivals: list[tuple[float, str]] = []
    r = sb.code_interpreter.run_code(
        COUNT, on_stdout=lambda m: arrivals.append((time.monotonic(), m.output)))
    assert r.stdout == "0\n1\n2\n3\n4\n" == "".join(text for _, text in arrivals)
    assert len(arrivals) == 5
    assert arrivals[-1][0] - arrivals[0][0] > 0.6  # spread over ~0.8 s, not all at the end


def test_exceptions_come_back_as_errors(sb) -> None:
    seen = []
    r = sb.code_interpreter.run_code("def boom():\n    raise ValueError('bad')\nprint('a')\nboom()",
                                     on_error=seen.append)
    assert r.stdout == "a\n"
    assert r.error is not None and seen == [r.error]
    assert (r.error.name, r.error.value) == ("ValueError", "bad")
    assert "raise ValueError('bad')" in r.error.traceback
    assert sb.code_interpreter.run_code("print('fine')").error is None


def test_timeout_raises_and_the_context_survives(sb) -> None:
    sb.code_interpreter.run_code("kept = 'yes'")
    started = time.monotonic()
    with pytest.raises(DaytonaTimeoutError):
        sb.code_interpreter.run_code("import time\nwhile True:\n    time.sleep(0.1)", timeout=1)
    assert time.monotonic() - started < 10
    assert sb.code_interpreter.run_code("print(kept)").stdout == "yes\n"


def test_a_killed_interpreter_is_reported_and_replaced(sb) -> None:
    r = sb.code_interpreter.run_code("import os; os._exit(5)")
    assert r.error is not None and r.error.name == "InterpreterDied"
    assert "exited with code 5" in r.error.value
    assert sb.code_interpreter.run_code("print('back')").stdout == "back\n"


def test_contexts(sb) -> None:
    ci = sb.code_interpreter
    ctx = ci.create_context(cwd="/tmp")
    other = ci.create_context()
    try:
        assert (ctx.cwd, ctx.language, ctx.active) == ("/tmp", "python", True)
        assert other.cwd == "/home/daytona"
        assert {c.id for c in ci.list_contexts()} == {ctx.id, other.id}
        ci.run_code("v = 'ctx'", context=ctx)
        ci.run_code("v = 'default'")
        assert ci.run_code("import os; print(v, os.getcwd())", context=ctx).stdout == "ctx /tmp\n"
        assert ci.run_code("print(v)").stdout == "default\n"
        assert ci.run_code("print(v)", context=other).error.name == "NameError"
    finally:
        ci.delete_context(ctx)
        ci.delete_context(other)
    assert ci.list_contexts() == []
    with pytest.raises(DaytonaNotFoundError):
        ci.delete_context(ctx)
    with pytest.raises(DaytonaError, match="context not found"):
        ci.run_code("print(1)", context=ctx)


def test_state_survives_a_server_restart(server: Server, sb) -> None:
    sb.code_interpreter.run_code("survivor = 7")
    server.kill9()
    server.start()
    assert sb.code_interpreter.run_code("print(survivor)").stdout == "7\n"


async def test_async_sdk(server: Server, daytona_module: Daytona, sandboxes: list) -> None:
    async with AsyncDaytona(DaytonaConfig(api_key=server.api_key,
                                          api_url=server.api_url)) as client:
        sb = await client.create(CreateSandboxFromSnapshotParams())
        sandboxes.append(daytona_module.get(sb.id))
        ci = sb.code_interpreter
        await ci.run_code("x = 41")
        arrivals: list[float] = []
        r = await ci.run_code("print(x + 1)\n" + COUNT,
                              on_stdout=lambda m: arrivals.append(time.monotonic()))
        assert r.stdout == "42\n0\n1\n2\n3\n4\n" and arrivals[-1] - arrivals[0] > 0.6
        r = await ci.run_code("1/0")
        assert r.error is not None and r.error.name == "ZeroDivisionError"
        with pytest.raises(DaytonaTimeoutError):
            await ci.run_code("import time; time.sleep(60)", timeout=1)
        ctx = await ci.create_context()
        assert [c.id for c in await ci.list_contexts()] == [ctx.id]
        assert (await ci.run_code("print(x)", context=ctx)).error.name == "NameError"
        await ci.delete_context(ctx)
        assert await ci.list_contexts() == []
