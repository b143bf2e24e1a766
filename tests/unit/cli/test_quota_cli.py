"""``cove quota set|show`` on a data dir's database."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cove.cli.main import main


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["quota", *args, "--data-dir", str(tmp_path)])
    return result.exit_code, result.output


def test_set_show_and_back_to_the_default(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("COVE_QUOTA_VOLUMES", "7")
    code, out = _run(tmp_path, "set", "acme", "--cpu", "8", "--max-disk-per-sandbox", "5")
    assert code == 0, out
    assert "cpu" in out and "8" in out
    code, out = _run(tmp_path, "show", "acme", "--json")
    shown = json.loads(out)
    assert shown["quota"]["cpu"] == 8 and shown["quota"]["volumes"] == 7
    assert shown["quota"]["max_disk_per_sandbox"] == 5 and shown["used"]["cpu"] == 0
    assert _run(tmp_path, "set", "acme", "--cpu", "default")[0] == 0
    assert json.loads(_run(tmp_path, "show", "acme", "--json")[1])["quota"]["cpu"] == 0


def test_bad_values_change_nothing(tmp_path: Path) -> None:
    for args in (["--cpu", "-1"], ["--cpu", "many"], []):
        code, out = _run(tmp_path, "set", "acme", *args)
        assert code == 2, out
    assert json.loads(_run(tmp_path, "show", "acme", "--json")[1])["quota"]["cpu"] == 0
