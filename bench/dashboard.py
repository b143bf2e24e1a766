"""The dashboard's figures, in Debian's chromium driven by Playwright, against a fresh
``cove serve``.

Run as root after ``make setup``::

    .venv/bin/python bench/dashboard.py [--n 10]

Prints, from one run:

- first paint and first contentful paint (the browser's Paint Timing) of the
  dashboard (its sign-in form: the key is never stored, so every load starts there),
  in a fresh browser context each time (nothing cached), beside the same paint of a
  blank static page served on loopback (the browser's own floor); and the time from
  submitting the key to the sandbox list on screen;
- the time from a state change to the dashboard showing it: the SDK stops and starts
  a sandbox, and for each new state (``stopped``, ``started``) the time from the
  server's Socket.IO event reaching a Python Socket.IO client (python-socketio, as
  the SDK connects; the baseline) to the dashboard's table showing that state (a
  MutationObserver's timestamp), and from the request to each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import socketio
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from playwright.sync_api import Browser, Page, sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.nettools import sandbox_pool  # noqa: E402

from cove.testing import ServerProcess  # noqa: E402

KEY = "bench-dashboard-key"
CHROMIUM = "/usr/bin/chromium"
PAINTS = """() => Object.fromEntries(performance.getEntriesByType('paint')
    .map((e) => [e.name, e.startTime]))"""
SIGNED_IN = """() => {
  const form = document.querySelector('form.signin')
  form.addEventListener('submit', () => (window.__t0 = performance.now()), { capture: true })
  new MutationObserver((_, observer) => {
    if (document.querySelector('tr[data-sandbox]')) {
      window.__t1 = performance.now()
      observer.disconnect()
    }
  }).observe(document.body, { subtree: true, childList: true })
}"""
FRAMES = """window.__frames = []
const Native = window.WebSocket
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args)
    const event = /sandbox\\.state\\.updated.*"newState":"(\\w+)"/
    this.addEventListener('message', (e) => {  // before socket.io's own handler
      const m = typeof e.data === 'string' && event.exec(e.data)
      if (m) window.__frames.push({ state: m[1], t: performance.timeOrigin + performance.now() })
    })
  }
}"""
WATCH = """(id) => {
  window.__seen = []
  const record = () => {
    const cell = document.querySelector(`tr[data-sandbox="${id}"] .state`)
    const state = cell && cell.textContent
    const last = window.__seen[window.__seen.length - 1]
    if (state && (!last || last.state !== state))
      window.__seen.push({ state, t: performance.timeOrigin + performance.now() })
  }
  new MutationObserver(record).observe(document.body,
    { subtree: true, childList: true, characterData: true })
  record()
}"""


class Blank(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<!doctype html><title>blank</title><p>blank</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def until(page: Page, condition: str, arg: object = None, timeout: float = 60) -> None:
    """Wait for a JS condition (``wait_for_function`` evaluates strings, which the
    dashboard's Content-Security-Policy forbids; ``evaluate`` is not subject to it)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(condition, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(condition)
        time.sleep(0.005)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, values: list[float]) -> str:
    return f"{name:<52} {statistics.median(values):8.1f} {pct(values, 0.95):8.1f}"


def paint_figures(browser: Browser, server: ServerProcess, blank_url: str, n: int
                  ) -> dict[str, list[float]]:  # fmt: skip
    figures: dict[str, list[float]] = {k: [] for k in (
        "blank page first-paint (baseline)", "blank page first-contentful-paint (baseline)",
        "dashboard first-paint", "dashboard first-contentful-paint",
        "dashboard sign-in submitted -> sandbox list shown")}
    for _ in range(n):
        for name, url in (("blank page", blank_url), ("dashboard", server.url + "/")):
            context = browser.new_context()
            page = context.new_page()
            page.goto(url, wait_until="load")
            until(page, "() => performance.getEntriesByType('paint').length >= 2")
            paints = page.evaluate(PAINTS)
            suffix = " (baseline)" if name == "blank page" else ""
            for paint in ("first-paint", "first-contentful-paint"):
                figures[f"{name} {paint}{suffix}"].append(paints[paint])
            if name == "dashboard":
                figures["dashboard sign-in submitted -> sandbox list shown"].append(
                    signed_in(page))
            context.close()
    return figures


