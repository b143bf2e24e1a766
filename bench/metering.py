"""The cost of usage metering, per sandbox and per lifecycle change, on the server's
own database code (SQLite in WAL mode, as ``cove serve`` runs by default).

    .venv/bin/python bench/metering.py [--sandboxes 1000]

Each sandbox goes through create -> started -> stop -> stopped -> start -> started ->
archive -> archived -> delete, as the lifecycle announces it; the meter records
what changes. Prints (p50/p95 where timed): the time of the meter's work per
announced change, against the sandbox record's own write (``store.save``) that every
change makes anyway; rows and bytes (table and its indexes, from SQLite's dbstat)
per sandbox; the heartbeat UPDATE with every sandbox's period open; and the usage
queries of an organization with that many sandboxes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from cove.core.metering import Meter, Prices
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.store.keys import SqlKeyStore
from cove.store.migrate import upgrade
from cove.store.sql import SqlSandboxStore, make_engine
from cove.store.usage import SqlUsageStore

S = SandboxState
LIFE = (S.STARTED, S.STOPPING, S.STOPPED, S.STARTING, S.STARTED, S.STOPPING, S.STOPPED,
        S.ARCHIVING, S.ARCHIVED, S.DESTROYING, S.DESTROYED)  # fmt: skip
PRICES = Prices(cpu=0.000014, memory=0.0000045, disk=0.00000003, free_disk=5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6  # µs


def best(fn: Callable[[], object], times: int = 3) -> float:
    """The fastest of ``times`` runs (a query's first run also pays warm-up)."""
    return min(timed(fn) for _ in range(times))


def table_bytes(engine, name: str) -> int:  # noqa: ANN001
    with engine.connect() as c:
        return int(c.execute(text("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = :n "
                                  "OR name LIKE :i"), {"n": name, "i": f"ix_{name}%"}).scalar())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandboxes", type=int, default=1000)
    n = parser.parse_args().sandboxes
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        org = SqlKeyStore(engine).ensure_organization("bench")
        store, usage = SqlSandboxStore(engine), SqlUsageStore(engine)
        meter = Meter(usage, PRICES)
        sandboxes = [Sandbox(id=str(uuid.uuid4()), organization_id=org, name=f"b{i}",
                             snapshot="cove-default", user="daytona",
                             resources=Resources(cpu=1, memory=1, disk=3))
                     for i in range(n)]  # fmt: skip
        started = utcnow()
        for sb in sandboxes:
            store.add(sb)
        meter_us: list[float] = []
        save_us: list[float] = []
        changed_us: list[float] = []
        writes_before = meter.writes
        meter_us.extend(timed(lambda sb=sb: meter.observe(sb)) for sb in sandboxes)  # created
        open_rows = n
        for step, state in enumerate(LIFE[:4]):  # up to the second start: all periods open
            for sb in sandboxes:
                sb.state, sb.state_changed_at = state, started + timedelta(seconds=step + 1)
                save_us.append(timed(lambda sb=sb: store.save(sb)))
                before = meter.writes
                took = timed(lambda sb=sb: meter.observe(sb))
                meter_us.append(took)
                if meter.writes != before:
                    changed_us.append(took)
        heartbeat_ms = timed(meter.mark) / 1000
        with engine.connect() as c:
            so_far = int(c.execute(text("SELECT count(*) FROM usage_periods")).scalar_one())
        q_from, q_to = started - timedelta(hours=1), datetime.now(UTC) + timedelta(days=1)
        query_ms = {
            "aggregated": best(lambda: meter.totals(meter.periods(org, q_from, q_to), q_to)),
            "per sandbox": best(lambda: meter.by_sandbox(meter.periods(org, q_from, q_to), q_to)),
            "chart": best(lambda: meter.chart(meter.periods(org, q_from, q_to), q_from, q_to)),
            "one sandbox's periods": best(lambda: meter.periods(org, q_from, q_to,
                                                                 sandbox_id=sandboxes[0].id)),
        }  # fmt: skip
        for step, state in enumerate(LIFE[4:], start=5):
            for sb in sandboxes:
                sb.state, sb.state_changed_at = state, started + timedelta(seconds=step)
                if state is not S.DESTROYED:
                    save_us.append(timed(lambda sb=sb: store.save(sb)))
                before = meter.writes
                took = timed(lambda sb=sb: meter.observe(sb))
                meter_us.append(took)
                if meter.writes != before:
                    changed_us.append(took)
        with engine.connect() as c:
            rows = int(c.execute(text("SELECT count(*) FROM usage_periods")).scalar_one())
        size = table_bytes(engine, "usage_periods")
    changes = len(LIFE) + 1
    print(f"metering, {n} sandboxes x {changes} announced changes "  # noqa: T201
          f"(create, start, stop, start, archive, delete), SQLite WAL, host load "
          f"{Path('/proc/loadavg').read_text().split()[0]}")
    print(f"  meter per announced change: p50 {pct(meter_us, .5):.1f} µs, "  # noqa: T201
          f"p95 {pct(meter_us, .95):.1f} µs (all {len(meter_us)})")
    print(f"  meter per change that writes: p50 {pct(changed_us, .5):.0f} µs, "  # noqa: T201
          f"p95 {pct(changed_us, .95):.0f} µs ({len(changed_us)} of them)")
    print(f"  baseline, the record's own save per change: p50 {pct(save_us, .5):.0f} µs, "  # noqa: T201
          f"p95 {pct(save_us, .95):.0f} µs")
    print(f"  rows per sandbox: {rows / n:.1f} ({rows} rows, "  # noqa: T201
          f"{(meter.writes - writes_before) / n:.1f} row writes each), "
          f"{size / n:.0f} bytes per sandbox with indexes ({size} bytes)")
    print(f"  heartbeat UPDATE with {open_rows} open periods: {heartbeat_ms:.1f} ms")  # noqa: T201
    for name, us in query_ms.items():
        print(f"  query {name} ({n} sandboxes, {so_far} rows, best of 3): "  # noqa: T201
              f"{us / 1000:.1f} ms")
    print(f"  (meter median {statistics.median(meter_us):.1f} µs)")  # noqa: T201


if __name__ == "__main__":
    main()
