"""Hostile and broken servers on loopback (issue 12, items 6-9, D, I): bodies that never
end or inflate, secrets echoed back, malformed HTTP, uploads gone wrong, callers' own
aiohttp sessions. Every path ends in a typed error, and no secret leaks."""

from __future__ import annotations

import asyncio
import gzip
import logging
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import aurous_async as aa

from .conftest import serve_app

KEY = "al_live_" + "h" * 40
CHARACTER = b'{"id": "char_1", "status": "ready", "name": "A"}'


def _app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
def hits() -> list[str]:
    return []


# -- 6. no cap on response size ----------------------------------------------------------------


async def test_a_gzip_bomb_is_refused_after_decompression_and_not_retried(hits: list[str]) -> None:
    """Defect guarded: a 64 KB gzip body inflating to 64 MiB was read whole (RSS +2 GB
    for 1 GiB) before any error, and a 5xx one was re-inflated on every retry."""
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=500, body=bomb, headers={"Content-Encoding": "gzip",
                                                             "Content-Type": "application/json"})

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None, clock=aa.FakeClock(auto_advance=True)
    ) as s:
        with pytest.raises(aa.MalformedResponseError) as info:
            await s.characters.get("char_1")
    assert info.value.code == "response_too_large"
    assert hits == ["/v1/characters/char_1"]  # never retried


async def test_an_endless_body_is_cut_off_at_the_cap(hits: list[str]) -> None:
    """Defect guarded: an endless chunked body grew RSS by 2 GB in 10 s."""
    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(10_000):  # 640 MB at most; the client leaves long before
            try:
                await response.write(chunk)
            except (ConnectionResetError, RuntimeError):
                break
        return response

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None, max_response_bytes=1024 * 1024
    ) as s:
        with pytest.raises(aa.MalformedResponseError) as info:
            await s.characters.get("char_1")
    assert info.value.code == "response_too_large"
    assert len(hits) == 1


@pytest.mark.parametrize("cap", [2048, 300_000])  # read at once; read in several pieces
async def test_a_body_of_exactly_the_cap_is_read_and_one_byte_more_refused(cap: int) -> None:
    """A body without Content-Length is counted as it is read: exactly
    ``max_response_bytes`` is an answer, one byte more is refused, whether it comes in
    one read or in several (the SDK reads 256 KiB at a time)."""
    head, tail = b'{"id": "char_1", "status": "ready", "name": "', b'"}'

    async def handler(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["tail"].rpartition("_")[2])
        body = head + b"x" * (size - len(head) - len(tail)) + tail
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):  # so a large one comes in pieces
            await response.write(body[start:start + 64 * 1024])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None, max_response_bytes=cap
    ) as s:
        assert (await s.characters.get(f"char_{cap}")).id == "char_1"
        with pytest.raises(aa.MalformedResponseError) as info:
            await s.characters.get(f"char_{cap + 1}")
    assert info.value.code == "response_too_large"


async def test_the_cap_is_settable_and_validated() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b'{"id": "char_1", "status": "ready", "name": "' + b"x" * 4000
                            + b'"}', content_type="application/json")

    async with serve_app(_app(handler)) as url:
        async with aa.AurousSession(KEY, base_url=url, rate_limits=None) as s:
            assert (await s.characters.get("char_1")).id == "char_1"
        async with aa.AurousSession(KEY, base_url=url, rate_limits=None,
                                    max_response_bytes=2048) as s:
            with pytest.raises(aa.MalformedResponseError, match="max_response_bytes"):
                await s.characters.get("char_1")
    with pytest.raises(ValueError, match="max_response_bytes"):
        aa.AurousSession(KEY, max_response_bytes=10)


# -- 7. numbers no float can hold -----------------------------------------------------------------


@pytest.mark.parametrize(("path", "call"), [
    ("/v1/balance", lambda s: s.balance()),
    ("/v1/characters/uploads/classify", lambda s: s.characters.uploads.classify("upl_1")),
])
async def test_a_huge_integer_is_a_malformed_response(path: str, call: Callable) -> None:
    """Defect guarded: an untyped OverflowError for a 401-digit number in a float field."""
    huge = "9" * 401
    body = (f'{{"credits": {huge}, "available_credits": {huge}, "held_credits": 0, '
            f'"upload_id": "upl_1", "pose": "front", "confidence": {huge}}}').encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    clock = aa.FakeClock(auto_advance=True)  # the retries of a malformed 200: no real waits
    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None, clock=clock
    ) as s:
        with pytest.raises(aa.MalformedResponseError):
            await call(s)


