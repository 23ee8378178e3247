"""Session settings: validated once, before any request, secrets kept out of repr."""

from __future__ import annotations

import aiohttp
import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer

KEY = "al_live_" + "ab" * 32


def test_missing_key_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUROUS_API_KEY", raising=False)
    with pytest.raises(aa.ConfigurationError, match="AUROUS_API_KEY"):
        aa.AurousSession()
    with pytest.raises(ValueError, match="empty"):  # ConfigurationError is a ValueError too
        aa.AurousSession("   ")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUROUS_API_KEY", KEY)
    monkeypatch.setenv("AUROUS_BASE_URL", "http://localhost:9999/v1/")
    session = aa.AurousSession()
    assert session.base_url == "http://localhost:9999"
    monkeypatch.delenv("AUROUS_BASE_URL")
    assert aa.AurousSession().base_url == "https://api.aurous-labs.com"


@pytest.mark.parametrize("url", ["http://api.aurous-labs.com", "http://10.0.0.1:80",
                                 "ftp://localhost", "localhost:8080", "https://",
                                 "https://user:pw@api.aurous-labs.com", "https://x.com/?a=1"])
def test_unsafe_or_malformed_base_urls_refused(url: str) -> None:
    with pytest.raises(aa.ConfigurationError):
        aa.AurousSession(KEY, base_url=url)


@pytest.mark.parametrize("url", ["http://localhost:1", "http://127.0.0.1:2", "http://127.8.9.10",
                                 "http://[::1]:3", "https://api.preprod.aurous-labs.com/v1"])
def test_loopback_http_and_https_accepted(url: str) -> None:
    aa.AurousSession(KEY, base_url=url)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"aurous_version": "2026-5-15"}, aa.ConfigurationError),
    ({"aurous_version": "2026-02-30"}, aa.ConfigurationError),
    ({"aurous_version": 20260515}, TypeError),
    ({"timeout": 0}, aa.ConfigurationError),
    ({"timeout": float("nan")}, aa.ConfigurationError),
    ({"timeout": "5"}, TypeError),
    ({"max_retries": -1}, aa.ConfigurationError),
    ({"max_retries": 1.5}, TypeError),
    ({"max_retries": True}, TypeError),
    ({"rate_limits": {"characters_get": 1}}, TypeError),
    ({"poll": 2.0}, TypeError),
    ({"http_session": object()}, TypeError),
])
def test_bad_settings(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        aa.AurousSession(KEY, **kwargs)


def test_key_with_control_characters_refused() -> None:
    with pytest.raises(aa.ConfigurationError):
        aa.AurousSession("al_live_abc\r\nX-Evil: 1")
    with pytest.raises(TypeError):
        aa.AurousSession(b"al_live_abc")  # type: ignore[arg-type]


def test_repr_hides_the_key() -> None:
    session = aa.AurousSession(KEY)
    assert KEY not in repr(session)
    assert KEY not in repr(session._config)
    assert "al_live_…abab" in repr(session)


async def test_headers_sent(sfake: FakeAurousServer) -> None:
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url,
                                aurous_version="2026-05-15") as s:
        await s.balance()
    headers = sfake.requests[-1].headers
    assert headers["X-Api-Key"] == sfake.api_key
    assert headers["Aurous-Version"] == "2026-05-15"
    assert headers["User-Agent"].startswith(f"aurous-async/{aa.__version__} python/")
    assert "Authorization" not in headers


async def test_unknown_version_is_a_typed_error(sfake: FakeAurousServer) -> None:
    async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url,
                                aurous_version="2030-01-01") as s:
        with pytest.raises(aa.InvalidRequestError) as info:
            await s.balance()
    assert info.value.code == "unknown_version"


async def test_bring_your_own_http_session_is_not_closed(sfake: FakeAurousServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with aa.AurousSession(sfake.api_key, base_url=sfake.base_url, http_session=http) as s:
            await s.balance()
        assert not http.closed
        async with http.get(sfake.base_url + "/v1/balance", headers={"X-Api-Key": sfake.api_key}) as r:
            assert r.status == 200


async def test_own_http_session_closed_and_session_unusable_after(sfake: FakeAurousServer) -> None:
    s = aa.AurousSession(sfake.api_key, base_url=sfake.base_url)
    await s.balance()
    http = s._parts.http.session()
    await s.aclose()
    await s.aclose()  # idempotent
    assert http is not None and http.closed
    with pytest.raises(RuntimeError, match="closed"):
        await s.balance()
