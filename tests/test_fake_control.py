"""The fake's control API under /_fake/, driven over real HTTP as another process would."""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import pytest

from aurous_async.testing import BucketLimit, FakeAurousServer, FakeClock

from .conftest import RawClient


async def control(raw: RawClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with raw.http.request(method, raw.server.base_url + "/_fake/" + path,
                                json=body) as response:
        return response.status, await response.json()


async def test_ledger_lists_each_charge_with_its_request(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: the ledger over HTTP missing charges or not tying them to their request."""
    a, b = fake.add_character(), fake.add_character()
    for cid in (a, b):
        status, _, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
        assert status == 200
    status, ledger = await control(raw, "GET", "ledger")
    assert status == 200
    assert [(c["character_id"], c["operation"], c["credits"]) for c in ledger["data"]] == [
        (a, "resynthesize", 4.0), (b, "resynthesize", 4.0)]
    assert ledger["total_credits"] == 8.0
    assert ledger["data"][0]["request_id"] == fake.ledger[0].request_id
    _, only_b = await control(raw, "GET", f"ledger?character_id={b}")
    assert [c["character_id"] for c in only_b["data"]] == [b]


async def test_rate_limited_counts_429s_per_bucket(clock: FakeClock) -> None:
    """Guards: 429 counts not reaching the control API."""
    async with FakeAurousServer(clock=clock, buckets={"characters_get": BucketLimit(60, 1)}) as fake, \
            aiohttp.ClientSession() as http:
        raw = RawClient(http, fake)
        statuses = [(await raw.call("GET", "/v1/characters"))[0] for _ in range(3)]
        assert statuses == [200, 429, 429]
        status, body = await control(raw, "GET", "rate_limited")
        assert (status, body) == (200, {"counts": {"characters_get": 2}, "total": 2})


async def test_request_log_filters_and_hides_the_api_key(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: the request log leaking the API key, or its route/since filters ignored."""
    cid = fake.add_character()
    await raw.call("GET", f"/v1/characters/{cid}")
    await raw.call("POST", f"/v1/characters/{cid}/resynthesize", json={"force_all": True},
                   headers={"Idempotency-Key": "k-1"})
    _, log = await control(raw, "GET", "requests")
    assert [r["route"] for r in log["data"]] == [
        "GET /v1/characters/{character_id}", "POST /v1/characters/{character_id}/resynthesize"]
    post = log["data"][1]
    assert (post["index"], post["status"], post["bucket"]) == (1, 200, "characters_synthesize")
    assert (post["body"], post["idempotency_key"]) == ({"force_all": True}, "k-1")
    assert fake.api_key not in json.dumps(log)
    _, later = await control(raw, "GET", "requests?since=1")
    assert [r["index"] for r in later["data"]] == [1]
    _, gets = await control(raw, "GET", "requests?route=GET /v1/characters/{character_id}")
    assert [r["method"] for r in gets["data"]] == ["GET"]
    status, body = await control(raw, "GET", "requests?since=-1")
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_seeding_characters_returns_usable_ids(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: seeded ids that the API does not know, or seeding that charges."""
    status, body = await control(raw, "POST", "characters", {"count": 3, "status": "reviewing"})
    assert status == 201 and len(body["ids"]) == 3
    for cid in body["ids"]:
        status, character, _ = await raw.call("GET", f"/v1/characters/{cid}")
        assert (status, character["status"]) == (200, "reviewing")
    assert fake.ledger == []
    other = fake.add_team()
    _, body = await control(raw, "POST", "characters", {"team_id": other.id})
    assert list(other.characters) == body["ids"]
    for bad in ({"count": 0}, {"count": "3"}, {"count": 10_001}, {"name": 5}):
        status, body = await control(raw, "POST", "characters", bad)
        assert status == 400, bad
    status, body = await control(raw, "POST", "characters", {"team_id": "team_nope"})
    assert (status, body["error"]["code"]) == (404, "resource_not_found")


async def test_faults_added_listed_and_cleared(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: control-API faults that do not fire like Python ones, or cannot be cleared."""
    status, body = await control(raw, "POST", "faults",
                                 {"kind": "json_503", "route": "GET /v1/balance", "nth": 1})
    assert status == 201 and body["fault"]["kind"] == "json_503"
    assert [(await raw.call("GET", "/v1/balance"))[0] for _ in range(2)] == [503, 200]
    _, listed = await control(raw, "GET", "faults")
    assert [(f["route"], f["seen"], f["fired"]) for f in listed["data"]] == [("GET /v1/balance", 2, 1)]
    await control(raw, "POST", "faults", {"kind": "html_502", "route": "*"})
    assert (await raw.call("GET", "/v1/characters"))[0] == 502
    status, body = await control(raw, "DELETE", "faults")
    assert (status, body) == (200, {"cleared": 2})
    assert (await raw.call("GET", "/v1/characters"))[0] == 200


@pytest.mark.parametrize(("body", "words"), [
    ({"kind": "explode"}, "unknown fault kind"),
    ({"kind": "drop", "route": "GET /v1/nope"}, "unknown route"),
    ({"kind": "drop", "probability": 1.5}, "probability"),
    ({"kind": "drop", "nth": 1, "every": 2}, "at most one"),
    ({"kind": "drop", "colour": "red"}, "unknown fault field"),
    ([1, 2], "JSON object"),
])
async def test_bad_faults_are_refused_with_a_reason(raw: RawClient, fake: FakeAurousServer,
                                                    body: Any, words: str) -> None:
    """Guards: a bad fault accepted silently (it would never fire) or answered with a 500."""
    status, answer = await control(raw, "POST", "faults", body)
    assert status == 400
    assert words in answer["error"]["message"]
    assert len(fake.faults) == 0


async def test_credits_read_and_set(raw: RawClient, fake: FakeAurousServer) -> None:
    """Guards: credits set over HTTP not reaching the team the API bills."""
    status, body = await control(raw, "GET", "credits")
    assert (status, body) == (200, {"team_id": fake.default_team.id, "credits": 1000.0})
    status, body = await control(raw, "POST", "credits", {"credits": 3})
    assert (status, body["credits"]) == (200, 3.0)
    cid = fake.add_character()
    status, error, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    assert (status, error["error"]["code"]) == (402, "insufficient_credits")
    status, body = await control(raw, "POST", "credits", {"credits": "lots"})
    assert status == 400


def _outside_address() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_control_api_answers_loopback_peers_only(clock: FakeClock) -> None:
    """Guards: a fake bound to 0.0.0.0 letting other machines drive its control API."""
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address besides loopback")
    async with FakeAurousServer(clock=clock, host="0.0.0.0") as fake, \
            aiohttp.ClientSession() as http:
        async with http.get(f"http://{outside}:{fake.port}/_fake/ledger") as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "forbidden"
        async with http.get(f"http://127.0.0.1:{fake.port}/_fake/ledger") as response:
            assert response.status == 200
        # The API itself still answers everyone.
        async with http.get(f"http://{outside}:{fake.port}/v1/balance",
                            headers={"X-Api-Key": fake.api_key}) as response:
            assert response.status == 200
