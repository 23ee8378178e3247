"""The fake server, tested with raw aiohttp over real sockets: every rule of issue #2."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time

import aiohttp
import pytest

from aurous_async.testing import BucketLimit, FakeAurousServer, FakeClock, Fault, FaultKind

from .conftest import ATTRS, RawClient


async def create_synth(raw: RawClient, name: str = "A", **headers: str) -> dict:
    status, body, _ = await raw.call(
        "POST", "/v1/characters", json={"name": name, "generate": True, "attributes": ATTRS},
        headers=headers,
    )
    assert status == 201, body
    return body


def assert_envelope(body: dict, headers, status_type: str, code: str) -> None:
    err = body["error"]
    assert err["type"] == status_type
    assert err["code"] == code
    assert err["message"]
    assert err["request_id"] == headers["Aurous-Request-Id"]
    assert re.fullmatch(r"req_[0-9A-HJKMNP-TV-Z]{26}", err["request_id"])
    assert err["doc_url"] == f"https://docs.aurous-labs.com/errors#{code}"


# -- auth and versions --------------------------------------------------------------------


async def test_auth_errors(raw: RawClient, fake: FakeAurousServer) -> None:
    status, body, headers = await raw.call("GET", "/v1/balance", key=None)
    assert status == 401
    assert_envelope(body, headers, "authentication", "missing_api_key")

    status, body, headers = await raw.call("GET", "/v1/balance", key="al_live_" + "0" * 64)
    assert status == 401
    assert_envelope(body, headers, "authentication", "invalid_api_key")

    team = fake.add_team(name="Other")
    old_key = team.api_key
    fake.add_key(team, "og_legacy_key")
    fake.revoke_key(old_key)
    status, body, headers = await raw.call("GET", "/v1/balance", key=old_key)
    assert (status, body["error"]["code"]) == (401, "revoked_api_key")
    status, _, _ = await raw.call("GET", "/v1/balance", key="og_legacy_key")
    assert status == 200


async def test_bearer_alias_and_read_scope(raw: RawClient, fake: FakeAurousServer) -> None:
    status, _, _ = await raw.call(
        "GET", "/v1/balance", key=None, headers={"Authorization": f"Bearer {fake.api_key}"}
    )
    assert status == 200
    reader = fake.add_key(fake.default_team, "al_live_" + "1" * 64, scope="read")
    status, _, _ = await raw.call("GET", "/v1/characters", key=reader)
    assert status == 200
    status, body, headers = await raw.call(
        "POST", "/v1/characters", key=reader, json={"name": "x", "generate": True, "attributes": ATTRS}
    )
    assert status == 403
    assert_envelope(body, headers, "authentication", "missing_scope")


async def test_version_validated_and_echoed(raw: RawClient) -> None:
    status, _, headers = await raw.call("GET", "/v1/balance")
    assert (status, headers["Aurous-Version"]) == (200, "2026-05-15")
    status, _, headers = await raw.call("GET", "/v1/balance", headers={"Aurous-Version": "2026-05-15"})
    assert (status, headers["Aurous-Version"]) == (200, "2026-05-15")
    for bad in ("2026-5-15", "yesterday", "2031-01-01"):
        status, body, headers = await raw.call("GET", "/v1/balance", headers={"Aurous-Version": bad})
        assert status == 400
        assert_envelope(body, headers, "invalid_request", "unknown_version")
        assert body["error"]["param"] == "Aurous-Version"


async def test_every_response_has_request_id_and_unknown_routes_use_envelope(raw: RawClient) -> None:
    status, body, headers = await raw.call("GET", "/v1/nothing-here")
    assert status == 404
    assert_envelope(body, headers, "not_found", "resource_not_found")
    status, body, headers = await raw.call("PUT", "/v1/characters")
    assert status == 405
    assert body["error"]["request_id"] == headers["Aurous-Request-Id"]


# -- create and lifecycle -----------------------------------------------------------------


async def test_synthesize_flow_lifecycle(raw: RawClient, fake: FakeAurousServer, clock: FakeClock) -> None:
    body = await create_synth(raw)
    assert body["status"] == "synthesizing"
    assert body["object"] == "character" and body["id"].startswith("char_")
    assert set(body) == {"id", "object", "name", "status", "refs", "created_at", "updated_at",
                         "attributes", "error_message", "aurous_version"}
    cid = body["id"]
    assert [c.operation for c in fake.charges_for(cid)] == ["synthesize"]
    assert fake.default_team.credits == 996

    await clock.advance(29)
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert body["status"] == "synthesizing"
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/save")
    assert (status, body["error"]["code"]) == (400, "invalid_request_error")
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    assert (status, body["error"]["code"]) == (400, "invalid_request_error")

    await clock.advance(1)
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert body["status"] == "reviewing"
    assert sorted(r["pose"] for r in body["refs"]) == ["back", "front", "portrait", "side"]
    assert all("token=" in r["url"] for r in body["refs"])

    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/save")
    assert (status, body["status"]) == (200, "ready")
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/save")
    assert (status, body["status"]) == (200, "ready")

    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize", json={"force_all": True})
    assert (status, body["status"]) == (200, "synthesizing")
    await clock.advance(30)
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/refs/regenerate", json={"pose": "side"})
    assert (status, body["status"]) == (200, "synthesizing")
    assert [c.operation for c in fake.charges_for(cid)] == ["synthesize", "resynthesize", "regenerate_ref"]
    assert fake.credits_spent() == 9


async def test_regenerate_validates_pose(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character(status="ready")
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/refs/regenerate", json={"pose": "top"})
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "invalid_request_error", "pose")
    assert fake.charges_for(cid) == []


async def test_failed_synthesis_and_retry_from_failed(raw: RawClient, fake: FakeAurousServer, clock: FakeClock) -> None:
    cid = fake.add_character(status="ready")
    fake.fail_next_synthesis(cid, "provider exploded")
    await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    await clock.advance(30)
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert (body["status"], body["error_message"]) == ("failed", "provider exploded")
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/save")
    assert status == 400
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    assert (status, body["status"], body["error_message"]) == (200, "synthesizing", None)


async def test_create_requires_exactly_one_flow(raw: RawClient) -> None:
    for payload in (
        {"name": "x"},
        {"name": "x", "generate": False, "upload_ids": []},
        {"name": "x", "generate": True, "upload_ids": ["upl_1"], "attributes": ATTRS},
    ):
        status, body, headers = await raw.call("POST", "/v1/characters", json=payload)
        assert status == 400, payload
        assert_envelope(body, headers, "invalid_request", "parameter_invalid_combination")
    status, body, _ = await raw.call("POST", "/v1/characters", json={"name": "x", "generate": True})
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "missing_field", "attributes")
    status, body, _ = await raw.call("POST", "/v1/characters", json=[1, 2])
    assert (status, body["error"]["code"]) == (400, "invalid_format")
    status, body, _ = await raw.call("POST", "/v1/characters", data=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert (status, body["error"]["code"]) == (400, "invalid_format")


async def test_upload_flow(raw: RawClient, fake: FakeAurousServer) -> None:
    status, ticket, _ = await raw.call("POST", "/v1/characters/uploads/init", json={
        "filename": "hero-front.png", "extension": "png", "content_type": "image/png"})
    assert status == 200
    assert ticket["upload_id"].startswith("upl_")
    assert ticket["upload_headers"] == {"Content-Type": "image/png"}
    # Not uploaded yet: the ticket cannot be classified or used.
    status, body, _ = await raw.call("POST", "/v1/characters/uploads/classify",
                                     json={"upload_id": ticket["upload_id"]})
    assert (status, body["error"]["code"]) == (400, "upload_invalid")
    async with raw.http.put(ticket["upload_url"], data=b"\x89PNG...") as put:
        assert put.status == 200
    async with raw.http.put(ticket["upload_url"].replace("signature=", "signature=x"), data=b"") as put:
        assert put.status == 403

    status, body, _ = await raw.call("POST", "/v1/characters/uploads/classify",
                                     json={"upload_id": ticket["upload_id"]})
    assert (status, body["pose"]) == (200, "front")
    assert 0 <= body["confidence"] <= 1

    status, body, _ = await raw.call("POST", "/v1/characters", json={
        "name": "Uploaded", "upload_ids": [ticket["upload_id"]]})
    assert (status, body["status"], [r["pose"] for r in body["refs"]]) == (201, "ready", ["front"])
    assert fake.charges_for(body["id"]) == []
    status, body, _ = await raw.call("POST", "/v1/characters", json={
        "name": "Again", "upload_ids": [ticket["upload_id"]]})
    assert (status, body["error"]["code"]) == (400, "upload_invalid")

    status, body, _ = await raw.call("POST", "/v1/characters/uploads/init", json={
        "filename": "a.png", "extension": "png", "content_type": "image/jpeg"})
    assert (status, body["error"]["code"]) == (400, "parameter_invalid_combination")


async def test_refs_urls_are_signed(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character(status="ready")
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    url = body["refs"][0]["url"]
    async with raw.http.get(url) as response:
        assert response.status == 200
    async with raw.http.get(url.split("?")[0] + "?token=wrong") as response:
        assert response.status == 403


async def test_credits_and_402(raw: RawClient, fake: FakeAurousServer) -> None:
    team = fake.add_team(credits=5)
    status, body, _ = await raw.call("POST", "/v1/characters", key=team.api_key,
                                     json={"name": "x", "generate": True, "attributes": ATTRS})
    assert status == 201
    cid = body["id"]
    fake.finish_synthesis(cid)
    status, body, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize", key=team.api_key)
    assert status == 402
    assert_envelope(body, headers, "invalid_request", "insufficient_credits")
    _, balance, _ = await raw.call("GET", "/v1/balance", key=team.api_key)
    assert balance["credits"] == 1 and balance["available_credits"] == 1
    assert balance["currency"] == "credit"
    # The other spelling of the same error, for clients that must accept both.
    fake.insufficient_credits_code = "balance_too_low"
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize", key=team.api_key)
    assert (status, body["error"]["code"]) == (402, "balance_too_low")


async def test_delete_hard_and_soft(raw: RawClient, fake: FakeAurousServer) -> None:
    reviewing = fake.add_character(status="reviewing")
    ready = fake.add_character(status="ready")
    status, body, _ = await raw.call("DELETE", f"/v1/characters/{reviewing}")
    assert (status, body) == (200, {"id": reviewing, "object": "character", "deleted": True})
    assert reviewing not in fake.default_team.characters

    status, body, _ = await raw.call("DELETE", f"/v1/characters/{ready}")
    assert status == 200
    assert fake.default_team.characters[ready].status == "deleted"
    status, body, _ = await raw.call("GET", f"/v1/characters/{ready}")
    assert (status, body["error"]["code"]) == (404, "resource_not_found")
    status, _, _ = await raw.call("DELETE", f"/v1/characters/{ready}")
    assert status == 404
    status, body, _ = await raw.call("POST", f"/v1/characters/{ready}/resynthesize")
    assert status == 404
    _, page, _ = await raw.call("GET", "/v1/characters")
    assert ready not in [c["id"] for c in page["data"]]


async def test_other_team_and_unknown_ids_are_404(raw: RawClient, fake: FakeAurousServer) -> None:
    other = fake.add_team()
    theirs = fake.add_character(team=other)
    for path in (f"/v1/characters/{theirs}", "/v1/characters/char_nope"):
        status, body, headers = await raw.call("GET", path)
        assert status == 404
        assert_envelope(body, headers, "not_found", "resource_not_found")
    status, _, _ = await raw.call("GET", f"/v1/characters/{theirs}", key=other.api_key)
    assert status == 200


async def test_list_pagination(raw: RawClient, fake: FakeAurousServer, clock: FakeClock) -> None:
    ids = []
    for i in range(45):
        ids.append(fake.add_character(name=f"c{i}"))
        await clock.advance(1)
    deleted = ids.pop(10)
    await raw.call("DELETE", f"/v1/characters/{deleted}")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "20", **({"starting_after": cursor} if cursor else {})}
        status, page, _ = await raw.call("GET", "/v1/characters", params=params)
        assert status == 200 and page["object"] == "list"
        pages += 1
        seen += [c["id"] for c in page["data"]]
        assert (page["next_cursor"] is None) == (not page["has_more"])
        if not page["has_more"]:
            break
        assert page["next_cursor"] == page["data"][-1]["id"]
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == list(reversed(ids))
    _, page, _ = await raw.call("GET", "/v1/characters")
    assert len(page["data"]) == 20
    for bad in ("0", "101", "x"):
        status, body, _ = await raw.call("GET", "/v1/characters", params={"limit": bad})
        assert (status, body["error"]["param"]) == (400, "limit")


async def test_patch_rules(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character(attributes={"gender": "male", "age": 40})
    status, body, _ = await raw.call("PATCH", f"/v1/characters/{cid}", json={"attributes": {"eye_color": "green"}})
    assert (status, body["attributes"]) == (200, {"eye_color": "green"})
    status, body, _ = await raw.call("PATCH", f"/v1/characters/{cid}", json={"name": "New"})
    assert (body["name"], body["attributes"]) == ("New", {"eye_color": "green"})
    status, body, _ = await raw.call("PATCH", f"/v1/characters/{cid}", json={"status": "ready", "refs": []})
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "invalid_request", "status")
    assert "refs" in body["error"]["message"]
    status, body, _ = await raw.call("PATCH", f"/v1/characters/{cid}", json={"name": "x" * 121})
    assert (status, body["error"]["param"]) == (400, "name")
    status, body, _ = await raw.call("PATCH", "/v1/characters/char_missing", json={"name": "y"})
    assert (status, body["error"]["param"]) == (404, "character_id")


# -- idempotency, row by row (api-spec.md §2.6) ---------------------------------------------


async def test_idempotency_replays_success_without_rebilling(raw: RawClient, fake: FakeAurousServer) -> None:
    payload = {"name": "x", "generate": True, "attributes": {"age": 3, "gender": "f"}}
    s1, b1, h1 = await raw.call("POST", "/v1/characters", json=payload, headers={"Idempotency-Key": "k1"})
    reordered = {"attributes": {"gender": "f", "age": 3}, "generate": True, "name": "x"}
    s2, b2, h2 = await raw.call("POST", "/v1/characters", json=reordered, headers={"Idempotency-Key": "k1"})
    assert (s1, s2) == (201, 201)
    assert b1 == b2
    assert "Aurous-Idempotent-Replayed" not in h1
    assert h2["Aurous-Idempotent-Replayed"] == "true"
    assert len(fake.ledger) == 1
    # The newer docs' alias header is the same key.
    s3, _, h3 = await raw.call("POST", "/v1/characters", json=payload, headers={"Aurous-Idempotent-Key": "k1"})
    assert (s3, h3["Aurous-Idempotent-Replayed"]) == (201, "true")


async def test_idempotency_does_not_cache_4xx(raw: RawClient, fake: FakeAurousServer) -> None:
    team = fake.add_team(credits=0)
    cid = fake.add_character(team=team)
    call = dict(key=team.api_key, headers={"Idempotency-Key": "retry-me"})
    status, _, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize", **call)
    assert status == 402
    team.credits = 10
    status, body, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize", **call)
    assert (status, body["status"]) == (200, "synthesizing")
    assert "Aurous-Idempotent-Replayed" not in headers


async def test_idempotency_in_flight_conflict(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character()
    # Held until the 409 is seen (30 s only bounds a test gone wrong): a timed hold could
    # end before the second POST arrived on a slow moment of the machine.
    held = fake.faults.add(Fault(FaultKind.SLOW,
                                 route="POST /v1/characters/{character_id}/resynthesize",
                                 nth=1, delay=30))
    first = asyncio.create_task(raw.call("POST", f"/v1/characters/{cid}/resynthesize",
                                         headers={"Idempotency-Key": "busy"}))
    for _ in range(2000):  # until the first is recorded: its key is then in flight
        if fake.requests:
            break
        await asyncio.sleep(0.005)
    status, body, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize",
                                           headers={"Idempotency-Key": "busy"})
    assert status == 409
    assert_envelope(body, headers, "invalid_request", "idempotency_key_in_use")
    assert "Retry-After" not in headers
    assert cid not in str(body)
    held.release()
    assert (await first)[0] == 200
    status, _, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize",
                                        headers={"Idempotency-Key": "busy"})
    assert (status, headers["Aurous-Idempotent-Replayed"]) == (200, "true")
    assert len(fake.charges_for(cid)) == 1


async def test_idempotency_different_body_or_route_conflicts(raw: RawClient, fake: FakeAurousServer) -> None:
    a, b = fake.add_character(), fake.add_character()
    await raw.call("POST", f"/v1/characters/{a}/resynthesize", json={"force_all": True},
                   headers={"Idempotency-Key": "k"})
    status, body, _ = await raw.call("POST", f"/v1/characters/{a}/resynthesize",
                                     json={"force_all": False}, headers={"Idempotency-Key": "k"})
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")
    status, body, _ = await raw.call("POST", f"/v1/characters/{b}/resynthesize",
                                     json={"force_all": True}, headers={"Idempotency-Key": "k"})
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")
    assert len(fake.ledger) == 1


async def test_idempotency_new_key_absent_header_other_team_and_expiry(
    raw: RawClient, fake: FakeAurousServer, clock: FakeClock
) -> None:
    cid = fake.add_character()
    for _ in range(2):  # no header: processed every time
        await fake_finish(raw, fake, cid, headers={})
    assert len(fake.charges_for(cid)) == 2
    await fake_finish(raw, fake, cid, headers={"Idempotency-Key": "once"})
    assert len(fake.charges_for(cid)) == 3
    other = fake.add_team()
    theirs = fake.add_character(team=other)
    status, _, headers = await raw.call("POST", f"/v1/characters/{theirs}/resynthesize",
                                        key=other.api_key, headers={"Idempotency-Key": "once"})
    assert status == 200 and "Aurous-Idempotent-Replayed" not in headers
    await clock.advance(24 * 3600)
    status, _body, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize",
                                           headers={"Idempotency-Key": "once"})
    assert status == 200 and "Aurous-Idempotent-Replayed" not in headers
    assert len(fake.charges_for(cid)) == 4


async def fake_finish(raw: RawClient, fake: FakeAurousServer, cid: str, headers: dict[str, str]) -> None:
    status, _, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize", headers=headers)
    assert status == 200
    fake.finish_synthesis(cid)


async def test_idempotency_key_length_checked(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character()
    status, body, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize",
                                     headers={"Idempotency-Key": "k" * 257})
    assert (status, body["error"]["param"]) == (400, "Idempotency-Key")


# -- token buckets ------------------------------------------------------------------------


async def test_bucket_is_atomic_under_concurrency(raw: RawClient, fake: FakeAurousServer) -> None:
    payload = {"name": "x", "generate": True, "attributes": ATTRS}
    results = await asyncio.gather(*(raw.call("POST", "/v1/characters", json=payload) for _ in range(30)))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(201) == 12
    assert statuses.count(429) == 18
    assert fake.rate_limited["characters_synthesize"] == 18
    assert len(fake.ledger) == 12
    for status, body, headers in results:
        assert headers["X-RateLimit-Limit"] == "12"
        if status == 429:
            assert body["error"]["code"] == "too_many_requests"
            assert body["error"]["type"] == "rate_limit"
            assert headers["Retry-After"] == "10"
            assert headers["X-RateLimit-Remaining"] == "0"
    remaining = sorted(int(h["X-RateLimit-Remaining"]) for s, _, h in results if s == 201)
    assert remaining == list(range(12))


async def test_bucket_refills_and_reports_reset(raw: RawClient, fake: FakeAurousServer, clock: FakeClock) -> None:
    cid = fake.add_character()
    for _ in range(240):
        status, _, headers = await raw.call("GET", f"/v1/characters/{cid}")
        assert status == 200
    assert headers["X-RateLimit-Remaining"] == "0"
    # Empty: a full refill of 240 tokens at 2/s takes 120 s.
    assert int(headers["X-RateLimit-Reset"]) == int(clock.time()) + 120
    status, _body, headers = await raw.call("GET", f"/v1/characters/{cid}")
    assert (status, headers["Retry-After"]) == (429, "1")
    await clock.advance(0.5)
    status, _, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert status == 200
    # The other buckets are untouched.
    status, _, headers = await raw.call("POST", f"/v1/characters/{cid}/save")
    assert (status, headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (200, "60", "59")


async def test_buckets_are_per_team_and_configurable(clock: FakeClock) -> None:
    async with FakeAurousServer(clock=clock, buckets={"characters_get": BucketLimit(60, 2)},
                                rate_limit_header_prefix="RateLimit-") as fake, \
            aiohttp.ClientSession() as http:
        raw = RawClient(http, fake)
        other = fake.add_team()
        got = [(await raw.call("GET", "/v1/characters"))[0] for _ in range(3)]
        assert got == [200, 200, 429]
        status, _, headers = await raw.call("GET", "/v1/characters", key=other.api_key)
        assert status == 200
        assert headers["RateLimit-Limit"] == "2" and "X-RateLimit-Limit" not in headers
        assert fake.rate_limited == {"characters_get": 1}


# -- faults -------------------------------------------------------------------------------


async def test_fault_drop_after_processing(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character()
    fake.faults.add(Fault(FaultKind.DROP, route="POST /v1/characters/{character_id}/resynthesize"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await raw.call("POST", f"/v1/characters/{cid}/resynthesize", headers={"Idempotency-Key": "d"})
    assert fake.character(cid)["status"] == "synthesizing"
    assert len(fake.charges_for(cid)) == 1
    assert fake.requests[-1].fault == "drop" and fake.requests[-1].status is None


async def test_fault_5xx_do_not_process(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character()
    fake.faults.add(Fault(FaultKind.HTML_502, nth=1))
    fake.faults.add(Fault(FaultKind.JSON_503, nth=2))
    status, body, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    assert status == 502 and headers["Content-Type"].startswith("text/html") and "<html>" in body
    status, body, headers = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    assert status == 503
    assert_envelope(body, headers, "server_error", "provider_unavailable")
    assert fake.charges_for(cid) == []
    status, _, _ = await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
    assert status == 200


async def test_fault_broken_json_extra_fields_unknown_status(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character()
    route = "GET /v1/characters/{character_id}"
    fake.faults.add(Fault(FaultKind.BROKEN_JSON, route=route, nth=1))
    fake.faults.add(Fault(FaultKind.EXTRA_FIELDS, route=route, nth=2))
    fake.faults.add(Fault(FaultKind.UNKNOWN_STATUS, route=route, nth=3, status_value="queued"))
    status, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert status == 200 and isinstance(body, str)
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert body["x_future_field"] and body["refs"][0]["x_future_field"]
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert body["status"] == "queued"
    _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
    assert body["status"] == "ready" and "x_future_field" not in body


async def test_fault_slow_and_selection_rules(raw: RawClient, fake: FakeAurousServer) -> None:
    every = fake.faults.add(Fault(FaultKind.JSON_503, route="GET /v1/balance", every=3, times=2))
    statuses = [(await raw.call("GET", "/v1/balance"))[0] for _ in range(9)]
    assert statuses == [200, 200, 503, 200, 200, 503, 200, 200, 200]
    assert every.fired == 2
    fake.faults.clear()
    fake.faults.add(Fault(FaultKind.SLOW, delay=0.2, route="GET /v1/balance"))
    timeout = aiohttp.ClientTimeout(total=0.05)
    with pytest.raises(asyncio.TimeoutError):
        async with raw.http.get(f"{fake.base_url}/v1/balance", timeout=timeout,
                                headers={"X-Api-Key": fake.api_key}):
            pass
    with pytest.raises(ValueError, match="at most one"):
        Fault(FaultKind.DROP, nth=1, every=2)


async def test_a_slow_hold_lasts_until_the_test_releases_it(raw: RawClient,
                                                            fake: FakeAurousServer) -> None:
    """A SLOW rule keeps its request in flight until ``release()`` (from any thread), and
    holds none after; its ``delay`` only bounds a test gone wrong."""
    held = fake.faults.add(Fault(FaultKind.SLOW, route="GET /v1/balance", delay=30))
    call = asyncio.create_task(raw.call("GET", "/v1/balance"))
    for _ in range(2000):  # until the request is at the server
        if fake.requests_in_progress:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert not call.done() and fake.requests_in_progress == 1
    released_at = time.monotonic()
    threading.Thread(target=held.release).start()
    assert (await asyncio.wait_for(call, 5))[0] == 200
    assert time.monotonic() - released_at < 1
    assert (await asyncio.wait_for(raw.call("GET", "/v1/balance"), 1))[0] == 200  # no hold
    assert held.fired == 2


async def test_probability_faults_are_seeded(clock: FakeClock) -> None:
    async def run() -> list[int]:
        async with FakeAurousServer(clock=clock, seed=7) as fake, aiohttp.ClientSession() as http:
            fake.faults.add(Fault(FaultKind.JSON_503, probability=0.3))
            raw = RawClient(http, fake)
            return [(await raw.call("GET", "/v1/balance"))[0] for _ in range(40)]

    first, second = await run(), await run()
    assert first == second
    assert 4 <= first.count(503) <= 20


# -- inspection and standalone ------------------------------------------------------------


async def test_request_log_records_everything(raw: RawClient, fake: FakeAurousServer) -> None:
    cid = fake.add_character()
    await raw.call("POST", f"/v1/characters/{cid}/resynthesize", json={"force_all": True},
                   headers={"Idempotency-Key": "logged"})
    entry = fake.requests_to("POST /v1/characters/{character_id}/resynthesize")[-1]
    assert entry.method == "POST" and entry.path == f"/v1/characters/{cid}/resynthesize"
    assert entry.headers["Idempotency-Key"] == "logged"
    assert entry.json() == {"force_all": True}
    assert entry.status == 200 and entry.bucket == "characters_synthesize"
    assert entry.team_id == fake.default_team.id
    assert fake.ledger[-1].request_id == entry.request_id


async def test_scaled_time_plays_minutes_in_milliseconds() -> None:
    async with FakeAurousServer(time_scale=6000, synthesis_seconds=60) as fake, \
            aiohttp.ClientSession() as http:
        raw = RawClient(http, fake)
        cid = fake.add_character()
        await raw.call("POST", f"/v1/characters/{cid}/resynthesize")
        await asyncio.sleep(0.015)  # 90 API seconds (at least: a late wake-up adds more)
        _, body, _ = await raw.call("GET", f"/v1/characters/{cid}")
        assert body["status"] == "reviewing"


def test_standalone_server_runs() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aurous_async.testing", "--port", "0", "--api-key", "al_live_" + "a" * 64],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, first

        async def probe() -> int:
            async with aiohttp.ClientSession() as http, http.get(
                url.group(0) + "/v1/balance", headers={"X-Api-Key": "al_live_" + "a" * 64}
            ) as response:
                return response.status

        assert asyncio.run(probe()) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
