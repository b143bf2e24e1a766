"""The accessibility tree through the official SDK (sync, async): a GTK window's
nodes are listed and found, a text field is focused and given a value, a button is
pressed; bad input is a 400, unknown nodes 404, another organization gets 404."""

from __future__ import annotations

import httpx
import pytest
from daytona import Daytona, DaytonaError

from tests.e2e.conftest import KEY, Server, run_ok
from tests.e2e.test_computer_use import wait_for
from tests.e2e.test_tenancy import _key

pytestmark = pytest.mark.e2e
APP = """\
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk
win = Gtk.Window(title="Cove form")
box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
entry = Gtk.Entry()
button = Gtk.Button(label="Save it")
def save(_):
    with open("/tmp/saved", "w") as f:
        f.write(entry.get_text())
button.connect("clicked", save)
box.add(entry)
box.add(button)
win.add(box)
win.connect("destroy", Gtk.main_quit)
win.show_all()
Gtk.main()
"""


def open_form(sb) -> int:  # noqa: ANN001
    """Start the GTK form; its pid."""
    sb.fs.upload_file(APP.encode(), "/tmp/form.py")
    pid = run_ok(sb, "DISPLAY=:0 nohup python3 /tmp/form.py >/tmp/form.log 2>&1 & echo $!")
    cu = sb.computer_use
    wait_for(lambda: _names(cu).get("Save it"), "the form's button in the tree",
             explain=lambda: run_ok(sb, "cat /tmp/form.log; ps -eo args"))
    return int(pid.strip())


def _names(cu) -> dict:  # noqa: ANN001
    try:
        found = cu.accessibility.find_nodes(scope="all")
    except DaytonaError:
        return {}
    return {n.name: n for n in found.matches or []}


