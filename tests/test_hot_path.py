"""The hot request path's shortcuts give exactly what the plain code gives.

- ``_json.loads`` (orjson when installed) against :func:`json.loads`: the same value,
  types included, or the same error, on hostile text too (numbers past 64 bits, NaN,
  lone surrogates, deep nesting, other encodings);
- ``_construct.constructor`` against the classes' own ``__init__``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aurous_async as aa
from aurous_async import _json
from aurous_async._calls import ApiResponse
from aurous_async._construct import constructor
from aurous_async._ratelimit import RateLimitFeedback

needs_orjson = pytest.mark.skipif(_json._fast is None,
                                  reason="orjson (3.9.15 or later) is not installed")


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (NaN equals NaN); iterative, as the
    values may nest deeper than the recursion limit allows a recursive walk."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending.extend((x[key], y[key]) for key in x)
        elif isinstance(x, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def _outcome(loads: Any, raw: bytes) -> Any:
    try:
        return ("value", loads(raw))
    except RecursionError:
        return ("error", RecursionError)
    except ValueError as exc:
        return ("error", type(exc))


def _as_the_transport_reads(raw: bytes) -> Any:
    """The transport's way to ``data``: decoded unscanned, scanned once ``data`` is read."""
    return ApiResponse(status=200, data=(_json.loads_unscanned(raw), raw),
                       headers={}, request_id=None).data


def _assert_same_as_stdlib(raw: bytes) -> None:
    theirs = _outcome(json.loads, raw)
    for loads in (_json.loads, _as_the_transport_reads):
        ours = _outcome(loads, raw)
        assert ours[0] == theirs[0], (raw[:80], ours, theirs)
        if ours[0] == "value":
            assert _same(ours[1], theirs[1]), (raw[:80], ours, theirs)
        else:
            assert ours[1] is theirs[1] or issubclass(ours[1], ValueError) == issubclass(
                theirs[1], ValueError), (raw[:80], ours, theirs)


HOSTILE = [
    b'{"age": 99999999999999999999}', b"-9223372036854775809", b"18446744073709551615",
    b"18446744073709551616", b"[1e400, -1e400, 1e-400]", b"NaN", b"[Infinity, -Infinity]",
    b'"\\ud800"', b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16"),
    '[1, "é"]'.encode("utf-32"), b'{"a": 1, "a": 2}', b"\xff\xfe\x00", b"", b" ", b"[1,]",
    b'"a\x01b"', b"9" * 5000, b"[" * 100_000, b"0" * 19, b'"' + b"1" * 30 + b'"',
    b"[" * 400 + b"]" * 400, b"[" * 1000 + b"]" * 1000, b"[" * 1020 + b"]" * 1020,
    b"{" + b'"a":{' * 600 + b"}" * 601, b"[" * 1030 + b"]" * 1030,
]


@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_decodes_as_the_standard_library_decodes_it(raw: bytes) -> None:
    _assert_same_as_stdlib(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers() | st.integers(min_value=2**63 - 3, max_value=2**64 + 3)
    | st.integers(min_value=-(2**63) - 3, max_value=-(2**63) + 3)
    | st.integers(min_value=10**18, max_value=10**400) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, ascii_only=st.booleans(), cut=st.integers(0, 3), noise=st.binary(max_size=3))
def test_any_json_decodes_as_the_standard_library_decodes_it(value: Any, ascii_only: bool,
                                                            cut: int, noise: bytes) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    _assert_same_as_stdlib(text)
    _assert_same_as_stdlib(text[: len(text) - cut] + noise)  # cut short, or garbage after


@needs_orjson
def test_orjson_is_used_for_an_ordinary_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = _json._fast
    assert real is not None
    monkeypatch.setattr(_json, "_fast", lambda raw: calls.append(raw) or real(raw))
    body = json.dumps({"id": "char_1", "status": "ready", "refs": [], "n": 12345}).encode()
    assert _json.loads(body) == json.loads(body)
    assert calls == [body]


