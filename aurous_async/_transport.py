"""One request, end to end: headers, idempotency key, rate-limit token, send, decode or
raise, and retry. Every API call of the SDK takes this one road.

Retry rules:

* connection errors, timeouts, 429, 5xx and broken-JSON answers are retried, with full
  jitter on an exponential schedule (1, 2, 4, 8 … s, capped at 30 s) from ``backoff``;
  a TLS certificate that does not verify and an oversized body are not (a retry cannot
  mend them);
* GET and PATCH always (they are idempotent), POST only because it always carries an
  ``Idempotency-Key`` that every retry reuses; DELETE only when the request provably
  never reached the server (429, connection refused);
* a ``Retry-After`` is waited in full (never jittered down), and a wait over 120 s raises
  instead; a 409 ``idempotency_key_in_use`` on a retry means our own first attempt is
  still running, so it is retried (0.5 s doubling to 8 s) until it replays, for at most a
  minute from that first 409 (and never past the caller's deadline);
* ``max_retries=N`` means at most N+1 failed attempts; every attempt takes a rate-limit
  token; a flow's deadline bounds all of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import backoff
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from . import _json
from ._calls import ApiCall, ApiResponse
from ._clock import Clock, readings
from ._config import Config
from ._context import captured, current_deadline, fire_token_callback, pending_token_callback
from ._errors import (
    APIConnectionError,
    APIStatusError,
    AurousError,
    DeadlineExceededError,
    IdempotencyKeyInUseError,
    MalformedResponseError,
    RateLimitError,
    ServerError,
    SessionClosedError,
    error_from_response,
    parse_retry_after,
)
from ._http import HttpClient, SendMarker
from ._json import loads_unscanned as json_loads_unscanned
from ._ratelimit import InMemoryRateLimiter, RateLimiter, answer_feedback, answer_values
from ._redact import redact, redact_headers, safe_request_id

__all__ = ["ApiCall", "ApiResponse", "Transport"]

logger = logging.getLogger("aurous_async")

#: A Retry-After longer than this is not slept through: the call raises RateLimitError.
MAX_RETRY_AFTER = 120.0
_BACKOFF_CAP = 30.0
# A retry that finds its own first attempt still running waits 0.5 s doubling to 8 s (as
# the API reference advises), for at most a minute from that first 409: then it is stuck.
_IN_FLIGHT_START, _IN_FLIGHT_CAP, _IN_FLIGHT_BUDGET = 0.5, 8.0, 60.0
_URLS_KEPT = 1024


class Transport:
    """Sends :class:`ApiCall`\\ s. Owns nothing above HTTP: resources describe calls,
    the transport does the rest."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock,
        limiter: RateLimiter | None,
        http: HttpClient,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._monotonic = readings(clock)[0]
        self._limiter = limiter
        # The in-memory limiter hands out a free token without a coroutine (most calls),
        # and takes an answer's feedback without a RateLimitFeedback made for it. (Not a
        # subclass: one may wrap acquire() or observe() with its own bookkeeping.)
        own = limiter if type(limiter) is InMemoryRateLimiter else None
        self._try_acquire = own.try_acquire if own is not None else None
        self._observe_answer = own.observe_answer if own is not None else None
        self._http = http
        # The caller's defaults first, so the SDK's own headers (the key) always win.
        self._headers = {
            **(default_headers or {}),
            "X-Api-Key": config.api_key,
            "User-Agent": config.user_agent,
            "Accept": "application/json",
        }
        if config.aurous_version:
            self._headers["Aurous-Version"] = config.aurous_version
        self._secrets = (config.api_key,)
        # Recent paths' (immutable) URLs: a watched character's is parsed once, not per poll.
        self._urls: dict[str, URL] = {}
        # Tasks waiting for a rate-limit token: closing the session ends their wait.
        self._waiting: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def limiter(self) -> RateLimiter | None:
        return self._limiter

    @property
    def timeout(self) -> float:
        """The per-attempt timeout, in seconds."""
        return self._config.timeout

    # -- the retry loop ------------------------------------------------------------------

    async def request(self, call: ApiCall) -> ApiResponse:
        """Send ``call`` with retries; return its answer or raise an ``AurousError``.

        An error of a POST carries the call's ``idempotency_key`` and whether any
        attempt may have reached the server (``may_have_been_processed``).
        """
        if call.method == "POST" and call.idempotency_key is None:
            call = attrs.evolve(call, idempotency_key=str(uuid.uuid4()))
        # (The retry loop is inline: each call resumes every coroutine it runs in.)
        try:
            config, clock = self._config, self._clock
            deadline = current_deadline()
            waits: Any = None  # the backoff schedule, made only if a retry needs it
            in_flight_wait, in_flight_since = _IN_FLIGHT_START, math.nan
            confirmed = False  # the free reads of call.confirm have had their turn
            failures = 0  # attempts that count against max_retries
            reached = False  # some attempt went out (the server may have acted on it)
            attempt = 0
            while True:
                attempt += 1
                limiter = self._limiter
                if limiter is not None:
                    if self._closed:
                        raise SessionClosedError("this AurousSession is closed")
                    # A free token is taken without a coroutine (the in-memory limiter's).
                    if self._try_acquire is None or not self._try_acquire(call.bucket):
                        await self._acquire(limiter, call.bucket, deadline)
                if attempt == 1 and call.before_send is not None:
                    try:
                        await call.before_send()
                    except BaseException:
                        if limiter is not None:
                            limiter.release(call.bucket)  # nothing was sent
                        raise
                if pending_token_callback() is not None:
                    fire_token_callback()
                # Whether the request went out; without a way to know (a session brought by
                # the caller has no trace hook of ours) assume it did.
                sent = SendMarker(not self._http.traced)
                try:
                    response = await self._attempt(call, attempt, deadline, sent)
                except AurousError as exc:
                    error = exc
                else:
                    return _recorded(response)
                finally:
                    if sent.sent:
                        reached = True
                    elif limiter is not None:
                        # Cancelled or refused before a byte left: the token was not spent.
                        limiter.release(call.bucket)
                error.may_have_been_processed = reached and _may_have_acted(error)
                wait: float | None
                if isinstance(error, IdempotencyKeyInUseError) and (attempt > 1 or call.resumed):
                    # Our own first attempt holds the key and is still running on the server.
                    now = clock.monotonic()
                    if math.isnan(in_flight_since):
                        in_flight_since = now
                    if call.confirm is not None and not confirmed:
                        # Watch for its effect with free reads instead of spending a paid
                        # token on every re-check; one more POST settles what they cannot.
                        confirmed = True
                        answer = await self._await_original(call, error, deadline, in_flight_since)
                        if answer is not None:
                            return _recorded(answer)
                        continue
                    wait, in_flight_wait = in_flight_wait, min(in_flight_wait * 2, _IN_FLIGHT_CAP)
                    if now - in_flight_since + wait > _IN_FLIGHT_BUDGET:
                        raise error
                else:
                    failures += 1
                    if failures > config.max_retries or not _retryable(call, error, sent.sent):
                        raise error
                    if waits is None:
                        waits = backoff.expo(base=2, factor=1.0, max_value=_BACKOFF_CAP)
                        waits.send(None)
                    wait = self._retry_wait(error, waits)
                if deadline is not None and clock.monotonic() + wait > deadline:
                    # The deadline, not the error, ends the call: the retry would have gone.
                    raise _deadline_error(call, error)
                if logger.isEnabledFor(logging.WARNING):
                    logger.warning(
                        "%s %s: %s; retrying in %.2fs (attempt %d of %d)", call.method, call.path,
                        _short(error), wait, attempt + 1, config.max_retries + 1,
                    )
                await clock.sleep(wait)
        except AurousError as error:
            if call.method == "POST":
                _label_paid_error(error, call)
            # Nothing of aiohttp's may ride along (its request holds the API key): on
            # Python 3.10 a task resumed by an exception keeps it as the context of
            # everything raised until it next suspends.
            error.__context__ = None
            raise

    async def _await_original(self, call: ApiCall, error: AurousError, deadline: float | None,
                              since: float) -> ApiResponse | None:
        """Poll ``call.confirm`` (0.5 s doubling to 8 s, within the in-flight budget and
        the deadline) until it shows the original's effect; ``None`` if it never does."""
        assert call.confirm is not None
        clock, wait = self._clock, _IN_FLIGHT_START
        while True:
            now = clock.monotonic()
            if now - since + wait > _IN_FLIGHT_BUDGET:
                return None
            if deadline is not None and now + wait > deadline:
                raise error
            await clock.sleep(wait)
            wait = min(wait * 2, _IN_FLIGHT_CAP)
            try:
                answer = await call.confirm()
            except AurousError:
                continue  # a read that failed tells nothing either way
            if answer is not None:
                return answer

    async def _acquire(self, limiter: RateLimiter, bucket: str, deadline: float | None) -> None:
        # (Its caller has just checked that the session is open, with no await between.)
        task = asyncio.current_task()
        if task is not None:
            self._waiting.add(task)
        try:
            await limiter.acquire(bucket, deadline=deadline)
        except asyncio.CancelledError:
            if self._closed and task is not None and _uncancel(task):
                raise SessionClosedError(
                    "the session was closed while the call waited for a rate-limit token"
                ) from None
            raise
        finally:
            if task is not None:
                self._waiting.discard(task)

    def close(self) -> None:
        """End every call waiting for a token (with :class:`SessionClosedError`)."""
        self._closed = True
        for task in list(self._waiting):
            task.cancel()

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
                raise DeadlineExceededError(f"{call.method} {call.path}: the deadline passed")
            timeout = min(timeout, left)
        headers = self._headers
        body: bytes | None = None
        if call.idempotency_key is not None or call.json is not None or call.headers:
            headers = {**call.headers, **headers} if call.headers else dict(headers)
            if call.idempotency_key is not None:
                headers["Idempotency-Key"] = call.idempotency_key
            if call.json is not None:
                body = json.dumps(call.json, separators=(",", ":")).encode()
                headers["Content-Type"] = "application/json"
        url = self._urls.get(call.path)
        if url is None:
            if len(self._urls) >= _URLS_KEPT:
                self._urls.clear()
            url = self._urls[call.path] = URL(config.base_url + call.path, encoded=True)
        sent_at = self._monotonic()
        status, resp_headers = 0, _NO_HEADERS
        try:
            answer = await self._http.send(
                call.method, url, params=call.params, data=body, headers=headers,
                timeout=timeout, marker=sent, secrets=self._secrets,
            )
            status, resp_headers = answer.status, answer.headers
        except MalformedResponseError as exc:
            status = exc.status  # an oversized body still told us about the bucket
            raise
        finally:
            # Every attempt that went out is reported, answered or not (even when
            # cancelled): the limiter learns when the server's refill clock may have
            # started.
            if self._observe_answer is not None and sent.sent:  # (most attempts)
                self._observe_answer(call.bucket, status, resp_headers, self._clock,
                                     sent_at, self._monotonic())
            elif self._limiter is not None:
                self._feedback(call.bucket, status, resp_headers,
                               sent_at if sent.sent else None)
        request_id = resp_headers.get(_REQUEST_ID)
        if request_id is not None:
            request_id = safe_request_id(request_id, *self._secrets)
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug("%s %s -> %d %s attempt=%d %.3fs", call.method, call.path, status,
                         request_id or "-", attempt, clock.monotonic() - sent_at)
        if 200 <= status < 300:
            return self._success(status, resp_headers, answer.body, request_id, debug)
        if 300 <= status < 400:
            location = redact(resp_headers.get("Location", "?"), *self._secrets)
            raise APIStatusError(
                f"unexpected redirect to {location}; redirects are not followed so the API "
                "key never travels to another host", status=status, code="unexpected_redirect",
                request_id=request_id, headers=redact_headers(resp_headers, *self._secrets),
            )
        error = error_from_response(status, CIMultiDict(resp_headers), answer.body,
                                    now=clock.time(), secrets=self._secrets)
        if isinstance(error, RateLimitError) and logger.isEnabledFor(logging.WARNING):
            logger.warning("%s %s: 429 %s (retry after %s s)", call.method, call.path,
                           error.code, error.retry_after)
        raise error

    def _success(self, status: int, headers: CIMultiDictProxy[str], raw: bytes,
                 request_id: str | None, debug: bool) -> ApiResponse:
        try:
            # Unscanned: the scan for integers beyond 64 bits waits until something
            # reads ``data`` (a Character read from it needs none; see ApiResponse).
            data = json_loads_unscanned(raw) if raw else None
        except (ValueError, RecursionError):
            data = _INVALID
        if data is _INVALID:
            # Raised outside the except block: the decode error (which holds the whole
            # body, echoed secrets and all) must not ride along as __context__.
            raise MalformedResponseError(
                f"HTTP {status} with a body that is not valid JSON", status=status,
                code="invalid_json", request_id=request_id,
                headers=redact_headers(headers, *self._secrets),
                body=redact(raw[:200].decode("utf-8", "replace"), *self._secrets),
            )
        if debug and headers.get(_REPLAYED, "").lower() == "true":
            # Expected after a retry of a paid call: the server answers with the
            # original result instead of charging again.
            logger.debug("answer replayed from the idempotency store (%s)", request_id)
        if data is not None and _json.UNSCANNED_MAY_DIFFER:
            data = (data, raw)  # Unscanned (without orjson it is json.loads' already)
        return ApiResponse(status=status, data=data, headers=headers, request_id=request_id)

    def _feedback(self, bucket: str, status: int, headers: Mapping[str, str],
                  sent_at: float | None) -> None:
        limiter = self._limiter
        assert limiter is not None  # called only with one
        if sent_at is None and status == 0:
            return  # nothing went out and nothing came back: nothing to learn
        received_at = None if sent_at is None else self._monotonic()
        if self._observe_answer is not None:
            self._observe_answer(bucket, status, headers, self._clock, sent_at, received_at)
        else:
            values = answer_values(status, headers, self._clock)
            limiter.observe(bucket, answer_feedback(values, sent_at, received_at))


