"""What the default snapshot gives an agent, through the official SDK: ``pip install``
as the sandbox user and in a Dockerfile build (from a package index these tests serve
to sandboxes, in a network namespace of their own), importable by every runner;
numpy, pandas, matplotlib and requests; ts-node beside tsx."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from daytona import CreateSandboxFromImageParams, Daytona, Image, SessionExecuteRequest

from tests.e2e.conftest import Server, run_ok
from tests.nettools import R1_NET, Remote

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n"


def wheel(index: Path, name: str) -> None:
    """A pure-Python wheel ``name`` 1.0 (module with ``VALUE``, command ``name``) in
    ``index/<name>/``: a PEP 503 index as ``http.server`` lists directories."""
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-1.0"
    files = {
        f"{module}/__init__.py": f"VALUE = '{name} 1.0'\n\ndef main():\n    print(VALUE)\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: cove-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}.dist-info/entry_points.txt": f"[console_scripts]\n{name} = {module}:main\n",
    }
    record = [f"{path},sha256={_digest(text)},{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    (index / name).mkdir(parents=True)
    with zipfile.ZipFile(index / name / f"{dist}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip("=")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a package index with cove-probe-a, -b and -c, which sandboxes reach."""
    root = tmp_path_factory.mktemp("pypi")
    for name in ("cove-probe-a", "cove-probe-b", "cove-probe-c"):
        wheel(root / "simple", name)
    remote = Remote(R1_NET, directory=root).start()
    yield f"{remote.url}/simple/"
    remote.stop()


def from_index(url: str) -> str:
    """pip's options to install from the test index (plain HTTP)."""
    return f"--index-url {url} --trusted-host {urlsplit(url).hostname}"


def test_the_sandbox_user_pip_installs_and_every_runner_imports(
    server: Server, daytona: Daytona, sandboxes: list, index: str
) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    assert run_ok(sb, "whoami").strip() == "daytona"
    run_ok(sb, f"pip install {from_index(index)} cove-probe-a")
    run_ok(sb, f"python3 -m pip install {from_index(index)} cove-probe-b")

    code = "import cove_probe_a, cove_probe_b; print(cove_probe_a.VALUE, cove_probe_b.VALUE)"
    both = "cove-probe-a 1.0 cove-probe-b 1.0"
    assert sb.process.code_run(code).result.strip() == both
    assert sb.code_interpreter.run_code(code).stdout.strip() == both
    assert run_ok(sb, f'python3 -c "{code}"').strip() == both
    where = run_ok(sb, "python3 -c 'import cove_probe_a; print(cove_probe_a.__file__)'")
    assert where.startswith("/home/daytona/.local/lib/python3")  # the user's own site
    # the packages' commands are on the PATH of commands, sessions and login shells
    assert run_ok(sb, "cove-probe-a").strip() == "cove-probe-a 1.0"
    assert run_ok(sb, "bash -lc cove-probe-b").strip() == "cove-probe-b 1.0"
    sb.process.create_session("s")
    res = sb.process.execute_session_command("s", SessionExecuteRequest(command="cove-probe-a"))
    assert res.exit_code == 0 and (res.output or "").strip() == "cove-probe-a 1.0"

    # what the sandbox user installed is not on root's Python path (no hijack of root)
    host = server.runtime()
    res2 = host.exec(sb.id, ["python3", "-c", "import cove_probe_a"], user="root")
    assert res2.exit_code != 0 and b"ModuleNotFoundError" in res2.stderr
    res3 = host.exec(sb.id, ["sh", "-c", "command -v cove-probe-a"], user="root")
    assert res3.exit_code != 0 and res3.stdout == b""


def test_data_science_stack_and_typescript_runners(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    code = (
        "import numpy as np, pandas as pd, requests, matplotlib\n"
        "import matplotlib.pyplot as plt\n"
        "df = pd.DataFrame({'x': np.arange(5), 'y': np.arange(5) ** 2})\n"
        "plt.plot(df.x, df.y); plt.title('squares'); plt.savefig('/tmp/chart.png')\n"
        "print(int(df.y.sum()), matplotlib.get_backend().lower(), requests.get.__name__)\n"
    )
    res = sb.process.code_run(code)
    assert res.exit_code == 0, res.result
    assert res.result.strip() == "30 module://cove_charts get"  # (code_run's charts backend)
    assert sb.fs.download_file("/tmp/chart.png")[:8] == PNG
    ran = sb.code_interpreter.run_code(code.replace("/tmp/chart.png", "/tmp/again.png"))
    assert ran.error is None and ran.stdout.strip() == "30 agg get"
    assert sb.fs.download_file("/tmp/again.png")[:8] == PNG

    assert run_ok(sb, "npx ts-node -e 'const n: number = 6 * 7; console.log(n)'").strip() == "42"
    assert run_ok(sb, "tsx -e 'const n: number = 6 * 7; console.log(n)'").strip() == "42"


def test_a_declarative_image_pip_installs_from_the_given_index(
    daytona: Daytona, sandboxes: list, index: str
) -> None:
    env = {"PIP_INDEX_URL": index, "PIP_TRUSTED_HOST": urlsplit(index).hostname or ""}
    image = Image.base("cove-default").env(env).pip_install(["cove-probe-c"])
    sb = daytona.create(CreateSandboxFromImageParams(image=image), timeout=300)
    sandboxes.append(sb)
    where = run_ok(sb, "python3 -c 'import cove_probe_c; print(cove_probe_c.__file__)'")
    assert where.startswith("/usr/local/lib/python3")  # root's install: for every user
    assert sb.process.code_run("import cove_probe_c; print(cove_probe_c.VALUE)").result.strip() \
        == "cove-probe-c 1.0"  # fmt: skip
    assert run_ok(sb, "cove-probe-c").strip() == "cove-probe-c 1.0"