def test_an_orjson_without_a_nesting_limit_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson before 3.9.15 nests without limit and crashes the process on a deep enough
    body (CVE-2024-27454): such an orjson must be left alone."""
    old = types.ModuleType("orjson")
    old.JSONDecodeError = json.JSONDecodeError  # type: ignore[attr-defined]
    old.loads = lambda raw: []  # type: ignore[attr-defined]  # accepts any depth
    monkeypatch.setitem(sys.modules, "orjson", old)
    assert _json._orjson() is None


def test_a_body_nested_a_million_deep_is_invalid_json_not_a_crash() -> None:
    """With any orjson installed, old or new: the process survives and says invalid JSON."""
    code = ("from aurous_async import _json\n"
            "try:\n    _json.loads(b'[' * 10**6 + b']' * 10**6)\n"
            "except RecursionError:\n    print('refused')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "refused")


def _decoded(loads: Any, raw: bytes, cls: type) -> Any:
    try:
        data = loads(raw)
    except (ValueError, RecursionError):
        return "invalid_json"
    try:
        return ApiResponse(status=200, data=data, headers={}, request_id=None).into(cls)
    except aa.MalformedResponseError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("raw", [
    b'{"id": "c", "status": "ready", "attributes": {"age": 123456789012345678901}}',
    b'{"id": "c", "status": "ready", "name": 99999999999999999999}',
    b'{"id": "c", "status": "ready", "junk": ' + b"[" * 990 + b"]" * 990 + b"}",
    b'{"credits": 123456789012345678901234, "available_credits": NaN}',
    b'{"credits": 1e400, "available_credits": 1}',
], ids=["huge age", "huge name", "deep junk", "huge credits", "infinite credits"])
def test_answers_decode_into_the_same_models_or_errors(raw: bytes) -> None:
    for cls in (aa.Character, aa.Balance):
        assert _decoded(_json.loads, raw, cls) == _decoded(json.loads, raw, cls)
        assert _decoded_as_the_transport_does(raw, cls) == _decoded(json.loads, raw, cls)


def _decoded_as_the_transport_does(raw: bytes, cls: type) -> Any:
    """The transport's way: the body unscanned for long integers, the scan left to
    whoever reads ``data`` (a Character needs it only when its fast decode fails)."""
    try:
        data = _json.loads_unscanned(raw)
    except (ValueError, RecursionError):
        return "invalid_json"
    response = ApiResponse(status=200, data=(data, raw), headers={},
                           request_id=None)
    try:
        return response.into(cls)
    except aa.MalformedResponseError as exc:
        return type(exc), str(exc)


@pytest.mark.skipif(_json._fast is None, reason="orjson (the speed extra) is not installed")
@pytest.mark.parametrize(("raw", "orjson_differs"), [
    (b'{"id": "c", "status": "ready", "big": 123456789012345678901, '
     b'"n": [-9223372036854775809]}', True),
    (b'{"data": [{"id": "c", "status": "ready", "attributes": {"age": 18446744073709551616}}]}',
     True),
    (b'{"id": "c", "status": "ready", "n": 18446744073709551615, "f": 1.5}', False),
], ids=["beyond 64 bits", "in a list page", "within 64 bits"])
def test_an_unscanned_answer_reads_as_json_loads_once_data_is_read(
        raw: bytes, orjson_differs: bool) -> None:
    expected = json.loads(raw)
    assert _same(_json.loads_unscanned(raw), expected) is not orjson_differs
    def unscanned() -> ApiResponse:
        return ApiResponse(status=200, data=(_json.loads_unscanned(raw), raw),
                           headers={}, request_id=None)

    response = unscanned()
    assert _same(response.data, expected)
    assert _same(response.data, expected) and type(response._data) is not tuple
    # A copy made before data was read still reads exactly; one given new data has it.
    assert _same(attrs.evolve(unscanned(), status=201).data, expected)
    item = {"id": "c", "status": "ready"}
    assert attrs.evolve(unscanned(), data=item).data is item
    assert "bytes, not yet scanned" in repr(unscanned()) and "ready" not in repr(unscanned())


@attrs.frozen(kw_only=True)
class _Plain:
    a: int
    b: str = "x"


def test_a_constructor_makes_what_init_makes() -> None:
    make = constructor(_Plain)
    made, inited = make(1, "y"), _Plain(a=1, b="y")
    assert (made, hash(made), repr(made), type(made)) == (inited, hash(inited), repr(inited), _Plain)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.a = 2  # type: ignore[misc]
    feedback = constructor(RateLimitFeedback)(3, 1.5, None, False, 1.0, 2.0)
    assert feedback == RateLimitFeedback(remaining=3, reset=1.5, limited=False, sent_at=1.0,
                                         received_at=2.0)


def test_a_class_whose_init_does_more_is_refused() -> None:
    @attrs.frozen
    class Checked:
        a: int = attrs.field(validator=attrs.validators.instance_of(int))

    @attrs.frozen
    class After:
        a: int

        def __attrs_post_init__(self) -> None:
            pass

    for cls in (Checked, After, attrs.frozen(slots=False)(type("Loose", (), {"__annotations__": {"a": "int"}}))):
        with pytest.raises(TypeError, match="without __init__"):
            constructor(cls)


texts = st.none() | st.text(max_size=6) | st.integers() | st.floats(allow_nan=False)
characters = st.fixed_dictionaries(
    {"id": texts | st.just("char_1"), "status": st.sampled_from(["ready", "queued", 5])},
    optional={
        "name": texts, "error_message": texts, "aurous_version": texts, "request_id": texts,
        "created_at": st.sampled_from(["2026-05-08T10:00:00Z", "yesterday", None, 3]),
        "refs": st.lists(st.fixed_dictionaries({"pose": texts, "url": texts}), max_size=3)
        | texts,
        "attributes": st.none() | st.fixed_dictionaries(
            {}, optional={"age": st.integers(0, 120) | texts, "gender": texts, "x": texts}),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=characters, request_id=st.sampled_from([None, "", "req_1", "req 2"]))
def test_into_character_matches_decoding_a_copy_with_the_request_id(
        data: dict, request_id: str | None) -> None:
    """``into(Character)`` hands the answer's request id to the fast decoder instead of
    copying the body to add it (as it did): the same Character, request_id included, or
    the same error message; and the same as cattrs' generated function."""
    from aurous_async._convert import DecodeError, _character_fields, decode

    copied = {**data, "request_id": request_id} if request_id else data
    try:
        expected: Any = decode(copied, aa.Character)
    except DecodeError as exc:
        expected = str(exc)
    response = ApiResponse(status=200, data=data, headers={}, request_id=request_id)
    if isinstance(expected, str):
        with pytest.raises(aa.MalformedResponseError) as refused:
            response.into(aa.Character)
        assert expected in str(refused.value)
    else:
        got = response.into(aa.Character)
        assert got == expected and got.request_id == expected.request_id
        assert got == _character_fields(copied, aa.Character)


