"""The freezer's bounded wait and retry, against a fake v1 freezer directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.host import cgroups, freezer


class StickyFreezer:
    """freezer.state that reports FREEZING for the first ``stuck`` freeze requests."""

    def __init__(self, directory: Path, stuck: int) -> None:
        self.file = directory / "freezer.state"
        self.file.write_text("THAWED\n")
        self.stuck = stuck
        self.requests: list[str] = []

    def write(self, value: str) -> None:
        self.requests.append(value)
        if value == "FROZEN":
            self.file.write_text("FREEZING\n" if self.stuck > 0 else "FROZEN\n")
            self.stuck -= 1
        else:
            self.file.write_text("THAWED\n")


@pytest.fixture
def sticky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(stuck: int) -> StickyFreezer:
        fake = StickyFreezer(tmp_path, stuck)
        monkeypatch.setattr(cgroups, "mode", lambda: cgroups.CgroupMode.LEGACY)
        monkeypatch.setattr(cgroups, "controller_dir", lambda _sid, _c: tmp_path)
        monkeypatch.setattr(freezer, "_request", lambda _sid, frozen: fake.write(
            "FROZEN" if frozen else "THAWED"))  # fmt: skip
        return fake

    return make


def test_a_stuck_freeze_is_thawed_and_retried(sticky) -> None:
    fake = sticky(stuck=2)
    freezer.freeze("sb", wait=0.05)
    assert fake.requests == ["FROZEN", "THAWED", "FROZEN", "THAWED", "FROZEN"]
    assert freezer.is_frozen("sb")
    freezer.thaw("sb")
    assert not freezer.is_frozen("sb")


def test_giving_up_leaves_it_thawed(sticky) -> None:
    fake = sticky(stuck=10)
    with pytest.raises(RuntimeBackendError, match="did not freeze"):
        freezer.freeze("sb", wait=0.02, attempts=3)
    assert fake.requests[-1] == "THAWED" and not freezer.is_frozen("sb")
