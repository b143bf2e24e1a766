"""The SSH gateway: ``ssh -p COVE_SSH_PORT <token>@host [command]`` opens a session in
the sandbox the token was made for (``POST /api/sandbox/{id}/ssh-access``).

As on Daytona, the token is the user name and there is nothing else to present
(no password, no key): a valid, unexpired token authenticates at once, anything
else is refused. Each session runs in the sandbox through its toolbox agent, as
the sandbox's user: a shell or a command on a terminal (``ssh``, ``ssh -t``) or
a command on pipes (``ssh host cmd``, with its exit status). Nothing but sessions
is served: TCP/IP and Unix forwarding (either way), agent and X11 forwarding,
SFTP and scp are refused, and so are ``env`` requests (a session's environment is
the sandbox's) and compression (see ``SshGateway._listen``). Revoking a token, or
deleting its sandbox, closes the connections it opened, and so do its expiry and
the revocation or expiry of the API key that asked for it (within ``SWEEP_SECONDS``;
an expired token's connection opens no new session meanwhile). A token opens at most
``MAX_CONNECTIONS`` connections at once, and a connection at most ``MAX_SESSIONS``
sessions.

Before its login, a connection is anyone's: each is held up to the login timeout, and
a few hundred from one address, never logging in, used up the server's open files (it
then answered no one, on SSH or HTTP). As OpenSSH's ``PerSourceMaxStartups`` and
``MaxStartups``, one address (an IPv6 one by its /64) may have ``MAX_STARTUPS_PER_CLIENT``
connections not yet logged in, and all addresses together a quarter of the open-files
limit (as many as HTTP clients may hold: :mod:`cove.api.httpguard`); one past either is
sent a disconnect saying why, and closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime
from typing import cast

import asyncssh
from asyncssh.packet import SSHPacket

from cove.api.httpguard import Gate, client_key
from cove.api.ssh_session import Session
from cove.core.periodic import every
from cove.core.sandbox import utcnow
from cove.core.ssh_access import SshAccess
from cove.server import Services

log = logging.getLogger("cove.ssh")
MAX_CONNECTIONS = 10  # open at once with one token
MAX_SESSIONS = 10  # channels open at once in one connection
MAX_STARTUPS_PER_CLIENT = 32  # connections not yet logged in, from one address at once
HELD_CHUNK = 64 * 1024  # a session's input held while it takes none: packets joined up to this
SWEEP_SECONDS = 2.0  # a grant revoked through another API replica closes its connections here


class SshGateway:
    """The listener and the connections it accepted, by the grant that opened them."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._connections: dict[str, set[asyncssh.SSHServerConnection]] = defaultdict(set)
        self._expiry: dict[str, datetime] = {}  # when each grant with connections expires
        # The connections not yet logged in, by client address (see the module's docstring).
        self.starting = Gate(MAX_STARTUPS_PER_CLIENT, None,
                             "SSH connections to the server not yet logged in")  # fmt: skip
        services.ssh.revoked_hooks.append(self.disconnect)

    async def start(self, host: str, port: int, host_key: bytes) -> None:
        """Listen on ``host``:``port`` with the server's ``host_key`` (OpenSSH format).

        Raises:
            OSError: the port cannot be bound (the message names COVE_SSH_PORT).
        """
        try:
            self._acceptor = await self._listen(host, port, host_key)
        except OSError as exc:
            raise OSError(exc.errno, f"the SSH gateway cannot listen on {host}:{port} "
                          f"({exc.strerror}); set COVE_SSH_PORT (0 turns it off)") from exc
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close the connections of grants revoked through another replica, or expired."""
        await every(SWEEP_SECONDS, self._check, "checking SSH grants", wait_first=True)

    def _check(self) -> None:
        now = utcnow()
        self.disconnect([i for i, expires in self._expiry.items() if expires <= now],
                        "SSH access expired")  # fmt: skip
        self.services.ssh.sweep(list(self._connections))

    async def _listen(self, host: str, port: int, host_key: bytes) -> asyncssh.SSHAcceptor:
        """The listener. No compression (as Daytona's gateway, Go's SSH library, offers
        none): a compressed packet is inflated whole, on the server's event loop, with
        no bound but zlib's ratio, so one 256 KiB packet a client sends (an ignored
        ``SSH_MSG_IGNORE`` will do) would cost the server some 256 MB and stall its
        API meanwhile."""
        return await asyncssh.listen(
            host, port, server_factory=lambda: _Server(self),
            server_host_keys=[asyncssh.import_private_key(host_key)],
            session_factory=None, sftp_factory=None, allow_scp=False,
            agent_forwarding=False, x11_forwarding=False, allow_pty=True, line_editor=False,
            encoding=None, public_key_auth=False, password_auth=False, kbdint_auth=False,
            host_based_auth=False, gss_auth=False, gss_kex=False, login_timeout=30,
            keepalive_interval=60, compression_algs=["none"],
            server_version="Cove")  # fmt: skip

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        for ids in list(self._connections):
            self.disconnect([ids])

    def disconnect(self, access_ids: list[str], reason: str = "SSH access revoked") -> None:
        """Close the connections opened with these grants (revoked, or expired)."""
        for access_id in access_ids:
            self._expiry.pop(access_id, None)
            for conn in self._connections.pop(access_id, set()):
                conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    def opened(self, access: SshAccess, conn: asyncssh.SSHServerConnection) -> bool:
        """Count ``conn`` as one of the token's (False: it has too many open)."""
        conns = self._connections[access.id]
        if len(conns) >= MAX_CONNECTIONS:
            return False
        conns.add(conn)
        self._expiry[access.id] = access.expires_at
        return True

    def closed(self, access: SshAccess, conn: asyncssh.SSHServerConnection) -> None:
        conns = self._connections.get(access.id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._connections[access.id]
                self._expiry.pop(access.id, None)


class _Server(asyncssh.SSHServer):
    """One client connection: authenticated by its user name alone."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.access: SshAccess | None = None
        self.starting: str | None = None  # its client, while counted as not logged in
        self.sessions = 0
        self.flowing = asyncio.Event()  # the client's socket takes more (its buffer is low)
        self.flowing.set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        """Keep the connection, and hear its socket's flow control: asyncssh ignores it
        (its ``pause_writing`` does nothing) and a channel's window is the client's own
        say, so a client announcing a big one and then not reading its socket had all
        the sandbox wrote buffered in the server. Sessions wait on ``flowing``."""
        self.conn = conn
        conn.pause_writing = self._pause_writing  # type: ignore[method-assign]
        conn.resume_writing = self._resume_writing  # type: ignore[method-assign]
        key = client_key(conn.get_extra_info("peername"))
        refused = self.gateway.starting.admit(key)
        if refused is not None:  # (not logged: each would be a line of the attacker's)
            # (once asyncssh sent its version, which follows this call: a client shows
            # the reason of a disconnect it gets then)
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_TOO_MANY_CONNECTIONS, refused)
            return
        self.starting = key

    def _pause_writing(self) -> None:
        """The client does not read what it is sent: sessions wait, and its own packets
        wait unread too (each reply to one, a refused channel or request, was buffered
        for a client that never read, without end)."""
        self.flowing.clear()
        if self.conn is not None and self.conn._transport is not None:  # noqa: SLF001
            self.conn._transport.pause_reading()  # noqa: SLF001

    def _resume_writing(self) -> None:
        self.flowing.set()
        if self.conn is not None and self.conn._transport is not None:  # noqa: SLF001
            self.conn._transport.resume_reading()  # noqa: SLF001

    def connection_lost(self, exc: Exception | None) -> None:
        self._started()
        if self.access is not None and self.conn is not None:
            self.gateway.closed(self.access, self.conn)

    def auth_completed(self) -> None:
        self._started()

    def _started(self) -> None:
        """No longer counted as not logged in (it did, or it is gone)."""
        if self.starting is not None:
            self.gateway.starting.release(self.starting)
            self.starting = None

    def begin_auth(self, username: str) -> bool:
        """No authentication needed for a valid token; for anything else, none can
        succeed (every method is off)."""
        if self.access is not None:
            return False
        access = self.gateway.services.ssh.check(username)
        if access is None:
            log.info("SSH login refused: invalid or expired token")
            return True
        assert self.conn is not None
        if not self.gateway.opened(access, self.conn):
            log.info("SSH login refused: %d connections are open with this token already",
                     MAX_CONNECTIONS)  # fmt: skip
            return True
        self.access = access
        return False

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], Session] | bool:
        if self.access is None or self.sessions >= MAX_SESSIONS:
            return False
        if self.access.expires_at <= utcnow():  # (the sweep closes the connection soon)
            return False
        assert self.conn is not None
        chan = self.conn.create_server_channel()  # asyncssh's, as it would make it, but
        chan.__class__ = _SessionChannel  # see there (asyncssh has no hooks for those)
        self.sessions += 1
        return chan, Session(self.gateway.services, self.access, self._session_ended,
                             self.flowing)  # fmt: skip

    def _session_ended(self) -> None:
        self.sessions -= 1


class _SessionChannel(asyncssh.SSHServerChannel[bytes]):
    """A session channel that holds a client's input by its bytes (``_accept_data``)
    and refuses ``env`` requests: asyncssh keeps every variable a client sends in the
    channel, with no bound on their number, so a client looping on them (each up to
    256 KiB) grew the server's memory until it ran out. A session's environment is the
    sandbox's own, so nothing a client sends is wanted anyway."""

    def _process_env_request(self, packet: SSHPacket) -> bool:
        return False

    def _accept_data(self, data: bytes, datatype: int | None = None) -> None:
        """While the session takes no input (its queue is full), asyncssh holds each
        packet that arrives apart, some 70 bytes of the server's memory for even a
        one-byte one: a client sending those made the channel's window (2 MiB, held up
        to twice over) cost some 300 MB. A packet that arrives then joins the one held
        before it, up to ``HELD_CHUNK``."""
        super()._accept_data(data, datatype)
        held = self._recv_buf
        if len(held) > 1 and held[-2][1] == datatype and len(held[-2][0]) < HELD_CHUNK:
            last = held.pop()[0]
            joined: bytes | bytearray = held[-1][0]
            if isinstance(joined, bytearray):
                joined += last  # (in place: no copy of what was held)
            else:
                held[-1] = (cast(bytes, bytearray(joined) + last), datatype)
