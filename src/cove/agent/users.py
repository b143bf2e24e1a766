"""Who user processes run as, and the environment they get."""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from . import confine, protocol

_AGENT_ONLY = ("PYTHONHOME", "PYTHONPATH", "LD_LIBRARY_PATH", "COVE_AGENT", "COVE_WORKDIR")
_HELD = "COVE_HELD_"
T = TypeVar("T")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The environment the sandbox's init was given (the sandbox's env vars and
# defaults), minus anything of the agent's own. Init hands the agent the variables
# the dynamic loader acts on (LD_PRELOAD...) renamed, so that they reach the user's
# processes but never load into the agent.
BASE_ENV: dict[str, str] = {}
DEFAULT_USER = "daytona"
# The image's WorkingDir (sandboxes made from an image): where processes start.
IMAGE_WORKDIR: str | None = None


def capture_environment() -> None:
    """Read the above from the agent's environment: when this module loads, and again
    in a pre-started agent once it has the sandbox's (see prestart.py)."""
    global DEFAULT_USER, IMAGE_WORKDIR
    env = os.environ
    BASE_ENV.clear()
    BASE_ENV.update({k: v for k, v in env.items()
                     if k not in _AGENT_ONLY and not k.startswith(_HELD)})  # fmt: skip
    BASE_ENV.update({k[len(_HELD):]: v for k, v in env.items() if k.startswith(_HELD)})
    BASE_ENV.setdefault("PATH", DEFAULT_PATH)
    DEFAULT_USER = env.get("COVE_SANDBOX_USER", "daytona")
    IMAGE_WORKDIR = env.get("COVE_WORKDIR")


capture_environment()


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    # The groups as ``lookup`` found them with the entry (None: looked up when asked).
    known_groups: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    def groups(self) -> list[int]:
        if self.known_groups is not None:
            return list(self.known_groups)
        return list(_group_list(self.name, self.gid))


def _group_list(name: str, gid: int) -> tuple[int, ...]:
    try:
        return tuple(os.getgrouplist(name, gid))
    except OSError:
        return (gid,)


def lookup(name: str | None) -> User:
    """The sandbox user called ``name`` (default: the sandbox's user).

    Raises:
        AgentError: no such user in the sandbox's /etc/passwd.
    """
    name = name or DEFAULT_USER
    try:
        entry, groups = _cached(name, lambda: _entry_and_groups(name))
    except (KeyError, ValueError) as exc:
        if name in ("root", "0"):  # root exists even when the image broke /etc/passwd
            return User("root", 0, 0, "/root" if os.path.isdir("/root") else "/", "/bin/sh")
        raise protocol.bad_request(f"no user '{name}' in the sandbox") from exc
    shell = entry.pw_shell if os.path.exists(entry.pw_shell or "") else "/bin/sh"
    home = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, home, shell, groups)


def _entry_and_groups(name: str) -> tuple[pwd.struct_passwd, tuple[int, ...]]:
    """The user's entry and groups: what a command needs of both databases, read
    together so that one check of the files (``_cached``) covers both."""
    entry = _passwd_entry(name)
    return entry, _group_list(entry.pw_name, entry.pw_gid)


def _passwd_entry(name: str) -> pwd.struct_passwd:
    return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)


# The user and group databases' answers, kept while neither file changed: a command
# then spawns without reading and parsing them again (see ``_cached``).
_DATABASES = ("/etc/passwd", "/etc/group")
_RACY_NS = 2_000_000_000
_answers: dict[str, tuple[tuple[object, ...], Any]] = {}
_ANSWERS_MAX = 256


def _cached(key: str, compute: Callable[[], T]) -> T:
    """``compute()``, or its answer from before if /etc/passwd and /etc/group are the
    files they were then. A file is the same while its device, inode, size, ctime and
    mtime are (every write or replacement sets the ctime, which no process can choose).
    A file changed less than two seconds ago is read every time, as git treats a
    racily clean index: a second write within the clock's tick keeps the ctime.
    A lookup that fails (KeyError) is never kept."""
    state, racy = _databases()
    kept = _answers.get(key)
    if kept is not None and kept[0] == state and not racy:
        return cast(T, kept[1])
    answer = compute()
    if not racy:
        if len(_answers) >= _ANSWERS_MAX:
            _answers.clear()
        _answers[key] = (state, answer)
    return answer


def _databases() -> tuple[tuple[object, ...], bool]:
    """Each database file's identity (None when missing), and whether one changed
    too recently to tell a later change apart."""
    state: list[object] = []
    newest = 0
    for path in _DATABASES:
        try:
            st = os.stat(path)
        except OSError:
            state.append(None)
            continue
        state.append((st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns, st.st_mtime_ns))
        newest = max(newest, st.st_ctime_ns, st.st_mtime_ns)
    return tuple(state), time.time_ns() - newest < _RACY_NS