def _recorded(response: ApiResponse) -> ApiResponse:
    """``response``, kept too where ``with_raw_response`` collects answers."""
    sink = captured()
    if sink is not None:
        sink.append(response)
    return response


def _deadline_error(call: ApiCall, cause: AurousError) -> DeadlineExceededError:
    """The flow's deadline passed before ``call`` could be retried after ``cause``."""
    error = DeadlineExceededError(f"{call.method} {call.path}: the deadline passed before "
                                  f"a retry after {_short(cause)}")
    error.may_have_been_processed = cause.may_have_been_processed
    return error


def _retryable(call: ApiCall, error: AurousError, sent: bool) -> bool:
    if isinstance(error, RateLimitError):
        return True  # refused before processing: safe for every method
    if isinstance(error, APIConnectionError) and not error.transient:
        return False
    if call.method == "DELETE":
        # Not idempotent in effect (a repeat answers 404): only if it never went out.
        return isinstance(error, APIConnectionError) and not sent
    if isinstance(error, (APIConnectionError, ServerError)):
        return True
    # A 2xx whose body is not JSON at all (cut or mangled on the way): ask again.
    return isinstance(error, MalformedResponseError) and error.code == "invalid_json"


def _may_have_acted(error: AurousError) -> bool:
    """Whether the server may have processed an attempt that ended in ``error``: a 4xx
    (other than a 409 for our own key) or a 429 says it did not."""
    if isinstance(error, APIStatusError) and 400 <= error.status < 500:
        return isinstance(error, IdempotencyKeyInUseError)
    return True


def _label_paid_error(error: AurousError, call: ApiCall) -> None:
    error.idempotency_key = call.idempotency_key
    if error.may_have_been_processed:
        hint = (f" (the server may have processed it: retry with the same "
                f"idempotency_key={call.idempotency_key!r} so it is not charged twice)")
        error.args = (f"{error.args[0] if error.args else ''}{hint}", *error.args[1:])


def _uncancel(task: asyncio.Task[Any]) -> bool:
    """Take back our own cancellation of ``task``; False if someone else cancelled it too."""
    uncancel = getattr(task, "uncancel", None)  # (Python 3.10 counts no cancellations)
    return uncancel is None or bool(uncancel() == 0)


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())

_INVALID = object()

# Read from every answer, as multidict's case-insensitive keys (no case folding per
# lookup).
_REQUEST_ID, _REPLAYED = istr("Aurous-Request-Id"), istr("Aurous-Idempotent-Replayed")


def _short(error: AurousError) -> str:
    return (f"{error.status} {error.code or type(error).__name__}"
            if isinstance(error, APIStatusError) else f"{type(error).__name__}: {error}")
