"""The agent imports a handler module at the first request for one of its ops."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from cove.agent import agent


def test_the_op_table_names_every_op_where_it_is_registered() -> None:
    agent.load_handlers()
    registered = {name: fn.__module__.rpartition(".")[2] for name, fn in agent.HANDLERS.items()}
    listed = {name: module for module, ops in agent.OP_MODULES.items() for name in ops}
    assert registered == listed


def test_a_started_agent_loads_a_module_at_the_first_request_for_it(tmp_path: Path) -> None:
    """In a fresh interpreter (this one has every module loaded): after start only the
    eager modules; an op of another module is served, loading it; an unknown op is a
    400 and loads nothing."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        from cove.agent import agent, mux, protocol

        def loaded():
            return sorted(m for m in agent.OP_MODULES if f"cove.agent.{{m}}" in sys.modules)

        async def call(client, message):
            stream = client.open()
            await stream.send(protocol.JSON, protocol.encode(message))
            while True:
                kind, payload = await stream.receive()
                if kind == protocol.JSON:
                    return protocol.decode(payload)

        async def main():
            path = {str(tmp_path / "agent.sock")!r}
            server = await agent.serve(path, check_peer=False)
            seen = [loaded()]
            reader, writer = await asyncio.open_unix_connection(path)
            client = mux.Channel(reader, writer)
            seen.append(await call(client, {{"op": "fs_info", "path": {str(tmp_path)!r},
                                             "user": {getpass.getuser()!r}}}))
            seen.append(loaded())
            seen.append(await call(client, {{"op": "no_such_op"}}))
            seen.append(loaded())
            print(json.dumps(seen))
            server.close()

        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    at_start, info, after, unknown, at_end = json.loads(out.splitlines()[-1])
    assert at_start == sorted(agent.EAGER)
    assert info["ok"] is True and info["file"]["isDir"] is True
    assert after == sorted({*agent.EAGER, "files", "fs_search", "fs_transfer"})
    assert unknown["ok"] is False and unknown["code"] == "BAD_REQUEST"
    assert at_end == after
