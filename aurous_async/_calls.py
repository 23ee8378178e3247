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

__all__ = ["ApiCall", "ApiResponse", "Unscanned"]

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


#: ``(value, body)`` as an answer's ``data``: ``value`` is
#: :func:`~aurous_async._json.loads_unscanned`'s reading of ``body``, not yet checked for
#: integers beyond 64 bits. A plain tuple (cheap to make; JSON never decodes to one), it
#: travels with the body it came from, so a copy made by ``attrs.evolve`` reads exactly.
Unscanned = tuple[Any, bytes]


def _data_repr(data: Any) -> str:
    if type(data) is tuple:
        return f"<JSON of {len(data[1])} bytes, not yet scanned>"  # never the body itself
    return repr(data)


@attrs.define(kw_only=True)
class ApiResponse:
    """A successful answer, JSON-decoded (``data``: exactly as :func:`json.loads` decodes
    the body; the transport passes it :data:`Unscanned`, read lazily)."""

    status: int
    _data: Any = attrs.field(alias="data", repr=_data_repr)
    headers: Mapping[str, str]
    request_id: str | None

    @property
    def data(self) -> Any:
        """The body as :func:`json.loads` decodes it."""
        data = self._data
        if type(data) is tuple:  # Unscanned
            data, raw = data
            if may_hold_a_long_integer(raw):
                # json.loads accepted this body's kind before orjson did (see _json.py);
                # should it ever refuse one orjson took, orjson's reading stands.
                with contextlib.suppress(ValueError, RecursionError):
                    data = json.loads(raw)
            self._data = data
        return data

    def into(self, cls: type[T]) -> T:
        """The body as ``cls`` (with ``request_id`` filled in where the class has it)."""
        if cls is Character and type(self._data) is tuple:  # Unscanned
            # Every value a Character is made of is checked for its exact type, so one
            # made from the unscanned body is the one json.loads' would give; only if
            # that fails may an integer orjson made a float be why.
            try:
                return decode(self._data[0], cls, request_id=self.request_id)
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