def test_a_gtk_form_through_the_tree(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    with pytest.raises(DaytonaError) as not_started:
        cu.accessibility.get_tree()
    assert not_started.value.status_code == 400
    assert set(cu.start().status) == {"xvfb", "wm", "x11vnc", "novnc"}  # the bus is not one
    pid = open_form(sb)

    tree = cu.accessibility.get_tree(scope="pid", pid=pid)
    assert tree.root.role == "application" and tree.truncated is False
    window = tree.root.children[0]
    assert (window.role, window.name) == ("frame", "Cove form")
    assert window.bounds.width > 0 and window.bounds.height > 0
    assert cu.accessibility.get_tree(scope="pid", pid=pid, max_depth=0).root.children in (None, [])
    focused = cu.accessibility.get_tree()  # the focused application: the form
    assert focused.root.id == tree.root.id

    [button] = cu.accessibility.find_nodes(scope="all", role="push button", name="Save",
                                           name_match="substring").matches  # fmt: skip
    assert button.name == "Save it" and "click" in button.actions
    assert cu.accessibility.find_nodes(scope="all", name="^Save.*t$", name_match="regex").matches
    assert cu.accessibility.find_nodes(scope="all", name="Save", name_match="exact").matches == []
    [entry] = cu.accessibility.find_nodes(scope="pid", pid=pid, role="text").matches
    assert "editable" in entry.states

    cu.accessibility.focus_node(entry.id)
    now = cu.accessibility.find_nodes(scope="all", role="text", states=["focused"]).matches
    assert [n.id for n in now] == [entry.id]
    cu.accessibility.set_node_value(entry.id, "typed through AT-SPI")
    cu.accessibility.invoke_node(button.id)
    saved = wait_for(lambda: run_ok(sb, "cat /tmp/saved 2>/dev/null"), "the button's effect")
    assert saved == "typed through AT-SPI"

    for call in (lambda: cu.accessibility.invoke_node(button.id, action="explode"),
                 lambda: cu.accessibility.set_node_value(window.id, "x")):  # fmt: skip
        with pytest.raises(DaytonaError) as unsupported:
            call()
        assert unsupported.value.status_code == 400
    for call in (lambda: cu.accessibility.focus_node(":1.999:/org/a11y/atspi/accessible/9"),
                 lambda: cu.accessibility.get_tree(scope="pid", pid=999_999)):  # fmt: skip
        with pytest.raises(DaytonaError) as missing:
            call()
        assert missing.value.status_code == 404
    cu.stop()


async def test_the_tree_with_the_async_sdk(async_daytona) -> None:  # noqa: ANN001
    sb = await async_daytona.create()
    try:
        cu = sb.computer_use
        await cu.start()
        await sb.fs.upload_file(APP.encode(), "/tmp/form.py")
        await sb.process.exec("DISPLAY=:0 nohup python3 /tmp/form.py >/dev/null 2>&1 &")
        matches = []
        for _ in range(100):
            matches = (await cu.accessibility.find_nodes(scope="all", role="push button")).matches
            if matches:
                break
        assert [m.name for m in matches] == ["Save it"]
        tree = await cu.accessibility.get_tree(scope="all", max_depth=1)
        assert tree.root.role == "desktop frame" and tree.root.children
        await cu.accessibility.invoke_node(matches[0].id)
        await cu.stop()
    finally:
        await sb.delete()


BAD_INPUT = [
    ("GET", "a11y/tree?scope=everything", None),
    ("GET", "a11y/tree?scope=pid", None),
    ("GET", "a11y/tree?maxDepth=-5", None),
    ("POST", "a11y/find", {"nameMatch": "glob"}),
    ("POST", "a11y/find", {"name": "(", "nameMatch": "regex"}),
    ("POST", "a11y/find", {"limit": -1}),
    ("POST", "a11y/node/focus", {}),
    ("POST", "a11y/node/focus", {"id": "no-path"}),
    ("POST", "a11y/node/invoke", {"id": "x" * 2000}),
    ("POST", "a11y/node/value", {"id": 5, "value": "x"}),
]


def test_the_tree_outlives_a_restart_of_the_x_server(daytona: Daytona,
                                                     sandboxes: list) -> None:  # fmt: skip
    """The accessibility bus publishes its address on the X server's root window: after
    ``restart_process("xvfb")`` the whole desktop comes back after the display, the bus
    with it (it stayed behind, unreachable for good, before)."""
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    cu.start()
    wait_for(lambda: _tree_role(cu) == "desktop frame", "the tree before the restart", 90)
    before = {p: cu.get_process_status(p).running for p in ("xvfb", "wm", "x11vnc", "novnc")}
    assert all(before.values()), before
    cu.restart_process("xvfb")
    wait_for(lambda: _tree_role(cu) == "desktop frame", "the tree after the restart", 90)
    assert cu.get_status().status == "active"
    pid = open_form(sb)  # a new application joins the restarted bus
    assert cu.accessibility.get_tree(scope="pid", pid=pid).root.role == "application"
    cu.stop()


def _tree_role(cu) -> str | None:  # noqa: ANN001
    try:
        return cu.accessibility.get_tree(scope="all", max_depth=0).root.role
    except DaytonaError:
        return None


def test_bad_input_and_other_organizations(server: Server, daytona: Daytona,
                                           sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create()
    sandboxes.append(sb)
    sb.computer_use.start()
    base = f"{server.url}/toolbox/{sb.id}/computeruse"
    mine = {"Authorization": f"Bearer {KEY}"}
    for method, path, body in BAD_INPUT:
        r = httpx.request(method, f"{base}/{path}", json=body, headers=mine, timeout=60)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["statusCode"] == 400
    theirs = {"Authorization": f"Bearer {_key(server, 'a11y-other')}"}
    for method, path in [("GET", "a11y/tree"), ("POST", "a11y/find"),
                         ("POST", "a11y/node/focus"), ("POST", "a11y/node/invoke"),
                         ("POST", "a11y/node/value")]:  # fmt: skip
        r = httpx.request(method, f"{base}/{path}", json={"id": ":1.1:/x"}, headers=theirs)
        assert r.status_code == 404, (path, r.text)
    sb.computer_use.stop()


def test_a_hostile_helper_gets_errors(server: Server, daytona: Daytona,
                                      sandboxes: list) -> None:  # fmt: skip
    """The sandbox user plants its own python3 first on the PATH: answers nested too
    deep, of the wrong shape or with a made-up status are errors, and the agent serves on."""
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    cu.start()
    deep = '{"result": {"root": ' + '{"children": [' * 400 + "]}" * 400 + "}}"
    fakes = {deep: 502, '{"result": [1]}': 502, "not json": 502,  # the agent failed
             '{"error": {"status": 200, "code": "OK", "message": "fine"}}': 502,
             '{"error": {"status": 404, "code": "NOT_FOUND", "message": "gone"}}': 404}
    for printed, status in fakes.items():
        sb.fs.upload_file(f"#!/bin/sh\ncat <<'EOF'\n{printed}\nEOF\n".encode(),
                          "/home/daytona/.local/bin/python3")
        run_ok(sb, "chmod +x ~/.local/bin/python3")
        with pytest.raises(DaytonaError) as failed:
            cu.accessibility.get_tree(scope="all")
        assert failed.value.status_code == status, printed[:80]
    run_ok(sb, "rm ~/.local/bin/python3")
    assert cu.accessibility.get_tree(scope="all", max_depth=0).root.role == "desktop frame"
    cu.stop()
