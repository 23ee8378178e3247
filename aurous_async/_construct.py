"""Instances of frozen, slotted attrs classes made without calling their ``__init__``,
for the decoders on the hot path.

A frozen attrs class refuses ``setattr``, so its ``__init__`` sets every field through
``object.__setattr__``, and a call by keyword adds its own cost: decoding one
``Character`` (four refs, its attributes) spent more on making objects than on anything
else. For a class whose ``__init__`` only stores its arguments (no validators, no
converters, no ``__attrs_post_init__``: checked here, once) writing the slots directly
makes the very same object, equal, hashable and frozen as ever.

The function is generated, as attrs generates ``__init__``: one straight line per field.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs

__all__ = ["constructor"]

T = TypeVar("T")


def constructor(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of ``cls`` positionally, in declaration order,
    that returns what ``cls(**fields)`` would."""
    fields = attrs.fields(cast("type[attrs.AttrsInstance]", cls))
    names = [field.name for field in fields]
    _check(cls, fields)
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    self = _new(_cls)"]
    for name in names:
        # The slot's own descriptor writes past the class's frozen __setattr__.
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        lines.append(f"    _set_{name}(self, {name})")
    lines.append("    return self")
    exec("\n".join(lines), namespace)  # our own field names only
    make: Callable[..., T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make


def _check(cls: type[Any], fields: tuple[attrs.Attribute[Any], ...]) -> None:
    """Refuse a class whose ``__init__`` does more than store its arguments."""
    names = [field.name for field in fields]
    problems = [
        f"{field.name} has a validator or converter, or is not in __init__"
        for field in fields
        if field.validator is not None or field.converter is not None or not field.init
    ]
    if hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__"):
        problems.append("it has __attrs_pre_init__ or __attrs_post_init__")
    own_slots = [name for name in cls.__dict__.get("__slots__", ()) if name != "__weakref__"]
    if sorted(own_slots) != sorted(names) or not all(
        isinstance(cls.__dict__.get(name), types.MemberDescriptorType) for name in names
    ):
        problems.append("its fields are not exactly its own slots")
    if problems:
        raise TypeError(f"cannot make {cls.__name__} without __init__: {'; '.join(problems)}")
