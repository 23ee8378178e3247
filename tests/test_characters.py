"""Every characters endpoint through the SDK against the fake server."""

from __future__ import annotations

import pytest

import aurous_async as aa
from aurous_async.testing import FakeAurousServer, FakeClock, Fault, FaultKind

ATTRS = {"gender": "female", "age": 28, "hair_color": "black"}


async def test_synthesize_create_get_save_delete(session: aa.AurousSession, sfake: FakeAurousServer,
                                                 auto_clock: FakeClock) -> None:
    hero = await session.characters.create(name="Aurora", generate=True, attributes=ATTRS)
    assert hero.status is aa.CharacterStatus.SYNTHESIZING
    assert hero.attributes == aa.CharacterAttributes(gender="female", age=28, hair_color="black")
    assert hero.request_id and hero.request_id.startswith("req_")
    assert hero.aurous_version == "2026-05-15"
    assert hero.created_at is not None and hero.created_at.tzinfo is not None
    await auto_clock.advance(30)
    hero = await session.characters.get(hero.id)
    assert hero.status is aa.CharacterStatus.REVIEWING
    assert {r.pose for r in hero.refs} == {aa.Pose.PORTRAIT, aa.Pose.FRONT, aa.Pose.SIDE, aa.Pose.BACK}
    saved = await session.characters.save(hero.id)
    assert saved.status is aa.CharacterStatus.READY
    deleted = await session.characters.delete(hero.id)
    assert deleted == aa.DeletedCharacter(id=hero.id, deleted=True)
    with pytest.raises(aa.NotFoundError):
        await session.characters.get(hero.id)


async def test_create_accepts_attributes_class_and_sends_only_set_fields(
    session: aa.AurousSession, sfake: FakeAurousServer
) -> None:
    await session.characters.create(name="B", generate=True,
                                    attributes=aa.CharacterAttributes(eye_color="green"))
    sent = sfake.requests_to("POST /v1/characters")[-1].json()
    assert sent == {"name": "B", "generate": True, "attributes": {"eye_color": "green"}}


