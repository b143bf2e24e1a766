"""The server's typed client of one sandbox's toolbox agent.

One method per agent operation, taking and returning typed values (see
``agent_types``); only this module and ``agent_streams`` speak the agent's
protocol (``cove.agent.protocol``): callers never build a request or look at
a frame. Every reply is validated here; what the agent says is untrusted, so a
reply of the wrong shape fails inside the request, where ``agent_call``
translates it (once, with ``agent_failure``) into a 502.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from cove.agent import protocol
from cove.core import relay
from cove.core.agent_call import AgentCall, decode
from cove.core.agent_git import GitAdmin
from cove.core.agent_streams import (
    PipeRun,
    PtyAttachment,
    Upload,
    attach_pty,
    collect_logs,
    follow_output,
    interpreter_events,
    read_events,
    run_on_pipes,
)
from cove.core.agent_types import (
    AgentInfo,
    ChartData,
    ExecResult,
    Exited,
    FileEvent,
    InterpreterEvent,
    Omitted,
    Output,
    ProcessEvent,
    SessionExecResult,
    field,
    parse,
)
from cove.core.charts import CHART_LIMIT, ChartCollector
from cove.core.output import DEFAULT_LIMIT, CappedOutput
from cove.errors import ToolboxError
from cove.schemas.base import WireModel
from cove.schemas.toolbox_a11y import AccessibilityNodesResponse, AccessibilityTreeResponse
from cove.schemas.toolbox_computeruse import (
    ComputerUseStartResponse,
    ComputerUseStatusResponse,
    DisplayInfoResponse,
    Position,
    ScreenshotResponse,
    WindowsResponse,
)
from cove.schemas.toolbox_files import FileInfo, Match, ReplaceResult
from cove.schemas.toolbox_git import (
    GitAddRequest,
    GitBranchRequest,
    GitCheckoutRequest,
    GitCloneRequest,
    GitCommitRequest,
    GitModel,
    GitPullRequest,
    GitPushRequest,
    GitStatus,
    ListBranchResponse,
)
from cove.schemas.toolbox_interpreter import InterpreterContextPublic, InterpreterContextsPublic
from cove.schemas.toolbox_lsp import (
    CompletionList,
    LspCompletionParams,
    LspDocumentRequest,
    LspServerRequest,
    LspSymbol,
)
from cove.schemas.toolbox_recordings import ListRecordingsResponse, Recording
from cove.schemas.toolbox_sessions import (
    CommandLogs,
    CommandPublic,
    PtyCreate,
    PtyList,
    PtySessionInfo,
    SessionPublic,
)

Message = dict[str, Any]
M = TypeVar("M", bound=WireModel)
# The session that runs a sandbox's entrypoint (see ``cove.core.entrypoint``): callers of
# the API cannot create it.
ENTRYPOINT_SESSION = "entrypoint"
# Opens a request to the agent; failures inside it come out as ToolboxError.
Opener = Callable[[Message], AbstractAsyncContextManager[AgentCall]]


class Relays(Protocol):
    """A sandbox's relays (see ``cove.core.relay`` and ``AgentLinks``)."""

    def run(self, user: str | None, order: bytes, limit: int | None,
            ) -> Awaitable[AsyncGenerator[ProcessEvent, None] | None]:  # fmt: skip
        """A command (``relay.order``) run by the relay in waiting: its events, or None
        (none was ready or it did not take the command: then the agent runs it);
        failures come out as ToolboxError."""

    def prepare(self, user: str | None) -> None:
        """Have a relay made for ``user``'s next command (after one the agent ran)."""


