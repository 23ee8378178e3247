"""One request, end to end: headers, idempotency key, rate-limit token, send, decode or
raise, and retry. Every call of the SDK takes this one road.

Retry rules (design §3):

* connection errors, timeouts, 429, 5xx and broken-JSON answers are retried, with full
  jitter on an exponential schedule (1, 2, 4, 8 … s, capped at 30 s) from ``backoff``;
* GET and PATCH always (they are idempotent), POST only because it always carries an
  ``Idempotency-Key`` that every retry reuses; DELETE only when the request provably
  never reached the server (429, connection refused);
* a ``Retry-After`` is waited in full (never jittered down), and a wait over 120 s raises
  instead; a 409 ``idempotency_key_in_use`` on a retry means our own first attempt is
  still running, so it is retried (0.5 s doubling to 8 s) until it replays;
* ``max_retries=N`` means at most N+1 attempts; every attempt takes a rate-limit token;
  a caller's ``deadline`` bounds all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import attrs
import backoff
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._clock import Clock
from ._config import Config
from ._convert import DecodeError, decode
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AurousError,
    IdempotencyKeyInUseError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    SessionClosedError,
    WatchTimeoutError,
    error_from_response,
    parse_retry_after,
)
from ._ratelimit import RateLimiter, RateLimitFeedback
from ._redact import redact

__all__ = [
    "ApiCall",
    "ApiResponse",
    "Transport",
    "deadline_scope",
    "on_token",
    "path_id",
    "validate_idempotency_key",
]

T = TypeVar("T")
logger = logging.getLogger("aurous_async")

#: A Retry-After longer than this is not slept through: the call raises RateLimitError.
MAX_RETRY_AFTER = 120.0
_BACKOFF_CAP = 30.0
# A retry that finds its own first attempt still running waits 0.5 s doubling to 8 s
# (api-spec.md §5), for at most a minute in all: the server is then likely stuck.
_IN_FLIGHT_START, _IN_FLIGHT_CAP, _IN_FLIGHT_BUDGET = 0.5, 8.0, 60.0
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,256}$")
_PLAIN_ID = re.compile(r"[A-Za-z0-9_\-]{1,256}")


@attrs.frozen(kw_only=True)
class ApiCall:
    """What a resource method asks of the transport."""

    method: str
    path: str
    bucket: str
    params: Mapping[str, str] | None = None
    json: Any = None
    idempotency_key: str | None = None


# Flows (watch, wait, fan-out) bound everything they call by one deadline, and the fan-out
# wants to know when a call has its rate-limit token. Both travel as context variables so
# that resource methods keep their public signatures.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "aurous_deadline", default=None
)
_ON_TOKEN: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "aurous_on_token", default=None
)


@contextlib.contextmanager
def deadline_scope(deadline: float | None) -> Iterator[None]:
    """Bound every call made inside by ``deadline`` (a ``clock.monotonic()`` time)."""
    outer = _DEADLINE.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def on_token(callback: Callable[[], None] | None) -> None:
    """Call ``callback`` (once) when the current task's next call has its token."""
    _ON_TOKEN.set(callback)


@attrs.frozen(kw_only=True)
class ApiResponse:
    """A successful answer, JSON-decoded."""

    status: int
    data: Any
    headers: Mapping[str, str]
    request_id: str | None

    def into(self, cls: type[T]) -> T:
        """The body as ``cls`` (with ``request_id`` filled in where the class has it)."""
        data = self.data
        if self.request_id and isinstance(data, dict) and _carries_request_id(cls):
            data = {**data, "request_id": self.request_id}
        try:
            return decode(data, cls)
        except DecodeError as exc:
            raise MalformedResponseError(
                str(exc), status=self.status, request_id=self.request_id,
                headers=self.headers, body=None,
            ) from None


_REQUEST_ID_FIELD: dict[type, bool] = {}


def _carries_request_id(cls: type) -> bool:
    known = _REQUEST_ID_FIELD.get(cls)
    if known is None:
        known = _REQUEST_ID_FIELD[cls] = attrs.has(cls) and "request_id" in attrs.fields_dict(cls)
    return known


class SendMarker:
    """Per attempt: set once aiohttp has written the request's headers (see
    :func:`send_tracer`)."""

    __slots__ = ("sent",)

    def __init__(self, *, sent: bool) -> None:
        self.sent = sent


