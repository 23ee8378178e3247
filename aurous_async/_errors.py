"""The exceptions of aurous-async, and the mapping from an error response to one.

::

    AurousError
    ├── ConfigurationError            (also a ValueError) bad settings, found before any request
    ├── APIConnectionError            the request did not get an HTTP answer
    │   └── APITimeoutError           (also a TimeoutError) no answer within `timeout`
    ├── APIStatusError                the server answered with an error status
    │   ├── InvalidRequestError       400, 422
    │   ├── AuthenticationError       401
    │   ├── InsufficientCreditsError  402 (insufficient_credits | balance_too_low)
    │   ├── PermissionDeniedError     403
    │   ├── NotFoundError             404, 410
    │   ├── ConflictError             409
    │   │   └── IdempotencyKeyInUseError   409 idempotency_key_in_use
    │   ├── RateLimitError            429, .retry_after
    │   ├── ServerError               5xx
    │   └── MalformedResponseError    any status whose body is not what the API documents
    ├── SessionClosedError            (also a RuntimeError) the session was closed
    ├── SynthesisFailedError          a watched character ended `failed`; .character
    └── DeadlineExceededError         (also a TimeoutError) a call ran out of its flow's time
        └── WatchTimeoutError         a flow's `timeout` passed (the one flows raise)

An error from a POST (paid or not) also says whether the server may have acted on it:
``idempotency_key`` is the key every attempt carried, and ``may_have_been_processed`` is
true when any attempt may have reached the server. Retry such a call with the *same*
``idempotency_key=`` and the server answers with the original result instead of charging
again.

Every :class:`APIStatusError` carries ``status``, ``type``, ``code``, ``message``,
``param``, ``doc_url``, ``request_id``, ``headers`` and ``body``; ``code`` is the stable
one to branch on::

    try:
        await session.characters.resynthesize(character_id)
    except aurous_async.InsufficientCreditsError as exc:
        print("top up:", exc.message, exc.request_id)
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._redact import redact, redact_headers

if TYPE_CHECKING:
    from ._models import Character

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AurousError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "DeadlineExceededError",
    "IdempotencyKeyInUseError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "MalformedResponseError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "SessionClosedError",
    "SynthesisFailedError",
    "WatchTimeoutError",
]

# Bodies kept on errors are capped: a 5xx HTML page can be large, and nobody needs it all.
_MAX_BODY_KEPT = 4096


class AurousError(Exception):
    """The base of every exception the SDK raises.

    ``idempotency_key`` and ``may_have_been_processed`` are set on errors of POST calls
    (see the module docstring); elsewhere they are ``None`` and ``False``.
    """

    idempotency_key: str | None = None
    may_have_been_processed: bool = False


class ConfigurationError(AurousError, ValueError):
    """The session's settings are invalid (missing key, bad URL or version)."""


