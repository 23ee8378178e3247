"""The fake's handlers for the characters surface and the balance, one per route.

Each takes the parsed request (:class:`Ctx`) and answers ``(status, payload)`` or
raises :class:`ApiError`; they change the fake only through :class:`FakeState`.
The signed upload PUT and the ref storage GET (no API key, as signed URLs are) are
plain aiohttp handlers made by :func:`storage_routes`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from ._errors import ApiError, invalid
from ._pipeline import Ctx, Route
from ._records import ATTRIBUTE_FIELDS, POSES, SYNTH_POSES, UPLOAD_URL_TTL, CharacterRecord, iso
from ._state import REGENERATE_COST, SYNTHESIS_COST, FakeState

__all__ = ["ROUTES", "storage_routes"]

MAX_NAME_LENGTH = 120
MAX_ATTRIBUTE_LENGTH = 2000
_UPLOAD_TYPES = {
    "jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"
}


async def _get_character(ctx: Ctx) -> tuple[int, Any]:
    record = ctx.state.find_character(ctx.team, ctx.request.match_info["character_id"])
    return 200, ctx.state.render(record)


async def _list_characters(ctx: Ctx) -> tuple[int, Any]:
    query = ctx.request.query
    limit = 20
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            raise invalid("invalid_format", "limit must be an integer.", "limit") from None
        if not 1 <= limit <= 100:
            raise invalid("value_out_of_range", "limit must be between 1 and 100.", "limit")
    rows = sorted(ctx.team.characters.values(), key=lambda r: (r.created_at, r.seq), reverse=True)
    after = query.get("starting_after")
    if after is not None:
        index = next((i for i, r in enumerate(rows) if r.id == after), None)
        if index is None:
            raise invalid("invalid_format", "starting_after is not a character of this team.",
                          "starting_after")
        rows = rows[index + 1:]
    visible = [r for r in rows if r.status != "deleted"]
    page = visible[:limit]
    for record in page:
        ctx.state.settle(record)
    has_more = len(visible) > limit
    return 200, {
        "object": "list",
        "data": [ctx.state.render(r) for r in page],
        "has_more": has_more,
        "next_cursor": page[-1].id if has_more and page else None,
    }


async def _create_character(ctx: Ctx) -> tuple[int, Any]:
    state = ctx.state
    body = _require_object(ctx.body)
    _reject_unknown(body, ("name", "generate", "upload_ids", "attributes"))
    name = _validate_name(body.get("name"), required=True)
    generate = body.get("generate", False)
    if not isinstance(generate, bool):
        raise invalid("invalid_format", "generate must be a boolean.", "generate")
    upload_ids = body.get("upload_ids")
    if upload_ids is not None and (
        not isinstance(upload_ids, list) or not all(isinstance(u, str) for u in upload_ids)
    ):
        raise invalid("invalid_format", "upload_ids must be an array of strings.", "upload_ids")
    if generate == bool(upload_ids):
        raise invalid("parameter_invalid_combination",
                      "Send exactly one of upload_ids (non-empty) or generate: true.",
                      "upload_ids")
    attributes = _validate_attributes(body.get("attributes"))
    if generate:
        if not attributes:
            raise invalid("missing_field", "attributes are required with generate: true.",
                          "attributes")
        state.require_credits(ctx.team, SYNTHESIS_COST)
        record = state.new_character(ctx.team, name, attributes, ctx.version)
        state.charge(ctx.team, record.id, "synthesize", SYNTHESIS_COST, ctx.request_id)
        state.begin_synthesis(record, "reviewing", SYNTH_POSES)
        return 201, state.render(record)
    assert upload_ids is not None
    if len(upload_ids) > 6:
        raise invalid("value_out_of_range", "At most 6 upload_ids.", "upload_ids")
    uploads = []
    for upload_id in upload_ids:
        upload = state.find_upload(upload_id)
        if upload is not None and upload.team_id != ctx.team.id:
            raise ApiError(404, "not_found", "resource_not_found", "No such upload.", "upload_ids")
        if upload is None or not state.upload_usable(upload):
            raise invalid("upload_invalid", f"Upload {upload_id} is unknown, expired, "
                          "not uploaded or already used.", "upload_ids")
        uploads.append(upload)
    poses = [_classify(upload.filename)[0] for upload in uploads]
    record = state.create_from_uploads(ctx.team, name, attributes, ctx.version, uploads, poses)
    return 201, state.render(record)


async def _update_character(ctx: Ctx) -> tuple[int, Any]:
    record = ctx.state.find_character(ctx.team, ctx.request.match_info["character_id"])
    body = _require_object(ctx.body)
    _reject_unknown(body, ("name", "attributes"))
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _validate_name(body["name"], required=True)
    if "attributes" in body:
        changes["attributes"] = _validate_attributes(body["attributes"])
    ctx.state.update_character(record, changes)
    return 200, ctx.state.render(record)


async def _delete_character(ctx: Ctx) -> tuple[int, Any]:
    record = ctx.state.find_character(ctx.team, ctx.request.match_info["character_id"])
    ctx.state.delete_character(ctx.team, record)
    return 200, {"id": record.id, "object": "character", "deleted": True}


async def _save_character(ctx: Ctx) -> tuple[int, Any]:
    record = ctx.state.find_character(ctx.team, ctx.request.match_info["character_id"])
    ctx.state.save_character(record)
    return 200, ctx.state.render(record)


async def _resynthesize(ctx: Ctx) -> tuple[int, Any]:
    state = ctx.state
    record = state.find_character(ctx.team, ctx.request.match_info["character_id"])
    body = _require_object(ctx.body)
    _reject_unknown(body, ("force_all",))
    if "force_all" in body and not isinstance(body["force_all"], bool):
        raise invalid("invalid_request_error", "force_all must be a boolean.", "force_all")
    _require_eligible(record)
    state.require_credits(ctx.team, SYNTHESIS_COST)
    state.charge(ctx.team, record.id, "resynthesize", SYNTHESIS_COST, ctx.request_id)
    state.begin_synthesis(record, state.after_resynthesis, SYNTH_POSES)
    return 200, state.render(record)


async def _regenerate_ref(ctx: Ctx) -> tuple[int, Any]:
    state = ctx.state
    record = state.find_character(ctx.team, ctx.request.match_info["character_id"])
    body = _require_object(ctx.body)
    _reject_unknown(body, ("pose", "prompt_override"))
    pose = body.get("pose")
    if pose not in POSES:
        raise invalid("invalid_request_error", "pose must be one of " + ", ".join(POSES) + ".",
                      "pose")
    prompt = body.get("prompt_override")
    if prompt is not None and not isinstance(prompt, str):
        raise invalid("invalid_request_error", "prompt_override must be a string.",
                      "prompt_override")
    _require_eligible(record)
    state.require_credits(ctx.team, REGENERATE_COST)
    state.charge(ctx.team, record.id, "regenerate_ref", REGENERATE_COST, ctx.request_id)
    state.begin_synthesis(record, state.after_resynthesis, (pose,))
    return 200, state.render(record)


async def _upload_init(ctx: Ctx) -> tuple[int, Any]:
    body = _require_object(ctx.body)
    filename = body.get("filename")
    if not isinstance(filename, str) or not 1 <= len(filename) <= 120:
        raise invalid("invalid_format", "filename must be a string of 1-120 characters.",
                      "filename")
    extension = body.get("extension")
    content_type = body.get("content_type")
    if extension not in _UPLOAD_TYPES:
        raise invalid("invalid_format", "extension must be jpeg, jpg, png or webp.", "extension")
    if content_type not in set(_UPLOAD_TYPES.values()):
        raise invalid("invalid_format", "content_type must be image/jpeg, image/png or "
                      "image/webp.", "content_type")
    if _UPLOAD_TYPES[extension] != content_type:
        raise invalid("parameter_invalid_combination",
                      "extension and content_type do not match.", "content_type")
    upload = ctx.state.new_upload(ctx.team, filename, extension, content_type)
    return 200, {
        "upload_id": upload.id,
        "upload_url": f"{ctx.state.base_url}/_uploads/{upload.id}?signature={upload.signature}",
        "upload_headers": {"Content-Type": content_type},
        "expires_at": iso(ctx.state.clock.time() + UPLOAD_URL_TTL),
    }


async def _upload_classify(ctx: Ctx) -> tuple[int, Any]:
    body = _require_object(ctx.body)
    upload_id = body.get("upload_id")
    if not isinstance(upload_id, str):
        raise invalid("missing_field", "upload_id is required.", "upload_id")
    upload = ctx.state.find_upload(upload_id)
    if upload is not None and upload.team_id != ctx.team.id:
        raise ApiError(404, "not_found", "resource_not_found", "No such upload.", "upload_id")
    if upload is None or not ctx.state.upload_usable(upload):
        raise invalid("upload_invalid", "The upload is unknown, expired or already used.",
                      "upload_id")
    pose, confidence = _classify(upload.filename)
    return 200, {"upload_id": upload.id, "pose": pose, "confidence": confidence}


async def _balance(ctx: Ctx) -> tuple[int, Any]:
    credits = round(ctx.team.credits, 4)
    return 200, {"credits": credits, "held_credits": 0, "available_credits": credits,
                 "currency": "credit", "billing_mode": "prepaid"}


def _create_bucket(body: Any) -> str:
    # A paid synthesis and a free upload-flow create share the route, not the bucket.
    generate = isinstance(body, dict) and body.get("generate") is True
    return "characters_synthesize" if generate else "characters_post"


#: The characters surface and the balance, with the buckets of the rate-limit docs.
ROUTES = (
    Route("GET", "/v1/characters", _list_characters, "characters_get"),
    Route("POST", "/v1/characters", _create_character, _create_bucket),
    Route("POST", "/v1/characters/uploads/init", _upload_init, "characters_post"),
    Route("POST", "/v1/characters/uploads/classify", _upload_classify, "characters_post"),
    Route("GET", "/v1/characters/{character_id}", _get_character, "characters_get"),
    Route("PATCH", "/v1/characters/{character_id}", _update_character, "characters_post"),
    Route("DELETE", "/v1/characters/{character_id}", _delete_character, "characters_post"),
    Route("POST", "/v1/characters/{character_id}/save", _save_character, "characters_post"),
    Route("POST", "/v1/characters/{character_id}/resynthesize", _resynthesize,
          "characters_synthesize"),
    Route("POST", "/v1/characters/{character_id}/refs/regenerate", _regenerate_ref,
          "characters_synthesize"),
    # GET /v1/balance falls in the general GET class of the rate-limit docs.
    Route("GET", "/v1/balance", _balance, "get"),
)


# -- uploads and storage (plain HTTP, no API key, as signed URLs are) ---------------------


def storage_routes(
    state: FakeState,
) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
    """``(method, path, handler)`` of the signed upload PUT and the ref storage GET."""

    async def put_upload(request: web.Request) -> web.StreamResponse:
        upload = state.find_upload(request.match_info["upload_id"])
        if upload is None or not secrets.compare_digest(
            request.query.get("signature", ""), upload.signature
        ):
            return web.Response(status=403, text="signature does not match")
        if state.clock.monotonic() - upload.created_at > UPLOAD_URL_TTL:
            return web.Response(status=403, text="upload URL expired")
        state.receive_upload(upload, await request.read())
        return web.Response(status=200)

    async def get_ref(request: web.Request) -> web.StreamResponse:
        try:
            record = state.find_any_character(request.match_info["character_id"])
        except ApiError:
            return web.Response(status=404)
        pose = request.match_info["pose"]
        token = "token=" + request.query.get("token", "?")
        for ref in record.refs:
            if ref["pose"] == pose and ref["url"].endswith(token):
                return web.Response(body=b"\x89PNG\r\n\x1a\nfake", content_type="image/png")
        return web.Response(status=403)

    return [("PUT", "/_uploads/{upload_id}", put_upload),
            ("GET", "/_storage/{character_id}/{pose}", get_ref)]


# -- validation ---------------------------------------------------------------------------


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("invalid_format", "The request body must be a JSON object.")
    return body


def _reject_unknown(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    rejected = [key for key in body if key not in allowed]
    if rejected:
        raise invalid("invalid_request", "Unknown or immutable fields: " + ", ".join(rejected)
                      + ".", rejected[0])


def _validate_name(name: Any, *, required: bool) -> str:
    if name is None and required:
        raise invalid("missing_field", "name is required.", "name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("invalid_request", "name must be a non-empty string.", "name")
    if len(name) > MAX_NAME_LENGTH:
        raise invalid("invalid_request", f"name is longer than {MAX_NAME_LENGTH} characters.",
                      "name")
    return name


def _validate_attributes(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("invalid_request", "attributes must be an object.", "attributes")
    _reject_unknown(value, ATTRIBUTE_FIELDS)
    clean: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        if key == "age":
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 200:
                raise invalid("invalid_request", "age must be an integer from 0 to 200.",
                              "attributes.age")
        elif not isinstance(item, str) or len(item) > MAX_ATTRIBUTE_LENGTH:
            raise invalid("invalid_request", f"{key} must be a string of at most "
                          f"{MAX_ATTRIBUTE_LENGTH} characters.", f"attributes.{key}")
        clean[key] = item
    return clean


def _require_eligible(record: CharacterRecord) -> None:
    if record.status not in ("reviewing", "ready", "failed"):
        raise invalid("invalid_request_error",
                      f"Character is {record.status}; it can be resynthesized only when "
                      "reviewing, ready or failed.")


def _classify(filename: str) -> tuple[str, float]:
    lowered = filename.lower()
    for pose in ("portrait", "front", "side", "back"):
        if pose in lowered:
            return pose, 0.92
    return "other", 0.41
