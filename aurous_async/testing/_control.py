"""The fake's control API: drive and inspect a running fake over HTTP, from tests in
any language or another process. Everything the Python API offers, as JSON.

It lives under ``/_fake/``, a prefix the real API never uses; it needs no API key and
answers only to loopback peers (others get 403). Bodies are JSON objects; errors are
``{"error": {"code": ..., "message": ...}}`` with status 400, 403 or 404.

======================================  ===============================================
``GET /_fake/ledger``                   every charge: ``{"data": [{"team_id",
                                        "character_id", "operation", "credits",
                                        "request_id"}], "total_credits"}``;
                                        ``?character_id=`` filters
``GET /_fake/rate_limited``             429 answers per bucket: ``{"counts": {"characters_get":
                                        2}, "total": 2}``
``GET /_fake/requests``                 the request log: ``{"data": [{"index", "method",
                                        "path", "route", "query", "status", "request_id",
                                        "team_id", "bucket", "fault", "replayed",
                                        "idempotency_key", "body"}]}``; ``?route=METHOD
                                        /template`` filters, ``?since=N`` skips the first N
``POST /_fake/characters``              seed characters, uncharged: ``{"count": 3,
                                        "status": "ready", "name": "Seeded",
                                        "team_id": null}`` → 201 ``{"ids": [...]}``
``GET /_fake/faults``                   the fault rules: ``{"data": [{"kind", "route",
                                        "nth", "every", "probability", "times", "process",
                                        "delay", "status_value", "seen", "fired"}]}``
``POST /_fake/faults``                  add a rule, same fields and kinds as
                                        :class:`Fault` (``{"kind": "json_503", "route":
                                        "GET /v1/characters/{character_id}",
                                        "probability": 0.2}``; ``"route": "*"`` or none
                                        for every route) → 201 ``{"fault": {...}}``
``DELETE /_fake/faults``                remove every rule → ``{"cleared": 2}``
``GET /_fake/credits``                  ``{"team_id", "credits"}`` of the default team
                                        (``?team_id=`` for another)
``POST /_fake/credits``                 set them: ``{"credits": 50, "team_id": null}``
``GET /_fake/webhook_deliveries``       every delivery attempt: ``{"data": [{"endpoint_id",
                                        "event_id", "event_type", "attempt", "status",
                                        "error", "synthetic", "delivered_at", "event"}]}``
                                        (``status`` null when the receiver never answered)
======================================  ===============================================
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from ._faults import FaultPlan, fault_from_json, fault_to_json
from ._records import FakeTeam, RecordedRequest
from ._state import FakeState
from ._webhooks import Webhooks

__all__ = ["ControlApi"]

MAX_SEED = 10_000
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _ControlError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ControlApi:
    """The ``/_fake/`` routes of one fake server."""

    def __init__(self, state: FakeState, faults: FaultPlan, default_team: FakeTeam,
                 route_names: Collection[str], webhooks: Webhooks) -> None:
        self.state = state
        self.faults = faults
        self.default_team = default_team
        self.route_names = route_names
        self.webhooks = webhooks

    def add_to(self, app: web.Application) -> None:
        """Register the control routes on ``app``."""
        for method, path, handler in (
            ("GET", "/_fake/ledger", self._ledger),
            ("GET", "/_fake/rate_limited", self._rate_limited),
            ("GET", "/_fake/requests", self._requests),
            ("POST", "/_fake/characters", self._seed),
            ("GET", "/_fake/faults", self._faults),
            ("POST", "/_fake/faults", self._add_fault),
            ("DELETE", "/_fake/faults", self._clear_faults),
            ("GET", "/_fake/credits", self._credits),
            ("POST", "/_fake/credits", self._set_credits),
            ("GET", "/_fake/webhook_deliveries", self._deliveries),
        ):
            app.router.add_route(method, path, _guarded(handler))

    async def _ledger(self, request: web.Request) -> Any:
        wanted = request.query.get("character_id")
        charges = [c for c in self.state.ledger if wanted is None or c.character_id == wanted]
        return {"object": "list", "total_credits": sum(c.credits for c in charges), "data": [
            {"team_id": c.team_id, "character_id": c.character_id, "operation": c.operation,
             "credits": c.credits, "request_id": c.request_id} for c in charges]}

    async def _rate_limited(self, request: web.Request) -> Any:
        counts = dict(self.state.rate_limited)
        return {"counts": counts, "total": sum(counts.values())}

    async def _requests(self, request: web.Request) -> Any:
        route = request.query.get("route")
        since = _int_query(request, "since", 0)
        rows = list(enumerate(self.state.requests))[since:]
        return {"object": "list", "data": [
            _request_json(index, r) for index, r in rows if route is None or r.route == route]}

    async def _seed(self, request: web.Request) -> Any:
        body = await _json_object(request)
        count = body.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SEED:
            raise _ControlError(400, "invalid_request", f"count must be 1 to {MAX_SEED}")
        status, name = body.get("status", "ready"), body.get("name", "Seeded")
        if not isinstance(status, str) or not isinstance(name, str):
            raise _ControlError(400, "invalid_request", "status and name must be strings")
        team = self._team(body.get("team_id"))
        ids = [self.state.seed_character(team, name=name, status=status,
                                         attributes={"gender": "female"}).id
               for _ in range(count)]
        return 201, {"ids": ids}

    async def _faults(self, request: web.Request) -> Any:
        return {"object": "list", "data": [fault_to_json(f) for f in self.faults.rules()]}

    async def _add_fault(self, request: web.Request) -> Any:
        body = await _json_object(request)
        try:
            fault = fault_from_json(body, self.route_names)
        except ValueError as exc:
            raise _ControlError(400, "invalid_request", str(exc)) from None
        return 201, {"fault": fault_to_json(self.faults.add(fault))}

    async def _clear_faults(self, request: web.Request) -> Any:
        count = len(self.faults)
        self.faults.clear()
        return {"cleared": count}

    async def _credits(self, request: web.Request) -> Any:
        team = self._team(request.query.get("team_id"))
        return {"team_id": team.id, "credits": team.credits}

    async def _set_credits(self, request: web.Request) -> Any:
        body = await _json_object(request)
        credits = body.get("credits")
        if isinstance(credits, bool) or not isinstance(credits, (int, float)) \
                or not math.isfinite(credits):
            raise _ControlError(400, "invalid_request", "credits must be a finite number")
        team = self._team(body.get("team_id"))
        team.credits = float(credits)
        return {"team_id": team.id, "credits": team.credits}

    async def _deliveries(self, request: web.Request) -> Any:
        return {"object": "list", "data": [
            {"endpoint_id": d.endpoint_id, "event_id": d.event_id, "event_type": d.event_type,
             "attempt": d.attempt, "status": d.status, "error": d.error,
             "synthetic": d.synthetic, "delivered_at": d.delivered_at, "event": d.json()}
            for d in self.webhooks.deliveries]}

    def _team(self, team_id: Any) -> FakeTeam:
        if team_id is None:
            return self.default_team
        try:
            return self.state.team(str(team_id))
        except KeyError:
            raise _ControlError(404, "resource_not_found", f"no team {team_id!r}") from None


def _guarded(handler: Callable[[web.Request], Awaitable[Any]]) -> _Handler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        try:
            if not _is_loopback(request.remote):
                raise _ControlError(403, "forbidden", "the control API answers loopback only")
            result = await handler(request)
        except _ControlError as err:
            return web.json_response({"error": {"code": err.code, "message": err.message}},
                                     status=err.status)
        status, payload = result if isinstance(result, tuple) else (200, result)
        return web.json_response(payload, status=status)

    return endpoint


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _ControlError(400, "invalid_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _ControlError(400, "invalid_request", "the body must be a JSON object")
    return body


def _int_query(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise _ControlError(400, "invalid_request", f"{name} must be an integer >= 0")
    return number


def _request_json(index: int, r: RecordedRequest) -> dict[str, Any]:
    try:
        body: Any = r.json()
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = r.body.decode("utf-8", "replace")
    key = r.headers.get("Idempotency-Key") or r.headers.get("Aurous-Idempotent-Key")
    return {"index": index, "method": r.method, "path": r.path, "route": r.route,
            "query": r.query, "status": r.status, "request_id": r.request_id,
            "team_id": r.team_id, "bucket": r.bucket, "fault": r.fault, "replayed": r.replayed,
            "idempotency_key": key, "body": body}
