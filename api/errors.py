"""What every refusal looks like: JSON ``{code, message}`` with the HTTP status that fits, never a trace."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorBody(BaseModel):
    code: str  # stable, for programs: bad_parameter, bad_cursor, key_required, bad_key, rate_limited, ...
    message: str  # for people


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def bad_parameter(message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message)
