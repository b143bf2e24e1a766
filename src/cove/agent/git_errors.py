"""What a failed git command means, as the ``GIT_*`` codes Daytona's SDK knows.

git runs with ``LC_ALL=C``, so its messages are matched in English. The first
rule whose needle appears in the (lower-cased) output wins; the status matters
only to clients that do not know the code.
"""

from __future__ import annotations

from .protocol import AgentError

# (operations it applies to, or None for any; needles; status; code)
RULES: list[tuple[frozenset[str] | None, tuple[str, ...], int, str]] = [
    (frozenset({"clone"}), ("already exists and is not an empty directory",), 409, "CONFLICT"),
    (frozenset({"branch"}), ("already exists",), 409, "GIT_BRANCH_EXISTS"),
    (frozenset({"add"}), ("did not match any files",), 404, "FILE_NOT_FOUND"),
    (frozenset({"branch"}), ("not a valid branch name",), 400, "BAD_REQUEST"),
    (frozenset({"branch_delete"}), ("cannot delete branch", "used by worktree"), 409, "CONFLICT"),
    (frozenset({"remote_add"}), ("already exists",), 409, "CONFLICT"),
    (frozenset({"restore", "reset"}), ("pathspec",), 404, "FILE_NOT_FOUND"),
    (frozenset({"config", "credentials"}), ("permission denied",), 403, "FORBIDDEN"),
    (None, ("authentication failed", "could not read username", "could not read password",
            "invalid username or password", "terminal prompts disabled",
            "returned error: 401"), 401, "GIT_AUTH_FAILED"),
    (None, ("returned error: 403", "permission to"), 403, "GIT_AUTH_FAILED"),
    (None, ("repository not found", "does not appear to be a git repository",
            "not a git repository", "returned error: 404", "cannot change to",
            "can only be used inside a git repository",
            "no such file or directory"), 404, "GIT_REPO_NOT_FOUND"),
    (None, ("could not resolve host", "failed to connect", "connection refused",
            "connection timed out", "operation timed out", "ssl certificate problem",
            "unable to access", "could not read from remote repository"),
     400, "GIT_TRANSPORT_FAILED"),  # the tenant's remote: not the gateway's failure
    (None, ("would be overwritten", "please commit your changes or stash them",
            "you have unstaged changes", "needs merge", "unmerged files",
            "you have not concluded your merge"), 409, "GIT_DIRTY_WORKTREE"),
    (None, ("conflict (", "automatic merge failed", "not possible to fast-forward",
            "fix conflicts"), 409, "GIT_MERGE_CONFLICT"),
    (None, ("[remote rejected]", "hook declined", "protected branch"),
     422, "GIT_REMOTE_REJECTED"),
    (None, ("[rejected]", "non-fast-forward", "fetch first", "updates were rejected",
            "stale info"), 409, "GIT_PUSH_REJECTED"),
    (None, ("not found in upstream", "did not match any", "invalid reference",
            "couldn't find remote ref", "unknown revision", "not a symbolic ref",
            "not currently on a branch", "not a commit", "reference is not a tree"),
     404, "GIT_BRANCH_NOT_FOUND"),
    (frozenset({"branch_delete"}), ("not found",), 404, "GIT_BRANCH_NOT_FOUND"),
]
TAIL = 4000


def classify(operation: str, output: str) -> AgentError:
    """The error for ``git <operation>`` failing with ``output`` (already redacted)."""
    lowered = output.lower()
    message = f"git {operation} failed: {output.strip()[-TAIL:]}"
    for operations, needles, status, code in RULES:
        if operations is not None and operation not in operations:
            continue
        if any(needle in lowered for needle in needles):
            return AgentError(status, code, message)
    return AgentError(400, "BAD_REQUEST", message)