class APIConnectionError(AurousError):
    """The request got no HTTP answer (refused, reset, DNS, TLS, dropped mid-response).

    ``transient`` is false for failures a retry cannot mend (a TLS certificate that does
    not verify): those are raised at once.
    """

    def __init__(self, message: str, *, method: str = "", path: str = "",
                 transient: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path
        self.transient = transient


class APITimeoutError(APIConnectionError, TimeoutError):
    """No answer arrived within the per-attempt ``timeout``."""


class APIStatusError(AurousError):
    """The server answered with a status the call does not accept.

    Attributes mirror the error envelope: ``type``, ``code``, ``message``, ``param``,
    ``doc_url``, ``request_id`` (any may be ``None`` when the body lacks them), plus the
    HTTP ``status``, response ``headers`` and the raw ``body`` text (capped at 4 KiB).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        doc_url: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.doc_url = doc_url
        self.request_id = request_id
        self.headers: Mapping[str, str] = dict(headers or {})
        self.body = body
        super().__init__(self._describe())

    def _describe(self) -> str:
        code = f" {self.code}" if self.code else ""
        param = f" (param: {self.param})" if self.param else ""
        rid = f" [request_id: {self.request_id}]" if self.request_id else ""
        return f"{self.status}{code}: {self.message}{param}{rid}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, " \
               f"request_id={self.request_id!r})"


class InvalidRequestError(APIStatusError):
    """400/422: the request was refused as invalid; retrying it unchanged will not help."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing, unknown or revoked."""


class InsufficientCreditsError(APIStatusError):
    """402: the team's credits do not cover the call."""


class PermissionDeniedError(APIStatusError):
    """403: the key lacks the scope the call needs (``missing_scope``)."""


class NotFoundError(APIStatusError):
    """404/410: no such resource for this team (or it expired/was deleted)."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the resource's state."""


class IdempotencyKeyInUseError(ConflictError):
    """409 ``idempotency_key_in_use``: the key was used with another body or route, or
    its first use is still running."""


class RateLimitError(APIStatusError):
    """429: a server bucket is empty. ``retry_after`` is float seconds, or ``None`` when
    the header is absent or unreadable."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ServerError(APIStatusError):
    """5xx: the server failed; retried automatically where that is safe."""


class MalformedResponseError(APIStatusError):
    """The server's answer is not what the API documents (not JSON, wrong shape)."""


class SessionClosedError(AurousError, RuntimeError):
    """The session was closed: the call was not made, or its flow was ended."""


class SynthesisFailedError(AurousError):
    """A watched character ended in ``failed``; ``character`` is its final state."""

    def __init__(self, character: Character) -> None:
        self.character = character
        detail = f": {character.error_message}" if character.error_message else ""
        super().__init__(f"synthesis of {character.id} failed{detail}")


class DeadlineExceededError(AurousError, TimeoutError):
    """A call made inside a flow could not finish (or wait for its rate-limit token)
    before the flow's deadline. Raised below the flows; the flows re-raise it as
    :class:`WatchTimeoutError`, which is the one users see."""


class WatchTimeoutError(DeadlineExceededError):
    """The ``timeout`` given to a flow passed before it finished.

    ``character`` is the last state seen, if any.
    """

    def __init__(self, message: str, *, character: Character | None = None) -> None:
        super().__init__(message)
        self.character = character


# -- mapping a response to an exception --------------------------------------------------

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: NotFoundError,
    422: InvalidRequestError,
    429: RateLimitError,
}
_BY_TYPE: dict[str, type[APIStatusError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_request_error": InvalidRequestError,
    "authentication": AuthenticationError,
    "not_found": NotFoundError,
    "rate_limit": RateLimitError,
    "server_error": ServerError,
}
_LOOSE_STATUSES = frozenset({400, 401, 403})
# Codes that name their class whatever status they arrive with (both spellings that the
# API reference uses).
_BY_CODE: dict[str, type[APIStatusError]] = {
    "insufficient_credits": InsufficientCreditsError,
    "balance_too_low": InsufficientCreditsError,
    "idempotency_key_in_use": IdempotencyKeyInUseError,
    "missing_scope": PermissionDeniedError,
    "missing_api_key": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "revoked_api_key": AuthenticationError,
    "too_many_requests": RateLimitError,
    "concurrency_limit_exceeded": RateLimitError,
}


def error_class(status: int, type_: str | None, code: str | None) -> type[APIStatusError]:
    """Status first, then ``type``, then ``code`` — refined only within the status's
    family, so a wrongly typed body never turns a 5xx into a client error."""
    if status >= 500:
        return ServerError
    base = _BY_STATUS.get(status) or _BY_TYPE.get(type_ or "") or APIStatusError
    by_code = _BY_CODE.get(code or "")
    if by_code is None:
        return base
    # A documented code refines its status's class (409 -> IdempotencyKeyInUseError), and
    # may move between the statuses the docs disagree on: a 402 code sent as 400, a scope
    # error sent as 401 instead of 403.
    if issubclass(by_code, base) or base is APIStatusError or status in _LOOSE_STATUSES:
        return by_code
    return base


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """``Retry-After`` as float seconds from ``now`` (a Unix time): delta-seconds or an
    HTTP date. ``None`` for absent, negative, non-finite or unreadable values."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
        return max(0.0, seconds) if math.isfinite(seconds) else None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _redacted(value: str | None, secrets: tuple[str, ...]) -> str | None:
    return None if value is None else redact(value, *secrets)


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    secrets: tuple[str, ...] = (),
) -> APIStatusError:
    """Turn any error answer — JSON envelope, HTML page, garbage — into the right
    :class:`APIStatusError` subclass. Never raises anything else."""
    text = body[:_MAX_BODY_KEPT].decode("utf-8", errors="replace")
    envelope: Any = None
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        envelope = None
    error = envelope.get("error") if isinstance(envelope, dict) else None
    fields: dict[str, str | None] = {}
    for name in ("type", "code", "message", "param", "doc_url", "request_id"):
        value = error.get(name) if isinstance(error, dict) else None
        # Every server-controlled string may echo a secret (a proxy, a hostile server).
        fields[name] = redact(value, *secrets) if isinstance(value, str) else None
    request_id = fields["request_id"] or _redacted(headers.get("Aurous-Request-Id"), secrets)
    if fields["message"]:
        message = fields["message"]
    elif isinstance(error, dict):
        message = "the server's error body has no message"
    else:
        message = f"HTTP {status} with a body that is not an Aurous error envelope"
    # Below 400 the call expected a success body; whatever came is not one.
    cls = error_class(status, fields["type"], fields["code"]) if status >= 400 \
        else MalformedResponseError
    kwargs: dict[str, Any] = {
        "status": status,
        "type": fields["type"],
        "code": fields["code"],
        "param": fields["param"],
        "doc_url": fields["doc_url"],
        "request_id": request_id,
        "headers": redact_headers(headers, *secrets),
        "body": redact(text, *secrets),
    }
    if issubclass(cls, RateLimitError):
        return cls(message, retry_after=parse_retry_after(headers.get("Retry-After"), now=now),
                   **kwargs)
    return cls(message, **kwargs)
