"""Computer-use figures through the official SDK.

Run as root after ``make setup``::

    .venv/bin/python bench/computeruse.py [--n 30]

Prints, from one run: ``computer_use.start()`` (the first in a new sandbox, then
stop-start cycles), ``stop()``, screenshots (full PNG, JPEG at half scale, a
300x200 region) with their sizes, a mouse move and a key press, a screen recording's
start and stop (and the size of 2 s of it), the accessibility tree of a small GTK
window (the whole tree, and a find) (p50/p95, in ms).
"""

from __future__ import annotations

import argparse
import base64
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from daytona.common.computer_use import ScreenshotOptions, ScreenshotRegion

from cove.testing import ServerProcess

KEY = "bench-key"
GTK_FORM = (b"import gi\ngi.require_version('Gtk', '3.0')\nfrom gi.repository import Gtk\n"
            b"w = Gtk.Window(title='Bench')\nb = Gtk.Box()\nb.add(Gtk.Entry())\n"
            b"b.add(Gtk.Button(label='OK'))\nw.add(b)\nw.show_all()\nGtk.main()\n")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def timings(fn: Callable[[], object], n: int) -> tuple[list[float], object]:
    fn()
    out, last = [], None
    for _ in range(n):
        ms, last = timed(fn)
        out.append(ms)
    return out, last


def recording(cu, rows: dict[str, list[float]], sizes: dict[str, int], n: int) -> None:  # noqa: ANN001
    """Start and stop recordings (n of them); the size of a 2-second one."""
    starts, stops = [], []
    for _ in range(n):
        ms, rec = timed(cu.recording.start)
        starts.append(ms)
        stops.append(timed(lambda rec=rec: cu.recording.stop(rec.id))[0])
        cu.recording.delete(rec.id)
    rows["recording start"], rows["recording stop"] = starts, stops
    rec = cu.recording.start()
    time.sleep(2)
    ms, stopped = timed(lambda: cu.recording.stop(rec.id))
    rows["recording of 2 s: stop"], sizes["recording of 2 s: stop"] = [ms], stopped.size_bytes
    cu.recording.delete(rec.id)


def accessibility(sb, rows: dict[str, list[float]], n: int) -> None:  # noqa: ANN001
    """The accessibility tree (all of it) and a find, with a small GTK window open."""
    sb.fs.upload_file(GTK_FORM, "/tmp/bench_form.py")
    sb.process.exec("DISPLAY=:0 nohup python3 /tmp/bench_form.py >/dev/null 2>&1 &")
    a11y = sb.computer_use.accessibility
    deadline = time.monotonic() + 30
    while not a11y.find_nodes(scope="all", role="push button").matches:
        if time.monotonic() > deadline:
            raise RuntimeError("the GTK window never showed in the accessibility tree")
        time.sleep(0.2)
    rows["a11y tree (all)"], _ = timings(lambda: a11y.get_tree(scope="all"), n)
    rows["a11y find (a button)"], _ = timings(
        lambda: a11y.find_nodes(scope="all", role="push button", name="OK"), n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    server = ServerProcess(data_dir, api_key=KEY)
    server.start()
    rows: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        cu = sb.computer_use
        rows["start (first, new sandbox)"] = [timed(cu.start)[0]]
        stops, starts = [], []
        for _ in range(max(3, args.n // 5)):
            stops.append(timed(cu.stop)[0])
            starts.append(timed(cu.start)[0])
        rows["stop"], rows["start (again)"] = stops, starts
        sb.process.exec("DISPLAY=:0 nohup xterm >/dev/null 2>&1 &")
        time.sleep(1)
        shots = {
            "screenshot full PNG": cu.screenshot.take_full_screen,
            "screenshot JPEG q70 x0.5": lambda: cu.screenshot.take_compressed(
                ScreenshotOptions(fmt="jpeg", quality=70, scale=0.5)),
            "screenshot region 300x200": lambda: cu.screenshot.take_region(
                ScreenshotRegion(x=100, y=100, width=300, height=200)),
        }  # fmt: skip
        for name, fn in shots.items():
            rows[name], last = timings(fn, args.n)
            sizes[name] = len(base64.b64decode(last.screenshot))  # type: ignore[attr-defined]
        rows["mouse move"], _ = timings(lambda: cu.mouse.move(300, 300), args.n)
        rows["key press"], _ = timings(lambda: cu.keyboard.press("shift"), args.n)
        recording(cu, rows, sizes, max(3, args.n // 5))
        accessibility(sb, rows, args.n)
        cu.stop()
        sb.delete()
    finally:
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"times in ms; n={args.n}")  # noqa: T201
    print(f"{'':<30} {'p50':>8} {'p95':>8}  size")  # noqa: T201
    for name, values in rows.items():
        size = f"{sizes[name] / 1024:.0f} KiB" if name in sizes else ""
        print(f"{name:<30} {pct(values, 0.5):>8.1f} {pct(values, 0.95):>8.1f}  {size}")  # noqa: T201


if __name__ == "__main__":
    main()
