"""Webhook signature checks (``aa.webhooks.verify``) and the aiohttp receiver."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

import aurous_async.webhooks as wh
from aurous_async import AurousError
from aurous_async._clock import FakeClock
from aurous_async.webhooks import _handler
from aurous_async.webhooks._handler import _RecentIds

from .conftest import serve_app

SECRET = "whsec_" + "c0ffee" * 6
OLD_SECRET = "whsec_" + "0ld5ec" * 6
NOW = 1_800_000_000
MARKER = "body-marker-7f3a"  # stands for anything private a payload carries


def envelope(event_id: str = "evt_1", type_: str = "character.completed", **extra: Any) -> bytes:
    body = {"id": event_id, "object": "event", "type": type_, "created_at": "2027-01-15T08:00:00Z",
            "data": {"id": "char_1", "note": MARKER}, "synthetic": False, **extra}
    return json.dumps(body).encode()


def v1(body: bytes, secret: str = SECRET, t: int | str = NOW) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str = SECRET, t: int = NOW) -> str:
    return f"t={t},v1={v1(body, secret, t)}"


def reason_of(payload: bytes | str, header: str | None, secret: Any = SECRET, **kw: Any) -> str:
    with pytest.raises(wh.WebhookVerificationError) as info:
        wh.verify(payload, header, secret, now=kw.pop("now", NOW), **kw)
    assert SECRET not in str(info.value) + repr(info.value)
    assert MARKER not in str(info.value) + repr(info.value)
    return info.value.reason


# -- verify --------------------------------------------------------------------------------

def test_good_signature_gives_the_event() -> None:
    """Guards: a genuine delivery is refused, or its envelope is read wrongly."""
    body = envelope(livemode=True)
    event = wh.verify(body, sign(body), SECRET, now=NOW)
    assert event.id == "evt_1"
    assert event.type is wh.EventType.CHARACTER_COMPLETED
    assert event.created_at is not None and event.created_at.year == 2027
    assert event.data == {"id": "char_1", "note": MARKER}
    assert event.character_id == "char_1"
    assert event.synthetic is False
    assert event.extra == {"object": "event", "livemode": True}


def test_error_is_an_aurous_error_and_a_value_error() -> None:
    """Guards: ``except ValueError`` / ``except AurousError`` missing verification errors."""
    assert issubclass(wh.WebhookVerificationError, AurousError)
    assert issubclass(wh.WebhookVerificationError, ValueError)


def test_tampered_body_is_a_mismatch() -> None:
    """Guards: a signature that does not cover every byte of the body."""
    body = envelope()
    assert reason_of(body.replace(b"char_1", b"char_2"), sign(body)) == "mismatch"
    assert reason_of(body + b" ", sign(body)) == "mismatch"


def test_wrong_secret_is_a_mismatch() -> None:
    """Guards: a signature accepted whatever secret made it."""
    body = envelope()
    assert reason_of(body, sign(body, secret="whsec_attacker")) == "mismatch"


def test_a_timestamp_changed_after_signing_is_a_mismatch() -> None:
    """Guards: ``t`` left out of the signed text (then a replay could refresh it)."""
    body = envelope()
    assert reason_of(body, f"t={NOW + 1},v1={v1(body)}") == "mismatch"


@pytest.mark.parametrize("skew", [-301, 301, 10_000, -10_000])
def test_old_and_future_timestamps_are_expired(skew: int) -> None:
    """Guards: replays of old deliveries (and far-future ones) being accepted."""
    body = envelope()
    assert reason_of(body, sign(body, t=NOW + skew)) == "expired"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_within_tolerance_pass(skew: int) -> None:
    """Guards: an off-by-one window refusing deliveries exactly at the tolerance."""
    body = envelope()
    assert wh.verify(body, sign(body, t=NOW + skew), SECRET, now=NOW).id == "evt_1"


def test_tolerance_and_now_are_honoured() -> None:
    """Guards: ``tolerance=`` or ``now=`` being ignored."""
    body = envelope()
    header = sign(body, t=NOW - 100)
    assert reason_of(body, header, tolerance=60) == "expired"
    assert wh.verify(body, header, SECRET, tolerance=120, now=NOW).id == "evt_1"
    assert wh.verify(body, header, SECRET, now=NOW - 100).id == "evt_1"
    assert reason_of(body, header, now=NOW + 250) == "expired"


def test_now_defaults_to_the_current_time() -> None:
    """Guards: a default ``now`` that is not the Unix time (0, or monotonic time)."""
    body = envelope()
    t = int(time.time())
    assert wh.verify(body, sign(body, t=t), SECRET).id == "evt_1"
    assert reason_of(body, sign(body, t=t - 3600), now=time.time()) == "expired"


def test_a_forged_old_delivery_is_a_mismatch_not_expired() -> None:
    """Guards: the timestamp judged before the signature (``expired`` must mean genuine)."""
    body = envelope()
    assert reason_of(body, sign(body, secret="whsec_attacker", t=NOW - 9999)) == "mismatch"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header(header: str | None) -> None:
    """Guards: an absent header read as malformed (or worse, as valid)."""
    assert reason_of(envelope(), header) == "missing"


GOOD_HEX = "ab" * 32
OTHER_DIGITS = "\u0661" * 64  # Arabic-Indic ones: digits to str.isdigit, not hex
MALFORMED = [
    "garbage", "t", "=", ",", "t=,v1=" + GOOD_HEX, f"v1={GOOD_HEX}", f"t={NOW}",
    f"t=abc,v1={GOOD_HEX}", f"t=-5,v1={GOOD_HEX}", f"t=1.5,v1={GOOD_HEX}",
    f"t=1e9,v1={GOOD_HEX}", f"t={'9' * 13},v1={GOOD_HEX}", f"t=\u0663,v1={GOOD_HEX}",
    f"t={NOW},t={NOW},v1={GOOD_HEX}", f"t={NOW},v1=xyz", f"t={NOW},v1={GOOD_HEX[:-1]}",
    f"t={NOW},v1={GOOD_HEX}0", f"t={NOW},v1=", f"t={NOW},v0={GOOD_HEX}",
    f"t={NOW};v1={GOOD_HEX}", f"t={NOW},v1={GOOD_HEX},", f"t={NOW} v1={GOOD_HEX}",
    f"t={NOW},v1={OTHER_DIGITS}", f"t={NOW},v1 {GOOD_HEX}",
    sign(envelope()) + f",v1={GOOD_HEX}" * 130,  # genuine, but past the 8 KiB header cap
]


@pytest.mark.parametrize("header", MALFORMED)
def test_malformed_headers(header: str) -> None:
    """Guards: an unreadable header passing, or raising something other than the
    verification error."""
    assert reason_of(envelope(), header) == "malformed"


def test_other_schemes_and_spaces_around_items_are_tolerated() -> None:
    """Guards: a future ``v2=`` (or spaces after commas) breaking verification."""
    body = envelope()
    header = f" t={NOW} , v0={GOOD_HEX}, v1={v1(body).upper()} "
    assert wh.verify(body, header, SECRET, now=NOW).id == "evt_1"


@pytest.mark.parametrize("first_matches", [True, False])
def test_any_of_several_v1_values_may_match(first_matches: bool) -> None:
    """Guards: only the first (or last) ``v1`` being checked."""
    body = envelope()
    values = [v1(body), v1(body, secret="whsec_other")]
    header = f"t={NOW}," + ",".join(f"v1={v}" for v in (values if first_matches else values[::-1]))
    assert wh.verify(body, header, SECRET, now=NOW).id == "evt_1"


def test_several_secrets_during_rotation() -> None:
    """Guards: rotation needing a single secret (deliveries under the old one refused)."""
    body = envelope()
    for signed_with in (SECRET, OLD_SECRET):
        assert wh.verify(body, sign(body, signed_with), [SECRET, OLD_SECRET], now=NOW)
        assert wh.verify(body, sign(body, signed_with), (OLD_SECRET, SECRET), now=NOW)
    assert reason_of(body, sign(body, OLD_SECRET), [SECRET]) == "mismatch"


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: ``==`` on signatures, which leaks by timing how much of one matched."""
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    body = envelope()
    wh.verify(body, sign(body), [OLD_SECRET, SECRET], now=NOW)
    assert len(calls) == 2


