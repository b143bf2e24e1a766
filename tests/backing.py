"""Throwaway PostgreSQL and Redis servers for tests (Debian's packages, installed by
scripts/install), each in a temporary directory, removed afterwards."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AS_POSTGRES = ["runuser", "-u", "postgres", "--"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres(*, tcp: bool = False, port: int | None = None) -> Iterator[str]:
    """A PostgreSQL cluster of its own; yields its SQLAlchemy URL (a Unix socket in
    its directory, or with ``tcp`` 127.0.0.1 on a free port)."""
    bindir = _pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/install")
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="cove-pg-"))
    shutil.chown(root, "postgres", "postgres")
    listen = "127.0.0.1" if tcp else ""
    try:
        subprocess.run([*AS_POSTGRES, bindir / "initdb", "-D", root / "data", "-A", "trust",
                        "-U", "postgres"], check=True, capture_output=True)  # fmt: skip
        subprocess.run([*AS_POSTGRES, bindir / "pg_ctl", "-D", root / "data", "-w", "-l",
                        root / "log", "-o", f"-k {root} -c listen_addresses='{listen}' -p {port}",
                        "start"], check=True, capture_output=True)  # fmt: skip
        try:
            if tcp:
                yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
            else:
                yield f"postgresql+psycopg://postgres@/postgres?host={root}&port={port}"
        finally:
            subprocess.run([*AS_POSTGRES, bindir / "pg_ctl", "-D", root / "data", "-m",
                            "immediate", "stop"], capture_output=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis() -> Iterator[str]:
    """A Redis server on 127.0.0.1 with nothing saved to disk; yields its URL."""
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="cove-redis-"))
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(root), "--logfile", str(root / "log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
