"""Errors of the route: the ones it answers, and the ones a pool member raises to the router.

    Exception
     +-- OpenAIError   a client's mistake (or the route's), answered in OpenAI's shape:
     |                 {"error": {"message", "type", "param", "code"}}
     +-- MemberError   a pool member could not take a request; the router tries another member
          +-- MemberFull   its bounded queue is full (it is fine: just not now)
          +-- MemberGone   its replica died or its server is unreachable (mark it down)

`OpenAIError` is raised inside a model replica, which answers it as a reply with the right
status. Its fields travel in `args` so it pickles.

Anything else is a fault of the route, answered by `internal_error`: a 500 that carries an error
id and no internals (exception text can hold paths, prompts or library details a client should
not see, and a client cannot fix it anyway); the same id is in the log line with the traceback.
"""

from __future__ import annotations

import logging
import uuid
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


def internal_error(log: logging.Logger, what: str) -> dict:
    """Log the exception being handled under a new error id; the OpenAI-shaped 500 body naming it."""
    error_id = uuid.uuid4().hex[:16]
    log.exception("internal error %s: %s", error_id, what)
    return error_body(500, f"internal error {error_id}; the server's log has its details under this id",
                      code="internal_error")


class MemberError(Exception):
    """A pool member could not take a request; another member may.

    `retry_after_s`: how long the member asked not to be sent requests (an external server's
    Retry-After, already capped), or None."""

    def __init__(self, message: str = "", retry_after_s: Optional[float] = None):
        super().__init__(message, retry_after_s)

    @property
    def retry_after_s(self) -> Optional[float]:
        return self.args[1] if len(self.args) > 1 else None

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class MemberFull(MemberError):
    """The member's bounded queue is full: skip it for this request."""


class MemberGone(MemberError):
    """The member's replica died under the request or its server did not answer: mark it down."""