async def test_an_integer_beyond_64_bits_reaches_a_character_exactly() -> None:
    """orjson turns such an integer into a float; the transport's unscanned decode must
    still give what json.loads gives, on the hot path (get) and the list path."""
    huge = 123456789012345678901
    character = f'{{"id": "char_1", "status": "ready", "attributes": {{"age": {huge}}}}}'

    async def handler(request: web.Request) -> web.Response:
        body = character if request.path.endswith("char_1") else \
            f'{{"data": [{character}], "next_cursor": null}}'
        return web.Response(text=body, content_type="application/json")

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None
    ) as s:
        got = await s.characters.get("char_1")
        listed = [c async for c in s.characters.list()]
    for c in (got, *listed):
        assert c.attributes is not None
        assert type(c.attributes.age) is int and c.attributes.age == huge


# -- 8. secrets echoed by the server ------------------------------------------------------------

TOKEN = "tok_SECRET_9f8e7d"


async def test_an_echoed_key_or_token_reaches_no_message_header_body_or_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defect guarded: a server echoing the key or a signed-URL token into code, param,
    request_id, doc_url, a Location header or a non-JSON body got it into str(exc),
    exc.headers, exc.body and the SDK's WARNING line."""
    caplog.set_level(logging.DEBUG, logger="aurous_async")
    answers = [
        (429, {"Aurous-Request-Id": KEY}, {"error": {
            "code": KEY, "param": f"x?token={TOKEN}", "doc_url": f"https://d/?token={TOKEN}",
            "message": f"key {KEY}", "request_id": KEY}}),
        (400, {"Location": f"https://x/?token={TOKEN}", "X-Echo": KEY}, {"error": {
            "code": f"bad_{KEY}", "message": "no", "request_id": f"r?token={TOKEN}"}}),
        (302, {"Location": f"https://evil/?token={TOKEN}&k={KEY}"}, None),
        (200, {"X-Echo": KEY}, f"not json {KEY} https://x/a.png?token={TOKEN}"),
        (200, {}, {"id": "char_1", "status": "ready", "name": "A",
                   "created_at": f"https://x/?token={TOKEN}"}),
    ]
    raised: list[BaseException] = []

    async def handler(request: web.Request) -> web.Response:
        status, headers, body = answers[0]
        text = body if isinstance(body, str) else web.json_response(body).text
        return web.Response(status=status, headers=headers, text=text or "",
                            content_type="application/json")

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None, max_retries=1,
        clock=aa.FakeClock(auto_advance=True),
    ) as s:
        while answers:
            with pytest.raises(aa.AurousError) as info:
                await s.characters.get("char_1")
            raised.append(info.value)
            answers.pop(0)
    for error in raised:
        texts = [str(error), repr(error)]
        for name in ("code", "param", "doc_url", "request_id", "message", "body"):
            texts.append(str(getattr(error, name, "")))
        texts.append(repr(dict(getattr(error, "headers", {}))))
        # ...nor anywhere down the chain that error reporters walk.
        texts += [f"{e!s} {e!r} {e.args!r}" for e in _chain(error)]
        joined = "\n".join(texts)
        assert KEY not in joined and TOKEN not in joined, joined
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert KEY not in logged and TOKEN not in logged


# -- 9. the key in an exception's context -----------------------------------------------------------

