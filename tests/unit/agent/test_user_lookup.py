"""The agent's user lookups, kept while the user and group databases are unchanged."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from cove.agent import users


@pytest.fixture
def databases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    files = [tmp_path / "passwd", tmp_path / "group"]
    for f in files:
        f.write_text("x\n")
    monkeypatch.setattr(users, "_DATABASES", tuple(map(str, files)))
    monkeypatch.setattr(users, "_answers", {})
    return files


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    me = pwd.getpwuid(os.getuid())

    def entry(name: str) -> pwd.struct_passwd:
        calls.append(name)
        return me

    monkeypatch.setattr(users, "_passwd_entry", entry)
    return calls


def test_an_unchanged_database_is_read_once(databases: list[Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(users, "_RACY_NS", 0)
    calls = _counting(monkeypatch)
    first = users.lookup("someone")
    assert users.lookup("someone") == first
    assert calls == ["someone"]
    assert users.lookup("other").uid == first.uid and calls == ["someone", "other"]


@pytest.mark.parametrize("which", [0, 1])
def test_a_changed_file_is_read_again(databases: list[Path], monkeypatch: pytest.MonkeyPatch,
                                      which: int) -> None:  # fmt: skip
    monkeypatch.setattr(users, "_RACY_NS", 0)
    calls = _counting(monkeypatch)
    users.lookup("someone")
    databases[which].write_text("longer\n")
    users.lookup("someone")
    replacement = databases[which].with_suffix(".new")
    replacement.write_text("longer\n")  # same size, a new file put in place
    os.replace(replacement, databases[which])
    users.lookup("someone")
    assert calls == ["someone"] * 3


def test_a_file_changed_just_now_is_read_every_time(
    databases: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a second write within the clock's tick would keep the ctime: nothing is kept
    calls = _counting(monkeypatch)
    users.lookup("someone")
    users.lookup("someone")
    assert calls == ["someone", "someone"]


def test_a_missing_user_is_not_kept(databases: list[Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(users, "_RACY_NS", 0)
    calls: list[str] = []

    def missing(name: str) -> pwd.struct_passwd:
        calls.append(name)
        raise KeyError(name)

    monkeypatch.setattr(users, "_passwd_entry", missing)
    for _ in range(2):
        with pytest.raises(users.protocol.AgentError):
            users.lookup("nobody-here")
    assert calls == ["nobody-here"] * 2


def test_groups_are_kept_with_the_database(databases: list[Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(users, "_RACY_NS", 0)
    _counting(monkeypatch)
    calls: list[str] = []

    def grouplist(name: str, gid: int) -> list[int]:
        calls.append(name)
        return [gid, 4242]

    monkeypatch.setattr(users.os, "getgrouplist", grouplist)
    gid = os.getgid()
    assert users.lookup("someone").groups() == [gid, 4242]
    assert users.lookup("someone").groups() == [gid, 4242]
    assert len(calls) == 1
    databases[1].write_text("someone:x:4243:\n")
    assert users.lookup("someone").groups() == [gid, 4242] and len(calls) == 2


def test_a_user_made_by_hand_looks_its_groups_up(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def grouplist(name: str, gid: int) -> list[int]:
        calls.append(name)
        return [gid, 4242]

    monkeypatch.setattr(users.os, "getgrouplist", grouplist)
    user = users.User("someone", 1, 7, "/", "/bin/sh")
    assert user.groups() == [7, 4242] and calls == ["someone"]
