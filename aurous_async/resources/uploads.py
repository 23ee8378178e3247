"""``session.characters.uploads``: reference images for the upload flow."""

from __future__ import annotations

from .._errors import APIStatusError, MalformedResponseError
from .._http import SendMarker
from .._models import UploadClassification, UploadTicket
from .._parts import SessionParts
from .._redact import redact, redact_url
from .._transport import ApiCall
from .._validate import path_id

__all__ = ["Uploads"]

_CONTENT_TYPES = {"image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp"}


def _checked_data(data: object) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    return bytes(data)


class Uploads:
    """``session.characters.uploads``: reference images for the upload flow.

    ::

        ticket = await s.characters.uploads.upload(png_bytes, "hero-front.png", "image/png")
        hero = await s.characters.create(name="Hero", upload_ids=[ticket.upload_id])
    """

    def __init__(self, parts: SessionParts) -> None:
        self._parts = parts

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
        response = await self._parts.transport.request(ApiCall(
            method="POST", path="/v1/characters/uploads/init", bucket="characters_post",
            json={"filename": filename, "extension": extension, "content_type": content_type},
        ))
        return response.into(UploadTicket)

    async def put(self, ticket: UploadTicket, data: bytes) -> None:
        """``PUT`` the image bytes to the ticket's signed URL (no API key is sent)."""
        body = _checked_data(data)
        headers = dict(ticket.upload_headers)
        for name, value in headers.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise MalformedResponseError(
                    "the upload ticket's headers hold control characters", status=200,
                    code="invalid_upload_headers")
        http = self._parts.http
        answer = await http.send(
            "PUT", ticket.upload_url, data=body, headers=headers,
            timeout=self._parts.transport.timeout, marker=SendMarker(True),
            secrets=(ticket.upload_url,),
        )
        if answer.status >= 300:
            text = answer.body[:200].decode("utf-8", "replace")
            raise APIStatusError(
                f"the upload to {redact_url(ticket.upload_url)} was refused",
                status=answer.status, code="upload_refused", body=redact(text),
            )

    async def upload(self, data: bytes, filename: str, content_type: str) -> UploadTicket:
        """``init`` then ``put``: one call from bytes to a usable ``upload_id``."""
        body = _checked_data(data)
        ticket = await self.init(filename, content_type)
        await self.put(ticket, body)
        return ticket

    async def classify(self, upload_id: str) -> UploadClassification:
        """The detected pose of an uploaded image (free, idempotent)."""
        path_id(upload_id, "upload_id")
        response = await self._parts.transport.request(ApiCall(
            method="POST", path="/v1/characters/uploads/classify", bucket="characters_post",
            json={"upload_id": upload_id},
        ))
        return response.into(UploadClassification)
