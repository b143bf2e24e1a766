"""A build log lives in the database, bounded: a build that prints without end cannot
fill the server's memory nor the database, the builder's own lines are always kept,
and a reader on another replica (another :class:`BuildLogs` on the same database)
follows it to its end, also when its writer's replica is gone."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, func, select

from cove.core.buildlog import CHUNK, BuildLog, BuildLogs, BuildLogStore, MemoryBuildLogStore
from cove.store.build_logs import SqlBuildLogStore
from cove.store.models import BuildLogChunkRow


@pytest.fixture(params=["memory", "sql"])
def store(request: pytest.FixtureRequest, engine: Engine) -> BuildLogStore:
    return MemoryBuildLogStore() if request.param == "memory" else SqlBuildLogStore(engine)


async def _read(log: BuildLog, follow: bool = False) -> str:
    return "".join([chunk async for chunk in log.follow(follow=follow)])


async def test_output_beyond_the_cap_is_counted_not_kept(store: BuildLogStore) -> None:
    log = BuildLogs(store, cap=1000).start("sandbox:a")
    await log.write("Step 1/1 : RUN yes")
    for _ in range(500):
        await log.output("y" * 99)
    await log.write("build failed at step 1/1")
    await log.close()
    text = await _read(log)
    assert text.startswith("Step 1/1 : RUN yes\n" + "y" * 99 + "\n")
    assert text.count("y" * 99) == 10
    assert "build failed at step 1/1\n" in text
    assert text.endswith("[... 49000 bytes of build output were left out ...]\n")
    assert len(text) < 2000


async def test_a_follower_gets_everything_then_what_comes(store: BuildLogStore) -> None:
    log = BuildLogs(store).start("sandbox:a")
    await log.write("first")
    follower = log.follow()
    assert await anext(follower) == "first\n"
    await log.output("ünïcode")
    assert await anext(follower) == "ünïcode\n"
    await log.close()
    assert [chunk async for chunk in follower] == []
    assert log.text() == "first\nünïcode\n"


async def test_a_follower_on_another_replica_reads_it_to_the_end(store: BuildLogStore) -> None:
    writer = BuildLogs(store, replica="a").start("snapshot:s")
    other = BuildLogs(store, replica="b").get("snapshot:s")
    assert other is not None
    await writer.write("Step 1/2 : RUN make")
    follower = other.follow()
    assert await anext(follower) == "Step 1/2 : RUN make\n"
    await writer.output("é" * CHUNK)  # in pieces that split a character
    await writer.write("Snapshot built")
    await writer.close()
    rest = "".join([chunk async for chunk in follower])
    assert rest == "é" * CHUNK + "\nSnapshot built\n"


async def test_big_output_is_stored_in_bounded_chunks(engine: Engine) -> None:
    log = BuildLogs(SqlBuildLogStore(engine)).start("sandbox:a")
    for _ in range(100):
        await log.output("x" * 10_000)
    await log.close()
    with engine.connect() as conn:
        largest = conn.scalar(select(func.max(func.length(BuildLogChunkRow.data))))
    assert largest == CHUNK
    assert len(await _read(log)) == 100 * 10_001


async def test_an_orphaned_log_is_ended_with_the_reason(store: BuildLogStore) -> None:
    writer = BuildLogs(store, replica="dead").start("snapshot:s")
    await writer.write("Step 1/1 : RUN sleep 600")
    writer.set_worker("build-1")
    writer._flush()  # what the dead replica stored before it died
    survivor = BuildLogs(store, replica="alive")
    follower = survivor.get("snapshot:s")
    assert follower is not None
    reading = asyncio.ensure_future(_read(follower, follow=True))
    assert [i.key for i in survivor.orphaned({"alive"})] == ["snapshot:s"]
    assert survivor.end("snapshot:s", "the replica is gone") == "build-1"
    assert await reading == "Step 1/1 : RUN sleep 600\nthe replica is gone\n"
    assert survivor.orphaned({"alive"}) == []
    assert survivor.end("snapshot:s", "again") is None  # ended once


async def test_discard_removes_the_log(store: BuildLogStore) -> None:
    logs = BuildLogs(store)
    log = logs.start("sandbox:a")
    await log.write("x")
    log.discard()
    assert logs.get("sandbox:a") is None and await _read(log) == ""
