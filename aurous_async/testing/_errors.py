"""Error answers of the fake, in the envelope the API documents (every non-2xx body)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ApiError", "envelope", "invalid", "not_found"]


class ApiError(Exception):
    """An error answer: the HTTP status, the envelope's fields and any extra headers."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def invalid(code: str, message: str, param: str | None = None) -> ApiError:
    """A 400 ``invalid_request`` answer."""
    return ApiError(400, "invalid_request", code, message, param)


def not_found(param: str | None = "character_id", what: str = "character") -> ApiError:
    """A 404 ``resource_not_found`` answer (also for another team's ids)."""
    return ApiError(404, "not_found", "resource_not_found", f"No such {what}.", param)


def envelope(err: ApiError, request_id: str) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {
        "type": err.type,
        "code": err.code,
        "message": err.message,
        "param": err.param,
        "doc_url": f"https://docs.aurous-labs.com/errors#{err.code}",
        "request_id": request_id,
    }}
