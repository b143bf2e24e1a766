"""``git status --porcelain=v2 --branch -z`` as Daytona's GitStatus."""

from __future__ import annotations

from typing import Any

STATES = {".": "Unmodified", "M": "Modified", "T": "Modified", "A": "Added", "D": "Deleted",
          "R": "Renamed", "C": "Copied", "U": "Updated but unmerged", "?": "Untracked"}
# Fields before the path: "1 XY sub mH mI mW hH hI path", "2 ... Xscore path",
# "u XY sub m1 m2 m3 mW h1 h2 h3 path".
PATH_FIELD = {"1": 8, "2": 9, "u": 10}


def parse_status(output: str) -> dict[str, Any]:
    """The repository's branch, upstream, ahead/behind counts and file states."""
    status: dict[str, Any] = {"currentBranch": "", "fileStatus": [], "ahead": 0, "behind": 0,
                              "branchPublished": False, "upstream": "", "detached": False}
    records = iter(output.split("\0"))
    for record in records:
        if record.startswith("# "):
            _header(status, record[2:])
        elif record[:1] in PATH_FIELD:
            fields = record.split(" ", PATH_FIELD[record[0]])
            extra = next(records, "") if record[0] == "2" else ""
            status["fileStatus"].append(_entry(fields[1], fields[-1], extra))
        elif record.startswith("? "):
            status["fileStatus"].append(_entry("??", record[2:], ""))
    return status


def _header(status: dict[str, Any], header: str) -> None:
    key, _, value = header.partition(" ")
    if key == "branch.head":
        status["detached"] = value == "(detached)"
        status["currentBranch"] = "HEAD" if status["detached"] else value
    elif key == "branch.upstream":
        status["upstream"] = value
    elif key == "branch.ab":  # only when the upstream branch exists
        status["branchPublished"] = True
        ahead, behind = value.split()
        status["ahead"], status["behind"] = int(ahead), -int(behind)


def _entry(xy: str, name: str, extra: str) -> dict[str, str]:
    return {"name": name, "staging": STATES.get(xy[0], "Modified"),
            "worktree": STATES.get(xy[1], "Modified"), "extra": extra}
