"""``.with_raw_response``: the same endpoint methods, answering with the HTTP response's
status and headers beside the parsed model."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from .._context import capture_responses

__all__ = ["RawResponse", "WithRawResponse"]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class RawResponse(Generic[T]):
    """An endpoint's answer as it came: ``status``, ``headers`` (``X-RateLimit-*``,
    ``Aurous-Idempotent-Replayed``, …), ``request_id``, and :meth:`parse` for the model.

    ::

        raw = await s.characters.with_raw_response.get(character_id)
        print(raw.status, raw.headers.get("X-RateLimit-Remaining"), raw.request_id)
        character = raw.parse()
    """

    status: int
    headers: Mapping[str, str] = attrs.field(repr=False)
    request_id: str | None
    parsed: T = attrs.field(repr=False)

    def parse(self) -> T:
        """The model the endpoint method returns."""
        return self.parsed


class WithRawResponse:
    """The endpoint methods of ``target`` (named in ``methods``), each returning a
    :class:`RawResponse` of its (last) HTTP answer."""

    def __init__(self, target: object, methods: frozenset[str]) -> None:
        self._target = target
        self._methods = methods

    def __getattr__(self, name: str) -> Callable[..., Awaitable[RawResponse[Any]]]:
        if name not in self._methods:
            raise AttributeError(
                f"{name!r} has no raw response (endpoint methods: "
                f"{', '.join(sorted(self._methods))})")
        method = getattr(self._target, name)

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> RawResponse[Any]:
            with capture_responses() as answers:
                parsed = await method(*args, **kwargs)
            answer = answers[-1]
            return RawResponse(status=answer.status, headers=answer.headers,
                               request_id=answer.request_id, parsed=parsed)

        return call

    def __dir__(self) -> list[str]:
        return sorted(self._methods)