def signed_in(page: Page) -> float:
    """Sign in; ms from the form's submit to the sandbox list on screen."""
    page.wait_for_selector("form.signin")
    page.evaluate(SIGNED_IN)
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    until(page, "() => window.__t1 !== undefined")
    return float(page.evaluate("window.__t1 - window.__t0"))


def live_figures(browser: Browser, server: ServerProcess, daytona: Daytona, n: int
                 ) -> dict[str, list[float]]:  # fmt: skip
    """Stop/start cycles of one sandbox; the event's and the page's arrival times."""
    sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    events: list[tuple[str, float]] = []
    client = socketio.Client()
    client.on("sandbox.state.updated",
              lambda data: events.append((data["newState"], time.time() * 1000))
              if data["sandbox"]["id"] == sb.id else None)  # fmt: skip
    client.connect(server.url, socketio_path="/api/socket.io", auth={"token": KEY},
                   transports=["websocket"])  # fmt: skip
    context = browser.new_context()
    context.add_init_script(FRAMES)
    page = context.new_page()
    page.goto(server.url + "/dashboard/sandboxes")
    signed_in(page)
    page.wait_for_selector(f"tr[data-sandbox='{sb.id}'] .state")
    page.evaluate(WATCH, sb.id)
    py_key, frame_key, ui_key, lag_key = (
        "  request -> event at a Python client (baseline)",
        "  request -> event frame at the browser",
        "  request -> dashboard shows it",
        "  event frame at the browser -> shown (same clock)")
    figures: dict[str, list[float]] = {py_key: [], frame_key: [], ui_key: [], lag_key: []}
    try:
        for _ in range(n):
            for change, state in ((sb.stop, "stopped"), (sb.start, "started")):
                del events[:]
                page.evaluate("window.__seen = []; window.__frames = []")
                sent = time.time() * 1000
                change()
                until(page, "(s) => window.__seen.some((e) => e.state === s)", state)
                deadline = time.monotonic() + 10
                while not any(s == state for s, _ in events) and time.monotonic() < deadline:
                    time.sleep(0.01)
                py = next(t for s, t in events if s == state)
                ui = next(e["t"] for e in page.evaluate("window.__seen") if e["state"] == state)
                frame = next(e["t"] for e in page.evaluate("window.__frames")
                             if e["state"] == state)  # fmt: skip
                figures[py_key].append(py - sent)
                figures[frame_key].append(frame - sent)
                figures[ui_key].append(ui - sent)
                figures[lag_key].append(ui - frame)
    finally:
        client.disconnect()
        context.close()
        sb.delete()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="page loads / stop-start cycles")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-dash-"))
    server = ServerProcess(data_dir, api_key=KEY, env={"COVE_NETWORK_POOL": sandbox_pool(7)})
    blank = ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    threading.Thread(target=blank.serve_forever, daemon=True).start()
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        listed = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            paints = paint_figures(browser, server, f"http://127.0.0.1:{blank.server_port}/",
                                   args.n)  # fmt: skip
            live = live_figures(browser, server, daytona, args.n)
            browser.close()
        listed.delete()
    finally:
        blank.shutdown()
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"n={args.n}; times in ms (chromium headless, one sandbox listed)")  # noqa: T201
    print(f"{'':<52} {'p50':>8} {'p95':>8}")  # noqa: T201
    for name, values in paints.items():
        print(row(name, values))  # noqa: T201
    print(f"{'state change (SDK stop/start) ->':<52}")  # noqa: T201
    for name, values in live.items():
        print(row(name, values))  # noqa: T201


if __name__ == "__main__":
    main()
