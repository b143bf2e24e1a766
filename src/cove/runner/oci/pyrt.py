"""A self-contained Python runtime for the toolbox agent inside sandboxes.

The agent must not depend on the image's Python (or on the image having one),
so Cove packs the host's own interpreter with the shared libraries it needs,
its own dynamic loader and the standard library compiled (sourceless ``.pyc``
files in a directory: they load faster than from a zip). Mounted read-only at
``/dev/.cove/py`` and started through its loader, it runs in any image with
the same CPU architecture. Built once per interpreter and Cove version.

The agent's package is mounted as a compiled copy too (``compiled_package``):
a sandbox's start never compiles Python.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cove.errors import RuntimeBackendError

# Extension modules never needed by the agent (tests, GUI, audio).
SKIP_EXTENSIONS = ("_test", "xx", "_ctypes_test", "_tkinter", "audioop", "ossaudiodev", "_curses",
                   "readline", "_dbm", "_gdbm", "nis")
SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
             "distutils", "site-packages", "dist-packages", "__pycache__", "lib-dynload",
             "pydoc_data", "venv"}
VERSION = "2"
MOUNT = "/dev/.cove/py"


def _interpreter() -> Path:
    """The interpreter the runtime is built from: the distribution's own if there is
    one (Debian's python3 has few shared-library dependencies), else this one."""
    for candidate in (Path("/usr/bin/python3"), Path(sys.base_prefix) / "bin" / "python3",
                      Path(sys.executable)):
        if candidate.exists():
            return candidate.resolve()
    raise RuntimeBackendError("cannot find a Python interpreter to pack for the agent")


_PATHS = ("import sys, sysconfig; print(sysconfig.get_paths()['stdlib']); "
          "print(sysconfig.get_config_var('DESTSHARED')); print('%d.%d' % sys.version_info[:2])")


# The agent speaks no TLS: asyncio's optional import of ssl (OpenSSL's start-up,
# about 1.2 MiB per agent and 5 ms at every start) is refused. The cyclic garbage
# collector waits until the agent's modules are loaded (``agent.main``): imports make
# few cycles, and its passes over them are a few ms of every start.
_START = ("import gc; gc.disable(); import sys; sys.modules['ssl'] = None; "
          "sys.path.insert(0, '/dev/.cove/pkg'); import toolbox.agent as a; a.run()")


def argv() -> list[str]:
    """How the sandbox's init starts the agent (paths as the sandbox sees them)."""
    return [f"{MOUNT}/lib/ld.so", "--library-path", f"{MOUNT}/lib", f"{MOUNT}/bin/python3",
            "-I", "-S", "-B", "-c", _START]


def ensure_python_runtime(data_dir: Path) -> Path:
    """The packed runtime's directory, built if missing."""
    python = _interpreter()
    key = hashlib.sha256(f"{python}:{python.stat().st_size}:{VERSION}".encode()).hexdigest()
    target = data_dir / "lib" / f"pyrt-{key[:16]}"
    if (target / "bin" / "python3").exists():
        os.chmod(target, 0o755)  # the agent (an unprivileged host uid) traverses it
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".pyrt-", dir=target.parent))
    try:
        _build(python, scratch)
        os.chmod(scratch, 0o755)
        try:
            os.rename(scratch, target)
        except OSError:  # built concurrently by another process
            if not (target / "bin" / "python3").exists():
                raise
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeBackendError(f"cannot pack the agent's Python runtime: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _build(python: Path, root: Path) -> None:
    out = subprocess.run([str(python), "-I", "-c", _PATHS], capture_output=True, text=True,
                         check=True).stdout.split()
    stdlib, dynload, version = Path(out[0]), Path(out[1]), out[2]
    (root / "bin").mkdir()
    libdir = root / "lib"
    (libdir / f"python{version}" / "lib-dynload").mkdir(parents=True)
    shutil.copy2(python, root / "bin" / "python3")
    modules = [m for m in dynload.glob("*.so") if not m.name.startswith(SKIP_EXTENSIONS)]
    for module in modules:
        shutil.copy2(module, libdir / f"python{version}" / "lib-dynload" / module.name)
    for lib, path in _shared_libs([python, *modules]).items():
        shutil.copy2(path, libdir / ("ld.so" if lib.startswith("ld-linux") else lib))
    _compile_stdlib(python, stdlib, libdir / f"python{version}")


def _shared_libs(binaries: list[Path]) -> dict[str, Path]:
    """name -> path of every shared library the binaries load, and the loader."""
    out = subprocess.run(["ldd", *map(str, binaries)], capture_output=True, text=True,
                         check=True).stdout
    libs: dict[str, Path] = {}
    for line in out.splitlines():
        match = re.search(r"(\S+) => (/\S+)", line) or re.search(r"^\s*(/\S*ld-linux\S*)", line)
        if match is None:
            continue
        path = Path(match.group(match.lastindex or 1)).resolve()
        name = Path(match.group(1)).name
        libs[name] = path
    return libs


_COMPILE_SCRIPT = """
import io, sys, zipfile
from pathlib import Path
stdlib, target, skip = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3].split(","))
keep = lambda p: not any(part in skip for part in Path(p).parts[-3:-1])
packed = io.BytesIO()
with zipfile.PyZipFile(packed, "w", optimize=1) as zf:
    for path in sorted(stdlib.iterdir()):
        if path.name in skip or path.name.startswith("."):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            zf.writepy(str(path), filterfunc=keep)
        elif path.suffix == ".py":
            zf.writepy(str(path))
    zf.extractall(target)
"""


def _compile_stdlib(python: Path, stdlib: Path, target: Path) -> None:
    """The pure-Python standard library, compiled by ``python`` itself, as sourceless
    ``.pyc`` files in ``target``."""
    subprocess.run([str(python), "-I", "-c", _COMPILE_SCRIPT, str(stdlib), str(target),
                    ",".join(sorted(SKIP_DIRS))], check=True, capture_output=True)


def compiled_package(data_dir: Path, source: Path, runtime_dir: Path) -> Path:
    """A copy of the package at ``source`` with its modules compiled by the runtime's
    interpreter (in ``__pycache__``), made once per content of the package.

    Raises:
        RuntimeBackendError: it cannot be made.
    """
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256(runtime_dir.name.encode())
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    target = data_dir / "lib" / f"agent-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    scratch = Path(tempfile.mkdtemp(prefix=".agent-", dir=target.parent))
    try:
        shutil.copytree(source, scratch / source.name,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        lib = runtime_dir / "lib"
        subprocess.run([str(lib / "ld.so"), "--library-path", str(lib),
                        str(runtime_dir / "bin" / "python3"), "-I", "-S", "-m", "compileall",
                        "-q", str(scratch / source.name)], check=True, capture_output=True)
        _open_to_all(scratch)
        try:
            os.rename(scratch, target)
        except OSError:  # made concurrently by another process
            if not target.is_dir():
                raise
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeBackendError(f"cannot compile the agent package: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _open_to_all(root: Path) -> None:
    """Directories 0755, files 0644 (the agent runs as an unprivileged host uid)."""
    os.chmod(root, 0o755)
    for top, dirs, names in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(top, name), 0o755)
        for name in names:
            os.chmod(os.path.join(top, name), 0o644)
