"""Chart artifacts of code_run: the real agent splits artifact lines out of the output,
the server keeps the valid charts (within a budget) and answers them in
``artifacts.charts``. What the snippet prints is hostile: forged, malformed or huge
artifact lines never break the answer or the rest of the output."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from cove.agent import artifacts, protocol
from cove.agent.artifacts import MARKER, ArtifactSplitter, chart_env
from cove.core.charts import CHART_LIMIT
from tests.unit.agent.conftest import AUTH

LINE = {"type": "line", "title": "Growth", "x_label": "t", "y_label": "v",
        "x_ticks": [0, 1.5], "x_tick_labels": ["0", "1.5"], "x_scale": "linear",
        "elements": [{"label": "a", "points": [[0, 1], [1.5, 2.5]]}], "png": "iVBORw0KGgo="}
BAR = {"type": "bar", "title": "Sales",
       "elements": [{"label": "x", "group": "2024", "value": "3"}]}  # fmt: skip


def artifact(value: Any) -> str:
    return MARKER.decode() + json.dumps({"type": "chart", "value": value})


def run(client: TestClient, sandbox_id: str, code: str) -> dict[str, Any]:
    r = client.post(f"/toolbox/{sandbox_id}/process/code-run", headers=AUTH,
                    json={"code": code})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def printing(*lines: str) -> str:
    return "".join(f"print({line!r})\n" for line in lines)


def test_artifact_lines_become_charts_and_leave_the_output(client: TestClient,
                                                           sandbox_id: str) -> None:  # fmt: skip
    body = run(client, sandbox_id, printing("before", artifact(LINE), "between", artifact(BAR),
                                            "after"))  # fmt: skip
    assert body["result"] == "before\nbetween\nafter\n"
    assert body["artifacts"]["charts"] == [
        {**LINE, "x_ticks": [0.0, 1.5],
         "elements": [{"label": "a", "points": [[0.0, 1.0], [1.5, 2.5]]}]},
        BAR,
    ]  # fmt: skip


def test_plain_output_is_not_taken_for_an_artifact(client: TestClient, sandbox_id: str) -> None:
    text = ["  " + artifact(LINE), "say " + artifact(BAR), MARKER.decode()[:-1], "dtn_artifact"]
    body = run(client, sandbox_id, printing(*text))
    assert body["result"] == "".join(f"{line}\n" for line in text)
    assert body["artifacts"]["charts"] == []


def test_no_artifacts_no_charts(client: TestClient, sandbox_id: str) -> None:
    assert run(client, sandbox_id, "print(1)") == {
        "exitCode": 0, "result": "1\n", "artifacts": {"charts": []}}


FORGED = {
    "not JSON": MARKER.decode() + "{nope",
    "JSON but no object": MARKER.decode() + "[1, 2]",
    "not a chart": MARKER.decode() + json.dumps({"type": "image", "value": LINE}),
    "a number where a string must be": artifact({**BAR, "elements": [{"value": 3}]}),
    "a string where numbers must be": artifact({**LINE, "x_ticks": ["0"]}),
    "NaN": MARKER.decode() + json.dumps({"type": "chart", "value": {"x_ticks": [float("nan")]}}),
    "infinity": MARKER.decode() + '{"type": "chart", "value": {"x_ticks": [1e999]}}',
    "a lone surrogate": MARKER.decode() + '{"type": "chart", "value": {"title": "\\ud800"}}',
    "nested ten thousand deep": MARKER.decode() + '{"type": "chart", "value": {"x": '
                                + "[" * 10_000 + "]" * 10_000 + "}}",
    "invalid UTF-8": None,
}


@pytest.mark.parametrize("forgery", sorted(FORGED))
def test_a_forged_artifact_is_dropped_and_nothing_else(client: TestClient, sandbox_id: str,
                                                       forgery: str) -> None:  # fmt: skip
    forged = FORGED[forgery]
    emit = (f"print({forged!r})" if forged is not None else
            f"import sys; sys.stdout.buffer.write({MARKER!r} + b'{{\\xff\\xfe}}\\n')")
    code = f"print('a')\n{emit}\nprint({artifact(BAR)!r})\nprint('b')"
    body = run(client, sandbox_id, code)
    assert body["exitCode"] == 0
    assert body["result"] == "a\nb\n"
    assert body["artifacts"]["charts"] == [BAR]


def test_a_huge_artifact_is_left_out_with_a_line_that_says_so(client: TestClient,
                                                              sandbox_id: str) -> None:  # fmt: skip
    size = CHART_LIMIT + 10
    code = (f"import sys\nprint('a')\nsys.stdout.write({MARKER.decode()!r} + 'x' * {size - 20})\n"
            f"print()\nprint({artifact(BAR)!r})\nprint('b')")  # fmt: skip
    body = run(client, sandbox_id, code)
    assert body["result"] == "a\n" + artifacts.omitted(size).decode() + "b\n"
    assert body["artifacts"]["charts"] == [BAR]


def test_charts_together_stay_within_the_budget(client: TestClient, sandbox_id: str) -> None:
    big = artifact({"type": "line", "png": "PNG"})
    code = (f"for _ in range(5):\n    print({big!r}.replace('PNG', 'p' * {CHART_LIMIT // 3}))\n"
            "print('end')")  # fmt: skip
    body = run(client, sandbox_id, code)
    assert len(body["artifacts"]["charts"]) == 2
    assert body["result"].count("omitted by Cove") == 3 and body["result"].endswith("end\n")


def test_a_chart_survives_output_clipped_around_it(client: TestClient, sandbox_id: str) -> None:
    code = (f"print('x' * 3_000_000)\nprint({artifact(BAR)!r})\nprint('y' * 3_000_000)")
    body = run(client, sandbox_id, code)
    assert body["artifacts"]["charts"] == [BAR]
    assert "bytes of output omitted by Cove" in body["result"]


def test_execute_leaves_artifact_lines_in_its_output(client: TestClient,
                                                     sandbox_id: str) -> None:  # fmt: skip
    line = artifact(BAR)
    r = client.post(f"/toolbox/{sandbox_id}/process/execute", headers=AUTH,
                    json={"command": f"echo '{line}'"})  # fmt: skip
    assert r.json()["result"] == line + "\n"


class Sent:
    """What the splitter sends: output bytes and chart frames."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.charts: list[bytes] = []
        self.closed = False

    async def write(self, chunk: bytes) -> None:
        self.output += chunk

    async def close(self) -> None:
        self.closed = True

    async def send(self, kind: bytes, payload: bytes = b"", *, hold: bool = False) -> None:
        assert kind == protocol.CHART
        self.charts.append(payload)