def test_json_is_parsed_only_after_the_signature_holds() -> None:
    """Guards: parsing attacker input before checking it (then bad JSON says malformed)."""
    assert reason_of(b"{not json", sign(b"{other}")) == "mismatch"


@pytest.mark.parametrize("body", [
    b"{not json", b"", b"[1, 2]", b'"text"', b"null", b"[" * 100_000,
    b'{"type": "character.completed"}', b'{"id": 5, "type": "x"}', b'{"id": "", "type": "x"}',
    b'{"id": "evt_1"}', b'{"id": "evt_1", "type": 7}', b'{"id": "evt_1", "type": "x", "data": []}',
    b"\xff\xfe{}",
])
def test_signed_but_unusable_payloads_are_malformed(body: bytes) -> None:
    """Guards: a genuine signature over a non-event crashing the caller (or passing)."""
    assert reason_of(body, sign(body)) == "malformed"


def test_str_payload_is_encoded_as_utf8() -> None:
    """Guards: a ``str`` body encoded otherwise (latin-1, or repr) failing to verify."""
    body = envelope(title="Zoë ✓")
    event = wh.verify(body.decode(), sign(body), SECRET, now=NOW)
    assert event.extra["title"] == "Zoë ✓"
    # A lone surrogate is no text the API could have sent, even when "signed" as such.
    lone = '{"id": "evt_1", "type": "x", "note": "\ud800"}'
    assert reason_of(lone, sign(lone.encode("utf-8", "surrogatepass"))) == "malformed"


