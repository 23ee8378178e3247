"""``session.characters``: every characters endpoint, plus the flows built on them."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs

from .._convert import converter, encode_attributes
from .._errors import APIConnectionError, APIStatusError, APITimeoutError, SynthesisFailedError
from .._fanout import BatchProgress, resynthesize_many
from .._models import (
    BatchResult,
    Character,
    CharacterAttributes,
    CharacterStatus,
    DeletedCharacter,
    Pose,
    StatusUpdate,
    UploadClassification,
    UploadTicket,
)
from .._polling import watch_character
from .._redact import redact_url
from .._transport import ApiCall, deadline_scope, path_id, validate_idempotency_key

if TYPE_CHECKING:
    from .._session import AurousSession

__all__ = ["Characters", "Uploads"]

_CONTENT_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}


def _attributes_json(value: CharacterAttributes | Mapping[str, Any]) -> dict[str, Any]:
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


def _name(value: object, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise TypeError(f"name must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError("name must not be empty")
    return value


def _optional_bool(value: object, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None, not {type(value).__name__}")
    return value


class Uploads:
    """``session.characters.uploads``: reference images for the upload flow.

    ::

        ticket = await s.characters.uploads.upload(png_bytes, "hero-front.png", "image/png")
        hero = await s.characters.create(name="Hero", upload_ids=[ticket.upload_id])
    """

    def __init__(self, session: AurousSession) -> None:
        self._session = session

    async def init(self, filename: str, content_type: str, *,
                   extension: str | None = None) -> UploadTicket:
        """Mint a signed upload URL for one image (``content_type`` ``image/jpeg``,
        ``image/png`` or ``image/webp``; ``extension`` is derived from it unless given)."""
        if not isinstance(filename, str) or not 1 <= len(filename) <= 120:
            raise ValueError("filename must be a str of 1-120 characters")
        if content_type not in _CONTENT_TYPES:
            raise ValueError(f"content_type must be one of {', '.join(_CONTENT_TYPES)}")
        extension = extension or _CONTENT_TYPES[content_type]
        if not isinstance(extension, str):
            raise TypeError("extension must be a str")
        response = await self._session._transport.request(ApiCall(
            method="POST", path="/v1/characters/uploads/init", bucket="characters_post",
            json={"filename": filename, "extension": extension, "content_type": content_type},
        ))
        return response.into(UploadTicket)

    async def put(self, ticket: UploadTicket, data: bytes) -> None:
        """``PUT`` the image bytes to the ticket's signed URL (no API key is sent)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        http = self._session._http_session()
        try:
            async with http.put(
                ticket.upload_url, data=bytes(data), headers=dict(ticket.upload_headers),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._session._config.timeout),
            ) as response:
                if response.status >= 300:
                    raise APIStatusError(
                        f"the upload to {redact_url(ticket.upload_url)} was refused",
                        status=response.status, code="upload_refused",
                        body=(await response.text())[:200],
                    )
        except TimeoutError:
            raise APITimeoutError("the upload timed out", method="PUT") from None
        except aiohttp.ClientError as exc:
            raise APIConnectionError(f"the upload failed: {type(exc).__name__}",
                                     method="PUT") from None

    async def upload(self, data: bytes, filename: str, content_type: str) -> UploadTicket:
        """``init`` then ``put``: one call from bytes to a usable ``upload_id``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        ticket = await self.init(filename, content_type)
        await self.put(ticket, data)
        return ticket

    async def classify(self, upload_id: str) -> UploadClassification:
        """The detected pose of an uploaded image (free, idempotent)."""
        path_id(upload_id, "upload_id")
        response = await self._session._transport.request(ApiCall(
            method="POST", path="/v1/characters/uploads/classify", bucket="characters_post",
            json={"upload_id": upload_id},
        ))
        return response.into(UploadClassification)


class Characters:
    """``session.characters``: create, read, change and resynthesize characters.

    ::

        async with aurous_async.AurousSession() as s:
            hero = await s.characters.get("char_01HX…")
            async for update in s.characters.resynthesize_and_watch(hero.id, auto_save=True):
                print(update.status)
    """

    def __init__(self, session: AurousSession) -> None:
        self._session = session
        self.uploads = Uploads(session)

    async def _call(self, call: ApiCall) -> Character:
        return (await self._session._transport.request(call)).into(Character)

    async def get(self, character_id: str) -> Character:
        """The character now. Raises :class:`NotFoundError` for unknown, deleted or other
        teams' ids."""
        return await self._call(ApiCall(
            method="GET", path=f"/v1/characters/{path_id(character_id)}",
            bucket="characters_get",
        ))

    async def list(self, *, limit: int | None = None) -> AsyncIterator[Character]:
        """Every character of the team, newest first, following ``next_cursor`` page by
        page; ``limit`` (1–100) is the page size sent to the API.

        ::

            async for character in s.characters.list(limit=100):
                print(character.id, character.status)
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if limit is not None and not 1 <= limit <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit}")
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params = {}
            if limit is not None:
                params["limit"] = str(limit)
            if cursor is not None:
                params["starting_after"] = cursor
            response = await self._session._transport.request(ApiCall(
                method="GET", path="/v1/characters", bucket="characters_get", params=params,
            ))
            page = response.data
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise APIStatusError("the list answer has no data array", status=response.status,
                                     code="invalid_list", request_id=response.request_id)
            for item in page["data"]:
                yield attrs.evolve(response, data=item).into(Character)
            next_cursor = page.get("next_cursor")
            if not page.get("has_more") or not isinstance(next_cursor, str) or not next_cursor:
                return
            if next_cursor in seen_cursors:
                # A server that hands back a cursor twice would make us loop forever.
                raise APIStatusError(f"the API repeated cursor {next_cursor}",
                                     status=response.status, code="cursor_loop",
                                     request_id=response.request_id)
            seen_cursors.add(next_cursor)
            cursor = next_cursor

    async def create(
        self,
        *,
        name: str,
        attributes: CharacterAttributes | Mapping[str, Any] | None = None,
        generate: bool = False,
        upload_ids: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Character:
        """Create a character, by synthesis (``generate=True`` with ``attributes``; paid,
        4 generations) or from uploads (``upload_ids`` of 1–6 ``upl_`` ids; ``ready`` at
        once). Exactly one of the two flows.

        ::

            hero = await s.characters.create(
                name="Aurora", generate=True,
                attributes={"gender": "female", "age": 28, "hair_color": "black"},
            )
        """
        body: dict[str, Any] = {"name": _name(name, required=True)}
        if not isinstance(generate, bool):
            raise TypeError(f"generate must be a bool, not {type(generate).__name__}")
        ids: list[str] | None = None
        if upload_ids is not None:
            if isinstance(upload_ids, str) or not isinstance(upload_ids, Sequence):
                raise TypeError("upload_ids must be a sequence of str")
            ids = list(upload_ids)
            if not all(isinstance(u, str) and u for u in ids):
                raise TypeError("upload_ids must hold non-empty strings")
            if len(ids) > 6:
                raise ValueError("at most 6 upload_ids")
        if generate == bool(ids):
            raise ValueError("give exactly one of generate=True or upload_ids (non-empty)")
        if generate:
            body["generate"] = True
        if ids:
            body["upload_ids"] = ids
        if attributes is not None:
            body["attributes"] = _attributes_json(attributes)
        return await self._call(ApiCall(
            method="POST", path="/v1/characters",
            bucket="characters_synthesize" if generate else "characters_post",
            json=body, idempotency_key=validate_idempotency_key(idempotency_key),
        ))

    async def update(
        self,
        character_id: str,
        *,
        name: str | None = None,
        attributes: CharacterAttributes | Mapping[str, Any] | None = None,
    ) -> Character:
        """Change ``name`` and/or ``attributes``; attributes are replaced whole."""
        path = f"/v1/characters/{path_id(character_id)}"
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = _name(name, required=True)
        if attributes is not None:
            body["attributes"] = _attributes_json(attributes)
        if not body:
            raise ValueError("give name and/or attributes to update")
        return await self._call(ApiCall(method="PATCH", path=path, bucket="characters_post",
                                        json=body))

    async def save(self, character_id: str) -> Character:
        """Accept a ``reviewing`` character: it becomes ``ready`` (free; a no-op when
        already ``ready``)."""
        return await self._call(ApiCall(
            method="POST", path=f"/v1/characters/{path_id(character_id)}/save",
            bucket="characters_post",
        ))

    async def delete(self, character_id: str) -> DeletedCharacter:
        """Delete a character (hard while ``reviewing``, soft otherwise); never refunds."""
        response = await self._session._transport.request(ApiCall(
            method="DELETE", path=f"/v1/characters/{path_id(character_id)}",
            bucket="characters_post",
        ))
        return response.into(DeletedCharacter)

    async def resynthesize(
        self,
        character_id: str,
        *,
        force_all: bool | None = None,
        idempotency_key: str | None = None,
    ) -> Character:
        """Re-run synthesis of every pose (paid: 4 generations). The answer is the
        character in ``synthesizing``; follow it with :meth:`watch` or use
        :meth:`resynthesize_and_watch`."""
        path = f"/v1/characters/{path_id(character_id)}/resynthesize"
        body: dict[str, Any] = {}
        if _optional_bool(force_all, "force_all") is not None:
            body["force_all"] = force_all
        return await self._call(ApiCall(
            method="POST", path=path, bucket="characters_synthesize", json=body,
            idempotency_key=validate_idempotency_key(idempotency_key),
        ))

    async def regenerate_ref(
        self,
        character_id: str,
        pose: Pose | str,
        *,
        prompt_override: str | None = None,
        idempotency_key: str | None = None,
    ) -> Character:
        """Re-run synthesis of one pose (paid: 1 generation)."""
        path = f"/v1/characters/{path_id(character_id)}/refs/regenerate"
        if not isinstance(pose, str):
            raise TypeError(f"pose must be a Pose or str, not {type(pose).__name__}")
        poses = [p.value for p in Pose]
        if pose not in poses:
            raise ValueError(f"pose must be one of {', '.join(poses)}, got {pose!r}")
        body: dict[str, Any] = {"pose": str(pose)}
        if prompt_override is not None:
            if not isinstance(prompt_override, str):
                raise TypeError("prompt_override must be a str")
            body["prompt_override"] = prompt_override
        return await self._call(ApiCall(
            method="POST", path=path, bucket="characters_synthesize", json=body,
            idempotency_key=validate_idempotency_key(idempotency_key),
        ))


    # -- flows ---------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = _check_timeout(timeout)
        return None if timeout is None else self._session.clock.monotonic() + timeout

    def watch(
        self,
        character_id: str,
        *,
        auto_save: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[StatusUpdate]:
        """Follow a character: yields its current state, then one update per status
        change, and stops after a terminal one (``ready``, ``failed``, ``deleted``, and
        ``reviewing`` — unless ``auto_save``, which saves it and yields ``ready``).

        Polls go through the session's shared scheduler (watchers of one id share one
        GET) at the session's :class:`PollPolicy`. Past ``timeout`` seconds the
        iterator raises :class:`WatchTimeoutError`.

        ::

            async for update in s.characters.watch(character_id, auto_save=True):
                print(update.previous_status, "->", update.status)
        """
        path_id(character_id)
        _check_bool(auto_save, "auto_save")
        return watch_character(
            self._session._scheduler, self.save, character_id, clock=self._session.clock,
            auto_save=auto_save, deadline=self._deadline(timeout),
        )

    async def wait(
        self,
        character_id: str,
        *,
        auto_save: bool = False,
        timeout: float | None = None,
    ) -> Character:
        """Watch a character to its end and return it; raises
        :class:`SynthesisFailedError` if it ends ``failed``.

        ::

            hero = await s.characters.wait(character_id, auto_save=True, timeout=300)
        """
        last: Character | None = None
        async for update in self.watch(character_id, auto_save=auto_save, timeout=timeout):
            last = update.character
        assert last is not None
        if last.status == CharacterStatus.FAILED:
            raise SynthesisFailedError(last)
        return last

    def resynthesize_and_watch(
        self,
        character_id: str,
        *,
        force_all: bool | None = None,
        auto_save: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncIterator[StatusUpdate]:
        """:meth:`resynthesize`, then :meth:`watch` — the first update is the
        ``synthesizing`` state the POST returned. ``timeout`` bounds both.

        ::

            async for update in s.characters.resynthesize_and_watch(cid, auto_save=True):
                print(update.status)
        """
        path_id(character_id)
        _check_bool(auto_save, "auto_save")
        _optional_bool(force_all, "force_all")
        validate_idempotency_key(idempotency_key)
        return self._resynthesize_and_watch(
            character_id, force_all, auto_save, self._deadline(timeout), idempotency_key
        )

    async def _resynthesize_and_watch(
        self,
        character_id: str,
        force_all: bool | None,
        auto_save: bool,
        deadline: float | None,
        idempotency_key: str | None,
    ) -> AsyncIterator[StatusUpdate]:
        with deadline_scope(deadline):
            character = await self.resynthesize(
                character_id, force_all=force_all, idempotency_key=idempotency_key
            )
        async for update in watch_character(
            self._session._scheduler, self.save, character_id, clock=self._session.clock,
            auto_save=auto_save, deadline=deadline, known=character,
        ):
            yield update

    def resynthesize_many(
        self,
        ids: Iterable[str],
        *,
        force_all: bool | None = None,
        auto_save: bool = False,
        timeout: float | None = None,
        concurrency: int | None = None,
        progress: Callable[[BatchProgress], None] | None = None,
    ) -> AsyncIterator[BatchResult]:
        """Resynthesize many characters and yield a :class:`BatchResult` for each as it
        completes.

        Calls go out in the order given, paced by the ``characters_synthesize`` bucket;
        ``concurrency`` caps POSTs in flight (default: the connection pool). The first
        402 stops dispatching: every id not yet sent comes back with that
        :class:`InsufficientCreditsError`. One character's failure never stops the
        others. ``timeout`` bounds the whole batch. Leaving the loop early, or
        cancelling it, cancels every pending call and poll. ``progress`` is called with
        a :class:`BatchProgress` on every change.

        ::

            async for result in s.characters.resynthesize_many(ids, auto_save=True):
                print(result.character_id, "ok" if result.ok else result.error)
        """
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise TypeError("ids must be an iterable of character ids")
        id_list = list(ids)
        for character_id in id_list:
            path_id(character_id)
        if len(set(id_list)) != len(id_list):
            raise ValueError("ids must not repeat (each would be charged twice)")
        _check_bool(auto_save, "auto_save")
        _optional_bool(force_all, "force_all")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError("concurrency must be an int >= 1 or None")
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        _check_timeout(timeout)  # the batch starts its own clock when iterated
        return resynthesize_many(
            self, id_list, force_all=force_all, auto_save=auto_save, timeout=timeout,
            concurrency=concurrency, progress=progress,
        )


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