STREAM = (b"out\n" + MARKER + b'{"a": 1}\n' + b"dtn_x\n" + MARKER + b"{}\n"
          + b"tail " + MARKER + b"{}\n" + MARKER + b"last")  # fmt: skip


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
async def test_the_splitter_finds_artifacts_however_the_output_is_cut(cut: int) -> None:
    sent = Sent()
    splitter = ArtifactSplitter(sent, sent, budget=1000)  # type: ignore[arg-type]
    await splitter.write(STREAM[:cut])
    await splitter.write(STREAM[cut:])
    await splitter.close()
    assert bytes(sent.output) == b"out\ndtn_x\ntail " + MARKER + b"{}\n"
    assert sent.charts == [b'{"a": 1}', b"{}", b"last"] and sent.closed


async def test_the_splitter_keeps_to_its_budget_byte_by_byte() -> None:
    sent = Sent()
    splitter = ArtifactSplitter(sent, sent, budget=len(MARKER) + 10)  # type: ignore[arg-type]
    for byte in MARKER + b"0123456789\n" + MARKER + b"0\n" + b"ok\n":
        await splitter.write(bytes([byte]))
    await splitter.close()
    assert sent.charts == [b"0123456789"]
    assert bytes(sent.output) == artifacts.omitted(len(MARKER) + 1) + b"ok\n"


def test_chart_env_selects_the_backend_only_where_it_is(tmp_path: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "BACKEND_DIR", str(tmp_path))
    assert chart_env({"A": "1"}) == {"A": "1"}
    (tmp_path / "cove_charts.py").write_text("")
    assert chart_env({"A": "1"}) == {"A": "1", "MPLBACKEND": artifacts.BACKEND,
                                     "PYTHONPATH": str(tmp_path)}  # fmt: skip
    assert chart_env({"PYTHONPATH": "/x"})["PYTHONPATH"] == f"{tmp_path}:/x"
    assert chart_env({"MPLBACKEND": "Agg"}) == {"MPLBACKEND": "Agg"}