def test_unknown_types_and_fields_are_kept() -> None:
    """Guards: a newer server's event type or fields raising or being dropped."""
    body = json.dumps({"id": "evt_9", "type": "character.archived", "created": NOW,
                       "data": None, "synthetic": True, "created_at": "yesterday"}).encode()
    event = wh.verify(body, sign(body), SECRET, now=NOW)
    assert event.type == "character.archived" and not event.type.is_known
    assert event.created_at is not None and event.created_at.timestamp() == NOW
    assert event.data == {} and event.synthetic is True
    assert event.extra == {"created_at": "yesterday"}
    assert event.character_id is None  # data has no id


def test_character_id_only_for_character_events() -> None:
    """Guards: an image event's id taken for a character's."""
    body = envelope(type_="image.completed")
    assert wh.verify(body, sign(body), SECRET, now=NOW).character_id is None


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"payload": 5}, TypeError), ({"signature": b"t=1"}, TypeError),
    ({"secret": None}, TypeError), ({"secret": b"whsec_x"}, TypeError),
    ({"secret": []}, ValueError), ({"secret": [""]}, ValueError),
    ({"secret": [SECRET, 7]}, TypeError), ({"secret": {SECRET}}, TypeError),
    ({"secret": "whsec_\ud800"}, ValueError), ({"tolerance": -1}, ValueError),
    ({"tolerance": "300"}, TypeError), ({"tolerance": float("nan")}, ValueError),
    ({"now": "now"}, TypeError), ({"now": float("inf")}, ValueError),
])
def test_bad_arguments_are_type_or_value_errors(kwargs: dict[str, Any], error: type) -> None:
    """Guards: argument mistakes reported as verification failures, or not at all."""
    body = envelope()
    call = {"payload": body, "signature": sign(body), "secret": SECRET, "now": NOW, **kwargs}
    with pytest.raises(error) as info:
        wh.verify(call.pop("payload"), call.pop("signature"), call.pop("secret"), **call)
    assert not isinstance(info.value, wh.WebhookVerificationError)
    assert "c0ffee" not in str(info.value)


def test_reprs_hide_secrets_and_signed_urls() -> None:
    """Guards: a ``whsec_`` secret or a signed URL token reaching a log via ``repr``."""
    body = envelope(data={"url": "https://cdn/x.png?token=tok123", "echo": SECRET})
    event = wh.verify(body, sign(body), SECRET, now=NOW)
    assert "tok123" not in repr(event) and SECRET not in repr(event)
    endpoint = wh.WebhookEndpoint(id="we_1", url="https://a/b", secret=SECRET)
    assert SECRET not in repr(endpoint) + str(endpoint)
    assert "whsec_…" in repr(endpoint)


# -- property tests ------------------------------------------------------------------------

