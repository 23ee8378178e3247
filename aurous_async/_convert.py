"""The one cattrs converter: JSON from the API into the value classes, and back.

Strict about types (a number where a string belongs is a malformed answer, not a
silently stringified one), lenient about extra fields (ignored) and enum values (kept).
Back to JSON (``to_dict()``): enums as their strings, times as ISO 8601 in UTC with ``Z``,
tuples as lists, errors as a small dict; ``request_id`` (response metadata, not part of
a value) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._construct import constructor
from ._errors import AurousError
from ._models import (
    BatchResult,
    Character,
    CharacterAttributes,
    CharacterStatus,
    Pose,
    Ref,
    _OpenStrEnum,
)
from ._redact import redact

__all__ = ["DecodeError", "converter", "decode", "encode_attributes"]

T = TypeVar("T")


class DecodeError(ValueError):
    """The JSON does not have the documented shape."""


# detailed_validation=False: it halves the cost of decoding a Character (measured 35 ->
# 18 µs), which every call and poll pays; a failure is worded by a copy that keeps the
# field paths (see _where).
converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    try:
        result = float(value)  # an int of 400 digits does not fit
    except OverflowError:
        raise ValueError("the number is too large") from None
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _datetime(value: Any, _: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("expected an ISO-8601 string")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


converter.register_structure_hook(str, _strict_str)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(bool, _strict_bool)
converter.register_structure_hook(datetime, _datetime)
converter.register_structure_hook(CharacterStatus, lambda v, _: CharacterStatus(_strict_str(v, _)))
converter.register_structure_hook(Pose, lambda v, _: Pose(_strict_str(v, _)))


def _optional(hook: Callable[[Any, Any], T]) -> Callable[[Any, Any], T | None]:
    # Direct hooks for the optional fields skip cattrs' generic union dispatch.
    def structure(value: Any, cls: Any) -> T | None:
        return None if value is None else hook(value, cls)

    return structure


converter.register_structure_hook(str | None, _optional(_strict_str))
converter.register_structure_hook(int | None, _optional(_strict_int))
converter.register_structure_hook(datetime | None, _optional(_datetime))


_STRUCTURE_ERRORS = (cattrs.BaseValidationError, TypeError, ValueError, KeyError,
                     AttributeError, RecursionError, OverflowError)


def decode(data: Any, cls: type[T], *, source: str = "response",
           request_id: str | None = None) -> T:
    """Structure ``data`` as ``cls``; any mismatch is a :class:`DecodeError` whose message
    calls the input ``source`` and says where it goes wrong ("the response is not a valid
    Character: expected a string, got int @ Character.id"). A ``request_id`` (the
    answer's header; not empty) fills the field of that name where ``cls`` has one,
    whatever ``data`` says."""
    if not isinstance(data, dict):
        raise DecodeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    try:
        if cls is Character:  # the hot path, which takes the id without a copy of data
            return cast(T, _structure_character(data, cls, request_id or None))
        return converter.structure(_with_request_id(data, cls, request_id), cls)
    except _STRUCTURE_ERRORS as exc:
        summary = f"{type(exc).__name__}: {exc}"
    # Raised outside the except block, so the original (unredacted) error is not kept.
    # The message may quote a value (a signed URL where a date belongs): redacted.
    summary = redact(_where(_with_request_id(data, cls, request_id), cls) or summary)[:300]
    raise DecodeError(f"the {source} is not a valid {cls.__name__}: {summary}")


def _with_request_id(data: dict[str, Any], cls: type[Any],
                     request_id: str | None) -> dict[str, Any]:
    if request_id and _carries_request_id(cls):
        return {**data, "request_id": request_id}
    return data


def _where(data: dict[str, Any], cls: type[Any]) -> str | None:
    """What is wrong with ``data`` and at which field, found by structuring it again with
    field paths kept: only once it failed, as keeping them doubles the cost of every
    decode."""
    try:
        _explainer.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        return "; ".join(cattrs.transform_error(exc, path=cls.__name__,
                                                format_exception=_problem))
    except _STRUCTURE_ERRORS:
        pass  # a failure without paths (too deep to recurse): the plain summary says it
    return None


def _problem(exc: BaseException, _: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc) or type(exc).__name__


def encode_attributes(attributes: CharacterAttributes) -> dict[str, Any]:
    """The JSON object for ``attributes``, leaving out fields that are ``None``."""
    raw: dict[str, Any] = converter.unstructure(attributes)
    return {key: value for key, value in raw.items() if value is not None}


# -- back to JSON ------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    # A naive time is read as UTC, as decoding reads one; the same instant in UTC keeps
    # equality, so a round trip gives back an equal value.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _error_dict(error: AurousError) -> dict[str, Any]:
    """What a JSON reader needs of an error, never the exception itself (its headers and
    body stay out). The text is redacted where the error was made; once more here, as it
    is about to leave the process."""
    message, status = getattr(error, "message", None), getattr(error, "status", None)
    code, request_id = getattr(error, "code", None), getattr(error, "request_id", None)
    # An outcome read back from a journal names the class the error had when it happened.
    recorded_class = getattr(error, "error_class", None)
    return {
        "error_class": recorded_class if isinstance(recorded_class, str) and recorded_class
        else type(error).__name__,
        "code": code if isinstance(code, str) else None,
        "message": redact(message if isinstance(message, str) else str(error)),
        "status": status if isinstance(status, int) else None,
        "request_id": request_id if isinstance(request_id, str) else None,
    }


_REQUEST_ID_FIELD: dict[Any, bool] = {}


def _carries_request_id(cls: Any) -> bool:
    known = _REQUEST_ID_FIELD.get(cls)
    if known is None:
        known = _REQUEST_ID_FIELD[cls] = (isinstance(cls, type) and attrs.has(cls)
                                          and "request_id" in attrs.fields_dict(cls))
    return known


# CharacterStatus is a str, and cattrs passes strs through as they are: only a hook on
# the enum base itself turns members (unknown ones too) into plain strings.
converter.register_unstructure_hook(_OpenStrEnum, lambda member: member._value_)
converter.register_unstructure_hook(datetime, _iso)
converter.register_unstructure_hook(AurousError, _error_dict)
converter.register_unstructure_hook_factory(
    _carries_request_id,
    lambda cls: make_dict_unstructure_fn(cls, converter, request_id=override(omit=True)),
)
# BatchResult names AurousError for type checkers only (the two modules import each other
# that way); resolved here so cattrs sees the field's real type.
attrs.resolve_types(BatchResult, localns={"AurousError": AurousError})
# The same hooks with field paths kept, used only to word a failure (see _where).
_explainer = converter.copy(detailed_validation=True)


# -- the hot path -----------------------------------------------------------------------
# Every call and every poll decodes a Character. cattrs' generated function calls one
# hook per field; this one checks the common, well-formed shape inline and hands
# anything else to the generated function, so results (and errors) are the same —
# tests compare the two on random and hostile input. It makes its objects without
# their __init__ (see _construct.py): the same objects, at half the cost.

_character_fields = make_dict_structure_fn(Character, converter)
_new_character = constructor(Character)
_new_ref = constructor(Ref)
_new_attributes = constructor(CharacterAttributes)


_TEXT_OR_NONE = (str, type(None))


_ATTRIBUTE_NAMES = tuple(field.name for field in attrs.fields(CharacterAttributes))
_ATTRIBUTE_TYPES = {name: int if name == "age" else str for name in _ATTRIBUTE_NAMES}
# The enums' own value tables: a dict lookup instead of a call of the enum class.
_POSES: dict[Any, Pose] = Pose._value2member_map_  # type: ignore[assignment]
_STATUSES: dict[Any, CharacterStatus] = CharacterStatus._value2member_map_  # type: ignore[assignment]


# Values that repeat from answer to answer (a character's attributes on every poll, its
# created_at always, its updated_at until its status changes, its refs while a
# resynthesis runs and once it is done) are made once and then shared: they are
# immutable, so a shared one differs from a fresh one only by `is`. Making a
# CharacterAttributes costs more than the rest of a Character's fields together, and
# the refs most of the rest. A few hundred of each at most: when full, the table starts
# over. Texts longer than a few KiB (only a hostile server sends those) are not kept,
# so the tables cannot pin much memory whatever the answers hold.
_SHARED_MAX = 256
_SHARED_TEXT_MAX = 4096
_shared_attributes: dict[tuple[str | int | None, ...], CharacterAttributes] = {}
_shared_times: dict[str, datetime] = {}
_shared_refs: dict[str, Ref] = {}  # by URL (a signed one names its image and pose)


def _attributes(data: dict[str, Any]) -> CharacterAttributes:
    for key, value in data.items():
        wanted = _ATTRIBUTE_TYPES.get(key)
        if wanted is not None and value is not None and type(value) is not wanted:
            return converter.structure(data, CharacterAttributes)  # let it explain
    # Unknown attributes are ignored, as everywhere; missing ones are None. (Only exact
    # str, int and None get here, so no True stands for a cached 1.)
    values = tuple(map(data.get, _ATTRIBUTE_NAMES))
    made = _shared_attributes.get(values)
    if made is None:
        made = _new_attributes(*values)
        if sum(len(value) for value in values if type(value) is str) <= _SHARED_TEXT_MAX:
            _keep(_shared_attributes, values, made)
    return made


def _time(text: str) -> datetime:
    made = _shared_times.get(text)
    if made is None:
        made = _keep(_shared_times, text, _datetime(text, None))
    return made


K = TypeVar("K")
V = TypeVar("V")


def _keep(table: dict[K, V], key: K, made: V) -> V:
    """``made``, kept in ``table`` under ``key`` (a full table starts over)."""
    if len(table) >= _SHARED_MAX:
        table.clear()
    table[key] = made
    return made


def _structure_character(data: Any, cls: Any, request_id: str | None = None) -> Character:
    """The converter's hook for Character; ``request_id``, when given, stands for the
    field of that name (see :func:`decode`)."""
    get = data.get
    character_id, status, name = get("id"), get("status"), get("name", "")
    refs, attributes = get("refs", ()), get("attributes")
    created_at, updated_at = get("created_at"), get("updated_at")
    error_message, version = get("error_message"), get("aurous_version")
    answer_id = get("request_id") if request_id is None else request_id
    if (type(character_id) is not str or type(status) is not str or type(name) is not str
            or type(refs) not in (list, tuple) or type(created_at) not in _TEXT_OR_NONE
            or type(updated_at) not in _TEXT_OR_NONE
            or type(error_message) not in _TEXT_OR_NONE
            or type(version) not in _TEXT_OR_NONE or type(answer_id) not in _TEXT_OR_NONE
            or not (attributes is None or type(attributes) is dict)):
        return _character_fields(_with_request_id(data, cls, request_id), cls)
    parsed_refs = []
    for ref in refs:
        if type(ref) is not dict:
            return _character_fields(_with_request_id(data, cls, request_id), cls)
        pose, url = ref.get("pose"), ref.get("url")
        if type(pose) is not str or type(url) is not str:
            return _character_fields(_with_request_id(data, cls, request_id), cls)
        member = _POSES.get(pose) or Pose(pose)
        made = _shared_refs.get(url)
        if made is None or made.pose is not member:
            made = _new_ref(member, url)
            if len(url) <= _SHARED_TEXT_MAX:
                _keep(_shared_refs, url, made)
        parsed_refs.append(made)
    return _new_character(
        character_id, _STATUSES.get(status) or CharacterStatus(status), name,
        tuple(parsed_refs),
        None if created_at is None else _time(created_at),
        None if updated_at is None else _time(updated_at),
        None if attributes is None else _attributes(attributes),
        error_message, version, answer_id,
    )


converter.register_structure_hook(Character, _structure_character)
