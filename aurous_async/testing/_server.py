"""The fake Aurous server: the characters surface of api-spec.md over real HTTP.

It keeps the rules that matter to a client — auth, versions, the error envelope, token
buckets, idempotency, the character lifecycle and its credits — and lets a test switch
on faults. Time comes from an injectable clock, so synthesis that takes 45 s and buckets
that refill 6 tokens a minute can play out in milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
import json
import math
import random
import re
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from .._clock import Clock, ScaledClock, SystemClock
from ._faults import Fault, FaultKind, FaultPlan
from ._ids import new_id
from ._state import (
    ATTRIBUTE_FIELDS,
    DEFAULT_BUCKETS,
    DEFAULT_VERSION,
    IDEMPOTENCY_TTL,
    KNOWN_VERSIONS,
    POSES,
    UPLOAD_TICKET_TTL,
    UPLOAD_URL_TTL,
    BucketLimit,
    CharacterRecord,
    Charge,
    FakeTeam,
    IdempotencyEntry,
    RecordedRequest,
    TokenBucket,
    UploadRecord,
    iso,
    new_api_key,
    new_team,
)

__all__ = ["FakeAurousServer"]

SYNTHESIS_COST = 4.0
REGENERATE_COST = 1.0
MAX_NAME_LENGTH = 120
MAX_ATTRIBUTE_LENGTH = 2000
_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UPLOAD_TYPES = {
    "jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"
}

# route template -> bucket; the character buckets of api-spec.md §2.8.
_BUCKETS: dict[str, str] = {
    "GET /v1/characters": "characters_get",
    "GET /v1/characters/{character_id}": "characters_get",
    "PATCH /v1/characters/{character_id}": "characters_post",
    "DELETE /v1/characters/{character_id}": "characters_post",
    "POST /v1/characters/{character_id}/save": "characters_post",
    "POST /v1/characters/{character_id}/resynthesize": "characters_synthesize",
    "POST /v1/characters/{character_id}/refs/regenerate": "characters_synthesize",
    "POST /v1/characters/uploads/init": "characters_post",
    "POST /v1/characters/uploads/classify": "characters_post",
    "GET /v1/balance": "get",
    # POST /v1/characters depends on the body (synthesize vs upload flow): see _bucket_for.
}


class ApiError(Exception):
    """An error answer in the envelope of api-spec.md §2.5."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def _invalid(code: str, message: str, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", code, message, param)


def _not_found(param: str | None = "character_id") -> ApiError:
    return ApiError(404, "not_found", "resource_not_found", "No such character.", param)


@attrs.define
class _Ctx:
    request: web.Request
    route: str
    team: FakeTeam
    version: str
    request_id: str
    body: Any
    raw_body: bytes
    fault: Fault | None


# The middleware hands the parsed request to the handler through a context variable:
# both run in the same task, and request-dict keys would need aiohttp's newest API.
_CURRENT: contextvars.ContextVar[_Ctx] = contextvars.ContextVar("aurous_fake_ctx")

_Handler = Callable[["FakeAurousServer", _Ctx], Awaitable[tuple[int, Any]]]


