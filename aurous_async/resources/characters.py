"""``session.characters``: every characters endpoint, plus the flows built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs

from .._errors import APIStatusError
from .._models import (
    Character,
    CharacterAttributes,
    DeletedCharacter,
    Pose,
)
from .._parts import SessionParts
from .._transport import ApiCall, ApiResponse, Transport
from .._validate import (
    check_bool,
    check_headers,
    integer,
    optional_bool,
    path_id,
    validate_idempotency_key,
)
from ._flows import CharacterFlows
from ._params import attributes_json, character_name
from ._raw import WithRawResponse
from .uploads import Uploads

__all__ = ["Characters", "get_character", "save_character"]

_ENDPOINTS = frozenset({"get", "create", "update", "save", "delete", "resynthesize",
                        "regenerate_ref"})

#: How far the server's clock may be behind ours when we read ``updated_at`` (seconds).
_CLOCK_SKEW = 5.0


def _get_call(character_id: str, headers: Mapping[str, str] | None = None) -> ApiCall:
    """``GET /v1/characters/{id}``: what ``characters.get``, the poll scheduler and the
    check of a paid call still in flight send."""
    return ApiCall(method="GET", path=f"/v1/characters/{path_id(character_id)}",
                   bucket="characters_get", headers=headers)


async def get_character(transport: Transport, character_id: str,
                        headers: Mapping[str, str] | None = None) -> Character:
    """The character now, as the poll scheduler reads it."""
    return (await transport.request(_get_call(character_id, headers))).into(Character)


async def save_character(transport: Transport, character_id: str,
                         headers: Mapping[str, str] | None = None) -> Character:
    """``POST /v1/characters/{id}/save`` (free): what ``characters.save`` and the session's
    background saves send."""
    response = await transport.request(ApiCall(
        method="POST", path=f"/v1/characters/{path_id(character_id)}/save",
        bucket="characters_post", headers=headers,
    ))
    return response.into(Character)


class Characters(CharacterFlows):
    """``session.characters``: create, read, change and resynthesize characters.

    Every endpoint method takes ``extra_headers=`` (added to that request; the SDK's own
    headers, the API key above all, cannot be replaced), and ``with_raw_response`` has
    each of them answer with the HTTP status and headers too.

    ::

        async with aurous_async.AurousSession() as s:
            hero = await s.characters.get("char_01HX…")
            async for update in s.characters.resynthesize_and_watch(hero.id, auto_save=True):
                print(update.status)
    """

    def __init__(self, parts: SessionParts) -> None:
        self._parts = parts
        self._transport = parts.transport
        self.uploads = Uploads(parts)
        #: The endpoint methods, answering :class:`RawResponse` (status, headers, …).
        self.with_raw_response = WithRawResponse(self, _ENDPOINTS)

    async def _call(self, call: ApiCall) -> Character:
        return (await self._transport.request(call)).into(Character)

    async def get(self, character_id: str, *,
                  extra_headers: Mapping[str, str] | None = None) -> Character:
        """The character now. Raises :class:`NotFoundError` for unknown, deleted or other
        teams' ids."""
        # (Not through get_character: a coroutine less per call.)
        call = _get_call(character_id, check_headers(extra_headers))
        return (await self._transport.request(call)).into(Character)

    async def list(self, *, limit: int | None = None,
                   extra_headers: Mapping[str, str] | None = None) -> AsyncIterator[Character]:
        """Every character of the team, newest first, following ``next_cursor`` page by
        page; ``limit`` (1–100) is the page size sent to the API.

        ::

            async for character in s.characters.list(limit=100):
                print(character.id, character.status)
        """
        if limit is not None and not 1 <= integer(limit, "limit", minimum=1) <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit}")
        headers = check_headers(extra_headers)
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params = {}
            if limit is not None:
                params["limit"] = str(limit)
            if cursor is not None:
                params["starting_after"] = cursor
            response = await self._transport.request(ApiCall(
                method="GET", path="/v1/characters", bucket="characters_get", params=params,
                headers=headers,
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
        extra_headers: Mapping[str, str] | None = None,
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
        body: dict[str, Any] = {"name": character_name(name, required=True)}
        check_bool(generate, "generate")
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
            body["attributes"] = attributes_json(attributes)
        return await self._call(ApiCall(
            method="POST", path="/v1/characters",
            bucket="characters_synthesize" if generate else "characters_post",
            json=body, idempotency_key=validate_idempotency_key(idempotency_key),
            headers=check_headers(extra_headers),
        ))

    async def update(
        self,
        character_id: str,
        *,
        name: str | None = None,
        attributes: CharacterAttributes | Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Character:
        """Change ``name`` and/or ``attributes``; attributes are replaced whole."""
        path = f"/v1/characters/{path_id(character_id)}"
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = character_name(name, required=True)
        if attributes is not None:
            body["attributes"] = attributes_json(attributes)
        if not body:
            raise ValueError("give name and/or attributes to update")
        return await self._call(ApiCall(method="PATCH", path=path, bucket="characters_post",
                                        json=body, headers=check_headers(extra_headers)))

    async def save(self, character_id: str, *,
                   extra_headers: Mapping[str, str] | None = None) -> Character:
        """Accept a ``reviewing`` character: it becomes ``ready`` (free; a no-op when
        already ``ready``)."""
        return await save_character(self._transport, character_id,
                                    check_headers(extra_headers))

    async def delete(self, character_id: str, *,
                     extra_headers: Mapping[str, str] | None = None) -> DeletedCharacter:
        """Delete a character (hard while ``reviewing``, soft otherwise); never refunds."""
        response = await self._transport.request(ApiCall(
            method="DELETE", path=f"/v1/characters/{path_id(character_id)}",
            bucket="characters_post", headers=check_headers(extra_headers),
        ))
        return response.into(DeletedCharacter)

    async def resynthesize(
        self,
        character_id: str,
        *,
        force_all: bool | None = None,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Character:
        """Re-run synthesis of every pose (paid: 4 generations). The answer is the
        character in ``synthesizing``; follow it with :meth:`watch` or use
        :meth:`resynthesize_and_watch`."""
        path_id(character_id)
        optional_bool(force_all, "force_all")
        return await self._resynthesize_call(
            character_id, force_all=force_all,
            idempotency_key=validate_idempotency_key(idempotency_key),
            headers=check_headers(extra_headers),
        )

    async def _resynthesize_call(
        self, character_id: str, *, force_all: bool | None, idempotency_key: str | None,
        before_send: Callable[[], Awaitable[None]] | None = None, resumed: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Character:
        """The resynthesize POST, with the fan-out's journal hooks (see ``ApiCall``)."""
        body: dict[str, Any] = {} if force_all is None else {"force_all": force_all}
        return await self._call(ApiCall(
            method="POST", path=f"/v1/characters/{path_id(character_id)}/resynthesize",
            bucket="characters_synthesize", json=body, idempotency_key=idempotency_key,
            confirm=self._synthesis_started(character_id), before_send=before_send,
            resumed=resumed, headers=headers,
        ))

    def _synthesis_started(self, character_id: str) -> Callable[[], Awaitable[ApiResponse | None]]:
        """A free read that shows a paid POST of ours took effect: the character is
        ``synthesizing`` and changed after the call began (with a margin for clock skew
        between us and the server)."""
        transport, since = self._transport, self._parts.clock.time() - _CLOCK_SKEW

        async def confirm() -> ApiResponse | None:
            response = await transport.request(_get_call(character_id))
            character = response.into(Character)
            changed = character.updated_at is not None and character.updated_at.timestamp() >= since
            return response if character.status == "synthesizing" and changed else None

        return confirm

    async def regenerate_ref(
        self,
        character_id: str,
        pose: Pose | str,
        *,
        prompt_override: str | None = None,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
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
            confirm=self._synthesis_started(character_id), headers=check_headers(extra_headers),
        ))
