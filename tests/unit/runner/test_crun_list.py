"""``crun list`` racing a container's deletion is tried again, not a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.oci import crun


def _fake(tmp_path: Path, failures: int, message: str) -> Path:
    count = tmp_path / "count"
    count.write_text("0")
    script = tmp_path / "crun"
    script.write_text(f"""#!/bin/sh
n=$(cat {count}); echo $((n+1)) > {count}
if [ "$n" -lt {failures} ]; then echo "{message}" >&2; exit 1; fi
echo '[{{"id": "a", "pid": 1, "status": "running", "bundle": "/b"}}]'
""")
    script.chmod(0o755)
    return count


def _client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> crun.Crun:
    monkeypatch.setattr(crun, "CRUN", str(tmp_path / "crun"))
    client = crun.Crun(tmp_path / "no-helper")
    client._hybrid = False
    return client


RACE = "error opening file `/run/crun/x/status`: No such file or directory"


def test_a_vanished_status_file_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = _fake(tmp_path, 2, RACE)
    assert [c["id"] for c in _client(monkeypatch, tmp_path).list()] == ["a"]
    assert count.read_text().strip() == "3"


def test_other_failures_and_a_lasting_race_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = _fake(tmp_path, 1, "permission denied")
    with pytest.raises(RuntimeBackendError, match="permission denied"):
        _client(monkeypatch, tmp_path).list()
    assert count.read_text().strip() == "1"
    count = _fake(tmp_path, 100, RACE)
    with pytest.raises(RuntimeBackendError, match="No such file"):
        _client(monkeypatch, tmp_path).list()
    assert count.read_text().strip() == str(crun.LIST_TRIES)
