"""Who may do what through ``cove``: other organizations, wrong keys, no server; and
``cove keys`` on the local database."""

from __future__ import annotations

import getpass
import json
import socket
import time

from click.testing import CliRunner

from cove.cli.main import main
from tests.unit.cli.conftest import Cove


def _create(cove: Cove) -> str:
    return cove.ok("sandbox", "create", "--user", getpass.getuser()).stdout.strip()


def test_another_organizations_sandbox_is_not_found(cove: Cove, other_key: str) -> None:
    sandbox_id = _create(cove)
    for args in (("sandbox", "info", sandbox_id), ("sandbox", "stop", sandbox_id),
                 ("sandbox", "archive", sandbox_id), ("sandbox", "delete", "-f", sandbox_id),
                 ("sandbox", "logs", sandbox_id),
                 ("sandbox", "exec", sandbox_id, "--", "touch", "/tmp/x")):  # fmt: skip
        result = cove(*args, key=other_key)
        assert result.exit_code == 1, args
        assert "not found" in result.stderr.lower(), (args, result.stderr)
    assert cove.json("sandbox", "list", key=other_key) == []
    assert cove.json("sandbox", "info", sandbox_id)["state"] == "started"


def test_a_wrong_key_is_one_line_with_a_hint_and_never_printed(cove: Cove) -> None:
    secret = "cove_not-a-real-key-0123456789"
    result = cove("sandbox", "list", key=secret)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "Error: Invalid API key (check --api-key or DAYTONA_API_KEY)\n"
    assert secret not in result.output


def test_no_key_at_all_says_where_to_get_one() -> None:
    result = CliRunner().invoke(main, ["sandbox", "list"],
                                env={"DAYTONA_API_KEY": "", "COVE_API_KEY": ""})  # fmt: skip
    assert result.exit_code == 1 and "no API key" in result.stderr


def test_no_server_is_a_clear_hint() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "cove_secret-for-the-refused-server"
    url = f"http://127.0.0.1:{port}/api"
    result = CliRunner().invoke(main, ["sandbox", "list", "--api-url", url, "--api-key", secret])
    assert result.exit_code == 1
    assert f"cannot reach the server at http://127.0.0.1:{port} (connection refused)" in (
        result.stderr)
    assert "cove serve" in result.stderr and secret not in result.output


def test_keys_list_shows_names_never_values(cove: Cove) -> None:
    key = cove.local("keys", "create", "--org", "acme", "--name", "ci").stdout.strip()
    listed = json.loads(cove.local("keys", "list", "--json").stdout)
    ours = [k for k in listed if k["organization"] == "acme"]
    assert [(k["name"], k["organization"]) for k in ours] == [("ci", "acme")]
    table = cove.local("keys", "list", "--org", "acme").stdout
    assert "ci" in table and ours[0]["id"] in table and key not in table


def test_revoke_by_name_stops_the_key_working(cove: Cove) -> None:
    key = cove.local("keys", "create", "--org", "acme", "--name", "ci").stdout.strip()
    keep = cove.local("keys", "create", "--org", "acme", "--name", "other").stdout.strip()
    assert cove("sandbox", "list", key=key).exit_code == 0
    revoked = cove.local("keys", "revoke", "ci", "--org", "acme")
    assert revoked.exit_code == 0, revoked.output
    deadline = time.monotonic() + 30  # a running server trusts a checked key ~1 s
    while cove("sandbox", "list", key=key).exit_code == 0:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    assert cove("sandbox", "list", key=key).stderr.startswith("Error: Invalid API key")
    assert cove("sandbox", "list", key=keep).exit_code == 0


def test_revoke_by_id_prefix_and_refusals(cove: Cove) -> None:
    cove.local("keys", "create", "--org", "acme", "--name", "twin")
    cove.local("keys", "create", "--org", "acme", "--name", "twin")
    both = cove.local("keys", "revoke", "twin", "--org", "acme")
    assert both.exit_code == 1 and "2 keys match 'twin'" in both.stderr
    wrong_org = cove.local("keys", "revoke", "twin")  # --org default: it has no such key
    assert wrong_org.exit_code == 1 and "has no key named 'twin'" in wrong_org.stderr
    listed = cove.local("keys", "list", "--org", "acme", "--json").stdout
    ids = [k["id"] for k in json.loads(listed)]
    assert cove.local("keys", "revoke", ids[0][:3], "--org", "acme").exit_code == 1  # too short
    assert cove.local("keys", "revoke", ids[0][:8], "--org", "acme").stdout.strip() == ids[0]
    left = json.loads(cove.local("keys", "list", "--org", "acme", "--json").stdout)
    assert [k["id"] for k in left] == ids[1:]


def test_an_id_cannot_step_out_of_its_path_segment(cove: Cove) -> None:
    """``../volumes/x`` or ``x?y`` as an id is a name that is not found, never another route."""
    volume_id = cove.ok("volume", "create", "keep").stdout.strip()
    for trick in (f"../volumes/{volume_id}", f"..%2Fvolumes%2F{volume_id}", "x?force=true",
                  "x#y"):  # fmt: skip
        for action in ("info", "stop", "delete"):
            result = cove("sandbox", action, trick)
            assert result.exit_code == 1 and "not found" in result.stderr.lower(), trick
    assert [v["id"] for v in cove.json("volume", "list")] == [volume_id]


def test_an_api_url_without_api_gets_a_hint(cove: Cove) -> None:
    result = cove("sandbox", "list", "--api-url", "http://cove.test")
    assert result.exit_code == 1
    assert "(is http://cove.test the API's URL? Cove's ends in /api)" in result.stderr