def test_repeated_attributes_and_times_are_made_once_and_stay_bounded() -> None:
    """A poll answer repeats the character's attributes and times: they are shared, never
    mixed up with ones that differ (not even True for 1), and the tables stay small."""
    from aurous_async import _convert

    def character(age: Any, created: str = "2026-05-08T10:00:00Z") -> aa.Character:
        data = {"id": "c", "status": "ready", "created_at": created,
                "attributes": {"gender": "female", "age": age}}
        return ApiResponse(status=200, data=data, headers={}, request_id=None).into(
            aa.Character)

    first, again = character(30), character(30)
    assert first == again and first.attributes is again.attributes
    assert first.created_at is again.created_at
    other = character(31, "2026-05-08T10:00:01Z")
    assert other.attributes is not None and other.attributes.age == 31
    assert other.created_at is not None and other.created_at.second == 1
    assert character(1).attributes == aa.CharacterAttributes(gender="female", age=1)
    with pytest.raises(aa.MalformedResponseError, match="age"):
        character(True)  # equal to 1 as a dict key, but not an age
    for age in range(3 * _convert._SHARED_MAX):
        got = character(age, f"2026-05-08T10:{age // 60 % 60:02d}:{age % 60:02d}Z")
        assert got.attributes is not None and got.attributes.age == age
    assert len(_convert._shared_attributes) <= _convert._SHARED_MAX
    assert len(_convert._shared_times) <= _convert._SHARED_MAX


