"""How an image's ENTRYPOINT and CMD become the entrypoint session's command line."""

from __future__ import annotations

import pytest

from cove.core.entrypoint import command_line, image_user


@pytest.mark.parametrize(
    ("config", "line"),
    [
        ({"entrypoint": ["/sup", "-c", "a b"], "cmd": ["x"]}, "/sup -c 'a b' x </dev/null"),
        ({"entrypoint": ["/bin/sh", "-c", "echo $A; exit 3"], "cmd": []},
         "/bin/sh -c 'echo $A; exit 3' </dev/null"),
        ({"entrypoint": [], "cmd": ["python3", "-m", "http.server"]},
         "python3 -m http.server </dev/null"),
        ({"entrypoint": None, "cmd": ["echo", "$(id)", ";rm -rf /"]},
         "echo '$(id)' ';rm -rf /' </dev/null"),
        ({"entrypoint": [], "cmd": []}, None),
        ({"entrypoint": "not-a-list", "cmd": None}, None),
        ({}, None),
        (None, None),
    ],
)
def test_entrypoint_then_cmd_each_word_quoted(config: dict | None, line: str | None) -> None:
    assert command_line(config) == line


def test_the_image_user_without_its_group_else_root() -> None:
    assert image_user({"user": "app:staff"}) == "app"
    assert image_user({"user": "1000"}) == "1000"
    assert image_user({"user": ""}) == "root"
    assert image_user({}) == "root"
