"""The one seam between the SDK and aiohttp: the client session, one attempt of one
request, and the mapping of aiohttp's errors to ours.

Everything that goes over the network (the JSON API and the signed upload ``PUT``) is
sent by :meth:`HttpClient.send`, so timeouts, connection errors, closed sessions and
oversized bodies are mapped the same way everywhere, on every supported Python.

Sessions we create and sessions a caller brings differ in three ways, on purpose:

* ours mark when aiohttp starts writing a request (a request class of ours, see
  :class:`_MarkingRequest`), so a token taken for a request that never left is given
  back; a caller's session has no such mark and every attempt counts as sent;
* ours have aiohttp's silent single resend of GET/DELETE on a dropped kept-alive
  connection switched off (the transport retries on its own terms: a token per attempt,
  no blind DELETE resend); a caller's session keeps its own setting;
* ours honour ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, read once when the session
  is made (aiohttp's ``trust_env`` would read them, and ``.netrc``, in a worker thread on
  every request: a fourfold cost per call); a caller's session keeps its own.

Whatever a caller's session defaults to, each request passes ``raise_for_status=False``
and ``allow_redirects=False``, so error statuses reach our mapping and the API key never
follows a redirect.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import urllib.request
from collections.abc import Coroutine, Mapping
from typing import Any, NoReturn

import aiohttp
from aiohttp.connector import Connection
from multidict import CIMultiDictProxy
from yarl import URL

from ._errors import (
    APIConnectionError,
    APITimeoutError,
    AurousError,
    MalformedResponseError,
    SessionClosedError,
)
from ._redact import redact, redact_headers

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "HttpClient", "HttpResponse", "SendMarker"]

#: Bodies larger than this (after decompression) are refused: a hostile or broken server
#: must not be able to fill the client's memory.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_CHUNK = 256 * 1024


class SendMarker:
    """Per attempt: set once aiohttp has written the request's headers."""

    __slots__ = ("sent",)

    def __init__(self, sent: bool) -> None:  # (positional: one is made per attempt)
        self.sent = sent


