"""cove-init is built with musl where musl-gcc is installed: a static glibc program
probes the CPU's features when it starts (about fifty CPUID instructions, each a
trap to the hypervisor in a VM), and cove-init starts before every command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cove.runner.oci import initbin


def _symbols(binary: Path) -> str:
    return subprocess.run(["nm", str(binary)], capture_output=True, text=True, check=True).stdout


def test_init_is_built_with_musl_where_it_is_installed(tmp_path: Path) -> None:
    if initbin.compiler_for(musl=True) != "musl-gcc":
        pytest.skip("musl-gcc is not installed")
    built = initbin.ensure_init_binary(tmp_path)
    assert "_dl_x86_cpu_features" not in _symbols(built)  # glibc's start-up probe
    done = subprocess.run([str(built), "--exec", "/bin/echo", "hi"], capture_output=True)
    assert (done.returncode, done.stdout) == (0, b"hi\n")


def _no_musl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initbin.shutil, "which", lambda _name: None)


def test_without_musl_gcc_init_is_built_with_gcc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_musl(monkeypatch)
    built = initbin.ensure_init_binary(tmp_path)
    assert "_dl_x86_cpu_features" in _symbols(built)
    done = subprocess.run([str(built), "--exec", "/bin/echo", "hi"], capture_output=True)
    assert (done.returncode, done.stdout) == (0, b"hi\n")


def test_each_compiler_builds_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installing musl-gcc later gives new sandboxes a new file (running ones keep theirs)."""
    if initbin.compiler_for(musl=True) != "musl-gcc":
        pytest.skip("musl-gcc is not installed")
    with_musl = initbin.ensure_init_binary(tmp_path)
    _no_musl(monkeypatch)
    with_glibc = initbin.ensure_init_binary(tmp_path)
    assert with_musl != with_glibc
    assert with_musl.is_file() and with_glibc.is_file()
