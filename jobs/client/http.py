"""The one HTTP client of judgefleet's jobs: timeouts, retries and backoff live here, nowhere else.

    ApiError                 the request ended without an answer we can use
     +-- attempts, status    how often it was tried; the last HTTP status (None: no response)
     +-- retryable           whether a later try could succeed (False for 4xx answers)
     +-- reason              why, as a row's reason code: judge_timeout (no answer in time),
                             judge_unreachable (no connection), judge_refused (a 4xx answer),
                             judge_error (5xx, or 408/429 after the retries; invalid JSON)

Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with exponential
backoff and full jitter, waiting at least what a `Retry-After` header asks - up to
`RETRY_AFTER_MAX_S` (`retry_after_max_s`): a server may ask for an hour, and a job that obeyed
would sit idle with its rows unscored. Other 4xx answers
are the request's fault and are not retried. A 429 ("slow down": every judge is busy) and a 503
with Retry-After ("down for now, back then": the route while Serve replaces a dead replica, a
server loading its model) do not use up a retry: the client keeps backing off until `patience_s`
has passed, so a saturated or recovering route slows a job down instead of failing its rows.
`max_in_flight` bounds the requests this client has out at once; a request waiting out its
backoff does not hold a slot. Waiting requests get a free slot in `priority` order (lowest
first): a row that started earlier finishes before new rows start, so its verdict step still
finds its feedback in the judge's cache.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import itertools
import random
import time
from typing import Mapping, Optional, Tuple

import aiohttp

from jobs.judge.reasons import Reason
from serve import wire

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
# The longest wait a Retry-After header gets from this client, whatever it asks.
RETRY_AFTER_MAX_S = 60.0


class PrioritySlots:
    """A semaphore whose waiters are served lowest priority value first (FIFO among equals)."""

    def __init__(self, slots: int):
        self._free = slots
        self._waiters: list = []
        self._count = itertools.count()

    async def acquire(self, priority: float = 0.0) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._count), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class ApiError(Exception):
    def __init__(self, message: str, status: Optional[int] = None, attempts: int = 1, retryable: bool = False,
                 reason: Reason = Reason.JUDGE_ERROR):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.retryable = retryable
        self.reason = reason


def status_reason(status: int, code: Optional[str] = None) -> Reason:
    """The reason code of an HTTP error that is not retried: a 4xx is the request's fault, and a
    prompt past the judge's context (the server found it, not our own count) is too long."""
    if code == wire.CONTEXT_LENGTH_EXCEEDED:
        return Reason.PROMPT_TOO_LONG
    return Reason.JUDGE_REFUSED if 400 <= status < 500 and status not in RETRY_STATUSES else Reason.JUDGE_ERROR


def retry_after_s(value: Optional[str], cap: float = RETRY_AFTER_MAX_S) -> Optional[float]:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), at most `cap`."""
    seconds = wire.parse_retry_after(value)
    return None if seconds is None else min(seconds, cap)


class OpenAIClient:
    """An async client for one OpenAI-compatible base URL (".../v1")."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, timeout_s: float = 600.0,
                 max_retries: int = 6, backoff_s: float = 0.5, backoff_max_s: float = 30.0,
                 max_in_flight: int = 64, patience_s: float = 600.0, retry_after_max_s: float = RETRY_AFTER_MAX_S):
        headers = wire.auth_headers(api_key)
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.patience_s = patience_s
        self.retry_after_max_s = retry_after_max_s
        self._slots = PrioritySlots(max_in_flight)
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 10.0))
        self._max_in_flight = max_in_flight
        self._http: Optional[aiohttp.ClientSession] = None  # made on first use, on the caller's event loop

    async def post(self, path: str, body: dict, priority: float = 0.0,
                   headers: Optional[dict] = None) -> Tuple[dict, Mapping[str, str]]:
        return await self._request("POST", path, body, priority, headers)

    async def get(self, path: str) -> Tuple[dict, Mapping[str, str]]:
        return await self._request("GET", path, None)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def close_now(self) -> None:
        """Close the connections without awaiting (from a finalizer, off the event loop)."""
        session, self._http = self._http, None
        if session is not None and not session.closed:
            connector = session.connector
            session.detach()
            if connector is not None:
                connector.close()  # the sockets close now; what it returns has nothing left to wait for

    def _session(self) -> aiohttp.ClientSession:
        # aiohttp rather than httpx: at thousands of requests/s its per-request CPU cost is a
        # fraction of httpx's, and the client actors, not the judge, would otherwise set the pace.
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_in_flight, ttl_dns_cache=300),
            )
        return self._http

    async def _request(self, method: str, path: str, body: Optional[dict], priority: float = 0.0,
                       headers: Optional[dict] = None) -> Tuple[dict, Mapping[str, str]]:
        url = self._url(path)
        session = self._session()
        deadline = time.monotonic() + self.patience_s
        attempt, throttled = 0, 0
        while True:
            attempt += 1
            wait_hint = None
            try:
                await self._slots.acquire(priority)
                try:
                    async with session.request(method, url, json=body, headers=headers) as response:
                        status, raw, response_headers = response.status, await response.read(), response.headers
                        reason = response.reason or ""
                finally:
                    self._slots.release()
            except asyncio.TimeoutError:
                problem, status, why = "timed out", None, Reason.JUDGE_TIMEOUT
            except aiohttp.ClientError as e:
                problem, status, why = f"could not reach {url}: {type(e).__name__}: {e}", None, Reason.JUDGE_UNREACHABLE
            else:
                why = Reason.JUDGE_ERROR
                if status < 400:
                    try:
                        return json.loads(raw), response_headers
                    except ValueError:
                        problem = "the server answered with invalid JSON"
                else:
                    text = raw.decode("utf-8", "replace")
                    problem = f"HTTP {status}: {wire.error_message(text, reason)}"
                    if status not in RETRY_STATUSES:
                        raise ApiError(problem, status, attempt, retryable=False,
                                       reason=status_reason(status, wire.error_code(text)))
                    wait_hint = retry_after_s(response_headers.get("retry-after"), self.retry_after_max_s)
                    told_to_wait = status == 429 or (status == 503 and wait_hint is not None)
                    if told_to_wait and time.monotonic() < deadline:
                        throttled += 1
                        attempt -= 1  # being asked to wait is not a failure
                        # Come back when told (spread a little so callers do not return in step).
                        delay = wait_hint * random.uniform(1.0, 1.5) if wait_hint else self._backoff(min(throttled, 6), None)
                        await asyncio.sleep(min(delay, self.retry_after_max_s))
                        continue
            if attempt > self.max_retries:
                raise ApiError(f"{problem} (after {attempt + throttled} attempts)", status, attempt, retryable=True,
                               reason=why)
            await asyncio.sleep(self._backoff(attempt, wait_hint))

    def _backoff(self, attempt: int, hint: Optional[float]) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)  # full jitter: clients that failed together spread out
        return max(delay, hint) if hint is not None else delay

    def _url(self, path: str) -> str:
        if path.startswith("/") and not path.startswith("/v1"):
            # Non-OpenAI extras (vLLM's /tokenize) live at the server root, beside /v1.
            root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
            return root + path
        return self.base_url + "/" + path.lstrip("/")