async def _headers_sent(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    marker = context.trace_request_ctx
    if isinstance(marker, SendMarker):
        marker.sent = True


def send_tracer() -> aiohttp.TraceConfig:
    """A trace hook that tells the transport when a request has really gone out, so a
    token taken for a request cancelled or refused before that is given back."""
    config = aiohttp.TraceConfig()
    config.on_request_headers_sent.append(_headers_sent)
    return config


def validate_idempotency_key(key: str | None) -> str | None:
    """Check a caller's ``idempotency_key``: 1–256 printable ASCII characters."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a str, not {type(key).__name__}")
    if not _KEY_RE.match(key):
        raise ValueError("idempotency_key must be 1-256 printable ASCII characters, no spaces")
    return key


def path_id(value: str, name: str = "character_id") -> str:
    """``value`` made safe as one path segment: ``../x``, ``a/b`` and ``a?b`` stay inside
    ``/v1/characters/{id}`` instead of escaping it."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if _PLAIN_ID.fullmatch(value):
        return value  # the common case (char_01HX…): nothing to check or quote
    if not value or len(value) > 256:
        raise ValueError(f"{name} must be 1-256 characters")
    if value in (".", "..") or not value.isprintable() or value != value.strip():
        raise ValueError(f"{name} is not a valid id: {value[:40]!r}")
    return quote(value, safe="")


class Transport:
    """Sends :class:`ApiCall`\\ s. Owns nothing above HTTP: resources describe calls,
    the transport does the rest."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        limiter: Callable[[], RateLimiter | None],
        http: Callable[[], aiohttp.ClientSession],
        traced: bool = False,
    ) -> None:
        self._config = config
        self._traced = traced
        self._clock = clock
        self._limiter = limiter
        self._http = http
        self._headers = {
            "X-Api-Key": config.api_key,
            "User-Agent": config.user_agent,
            "Accept": "application/json",
        }
        if config.aurous_version:
            self._headers["Aurous-Version"] = config.aurous_version

    # -- the retry loop ------------------------------------------------------------------

    async def request(self, call: ApiCall) -> ApiResponse:
        """Send ``call`` with retries; return its answer or raise an ``AurousError``."""
        if call.method == "POST" and call.idempotency_key is None:
            call = attrs.evolve(call, idempotency_key=str(uuid.uuid4()))
        config, clock = self._config, self._clock
        deadline = _DEADLINE.get()
        started = clock.monotonic()
        waits: Any = None  # the backoff schedule, made only if a retry needs it
        in_flight_wait = _IN_FLIGHT_START
        failures = 0  # attempts that count against max_retries
        attempt = 0
        while True:
            attempt += 1
            limiter = self._limiter()
            if limiter is not None:
                await limiter.acquire(call.bucket, deadline=deadline)
            notify = _ON_TOKEN.get()
            if notify is not None:
                _ON_TOKEN.set(None)
                notify()
            # Whether the request went out; without a way to know (a session brought by
            # the caller has no trace hook of ours) assume it did.
            sent = SendMarker(sent=not self._traced)
            try:
                return await self._attempt(call, attempt, deadline, sent)
            except AurousError as exc:
                error = exc
            finally:
                if limiter is not None and not sent.sent:
                    # Cancelled or refused before a byte left: the token was not spent.
                    release = getattr(limiter, "release", None)
                    if release is not None:
                        release(call.bucket)
            wait: float | None
            if isinstance(error, IdempotencyKeyInUseError) and attempt > 1:
                # Our own first attempt holds the key and is still running on the server.
                wait, in_flight_wait = in_flight_wait, min(in_flight_wait * 2, _IN_FLIGHT_CAP)
                if clock.monotonic() - started + wait > _IN_FLIGHT_BUDGET:
                    raise error
            else:
                failures += 1
                if failures > config.max_retries or not self._retryable(call, error, sent.sent):
                    raise error
                if waits is None:
                    waits = backoff.expo(base=2, factor=1.0, max_value=_BACKOFF_CAP)
                    waits.send(None)
                wait = self._retry_wait(error, waits)
            if deadline is not None and clock.monotonic() + wait > deadline:
                raise error
            logger.warning(
                "%s %s: %s; retrying in %.2fs (attempt %d of %d)",
                call.method, call.path, _short(error), wait, attempt + 1, config.max_retries + 1,
            )
            await clock.sleep(wait)

    def _retryable(self, call: ApiCall, error: AurousError, sent: bool) -> bool:
        if isinstance(error, RateLimitError):
            return True  # refused before processing: safe for every method
        if call.method == "DELETE":
            # Not idempotent in effect (a repeat answers 404): only if it never went out.
            return isinstance(error, APIConnectionError) and not sent
        if isinstance(error, (APIConnectionError, ServerError)):
            return True
        # A 2xx whose body is not JSON at all (cut or mangled on the way): ask again.
        return isinstance(error, MalformedResponseError) and error.code == "invalid_json"

    def _retry_wait(self, error: AurousError, waits: Any) -> float:
        jittered: float = backoff.full_jitter(next(waits))
        if not isinstance(error, APIStatusError):
            return jittered
        if isinstance(error, RateLimitError):
            retry_after = error.retry_after  # parsed when the error was made
        else:  # a 503 may say when to come back too
            header = error.headers.get("Retry-After")
            retry_after = parse_retry_after(header, now=self._clock.time())
        if retry_after is None:
            return jittered
        if retry_after > MAX_RETRY_AFTER:
            raise error
        # The server's word is a floor: never jitter below it.
        return retry_after

    # -- one attempt ---------------------------------------------------------------------

    async def _attempt(
        self, call: ApiCall, attempt: int, deadline: float | None, sent: SendMarker
    ) -> ApiResponse:
        config, clock = self._config, self._clock
        timeout = config.timeout
        if deadline is not None:
            left = deadline - clock.monotonic()
            if left <= 0:
                raise WatchTimeoutError(f"{call.method} {call.path}: the deadline passed")
            timeout = min(timeout, left)
        headers = dict(self._headers)
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        body: bytes | None = None
        if call.json is not None:
            body = json.dumps(call.json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        url = URL(config.base_url + call.path, encoded=True)
        sent_at = clock.monotonic()
        status, resp_headers = 0, _NO_HEADERS
        http = self._http()
        try:
            async with http.request(
                call.method, url, params=call.params, data=body, headers=headers,
                allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout),
                trace_request_ctx=sent,
            ) as response:
                raw = await response.read()
                status, resp_headers = response.status, response.headers
        except asyncio.TimeoutError:
            raise APITimeoutError(
                f"no answer within {timeout:.1f}s", method=call.method, path=call.path
            ) from None
        except aiohttp.ClientConnectorError as exc:
            sent.sent = False  # no connection, so certainly not sent (even untraced)
            raise APIConnectionError(
                f"cannot connect: {redact(str(exc), config.api_key)}",
                method=call.method, path=call.path,
            ) from None
        except RuntimeError as exc:
            if not http.closed:
                raise
            # aiohttp's answer to a request on a session closed meanwhile.
            raise SessionClosedError(f"{call.method} {call.path}: the session was closed") \
                from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(
                f"connection failed: {type(exc).__name__}: {redact(str(exc), config.api_key)}",
                method=call.method, path=call.path,
            ) from None
        finally:
            # Every attempt that went out is reported, answered or not (even when
            # cancelled): the limiter learns when the server's refill clock may have
            # started.
            self._feedback(call.bucket, status, resp_headers, sent_at if sent.sent else None)
        request_id = resp_headers.get("Aurous-Request-Id")
        logger.debug(
            "%s %s -> %d %s attempt=%d %.3fs", call.method, call.path, status, request_id or "-",
            attempt, clock.monotonic() - sent_at,
        )
        if 200 <= status < 300:
            return self._success(status, resp_headers, raw, request_id)
        if 300 <= status < 400:
            location = redact(resp_headers.get("Location", "?"), config.api_key)
            raise APIStatusError(
                f"unexpected redirect to {location}; redirects are not followed so the API "
                "key never travels to another host", status=status, code="unexpected_redirect",
                request_id=request_id, headers=CIMultiDict(resp_headers),
            )
        error = error_from_response(status, CIMultiDict(resp_headers), raw,
                                    now=clock.time(), secrets=(config.api_key,))
        if isinstance(error, RateLimitError):
            logger.warning("%s %s: 429 %s (retry after %s s)", call.method, call.path,
                           error.code, error.retry_after)
        raise error

    def _success(
        self, status: int, headers: CIMultiDictProxy[str], raw: bytes, request_id: str | None
    ) -> ApiResponse:
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            raise MalformedResponseError(
                f"HTTP {status} with a body that is not valid JSON", status=status,
                code="invalid_json", request_id=request_id, headers=CIMultiDict(headers),
                body=raw[:200].decode("utf-8", "replace"),
            ) from None
        if headers.get("Aurous-Idempotent-Replayed", "").lower() == "true":
            # Expected after a retry of a paid call: the server answers with the
            # original result instead of charging again.
            logger.debug("answer replayed from the idempotency store (%s)", request_id)
        return ApiResponse(status=status, data=data, headers=headers, request_id=request_id)

    def _feedback(
        self, bucket: str, status: int, headers: Mapping[str, str], sent_at: float | None
    ) -> None:
        limiter = self._limiter()
        if limiter is None:
            return
        feedback = RateLimitFeedback(
            remaining=_header_int(headers, "Remaining"),
            reset=_header_number(headers, "Reset"),
            retry_after=parse_retry_after(headers.get("Retry-After"), now=self._clock.time()),
            limited=status == 429,
            sent_at=sent_at,
            received_at=self._clock.monotonic() if sent_at is not None else None,
        )
        limiter.observe(bucket, feedback)


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    # Both spellings are documented (api-spec.md §6.6).
    raw = headers.get(f"X-RateLimit-{name}") or headers.get(f"RateLimit-{name}")
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _header_number(headers, name)
    return int(value) if value is not None and value < 2**53 else None


def _short(error: AurousError) -> str:
    if isinstance(error, APIStatusError):
        return f"{error.status} {error.code or type(error).__name__}"
    return f"{type(error).__name__}: {error}"