@pytest.mark.parametrize("kwargs", [
    {"name": "x"},
    {"name": "x", "generate": True, "upload_ids": ["upl_1"]},
    {"name": "x", "upload_ids": []},
])
async def test_create_rejects_both_or_neither_flow_before_any_request(
    session: aa.AurousSession, sfake: FakeAurousServer, kwargs: dict
) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await session.characters.create(**kwargs)
    assert sfake.requests == []


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"name": "", "generate": True}, ValueError),
    ({"name": 5, "generate": True}, TypeError),
    ({"name": "x", "generate": "yes"}, TypeError),
    ({"name": "x", "upload_ids": "upl_1"}, TypeError),
    ({"name": "x", "upload_ids": ["u"] * 7}, ValueError),
    ({"name": "x", "generate": True, "attributes": {"hat": "big"}}, ValueError),
    ({"name": "x", "generate": True, "attributes": {"age": "old"}}, TypeError),
    ({"name": "x", "generate": True, "attributes": ["age"]}, TypeError),
    ({"name": "x", "generate": True, "idempotency_key": ""}, ValueError),
    ({"name": "x", "generate": True, "idempotency_key": "k" * 257}, ValueError),
    ({"name": "x", "generate": True, "idempotency_key": "has space"}, ValueError),
    ({"name": "x", "generate": True, "idempotency_key": 12}, TypeError),
])
async def test_create_validates_arguments(session: aa.AurousSession, sfake: FakeAurousServer,
                                          kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        await session.characters.create(**kwargs)
    assert sfake.requests == []


async def test_upload_flow(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    ticket = await session.characters.uploads.upload(b"\x89PNG fake", "hero-side.png", "image/png")
    assert ticket.upload_id.startswith("upl_")
    assert "signature=…" in repr(ticket) and ticket.upload_url not in repr(ticket)
    classified = await session.characters.uploads.classify(ticket.upload_id)
    assert classified.pose is aa.Pose.SIDE and 0 <= classified.confidence <= 1
    hero = await session.characters.create(name="Up", upload_ids=[ticket.upload_id])
    assert hero.status is aa.CharacterStatus.READY
    assert [r.pose for r in hero.refs] == [aa.Pose.SIDE]
    with pytest.raises(aa.InvalidRequestError) as info:
        await session.characters.create(name="Again", upload_ids=[ticket.upload_id])
    assert info.value.code == "upload_invalid"
    with pytest.raises(ValueError, match="content_type"):
        await session.characters.uploads.init("a.gif", "image/gif")


async def test_update_replaces_attributes_whole(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    cid = sfake.add_character(attributes={"gender": "male", "age": 40})
    updated = await session.characters.update(cid, attributes={"eye_color": "blue"})
    assert updated.attributes == aa.CharacterAttributes(eye_color="blue")
    renamed = await session.characters.update(cid, name="Renamed")
    assert (renamed.name, renamed.attributes) == ("Renamed", aa.CharacterAttributes(eye_color="blue"))
    assert sfake.requests_to("PATCH /v1/characters/{character_id}")[-1].json() == {"name": "Renamed"}
    with pytest.raises(ValueError, match="name and/or attributes"):
        await session.characters.update(cid)


async def test_resynthesize_and_regenerate(session: aa.AurousSession, sfake: FakeAurousServer,
                                           auto_clock: FakeClock) -> None:
    cid = sfake.add_character(status="ready")
    c = await session.characters.resynthesize(cid, force_all=True)
    assert c.status is aa.CharacterStatus.SYNTHESIZING
    assert sfake.requests[-1].json() == {"force_all": True}
    with pytest.raises(aa.InvalidRequestError) as info:
        await session.characters.resynthesize(cid)
    assert info.value.code == "invalid_request_error"
    await auto_clock.advance(30)
    c = await session.characters.regenerate_ref(cid, aa.Pose.BACK, prompt_override="smile")
    assert c.status is aa.CharacterStatus.SYNTHESIZING
    await auto_clock.advance(30)
    await session.characters.regenerate_ref(cid, "front")
    assert [x.operation for x in sfake.charges_for(cid)] == ["resynthesize", "regenerate_ref", "regenerate_ref"]
    assert sfake.requests[-1].json() == {"pose": "front"}


@pytest.mark.parametrize("pose", ["top", "FRONT", "", 3])
async def test_regenerate_validates_pose_client_side(session: aa.AurousSession, sfake: FakeAurousServer,
                                                     pose: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        await session.characters.regenerate_ref("char_x", pose)  # type: ignore[arg-type]
    assert sfake.requests == []


async def test_list_follows_cursor_over_pages(session: aa.AurousSession, sfake: FakeAurousServer,
                                              auto_clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        ids.append(sfake.add_character(name=f"c{i}"))
        await auto_clock.advance(1)
    got = [c.id async for c in session.characters.list(limit=3)]
    assert got == list(reversed(ids))
    gets = sfake.requests_to("GET /v1/characters")
    assert [r.query for r in gets] == [
        {"limit": "3"},
        {"limit": "3", "starting_after": ids[4]},
        {"limit": "3", "starting_after": ids[1]},
    ]
    assert len([c async for c in session.characters.list()]) == 7
    with pytest.raises(ValueError, match="between 1 and 100"):
        [c async for c in session.characters.list(limit=101)]
    with pytest.raises(TypeError):
        [c async for c in session.characters.list(limit="3")]  # type: ignore[arg-type]


async def test_balance(session: aa.AurousSession) -> None:
    balance = await session.balance()
    assert balance.available_credits == 1000 and balance.currency == "credit"


async def test_forward_compatible_parsing(session: aa.AurousSession, sfake: FakeAurousServer) -> None:
    cid = sfake.add_character()
    route = "GET /v1/characters/{character_id}"
    sfake.faults.add(Fault(FaultKind.EXTRA_FIELDS, route=route, nth=1))
    sfake.faults.add(Fault(FaultKind.UNKNOWN_STATUS, route=route, nth=2, status_value="queued"))
    extra = await session.characters.get(cid)
    assert extra.status is aa.CharacterStatus.READY and len(extra.refs) == 4
    unknown = await session.characters.get(cid)
    assert unknown.status == "queued"
    assert not unknown.status.is_known and not unknown.status.is_terminal
    assert str(unknown.status) == "queued"
    assert aa.CharacterStatus("queued") is unknown.status
    assert "queued" not in [s.value for s in aa.CharacterStatus]


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "a?b", "a#b", "%2e%2e", "x/../../balance"])
async def test_ids_never_escape_their_path_segment(session: aa.AurousSession, sfake: FakeAurousServer,
                                                   bad_id: str) -> None:
    with pytest.raises(aa.NotFoundError):
        await session.characters.get(bad_id)
    recorded = sfake.requests[-1]
    assert recorded.route == "GET /v1/characters/{character_id}"
    assert recorded.path.startswith("/v1/characters/")
    assert recorded.query == {}


@pytest.mark.parametrize(("bad_id", "error"), [("", ValueError), (".", ValueError), ("..", ValueError),
                                               ("a\nb", ValueError), (" x", ValueError), (None, TypeError),
                                               ("x" * 300, ValueError)])
async def test_invalid_ids_rejected_before_any_request(session: aa.AurousSession, sfake: FakeAurousServer,
                                                       bad_id: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        await session.characters.get(bad_id)  # type: ignore[arg-type]
    with pytest.raises(error):
        await session.characters.resynthesize(bad_id)  # type: ignore[arg-type]
    assert sfake.requests == []
