"""The web dashboard in a real browser (Debian's chromium, driven by Playwright) against
a real ``cove serve``: sign in, a sandbox from creation to deletion with its state
pushed live, streamed code output, the terminal, files, snapshots, volumes, keys,
usage and the API docs. Every request the page makes must stay on the server's origin
(anything else is aborted and fails the test). Screenshots go to ``$COVE_ARTIFACTS``
(default ``tests/artifacts/``, ignored by git) for CI to keep.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

from cove.api.wsauth import MARKER, bearer_protocol
from cove.web import STATIC
from tests.e2e.conftest import KEY, Server

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("COVE_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")
LIVE = 120_000  # ms: a sandbox's start on a loaded host
# Outside CI a checkout without chromium or the build skips; CI (scripts/install has
# made both) fails instead, so a broken install step cannot pass unnoticed.
MISSING = [reason for missing, reason in (
    (not Path(CHROMIUM).exists(), "Debian's chromium is not installed"),
    (not (STATIC / "index.html").is_file(), "web/ is not built")) if missing]
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"{MISSING[0]}: scripts/install should have seen to it")
pytestmark = pytest.mark.skipif(bool(MISSING), reason="; ".join(MISSING))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


class Offsite:
    """Every URL the page asked for; those off the server's origin are aborted."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.ws_origin = origin.replace("http://", "ws://", 1)
        self.urls: list[str] = []

    def on_origin(self, url: str) -> bool:
        return url.startswith((self.origin + "/", self.ws_origin + "/")) or url in (
            "about:blank", "data:,") or url.startswith(("blob:" + self.origin, "data:"))

    def bad(self) -> list[str]:
        return [u for u in self.urls if not self.on_origin(u)]


@pytest.fixture
def page(browser, server: Server, request: pytest.FixtureRequest) -> Iterator[object]:  # noqa: ANN001
    context = browser.new_context(base_url=server.url, accept_downloads=True,
                                  viewport={"width": 1280, "height": 860})  # fmt: skip
    offsite = Offsite(server.url)

    def route(r) -> None:  # noqa: ANN001
        offsite.urls.append(r.request.url)
        if offsite.on_origin(r.request.url):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("websocket", lambda ws: offsite.urls.append(ws.url))
    page.on("dialog", lambda dialog: dialog.accept())
    page.offsite = offsite
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        shot(page, f"{request.node.name}-failed")
    context.close()
    assert offsite.bad() == [], "requests left the server's origin"


def shot(page, name: str, *, full_page: bool = True) -> None:  # noqa: ANN001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", name)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=full_page)


def sign_in(page, key: str = KEY) -> None:  # noqa: ANN001
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sandboxes")).to_be_visible()
    expect(page.locator(".live")).to_have_text("live")


def test_a_wrong_key_is_refused_and_the_key_is_kept_in_memory_only(page) -> None:  # noqa: ANN001
    page.goto("/dashboard/volumes")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("API key")
    shot(page, "signin-refused")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Volumes")).to_be_visible()  # the asked page
    stored = "sessionStorage.length + localStorage.length + document.cookie.length"
    assert page.evaluate(stored) == 0
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    sign_in(page)
    page.reload()  # a reload asks again
    expect(page.get_by_label("API key")).to_be_visible()


def _serve_hostile_page(sb) -> None:  # noqa: ANN001
    """A page on the sandbox's port 8080 (its preview's)."""
    sb.fs.upload_file(b"<!doctype html><title>hostile</title><p>hostile page</p>",
                      "/home/daytona/www/index.html")  # fmt: skip
    sb.process.exec("cd /home/daytona/www && (setsid python3 -m http.server 8080 "
                    ">/dev/null 2>&1 </dev/null &)")  # fmt: skip
    sb.process.exec("for i in $(seq 100); do curl -sf localhost:8080/ >/dev/null && break; "
                    "sleep 0.1; done")  # fmt: skip


def test_a_preview_on_the_dashboards_origin_finds_no_key(  # noqa: ANN001
        page, server: Server, daytona: Daytona, sandboxes: list) -> None:
    """A sandbox's page served at /preview/... shares the dashboard's origin: opened in
    the same tab after signing in, it finds nothing of the key in the browser."""
    sb = daytona.create()
    sandboxes.append(sb)
    _serve_hostile_page(sb)
    link = sb.get_preview_link(8080)
    assert link.url.startswith(server.url + "/preview/")
    sign_in(page)
    page.goto(f"{link.url}/?token={link.token}")
    expect(page.get_by_text("hostile page")).to_be_visible()
    found = page.evaluate("""() => [sessionStorage.length, localStorage.length,
                                    document.cookie, window.name]""")
    assert found == [0, 0, "", ""]


