"""Where the host connects on a tenant's behalf (image pulls): only where a sandbox may.

A tenant names the registry an image is pulled from, and that registry names where
its blobs, manifests and tokens are fetched (redirects, a 401's token realm): skopeo
follows them, on the host, outside the sandboxes' firewall. Unchecked, an image
``evil.example/x`` whose manifest redirects to ``http://127.0.0.1:<port>/...`` or
``http://169.254.169.254/...`` makes the host call its own loopback services, other
sandboxes (bypassing their firewall) or a cloud's metadata service; skopeo's error
("StatusCode: 404, <the body>") brings the reply back to the tenant.

So skopeo runs in a network namespace of its own (:class:`Egress`), whose loopback
has nothing but a proxy (``HTTP(S)_PROXY``) served from the host's namespace. The
proxy resolves each target itself and connects only to an address a sandbox may
reach (not in :func:`~cove.core.validation.blocked_ranges`: private, loopback,
link-local, ...; not this host's own), or to a registry the operator lists
(``COVE_INSECURE_REGISTRIES``, ``COVE_ALLOWED_REGISTRIES``: a registry on the LAN).
Go clients never use a proxy for ``localhost`` or a loopback address: those reach
the namespace's own loopback, where only the registry of the pull is forwarded to
the host's, when the operator lists it (a registry on ``127.0.0.1``).

A host that reaches registries through a proxy of its own (``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY`` in the server's environment, with ``NO_PROXY``) has each
checked connection sent on through it (:func:`upstream_proxy`), to the address that
was checked, never the name: the operator's proxy must not resolve the name again
(to an address nobody checked). So a registry's name must still resolve on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import logging
import os
import selectors
import socket
import struct
import threading
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Mapping
from urllib.parse import unquote, urlsplit

from cove.core.config import Settings, registry_listed
from cove.core.validation import blocked_ranges
from cove.errors import RuntimeBackendError

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
MAX_HEAD = 64 * 1024  # a proxied request's line and headers
MAX_CONNECTIONS = 64  # open through one pull's proxy at once
HEAD_SECONDS = 30.0
CONNECT_SECONDS = 30.0
IDLE_SECONDS = 300.0  # a connection with nothing sent either way for this long is closed
LOOPBACK = ("localhost", "127.0.0.1", "::1")


class Egress:
    """One pull's network namespace and its proxy; :meth:`close` ends both.

    Raises (on creation):
        RuntimeBackendError: the namespace could not be made (not root?).
    """

    def __init__(self, settings: Settings, registry: str) -> None:
        self.settings = settings
        trusted = [*settings.insecure_registries, *settings.allowed_registries]
        self._trusted = trusted
        host, _, port = registry.rpartition(":") if ":" in registry else (registry, "", "")
        listed = host in LOOPBACK and port.isdigit() and registry_listed(registry, trusted)
        forward = int(port) if listed and _listening(int(port)) else 0
        self._proxies = urllib.request.getproxies_environment()
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        made: dict[str, object] = {}
        setup = threading.Thread(target=_in_new_namespace, args=(made, forward))
        setup.start()
        setup.join()
        if "error" in made:
            raise RuntimeBackendError(f"pulls need a network namespace of their own: "
                                      f"{made['error']}")  # fmt: skip
        self._netns = int(made["netns"])  # type: ignore[call-overload]
        self._proxy: socket.socket = made["proxy"]  # type: ignore[assignment]
        self._forwards: list[socket.socket] = made["forwards"]  # type: ignore[assignment]
        self.proxy_url = f"http://127.0.0.1:{self._proxy.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, args=(self._proxy, self._proxied),
                                          daemon=True)]  # fmt: skip
        for listener in self._forwards:
            target = [("127.0.0.1", forward)]
            self._threads.append(threading.Thread(
                target=self._accept, args=(listener, lambda c, t=target: _relay(c, t, b"")),
                daemon=True))  # fmt: skip
        for thread in self._threads:
            thread.start()

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run in the namespace."""
        return ["nsenter", f"--net=/proc/{os.getpid()}/fd/{self._netns}", "--", *argv]

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with the proxy as the only way out."""
        out = {k: v for k, v in env.items() if k.lower() not in (
            "http_proxy", "https_proxy", "no_proxy", "all_proxy")}  # fmt: skip
        out.update(HTTP_PROXY=self.proxy_url, HTTPS_PROXY=self.proxy_url)
        return out

    def close(self) -> None:
        self._closed.set()
        for listener in (self._proxy, *self._forwards):
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for thread in self._threads:
            thread.join(5)
        os.close(self._netns)

    def __enter__(self) -> Egress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, serve), daemon=True).start()

    def _serve(self, conn: socket.socket, serve: Callable[[socket.socket], None]) -> None:
        try:
            serve(conn)
        except OSError:
            pass
        except Exception:  # noqa: BLE001 - one connection's failure ends only it
            log.exception("pull proxy connection failed")
        finally:
            conn.close()
            self._slots.release()

    def _proxied(self, conn: socket.socket) -> None:
        """One client connection: ``CONNECT host:port`` (HTTPS) or a request for an
        absolute ``http://`` URL, sent on with ``Connection: close``."""
        conn.settimeout(HEAD_SECONDS)
        head, rest = _read_head(conn)
        if head is None:
            return
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return _refuse(conn, 400, "Bad Request")
        method, target, version = (p.decode("latin-1") for p in parts)
        try:
            url = urlsplit(target if method != "CONNECT" else f"https://{target}")
            host, port = url.hostname, url.port or (443 if method == "CONNECT" else 80)
        except ValueError:
            host = None
        if not host or url.scheme != ("https" if method == "CONNECT" else "http"):
            return _refuse(conn, 400, "Bad Request: not a proxy request")
        address, why = self._address(host, port)
        if address is None:
            log.info("pull proxy: refused %s: %s", target, why)
            return _refuse(conn, 403, why)
        upstream = upstream_proxy(self._proxies, url.scheme, host)
        if isinstance(upstream, str):
            return _refuse(conn, 502, upstream)
        if method == "CONNECT":
            if upstream is not None:  # the proxy's own answer (200, or 403/407) goes back
                proxy, auth = upstream
                _relay(conn, [proxy], _connect(address[0], auth) + rest)
                return
            _relay(conn, address, b"", reply=b"HTTP/1.1 200 Connection established\r\n\r\n")
            return
        path = urlsplit(target)._replace(scheme="", netloc="").geturl() or "/"
        kept = [line for line in lines[1:] if line and line.split(b":", 1)[0].strip().lower()
                not in (b"connection", b"proxy-connection", b"proxy-authorization",
                        b"keep-alive")]  # fmt: skip
        if upstream is not None:  # absolute form, to the checked address (Host: the name)
            proxy, auth = upstream
            path = f"http://{_hostport(address[0])}{path}"
            kept += auth
        request = [f"{method} {path} {version}".encode("latin-1"), *kept,
                   b"Connection: close", b"", b""]  # fmt: skip
        _relay(conn, [proxy] if upstream is not None else address,
               b"\r\n".join(request) + rest)

    def _address(self, host: str, port: int) -> tuple[list[tuple[str, int]] | None, str]:
        """The addresses to connect to for ``host:port`` (resolved once: the ones
        checked), or None and why not."""
        trusted = registry_listed(_hostport((host, port)), self._trusted)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            return None, f"{host} does not resolve ({exc.strerror or exc})"
        addresses = [(str(info[4][0]), port) for info in found]
        for address, _port in addresses:
            if not trusted and not self.may_reach(address):  # (skopeo shows 50 characters)
                return None, f"{address} is not public: see COVE_EGRESS_ALLOW"
        return (addresses, "") if addresses else (None, f"{host} has no address")

    def may_reach(self, address: str) -> bool:
        """Whether a sandbox may reach ``address``, and it is not this host's own."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address):
            public = ip.is_global and not ip.is_multicast
        else:
            public = not any(ip in net for net in blocked_ranges(self.settings))
        return public and not _local(ip)


def upstream_proxy(proxies: Mapping[str, str], scheme: str,
                   host: str) -> tuple[tuple[str, int], list[bytes]] | str | None:  # fmt: skip
    """The host's own proxy for ``scheme://host`` (``proxies``: from the environment, as
    :func:`urllib.request.getproxies_environment` reads it): its address and the header
    lines that authenticate to it; None to connect directly (no proxy, or ``NO_PROXY``
    names the host); a string: why the proxy cannot be used."""
    given = proxies.get(scheme) or proxies.get("all")
    # (undocumented, but in the standard library since 3.0; it reads proxies["no"])
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not given or bypass(host, dict(proxies)):
        return None
    parts = urlsplit(given if "://" in given else f"http://{given}")
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or not port:
        return f"Bad Gateway: the host's {scheme} proxy must be http://host:port"
    auth = []
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth.append(b"Proxy-Authorization: Basic " + b64encode(secret))
    return (parts.hostname, port), auth


def _hostport(address: tuple[str, int]) -> str:
    ip, port = address
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _connect(address: tuple[str, int], auth: list[bytes]) -> bytes:
    """A CONNECT to the host's own proxy for ``address``."""
    target = _hostport(address).encode()
    return b"\r\n".join([b"CONNECT " + target + b" HTTP/1.1", b"Host: " + target, *auth,
                         b"", b""])  # fmt: skip


