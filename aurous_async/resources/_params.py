"""Checks and encodings of character parameters, shared by the characters resource."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._convert import converter, encode_attributes
from .._models import CharacterAttributes

__all__ = ["attributes_json", "character_name"]


def attributes_json(value: CharacterAttributes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, CharacterAttributes):
        return encode_attributes(value)
    if not isinstance(value, Mapping):
        raise TypeError("attributes must be a CharacterAttributes or a mapping, "
                        f"not {type(value).__name__}")
    known = attrs.fields_dict(CharacterAttributes)
    unknown = [key for key in value if key not in known]
    if unknown:
        raise ValueError(f"unknown attributes: {', '.join(map(str, unknown))} "
                         f"(known: {', '.join(known)})")
    try:
        checked = converter.structure(dict(value), CharacterAttributes)
    except Exception as exc:  # cattrs raises a group; the message is what matters
        raise TypeError(f"attributes have a wrong type: {exc}") from None
    return encode_attributes(checked)


def character_name(value: object, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise TypeError(f"name must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError("name must not be empty")
    return value