_hex = st.text("0123456789abcdefABCDEF", min_size=60, max_size=66)
_item = st.one_of(
    st.text(max_size=20),
    st.tuples(st.sampled_from(["t", "v1", "v0", "", " t", "v1 "]),
              st.one_of(st.text(max_size=20), st.integers().map(str), _hex)).map("=".join),
)
_headers = st.one_of(st.none(), st.text(), st.lists(_item, max_size=6).map(",".join))
_secrets = st.one_of(st.text(min_size=1), st.lists(st.text(min_size=1), min_size=1, max_size=3))


@settings(max_examples=400, deadline=None)
@given(payload=st.one_of(st.binary(), st.text()), header=_headers, secret=_secrets,
       now=st.floats(min_value=0, max_value=4e9))
def test_any_input_gives_an_event_or_a_verification_error(
    payload: bytes | str, header: str | None, secret: Any, now: float,
) -> None:
    """Guards: some header or body shape escaping as another exception (IndexError,
    UnicodeError, OverflowError...) and turning a delivery into a 500."""
    try:
        event: object = wh.verify(payload, header, secret, now=now)
    except wh.WebhookVerificationError as exc:
        event = exc.reason
    assert isinstance(event, wh.WebhookEvent) or event in (
        "missing", "malformed", "expired", "mismatch")


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
       event_id=st.text(min_size=1, max_size=30), secret=st.text(min_size=1, max_size=40),
       flip=st.integers(min_value=0))
def test_signed_events_verify_and_any_flipped_byte_does_not(
    data: dict[str, str], event_id: str, secret: str, flip: int,
) -> None:
    """Guards: signing or reading that depends on the content (escapes, unicode)."""
    body = json.dumps({"id": event_id, "type": "usage.balance_low", "data": data}).encode()
    event = wh.verify(body, sign(body, secret), secret, now=NOW)
    assert (event.id, event.data) == (event_id, data)
    position = flip % len(body)
    tampered = body[:position] + bytes([body[position] ^ 1]) + body[position + 1:]
    assert reason_of(tampered, sign(body, secret), secret) == "mismatch"


# -- the aiohttp receiver ------------------------------------------------------------------

class Sink:
    """Stands in for an AurousSession's ``feed``."""

    def __init__(self, fail: bool = False) -> None:
        self.fed: list[str] = []
        self.fail = fail

    def feed(self, event: wh.WebhookEvent) -> bool:
        self.fed.append(event.id)
        if self.fail:
            raise RuntimeError("feed broke")
        return True


class Receiver:
    """A receiver served on loopback, and a client posting deliveries to it."""

    def __init__(self, receiver: wh.WebhookReceiver, url: str, http: aiohttp.ClientSession,
                 clock: FakeClock) -> None:
        self.receiver, self.url, self.http, self.clock = receiver, url, http, clock

    async def post(self, body: bytes, header: str | None = "sign", **kw: Any) -> tuple[int, Any]:
        if header == "sign":
            header = sign(body, t=int(self.clock.time()))
        headers = {} if header is None else {wh.SIGNATURE_HEADER: header}
        async with self.http.post(self.url, data=kw.pop("data", body), headers=headers) as r:
            return r.status, await r.json()


@pytest.fixture
def serve() -> Any:
    @contextlib.asynccontextmanager
    async def start(on_event: Any = None, **kwargs: Any) -> AsyncIterator[Receiver]:
        clock = FakeClock(wall_start=NOW)
        receiver = wh.WebhookReceiver(SECRET, on_event, clock=clock, **kwargs)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        async with serve_app(app) as base, aiohttp.ClientSession() as http:
            yield Receiver(receiver, base + "/hook", http, clock)
            await receiver.aclose()
    return start


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_delivery_repeated_three_times_runs_on_event_once(serve: Any, kind: str) -> None:
    """Guards: redeliveries (retries after a lost 2xx) running the callback again."""
    seen: list[str] = []

    def on_sync(event: wh.WebhookEvent) -> None:
        seen.append(event.id)

    async def on_async(event: wh.WebhookEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.id)

    sink = Sink()
    async with serve(on_sync if kind == "sync" else on_async, session=sink) as hook:
        answers = [await hook.post(envelope("evt_1")) for _ in range(3)]
        assert [status for status, _ in answers] == [200, 200, 200]
        assert [body["duplicate"] for _, body in answers] == [False, True, True]
        assert (await hook.post(envelope("evt_2")))[0] == 200
        await hook.receiver.aclose()
    assert seen == ["evt_1", "evt_2"]
    assert sink.fed == ["evt_1", "evt_2"]


