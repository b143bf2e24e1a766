"""The OCI config builder, as pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import ContainerSpec, Resources
from cove.runtime import seccomp, spec

INIT = Path("/data/lib/cove-init-abc")
ETC = Path("/data/sandboxes/sb1/disk/etc")


@pytest.fixture
def config(tmp_path: Path) -> dict:
    box = ContainerSpec(
        sandbox_id="sb1",
        hostname="my-box",
        snapshot="cove-default",
        resources=Resources(cpu=2, memory=3, disk=4),
        env={"FOO": "bar", "PATH": "/custom"},
    )
    settings = Settings(data_dir=tmp_path, pids_limit=321)
    return spec.build(box, settings, init_binary=INIT, etc_dir=ETC, nofile_hard=4096,
                      machine="x86_64")  # fmt: skip


def test_namespaces_hostname_and_cgroup(config: dict) -> None:
    types = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert types == {"pid", "network", "ipc", "uts", "mount", "cgroup"}
    assert all("path" not in ns for ns in config["linux"]["namespaces"])
    assert "user" not in types
    assert config["hostname"] == "my-box"
    assert config["linux"]["cgroupsPath"] == "/cove/sb1"
    assert config["root"] == {"path": "rootfs", "readonly": False}


def test_resources(config: dict) -> None:
    res = config["linux"]["resources"]
    assert res["cpu"] == {"quota": 200_000, "period": 100_000}
    assert res["memory"] == {"limit": 3 << 30, "swap": 3 << 30}
    assert res["pids"] == {"limit": 321}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]


def test_process_hardening(config: dict) -> None:
    proc = config["process"]
    assert proc["args"] == ["/dev/.cove/init"]
    assert proc["user"] == {"uid": 0, "gid": 0}
    assert proc["noNewPrivileges"] is True
    assert proc["oomScoreAdj"] > 0
    caps = proc["capabilities"]
    assert set(caps["bounding"]) == set(spec.CAPABILITIES)
    assert len(spec.CAPABILITIES) == 14
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    assert caps["ambient"] == [] and caps["inheritable"] == []
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 4096}]


def test_env_defaults_and_overrides(config: dict) -> None:
    env = dict(item.split("=", 1) for item in config["process"]["env"])
    assert env["FOO"] == "bar"
    assert env["PATH"] == "/custom"
    assert env["HOSTNAME"] == "my-box"
    assert env["HOME"] == "/root"


def test_mounts(config: dict) -> None:
    by_dest = {m["destination"]: m for m in config["mounts"]}
    assert "ro" in by_dest["/sys"]["options"]
    init = by_dest["/dev/.cove/init"]
    assert init["source"] == str(INIT) and "ro" in init["options"]
    assert by_dest["/etc/hostname"]["source"] == str(ETC / "hostname")
    assert by_dest["/etc/hosts"]["source"] == str(ETC / "hosts")
    assert by_dest["/dev"]["type"] == "tmpfs"
    assert set(config["linux"]["maskedPaths"]) >= {"/proc/kcore", "/proc/keys", "/sys/firmware"}
    assert set(config["linux"]["readonlyPaths"]) >= {"/proc/sys", "/proc/sysrq-trigger"}


def test_seccomp_profile(config: dict) -> None:
    # The profile itself is tested in test_seccomp.py.
    assert config["linux"]["seccomp"] == seccomp.profile("x86_64")


def test_exec_process() -> None:
    env = spec.exec_env({"A": "1", "HOME": "/override"}, "h", "daytona", "/home/daytona",
                        {"B": "2"})  # fmt: skip
    assert env["HOME"] == "/override" and env["USER"] == "daytona" and env["B"] == "2"
    proc = spec.exec_process(["ls", "-l"], uid=1000, gid=1000, groups=[27], env=env,
                             cwd="/tmp", nofile_hard=100)  # fmt: skip
    assert proc["args"] == ["ls", "-l"]
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [27]}
    assert proc["cwd"] == "/tmp"
    assert proc["noNewPrivileges"] is True


def test_resources_are_pure(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    a = spec.resources(1, 1, settings)
    assert a == spec.resources(1, 1, settings)
    assert a["pids"]["limit"] == settings.pids_limit


def test_service_and_read_only_binds(tmp_path: Path) -> None:
    box = ContainerSpec(sandbox_id="sb2", hostname="h", snapshot="s", resources=Resources(1, 1, 1))
    config = spec.build(
        box, Settings(data_dir=tmp_path), init_binary=INIT, etc_dir=ETC, nofile_hard=64,
        service=["/dev/.cove/py/bin/python3", "-m", "agent"],
        ro_binds={"/dev/.cove/py": Path("/data/lib/pyrt")}, machine="x86_64",
    )  # fmt: skip
    assert config["process"]["args"] == [
        "/dev/.cove/init", "--", "/dev/.cove/py/bin/python3", "-m", "agent",
    ]  # fmt: skip
    py = next(m for m in config["mounts"] if m["destination"] == "/dev/.cove/py")
    assert py["source"] == "/data/lib/pyrt"
    assert {"bind", "ro", "nosuid", "nodev"} <= set(py["options"])


def test_no_service_means_bare_init(config: dict) -> None:
    assert config["process"]["args"] == ["/dev/.cove/init"]
