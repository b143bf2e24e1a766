"""Cove's two static helper binaries, compiled from C on first use, and the
directory the sandbox's ``/dev/.cove`` is.

``cove-init`` (init.c) is process 1 of every sandbox (and the hybrid-cgroup
wrapper of crun, and the agent's spare process before every command);
``cove-nsexec`` (nsexec.c) makes a sandbox's namespaces and overlay on the host.
Each is compiled into ``<data_dir>/lib/<name>-<sha>`` (of its source and compiler),
so a changed source gives a new file and running sandboxes keep theirs.

cove-init is linked with musl where ``musl-gcc`` is installed (``scripts/install``
installs it), else with glibc. A static glibc program probes the CPU's features
and caches when it starts, with about fifty CPUID instructions; in a virtual
machine each of them traps to the hypervisor. Measured on this VM host (AMD EPYC,
``perf stat -r 300`` of an empty ``main``): 0.28 ms of CPU per start with static
glibc, 0.05 ms with static musl. cove-init starts before every command (as the
spare that becomes it), with every crun call of a hybrid host and with every
sandbox.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host.proc import run
from cove.runner.oci import spec

HERE = Path(__file__).parent
SOURCE = HERE / "init.c"
NSEXEC_SOURCE = HERE / "nsexec.c"
_lock = threading.Lock()


def ensure_init_binary(data_dir: Path) -> Path:
    """The compiled cove-init, with musl where it is installed (see the module's
    docstring and :func:`ensure_binary`)."""
    return ensure_binary(data_dir, SOURCE, "cove-init", musl=True)


def ensure_nsexec_binary(data_dir: Path) -> Path:
    """The compiled cove-nsexec (see :func:`ensure_binary`)."""
    return ensure_binary(data_dir, NSEXEC_SOURCE, "cove-nsexec")


def ensure_cove_dir(data_dir: Path) -> Path:
    """``<data_dir>/lib/cove-dir-<sha>``: empty mount points (``spec.COVE_ENTRIES``),
    root's, which every sandbox binds read-only at ``spec.COVE_DIR``.

    Raises:
        RuntimeBackendError: it cannot be made.
    """
    layout = sorted(spec.COVE_ENTRIES.items())
    digest = hashlib.sha256(repr(layout).encode()).hexdigest()[:16]
    target = data_dir / "lib" / f"cove-dir-{digest}"
    with _lock:
        if target.is_dir():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o755, parents=True)
            for name, is_dir in layout:  # (sorted: a directory before what is in it)
                if is_dir:
                    (tmp / name).mkdir(mode=0o755)
                else:
                    (tmp / name).touch(mode=0o644)
            for entry in (tmp, *tmp.rglob("*")):  # (whatever the umask took away)
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            os.rename(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeBackendError(f"cannot make {target}: {exc}") from exc
    return target


def ensure_binary(data_dir: Path, source: Path, name: str, *, musl: bool = False) -> Path:
    """Compile ``source`` into ``<data_dir>/lib/<name>-<sha>`` unless already there:
    static, with musl-gcc when ``musl`` and it is installed, else with gcc (glibc).

    Returns:
        Path of the executable.

    Raises:
        RuntimeBackendError: the source is missing or the compiler failed.
    """
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot read {source}: {exc}") from exc
    compiler = compiler_for(musl)
    digest = hashlib.sha256(text + b"\0" + compiler.encode()).hexdigest()[:16]
    target = data_dir / "lib" / f"{name}-{digest}"
    with _lock:
        if not target.is_file():
            _compile(compiler, source, target)
    return target


def compiler_for(musl: bool) -> str:
    """``musl-gcc`` when ``musl`` and it is on PATH, else ``gcc``."""
    return "musl-gcc" if musl and shutil.which("musl-gcc") else "gcc"


def _compile(compiler: str, source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        run([compiler, "-static", "-O2", "-Wall", "-o", str(tmp), str(source)], timeout=120)
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot install {target.name}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