def _listening(port: int) -> bool:
    """Whether something listens on ``port`` of the host's loopback (else the pull's
    own loopback leaves it closed: the client is told "connection refused")."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=CONNECT_SECONDS).close()
    except OSError:
        return False
    return True


def _local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is an address of this host (one it can bind)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def _in_new_namespace(made: dict[str, object], forward: int) -> None:
    """(A thread of its own: a namespace is a thread's.) A new network namespace with
    its loopback up; in it, the proxy's listening socket and, with ``forward``, ones on
    that port of its loopback; its descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        made["error"] = os.strerror(ctypes.get_errno())
        return
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
            req = struct.pack("16sh22x", b"lo", 0)
            flags = struct.unpack("16sh22x", fcntl.ioctl(ctl, _SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(ctl, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
        forwards = []
        if forward:
            forwards.append(socket.create_server(("127.0.0.1", forward)))
            with contextlib.suppress(OSError):
                forwards.append(socket.create_server(("::1", forward),
                                                     family=socket.AF_INET6))  # fmt: skip
        made["forwards"] = forwards
        made["proxy"] = socket.create_server(("127.0.0.1", 0))  # (after: not that port)
        made["netns"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        made["error"] = str(exc)


def _read_head(conn: socket.socket) -> tuple[bytes | None, bytes]:
    """A request's line and headers (without the blank line) and what came after."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            _refuse(conn, 431, "Request Header Fields Too Large")
            return None, b""
        chunk = conn.recv(16384)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _refuse(conn: socket.socket, status: int, reason: str) -> None:
    body = reason.encode()
    conn.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


def _relay(conn: socket.socket, addresses: list[tuple[str, int]], first: bytes,
           reply: bytes = b"") -> None:  # fmt: skip
    """Connect to the first of ``addresses`` that answers, send ``first``, then pass
    bytes both ways until both sides are done or nothing moves for :data:`IDLE_SECONDS`."""
    failed: OSError | None = None
    for address in addresses:
        try:
            upstream = socket.create_connection(address, timeout=CONNECT_SECONDS)
            break
        except OSError as exc:
            failed = exc
    else:
        return _refuse(conn, 502, f"Bad Gateway: {failed.strerror if failed else 'no address'}")
    with upstream:
        conn.sendall(reply)
        upstream.sendall(first)
        conn.settimeout(None)
        upstream.settimeout(None)
        peer = {conn: upstream, upstream: conn}
        # (a selector, not select(): a server with many sandboxes has descriptors past 1024)
        with selectors.DefaultSelector() as watch:
            for end in peer:
                watch.register(end, selectors.EVENT_READ, end)
            while watch.get_map():
                ready = watch.select(IDLE_SECONDS)
                if not ready:
                    return
                for key, _events in ready:
                    side: socket.socket = key.data
                    data = side.recv(65536)
                    if data:
                        peer[side].sendall(data)
                        continue
                    watch.unregister(side)
                    with contextlib.suppress(OSError):
                        peer[side].shutdown(socket.SHUT_WR)