MALFORMED_REPLIES = {
    "bad status line": b"HTTP/1.1 twohundred OK\r\n\r\n",
    "oversized header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "NUL in a header": b"HTTP/1.1 200 OK\r\nX-Nul: a\0b\r\nContent-Length: 2\r\n\r\n{}",
    "bad chunking": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
    "unsupported encoding": b"HTTP/1.1 200 OK\r\nContent-Encoding: zstd-nope\r\n"
                            b"Content-Length: 4\r\n\r\nabcd",
    "HTTP/0.9 reply": b'{"id": "char_1"}\n',
}


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def serve(reply: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(reply)
                await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


def _chain(error: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


@pytest.mark.parametrize("case", sorted(MALFORMED_REPLIES))
async def test_no_raised_exception_references_the_key(
    case: str, raw_server: Callable[[bytes], Awaitable[str]]
) -> None:
    """Defect guarded: `raise ... from None` kept __context__, whose request_info.headers
    held X-Api-Key, for malformed replies (error reporters walk and pickle the chain)."""
    url = await raw_server(MALFORMED_REPLIES[case])
    async with aa.AurousSession(KEY, base_url=url, rate_limits=None, max_retries=0) as s:
        with pytest.raises(aa.AurousError) as info:
            await s.characters.get("char_1")
    for error in _chain(info.value):
        assert isinstance(error, aa.AurousError), (case, type(error))
        assert KEY not in repr(vars(error)) and KEY not in str(error)
        try:
            pickled = pickle.dumps(error)
        except Exception:
            continue
        assert KEY.encode() not in pickled


# -- D. a caller's session with raise_for_status=True ----------------------------------------------


async def test_a_callers_raise_for_status_session_does_not_change_errors() -> None:
    """Defect guarded: with raise_for_status=True a 402 became APIConnectionError, was
    retried 4 times, and a fan-out no longer stopped at it."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"error": {"code": "insufficient_credits", "message": "poor"}},
                                 status=402)

    async with serve_app(_app(handler)) as url, aiohttp.ClientSession(
        raise_for_status=True
    ) as http, aa.AurousSession(KEY, base_url=url, http_session=http, rate_limits=None) as s:
        with pytest.raises(aa.InsufficientCreditsError):
            await s.characters.resynthesize("char_1")
    assert len(hits) == 1


# -- I. uploads ----------------------------------------------------------------------------------


async def test_an_upload_refused_with_a_binary_body_is_a_typed_error() -> None:
    """Defect guarded: a non-UTF-8 403 body raised UnicodeDecodeError from put()."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=403, body=b"\xff\xfe\x00denied\x80")

    async with serve_app(_app(handler)) as url, aa.AurousSession(KEY, base_url=url) as s:
        ticket = aa.UploadTicket(upload_id="upl_1", upload_url=f"{url}/put?X-Amz-Signature=s3cr3t")
        with pytest.raises(aa.APIStatusError) as info:
            await s.characters.uploads.put(ticket, b"img")
    assert info.value.status == 403 and info.value.code == "upload_refused"
    assert "s3cr3t" not in str(info.value)


async def test_server_supplied_upload_headers_with_cr_lf_are_refused() -> None:
    """Defect guarded: CR/LF in the ticket's headers escaped as an untyped ValueError."""
    async with aa.AurousSession(KEY, base_url="http://127.0.0.1:9") as s:
        ticket = aa.UploadTicket(upload_id="upl_1", upload_url="http://127.0.0.1:9/put",
                                 upload_headers={"X-Bad": "a\r\nInjected: yes"})
        with pytest.raises(aa.MalformedResponseError, match="control characters"):
            await s.characters.uploads.put(ticket, b"img")


@pytest.mark.parametrize("param", ["X-Amz-Signature", "X-Goog-Signature", "X-Amz-Credential"])
def test_cloud_signatures_are_redacted_from_ticket_reprs(param: str) -> None:
    ticket = aa.UploadTicket(upload_id="upl_1",
                             upload_url=f"https://bucket.example/o?{param}=s3cr3t&x=1")
    assert "s3cr3t" not in repr(ticket) and "s3cr3t" not in str(ticket)


# -- TLS: a certificate that does not verify is not retried -----------------------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for localhost (made with openssl)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    # An EC key: generated in milliseconds, where RSA takes up to a second.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return key, cert


async def test_a_certificate_error_fails_at_once_with_a_clear_message(
    self_signed: tuple[Path, Path],
) -> None:
    """Defect guarded (issue 17): a TLS certificate error was retried as if temporary."""
    import ssl

    key, cert = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    clock = aa.FakeClock(auto_advance=True)
    try:
        async with aa.AurousSession(KEY, base_url=f"https://127.0.0.1:{port}",
                                    rate_limits=None, max_retries=3, clock=clock) as s:
            with pytest.raises(aa.APIConnectionError, match="certificate") as info:
                await s.characters.get("char_1")
    finally:
        server.close()
    assert info.value.transient is False
    assert clock.sleeps == []  # no retry was waited for
    assert KEY not in str(info.value)


async def test_an_oversized_body_echoing_the_key_is_refused_redacted() -> None:
    """Defect guarded: the response_too_large error copied raw headers and request id."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"{" + b" " * 4096 + b"}", content_type="application/json",
                            headers={"X-Echo": KEY, "Aurous-Request-Id": f"req_{KEY}"})

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None, max_response_bytes=1024
    ) as s:
        with pytest.raises(aa.MalformedResponseError) as info:
            await s.characters.get("char_1")
    error = info.value
    assert error.code == "response_too_large"
    assert KEY not in f"{error} {error!r} {error.request_id} {dict(error.headers)}"


async def test_a_request_id_shaped_like_another_api_key_is_redacted() -> None:
    """Defect guarded: a plain-looking request id was shown as it was unless it held the
    session's own key, so a server echoing another (or a rotated) key leaked it."""
    other = "al_live_" + "o" * 40

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=CHARACTER, content_type="application/json",
                            headers={"Aurous-Request-Id": other})

    async with serve_app(_app(handler)) as url, aa.AurousSession(
        KEY, base_url=url, rate_limits=None
    ) as s:
        character = await s.characters.get("char_1")
    assert character.request_id is not None and "o" * 40 not in character.request_id