def test_a_preview_on_the_dashboards_origin_reads_nothing_from_the_browsers_cache(  # noqa: ANN001
        browser, server: Server, daytona: Daytona, sandboxes: list) -> None:
    """What the dashboard fetched with its key (the organization's sandboxes, its keys)
    is not kept in the browser's cache: a sandbox's page on the same origin, another
    organization's, would read it there (``cache: "force-cache"``) with no key. (A
    context of its own: Playwright's routing, as the ``page`` fixture's, turns the
    browser's cache off.)"""
    sb = daytona.create(CreateSandboxFromSnapshotParams(public=True))
    sandboxes.append(sb)
    _serve_hostile_page(sb)
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        sign_in(page)
        expect(row(page, sb.id)).to_be_visible()  # the dashboard has fetched the list
        page.get_by_role("link", name="API keys").click()
        expect(page.get_by_role("heading", name="API keys")).to_be_visible()
        page.goto(sb.get_preview_link(8080).url + "/")
        expect(page.get_by_text("hostile page")).to_be_visible()
        read = page.evaluate("""async () => {
            const got = {}
            for (const url of ['/api/sandbox?limit=200', '/api/api-keys']) {
                const r = await fetch(url, {cache: 'force-cache'})
                got[url] = r.status
            }
            return got
        }""")
    finally:
        context.close()
    assert read == {"/api/sandbox?limit=200": 401, "/api/api-keys": 401}


def test_a_preview_cannot_reach_into_a_dashboard_it_opens(  # noqa: ANN001
        page, server: Server, daytona: Daytona, sandboxes: list) -> None:
    """A sandbox's page at /preview/... (the dashboard's origin) opens the dashboard in
    a window of its own and waits for the user to sign in there: the dashboard's page
    leaves the preview's browsing context group (its opener policy), so the preview
    can neither read it nor wrap its ``fetch`` (the key goes out in every call)."""
    sb = daytona.create(CreateSandboxFromSnapshotParams(public=True))
    sandboxes.append(sb)
    _serve_hostile_page(sb)
    page.goto(sb.get_preview_link(8080).url + "/")
    expect(page.get_by_text("hostile page")).to_be_visible()
    with page.context.expect_page() as opened:
        page.evaluate("() => { window.dash = window.open('/dashboard/'); }")
    dashboard = opened.value
    dashboard.get_by_label("API key").fill(KEY)
    dashboard.get_by_role("button", name="Sign in").click()
    expect(dashboard.get_by_role("heading", name="Sandboxes")).to_be_visible()
    reach = """() => {
        try {
            if (window.dash.closed) return "closed";
            window.dash.fetch = () => Promise.reject(new Error("taken"));
            return window.dash.document.title;
        } catch (e) { return "refused: " + e.name; }
    }"""
    assert page.evaluate(reach) == "closed"
    assert dashboard.evaluate("() => window.opener") is None


@pytest.fixture
def label() -> Iterator[str]:
    yield uuid.uuid4().hex[:8]


def row(page, sandbox_id: str):  # noqa: ANN001, ANN201
    return page.locator(f"tr[data-sandbox='{sandbox_id}']")


