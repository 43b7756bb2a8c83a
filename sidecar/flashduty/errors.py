"""Flashduty error taxonomy.

Hierarchy::

    FlashdutyError                  endpoint, status, code, request_id, retryable
     ├── FlashdutyAuthError         401 / Unauthorized: names WHICH key is wrong; never retryable
     ├── FlashdutyRateLimited       429 / RequestTooFrequently, or a local rate-limit wait that
     │                              ran past the caller's deadline; retryable, carries retry_after
     ├── FlashdutyTimeout           no answer within flashduty.timeout; retryable (ambiguous:
     │                              the request may have been delivered; alert_key makes it safe)
     └── FlashdutyConnectionError   DNS, refused, reset, TLS...; retryable

Retry policy (who decides): ``retryable`` says whether the *same* request may succeed later.

* retryable: 408, 429, 5xx except 501, connection errors, timeouts, and a 2xx whose ``error.code``
  is ``InternalError``, ``ServiceUnavailable`` or ``RequestTooFrequently``;
* permanent: every other 4xx (400, 401, 403, 404, 413...), 501, and any other ``error`` in a 2xx.

Secrets: the integration key and app key travel in the query string, and aiohttp puts the URL
into some of its exception messages. Every message built here goes through ``sidecar.redact``,
which removes ``integration_key=``/``app_key=`` query values and, when given, the literal key
values. Client code raises these errors *outside* the ``except`` block that caught the aiohttp
error, so no ``__context__`` keeps the original (unredacted) exception alive.
"""

from __future__ import annotations

from sidecar.redact import redact

__all__ = [
    "RETRYABLE_CODES",
    "FlashdutyAuthError",
    "FlashdutyConnectionError",
    "FlashdutyError",
    "FlashdutyRateLimited",
    "FlashdutyTimeout",
    "is_retryable_status",
]

# error.code values that mean "try again later" even when they ride on a 2xx
RETRYABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "RequestTooFrequently"})


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx except 501 are worth retrying; other statuses are not."""
    return status in (408, 429) or (500 <= status <= 599 and status != 501)


class FlashdutyError(Exception):
    """A Flashduty call failed. ``str(e)`` is safe to log: it never contains a key."""

    retryable: bool

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.message = redact(message)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retryable = retryable
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [f"{self.endpoint}: {self.message}"]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, retryable={self.retryable})"


class FlashdutyAuthError(FlashdutyError):
    """The key was rejected (401 / ``Unauthorized``) or is not configured. Never retryable:
    retrying cannot fix a wrong key, and hammering the API with it may lock the account."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = 401,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status, code=code, request_id=request_id, retryable=False)


class FlashdutyRateLimited(FlashdutyError):
    """Rate limited, and the caller's deadline does not leave time to wait it out.

    ``retry_after`` (seconds, already capped) is when the quota is expected back, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = 429,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status, code=code, request_id=request_id, retryable=True)
        self.retry_after = retry_after


class FlashdutyTimeout(FlashdutyError):
    """No complete answer within ``flashduty.timeout``."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message, endpoint=endpoint, retryable=True)


class FlashdutyConnectionError(FlashdutyError):
    """The request did not get an HTTP answer (DNS, refused, reset, TLS, broken body...)."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message, endpoint=endpoint, retryable=True)
