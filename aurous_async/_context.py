"""What a flow hands down to every call it makes, without changing their signatures.

Flows (watch, wait, the fan-out) bound everything they call by one deadline, and the
fan-out wants to hear when a call has its rate-limit token (only then is it really on its
way). Both travel as context variables, so resource methods keep their public signatures
and neither the transport nor the limiter knows about flows. Below the flows a passed
deadline raises :class:`~aurous_async._errors.DeadlineExceededError`; the flows turn it
into :class:`~aurous_async.WatchTimeoutError`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "capture_responses",
    "captured",
    "current_deadline",
    "deadline_scope",
    "fire_token_callback",
    "notify_on_token",
    "pending_token_callback",
]

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "aurous_deadline", default=None
)
_ON_TOKEN: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "aurous_on_token", default=None
)
# ``with_raw_response`` collects the answers of the calls it wraps here.
_CAPTURE: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "aurous_capture", default=None
)


#: The innermost deadline in force (a ``clock.monotonic()`` time), if any. (The
#: variable's own ``get``: every request asks, and a function around it costs a call.)
current_deadline: Callable[[], float | None] = _DEADLINE.get


@contextlib.contextmanager
def deadline_scope(deadline: float | None) -> Iterator[None]:
    """Bound every call made inside by ``deadline`` (an outer, earlier one still holds)."""
    outer = _DEADLINE.get()
    if outer is not None and (deadline is None or outer < deadline):
        deadline = outer
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def notify_on_token(callback: Callable[[], None] | None) -> None:
    """Call ``callback`` (once) when the current task's next call has its token."""
    _ON_TOKEN.set(callback)


#: The pending token callback of this task, left in place (a cheap look, for the common
#: case of none: then :func:`fire_token_callback` need not be called).
pending_token_callback: Callable[[], Callable[[], None] | None] = _ON_TOKEN.get


def fire_token_callback() -> None:
    """Call the pending token callback of this task, if any, clearing it first so it
    fires only once."""
    callback = _ON_TOKEN.get()
    if callback is not None:
        _ON_TOKEN.set(None)
        callback()


@contextlib.contextmanager
def capture_responses() -> Iterator[list[Any]]:
    """Collect every successful answer of the calls made inside (in order)."""
    sink: list[Any] = []
    token = _CAPTURE.set(sink)
    try:
        yield sink
    finally:
        _CAPTURE.reset(token)


#: Where the transport should record answers now (``None``: nowhere).
captured: Callable[[], list[Any] | None] = _CAPTURE.get
