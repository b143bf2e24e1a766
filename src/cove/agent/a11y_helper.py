"""The accessibility helper: run by the agent as the desktop's user, with the sandbox's
own ``python3 -I`` and AT-SPI (``gi.repository.Atspi``, from python3-pyatspi).

Not imported by the agent: ``computer_a11y`` hands this file's source to ``python3 -c``.
It reads one request (JSON) on stdin and prints one answer (JSON) on stdout:
``{"result": ...}`` or ``{"error": {"status", "code", "message"}}``. Node ids are
Daytona's, ``<bus name>:<object path>``; a node is found again by walking the tree.
Everything is bounded: ``BUDGET`` nodes visited per request, AT-SPI calls time out.
"""

import json
import re
import sys
import warnings

BUDGET = 5000
MAX_DEPTH = 64  # levels below the root
FIND_DEFAULT, FIND_MAX = 500, 5000
TEXT = 1000  # characters kept of a name or description


class Failure(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def node_id(acc):
    return f"{acc.app.bus_name}:{acc.path}"


def safe(call, default=None):
    try:
        return call()
    except Exception:  # noqa: BLE001 - a node that cannot answer (gone, busy) is skipped
        return default


def describe(acc, Atspi):
    states = safe(lambda: acc.get_state_set().get_states(), []) or []
    node = {"id": node_id(acc), "role": safe(acc.get_role_name, "") or "",
            "name": (safe(acc.get_name, "") or "")[:TEXT],
            "description": (safe(acc.get_description, "") or "")[:TEXT],
            "states": sorted(s.value_nick.replace("-", "_") for s in states)}
    component = safe(acc.get_component_iface)
    if component is not None:
        rect = safe(lambda: component.get_extents(Atspi.CoordType.SCREEN))
        if rect is not None:
            node["bounds"] = {"x": rect.x, "y": rect.y, "width": rect.width,
                              "height": rect.height}
    action = safe(acc.get_action_iface)
    if action is not None:
        count = min(safe(action.get_n_actions, 0) or 0, 32)
        node["actions"] = [safe(lambda i=i: action.get_action_name(i), "") for i in range(count)]
    return node


def children(acc):
    count = min(safe(acc.get_child_count, 0) or 0, BUDGET)
    for index in range(count):
        child = safe(lambda index=index: acc.get_child_at_index(index))
        if child is not None:
            yield child


def scope_root(Atspi, request):
    desktop = Atspi.get_desktop(0)
    scope = (request.get("scope") or "focused").strip().lower()
    apps = list(children(desktop))
    if scope == "all":
        return desktop
    if scope == "pid":
        pid = request.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            raise Failure(400, "BAD_REQUEST", "pid is required with scope pid")
        for app in apps:
            if safe(app.get_process_id) == pid:
                return app
        raise Failure(404, "NOT_FOUND", f"no accessible application with pid {pid}")
    if scope != "focused":
        raise Failure(400, "BAD_REQUEST", f"invalid accessibility scope {scope!r}, "
                                          "expected focused|pid|all")
    if not apps:
        raise Failure(404, "NOT_FOUND", "no accessible root for focused window")
    for app in apps:
        for window in children(app):
            states = safe(lambda w=window: w.get_state_set().get_states(), []) or []
            if Atspi.StateType.ACTIVE in states:
                return app
    return apps[0]


class Walk:
    def __init__(self):
        self.left = BUDGET
        self.truncated = False

    def tree(self, acc, depth, Atspi, level=0):
        self.left -= 1
        node = describe(acc, Atspi)
        if level >= MAX_DEPTH and depth != 0:
            self.truncated = True
        elif depth != 0:
            node["children"] = []
            for child in children(acc):
                if self.left <= 0:
                    self.truncated = True
                    break
                node["children"].append(self.tree(child, depth - 1 if depth > 0 else -1, Atspi,
                                                  level + 1))
        return node

    def each(self, acc):
        """Every node under ``acc`` (itself first), depth first, within the budget."""
        stack = [acc]
        while stack:
            if self.left <= 0:
                self.truncated = True
                return
            current = stack.pop()
            self.left -= 1
            yield current
            stack.extend(reversed(list(children(current))))


def matcher(request):
    role = (request.get("role") or "").lower()
    name = request.get("name") or ""
    mode = request.get("nameMatch") or "substring"
    states = request.get("states") or []
    if mode not in ("exact", "substring", "regex"):
        raise Failure(400, "BAD_REQUEST", f"unknown nameMatch {mode!r}, want exact|substring|regex")
    pattern = None
    if name and mode == "regex":
        try:
            pattern = re.compile(name)
        except re.error as exc:
            raise Failure(400, "BAD_REQUEST", f"invalid regex for name: {exc}") from None

    def named(text):
        if mode == "exact":
            return text == name
        if pattern is not None:
            return pattern.search(text) is not None
        return name in text

    def match(node):
        if role and node["role"].lower() != role:
            return False
        if name and not named(node["name"]):
            return False
        return all(state in node["states"] for state in states)

    return match


def find_node(Atspi, wanted):
    if not isinstance(wanted, str) or not re.fullmatch(r"[^/]+:/[A-Za-z0-9_/]*", wanted):
        raise Failure(400, "BAD_REQUEST", "invalid node id (want <bus name>:<object path>)")
    for acc in Walk().each(Atspi.get_desktop(0)):
        if safe(lambda a=acc: node_id(a)) == wanted:
            return acc
    raise Failure(404, "NOT_FOUND", "accessibility node not found")


def act(Atspi, request, what):
    acc = find_node(Atspi, request.get("id"))
    if what == "focus":
        component = safe(acc.get_component_iface)
        if component is None or not safe(component.grab_focus, False):
            raise Failure(400, "BAD_REQUEST", "action not supported by node: focus")
    elif what == "invoke":
        action = safe(acc.get_action_iface)
        count = min(safe(action.get_n_actions, 0) or 0, 32) if action else 0
        names = [safe(lambda i=i: action.get_action_name(i), "") for i in range(count)]
        wanted = request.get("action") or (names[0] if names else None)
        if wanted not in names:
            raise Failure(400, "BAD_REQUEST", f"action not supported by node: {wanted}")
        safe(lambda: action.do_action(names.index(wanted)))
    else:
        value = request.get("value") or ""
        text = safe(acc.get_editable_text_iface)
        numeric = safe(acc.get_value_iface)
        if text is not None:
            if not safe(lambda: text.set_text_contents(value), False):
                raise Failure(400, "BAD_REQUEST", "the node refused the value")
        elif numeric is not None:
            try:
                number = float(value)
            except ValueError:
                raise Failure(400, "BAD_REQUEST", "a numeric node takes a number") from None
            safe(lambda: numeric.set_current_value(number))
        else:
            raise Failure(400, "BAD_REQUEST", "action not supported by node: set value")
    return {}


def answer(request):
    try:
        import gi

        gi.require_version("Atspi", "2.0")
        from gi.repository import Atspi
    except (ImportError, ValueError):
        raise Failure(503, "A11Y_UNAVAILABLE", "accessibility bus not reachable: AT-SPI "
                      "(python3-pyatspi) is not installed") from None

    if Atspi.init() not in (0, 1):
        raise Failure(503, "A11Y_UNAVAILABLE", "accessibility bus not reachable")
    Atspi.set_timeout(2000, 5000)
    what = request.get("what")
    if what == "tree":
        walk = Walk()
        depth = request.get("maxDepth")
        depth = -1 if not isinstance(depth, int) or depth < 0 else depth
        root = walk.tree(scope_root(Atspi, request), depth, Atspi)
        return {"root": root, "truncated": walk.truncated}
    if what == "find":
        limit = request.get("limit")
        limit = FIND_DEFAULT if not isinstance(limit, int) or limit <= 0 else min(limit, FIND_MAX)
        match, walk, found = matcher(request), Walk(), []
        for acc in walk.each(scope_root(Atspi, request)):
            node = describe(acc, Atspi)
            if match(node):
                found.append(node)
                if len(found) >= limit:
                    return {"matches": found, "truncated": True}
        return {"matches": found, "truncated": walk.truncated}
    return act(Atspi, request, what)


def main():
    warnings.simplefilter("ignore")  # Atspi 2.46 deprecates the *_iface getters it still has
    try:
        print(json.dumps({"result": answer(json.loads(sys.stdin.read()))}))
    except Failure as exc:
        print(json.dumps({"error": {"status": exc.status, "code": exc.code,
                                    "message": exc.message}}))


if __name__ == "__main__":
    main()
