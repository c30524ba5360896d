"""Errors the route answers, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.

`OpenAIError` is raised inside a model replica and re-raised by Ray in the ingress, which turns
it into a JSON response with the right status. Its fields travel in `args` so it pickles.
"""

from __future__ import annotations

from typing import Optional

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(status, message, param, code)

    @property
    def status(self) -> int:
        return self.args[0]

    @property
    def message(self) -> str:
        return self.args[1]

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    def body(self) -> dict:
        return error_body(self.status, self.message, self.args[2], self.args[3])


def error_body(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