def work_dir(user: User) -> str:
    """Where ``user``'s processes start by default: the image's WorkingDir when the
    sandbox was made from an image that has one (and it exists), else the home."""
    if IMAGE_WORKDIR and os.path.isdir(IMAGE_WORKDIR):
        return IMAGE_WORKDIR
    return user.home


def facts(user: User) -> list[str] | None:
    """What :func:`lookup` and :func:`work_dir` found of the sandbox's files for
    ``user``, as checks a relay repeats before each command (see init.c): ``d:PATH``
    is a directory, ``D:PATH`` is not one, ``e:PATH`` exists, ``E:PATH`` does not.
    None: the user is not one of /etc/passwd (root's stand-in)."""
    try:
        entry, _groups = _cached(user.name, lambda: _entry_and_groups(user.name))
    except (KeyError, ValueError):
        return None
    shell = entry.pw_shell or ""
    checks = ["d:" + entry.pw_dir if user.home == entry.pw_dir else "D:" + entry.pw_dir]
    if shell:
        checks.append(("e:" if user.shell == shell else "E:") + shell)
    if IMAGE_WORKDIR:
        checks.append(("d:" if os.path.isdir(IMAGE_WORKDIR) else "D:") + IMAGE_WORKDIR)
    return checks


def databases() -> list[str] | None:
    """/etc/passwd's and /etc/group's identities as a relay compares them (see init.c:
    "dev:ino:size:ctime_ns:mtime_ns", "-" for a missing file); None when one changed
    too recently to tell a later change apart (see ``_cached``)."""
    state, racy = _databases()
    if racy:
        return None
    return ["-" if s is None else ":".join(map(str, s)) for s in state]  # type: ignore[call-overload]


def forget_env(names: list[str], value_prefix: str | None, keep: list[str]) -> None:
    """Drop ``names`` from the environment every process starts from (and, with
    ``value_prefix``, the variables whose value starts with it but those in ``keep``):
    ``POST /env``'s ``unset``, for as long as this agent runs (as Daytona's daemon
    forgets them until the sandbox restarts)."""
    for name in names:
        BASE_ENV.pop(name, None)
    if value_prefix:
        for name, value in list(BASE_ENV.items()):
            if name not in keep and value.startswith(value_prefix):
                del BASE_ENV[name]


def environment(user: User, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a process of ``user`` sees: the sandbox env (a user but root gets
    ``~/.local/bin`` first on PATH, as Debian's ~/.profile does), the user's identity,
    ``extra``."""
    env = dict(BASE_ENV)
    env.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL=user.shell)
    if user.uid != 0 and user.home != "/":  # where `pip install` puts a user's commands
        env["PATH"] = f"{user.home}/.local/bin:{env.get('PATH', DEFAULT_PATH)}"
    env.update(extra or {})
    return env


def privileged() -> bool:
    """Whether the agent may act for other users (root, or the confined agent with
    its capabilities in the sandbox's user namespace)."""
    return os.geteuid() == 0 or confine.confined()


def owned_pipe(user: User) -> tuple[int, int]:
    """A pipe (read, write) that belongs to ``user``, so the user's process can
    reopen it as ``/dev/stdout`` or ``/dev/stderr``."""
    read_end, write_end = os.pipe()
    if privileged():
        os.fchown(read_end, user.uid, user.gid)
    return read_end, write_end


def start_dir(user: User, cwd: str | None) -> str:
    """Where a process of ``user`` starts: ``cwd``, else its default (see
    :func:`work_dir`).

    Raises:
        AgentError: that directory does not exist.
    """
    workdir = cwd or work_dir(user)
    if not os.path.isdir(workdir):
        raise protocol.bad_request(f"working directory {workdir} does not exist")
    return workdir


def spawn_kwargs(
    user: User, cwd: str | None, extra_env: dict[str, str] | None,
    group: confine.Group | None = None, then: Callable[[], None] | None = None,
) -> dict:  # fmt: skip
    """Keyword arguments for subprocess/asyncio spawns running as ``user``.

    Confined, the process enters the workload's user namespace and the cgroup
    ``group`` (see ``confine``); ``then`` runs in the child after that, before exec.
    """
    kwargs: dict = {"cwd": start_dir(user, cwd), "env": environment(user, extra_env),
                    "close_fds": True, "start_new_session": True}
    if confine.confined():
        enter = confine.preexec(user.uid, user.gid, user.groups(), group)
        kwargs["preexec_fn"] = enter if then is None else lambda: (enter(), then())
    else:
        if os.geteuid() == 0 and user.uid != 0:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=user.groups())
        if then is not None:
            kwargs["preexec_fn"] = then
    return kwargs