def test_a_sandbox_from_creation_to_deletion(page, server: Server, daytona: Daytona,  # noqa: ANN001
                                              sandboxes: list, label: str) -> None:  # fmt: skip
    sign_in(page)
    shot(page, "sandboxes-empty")
    page.get_by_role("button", name="Create sandbox").click()
    page.locator("form.create input[name=name]").fill(f"dash-{label}")
    page.locator("form.create input[name=labels]").fill(f"dash={label}, team=web")
    page.locator("form.create").get_by_role("button", name="Create").click()
    link = page.get_by_role("link", name=f"dash-{label}")
    expect(link).to_be_visible(timeout=LIVE)
    sandbox_id = link.get_attribute("href").rsplit("/", 1)[1]
    sb = daytona.get(sandbox_id)
    sandboxes.append(sb)
    expect(row(page, sandbox_id).locator(".state")).to_have_text("started", timeout=LIVE)
    shot(page, "sandbox-started")

    # State changes made elsewhere (the SDK) arrive over Socket.IO: no reload, no polling.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    sb.stop()
    expect(row(page, sandbox_id).locator(".state")).to_have_text("stopped", timeout=LIVE)
    other = daytona.create()
    sandboxes.append(other)
    expect(row(page, other.id).locator(".state")).to_have_text("started", timeout=LIVE)
    assert [u for u in requests if "/api/" in u] == [], "the list was fetched, not pushed"
    shot(page, "sandbox-stopped-live")

    # Filter by label: only ours; a label nobody has: none.
    page.locator("input[name=labelFilter]").fill(f"dash={label}")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-sandbox]")).to_have_count(1)
    expect(row(page, sandbox_id)).to_be_visible()
    page.locator("input[name=labelFilter]").fill(f"dash={label}, team=nobody")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No sandboxes with these labels")).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(row(page, other.id)).to_be_visible()

    row(page, sandbox_id).get_by_role("button", name="Start").click()
    expect(row(page, sandbox_id).locator(".state")).to_have_text("started", timeout=LIVE)
    page.get_by_role("link", name=f"dash-{label}").click()
    expect(page.locator("section.sandbox h2")).to_contain_text(f"dash-{label}")

    _run_code(page, sb)
    _terminal(page)
    _files(page, sb, server)
    _another_organization_gets_nothing(page, server, sandbox_id)

    page.locator("section.sandbox .actions").get_by_role("button", name="Stop").click()
    expect(page.locator("section.sandbox h2 .state")).to_have_text("stopped", timeout=LIVE)
    expect(page.get_by_text("start it to use the files")).to_be_visible()
    shot(page, "sandbox-page-stopped")
    page.locator("section.sandbox .actions").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Sandboxes")).to_be_visible()
    expect(row(page, sandbox_id)).to_have_count(0)
    shot(page, "sandbox-deleted")
    wait_gone(server, f"/sandbox/{sandbox_id}")


def wait_gone(server: Server, path: str) -> None:
    """The API's object is deleted (a delete finishes in the background)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(1200):
        answer = httpx.get(server.api_url + path, headers=headers, timeout=30)
        if answer.status_code == 404 or answer.json().get("state") in ("destroyed", "deleted"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} is still there: {answer.text}")


def _run_code(page, sb) -> None:  # noqa: ANN001
    """Output shows while the program runs: line 1 waits for a file the test makes."""
    page.get_by_role("tab", name="Code").click()
    code = ("import os, time\nprint('line 0', flush=True)\n"
            "while not os.path.exists('/tmp/dash-go'):\n    time.sleep(0.05)\n"
            "print('line 1')\nraise ValueError('the end')\n")  # fmt: skip
    page.locator("textarea[name=code]").fill(code)
    page.get_by_role("button", name="Run").click()
    output = page.get_by_test_id("output")
    expect(output).to_contain_text("line 0", timeout=LIVE)
    expect(page.get_by_test_id("run-status")).to_contain_text("running")
    assert "line 1" not in output.inner_text()
    shot(page, "code-streaming")
    sb.process.exec("touch /tmp/dash-go")
    expect(page.get_by_test_id("run-status")).to_contain_text("finished", timeout=LIVE)
    expect(output).to_contain_text("line 1")
    expect(output.locator(".error")).to_contain_text("ValueError: the end")
    shot(page, "code-finished")


def _terminal(page) -> None:  # noqa: ANN001
    page.get_by_role("tab", name="Terminal").click()
    expect(page.get_by_test_id("terminal-status")).to_contain_text("connected", timeout=LIVE)
    page.get_by_test_id("terminal").click()
    page.keyboard.type("echo dash-$((6*7)) $(whoami)\n")
    expect(page.locator(".xterm-rows")).to_contain_text("dash-42 daytona", timeout=LIVE)
    shot(page, "terminal")


def _files(page, sb, server: Server) -> None:  # noqa: ANN001
    sb.fs.upload_file(b"made by the SDK\n", "/home/daytona/from-sdk.txt")
    page.get_by_role("tab", name="Files").click()
    expect(page.get_by_test_id("path")).to_contain_text("home")
    listed = page.locator("tr[data-file='from-sdk.txt']")
    expect(listed).to_be_visible(timeout=LIVE)
    with page.expect_download() as download:
        listed.get_by_role("button", name="Download").click()
    assert Path(download.value.path()).read_bytes() == b"made by the SDK\n"
    page.locator("input[name=upload]").set_input_files(
        files=[{"name": "from-browser.txt", "mimeType": "text/plain", "buffer": b"uploaded\n"}])
    expect(page.locator("tr[data-file='from-browser.txt']")).to_be_visible(timeout=LIVE)
    assert sb.fs.download_file("/home/daytona/from-browser.txt") == b"uploaded\n"
    shot(page, "files")
    page.locator("tr[data-file='from-browser.txt']").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-file='from-browser.txt']")).to_have_count(0)
    page.get_by_role("button", name="..").click()  # up to /home
    expect(page.locator("tr[data-file='daytona']")).to_be_visible()


def _another_organization_gets_nothing(page, server: Server, sandbox_id: str) -> None:  # noqa: ANN001
    """Another organization's key, the way the dashboard sends it, opens no terminal."""
    other = server.org_key("dashboard-other")
    ws_url = (server.url.replace("http", "ws", 1)
              + f"/toolbox/{sandbox_id}/process/pty/create-connect")
    refused = page.evaluate("""([url, protocols]) => new Promise((done) => {
        const ws = new WebSocket(url + '?id=intruder', protocols)
        ws.onopen = () => done('opened')
        ws.onclose = (e) => done('closed ' + e.code)
    })""", [ws_url, [MARKER, bearer_protocol(other)]])
    assert refused.startswith("closed"), refused
    headers = {"Authorization": f"Bearer {other}"}
    listed = httpx.get(f"{server.api_url}/sandbox", headers=headers, timeout=30).json()
    assert all(item["id"] != sandbox_id for item in listed["items"])


