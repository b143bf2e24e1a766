"""The one error hierarchy of Cove.

Catch :class:`CoveError` to catch everything Cove raises on purpose::

    CoveError
     ├── BadRequest            input that can never succeed (400)
     │    └── QuotaExceeded    resources above the per-sandbox limits (400)
     ├── Unauthorized          missing, wrong or expired API key (401)
     ├── Forbidden             a key without the permission the call needs, another
     │    │                    organization's id (403)
     │    └── OrganizationQuotaExceeded   above the organization's quota (403)
     ├── NotFound              no such sandbox (in the caller's organization) (404)
     ├── Conflict              a name that is already taken (409)
     ├── PayloadTooLarge       a request body above the limit (413)
     ├── InvalidState          the operation is not allowed in the current state (400)
     ├── Timeout               an operation did not finish in time (408)
     ├── RuntimeBackendError   the isolation runtime failed (500)
     ├── Unavailable           the sandbox cannot be reached right now (503)
     │    └── Busy             its agent accepts no more connections for now (503)
     ├── ToolboxError          an in-sandbox operation failed (status and code
     │                         from the agent; source DAYTONA_DAEMON)
     └── ClientGone            the client hung up before the answer (499, never sent)

The HTTP layer maps these to Daytona's error envelope once (``api/errors.py``);
the runtime translates foreign errors (``CalledProcessError``, ``OSError``)
into :class:`RuntimeBackendError` at its seam, so ``core`` never sees them.
"""

from __future__ import annotations


class CoveError(Exception):
    """Root of every error Cove raises on purpose."""

    status_code = 500
    code = "INTERNAL_ERROR"
    source = "DAYTONA_API"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CoveError):
    status_code = 400
    code = "BAD_REQUEST"


class QuotaExceeded(BadRequest):
    code = "QUOTA_EXCEEDED"


class Unauthorized(CoveError):
    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(CoveError):
    status_code = 403
    code = "FORBIDDEN"


class OrganizationQuotaExceeded(Forbidden):
    """A create, start or resize above the organization's quota (403, as Daytona
    answers it)."""

    code = "QUOTA_EXCEEDED"


class NotFound(CoveError):
    status_code = 404
    code = "NOT_FOUND"


class Conflict(CoveError):
    status_code = 409
    code = "CONFLICT"


class PayloadTooLarge(CoveError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class InvalidState(CoveError):
    status_code = 400
    code = "INVALID_STATE"


class TooManyRequests(CoveError):
    status_code = 429
    code = "TOO_MANY_REQUESTS"


class Timeout(CoveError):
    status_code = 408
    code = "TIMEOUT"


class RuntimeBackendError(CoveError):
    status_code = 500
    code = "RUNTIME_ERROR"


class Unavailable(CoveError):
    status_code = 503
    code = "SANDBOX_UNAVAILABLE"


class Busy(Unavailable):
    code = "SANDBOX_BUSY"


class ToolboxError(CoveError):
    """An error inside the sandbox, reported the way Daytona's daemon reports it."""

    source = "DAYTONA_DAEMON"

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class ClientGone(CoveError):
    """The HTTP client disconnected; the work it started was stopped."""

    status_code = 499
    code = "CLIENT_CLOSED_REQUEST"

    def __init__(self) -> None:
        super().__init__("the client closed the request")


__all__ = [
    "BadRequest",
    "Busy",
    "ClientGone",
    "Conflict",
    "CoveError",
    "Forbidden",
    "InvalidState",
    "NotFound",
    "OrganizationQuotaExceeded",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RuntimeBackendError",
    "Timeout",
    "ToolboxError",
    "Unauthorized",
    "Unavailable",
]
