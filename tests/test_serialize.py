"""Models to JSON and back: ``to_dict()`` is JSON-ready through the one converter, and
``from_dict()`` reads it back as strictly as a response (issue 16, items 2 and 9)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aurous_async as aa
from aurous_async import _models
from aurous_async.testing import FakeAurousServer, ScaledClock

KEY = "al_live_" + "cd" * 16
UTC = timezone.utc


def assert_plain_json(value: Any, where: str = "$") -> None:
    """Only the types ``json`` makes: a ``str`` subclass (an enum member), a tuple or a
    datetime left in would pass ``json.dumps`` in some cases and break a client in
    others."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, where
            assert_plain_json(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_plain_json(item, f"{where}[{index}]")
    else:
        assert type(value) in (str, int, float, bool, type(None)), (where, type(value))


def open_enum(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Documented members and whatever a newer server might send."""
    return st.one_of(st.sampled_from(list(cls)), st.text(max_size=12).map(cls))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
    timezones=st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23),
                                                max_value=timedelta(hours=23))),
)
refs = st.builds(aa.Ref, open_enum(aa.Pose), st.text())
attributes = st.builds(
    aa.CharacterAttributes,
    **{name: optional(st.text()) for name in ("gender", "ethnicity", "hair_color",
                                              "hair_style", "eye_color", "body_type",
                                              "additional_details")},
    age=optional(st.integers()),
)
characters = st.builds(
    aa.Character, id=st.text(), status=open_enum(aa.CharacterStatus), name=st.text(),
    refs=st.lists(refs, max_size=4).map(tuple), created_at=optional(moments),
    updated_at=optional(moments), attributes=optional(attributes),
    error_message=optional(st.text()), aurous_version=optional(st.text()),
    request_id=optional(st.text()),
)
updates = st.builds(
    aa.StatusUpdate, character=characters, status=open_enum(aa.CharacterStatus),
    previous_status=optional(open_enum(aa.CharacterStatus)), terminal=st.booleans(),
    polls=st.integers(min_value=0), elapsed=st.floats(min_value=0, allow_infinity=False),
)


@given(characters)
def test_any_character_survives_json_and_back(character: aa.Character) -> None:
    """Defect guarded: a field ``to_dict`` writes in a shape ``from_dict`` refuses or
    reads differently (an unknown status, a time zone, a tuple of refs)."""
    data = character.to_dict()
    assert_plain_json(data)
    text = json.dumps(data, allow_nan=False)
    assert aa.Character.from_dict(json.loads(text)) == character


@given(updates)
def test_any_status_update_survives_json_and_back(update: aa.StatusUpdate) -> None:
    """Defect guarded: a stream of updates sent as JSON that its reader cannot rebuild."""
    data = update.to_dict()
    assert_plain_json(data)
    assert aa.StatusUpdate.from_dict(json.loads(json.dumps(data, allow_nan=False))) == update


def test_the_json_shape_of_a_character() -> None:
    """Defect guarded: enum members, tuples, local-offset times or the request id in
    what a web app returns."""
    character = aa.Character(
        id="char_1", status=aa.CharacterStatus("queued"), name="Hero",
        refs=(aa.Ref(aa.Pose.FRONT, "https://cdn.example/f.png?token=abc"),),
        created_at=datetime(2026, 5, 15, 14, 30, tzinfo=timezone(timedelta(hours=2))),
        updated_at=datetime(2026, 5, 15, 12, 31, 5, 250000),  # naive: read as UTC
        attributes=aa.CharacterAttributes(gender="female", age=28),
        request_id="req_1",
    )
    assert character.to_dict() == {
        "id": "char_1", "status": "queued", "name": "Hero",
        "refs": [{"pose": "front", "url": "https://cdn.example/f.png?token=abc"}],
        "created_at": "2026-05-15T12:30:00Z", "updated_at": "2026-05-15T12:31:05.250000Z",
        "attributes": {"gender": "female", "age": 28, "ethnicity": None, "hair_color": None,
                       "hair_style": None, "eye_color": None, "body_type": None,
                       "additional_details": None},
        "error_message": None, "aurous_version": None,
    }
    assert_plain_json(character.to_dict())


def test_a_signed_url_keeps_its_token_in_to_dict_but_not_in_repr() -> None:
    """Defect guarded: redacting the token in ``to_dict`` (the URL then no longer
    loads), or showing it in ``repr`` (it lands in logs)."""
    ref = aa.Ref(aa.Pose.SIDE, "https://cdn.example/s.png?token=s3cr3t&w=2")
    ticket = aa.UploadTicket(upload_id="upl_1", upload_url="https://b.example/o?token=s3cr3t")
    assert ref.to_dict()["url"] == "https://cdn.example/s.png?token=s3cr3t&w=2"
    assert ticket.to_dict()["upload_url"] == "https://b.example/o?token=s3cr3t"
    assert "s3cr3t" not in repr(ref) and "s3cr3t" not in repr(ticket)


character = aa.Character(id="char_1", status=aa.CharacterStatus.READY)
SAMPLES: dict[str, Any] = {
    "Ref": aa.Ref(aa.Pose("tilted"), "https://cdn.example/x.png?token=t"),
    "CharacterAttributes": aa.CharacterAttributes(hair_color="black"),
    "Character": character,
    "DeletedCharacter": aa.DeletedCharacter(id="char_1", deleted=True, request_id="req_2"),
    "UploadTicket": aa.UploadTicket(upload_id="upl_1", upload_url="https://b.example/o",
                                    upload_headers={"Content-Type": "image/png"},
                                    expires_at=datetime(2026, 1, 1, tzinfo=UTC)),
    "UploadClassification": aa.UploadClassification(upload_id="upl_1", pose=aa.Pose.BACK,
                                                    confidence=0.75),
    "Balance": aa.Balance(credits=10, available_credits=7.5, held_credits=2.5,
                          billing_mode="prepaid"),
    "StatusUpdate": aa.StatusUpdate(character=character, status=aa.CharacterStatus.READY,
                                    previous_status=aa.CharacterStatus("queued"),
                                    terminal=True, polls=3, elapsed=12.5),
    "BatchResult": aa.BatchResult(character_id="char_1", character=character,
                                  from_journal=True),
    "BatchProgress": aa.BatchProgress(total=3, queued=1, dispatched=0, synthesizing=1,
                                      done=1, failed=0, gets=4, charged=2,
                                      character_id="char_1", state="done"),
}


def test_every_public_model_has_a_sample_here() -> None:
    """Defect guarded: a new model added without ``to_dict`` being checked for it."""
    models = {name for name in _models.__all__ if attrs.has(getattr(_models, name))}
    assert models == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_model_is_json_ready_and_reads_back(name: str) -> None:
    """Defect guarded: a model FastAPI cannot return (a 500), or one whose JSON its own
    ``from_dict`` refuses."""
    value = SAMPLES[name]
    data = value.to_dict()
    assert_plain_json(data)
    assert "request_id" not in data
    decoded = json.loads(json.dumps(data, allow_nan=False))
    if name == "BatchResult":
        assert not hasattr(value, "from_dict")  # an exception cannot be rebuilt
        assert decoded["from_journal"] is True and decoded["error"] is None
    else:
        assert type(value).from_dict(decoded) == value


@pytest.mark.parametrize(("data", "message"), [
    ({"status": "ready"}, r"^the data is not a valid Character: required field missing "
                          r"@ Character\.id$"),
    ({"id": 7, "status": "ready"}, r"expected a string, got int @ Character\.id"),
    ({"id": "c", "status": "ready", "refs": [{"pose": "front"}]},
     r"required field missing @ Character\.refs\[0\]\.url"),
    ({"id": "c", "status": "ready", "attributes": {"age": "28"}},
     r"expected an integer, got str @ Character\.attributes\.age"),
    ([{"id": "c"}], r"expected a JSON object for Character, got list"),
    ('{"id": "c"}', r"expected a JSON object for Character, got str"),
])
def test_from_dict_refuses_bad_data_with_a_value_error_saying_where(
        data: Any, message: str) -> None:
    """Defect guarded: a bare ``KeyError: 'id'``, or an error blaming "the response" for
    data the caller passed."""
    with pytest.raises(ValueError, match=message):
        aa.Character.from_dict(data)


def test_from_dict_keeps_secrets_out_of_its_error() -> None:
    """Defect guarded: a signed URL pasted where a time belongs echoed, token and all."""
    with pytest.raises(ValueError, match=r"@ Character\.created_at") as info:
        aa.Character.from_dict({"id": "c", "status": "ready",
                                "created_at": "https://x.example/?token=s3cr3t"})
    assert "s3cr3t" not in str(info.value)


def test_from_dict_takes_any_mapping() -> None:
    """Defect guarded: a read-only mapping refused as "not a JSON object"."""
    data = MappingProxyType({"id": "char_1", "status": "ready"})
    assert aa.Character.from_dict(data) == character


def test_status_update_failed() -> None:
    """Defect guarded: no way but string comparison to tell a failed end from a good
    one (a bot counted failures as successes)."""
    def update(status: str) -> aa.StatusUpdate:
        return aa.StatusUpdate(character=character, status=aa.CharacterStatus(status),
                               previous_status=None, terminal=True, polls=1, elapsed=1.0)

    assert update("failed").failed
    assert not update("ready").failed and not update("reviewing").failed
    assert not update("exploded").failed


class _Recorded(aa.AurousError):
    """Like the journal's record of an earlier run: it names the original class."""

    error_class = "InsufficientCreditsError"
    code = "insufficient_credits"


def test_a_batch_error_becomes_a_small_redacted_dict() -> None:
    """Defect guarded: the raw exception in ``to_dict`` (not JSON, headers and body
    along), a secret in its message, or a resumed outcome named after the journal's
    stand-in class."""
    plain = aa.BatchResult(character_id="c",
                           error=aa.APIConnectionError(f"reset while sending {KEY}"))
    assert plain.to_dict()["error"] == {
        "error_class": "APIConnectionError", "code": None,
        "message": "reset while sending al_live_…", "status": None, "request_id": None,
    }
    recorded = aa.BatchResult(character_id="c", error=_Recorded("402 in an earlier run"),
                              from_journal=True)
    assert recorded.to_dict()["error"]["error_class"] == "InsufficientCreditsError"
    assert recorded.to_dict()["error"]["code"] == "insufficient_credits"


async def test_an_api_character_survives_json_and_back(sfake: FakeAurousServer,
                                                       session: aa.AurousSession) -> None:
    """Defect guarded: the fields the API really sends (signed refs, times, attributes)
    not surviving a trip through a web app's JSON."""
    fetched = await session.characters.get(sfake.add_character(status="ready"))
    data = json.loads(json.dumps(fetched.to_dict(), allow_nan=False))
    assert data["refs"] and all("token=" in ref["url"] for ref in data["refs"])
    assert data["created_at"].endswith("Z")
    assert aa.Character.from_dict(data) == fetched


@pytest.fixture
async def scaled() -> AsyncIterator[FakeAurousServer]:
    """A fake whose 30 s synthesis takes 30 ms of real time."""
    async with FakeAurousServer(clock=ScaledClock(1000), synthesis_seconds=30) as server:
        yield server


async def test_a_failed_watch_says_failed(scaled: FakeAurousServer) -> None:
    """Defect guarded: a watch ending ``failed`` indistinguishable from a success."""
    character_id = scaled.add_character(status="ready")
    scaled.fail_next_synthesis(character_id, "GPU on fire")
    # A generous per-attempt timeout: at x1000 the default 60 s is 60 ms of real time.
    async with scaled.session(timeout=3600) as session:
        seen = [update async for update
                in session.characters.resynthesize_and_watch(character_id)]
    assert [update.failed for update in seen] == [False] * (len(seen) - 1) + [True]
    assert seen[-1].to_dict()["character"]["error_message"] == "GPU on fire"


async def test_an_api_error_in_a_batch_result_serializes(session: aa.AurousSession) -> None:
    """Defect guarded: a batch outcome with an API error that a web app cannot return."""
    async with session.characters.resynthesize_many(["char_missing"]) as results:
        outcomes = [result async for result in results]
    data = outcomes[0].to_dict()
    assert_plain_json(data)
    assert data["character_id"] == "char_missing" and data["character"] is None
    error = data["error"]
    assert error["error_class"] == "NotFoundError" and error["status"] == 404
    assert error["code"] == "resource_not_found" and error["request_id"]
    assert error["message"] == "No such character."
