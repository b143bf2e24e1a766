"""The OCI config builder, as pure functions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import ContainerSpec, Resources
from cove.runner.oci import agent_setup, gvisor, initbin, pyrt, seccomp, spec

INIT = Path("/data/lib/cove-init-abc")
COVE_DIR = Path("/data/lib/cove-dir-abc")
ETC = Path("/data/sandboxes/sb1/mnt/disk/etc")
USERNS = Path("/data/sandboxes/sb1/ns/user")
PARTS = spec.HostParts(init_binary=INIT, cove_dir=COVE_DIR, etc_dir=ETC, userns=USERNS,
                       agent_uid=65536, group="cove/sb1")


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
    return spec.build(box, settings, PARTS, nofile_hard=4096, machine="x86_64")


def test_namespaces_hostname_and_cgroup(config: dict) -> None:
    types = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert types == {"user", "pid", "network", "ipc", "uts", "mount", "cgroup"}
    joined = {ns["type"]: ns["path"] for ns in config["linux"]["namespaces"] if "path" in ns}
    assert joined == {"user": str(USERNS)}  # no network: a new one with loopback only
    assert config["hostname"] == "my-box"
    assert config["linux"]["cgroupsPath"] == "/cove/sb1/work"
    assert config["root"] == {"path": "rootfs", "readonly": False}


def test_resources(config: dict) -> None:
    res = config["linux"]["resources"]
    assert res["cpu"] == {"quota": 200_000, "period": 100_000}
    assert res["memory"] == {"limit": 3 << 30, "swap": 3 << 30}
    assert res["pids"] == {"limit": 321}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]


def test_process_hardening(config: dict) -> None:
    proc = config["process"]
    assert proc["args"] == ["/dev/.cove/init", "--go-fd", "3"]
    assert proc["user"] == {"uid": 65536, "gid": 65536}  # the agent uid, not root
    assert proc["noNewPrivileges"] is True
    assert proc["oomScoreAdj"] > 0
    caps = proc["capabilities"]
    assert set(caps["bounding"]) == set(spec.AGENT_CAPABILITIES) == set(caps["ambient"])
    for dangerous in ("CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_SYS_PTRACE",
                      "CAP_MKNOD", "CAP_SYS_MODULE"):  # fmt: skip
        assert dangerous not in caps["bounding"]
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 4096}]


def test_workload_capabilities_drop_what_docker_would_keep() -> None:
    kept = set(spec.WORKLOAD_CAPABILITIES)
    assert not kept & {"CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE", "CAP_SYS_ADMIN"}
    assert kept <= set(spec.CAPABILITY_NUMBERS)


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
    assert set(config["linux"]["maskedPaths"]) >= {"/proc/kcore", "/proc/keys", "/sys/firmware",
                                                   "/sys/devices/virtual/block", "/sys/block"}
    assert "max=1024" in by_dest["/dev/pts"]["options"]
    assert set(config["linux"]["readonlyPaths"]) >= {"/proc/sys", "/proc/sysrq-trigger"}


def test_seccomp_profile(config: dict) -> None:
    # The profile itself is tested in test_seccomp.py.
    assert config["linux"]["seccomp"] == seccomp.profile("x86_64")


def test_resources_are_pure(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    a = spec.resources(1, 1, settings)
    assert a == spec.resources(1, 1, settings)
    assert a["pids"]["limit"] == settings.pids_limit


def test_service_and_read_only_binds(tmp_path: Path) -> None:
    box = ContainerSpec(sandbox_id="sb2", hostname="h", snapshot="s", resources=Resources(1, 1, 1))
    parts = spec.HostParts(
        init_binary=INIT, cove_dir=COVE_DIR, etc_dir=ETC, userns=USERNS, agent_uid=65536,
        group="cove/sb2",
        netns=Path("/data/sandboxes/sb2/netns"), resolv=True,
        service=["/dev/.cove/py/bin/python3", "-m", "agent"],
        ro_binds={"/dev/.cove/py": Path("/data/lib/pyrt")},
        binds=[("/data", Path("/data/sandboxes/sb2/mnt/vol-0"))],
    )  # fmt: skip
    config = spec.build(box, Settings(data_dir=tmp_path), parts, nofile_hard=64, machine="x86_64")
    assert config["process"]["args"] == [
        "/dev/.cove/init", "--go-fd", "3", "--", "/dev/.cove/py/bin/python3", "-m", "agent",
    ]  # fmt: skip
    joined = {ns["type"]: ns.get("path") for ns in config["linux"]["namespaces"]}
    assert joined["network"] == "/data/sandboxes/sb2/netns"
    vol = next(m for m in config["mounts"] if m["destination"] == "/data")
    assert vol["source"] == "/data/sandboxes/sb2/mnt/vol-0"
    assert {"bind", "rw", "nosuid", "nodev"} <= set(vol["options"])
    resolv = next(m for m in config["mounts"] if m["destination"] == "/etc/resolv.conf")
    assert resolv["source"] == str(ETC / "resolv.conf")
    py = next(m for m in config["mounts"] if m["destination"] == "/dev/.cove/py")
    assert py["source"] == "/data/lib/pyrt"
    assert {"bind", "ro", "nosuid", "nodev"} <= set(py["options"])


def test_no_service_means_bare_init(config: dict) -> None:
    assert config["process"]["args"] == ["/dev/.cove/init", "--go-fd", "3"]


def test_a_prestarted_agent_gets_inits_environment_with_loader_variables_held() -> None:
    env = spec.held_env(["PATH=/bin", "LD_PRELOAD=/x.so", "MALLOC_ARENA_MAX=2", "TMPDIR=/t",
                         "A=b=c", "LANG=C.UTF-8"])  # fmt: skip
    assert env == {"PATH": "/bin", "COVE_HELD_LD_PRELOAD": "/x.so",
                   "COVE_HELD_MALLOC_ARENA_MAX": "2", "COVE_HELD_TMPDIR": "/t", "A": "b=c",
                   "LANG": "C.UTF-8"}  # fmt: skip


def test_the_held_variables_are_inits() -> None:
    """init.c holds the same variables for the agent it starts (one list in each)."""
    source = (Path(spec.__file__).parent / "init.c").read_text()
    array = source[source.index("loader_vars[] = {"):].split("};")[0]
    names = [part.split('"')[1] for part in array.split(",") if '"' in part]
    assert tuple(names) == spec.LOADER_VARS


def test_cove_dir_is_a_read_only_bind_under_everything_bound_in_it(config: dict) -> None:
    """What the host binds in /dev/.cove lands on the mount points of a read-only
    host directory, mounted first: no entry of it is the sandbox's to rename or add."""
    destinations = [m["destination"] for m in config["mounts"]]
    first = destinations.index(spec.COVE_DIR)
    cove = config["mounts"][first]
    assert cove["source"] == str(COVE_DIR)
    assert {"bind", "ro", "nosuid", "nodev"} <= set(cove["options"])
    inside = [d for d in destinations if d.startswith(spec.COVE_DIR + "/")]
    assert inside and all(destinations.index(d) > first for d in inside)
    bound = {spec.INIT_PATH: False, pyrt.MOUNT: True, agent_setup.PKG_MOUNT: True,
             gvisor.CHAN_MOUNT: True, gvisor.SECCOMP_MOUNT: False}  # fmt: skip
    assert {d.removeprefix(spec.COVE_DIR + "/"): is_dir for d, is_dir in bound.items()
            } == {k: v for k, v in spec.COVE_ENTRIES.items() if k != "pkg"}  # fmt: skip


def test_cove_dir_holds_the_mount_points_only(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        made = initbin.ensure_cove_dir(tmp_path)
    finally:
        os.umask(old)
    assert initbin.ensure_cove_dir(tmp_path) == made
    found = {str(p.relative_to(made)): p for p in made.rglob("*")}
    assert {name: p.is_dir() for name, p in found.items()} == spec.COVE_ENTRIES
    for p in (made, *found.values()):
        assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644)
        assert p.stat().st_size == 0 or p.is_dir()
    assert [p.name for p in made.parent.iterdir()] == [made.name]  # (no leftover)
