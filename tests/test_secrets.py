"""Secrets never reach logs, reprs or exception text."""

from __future__ import annotations

import logging
import re

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, FakeClock, Fault, FaultKind

from .conftest import serve_app


async def test_full_flow_leaks_no_key_or_token(sfake: FakeAurousServer, auto_clock: FakeClock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    key = sfake.api_key
    sfake.faults.add(Fault(FaultKind.JSON_503, route="GET /v1/characters/{character_id}", nth=1))
    async with aa.AurousSession(key, base_url=sfake.base_url, clock=auto_clock) as s:
        texts += [repr(s), str(s), repr(s._config), repr(s._parts.transport)]
        hero = await s.characters.create(name="A", generate=True, attributes={"age": 3})
        await auto_clock.advance(30)
        hero = await s.characters.get(hero.id)
        texts += [repr(hero), str(hero), repr(hero.refs), str(hero.refs[0])]
        ticket = await s.characters.uploads.upload(b"img", "x-front.png", "image/png")
        texts += [repr(ticket), str(ticket)]
        for call in (s.characters.get("char_missing"), s.characters.resynthesize(hero.id, force_all=True),
                     s.characters.regenerate_ref(hero.id, "side")):
            try:
                await call
            except aa.AurousError as exc:
                texts += [str(exc), repr(exc), str(getattr(exc, "body", ""))]
    async with aa.AurousSession("al_live_" + "f" * 64, base_url=sfake.base_url, clock=auto_clock) as bad:
        with pytest.raises(aa.AuthenticationError) as info:
            await bad.balance()
        texts += [str(info.value), repr(info.value), str(info.value.body)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    tokens = [ref.url.split("token=")[1] for ref in hero.refs]
    signature = ticket.upload_url.split("signature=")[1]
    haystack = "\n".join(texts)
    assert key not in haystack
    assert "f" * 64 not in haystack
    for token in [*tokens, signature]:
        assert token not in haystack
    assert re.search(r"token=…", haystack)  # redacted, not dropped
    assert len(caplog.records) > 5  # DEBUG lines were actually produced


async def test_key_not_sent_to_signed_upload_urls(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    await session.characters.uploads.upload(b"img", "a.png", "image/png")
    # The PUT to the signed URL is not an API request: the fake's API log never sees it,
    # and the storage route takes no key. Its headers are checked via a capturing server.
    from aiohttp import web

    seen: list[dict] = []

    async def put(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response()

    app = web.Application()
    app.router.add_put("/up", put)
    async with serve_app(app) as url:
        ticket = aa.UploadTicket(upload_id="upl_x", upload_url=f"{url}/up?signature=s",
                                 upload_headers={"Content-Type": "image/png"})
        await session.characters.uploads.put(ticket, b"bytes")
    assert "X-Api-Key" not in seen[0] and seen[0]["Content-Type"] == "image/png"
