"""Image figures: Dockerfile builds (cold and cached), registry pulls (cold and with
every layer cached) and create from a pulled image, through the official SDK.

Run as root after ``make setup`` (``docker-registry``, ``skopeo``, ``busybox-static``)::

    .venv/bin/python bench/images.py [--mb 100]

- build: ``daytona.snapshot.create`` of a 3-step ``Image`` (COPY of a local file, ENV,
  RUN) over the default snapshot; cold (never built) and cached (the same image as a
  new snapshot: copied, no step run).
- pull: ``POST /snapshots {"imageName"}`` of a ~``--mb`` MB image (busybox and a layer of
  random data) from a registry on loopback until ``active``; cold, then the same image
  under a new name (every layer in the blob cache), with MB/s of the image size.
- create: ``daytona.create`` -> started, from the freshly pulled snapshot and from the
  default snapshot.

The SDK's context uploader speaks only HTTPS; this bench's server is plain HTTP on
loopback, so its S3 client is allowed HTTP (as tests/e2e/test_build_contexts.py does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from daytona import (
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConfig,
    Image,
)
from daytona._sync import object_storage as sdk_storage
from obstore.store import S3Store

from cove.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.registry import ImageSpec, Registry, busybox_layer, entry, file, layer, layout  # noqa: E402

KEY = "bench-key"


def _http_store(*args: object, client_options: dict | None = None, **kw: object) -> S3Store:
    return S3Store(*args, client_options={**(client_options or {}), "allow_http": True},
                   **kw)  # type: ignore[arg-type]  # fmt: skip


def timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build_figures(daytona: Daytona, work: Path) -> tuple[float, float]:
    source = work / "payload.txt"
    source.write_text(uuid.uuid4().hex)  # a context (and so a build) never seen before
    image = (Image.base("cove-default").add_local_file(str(source), "/opt/payload.txt")
             .env({"BENCH": "1"}).run_commands("cat /opt/payload.txt > /opt/copy.txt"))  # fmt: skip
    names = [f"bench-build-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    cold = timed(lambda: daytona.snapshot.create(CreateSnapshotParams(name=names[0], image=image),
                                                 timeout=1800))  # fmt: skip
    cached = timed(lambda: daytona.snapshot.create(
        CreateSnapshotParams(name=names[1], image=image), timeout=1800))  # fmt: skip
    return cold, cached


def big_image(registry: Registry, work: Path, mb: int) -> tuple[str, int]:
    blob = os.urandom(mb * 1_000_000)
    data = layer([entry("data", tarfile.DIRTYPE), file("data/random.bin", blob)])
    spec = ImageSpec(layers=[busybox_layer("bench"), data])
    size = sum(len(x) for x in spec.layers)
    return registry.push(layout(work / "big", spec), "bench/big"), size


def pull(server: ServerProcess, ref: str) -> tuple[float, str]:
    """Seconds from ``POST /snapshots`` to ``active`` (polled every 20 ms: the SDK's
    own wait polls once a second)."""
    name = f"bench-pull-{uuid.uuid4().hex[:8]}"
    auth = {"Authorization": f"Bearer {KEY}"}
    start = time.perf_counter()
    r = httpx.post(f"{server.api_url}/snapshots", json={"name": name, "imageName": ref},
                   headers=auth, timeout=60)  # fmt: skip
    r.raise_for_status()
    while (state := httpx.get(f"{server.api_url}/snapshots/{name}", headers=auth).json())[
        "state"
    ] == "pulling":
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    assert state["state"] == "active", state
    return elapsed, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the pulled image's data")
    args = parser.parse_args()
    sdk_storage.S3Store = _http_store  # type: ignore[attr-defined,assignment]
    work = Path(tempfile.mkdtemp(prefix="cove-bench-images-"))
    registry = Registry(work / "registry")
    (work / "registry").mkdir()
    registry.start()
    server = ServerProcess(work / "data", api_key=KEY,
                           env={"COVE_INSECURE_REGISTRIES": "127.0.0.1"})  # fmt: skip
    (work / "data").mkdir()
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        cold, cached = build_figures(daytona, work)
        ref, size = big_image(registry, work, args.mb)
        pull_cold, pulled = pull(server, ref)
        pull_cached, _ = pull(server, ref)
        from_pulled = [create_time(daytona, pulled) for _ in range(3)]
        from_default = [create_time(daytona, None) for _ in range(3)]
    finally:
        server.delete_all_sandboxes()
        server.stop()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)
    mb = size / 1_000_000
    print(f"{'figure':<52} {'seconds':>8}")  # noqa: T201
    print(f"{'Dockerfile build, 3 steps (cold)':<52} {cold:>8.2f}")  # noqa: T201
    print(f"{'Dockerfile build, same image again (cached)':<52} {cached:>8.2f}")  # noqa: T201
    print(f"{f'pull {mb:.0f} MB image (cold), {mb / pull_cold:.1f} MB/s':<52} {pull_cold:>8.2f}")  # noqa: T201
    print(f"{f'pull same image, layers cached, {mb / pull_cached:.1f} MB/s':<52} "  # noqa: T201
          f"{pull_cached:>8.2f}")  # fmt: skip
    print(f"{'create -> started from the pulled image (median of 3)':<52} "  # noqa: T201
          f"{sorted(from_pulled)[1]:>8.2f}")  # fmt: skip
    print(f"{'create -> started from the default snapshot (median of 3)':<52} "  # noqa: T201
          f"{sorted(from_default)[1]:>8.2f}")  # fmt: skip


def create_time(daytona: Daytona, snapshot: str | None) -> float:
    start = time.perf_counter()
    params = CreateSandboxFromSnapshotParams(snapshot=snapshot, auto_stop_interval=0)
    sb = daytona.create(params, timeout=600)
    elapsed = time.perf_counter() - start
    sb.delete()
    return elapsed


if __name__ == "__main__":
    main()
