"""A build log lives on disk, bounded: a build that prints without end cannot fill the
server's memory, and the builder's own lines are always kept."""

from __future__ import annotations

from pathlib import Path

from cove.core.buildlog import BuildLog


async def _read(log: BuildLog, follow: bool = False) -> str:
    return "".join([chunk async for chunk in log.follow(follow=follow)])


async def test_output_beyond_the_cap_is_counted_not_kept(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "b.log", cap=1000)
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
    assert (tmp_path / "b.log").stat().st_size < 2000


async def test_a_follower_gets_everything_then_what_comes(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "b.log")
    await log.write("first")
    follower = log.follow()
    assert await anext(follower) == "first\n"
    await log.output("ünïcode")
    assert await anext(follower) == "ünïcode\n"
    await log.close()
    assert [chunk async for chunk in follower] == []
    assert log.text() == "first\nünïcode\n"


async def test_discard_removes_the_file(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "b.log")
    await log.write("x")
    log.discard()
    assert not (tmp_path / "b.log").exists() and await _read(log) == ""
