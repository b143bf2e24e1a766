"""Cove's seccomp profile (``runner/oci/seccomp.py``) compiled to a BPF program.

The gVisor tier's toolbox agent installs it in every process it starts
(runsc's own OCI seccomp support returns EPERM for every refusal, which breaks
glibc's ``clone3`` fallback). It is compiled by the host's libseccomp (the
library crun uses for the same profile), through ctypes, the way crun reads an
OCI profile: names libseccomp does not know are skipped, as are rules whose
action is the default one. The program is cached in
``<data_dir>/lib/seccomp-<digest>.bpf``.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import platform
import threading
from pathlib import Path
from typing import Any

from cove.errors import RuntimeBackendError
from cove.runner.oci import seccomp

_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_OPS = {"NE": 1, "LT": 2, "LE": 3, "EQ": 4, "GE": 5, "GT": 6, "MASKED_EQ": 7}
_lock = threading.Lock()


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]  # fmt: skip


def ensure_filter(data_dir: Path, machine: str | None = None) -> Path:
    """The compiled profile for this host's architecture (compiled on first use).

    Raises:
        RuntimeBackendError: libseccomp is missing or refused the profile.
    """
    profile = seccomp.profile(machine or platform.machine())
    digest = hashlib.sha256(json.dumps(profile, sort_keys=True).encode()).hexdigest()[:16]
    target = data_dir / "lib" / f"seccomp-{digest}.bpf"
    with _lock:
        if not target.is_file():
            program = compile_profile(profile)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(program)
                os.rename(tmp, target)
            except OSError as exc:
                raise RuntimeBackendError(f"cannot write {target}: {exc}") from exc
            finally:
                tmp.unlink(missing_ok=True)
    return target


@functools.lru_cache(maxsize=8)
def encoded_filter(data_dir: Path) -> str:
    """:func:`ensure_filter`'s program in base64 (crun's ``run.oci.seccomp_bpf_data``).

    Raises:
        RuntimeBackendError: libseccomp is missing or refused the profile.
    """
    try:
        return base64.b64encode(ensure_filter(data_dir).read_bytes()).decode()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot read the seccomp filter: {exc}") from exc


def compile_profile(profile: dict[str, Any]) -> bytes:
    """The BPF program (``struct sock_filter`` array) of an OCI seccomp profile.

    Raises:
        RuntimeBackendError: libseccomp is missing or refused a rule.
    """
    lib = _libseccomp()
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise RuntimeBackendError("seccomp_init failed")
    try:
        for name in profile.get("architectures", []):
            arch = lib.seccomp_arch_resolve_name(name.removeprefix("SCMP_ARCH_").lower().encode())
            if arch and lib.seccomp_arch_add(ctx, arch) not in (0, -17):  # (-EEXIST: native)
                raise RuntimeBackendError(f"libseccomp refused architecture {name}")
        for rule in profile["syscalls"]:
            _add_rule(lib, ctx, rule, default)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: dict[str, Any], default: int) -> None:
    action = _action(rule["action"], rule.get("errnoRet"))
    if action == default:
        return
    args = rule.get("args") or []
    cmps = (_ArgCmp * max(len(args), 1))(*[
        _ArgCmp(a["index"], _OPS[a["op"].removeprefix("SCMP_CMP_")], a["value"],
                a.get("valueTwo", 0)) for a in args
    ])  # fmt: skip
    for name in rule["names"]:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp
            continue
        code = lib.seccomp_rule_add_array(ctx, action, nr, len(args), cmps)
        if code != 0:
            raise RuntimeBackendError(f"libseccomp refused the rule for {name}: {-code}")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    read_fd, write_fd = os.pipe()
    try:
        code = lib.seccomp_export_bpf(ctx, write_fd)
        os.close(write_fd)
        write_fd = -1
        if code != 0:
            raise RuntimeBackendError(f"seccomp_export_bpf failed: {-code}")
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def _action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return _ACT_ERRNO | ((errno_ret if errno_ret is not None else 1) & 0xFFFF)
    raise RuntimeBackendError(f"unsupported seccomp action {name}")


def _libseccomp() -> ctypes.CDLL:
    path = ctypes.util.find_library("seccomp")
    if path is None:
        raise RuntimeBackendError("libseccomp is not installed (Debian: libseccomp2)")
    lib = ctypes.CDLL(path)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib
