"""Matplotlib charts from ``code_run`` in the default snapshot, read by the official
SDKs (Python sync and async, TypeScript) from ``artifacts.charts`` as Daytona's; and
what a snippet forges in their place never breaks the answer."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from daytona import (
    BarChart,
    ChartType,
    CodeRunParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    LineChart,
)

from tests.e2e.conftest import KEY, Server
from tests.e2e.test_ts_sdk import TS
from tests.e2e.test_ts_sdk import node as node  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n"
LINE = """
import matplotlib.pyplot as plt
print('before')
plt.figure(figsize=(6, 4))
plt.plot([0, 1, 2, 3], [1, 4, 9, 16], label='squares')
plt.plot([0, 1, 2, 3], [0, 1, 2, 3], label='identity')
plt.title('Growth')
plt.xlabel('n')
plt.ylabel('value')
plt.show()
print('after')
"""
BAR = """
import matplotlib.pyplot as plt
plt.bar(['apples', 'pears', 'plums'], [3, 5.5, 2], label='2024')
plt.title('Fruit')
plt.show()
"""


@pytest.fixture(scope="module")
def sb(server: Server):
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(language="python"))
    yield sandbox
    sandbox.delete()


def test_a_line_chart_with_its_title_axes_and_series(sb) -> None:
    r = sb.process.code_run(LINE)
    assert r.exit_code == 0 and r.result == "before\nafter\n" == r.artifacts.stdout
    [chart] = r.artifacts.charts
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("Growth", "n", "value")
    assert chart.x_scale == "linear" and chart.x_ticks and chart.y_tick_labels
    assert [(e.label, e.points) for e in chart.elements] == [
        ("squares", [[0, 1], [1, 4], [2, 9], [3, 16]]),
        ("identity", [[0, 0], [1, 1], [2, 2], [3, 3]]),
    ]
    assert base64.b64decode(chart.png).startswith(PNG)


def test_a_bar_chart(sb) -> None:
    [chart] = sb.process.code_run(BAR).artifacts.charts
    assert isinstance(chart, BarChart) and chart.title == "Fruit"
    assert [(e.label, e.value, e.group) for e in chart.elements] == [
        ("apples", "3", "2024"), ("pears", "5.5", "2024"), ("plums", "2", "2024")]


def test_plain_output_is_no_chart(sb) -> None:
    r = sb.process.code_run("print('dtn_artifact is just text'); print('x dtn_artifact_k39fd2:{}')")
    assert r.result == "dtn_artifact is just text\nx dtn_artifact_k39fd2:{}\n"
    assert r.artifacts.charts == []


def test_a_backend_of_the_callers_choice_wins(sb) -> None:
    r = sb.process.code_run("import matplotlib.pyplot as plt; plt.plot([1]); plt.show()\n"
                            "import matplotlib; print(matplotlib.get_backend())",
                            params=CodeRunParams(env={"MPLBACKEND": "agg"}))
    assert r.artifacts.charts == [] and r.result.strip().lower() == "agg"


def test_forged_artifacts_break_nothing(sb) -> None:
    """As the sandbox user: malformed and huge artifact lines, then a real chart."""
    code = (
        "import sys\n"
        "M = 'dtn_artifact_k39fd2:'\n"
        "print('start')\n"
        "print(M + '{broken')\n"
        "print(M + '{\"type\": \"chart\", \"value\": {\"title\": 5}}')\n"
        "print(M + '{\"type\": \"chart\", \"value\": {\"x_ticks\": [1e999]}}')\n"
        "sys.stdout.write(M + '[' * 5_000_000 + '\\n')\n"
        "sys.stdout.write(M + 'x' * 20_000_000 + '\\n')\n"
        "print('end')\n" + BAR
    )
    r = sb.process.code_run(code)
    assert r.exit_code == 0
    lines = r.result.splitlines()
    assert lines[0] == "start" and lines[-1] == "end"
    assert len(lines) == 4 and "a chart of 20000020 bytes omitted by Cove" in lines[2]
    assert [c.title for c in r.artifacts.charts] == ["Fruit"]
    # and the server answers the next call as usual
    assert sb.process.code_run("print(2 + 2)").result == "4\n"


async def test_async_sdk_reads_charts(async_daytona) -> None:
    sandbox = await async_daytona.create(CreateSandboxFromSnapshotParams(language="python"))
    try:
        r = await sandbox.process.code_run(LINE)
        [chart] = r.artifacts.charts
        assert isinstance(chart, LineChart) and chart.title == "Growth"
        assert r.result == "before\nafter\n"
    finally:
        await sandbox.delete()


def test_typescript_sdk_reads_charts(server: Server, node: str) -> None:  # noqa: F811
    done = subprocess.run([node, "charts_check.js", server.api_url, KEY], cwd=TS,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["exitCode"] == 0 and out["result"] == out["stdout"] == "before\nafter\n"
    [chart] = out["charts"]
    assert chart["type"] == "line" and chart["title"] == "TS line"
    assert chart["elements"] == [{"label": "growth", "points": [[1, 4], [2, 5], [3, 7]]}]
    assert chart["png"].startswith(base64.b64encode(PNG).decode().rstrip("="))
    assert out["plain"] == {"result": "just text\n", "charts": []}
