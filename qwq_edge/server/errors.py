"""Errors as OpenAI sends them: a status code and ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error the client caused (4xx) or that the server reports (503), with its JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


class QueueFullError(APIError):
    """Too many requests are waiting already (429, with ``Retry-After``)."""

    def __init__(self, waiting: int, retry_after: int) -> None:
        super().__init__(
            429,
            f"the server is busy: {waiting} requests are waiting already; retry after {retry_after} s",
            kind="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )


class ShuttingDownError(APIError):
    """The server is shutting down: waiting and running requests end with this."""

    def __init__(self) -> None:
        super().__init__(503, "the server is shutting down", kind="server_error", code="shutting_down")
