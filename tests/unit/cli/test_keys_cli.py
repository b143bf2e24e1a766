"""``cove keys list|create|revoke`` through the API: permissions, expiry, masked
values, ready-to-paste ``export`` lines; and what a narrower key may not do."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from cove.cli.main import main
from tests.unit.cli.conftest import URL, Cove


def _value(created: str) -> str:
    lines = created.splitlines()
    assert lines[0] == f"export DAYTONA_API_URL={URL}"
    assert lines[1].startswith("export DAYTONA_API_KEY=cove_")
    return lines[1].removeprefix("export DAYTONA_API_KEY=")


def test_create_list_revoke_over_the_api(cove: Cove) -> None:
    made = cove.ok("keys", "create", "--name", "ci", "--permission", "write:sandboxes",
                   "--permission", "read:volumes", "--expires", "30d")  # fmt: skip
    key = _value(made.stdout)
    listed = cove.json("keys", "list")
    assert [k["name"] for k in listed] == ["ci"]  # COVE_API_KEY is not a stored key
    ci = listed[0]
    assert ci["permissions"] == ["write:sandboxes", "read:volumes"]
    expires = datetime.fromisoformat(ci["expiresAt"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    table = cove.ok("keys", "list").stdout
    assert "ci" in table and ci["value"] in table and key not in table and key not in str(listed)
    assert cove.ok("sandbox", "list", key=key).exit_code == 0
    assert cove.ok("keys", "revoke", "ci").stdout.strip() == ci["userId"]
    assert cove.json("keys", "list") == []
    refused = cove("sandbox", "list", key=key)
    assert refused.exit_code == 1 and "Invalid API key" in refused.stderr


def test_quiet_json_and_revoke_by_id_prefix(cove: Cove) -> None:
    bare = cove.ok("keys", "create", "--name", "a", "-q", "--expires", "2100-01-01").stdout
    assert bare.startswith("cove_") and bare.count("\n") == 1
    made = json.loads(cove.ok("keys", "create", "--name", "b", "--json").stdout)
    assert made["name"] == "b" and made["value"].startswith("cove_")
    assert made["permissions"][-1] == "manage:billing"  # by default: the caller's (all)
    listed = {k["name"]: k for k in cove.json("keys", "list")}
    assert listed["a"]["expiresAt"].startswith("2100-01-01T00:00:00")
    short = cove("keys", "revoke", listed["b"]["userId"][:3])
    assert short.exit_code == 1 and "no key named" in short.stderr
    gone = cove.ok("keys", "revoke", listed["b"]["userId"][:8], "--json")
    assert json.loads(gone.stdout)["name"] == "b"
    assert [k["name"] for k in cove.json("keys", "list")] == ["a"]


def test_a_narrower_key_is_told_what_it_lacks(cove: Cove) -> None:
    key = _value(cove.ok("keys", "create", "--name", "mgr", "--permission", "manage:api_keys",
                         "--permission", "write:sandboxes").stdout)  # fmt: skip
    wider = cove("keys", "create", "--name", "x", "--permission", "delete:sandboxes", key=key)
    assert wider.exit_code == 1
    assert wider.stderr == "Error: Insufficient permissions for assigning: delete:sandboxes\n"
    cove.ok("keys", "create", "--name", "y", key=key)  # by default: its own set
    listed = {k["name"]: k for k in cove.json("keys", "list", key=key)}
    assert listed["y"]["permissions"] == ["write:sandboxes", "manage:api_keys"]
    narrow = _value(cove.ok("keys", "create", "--name", "z", "--permission", "write:sandboxes",
                            key=key).stdout)  # fmt: skip
    denied = cove("keys", "list", key=narrow)
    assert denied.exit_code == 1 and "manage:api_keys" in denied.stderr
    bad = cove("keys", "create", "--expires", "soon")
    assert bad.exit_code == 2 and "neither a duration" in bad.stderr


def test_local_mode_is_the_operators(cove: Cove) -> None:
    """--org or --data-dir work on the host's database (no server, no key needed)."""
    key = cove.local("keys", "create", "--org", "acme", "--name", "ops",
                     "--permission", "read:volumes").stdout.strip()  # fmt: skip
    assert key.startswith("cove_")
    mine = [k for k in json.loads(cove.local("keys", "list", "--json").stdout)
            if k["organization"] == "acme"]  # fmt: skip
    assert [(k["name"], k["permissions"]) for k in mine] == [("ops", ["read:volumes"])]
    no_key = CliRunner().invoke(main, ["keys", "list"], env={"DAYTONA_API_KEY": "",
                                                             "COVE_API_KEY": ""})  # fmt: skip
    assert no_key.exit_code == 1 and "no API key" in no_key.stderr