def test_repeated_refs_are_made_once_and_never_mixed_up() -> None:
    """A character's refs repeat from poll to poll: each is made once and shared; a URL
    that comes with another pose is made anew, and the table stays small."""
    from aurous_async import _convert

    def refs(*pairs: tuple[str, str]) -> tuple[aa.Ref, ...]:
        data = {"id": "c", "status": "ready",
                "refs": [{"pose": pose, "url": url} for pose, url in pairs]}
        return ApiResponse(status=200, data=data, headers={}, request_id=None).into(
            aa.Character).refs

    url = "https://cdn.example/c/front?token=abc"
    first, again = refs(("front", url)), refs(("front", url))
    assert first == again and first[0] is again[0]
    assert refs(("side", url))[0].pose is aa.Pose.SIDE
    unknown = refs(("mystery", url))[0]
    assert unknown.pose == "mystery" and not unknown.pose.is_known
    assert refs(("front", url))[0].pose is aa.Pose.FRONT
    for n in range(3 * _convert._SHARED_MAX):
        got = refs(("front", f"{url}{n}"), ("back", url))
        assert [(ref.pose, ref.url) for ref in got] == [("front", f"{url}{n}"), ("back", url)]
    assert len(_convert._shared_refs) <= _convert._SHARED_MAX
    huge = url + "a" * _convert._SHARED_TEXT_MAX  # a hostile server's: read, not kept
    assert refs(("front", huge))[0].url == huge and huge not in _convert._shared_refs


def test_huge_attribute_texts_are_read_but_not_kept() -> None:
    """A hostile server's megabyte texts would stay pinned in the shared tables (256
    entries each): they are decoded as always, and kept by nobody but the caller."""
    from aurous_async import _convert

    text = "x" * (_convert._SHARED_TEXT_MAX + 1)
    data = {"id": "c", "status": "ready", "attributes": {"additional_details": text}}
    got = ApiResponse(status=200, data=data, headers={}, request_id=None).into(aa.Character)
    assert got.attributes is not None and got.attributes.additional_details == text
    assert all(text not in values for values in _convert._shared_attributes)


async def test_without_orjson_an_answer_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without orjson the transport's reading is json.loads' already: nothing is kept to
    scan later, so an answer with a long digit run is not decoded a second time."""
    from aurous_async.testing import FakeAurousServer

    monkeypatch.setattr(_json, "_fast", None)
    monkeypatch.setattr(_json, "UNSCANNED_MAY_DIFFER", False)
    decoded: list[bytes] = []
    real_loads = json.loads

    def counting_loads(raw: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(raw)
        return real_loads(raw, *args, **kwargs)

    monkeypatch.setattr(_json.json, "loads", counting_loads)
    async with FakeAurousServer() as fake:
        fake.add_character(name="1234567890123456789012")  # a long digit run in the body
        async with fake.session(rate_limits=None) as s:
            listed = [c async for c in s.characters.list()]
    assert [c.name for c in listed] == ["1234567890123456789012"]
    assert len([raw for raw in decoded if b"1234567890123456789012" in raw]) == 1