class AgentClient(GitAdmin):
    """One sandbox's agent, spoken to as ``user`` with the sandbox's environment ``env``."""

    def __init__(self, open_call: Opener, user: str | None, env: dict[str, str],
                 output_limit: int = DEFAULT_LIMIT, relays: Relays | None = None,
                 ) -> None:  # fmt: skip
        self._open = open_call
        self._relays = relays
        self.user = user
        self.env = dict(env)
        self.output_limit = output_limit

    async def _reply(self, message: Message, kind: Any = None) -> Any:
        """The final reply to ``message`` (checked to be a ``kind``, if given)."""
        async with self._open(message) as call:
            reply = await call.reply()
            return reply if kind is None else parse(kind, reply)

    async def ping(self, *, spare: bool = False) -> None:
        """Ask the agent for nothing (starting it again if it exited idle); with
        ``spare``, to have a spare process ready for the first command."""
        await self._reply({"op": "ping", "spare": spare})

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    # -- processes

    def exec_stream(self, command: str, cwd: str | None = None,
                          env: dict[str, str] | None = None, timeout: float | None = None,
                          limit: int | None = None) -> AsyncGenerator[ProcessEvent, None]:
        """Run a shell command: its output as it comes (both streams as stdout), then Exited.
        With ``limit``, the agent sends at most that many bytes of output: the first half
        as it comes, then Omitted, then the newest half."""
        message = {"op": "exec", "command": command, "cwd": cwd, "env": self._env(env),
                   "timeout": timeout, "user": self.user, "limit": limit}  # fmt: skip
        return self._process(message)

    async def exec(self, command: str, cwd: str | None = None, env: dict[str, str] | None = None,
                   timeout: float | None = None) -> ExecResult:
        """Run a shell command and wait for it; its output clipped to ``output_limit``.
        A relay runs it when one is ready (see ``cove.core.relay``), else the agent."""
        if self._relays is not None:
            order = relay.order(command, cwd, self._env(env), timeout, self.output_limit)
            if order is not None:
                events = await self._relays.run(self.user, order, self.output_limit)
                if events is not None:
                    return await _collect(events, self.output_limit)
                try:
                    return await self._exec(command, cwd, env, timeout)
                finally:  # (its making would have shared the CPUs with this command)
                    self._relays.prepare(self.user)
        return await self._exec(command, cwd, env, timeout)

    async def _exec(self, command: str, cwd: str | None, env: dict[str, str] | None,
                    timeout: float | None) -> ExecResult:  # fmt: skip
        events = self.exec_stream(command, cwd, env, timeout, self.output_limit)
        return await _collect(events, self.output_limit)

    async def code_run(self, code: str, language: str, argv: list[str] | None = None,
                       env: dict[str, str] | None = None,
                       timeout: float | None = None) -> ExecResult:
        """Run a snippet with the interpreter of ``language`` and wait for it; the
        charts it showed come apart from its output (see ``cove.core.charts``)."""
        message = {"op": "code_run", "code": code, "language": language, "argv": argv or [],
                   "env": self._env(env), "timeout": timeout, "user": self.user,
                   "limit": self.output_limit, "charts": CHART_LIMIT}  # fmt: skip
        return await _collect(self._process(message), self.output_limit, ChartCollector())

    async def _process(self, message: Message) -> AsyncGenerator[ProcessEvent, None]:
        clipped = message.get("limit") is not None
        async with self._open(message) as call:
            async for kind, payload in call.frames():
                if kind in (protocol.STDOUT, protocol.STDERR):
                    yield Output("stdout" if kind == protocol.STDOUT else "stderr", payload)
                elif kind == protocol.JSON and clipped:
                    yield Omitted(field(decode(payload), "omitted", int))
                elif kind == protocol.CHART and "charts" in message:
                    yield ChartData(payload)
            code = field(call.result, "exitCode", int)
        yield Exited(code)

    async def info(self) -> AgentInfo:
        """The sandbox user's home and environment, the agent's version."""
        return await self._reply({"op": "info", "user": self.user, "env": self.env}, AgentInfo)

    async def forget_env(self, names: list[str], value_prefix: str | None,
                         keep: list[str]) -> None:  # fmt: skip
        """Drop variables from the environment the agent's processes start from."""
        await self._reply({"op": "env_forget", "names": names, "valuePrefix": value_prefix,
                           "keep": keep})  # fmt: skip

    # -- files

    def _fs(self, op: str, **fields: object) -> Message:
        return {"op": op, "user": self.user, **fields}

    async def file_info(self, path: str) -> FileInfo:
        """Facts about one file or directory."""
        async with self._open(self._fs("fs_info", path=path)) as call:
            return field(await call.reply(), "file", FileInfo)

    def list_files(self, path: str,
                   depth: int | None = None) -> AsyncGenerator[list[FileInfo], None]:
        """A directory's entries, in batches as the agent finds them."""
        return self._items(self._fs("fs_list", path=path, depth=depth), FileInfo)

    def find_in_files(self, path: str, pattern: str) -> AsyncGenerator[list[Match], None]:
        """Lines containing ``pattern`` in the files below ``path``, in batches."""
        return self._items(self._fs("fs_find", path=path, pattern=pattern), Match)

    def search_files(self, path: str, pattern: str) -> AsyncGenerator[list[str], None]:
        """Files below ``path`` whose name matches the glob ``pattern``, in batches."""
        return self._items(self._fs("fs_search", path=path, pattern=pattern), str)

    async def _items(self, message: Message, kind: Any) -> AsyncGenerator[list[Any], None]:
        async with self._open(message) as call:
            async for frame_kind, payload in call.frames():
                if frame_kind == protocol.JSON:
                    items = decode(payload).get("items") or []
                    if items:
                        yield parse(list[kind], items)

    async def make_dir(self, path: str, mode: str | None = None) -> None:
        await self._reply(self._fs("fs_mkdir", path=path, mode=mode))

    async def delete_file(self, path: str, recursive: bool = False) -> None:
        await self._reply(self._fs("fs_delete", path=path, recursive=recursive))

    async def move_file(self, source: str, destination: str) -> None:
        await self._reply(self._fs("fs_move", source=source, destination=destination))

    async def set_permissions(self, path: str, owner: str | None = None,
                              group: str | None = None, mode: str | None = None) -> None:
        await self._reply(self._fs("fs_chmod", path=path, owner=owner, group=group, mode=mode))

    async def replace_in_files(self, files: list[str], pattern: str,
                               new_value: str) -> list[ReplaceResult]:
        """Replace the literal ``pattern`` in each file; one result per file."""
        message = self._fs("fs_replace", files=files, pattern=pattern, newValue=new_value)
        async with self._open(message) as call:
            return field(await call.reply(), "results", list[ReplaceResult])

    def read_files(self, paths: list[str]) -> AsyncGenerator[FileEvent, None]:
        """The files' contents in order: per file a start, chunks and an end, or an error."""
        return read_events(self._open(self._fs("fs_read", paths=paths)))

    async def write_file(self, path: str) -> Upload:
        """An upload of one file (written in place when finished, discarded if aborted)."""
        return await Upload.open(self._open(self._fs("fs_write", path=path)))

    # -- git (the request bodies go to the agent as they are)

    async def _git(self, op: str, body: GitModel | None = None, /,
                   **fields: object) -> Message:
        message = {"op": op, "user": self.user, "env": dict(self.env),
                   **(body.model_dump(exclude_none=True) if body else {}), **fields}  # fmt: skip
        return await self._reply(message)

    async def git_clone(self, body: GitCloneRequest) -> None:
        await self._git("git_clone", body)

    async def git_status(self, path: str) -> GitStatus:
        message = {"op": "git_status", "user": self.user, "env": dict(self.env), "path": path}
        async with self._open(message) as call:
            return field(await call.reply(), "status", GitStatus)

    async def git_add(self, body: GitAddRequest) -> None:
        await self._git("git_add", body)

    async def git_commit(self, body: GitCommitRequest) -> str:
        """Commit the staged changes; the new commit's hash."""
        message = {"op": "git_commit", "user": self.user, "env": dict(self.env),
                   **body.model_dump(exclude_none=True)}  # fmt: skip
        async with self._open(message) as call:
            return field(await call.reply(), "hash", str)

    async def git_branches(self, path: str) -> ListBranchResponse:
        message = {"op": "git_branches", "user": self.user, "env": dict(self.env), "path": path}
        async with self._open(message) as call:
            reply = await call.reply()
            return ListBranchResponse(branches=field(reply, "branches", list[str]),
                                      current=field(reply, "current", str) or None)

    async def git_branch_create(self, body: GitBranchRequest) -> None:
        await self._git("git_branch_create", body)

    async def git_branch_delete(self, body: GitBranchRequest) -> None:
        await self._git("git_branch_delete", body)

    async def git_checkout(self, body: GitCheckoutRequest) -> None:
        await self._git("git_checkout", body)

    async def git_pull(self, body: GitPullRequest) -> None:
        await self._git("git_pull", body)

    async def git_push(self, body: GitPushRequest) -> None:
        await self._git("git_push", body)

    # -- sessions: persistent shells

    async def session_create(self, session_id: str, *, reserved: bool = False) -> None:
        """Start a session; ``reserved`` allows the entrypoint's own session name.

        Raises:
            ToolboxError: 409 for the entrypoint session's name without ``reserved``.
        """
        if session_id == ENTRYPOINT_SESSION and not reserved:
            raise ToolboxError(409, "SESSION_EXISTS",
                               f"session {ENTRYPOINT_SESSION} is reserved for the entrypoint")
        await self._reply({"op": "session_create", "sessionId": session_id, "user": self.user,
                           "env": dict(self.env)})  # fmt: skip

    async def session_list(self) -> list[SessionPublic]:
        async with self._open({"op": "session_list"}) as call:
            return field(await call.reply(), "sessions", list[SessionPublic])

    async def session_get(self, session_id: str) -> SessionPublic:
        return await self._reply(
            {"op": "session_get", "sessionId": session_id}, SessionPublic)

    async def session_delete(self, session_id: str) -> None:
        await self._reply({"op": "session_delete", "sessionId": session_id})

    def _session_exec(self, session_id: str, command: str, suppress_input_echo: bool,
                      run_async: bool) -> Message:
        return {"op": "session_exec", "sessionId": session_id, "command": command,
                "suppressInputEcho": suppress_input_echo, "async": run_async}  # fmt: skip

    async def session_exec(self, session_id: str, command: str,
                           suppress_input_echo: bool = False) -> SessionExecResult:
        """Run a command in the session (queued behind a running one) to its end."""
        message = self._session_exec(session_id, command, suppress_input_echo, False)
        async with self._open(message) as call:
            logs = await collect_logs(call, self.output_limit)
            return SessionExecResult(cmd_id=field(call.result, "cmdId", str),
                                     exit_code=field(call.result, "exitCode", int | None),
                                     **logs.model_dump())  # fmt: skip

    async def session_exec_async(self, session_id: str, command: str,
                                 suppress_input_echo: bool = False) -> str:
        """Queue a command in the session; its id."""
        message = self._session_exec(session_id, command, suppress_input_echo, True)
        async with self._open(message) as call:
            return field(await call.reply(), "cmdId", str)

    async def session_command(self, session_id: str, command_id: str) -> CommandPublic:
        return await self._reply({"op": "session_command", "sessionId": session_id,
                                  "commandId": command_id}, CommandPublic)  # fmt: skip

    async def session_logs(self, session_id: str, command_id: str) -> CommandLogs:
        """The command's output so far."""
        message = {"op": "session_logs", "sessionId": session_id, "commandId": command_id}
        async with self._open(message) as call:
            return await collect_logs(call, self.output_limit)

    def session_follow(self, session_id: str, command_id: str,
                       follow: bool) -> AbstractAsyncContextManager[AsyncIterator[Output]]:
        """The command's output as it comes (``follow``: until it exits); entering checks
        that the command exists."""
        return follow_output(self._open({"op": "session_logs", "sessionId": session_id,
                                         "commandId": command_id, "follow": follow}))

    async def session_input(self, session_id: str, command_id: str, data: str) -> None:
        await self._reply({"op": "session_input", "sessionId": session_id,
                           "commandId": command_id, "data": data})  # fmt: skip

    # -- terminals

    async def pty_create(self, body: PtyCreate) -> PtySessionInfo:
        return await self._reply({"op": "pty_create",
                                  **body.model_dump(by_alias=True, exclude_none=True),
                                  "user": self.user, "env": dict(self.env)}, PtySessionInfo)

    async def pty_list(self) -> PtyList:
        return await self._reply({"op": "pty_list"}, PtyList)

    async def pty_get(self, pty_id: str) -> PtySessionInfo:
        return await self._reply({"op": "pty_get", "id": pty_id}, PtySessionInfo)

    async def pty_resize(self, pty_id: str, cols: int, rows: int) -> PtySessionInfo:
        return await self._reply({"op": "pty_resize", "id": pty_id, "cols": cols,
                                  "rows": rows}, PtySessionInfo)  # fmt: skip

    async def pty_kill(self, pty_id: str) -> None:
        await self._reply({"op": "pty_kill", "id": pty_id})

    def pty_attach(self, pty_id: str) -> AbstractAsyncContextManager[PtyAttachment]:
        """Connect to a running terminal (entering fails if it does not exist)."""
        return attach_pty(self._open({"op": "pty_attach", "id": pty_id}))

    def pty_create_attach(self, pty_id: str, cols: int, rows: int, cwd: str | None,
                          envs: dict[str, str], command: str | None = None,
                          ) -> AbstractAsyncContextManager[PtyAttachment]:  # fmt: skip
        """Create a terminal and connect to it; it runs ``command`` (``shell -c``) when
        given, else an interactive shell."""
        message = {"op": "pty_attach", "create": True, "id": pty_id, "cols": cols, "rows": rows,
                   "cwd": cwd, "envs": envs, "user": self.user, "env": dict(self.env)}
        if command is not None:
            message["command"] = command
        return attach_pty(self._open(message))

    def pipe_exec(self, command: str | None) -> AbstractAsyncContextManager[PipeRun]:
        """Run ``command`` (``shell -c``; None: the user's shell) on pipes: stdin from the
        caller, stdout and stderr apart. Leaving early kills everything it started."""
        return run_on_pipes(self._open({"op": "pipe_exec", "command": command,
                                        "user": self.user, "env": dict(self.env)}))

    # -- the code interpreter

    def interpreter_run(self, code: str, context_id: str | None, envs: dict[str, str],
                        timeout: float | None) -> AsyncGenerator[InterpreterEvent, None]:
        """Run code in a context (default: the shared one): its events, then RunEnded."""
        return interpreter_events(self._open({
            "op": "interpreter_run", "user": self.user, "env": self.env, "code": code,
            "contextId": context_id, "envs": envs, "timeout": timeout}))

    async def interpreter_create(self, cwd: str | None) -> InterpreterContextPublic:
        message = {"op": "interpreter_create", "user": self.user, "env": self.env, "cwd": cwd}
        async with self._open(message) as call:
            return field(await call.reply(), "context", InterpreterContextPublic)

    async def interpreter_list(self) -> InterpreterContextsPublic:
        return await self._reply({"op": "interpreter_list"}, InterpreterContextsPublic)

    async def interpreter_delete(self, context_id: str) -> None:
        await self._reply({"op": "interpreter_delete", "id": context_id})


    # -- language servers

    def _lsp(self, op: str, body: LspServerRequest, **fields: object) -> Message:
        return {"op": op, "user": self.user, "languageId": body.language_id,
                "pathToProject": body.path_to_project, **fields}  # fmt: skip

    async def lsp_start(self, body: LspServerRequest) -> None:
        """Start the language server of the body's language for its project."""
        await self._reply({**self._lsp("lsp_start", body), "env": dict(self.env)})

    async def lsp_stop(self, body: LspServerRequest) -> None:
        await self._reply(self._lsp("lsp_stop", body))

    async def lsp_did_open(self, body: LspDocumentRequest) -> None:
        await self._reply(self._lsp("lsp_did_open", body, uri=body.uri))

    async def lsp_did_close(self, body: LspDocumentRequest) -> None:
        await self._reply(self._lsp("lsp_did_close", body, uri=body.uri))

    async def lsp_completions(self, body: LspCompletionParams) -> CompletionList:
        """Completions at the body's position."""
        context = (body.context.model_dump(by_alias=True, exclude_none=True)
                   if body.context else None)  # fmt: skip
        message = self._lsp("lsp_completions", body, uri=body.uri, context=context,
                            position=body.position.model_dump())  # fmt: skip
        return await self._reply(message, CompletionList)

    async def lsp_document_symbols(self, body: LspDocumentRequest) -> list[LspSymbol]:
        async with self._open(self._lsp("lsp_document_symbols", body, uri=body.uri)) as call:
            return field(await call.reply(), "symbols", list[LspSymbol])

    async def lsp_workspace_symbols(self, body: LspServerRequest, query: str) -> list[LspSymbol]:
        async with self._open(self._lsp("lsp_workspace_symbols", body, query=query)) as call:
            return field(await call.reply(), "symbols", list[LspSymbol])

    # -- computer use (the sandbox's desktop: ``cove.agent.computer``)

    def _desktop(self, op: str, body: WireModel | None = None, **fields: object) -> Message:
        values = body.model_dump(by_alias=True, exclude_none=True) if body is not None else {}
        return {"op": f"computeruse_{op}", "user": self.user, **values, **fields}

    async def computer_start(self) -> ComputerUseStartResponse:
        """Start the desktop's processes (as the sandbox user); their statuses."""
        return await self._reply(self._desktop("start"), ComputerUseStartResponse)

    async def computer_stop(self) -> ComputerUseStartResponse:
        return await self._reply(self._desktop("stop"), ComputerUseStartResponse)

    async def computer_status(self) -> ComputerUseStatusResponse:
        return await self._reply(self._desktop("status"), ComputerUseStatusResponse)

    async def computer_process(self, name: str, what: str, kind: type[M]) -> M:
        """One desktop process's ``status``, ``logs``, ``errors``, or ``restart`` it."""
        return await self._reply(self._desktop("process", name=name, what=what), kind)

    async def computer_pointer(self, op: str, body: WireModel | None = None,
                               **fields: object) -> Position:  # fmt: skip
        """A mouse ``op`` (``mouse_position``, ``mouse_move``, ``mouse_click``...): where
        the pointer is afterwards."""
        return await self._reply(self._desktop(op, body, **fields), Position)

    async def computer_input(self, op: str, body: WireModel, kind: type[M],
                             **fields: object) -> M:  # fmt: skip
        """A keyboard op (or ``mouse_scroll``), answered with a ``kind``."""
        return await self._reply(self._desktop(op, body, **fields), kind)

    async def computer_screenshot(self, **params: object) -> ScreenshotResponse:
        """The screen or a region of it (``x``, ``y``, ``width``, ``height``, ``format``,
        ``quality``, ``scale``, ``showCursor``), base64-encoded."""
        return await self._reply(self._desktop("screenshot", None, **params), ScreenshotResponse)

    async def computer_display(self) -> DisplayInfoResponse:
        return await self._reply(self._desktop("display_info"), DisplayInfoResponse)

    async def computer_windows(self) -> WindowsResponse:
        return await self._reply(self._desktop("windows"), WindowsResponse)

    async def recording_start(self, label: str | None) -> Recording:
        """Start recording the screen (``label`` goes into the file name)."""
        return await self._reply(self._desktop("recording_start", label=label), Recording)

    async def recording_stop(self, recording_id: str) -> Recording:
        return await self._reply(self._desktop("recording_stop", id=recording_id), Recording)

    async def recording_list(self) -> ListRecordingsResponse:
        return await self._reply(self._desktop("recording_list"), ListRecordingsResponse)

    async def recording_get(self, recording_id: str) -> Recording:
        return await self._reply(self._desktop("recording_get", id=recording_id), Recording)

    async def recording_delete(self, recording_id: str) -> None:
        await self._reply(self._desktop("recording_delete", id=recording_id))

    async def a11y_tree(self, scope: str | None, pid: int | None,
                        max_depth: int | None) -> AccessibilityTreeResponse:  # fmt: skip
        """The accessibility tree under the scope's root."""
        message = self._desktop("a11y_tree", scope=scope, pid=pid, maxDepth=max_depth)
        return await self._reply(message, AccessibilityTreeResponse)

    async def a11y_find(self, body: WireModel) -> AccessibilityNodesResponse:
        return await self._reply(self._desktop("a11y_find", body), AccessibilityNodesResponse)

    async def a11y_node(self, what: str, body: WireModel) -> None:
        """``focus``, ``invoke`` or set the ``value`` of the node ``body.id``."""
        await self._reply(self._desktop("a11y_node", body, what=what))

    def recording_read(self, recording_id: str) -> AsyncGenerator[FileEvent, None]:
        """A finished recording's bytes: a start, chunks and an end, or an error."""
        return read_events(self._open(self._desktop("recording_read", id=recording_id)))


async def _collect(events: AsyncIterator[ProcessEvent], limit: int,
                   charts: ChartCollector | None = None) -> ExecResult:  # fmt: skip
    output = CappedOutput(limit)
    code = 0
    async for event in events:
        if isinstance(event, Output):
            output.add(event.data)
        elif isinstance(event, Omitted):
            output.skip(event.count)
        elif isinstance(event, ChartData):
            if charts is not None:
                charts.add(event.payload)
        else:
            code = event.exit_code
    return ExecResult(code, output.text(), tuple(charts.charts) if charts else ())