async def test_bad_signatures_get_400_and_run_nothing(serve: Any) -> None:
    """Guards: an unverified delivery acknowledged, or reaching on_event."""
    seen: list[str] = []
    async with serve(lambda event: seen.append(event.id)) as hook:
        body = envelope()
        assert await hook.post(body, sign(body, "whsec_attacker")) == (
            400, {"error": "invalid_signature", "reason": "mismatch"})
        assert (await hook.post(body, None))[1]["reason"] == "missing"
        assert (await hook.post(body, "t=1"))[1]["reason"] == "malformed"
        stale = sign(body, t=int(hook.clock.time()))
        await hook.clock.advance(301)
        assert (await hook.post(body, stale))[1]["reason"] == "expired"
        await hook.receiver.aclose()
    assert seen == []


async def test_secret_and_body_never_reach_a_log_line(
    serve: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards: the secret, or a payload's private content, logged at any level."""
    caplog.set_level(logging.DEBUG)

    def explode(event: wh.WebhookEvent) -> None:
        raise RuntimeError("user code failed")

    async with serve(explode, session=Sink(fail=True)) as hook:
        body = envelope()
        for header in ("sign", "sign", None, "t=x", sign(body, "whsec_bad"), sign(body, t=1)):
            await hook.post(body, header)
        await hook.post(b'{"note": "' + MARKER.encode() + b'"}')
        await hook.receiver.aclose()
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert SECRET not in text and "c0ffee" not in text
    assert MARKER not in text
    refused = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert {r.getMessage().split("(")[1].split(")")[0] for r in refused} == {
        "missing", "malformed", "mismatch", "expired"}
    assert any(r.levelno == logging.DEBUG for r in caplog.records)


async def test_on_event_raising_is_logged_and_breaks_nothing(
    serve: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards: a failing callback (or session.feed) crashing the app, leaking an
    unretrieved task exception, or stopping later deliveries."""
    loop_errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    seen: list[str] = []

    async def on_event(event: wh.WebhookEvent) -> None:
        seen.append(event.id)
        if event.id == "evt_1":
            raise ValueError("boom")

    async with serve(on_event, session=Sink(fail=True)) as hook:
        assert (await hook.post(envelope("evt_1")))[0] == 200
        assert (await hook.post(envelope("evt_2")))[0] == 200
        await hook.receiver.aclose()
    assert seen == ["evt_1", "evt_2"]  # a failing feed does not skip on_event either
    assert loop_errors == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert sorted(errors) == ["on_event failed for webhook event evt_1 (character.completed)",
                              "session.feed failed for webhook event evt_1",
                              "session.feed failed for webhook event evt_2"]


async def test_the_2xx_comes_before_a_slow_on_event_finishes(serve: Any) -> None:
    """Guards: awaiting on_event before answering (the API gives up after 10 s)."""
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(event: wh.WebhookEvent) -> None:
        await release.wait()
        finished.append(event.id)

    async with serve(slow) as hook:
        status, _ = await asyncio.wait_for(hook.post(envelope()), timeout=10)
        assert status == 200
        assert finished == [] and hook.receiver.pending == 1
        release.set()
        await hook.receiver.aclose()
        assert finished == ["evt_1"] and hook.receiver.pending == 0


async def test_closed_receiver_answers_503(serve: Any) -> None:
    """Guards: deliveries after shutdown acknowledged but never handled (lost)."""
    seen: list[str] = []
    async with serve(lambda event: seen.append(event.id)) as hook:
        await hook.receiver.aclose()
        assert (await hook.post(envelope()))[0] == 503
        with pytest.raises(RuntimeError):
            hook.receiver.deliver(envelope(), sign(envelope()))
    assert seen == []


async def test_oversized_bodies_get_413(serve: Any) -> None:
    """Guards: unbounded bodies read into memory (declared or chunked)."""
    seen: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * 100

    async with serve(lambda event: seen.append(event.id), max_body_size=200) as hook:
        big = envelope(pad="x" * 300)
        assert (await hook.post(big))[0] == 413
        assert (await hook.post(big, data=chunks()))[0] == 413
        assert (await hook.post(envelope()))[0] == 200
        await hook.receiver.aclose()
    assert seen == ["evt_1"]


async def test_a_declared_oversize_body_is_refused_unread(serve: Any) -> None:
    """Guards: reading a body the Content-Length already says is too big (the app's
    own cap may be far larger)."""
    async with serve(max_body_size=200) as hook:
        url = yarl.URL(hook.url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{")
        await writer.drain()
        # Only the first byte of the body was sent: an answer proves it was not awaited.
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"413"


async def test_memory_of_event_ids_is_bounded(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards: remembering every event id forever (memory grows without bound)."""
    monkeypatch.setattr(_handler, "REMEMBERED_EVENTS", 2)
    seen: list[str] = []
    async with serve(lambda event: seen.append(event.id)) as hook:
        for event_id in ("evt_1", "evt_2", "evt_1", "evt_3", "evt_2", "evt_1"):
            await hook.post(envelope(event_id))
        await hook.receiver.aclose()
    # evt_1 was refreshed by its redelivery, so evt_2 is the one forgotten first.
    assert seen == ["evt_1", "evt_2", "evt_3", "evt_2", "evt_1"]
    recent = _RecentIds(2)
    assert [recent.add(i) for i in "abab"] == [True, True, False, False]


async def test_aiohttp_handler_serves_deliveries() -> None:
    """Guards: the factory returning a non-coroutine (aiohttp then wraps it and warns)
    or a handler that does not verify."""
    seen: list[wh.WebhookEvent] = []
    handler = wh.aiohttp_handler([OLD_SECRET, SECRET], seen.append, tolerance=10**10)
    assert inspect.iscoroutinefunction(handler)
    app = web.Application()
    app.router.add_post("/hook", handler)
    body = envelope()
    async with serve_app(app) as base, aiohttp.ClientSession() as http:
        for header in (sign(body), sign(body, "whsec_bad")):
            async with http.post(base + "/hook", data=body,
                                 headers={wh.SIGNATURE_HEADER: header}) as response:
                assert response.status == (200 if header == sign(body) else 400)
        await handler.__self__.aclose()  # type: ignore[attr-defined]
    assert [event.id for event in seen] == ["evt_1"]


async def test_deliver_serves_other_frameworks() -> None:
    """Guards: ``deliver`` skipping verification, dedup or the callback."""
    seen: list[str] = []
    receiver = wh.WebhookReceiver(SECRET, lambda event: seen.append(event.id),
                                  clock=FakeClock(wall_start=NOW))
    body = envelope()
    assert receiver.deliver(body, sign(body)) is not None
    assert receiver.deliver(bytearray(body), sign(body)) is None
    with pytest.raises(wh.WebhookVerificationError):
        receiver.deliver(body, sign(body, "whsec_bad"))
    with pytest.raises(TypeError):
        receiver.deliver(body.decode(), sign(body))  # type: ignore[arg-type]
    await receiver.aclose()
    assert seen == ["evt_1"]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"secret": b"whsec_x"}, TypeError), ({"on_event": 1}, TypeError),
    ({"session": object()}, TypeError), ({"tolerance": -1}, ValueError),
    ({"max_body_size": 0}, ValueError), ({"clock": 5}, TypeError),
])
def test_receiver_arguments_are_checked(kwargs: dict[str, Any], error: type) -> None:
    """Guards: a misconfigured receiver that only fails on the first delivery."""
    with pytest.raises(error):
        wh.aiohttp_handler(**{"secret": SECRET, **kwargs})


def test_importing_the_sdk_leaves_the_receiver_unloaded() -> None:
    """Guards: ``import aurous_async.webhooks`` pulling in ``aiohttp.web`` eagerly."""
    code = ("import sys, aurous_async.webhooks as w; "
            "assert 'aurous_async.webhooks._handler' not in sys.modules; "
            "assert w.aiohttp_handler and w.WebhookReceiver and 'aiohttp.web' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
