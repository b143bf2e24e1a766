"""The real ``cove`` executable against a real ``cove serve``: create, exec and delete
a crun sandbox with ``--json``, as a script would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daytona import Daytona

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
COVE = str(Path(sys.executable).with_name("cove"))


def cove(server: Server, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    """``cove ARGS`` with the server's address and a key in the environment, as a user
    exports them (the COVE_* variables of this shell play no part)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVE_", "DAYTONA_"))}
    env.update(DAYTONA_API_URL=server.api_url, DAYTONA_API_KEY=key)
    return subprocess.run([COVE, *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


@pytest.fixture
def created(server: Server, daytona: Daytona) -> Iterator[list[str]]:
    """Ids of sandboxes the test made: deleted afterwards, whatever happens."""
    ids: list[str] = []
    yield ids
    for sandbox_id in ids:
        try:
            daytona.delete(daytona.get(sandbox_id))
        except Exception:  # noqa: BLE001 - the test deleted it already
            pass


def test_create_exec_delete_with_json(server: Server, created: list[str]) -> None:
    made = cove(server, "sandbox", "create", "--json", "--label", "via=cli", "--env", "WHO=cli")
    assert made.returncode == 0, made.stderr
    sandbox = json.loads(made.stdout)
    created.append(sandbox["id"])
    assert sandbox["state"] == "started" and sandbox["labels"]["via"] == "cli"
    assert made.stderr == ""  # no progress where stderr is not a terminal

    ran = cove(server, "sandbox", "exec", "--json", sandbox["id"], "--",
               "echo $WHO $(id -un); echo oops >&2; exit 7")  # fmt: skip
    assert ran.returncode == 7, ran.stderr
    assert json.loads(ran.stdout) == {"exitCode": 7, "stdout": "cli daytona\n",
                                      "stderr": "oops\n"}  # fmt: skip

    listed = json.loads(cove(server, "sandbox", "list", "--json", "--label", "via=cli").stdout)
    assert [s["id"] for s in listed] == [sandbox["id"]]

    followed = cove(server, "sandbox", "logs", "--follow", sandbox["id"])  # no entrypoint
    assert (followed.returncode, followed.stdout, followed.stderr) == (0, "", "")

    other = cove(server, "sandbox", "info", sandbox["id"], key=server.org_key("cli-other"))
    assert other.returncode == 1 and "not found" in other.stderr.lower()

    refused = cove(server, "sandbox", "delete", sandbox["id"])
    assert refused.returncode == 1 and "use --force" in refused.stderr
    deleted = cove(server, "sandbox", "delete", "--force", "--json", sandbox["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["id"] == sandbox["id"]
    gone = cove(server, "sandbox", "info", "--json", sandbox["id"])
    assert gone.returncode == 1 and gone.stdout == "" and "not found" in gone.stderr.lower()


def test_keys_create_list_revoke_over_the_api(server: Server) -> None:
    """``cove keys`` against the server: the new key as export lines, listed masked,
    narrower than its creator, revoked."""
    admin = server.org_key("cli-keys")
    made = cove(server, "keys", "create", "--name", "ci", "--permission", "write:sandboxes",
                "--expires", "1d", key=admin)  # fmt: skip
    assert made.returncode == 0, made.stderr
    url_line, key_line = made.stdout.splitlines()
    assert url_line == f"export DAYTONA_API_URL={server.api_url}"
    key = key_line.removeprefix("export DAYTONA_API_KEY=")
    listed = json.loads(cove(server, "keys", "list", "--json", key=admin).stdout)
    ci = next(k for k in listed if k["name"] == "ci")
    assert ci["permissions"] == ["write:sandboxes"] and ci["expiresAt"]
    assert key not in json.dumps(listed) and ci["value"].endswith(key[-3:])
    assert cove(server, "sandbox", "list", key=key).returncode == 0
    refused = cove(server, "keys", "list", key=key)  # no manage:api_keys
    assert refused.returncode == 1 and "manage:api_keys" in refused.stderr
    assert cove(server, "keys", "revoke", "ci", key=admin).stdout.strip() == ci["userId"]
    deadline = time.monotonic() + 30  # a server trusts a checked key ~1 s
    while cove(server, "sandbox", "list", key=key).returncode == 0:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