class FakeAurousServer:
    """An in-process Aurous API on a free loopback port.

    Use it as an async context manager; ``base_url`` and ``api_key`` are then set::

        async with FakeAurousServer(time_scale=60) as fake:
            async with aiohttp.ClientSession() as http:
                r = await http.get(f"{fake.base_url}/v1/balance",
                                   headers={"X-Api-Key": fake.api_key})

    ``clock`` (or ``time_scale``, shorthand for ``ScaledClock(time_scale)``) drives
    synthesis, buckets, timestamps and idempotency expiry. ``synthesis_seconds`` is how
    long a synthesis takes in API time, spread by ±``synthesis_jitter`` (a fraction).
    ``buckets`` overrides bucket limits by name.
    ``insufficient_credits_code`` and ``rate_limit_header_prefix`` pick between the
    documented spellings (``"balance_too_low"``, ``"RateLimit-"``) so clients can be
    tested against both.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        time_scale: float | None = None,
        synthesis_seconds: float = 45.0,
        synthesis_jitter: float = 0.0,
        buckets: Mapping[str, BucketLimit] | None = None,
        credits: float = 1000.0,
        api_key: str | None = None,
        after_resynthesis: str = "reviewing",
        failure_rate: float = 0.0,
        insufficient_credits_code: str = "insufficient_credits",
        rate_limit_header_prefix: str = "X-RateLimit-",
        seed: int = 0,
    ) -> None:
        if clock is not None and time_scale is not None:
            raise ValueError("give clock or time_scale, not both")
        if after_resynthesis not in ("reviewing", "ready"):
            raise ValueError("after_resynthesis must be 'reviewing' or 'ready'")
        if synthesis_seconds < 0:
            raise ValueError("synthesis_seconds must be >= 0")
        if not 0 <= synthesis_jitter < 1:
            raise ValueError("synthesis_jitter must be a fraction in [0, 1)")
        self.synthesis_jitter = synthesis_jitter
        self.host = host
        self.port = port
        self.clock: Clock = clock or (ScaledClock(time_scale) if time_scale else SystemClock())
        self.synthesis_seconds = float(synthesis_seconds)
        self.bucket_limits: dict[str, BucketLimit] = {**DEFAULT_BUCKETS, **(buckets or {})}
        self.after_resynthesis = after_resynthesis
        self.failure_rate = failure_rate
        self.insufficient_credits_code = insufficient_credits_code
        self.rate_limit_header_prefix = rate_limit_header_prefix
        self.faults = FaultPlan(seed=seed)
        self.requests: list[RecordedRequest] = []
        self.ledger: list[Charge] = []
        self.rate_limited: collections.Counter[str] = collections.Counter()
        self.keep_request_log = True
        self._rng = random.Random(seed)
        self._teams: dict[str, FakeTeam] = {}
        self._key_index: dict[str, FakeTeam] = {}
        self._seq = 0
        self._pending_failures: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.default_team = self.add_team(name="Default Team", credits=credits, api_key=api_key)

    # -- set-up ------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """A live key of the default team."""
        return self.default_team.api_key

    def add_team(
        self,
        *,
        name: str = "Team",
        credits: float = 1000.0,
        api_key: str | None = None,
        scope: str = "full",
        pinned_version: str = DEFAULT_VERSION,
    ) -> FakeTeam:
        """Create a team with one key (given or freshly minted ``al_live_…``)."""
        team = new_team(name, credits, self.clock.time())
        team.pinned_version = pinned_version
        self._teams[team.id] = team
        self.add_key(team, api_key or new_api_key(), scope=scope)
        return team

    def add_key(self, team: FakeTeam, api_key: str, *, scope: str = "full") -> str:
        """Give ``team`` another key with ``scope`` (``read``, ``write`` or ``full``)."""
        if scope not in ("read", "write", "full"):
            raise ValueError("scope must be read, write or full")
        if api_key in self._key_index:
            raise ValueError("that key already belongs to a team")
        team.keys[api_key] = scope
        self._key_index[api_key] = team
        return api_key

    def revoke_key(self, api_key: str) -> None:
        """Revoke a key: requests with it then get 401 ``revoked_api_key``."""
        self._key_index[api_key].revoked_keys.add(api_key)

    def add_character(
        self,
        *,
        name: str = "Seeded",
        status: str = "ready",
        team: FakeTeam | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Put a character straight into ``status`` (no charge) and return its id."""
        team = team or self.default_team
        record = self._new_character(team, name, dict(attributes or {"gender": "female"}))
        record.status = status
        if status == "synthesizing":
            record.synthesis_done_at = self.clock.monotonic() + self.synthesis_seconds
        if status in ("reviewing", "ready"):
            record.refs = self._make_refs(record.id, ("portrait", "front", "side", "back"))
        return record.id

    def fail_next_synthesis(self, character_id: str, message: str = "Synthesis failed.") -> None:
        """Make the next synthesis of ``character_id`` end in ``failed``."""
        self._pending_failures[character_id] = message

    def finish_synthesis(self, character_id: str) -> None:
        """End a running synthesis now, whatever the clock says."""
        record = self._find_any(character_id)
        if record.status == "synthesizing":
            record.synthesis_done_at = self.clock.monotonic()
            self._settle(record)

    def character(self, character_id: str) -> dict[str, Any]:
        """The character as the API would render it now (for assertions)."""
        record = self._find_any(character_id)
        self._settle(record)
        return self._render(record)

    def team_of(self, api_key: str) -> FakeTeam:
        return self._key_index[api_key]

    # -- inspection --------------------------------------------------------------------

    def charges_for(self, character_id: str) -> list[Charge]:
        """Every charge billed against one character."""
        return [c for c in self.ledger if c.character_id == character_id]

    def credits_spent(self, team: FakeTeam | None = None) -> float:
        team_id = (team or self.default_team).id
        return sum(c.credits for c in self.ledger if c.team_id == team_id)

    def requests_to(self, route: str) -> list[RecordedRequest]:
        """Recorded requests whose ``"METHOD /template"`` equals ``route``."""
        return [r for r in self.requests if r.route == route]

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> str:
        """Start listening; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(middlewares=[self._middleware], client_max_size=2 * 1024 * 1024)
        app.router.add_get("/v1/characters", self._wrap(_list_characters))
        app.router.add_post("/v1/characters", self._wrap(_create_character))
        app.router.add_post("/v1/characters/uploads/init", self._wrap(_upload_init))
        app.router.add_post("/v1/characters/uploads/classify", self._wrap(_upload_classify))
        app.router.add_get("/v1/characters/{character_id}", self._wrap(_get_character))
        app.router.add_patch("/v1/characters/{character_id}", self._wrap(_update_character))
        app.router.add_delete("/v1/characters/{character_id}", self._wrap(_delete_character))
        app.router.add_post("/v1/characters/{character_id}/save", self._wrap(_save_character))
        app.router.add_post(
            "/v1/characters/{character_id}/resynthesize", self._wrap(_resynthesize)
        )
        app.router.add_post(
            "/v1/characters/{character_id}/refs/regenerate", self._wrap(_regenerate_ref)
        )
        app.router.add_get("/v1/balance", self._wrap(_balance))
        app.router.add_put("/_uploads/{upload_id}", self._put_upload)
        app.router.add_get("/_storage/{character_id}/{pose}", self._get_ref)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @contextlib.contextmanager
    def run_in_thread(self, *, startup_timeout: float = 10.0) -> Iterator[FakeAurousServer]:
        """Serve from a background thread with its own event loop, for synchronous test
        code or any async framework::

            with FakeAurousServer(time_scale=60).run_in_thread() as fake:
                ...  # talk to fake.base_url from anywhere

        Set-up helpers (``add_character``, ``faults.add``) may be called from the test's
        thread between requests.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-aurous", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(startup_timeout)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(startup_timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(startup_timeout)
            loop.close()

    async def __aenter__(self) -> FakeAurousServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<FakeAurousServer {self.base_url or 'not started'}>"

    # -- the request pipeline ----------------------------------------------------------

    def _wrap(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            ctx = _CURRENT.get()
            if ctx.fault is not None and ctx.fault.kind is FaultKind.SLOW:
                # Slow *processing*: the request is in flight (its idempotency key busy)
                # for the whole delay, and takes effect after a client may have given up.
                await asyncio.sleep(ctx.fault.delay)
            status, payload = await handler(self, ctx)
            return web.json_response(payload, status=status)

        return endpoint

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        request_id = new_id("req", self.clock.time())
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        route = f"{request.method} {template}"
        raw_body = await request.read()
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            route=route,
            query=dict(request.query),
            headers=dict(request.headers),
            body=raw_body,
            request_id=request_id,
        )
        if self.keep_request_log:
            self.requests.append(record)
        headers: dict[str, str] = {"Aurous-Request-Id": request_id}
        fault = self.faults.pick(route)
        record.fault = fault.kind.value if fault else None
        try:
            if fault is not None and not fault.process:
                return self._fault_response(fault, headers, record)
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
            ctx = _Ctx(request, route, team, version, request_id, body, raw_body, fault)
            _CURRENT.set(ctx)
            if request.method == "POST":
                response = await self._idempotent(request, ctx, handler, headers, record)
            else:
                response = await handler(request)
        except ApiError as err:
            headers.update(err.headers)
            headers.setdefault("Aurous-Version", DEFAULT_VERSION)
            record.status = err.status
            return web.json_response(_envelope(err, request_id), status=err.status,
                                     headers=headers)
        record.status = response.status
        response.headers.update(headers)
        if fault is not None:
            return await self._apply_fault(request, fault, response, record)
        return response

    def _authenticate(self, request: web.Request) -> tuple[FakeTeam, str]:
        key = request.headers.get("X-Api-Key")
        if key is None:
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        if not key:
            raise ApiError(401, "authentication", "missing_api_key", "No API key was sent.")
        team = self._key_index.get(key)
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
        if route == "POST /v1/characters":
            generate = isinstance(body, dict) and body.get("generate") is True
            return "characters_synthesize" if generate else "characters_post"
        return _BUCKETS.get(route, "get")

    def _take_token(self, team: FakeTeam, name: str, headers: dict[str, str]) -> None:
        now = self.clock.monotonic()
        bucket = team.buckets.get(name)
        if bucket is None:
            bucket = team.buckets[name] = TokenBucket(self.bucket_limits[name], now)
        ok = bucket.take(now)
        prefix = self.rate_limit_header_prefix
        headers[f"{prefix}Limit"] = str(int(bucket.capacity))
        headers[f"{prefix}Remaining"] = str(bucket.remaining())
        headers[f"{prefix}Reset"] = str(math.ceil(self.clock.time() + bucket.seconds_until_full()))
        if not ok:
            self.rate_limited[name] += 1
            retry_after = max(1, math.ceil(bucket.seconds_until_token()))
            headers["Retry-After"] = str(retry_after)
            raise ApiError(429, "rate_limit", "too_many_requests",
                           f"Rate limit exceeded for {name}. Retry after {retry_after}s.")

    async def _idempotent(
        self,
        request: web.Request,
        ctx: _Ctx,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        headers: dict[str, str],
        record: RecordedRequest,
    ) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key") or request.headers.get("Aurous-Idempotent-Key")
        if key is None:
            return await handler(request)
        if not 1 <= len(key) <= 256:
            raise _invalid("invalid_format", "Idempotency-Key must be 1-256 characters.",
                           "Idempotency-Key")
        now = self.clock.monotonic()
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

    def _fault_response(
        self, fault: Fault, headers: dict[str, str], record: RecordedRequest
    ) -> web.StreamResponse:
        headers.setdefault("Aurous-Version", DEFAULT_VERSION)
        if fault.kind is FaultKind.HTML_502:
            record.status = 502
            html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(status=502, text=html, content_type="text/html", headers=headers)
        if fault.kind is FaultKind.JSON_503:
            record.status = 503
            err = ApiError(503, "server_error", "provider_unavailable",
                           "The service is temporarily unavailable.")
            return web.json_response(_envelope(err, record.request_id), status=503, headers=headers)
        raise AssertionError(f"fault {fault.kind} cannot answer before processing")

    async def _apply_fault(
        self,
        request: web.Request,
        fault: Fault,
        response: web.StreamResponse,
        record: RecordedRequest,
    ) -> web.StreamResponse:
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
            return self._fault_response(fault, headers, record)
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

    # -- uploads and storage (plain HTTP, no API key, as signed URLs are) --------------

    async def _put_upload(self, request: web.Request) -> web.StreamResponse:
        upload = self._find_upload(request.match_info["upload_id"])
        if upload is None or not secrets.compare_digest(
            request.query.get("signature", ""), upload.signature
        ):
            return web.Response(status=403, text="signature does not match")
        if self.clock.monotonic() - upload.created_at > UPLOAD_URL_TTL:
            return web.Response(status=403, text="upload URL expired")
        upload.data = await request.read()
        return web.Response(status=200)

    async def _get_ref(self, request: web.Request) -> web.StreamResponse:
        try:
            record = self._find_any(request.match_info["character_id"])
        except ApiError:
            return web.Response(status=404)
        pose = request.match_info["pose"]
        token = "token=" + request.query.get("token", "?")
        for ref in record.refs:
            if ref["pose"] == pose and ref["url"].endswith(token):
                return web.Response(body=b"\x89PNG\r\n\x1a\nfake", content_type="image/png")
        return web.Response(status=403)

    # -- characters --------------------------------------------------------------------

    def _new_character(self, team: FakeTeam, name: str, attributes: dict[str, Any] | None,
                       version: str = DEFAULT_VERSION) -> CharacterRecord:
        self._seq += 1
        wall = self.clock.time()
        record = CharacterRecord(
            id=new_id("char", wall), team_id=team.id, name=name, status="ready",
            created_at=wall, updated_at=wall, seq=self._seq, attributes=attributes, refs=[],
            aurous_version=version,
        )
        team.characters[record.id] = record
        return record

    def _make_refs(self, character_id: str, poses: tuple[str, ...]) -> list[dict[str, str]]:
        base = f"{self.base_url}/_storage/{character_id}"
        return [
            {"pose": pose, "url": f"{base}/{pose}?token={secrets.token_urlsafe(24)}"}
            for pose in poses
        ]

    def _begin_synthesis(self, record: CharacterRecord, outcome: str,
                         poses: tuple[str, ...]) -> None:
        record.status = "synthesizing"
        record.error_message = None
        record.updated_at = self.clock.time()
        spread = self._rng.uniform(-self.synthesis_jitter, self.synthesis_jitter)
        record.synthesis_done_at = self.clock.monotonic() + self.synthesis_seconds * (1 + spread)
        record.synthesis_outcome = outcome
        record.synthesis_poses = poses
        failure = self._pending_failures.pop(record.id, None)
        if failure is None and self.failure_rate and self._rng.random() < self.failure_rate:
            failure = "Synthesis provider returned an error."
        record.synthesis_error = failure
        self._settle(record)

    def _settle(self, record: CharacterRecord) -> None:
        """Finish a synthesis whose time has come (lazily, on the next look)."""
        if record.status != "synthesizing" or record.synthesis_done_at is None:
            return
        if self.clock.monotonic() < record.synthesis_done_at:
            return
        record.synthesis_done_at = None
        record.updated_at = self.clock.time()
        if record.synthesis_error is not None:
            record.status = "failed"
            record.error_message = record.synthesis_error
            return
        record.status = record.synthesis_outcome
        fresh = {ref["pose"]: ref for ref in self._make_refs(record.id, record.synthesis_poses)}
        kept = [ref for ref in record.refs if ref["pose"] not in fresh]
        record.refs = [*fresh.values(), *kept] if kept else list(fresh.values())

    def _find_any(self, character_id: str) -> CharacterRecord:
        for team in self._teams.values():
            if character_id in team.characters:
                return team.characters[character_id]
        raise _not_found()

    def _find(self, team: FakeTeam, character_id: str) -> CharacterRecord:
        record = team.characters.get(character_id)
        if record is None or record.status == "deleted":
            raise _not_found()
        self._settle(record)
        return record

    def _find_upload(self, upload_id: str) -> UploadRecord | None:
        for team in self._teams.values():
            if upload_id in team.uploads:
                return team.uploads[upload_id]
        return None

    def _charge(self, ctx: _Ctx, character_id: str, operation: str, cost: float) -> None:
        ctx.team.credits -= cost
        self.ledger.append(Charge(ctx.team.id, character_id, operation, cost, ctx.request_id))

    def _require_credits(self, team: FakeTeam, cost: float) -> None:
        if team.credits < cost:
            raise ApiError(402, "invalid_request", self.insufficient_credits_code,
                           f"Team available balance is {team.credits:g} credits, "
                           f"the call requires {cost:g}.")

    def _render(self, record: CharacterRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "object": "character",
            "name": record.name,
            "status": record.status,
            "refs": [dict(ref) for ref in record.refs],
            "created_at": iso(record.created_at),
            "updated_at": iso(record.updated_at),
            "attributes": dict(record.attributes) if record.attributes is not None else None,
            "error_message": record.error_message,
            "aurous_version": record.aurous_version,
        }


