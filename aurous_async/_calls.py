"""What a resource asks of the transport (:class:`ApiCall`), and what it gets back
(:class:`ApiResponse`).

Both are made once per request, so they are plain (not frozen) attrs classes: a frozen
one sets each field through ``object.__setattr__``, which made these two cost about
2 µs per request. Treat them as values all the same: change one with
``attrs.evolve``, never in place.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs

from ._convert import DecodeError, decode
from ._errors import MalformedResponseError
from ._json import may_hold_a_long_integer
from ._models import Character

__all__ = ["ApiCall", "ApiResponse"]

T = TypeVar("T")


@attrs.define(kw_only=True)
class ApiCall:
    """What a resource method asks of the transport."""

    method: str
    path: str
    bucket: str
    params: Mapping[str, str] | None = None
    json: Any = None
    idempotency_key: str | None = None
    #: Extra request headers for this call (checked by :func:`check_headers`).
    headers: Mapping[str, str] | None = None
    #: For a paid POST: a free read that returns the answer the POST would have given
    #: once its effect is visible (``None`` while it cannot tell). Used when a retry finds
    #: the first attempt still running, so waiting for it costs no paid tokens.
    confirm: Callable[[], Awaitable[ApiResponse | None]] | None = attrs.field(
        default=None, eq=False, repr=False)
    #: Awaited once the first attempt has its rate-limit token, just before it is sent
    #: (a journal records the key here); if it raises, nothing is sent.
    before_send: Callable[[], Awaitable[None]] | None = attrs.field(
        default=None, eq=False, repr=False)
    #: The key may already be in flight from an earlier life of this process (a resumed
    #: batch): a 409 for it on the first attempt means that original still runs.
    resumed: bool = False


@attrs.define(kw_only=True)
class ApiResponse:
    """A successful answer, JSON-decoded (``data``: exactly as :func:`json.loads` decodes
    the body)."""

    status: int
    _data: Any = attrs.field(alias="data")
    headers: Mapping[str, str]
    request_id: str | None
    #: The body, while ``_data`` is its :func:`~aurous_async._json.loads_unscanned`
    #: decoding, not yet checked for integers beyond 64 bits. Not copied by ``evolve``.
    unscanned: bytes | None = attrs.field(init=False, default=None, eq=False, repr=False)

    @property
    def data(self) -> Any:
        """The body as :func:`json.loads` decodes it."""
        raw = self.unscanned
        if raw is not None:
            self.unscanned = None
            if may_hold_a_long_integer(raw):
                # json.loads accepted this body's kind before orjson did (see _json.py);
                # should it ever refuse one orjson took, orjson's reading stands.
                with contextlib.suppress(ValueError, RecursionError):
                    self._data = json.loads(raw)
        return self._data

    def into(self, cls: type[T]) -> T:
        """The body as ``cls`` (with ``request_id`` filled in where the class has it)."""
        if cls is Character and self.unscanned is not None:
            # Every value a Character is made of is checked for its exact type, so one
            # made from the unscanned body is the one json.loads' would give; only if
            # that fails may an integer orjson made a float be why.
            try:
                return decode(self._data, cls, request_id=self.request_id)
            except DecodeError:
                pass
        try:
            return decode(self.data, cls, request_id=self.request_id)
        except DecodeError as exc:
            message = str(exc)
        raise MalformedResponseError(
            message, status=self.status, request_id=self.request_id, headers=self.headers,
            body=None,
        )

