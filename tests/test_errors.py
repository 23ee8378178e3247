"""Every documented error code maps to its class, with every attribute kept; hostile
bodies still become typed errors."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aurous_async as aa
from aurous_async._errors import error_from_response, parse_retry_after
from aurous_async._transport import ApiResponse
from aurous_async.testing import FakeAurousServer, FakeClock

from .conftest import serve_app

NOW = 1_800_000_000.0

# (status, type, code) -> class, for every code api-spec.md §2.5 and §6 document.
TABLE = [
    (400, "invalid_request", "missing_field", aa.InvalidRequestError),
    (400, "invalid_request", "invalid_format", aa.InvalidRequestError),
    (400, "invalid_request", "value_out_of_range", aa.InvalidRequestError),
    (400, "invalid_request", "parameter_invalid_combination", aa.InvalidRequestError),
    (400, "invalid_request", "mutually_exclusive_input", aa.InvalidRequestError),
    (400, "invalid_request", "character_not_ready", aa.InvalidRequestError),
    (400, "invalid_request", "upload_invalid", aa.InvalidRequestError),
    (400, "invalid_request", "invalid_request_error", aa.InvalidRequestError),
    (400, "invalid_request", "invalid_request", aa.InvalidRequestError),
    (400, "invalid_request", "unknown_version", aa.InvalidRequestError),
    (400, "invalid_request", "generation_not_cancellable", aa.InvalidRequestError),
    (400, "invalid_request", "prompt_blocked", aa.InvalidRequestError),
    (400, "invalid_request", "embeddings_batch_not_supported", aa.InvalidRequestError),
    (400, "invalid_request", "insufficient_credits", aa.InsufficientCreditsError),
    (402, "invalid_request", "insufficient_credits", aa.InsufficientCreditsError),
    (402, "invalid_request", "balance_too_low", aa.InsufficientCreditsError),
    (402, None, None, aa.InsufficientCreditsError),
    (401, "authentication", "missing_api_key", aa.AuthenticationError),
    (401, "authentication", "invalid_api_key", aa.AuthenticationError),
    (401, "authentication", "revoked_api_key", aa.AuthenticationError),
    (403, "authentication", "missing_scope", aa.PermissionDeniedError),
    (401, "authentication", "missing_scope", aa.PermissionDeniedError),
    (404, "not_found", "resource_not_found", aa.NotFoundError),
    (404, "not_found", "forbidden_resource", aa.NotFoundError),
    (404, "not_found", "chat_cancel_target_not_found", aa.NotFoundError),
    (410, "not_found", "output_expired", aa.NotFoundError),
    (409, "invalid_request", "idempotency_key_in_use", aa.IdempotencyKeyInUseError),
    (409, "invalid_request", "chat_cancel_target_already_terminal", aa.ConflictError),
    (422, "invalid_request", "output_not_available", aa.InvalidRequestError),
    (429, "rate_limit", "too_many_requests", aa.RateLimitError),
    (429, "rate_limit", "concurrency_limit_exceeded", aa.RateLimitError),
    (500, "server_error", "internal_error", aa.ServerError),
    (502, "server_error", "provider_unavailable", aa.ServerError),
    (503, "server_error", "provider_unavailable", aa.ServerError),
    (504, "server_error", "provider_timeout", aa.ServerError),
    # Unknown codes fall back to the class of their status...
    (400, "invalid_request", "brand_new_code", aa.InvalidRequestError),
    (404, "not_found", "brand_new_code", aa.NotFoundError),
    # ...and status wins over a contradicting type or code.
    (503, "invalid_request", "insufficient_credits", aa.ServerError),
    (404, "rate_limit", "too_many_requests", aa.NotFoundError),
    (418, "rate_limit", None, aa.RateLimitError),
    (418, None, None, aa.APIStatusError),
]


@pytest.mark.parametrize(("status", "type_", "code", "cls"), TABLE)
def test_error_code_maps_to_class_with_attributes(status: int, type_: str | None, code: str | None,
                                                  cls: type[aa.APIStatusError]) -> None:
    body = {"error": {"type": type_, "code": code, "message": "m", "param": "p",
                      "doc_url": f"https://docs.aurous-labs.com/errors#{code}",
                      "request_id": "req_body"}}
    error = error_from_response(status, {"Aurous-Request-Id": "req_header", "Retry-After": "3"},
                                json.dumps(body).encode(), now=NOW)
    assert type(error) is cls
    assert (error.status, error.type, error.code, error.message, error.param) == (status, type_, code, "m", "p")
    assert error.doc_url == f"https://docs.aurous-labs.com/errors#{code}"
    assert error.request_id == "req_body"
    assert error.headers["Retry-After"] == "3"
    assert json.loads(error.body or "") == body
    if isinstance(error, aa.RateLimitError):
        assert error.retry_after == 3.0


def test_envelope_without_param_and_with_odd_doc_url() -> None:
    body = b'{"error": {"type": "rate_limit", "code": "too_many_requests", "message": "slow down", ' \
           b'"request_id": "req_1", "doc_url": "https://docs.aurous-labs.com/errors/too_many_requests"}}'
    error = error_from_response(429, {}, body, now=NOW)
    assert isinstance(error, aa.RateLimitError)
    assert error.param is None and error.retry_after is None
    assert error.doc_url == "https://docs.aurous-labs.com/errors/too_many_requests"


@pytest.mark.parametrize(("status", "body", "cls"), [
    (502, b"<html><body>Bad Gateway</body></html>", aa.ServerError),
    (503, b"", aa.ServerError),
    (404, b"Not Found", aa.NotFoundError),
    (400, b'{"error": "just a string"}', aa.InvalidRequestError),
    (400, b'{"error": {"code": 5, "message": ["x"]}}', aa.InvalidRequestError),
    (401, b"[1, 2, 3]", aa.AuthenticationError),
    (200, b"{}", aa.MalformedResponseError),
])
def test_non_envelope_bodies_still_typed(status: int, body: bytes, cls: type) -> None:
    error = error_from_response(status, {"Aurous-Request-Id": "req_h"}, body, now=NOW)
    assert type(error) is cls
    assert error.request_id == "req_h"
    assert error.status == status
    assert str(error)


@pytest.mark.parametrize(("header", "expected"), [
    ("12", 12.0), ("0", 0.0), ("1.5", 1.5), (" 7 ", 7.0),
    ("-3", None), ("nan", None), ("inf", None), ("soon", None), ("", None), (None, None),
    ("Mon, 99 Foo 2027 08:00:10 GMT", None), ("1e400", None),
])
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_retry_after_http_date() -> None:
    import email.utils

    date = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(date, now=NOW) == pytest.approx(30.0)
    past = email.utils.formatdate(NOW - 30, usegmt=True)
    assert parse_retry_after(past, now=NOW) == 0.0


async def test_errors_from_the_fake_carry_request_ids(session: aa.AurousSession, sfake: FakeAurousServer,
                                                      auto_clock: FakeClock) -> None:
    team = sfake.add_team(credits=1)
    cid = sfake.add_character(team=team)
    async with aa.AurousSession(team.api_key, base_url=sfake.base_url, clock=auto_clock) as poor:
        with pytest.raises(aa.InsufficientCreditsError) as info:
            await poor.characters.resynthesize(cid)
    assert info.value.code == "insufficient_credits"
    assert info.value.request_id == sfake.requests[-1].request_id
    sfake.insufficient_credits_code = "balance_too_low"
    async with aa.AurousSession(team.api_key, base_url=sfake.base_url, clock=auto_clock) as poor:
        with pytest.raises(aa.InsufficientCreditsError) as info:
            await poor.characters.resynthesize(cid)
    assert info.value.code == "balance_too_low"

    async with aa.AurousSession("al_live_" + "9" * 64, base_url=sfake.base_url, clock=auto_clock) as bad:
        with pytest.raises(aa.AuthenticationError) as auth:
            await bad.balance()
    assert auth.value.code == "invalid_api_key"
    reader = sfake.add_key(sfake.default_team, "al_live_" + "7" * 64, scope="read")
    async with aa.AurousSession(reader, base_url=sfake.base_url, clock=auto_clock) as ro:
        with pytest.raises(aa.PermissionDeniedError) as scope:
            await ro.characters.save(cid)
    assert scope.value.code == "missing_scope"


# -- hostile bodies through the decoders ---------------------------------------------------

def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    # Numbers no float can hold (a 401-digit int once escaped as OverflowError), and
    # nesting deep enough to exhaust a naive recursive decoder.
    | st.integers(min_value=10**309, max_value=10**401) | st.integers(max_value=-(10**309))
    | st.text(max_size=20)
    | st.integers(min_value=200, max_value=600).map(_nested),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
character_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.text(max_size=10),
        "status": json_values | st.sampled_from(["ready", "reviewing", "queued"]),
        "name": json_values,
        "refs": json_values | st.lists(st.fixed_dictionaries({}, optional={"pose": json_values, "url": json_values})),
        "created_at": json_values | st.just("2026-05-08T10:00:00Z"),
        "attributes": json_values | st.fixed_dictionaries({}, optional={"age": json_values, "gender": json_values}),
        "error_message": json_values,
        "aurous_version": json_values,
        "error": json_values,
    },
)
balance_like = st.fixed_dictionaries(
    {"credits": json_values, "available_credits": json_values},
    optional={"held_credits": json_values, "confidence": json_values, "pose": json_values,
              "upload_id": json_values},
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.just(b"[" * 100_000),
    balance_like.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    character_like.map(lambda v: json.dumps(v).encode()),
)
# A 2xx half the time (every success body goes through five decoders), any status else.
statuses = st.integers(min_value=200, max_value=299) | st.integers(min_value=100, max_value=599)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Aurous-Request-Id",
                     "RateLimit-Remaining", "Content-Type"]),
    st.text(max_size=30), max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, body=bodies, hdrs=headers)
def test_any_status_and_body_yield_a_model_or_an_aurous_error(status: int, body: bytes, hdrs: dict) -> None:
    if 200 <= status < 300:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return  # the transport turns non-JSON 2xx into MalformedResponseError (tested live)
        response = ApiResponse(status=status, data=data, headers=hdrs, request_id=None)
        for cls in (aa.Character, aa.DeletedCharacter, aa.Balance, aa.UploadTicket,
                    aa.UploadClassification):
            try:
                value = response.into(cls)
            except aa.AurousError:
                continue
            assert isinstance(value, cls)
    else:
        error = error_from_response(status, hdrs, body, now=NOW)
        assert isinstance(error, aa.APIStatusError)
        assert error.status == status
        str(error), repr(error)
        if isinstance(error, aa.RateLimitError):
            assert error.retry_after is None or error.retry_after >= 0


async def test_hostile_bodies_over_the_wire_are_typed(auto_clock: FakeClock) -> None:
    """A sweep of nasty answers from a real HTTP server through a real session."""
    from aiohttp import web

    answers = [
        (200, b"not json"), (200, b"[]"), (200, b'{"id": 5, "status": "ready"}'),
        (200, b'{"status": "ready"}'), (200, b'{"id": "c", "status": "ready", "refs": "nope"}'),
        (200, b'{"id": "c", "status": "ready", "created_at": "yesterday"}'),
        (200, b"\xff\xfe\x00"), (200, b"9" * 5000), (200, b"[" * 10000 + b"]" * 10000),
        (204, b""), (301, b""), (400, b"\x00\x01"), (418, b"{}"), (500, b"{" * 100),
        (599, b'{"error": {"type": "server_error"}}'),
    ]
    index = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal index
        status, body = answers[index]
        return web.Response(status=status, body=body, headers={"Retry-After": "garbage"})

    app = web.Application()
    app.router.add_get("/v1/characters/{id}", handler)
    async with serve_app(app) as url, aa.AurousSession("al_live_" + "2" * 64, base_url=url,
                                                       clock=auto_clock, max_retries=0) as s:
        for position in range(len(answers)):
            index = position  # the handler answers with answers[index]
            with pytest.raises(aa.AurousError):
                await s.characters.get("c")


def test_error_messages_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    key = "al_live_" + "5" * 64
    body = json.dumps({"error": {"type": "authentication", "code": "invalid_api_key",
                                 "message": f"key {key} is not valid"}}).encode()
    caplog.set_level(logging.DEBUG)
    error = error_from_response(401, {}, body, now=NOW, secrets=(key,))
    assert key not in str(error) and key not in (error.body or "") and key not in repr(error)


TIMES = ["2026-05-08T10:00:00Z", "2026-05-08T10:00:00+02:00", "2026-05-08T10:00:00"]
# A character the fast decoder takes whole (every field of its type)...
typed_character = st.fixed_dictionaries(
    {"id": st.text(max_size=8), "status": st.sampled_from(["ready", "synthesizing", "new?"])},
    optional={
        "name": st.text(max_size=8),
        "refs": st.lists(st.fixed_dictionaries(
            {"pose": st.sampled_from(["front", "side", "odd"]), "url": st.text(max_size=8)})),
        "created_at": st.sampled_from(TIMES),
        "updated_at": st.sampled_from(TIMES),
        "attributes": st.fixed_dictionaries({}, optional={
            "age": st.integers(0, 120) | st.text(max_size=3), "gender": st.text(max_size=5),
            "unknown": st.integers()}),
        "error_message": st.none() | st.text(max_size=5),
        "aurous_version": st.none() | st.text(max_size=5),
    })
# ...and one with a single field (or a field of a ref or of the attributes) replaced by
# any JSON value: each check by which the fast decoder hands over to the generated one.
FIELD_PATHS = [("id",), ("status",), ("name",), ("refs",), ("created_at",), ("updated_at",),
               ("attributes",), ("error_message",), ("aurous_version",), ("request_id",),
               ("refs", 0), ("refs", 0, "pose"), ("refs", 0, "url"), ("attributes", "age"),
               ("attributes", "gender")]


def _with_field(data: dict, path: tuple, value: object) -> dict:
    data = json.loads(json.dumps(data))  # a copy, nested parts too
    if len(path) > 1:
        data[path[0]] = data.get(path[0]) or ([{"pose": "front", "url": "u"}]
                                              if path[0] == "refs" else {})
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


# Each JSON type alike (the checks are on types), hostile values as well.
any_json_type = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
                 | st.lists(st.none(), max_size=2) | st.dictionaries(st.text(max_size=3), st.none(),
                                                                     max_size=2) | json_values)
one_field_off = st.builds(_with_field, typed_character, st.sampled_from(FIELD_PATHS),
                          any_json_type)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=character_like | typed_character | one_field_off)
def test_the_fast_character_decoder_matches_the_generated_one(data: dict) -> None:
    """The hand-written decoder for Character (the hot path) gives exactly what cattrs'
    generated function gives — the same Character, or a failure for the same input."""
    from aurous_async._convert import _character_fields, converter

    def run(structure: object) -> object:
        try:
            return structure(data, aa.Character)  # type: ignore[operator]
        except Exception as exc:
            return type(exc)

    fast, generic = run(converter.structure), run(_character_fields)
    assert fast == generic
    if isinstance(fast, aa.Character):
        assert fast.request_id == generic.request_id  # not part of equality
