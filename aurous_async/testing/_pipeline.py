"""The fake's request pipeline: what every ``/v1/`` request goes through before and
after its handler — the request log, faults, auth and versions, the token bucket,
idempotency, and the error envelope.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
from aiohttp import web

from ._errors import ApiError, envelope, invalid
from ._faults import Fault, FaultKind, FaultPlan
from ._ids import new_id
from ._records import (
    DEFAULT_VERSION,
    IDEMPOTENCY_TTL,
    KNOWN_VERSIONS,
    FakeTeam,
    IdempotencyEntry,
    RecordedRequest,
)
from ._state import FakeState

__all__ = ["Ctx", "Handler", "Pipeline", "Route"]

_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class Ctx:
    """One API request as a handler sees it: parsed, authenticated and paid for."""

    request: web.Request
    route: str
    team: FakeTeam
    version: str
    request_id: str
    body: Any
    raw_body: bytes
    fault: Fault | None
    state: FakeState


#: A handler answers ``(status, JSON payload)`` or raises :class:`ApiError`.
Handler = Callable[[Ctx], Awaitable[tuple[int, Any]]]


@attrs.frozen
class Route:
    """One API route: ``"METHOD /path/template"``, its handler and its bucket (a name,
    or a function of the parsed body when the body decides, as for POST /v1/characters).
    """

    method: str
    path: str
    handler: Handler
    bucket: str | Callable[[Any], str]

    @property
    def name(self) -> str:
        """``"METHOD /path/template"``, as faults and the request log name routes."""
        return f"{self.method} {self.path}"


# The middleware hands the parsed request to the handler through a context variable:
# both run in the same task, and request-dict keys would need aiohttp's newest API.
_CURRENT: contextvars.ContextVar[Ctx] = contextvars.ContextVar("aurous_fake_ctx")


class Pipeline:
    """Runs every ``/v1/`` request of one fake through the API's cross-cutting rules."""

    def __init__(self, state: FakeState, faults: FaultPlan, routes: Iterable[Route]) -> None:
        self.state = state
        self.faults = faults
        self.routes = {route.name: route for route in routes}

    def add_to(self, app: web.Application) -> None:
        """Register the middleware and every route on ``app``."""
        app.middlewares.append(self.middleware)
        for route in self.routes.values():
            app.router.add_route(route.method, route.path, self._endpoint(route.handler))

    def _endpoint(self, handler: Handler) -> _AiohttpHandler:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            ctx = _CURRENT.get()
            if ctx.fault is not None and ctx.fault.kind is FaultKind.SLOW:
                # Slow *processing*: the request is in flight (its idempotency key busy)
                # for the whole delay, and takes effect after a client may have given up.
                await _hold(ctx.fault)
            status, payload = await handler(ctx)
            return web.json_response(payload, status=status)

        return endpoint

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: _AiohttpHandler) -> web.StreamResponse:
        """The aiohttp middleware: everything but ``/v1/`` passes straight through."""
        if not request.path.startswith("/v1/"):
            return await handler(request)
        self.state.requests_in_progress += 1
        try:
            return await self._handle(request, handler)
        finally:
            self.state.requests_in_progress -= 1

    async def _handle(self, request: web.Request,
                      handler: _AiohttpHandler) -> web.StreamResponse:
        state = self.state
        request_id = new_id("req", state.clock.time())
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        route = f"{request.method} {template}"
        raw_body = await request.read()
        record = RecordedRequest(
            method=request.method, path=request.path, route=route, query=dict(request.query),
            headers=dict(request.headers), body=raw_body, request_id=request_id,
            at=state.clock.monotonic(),
        )
        if state.keep_request_log:
            state.requests.append(record)
        headers: dict[str, str] = {"Aurous-Request-Id": request_id}
        fault = self.faults.pick(route)
        record.fault = fault.kind.value if fault else None
        try:
            if fault is not None and not fault.process:
                return _fault_response(fault, headers, record)
            team, version = self._authenticate(request)
            record.team_id = team.id
            headers["Aurous-Version"] = version
            if request.match_info.http_exception is not None:
                exc = request.match_info.http_exception
                if exc.status == 405:
                    raise ApiError(405, "invalid_request", "method_not_allowed",
                                   f"{request.method} is not allowed on {request.path}.")
                raise ApiError(404, "not_found", "resource_not_found",
                               f"No route {request.method} {request.path}.", None)
            body = _parse_body(request.method, raw_body)
            bucket = self._bucket_for(route, body)
            record.bucket = bucket
            self._take_token(team, bucket, headers)
            ctx = Ctx(request, route, team, version, request_id, body, raw_body, fault, state)
            _CURRENT.set(ctx)
            if request.method == "POST":
                response = await self._idempotent(request, ctx, handler, record)
            else:
                response = await handler(request)
        except ApiError as err:
            headers.update(err.headers)
            headers.setdefault("Aurous-Version", DEFAULT_VERSION)
            record.status = err.status
            return web.json_response(envelope(err, request_id), status=err.status,
                                     headers=headers)
        record.status = response.status
        response.headers.update(headers)
        if fault is not None:
            return await _apply_fault(request, fault, response, record)
        return response

    def _authenticate(self, request: web.Request) -> tuple[FakeTeam, str]:
        key = request.headers.get("X-Api-Key")
        if key is None:
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        if not key:
            raise ApiError(401, "authentication", "missing_api_key", "No API key was sent.")
        team = self.state.team_for_key(key)
        if team is None:
            raise ApiError(401, "authentication", "invalid_api_key", "The API key is not valid.")
        if key in team.revoked_keys:
            raise ApiError(401, "authentication", "revoked_api_key", "The API key was revoked.")
        scope = team.keys[key]
        if request.method != "GET" and scope == "read":
            raise ApiError(403, "authentication", "missing_scope",
                           "This key has the read scope; the call needs write.")
        version = request.headers.get("Aurous-Version")
        if version is None:
            return team, team.pinned_version
        if not _VERSION_RE.match(version) or version not in KNOWN_VERSIONS:
            raise ApiError(400, "invalid_request", "unknown_version",
                           f"Unknown Aurous-Version {version[:40]!r}.", "Aurous-Version")
        return team, version

    def _bucket_for(self, route: str, body: Any) -> str:
        bucket = self.routes[route].bucket
        return bucket if isinstance(bucket, str) else bucket(body)

    def _take_token(self, team: FakeTeam, name: str, headers: dict[str, str]) -> None:
        state = self.state
        bucket = state.bucket(team, name)
        ok = bucket.take(state.clock.monotonic())
        prefix = state.rate_limit_header_prefix
        headers[f"{prefix}Limit"] = str(int(bucket.capacity))
        headers[f"{prefix}Remaining"] = str(bucket.remaining())
        headers[f"{prefix}Reset"] = str(math.ceil(state.clock.time()
                                                  + bucket.seconds_until_full()))
        if not ok:
            state.rate_limited[name] += 1
            retry_after = max(1, math.ceil(bucket.seconds_until_token()))
            headers["Retry-After"] = str(retry_after)
            raise ApiError(429, "rate_limit", "too_many_requests",
                           f"Rate limit exceeded for {name}. Retry after {retry_after}s.")

    async def _idempotent(self, request: web.Request, ctx: Ctx, handler: _AiohttpHandler,
                          record: RecordedRequest) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key") or request.headers.get("Aurous-Idempotent-Key")
        if key is None:
            return await handler(request)
        if not 1 <= len(key) <= 256:
            raise invalid("invalid_format", "Idempotency-Key must be 1-256 characters.",
                          "Idempotency-Key")
        now = self.state.clock.monotonic()
        store = ctx.team.idempotency
        # Entries sit in insertion (= time) order: expired ones are all at the front.
        while store:
            oldest = next(iter(store))
            if now - store[oldest].created_at < IDEMPOTENCY_TTL:
                break
            del store[oldest]
        body_hash = hashlib.sha256(
            json.dumps(ctx.body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        entry = store.get(key)
        if entry is not None:
            if entry.route != request.path or entry.body_hash != body_hash:
                raise ApiError(409, "invalid_request", "idempotency_key_in_use",
                               "This Idempotency-Key was used with a different request.",
                               "Idempotency-Key")
            if entry.in_flight:
                raise ApiError(409, "invalid_request", "idempotency_key_in_use",
                               "A request with this Idempotency-Key is still in progress.",
                               "Idempotency-Key")
            record.replayed = True
            return web.json_response(entry.payload, status=entry.status,
                                     headers={"Aurous-Idempotent-Replayed": "true"})
        entry = store[key] = IdempotencyEntry(request.path, body_hash, now)
        try:
            response = await handler(request)
        except BaseException:
            del store[key]
            raise
        if not 200 <= response.status < 300 or not isinstance(response, web.Response):
            del store[key]
            return response
        entry.in_flight = False
        entry.status = response.status
        entry.payload = json.loads(response.body) if response.body else None  # type: ignore[arg-type]
        return response


def _parse_body(method: str, raw: bytes) -> Any:
    if method not in ("POST", "PATCH") or not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid("invalid_format", "The request body is not valid JSON.") from None


def _fault_response(fault: Fault, headers: dict[str, str],
                    record: RecordedRequest) -> web.StreamResponse:
    headers.setdefault("Aurous-Version", DEFAULT_VERSION)
    if fault.kind is FaultKind.HTML_502:
        record.status = 502
        html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
        return web.Response(status=502, text=html, content_type="text/html", headers=headers)
    if fault.kind is FaultKind.JSON_503:
        record.status = 503
        err = ApiError(503, "server_error", "provider_unavailable",
                       "The service is temporarily unavailable.")
        return web.json_response(envelope(err, record.request_id), status=503, headers=headers)
    raise AssertionError(f"fault {fault.kind} cannot answer before processing")


async def _apply_fault(request: web.Request, fault: Fault, response: web.StreamResponse,
                       record: RecordedRequest) -> web.StreamResponse:
    kind = fault.kind
    if kind is FaultKind.DROP:
        record.status = None
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Raising CancelledError is aiohttp's way to end a handler with no answer.
        raise asyncio.CancelledError
    if kind in (FaultKind.HTML_502, FaultKind.JSON_503):
        headers = {k: v for k, v in response.headers.items()
                   if k.startswith(("Aurous", "X-", "Rate"))}
        return _fault_response(fault, headers, record)
    if kind is FaultKind.SLOW:
        return response
    if not isinstance(response, web.Response) or response.body is None:
        return response
    if kind is FaultKind.BROKEN_JSON:
        record.status = 200
        return web.Response(status=200, body=b'{"id": "char_',
                            headers={k: v for k, v in response.headers.items()
                                     if k.lower() != "content-length"})
    payload = json.loads(response.body)  # type: ignore[arg-type]
    if kind is FaultKind.EXTRA_FIELDS:
        payload = _add_unknown_fields(payload)
    elif kind is FaultKind.UNKNOWN_STATUS:
        payload = _replace_status(payload, fault.status_value)
    headers = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "content-type")}
    return web.json_response(payload, status=response.status, headers=headers)


def _add_unknown_fields(payload: Any) -> Any:
    if isinstance(payload, dict):
        out = {k: _add_unknown_fields(v) for k, v in payload.items()}
        out["x_future_field"] = {"nested": [1, "two", None]}
        return out
    if isinstance(payload, list):
        return [_add_unknown_fields(v) for v in payload]
    return payload


def _replace_status(payload: Any, value: str) -> Any:
    if isinstance(payload, dict):
        out = dict(payload)
        if "status" in out:
            out["status"] = value
        if isinstance(out.get("data"), list):
            out["data"] = [_replace_status(v, value) for v in out["data"]]
        return out
    return payload


async def _hold(fault: Fault) -> None:
    """A ``SLOW`` rule's hold: ``delay`` real seconds, or until the rule is released."""
    end = time.monotonic() + fault.delay
    # A flag looked at every 10 ms, not an asyncio.Event: the test that releases the rule
    # may run in another thread than the fake's loop.
    while not fault.released and (left := end - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(left, 0.01))