def test_snapshots_and_volumes(page, server: Server, label: str) -> None:  # noqa: ANN001
    sign_in(page)
    page.get_by_role("link", name="Snapshots").click()
    expect(page.locator("tr[data-snapshot='cove-default'] .state")).to_have_text("active")
    shot(page, "snapshots")
    page.get_by_role("link", name="Volumes").click()
    page.locator("input[name=volumeName]").fill(f"dash-{label}")
    page.get_by_role("button", name="Create volume").click()
    volume = page.locator(f"tr[data-volume='dash-{label}']")
    expect(volume).to_be_visible()
    shot(page, "volumes")
    volume.get_by_role("button", name="Delete").click()
    wait_gone(server, f"/volumes/by-name/dash-{label}")


@pytest.mark.parametrize("tab,route", [("API keys", "/api-keys"), ("Usage", "/organizations")])
def test_keys_and_usage_pages(page, server: Server, tab: str, route: str) -> None:  # noqa: ANN001
    """Shown from this server's own routes, in Daytona's shapes."""
    sign_in(page)
    page.get_by_role("link", name=tab).click()
    expect(page.get_by_role("heading", name=tab)).to_be_visible()
    answer = httpx.get(server.api_url + route, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    expect(page.locator("table.list, dl.details").first).to_be_visible()
    expect(page.get_by_test_id("not-available")).to_have_count(0)
    shot(page, tab.lower().replace(" ", "-"))


# Swagger UI renders only the operations in view (a virtual list): /api/health is first.
@pytest.mark.parametrize("path,shows", [("/docs", "/api/health"), ("/redoc", "sandbox")])
def test_the_api_docs_render_from_the_server_alone(page, path: str, shows: str) -> None:  # noqa: ANN001
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.goto(path)
    expect(page.get_by_text(re.compile(re.escape(shows))).first).to_be_visible(timeout=60_000)
    shot(page, path.strip("/"), full_page=False)  # ReDoc's whole page is too tall
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_the_keys_page_speaks_daytonas_shapes(page) -> None:  # noqa: ANN001
    """The page against Daytona's ApiKeysApi shapes (answered here by the test, so it is
    checked before this server has the routes): list, create shown once, revoke."""
    keys = [{"name": "ci", "value": "cove_abc...xyz", "createdAt": "2026-12-01T10:00:00Z",
             "permissions": ["write:sandboxes"], "lastUsedAt": None, "expiresAt": None,
             "userId": "u1", "organizationId": "o1"}]  # fmt: skip
    seen: list[tuple[str, object]] = []

    def api_keys(route) -> None:  # noqa: ANN001
        request = route.request
        seen.append((request.method, request.post_data_json if request.post_data else None))
        if request.method == "POST":
            body = request.post_data_json
            created = {"name": body["name"], "value": "cove_NEWSECRET", "createdAt":
                       "2026-12-04T10:00:00Z", "permissions": body["permissions"],
                       "expiresAt": body.get("expiresAt")}  # fmt: skip
            keys.append({**created, "value": "cove_NEW...RET", "lastUsedAt": None,
                         "userId": "u1"})  # fmt: skip
            route.fulfill(json=created, status=201)
        elif request.method == "DELETE":
            keys[:] = [k for k in keys if not request.url.endswith("/" + k["name"])]
            route.fulfill(status=204)
        else:
            route.fulfill(json=keys)

    page.route("**/api/api-keys**", api_keys)
    sign_in(page)
    page.get_by_role("link", name="API keys").click()
    expect(page.locator("tr[data-key='ci']")).to_contain_text("write:sandboxes")
    page.locator("form.create input[name=name]").fill("deploy")
    page.locator("form.create input[name=days]").fill("7")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-key")).to_contain_text("export DAYTONA_API_KEY=cove_NEWSECRET")
    expect(page.locator("tr[data-key='deploy']")).to_be_visible()
    shot(page, "api-keys-created")
    created = next(body for method, body in seen if method == "POST")
    assert created["name"] == "deploy" and "delete:sandboxes" in created["permissions"]
    assert created["expiresAt"]
    page.locator("tr[data-key='ci']").get_by_role("button", name="Revoke").click()
    expect(page.locator("tr[data-key='ci']")).to_have_count(0)


def test_the_usage_page_speaks_daytonas_shapes(page) -> None:  # noqa: ANN001
    """Quotas (OrganizationUsageOverview) and metered use (the analytics API's
    AggregatedUsage), answered here by the test in Daytona's shapes."""
    overview = {"regionUsage": [{"regionId": "local", "sandboxClass": "small",
                                 "totalCpuQuota": 8, "currentCpuUsage": 2,
                                 "totalMemoryQuota": 16, "currentMemoryUsage": 3,
                                 "totalDiskQuota": 100, "currentDiskUsage": 6}],
                "totalSnapshotQuota": 10, "currentSnapshotUsage": 1,
                "totalVolumeQuota": 20, "currentVolumeUsage": 0}  # fmt: skip
    aggregated = {"sandboxCount": 3, "totalCPUSeconds": 7200, "totalRAMGBSeconds": 3600,
                  "totalDiskGBSeconds": 36000, "totalPrice": 0.1234}  # fmt: skip
    page.route("**/api/organizations", lambda r: r.fulfill(json=[{"id": "org-1"}]))
    page.route("**/api/organizations/org-1/usage", lambda r: r.fulfill(json=overview))
    page.route("**/organization/org-1/usage/aggregated?**", lambda r: r.fulfill(json=aggregated))
    sign_in(page)
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_test_id("quotas")).to_contain_text("CPU (local)")
    expect(page.get_by_test_id("aggregated")).to_contain_text("2.000 vCPU·h")
    expect(page.get_by_test_id("aggregated")).to_contain_text("$0.1234")
    shot(page, "usage-shapes")


def test_another_organization_sees_only_its_own_sandboxes_live(  # noqa: ANN001
        page, server: Server, daytona: Daytona, sandboxes: list) -> None:
    """Signed in with another organization's key, the page gets that organization's
    events only: ours is created first, theirs after it on the same socket, so once
    theirs shows, ours would have too."""
    other_key = server.org_key("dashboard-tenant")
    sign_in(page, other_key)
    expect(page.get_by_text("No sandboxes")).to_be_visible()
    ours = daytona.create()
    sandboxes.append(ours)
    theirs = Daytona(DaytonaConfig(api_key=other_key, api_url=server.api_url)).create()
    sandboxes.append(theirs)
    expect(row(page, theirs.id).locator(".state")).to_have_text("started", timeout=LIVE)
    expect(row(page, ours.id)).to_have_count(0)
    page.goto(f"/dashboard/sandboxes/{ours.id}")
    sign_in_here(page, other_key)
    expect(page.get_by_role("alert")).to_contain_text("not found")
    shot(page, "another-organization")


def sign_in_here(page, key: str) -> None:  # noqa: ANN001
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