class HttpResponse:
    """One answer: status, headers and the whole (capped) body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: CIMultiDictProxy[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


# The marker of the attempt the current task is sending (set only in traced sessions).
_MARKER: contextvars.ContextVar[SendMarker | None] = contextvars.ContextVar(
    "aurous_send_marker", default=None)


_send = aiohttp.ClientRequest.send


class _MarkingRequest(aiohttp.ClientRequest):
    """Marks the current attempt sent when aiohttp begins writing it: a connection is
    ours by then, and nothing suspends before its headers are written. aiohttp runs this
    in the caller's task, so the marker travels in a context variable.

    It replaces a trace hook on ``on_request_headers_sent`` that marked the same moment:
    with any trace config, aiohttp builds trace objects and sends three signals per
    request (about 9 µs), where this costs one context-variable read."""

    def send(self, conn: Connection) -> Coroutine[Any, Any, aiohttp.ClientResponse]:
        # A plain function returning aiohttp's coroutine (no frame of our own in between):
        # it runs exactly where ``await req.send(conn)`` starts that coroutine.
        marker = _MARKER.get()
        if marker is not None:
            marker.sent = True
        return _send(self, conn)  # as super(), without making one


class HttpClient:
    """Owns (or borrows) the :class:`aiohttp.ClientSession` and sends single attempts.

    ``traced`` asks for the request class that tells whether a request went out (only
    the rate limiter needs it).
    """

    def __init__(
        self,
        *,
        connection_limit: int,
        traced: bool,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self.owns_session = session is None
        self.connection_limit = connection_limit
        self.traced = traced and self.owns_session
        self.max_response_bytes = max_response_bytes
        self.closed = False
        self._proxies: dict[str, str] = {}
        self._proxy_for: dict[tuple[str, str], str | None] = {}
        # The last timeout asked for, and aiohttp's object for it: nearly every attempt
        # asks for the session's timeout, and making one costs about 1 µs.
        self._timeout = aiohttp.ClientTimeout()

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session, created on first use (it must be made inside a loop)."""
        if self.closed:
            raise SessionClosedError("this AurousSession is closed")
        if self._session is None:
            # No per-host limit: the total one already bounds every host, and aiohttp's
            # per-host count costs a dictionary update per request.
            connector = aiohttp.TCPConnector(limit=self.connection_limit)
            self._proxies = urllib.request.getproxies_environment()
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                request_class=_MarkingRequest if self.traced else aiohttp.ClientRequest,
            )
            if hasattr(self._session, "_retry_connection"):
                # See the module docstring: no silent resend in sessions we own.
                self._session._retry_connection = False
        return self._session

    async def send(
        self,
        method: str,
        url: URL | str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        marker: SendMarker,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        secrets: tuple[str | None, ...] = (),
    ) -> HttpResponse:
        """One attempt: the answer, or an :class:`AurousError` (never an aiohttp or OS
        exception, and never one that references the request, which holds the key)."""
        http = self._session
        if http is None or self.closed:
            http = self.session()
        client_timeout = self._timeout
        if client_timeout.total != timeout:
            client_timeout = self._timeout = aiohttp.ClientTimeout(total=timeout)
        error: AurousError
        if self.traced:
            # Not reset afterwards: only our request class reads it, and every traced
            # send sets its own first (a reset would double the cost).
            _MARKER.set(marker)
        try:
            async with http.request(
                method, url, params=params, data=data, headers=headers,
                proxy=self._proxy(url) if self._proxies else None,
                allow_redirects=False, raise_for_status=False, timeout=client_timeout,
            ) as response:
                # The body, decompressed, refusing more than max_response_bytes: its
                # first read is here (mostly the whole body), the rest in _read_rest.
                cap = self.max_response_bytes
                length = response.content_length
                if length is not None and length > cap and not response.headers.get(
                    "Content-Encoding"
                ):
                    raise _too_large(response, cap, secrets)
                content = response.content
                body = await content.read(_CHUNK)
                if len(body) > cap:
                    raise _too_large(response, cap, secrets)
                if body and not content.at_eof():
                    body = await self._read_rest(response, body, secrets)
                return HttpResponse(response.status, response.headers, body)
        except (asyncio.TimeoutError, TimeoutError):
            # Two classes on Python 3.10, one from 3.11: catch both.
            error = APITimeoutError(f"no answer within {timeout:.1f}s", method=method,
                                    path=_path(url))
        except aiohttp.ClientConnectorCertificateError as exc:
            error = APIConnectionError(
                f"TLS certificate check failed for {exc.host}: "
                f"{redact(str(exc.certificate_error), *secrets)}",
                method=method, path=_path(url), transient=False)
        except aiohttp.ClientSSLError as exc:
            error = APIConnectionError(
                f"TLS failed: {redact(str(exc), *secrets)}", method=method, path=_path(url),
                transient=False)
        except aiohttp.ClientConnectorError as exc:
            marker.sent = False  # no connection, so certainly not sent (even untraced)
            error = APIConnectionError(f"cannot connect: {redact(str(exc), *secrets)}",
                                       method=method, path=_path(url))
        except RuntimeError:
            if not http.closed:
                raise
            # aiohttp's answer to a request on a session closed meanwhile.
            error = SessionClosedError(f"{method} {_path(url)}: the session was closed")
        except (aiohttp.ClientError, OSError, ValueError, ssl.SSLError) as exc:
            # ValueError: aiohttp refusing something it was handed (a header with CR/LF).
            error = APIConnectionError(
                f"connection failed: {type(exc).__name__}: {redact(str(exc), *secrets)}",
                method=method, path=_path(url))
        # The aiohttp exception (whose request_info holds our headers, the API key among
        # them) must not ride along as __context__: raised outside the except blocks,
        # and cleared, since on Python 3.10 a task resumed by an exception keeps that
        # exception "being handled" until it next suspends.
        _raise_without_context(error)

    def _proxy(self, url: URL | str) -> str | None:
        """The proxy for ``url`` from the environment read at start (``NO_PROXY`` kept)."""
        target = URL(url)
        key = (target.scheme, target.host or "")
        if key not in self._proxy_for:
            # Not in typeshed, but documented and in every supported Python.
            bypass = urllib.request.proxy_bypass_environment(  # type: ignore[attr-defined]
                key[1], self._proxies)
            self._proxy_for[key] = None if bypass else self._proxies.get(key[0])
        return self._proxy_for[key]

    async def _read_rest(self, response: aiohttp.ClientResponse, first: bytes,
                         secrets: tuple[str | None, ...]) -> bytes:
        """The body after its ``first`` read, refusing more than ``max_response_bytes``
        in all."""
        cap, content = self.max_response_bytes, response.content
        chunks, size = [first], len(first)
        while chunk := await content.read(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise _too_large(response, cap, secrets)
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the session if it is ours (a caller's session stays open)."""
        if self.closed:
            return
        self.closed = True
        if self._session is not None and self.owns_session:
            await self._session.close()
            # Let aiohttp finish closing transports so no "unclosed" warning follows.
            await asyncio.sleep(0)


def _raise_without_context(error: AurousError) -> NoReturn:
    try:
        raise error
    except AurousError:
        error.__context__ = None
        raise


def _too_large(response: aiohttp.ClientResponse, cap: int,
               secrets: tuple[str | None, ...]) -> MalformedResponseError:
    request_id = response.headers.get("Aurous-Request-Id")
    return MalformedResponseError(
        f"the response body is larger than {cap} bytes (max_response_bytes)",
        status=response.status, code="response_too_large",
        request_id=None if request_id is None else redact(request_id, *secrets),
        headers=redact_headers(response.headers, *secrets),
    )


def _path(url: URL | str) -> str:
    # Only the path: query strings may carry signed-URL tokens.
    return URL(url).path if isinstance(url, str) else url.path
