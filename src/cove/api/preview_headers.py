"""What the preview proxy passes on, both ways: nothing that carries a secret.

The server in a sandbox is hostile. It never sees the caller's API key
(``Authorization``, ``Proxy-Authorization``, the ``cove.bearer.`` WebSocket
subprotocol), the preview token (``X-Daytona-Preview-Token``, ``?token=``), the
signed token of the URL, nor any header or subprotocol whose value contains one of
them (a ``Referer`` of a signed page, say).

Cookies: a path-based preview (``/preview/...``) shares the API's origin, so no
cookie goes up and no ``Set-Cookie`` comes back. A host-based preview
(``{port}-{id}.<domain>``) is its own origin: cookies go both ways, except those
named with Cove's reserved prefix and, coming back, those scoped to a wider
domain than the preview's own host (they would reach other sandboxes' previews).

Nor may a path-based preview's answer act on the API's origin in other ways. These
are dropped from it:

* ``Service-Worker-Allowed``: a service worker registered from the preview would
  control every page of the origin (the dashboard, its API calls and keys, other
  sandboxes' previews); so a preview's worker controls its own path only;
* ``Clear-Site-Data``: it would reload and empty every tab of the origin;
* ``Cross-Origin-Opener-Policy``: the dashboard's own (``same-origin``) keeps its
  page away from any other page's window handles; a preview claiming the same
  policy would share its browsing context group;
* ``Strict-Transport-Security``: the host's own, to lift or to stretch over its
  subdomains.

Forwarding headers sent by the client are dropped (anyone can forge them); the
proxy sets ``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import Scope

from cove.api.wsauth import BEARER

TOKEN_HEADER = "x-daytona-preview-token"
COOKIE_PREFIX = "cove_"  # cookies Cove reserves for itself: never passed to a sandbox
MIN_SECRET = 8  # shorter "secrets" (a malformed key) would match ordinary values

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
        "trailer", "host"}  # fmt: skip
_SECRET_HEADERS = {"authorization", "proxy-authorization", TOKEN_HEADER}
_FORWARDED = {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
              "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server",
              "x-real-ip"}  # fmt: skip
# Response headers that act on the whole origin of the page: not from a path-based preview.
_ORIGIN_WIDE = {"service-worker-allowed", "clear-site-data", "cross-origin-opener-policy",
                "strict-transport-security"}  # fmt: skip
_WEBSOCKET = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
              "sec-websocket-protocol", "sec-websocket-accept"}  # fmt: skip


@dataclass(frozen=True)
class Route:
    """How the client reached the preview."""

    by_host: bool  # {port}-{id}.<domain> rather than /preview/{id}/{port}
    signed_token: str | None = None  # the token in the URL of a signed preview


def header(scope: Scope, name: str) -> str | None:
    """The first value of header ``name`` (lower case) in ``scope``."""
    for key, value in scope.get("headers", []):
        if key.decode("latin-1").lower() == name:
            return str(value.decode("latin-1"))
    return None


def _headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]


def secrets_of(scope: Scope, route: Route) -> set[str]:
    """Every secret the client sent with this request."""
    found = {route.signed_token or ""}
    auth = header(scope, "authorization") or ""
    found.add(auth.partition(" ")[2].strip() or auth)
    found.add(header(scope, "proxy-authorization") or "")
    found.add(header(scope, TOKEN_HEADER) or "")
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    found.update(value for key, value in query if key == "token")
    for name, value in _cookies(header(scope, "cookie") or ""):
        if _reserved(name):
            found.add(value)
    return {s for s in found if len(s) >= MIN_SECRET}


def upstream_headers(scope: Scope, route: Route) -> list[tuple[str, str]]:
    """The request headers the sandbox's server gets."""
    secrets = secrets_of(scope, route)
    listed = {n.strip().lower() for n in (header(scope, "connection") or "").split(",")}
    skip = _HOP | _SECRET_HEADERS | _FORWARDED | listed
    if scope["type"] == "websocket":
        skip |= _WEBSOCKET
    out: list[tuple[str, str]] = []
    for name, value in _headers(scope):
        low = name.lower()
        if low in skip:
            continue
        if low == "cookie":
            value = _kept_cookies(value) if route.by_host else ""
            if not value:
                continue
        out.append((name, value))
    out += _forwarded(scope)
    return [(n, v) for n, v in out if not any(s in v for s in secrets)]


def upstream_subprotocols(scope: Scope, route: Route) -> list[str]:
    """The WebSocket subprotocols offered to the sandbox's server: those the client
    offered but Cove's ``cove.bearer.<key>`` (an API key, as the dashboard sends it)
    and any that carries a secret."""
    secrets = secrets_of(scope, route)
    offered = (p.strip() for p in (header(scope, "sec-websocket-protocol") or "").split(","))
    return [p for p in offered
            if p and not p.startswith(BEARER) and not any(s in p for s in secrets)]  # fmt: skip


def _forwarded(scope: Scope) -> list[tuple[str, str]]:
    client = scope.get("client")
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme"))
    out = [("X-Forwarded-Proto", str(scheme or "http"))]
    if client:
        out.append(("X-Forwarded-For", str(client[0])))
    host = header(scope, "host")
    if host:
        out.append(("X-Forwarded-Host", host))
    return out


def downstream_headers(
    headers: list[tuple[str, str]], route: Route, request_host: str
) -> list[tuple[bytes, bytes]]:
    """The response headers of the sandbox's server the client gets."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        low = name.lower()
        if low in _HOP or (low in _ORIGIN_WIDE and not route.by_host):
            continue
        if low == "set-cookie" and not (route.by_host and _allowed_set_cookie(value, request_host)):
            continue
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out


def _reserved(name: str) -> bool:
    return name.strip().lower().startswith(COOKIE_PREFIX)


def _cookies(value: str) -> list[tuple[str, str]]:
    pairs = (part.strip().partition("=") for part in value.split(";"))
    return [(name.strip(), val.strip()) for name, _, val in pairs if name.strip()]


def _kept_cookies(value: str) -> str:
    """A ``Cookie`` header without Cove's reserved cookies."""
    kept = [part.strip() for part in value.split(";") if part.strip()]
    return "; ".join(p for p in kept if not _reserved(p.partition("=")[0]))


def _allowed_set_cookie(value: str, request_host: str) -> bool:
    """A ``Set-Cookie`` of a host-based preview: not reserved, not for a wider domain."""
    first, *attributes = value.split(";")
    if _reserved(first.partition("=")[0]):
        return False
    host = request_host.rsplit(":", 1)[0].lower()
    for attribute in attributes:
        key, _, domain = attribute.strip().partition("=")
        if key.strip().lower() == "domain" and domain.strip().lstrip(".").lower() != host:
            return False
    return True
