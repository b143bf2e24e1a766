"""The agent client's git administration: init, reset, restore, remotes, config and
stored credentials (mixed into :class:`cove.core.agent_client.AgentClient`)."""

from __future__ import annotations

from typing import Any

from cove.core.agent_types import field
from cove.schemas.toolbox_git import (
    GitAddRemoteRequest,
    GitAuthenticateRequest,
    GitConfigResponse,
    GitConfigureUserRequest,
    GitInitRequest,
    GitModel,
    GitRemote,
    GitResetRequest,
    GitRestoreRequest,
    GitScope,
    GitSetConfigRequest,
    ListRemotesResponse,
)


class GitAdmin:
    """Git calls beyond the daily loop; the request bodies go to the agent as they are."""

    async def _git(self, op: str, body: GitModel | None = None, /,
                   **fields: object) -> dict[str, Any]:  # fmt: skip
        raise NotImplementedError

    async def git_init(self, body: GitInitRequest) -> None:
        await self._git("git_init", body)

    async def git_reset(self, body: GitResetRequest) -> None:
        await self._git("git_reset", body)

    async def git_restore(self, body: GitRestoreRequest) -> None:
        await self._git("git_restore", body)

    async def git_remotes(self, path: str) -> ListRemotesResponse:
        """The repository's remotes (their fetch URLs)."""
        reply = await self._git("git_remotes", path=path)
        return ListRemotesResponse(remotes=field(reply, "remotes", list[GitRemote]))

    async def git_remote_add(self, body: GitAddRemoteRequest) -> None:
        await self._git("git_remote_add", body)

    async def git_config_get(self, key: str, scope: GitScope | None,
                             path: str | None) -> GitConfigResponse:  # fmt: skip
        """A config value at ``scope`` (global by default); None when it is not set."""
        fields = {"key": key, "scope": scope, "path": path}
        reply = await self._git("git_config_get",
                                **{k: v for k, v in fields.items() if v is not None})
        return GitConfigResponse(value=field(reply, "value", str | None))

    async def git_config_set(self, body: GitSetConfigRequest) -> None:
        await self._git("git_config_set", body)

    async def git_config_user(self, body: GitConfigureUserRequest) -> None:
        await self._git("git_config_user", body)

    async def git_credentials(self, body: GitAuthenticateRequest) -> None:
        """Store credentials in the sandbox user's git credential store."""
        await self._git("git_credentials", body)