# -- handlers -----------------------------------------------------------------------------


async def _get_character(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    record = server._find(ctx.team, ctx.request.match_info["character_id"])
    return 200, server._render(record)


async def _list_characters(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    query = ctx.request.query
    limit = 20
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise _invalid("invalid_format", "limit must be an integer.", "limit") from None
        if not 1 <= limit <= 100:
            raise _invalid("value_out_of_range", "limit must be between 1 and 100.", "limit")
    rows = sorted(ctx.team.characters.values(), key=lambda r: (r.created_at, r.seq), reverse=True)
    after = query.get("starting_after")
    if after is not None:
        index = next((i for i, r in enumerate(rows) if r.id == after), None)
        if index is None:
            raise _invalid("invalid_format", "starting_after is not a character of this team.",
                           "starting_after")
        rows = rows[index + 1:]
    visible = [r for r in rows if r.status != "deleted"]
    page = visible[:limit]
    for record in page:
        server._settle(record)
    has_more = len(visible) > limit
    return 200, {
        "object": "list",
        "data": [server._render(r) for r in page],
        "has_more": has_more,
        "next_cursor": page[-1].id if has_more and page else None,
    }


async def _create_character(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    body = _require_object(ctx.body)
    _reject_unknown(body, ("name", "generate", "upload_ids", "attributes"))
    name = _validate_name(body.get("name"), required=True)
    generate = body.get("generate", False)
    if not isinstance(generate, bool):
        raise _invalid("invalid_format", "generate must be a boolean.", "generate")
    upload_ids = body.get("upload_ids")
    if upload_ids is not None and (
        not isinstance(upload_ids, list) or not all(isinstance(u, str) for u in upload_ids)
    ):
        raise _invalid("invalid_format", "upload_ids must be an array of strings.", "upload_ids")
    if generate == bool(upload_ids):
        raise _invalid("parameter_invalid_combination",
                       "Send exactly one of upload_ids (non-empty) or generate: true.",
                       "upload_ids")
    attributes = _validate_attributes(body.get("attributes"))
    if generate:
        if not attributes:
            raise _invalid("missing_field", "attributes are required with generate: true.",
                           "attributes")
        server._require_credits(ctx.team, SYNTHESIS_COST)
        record = server._new_character(ctx.team, name, attributes, ctx.version)
        server._charge(ctx, record.id, "synthesize", SYNTHESIS_COST)
        server._begin_synthesis(record, "reviewing", ("portrait", "front", "side", "back"))
        return 201, server._render(record)
    assert upload_ids is not None
    if len(upload_ids) > 6:
        raise _invalid("value_out_of_range", "At most 6 upload_ids.", "upload_ids")
    now = server.clock.monotonic()
    uploads = []
    for upload_id in upload_ids:
        upload = server._find_upload(upload_id)
        if upload is not None and upload.team_id != ctx.team.id:
            raise ApiError(404, "not_found", "resource_not_found", "No such upload.", "upload_ids")
        if (upload is None or upload.consumed or upload.data is None
                or now - upload.created_at > UPLOAD_TICKET_TTL):
            raise _invalid("upload_invalid", f"Upload {upload_id} is unknown, expired, "
                           "not uploaded or already used.", "upload_ids")
        uploads.append(upload)
    record = server._new_character(ctx.team, name, attributes, ctx.version)
    for upload in uploads:
        upload.consumed = True
    record.refs = [
        ref
        for upload in uploads
        for ref in server._make_refs(record.id, (_classify(upload.filename)[0],))
    ]
    return 201, server._render(record)


async def _update_character(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    record = server._find(ctx.team, ctx.request.match_info["character_id"])
    body = _require_object(ctx.body)
    _reject_unknown(body, ("name", "attributes"))
    if "name" in body:
        record.name = _validate_name(body["name"], required=True)
    if "attributes" in body:
        record.attributes = _validate_attributes(body["attributes"])
    record.updated_at = server.clock.time()
    return 200, server._render(record)


async def _delete_character(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    record = server._find(ctx.team, ctx.request.match_info["character_id"])
    if record.status == "reviewing":
        del ctx.team.characters[record.id]
    else:
        record.status = "deleted"
        record.updated_at = server.clock.time()
        record.synthesis_done_at = None
    return 200, {"id": record.id, "object": "character", "deleted": True}


async def _save_character(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    record = server._find(ctx.team, ctx.request.match_info["character_id"])
    if record.status == "reviewing":
        record.status = "ready"
        record.updated_at = server.clock.time()
    elif record.status != "ready":
        raise _invalid("invalid_request_error",
                       f"Character is {record.status}; only reviewing characters can be saved.")
    return 200, server._render(record)


async def _resynthesize(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    record = server._find(ctx.team, ctx.request.match_info["character_id"])
    body = _require_object(ctx.body)
    _reject_unknown(body, ("force_all",))
    if "force_all" in body and not isinstance(body["force_all"], bool):
        raise _invalid("invalid_request_error", "force_all must be a boolean.", "force_all")
    _require_eligible(record)
    server._require_credits(ctx.team, SYNTHESIS_COST)
    server._charge(ctx, record.id, "resynthesize", SYNTHESIS_COST)
    server._begin_synthesis(record, server.after_resynthesis, ("portrait", "front", "side", "back"))
    return 200, server._render(record)


async def _regenerate_ref(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    record = server._find(ctx.team, ctx.request.match_info["character_id"])
    body = _require_object(ctx.body)
    _reject_unknown(body, ("pose", "prompt_override"))
    pose = body.get("pose")
    if pose not in POSES:
        raise _invalid("invalid_request_error", "pose must be one of " + ", ".join(POSES) + ".",
                       "pose")
    prompt = body.get("prompt_override")
    if prompt is not None and not isinstance(prompt, str):
        raise _invalid("invalid_request_error", "prompt_override must be a string.",
                       "prompt_override")
    _require_eligible(record)
    server._require_credits(ctx.team, REGENERATE_COST)
    server._charge(ctx, record.id, "regenerate_ref", REGENERATE_COST)
    server._begin_synthesis(record, server.after_resynthesis, (pose,))
    return 200, server._render(record)


async def _upload_init(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    body = _require_object(ctx.body)
    filename = body.get("filename")
    if not isinstance(filename, str) or not 1 <= len(filename) <= 120:
        raise _invalid("invalid_format", "filename must be a string of 1-120 characters.",
                       "filename")
    extension = body.get("extension")
    content_type = body.get("content_type")
    if extension not in _UPLOAD_TYPES:
        raise _invalid("invalid_format", "extension must be jpeg, jpg, png or webp.", "extension")
    if content_type not in set(_UPLOAD_TYPES.values()):
        raise _invalid("invalid_format", "content_type must be image/jpeg, image/png or "
                       "image/webp.", "content_type")
    if _UPLOAD_TYPES[extension] != content_type:
        raise _invalid("parameter_invalid_combination",
                       "extension and content_type do not match.", "content_type")
    wall = server.clock.time()
    upload = UploadRecord(
        id=new_id("upl", wall), team_id=ctx.team.id, filename=filename, extension=extension,
        content_type=content_type, created_at=server.clock.monotonic(),
        signature=secrets.token_urlsafe(24),
    )
    ctx.team.uploads[upload.id] = upload
    return 200, {
        "upload_id": upload.id,
        "upload_url": f"{server.base_url}/_uploads/{upload.id}?signature={upload.signature}",
        "upload_headers": {"Content-Type": content_type},
        "expires_at": iso(wall + UPLOAD_URL_TTL),
    }


async def _upload_classify(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    body = _require_object(ctx.body)
    upload_id = body.get("upload_id")
    if not isinstance(upload_id, str):
        raise _invalid("missing_field", "upload_id is required.", "upload_id")
    upload = server._find_upload(upload_id)
    if upload is not None and upload.team_id != ctx.team.id:
        raise ApiError(404, "not_found", "resource_not_found", "No such upload.", "upload_id")
    if (upload is None or upload.consumed or upload.data is None
            or server.clock.monotonic() - upload.created_at > UPLOAD_TICKET_TTL):
        raise _invalid("upload_invalid", "The upload is unknown, expired or already used.",
                       "upload_id")
    pose, confidence = _classify(upload.filename)
    return 200, {"upload_id": upload.id, "pose": pose, "confidence": confidence}


async def _balance(server: FakeAurousServer, ctx: _Ctx) -> tuple[int, Any]:
    credits = round(ctx.team.credits, 4)
    return 200, {"credits": credits, "held_credits": 0, "available_credits": credits,
                 "currency": "credit", "billing_mode": "prepaid"}


# -- helpers ------------------------------------------------------------------------------


def _envelope(err: ApiError, request_id: str) -> dict[str, Any]:
    return {"error": {
        "type": err.type,
        "code": err.code,
        "message": err.message,
        "param": err.param,
        "doc_url": f"https://docs.aurous-labs.com/errors#{err.code}",
        "request_id": request_id,
    }}


def _parse_body(method: str, raw: bytes) -> Any:
    if method not in ("POST", "PATCH") or not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _invalid("invalid_format", "The request body is not valid JSON.") from None


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid("invalid_format", "The request body must be a JSON object.")
    return body


def _reject_unknown(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    rejected = [key for key in body if key not in allowed]
    if rejected:
        raise _invalid("invalid_request", "Unknown or immutable fields: " + ", ".join(rejected)
                       + ".", rejected[0])


def _validate_name(name: Any, *, required: bool) -> str:
    if name is None and required:
        raise _invalid("missing_field", "name is required.", "name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("invalid_request", "name must be a non-empty string.", "name")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid("invalid_request", f"name is longer than {MAX_NAME_LENGTH} characters.",
                       "name")
    return name


def _validate_attributes(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("invalid_request", "attributes must be an object.", "attributes")
    _reject_unknown(value, ATTRIBUTE_FIELDS)
    clean: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "age":
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 200:
                raise _invalid("invalid_request", "age must be an integer from 0 to 200.",
                               "attributes.age")
        elif not isinstance(item, str) or len(item) > MAX_ATTRIBUTE_LENGTH:
            raise _invalid("invalid_request", f"{key} must be a string of at most "
                           f"{MAX_ATTRIBUTE_LENGTH} characters.", f"attributes.{key}")
        clean[key] = item
    return clean


def _require_eligible(record: CharacterRecord) -> None:
    if record.status not in ("reviewing", "ready", "failed"):
        raise _invalid("invalid_request_error",
                       f"Character is {record.status}; it can be resynthesized only when "
                       "reviewing, ready or failed.")


def _classify(filename: str) -> tuple[str, float]:
    lowered = filename.lower()
    for pose in ("portrait", "front", "side", "back"):
        if pose in lowered:
            return pose, 0.92
    return "other", 0.41


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
