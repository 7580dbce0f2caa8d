"""Access control in front of the whole app: an optional API key, per-client rate limits, body limits.

One pure ASGI middleware (streamed responses and client disconnects pass through untouched):

- API key: when `GLMTTS_API_KEY` is set (several keys may be given, comma-separated), every `/v1/`
  route needs `Authorization: Bearer <key>` or `X-API-Key: <key>`; the UI asks for a key as its login
  password (any user name). `/health` and `/ready` stay open.
- Rate limit: a token bucket per client (its API key, else its IP address) on the requests that start
  work or guess a key: POSTs under `/v1/`, `/v1/` requests with a wrong key, the UI's runs and logins.
  Over the limit: 429 with Retry-After. With shared state (GLMTTS_REDIS_URL) the buckets live in
  Redis (glmtts.cluster.ratelimit), so a client's limit holds across replicas; Redis unreachable: 503.
- Body limit: a request body larger than the limit gets 413, checked on Content-Length and again on
  the bytes that actually arrive.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glmtts.http.errors import error_body
from glmtts.settings import Settings

_LOGGER = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
WARMUP_HEADER = "x-glmtts-warmup"  # the app's own warm-up requests: neither keyed nor rate limited
API_PREFIX = "/v1/"
UI_LIMITED_PATHS = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/", "/login")
MAX_TRACKED_CLIENTS = 10_000  # buckets kept before idle (full) ones are dropped
SECONDS_PER_MINUTE = 60.0
SHARED_STATE_RETRY_S = 5


def parse_api_keys(raw: str | None) -> tuple[str, ...]:
    """`GLMTTS_API_KEY` as a tuple of keys: one key, or several separated by commas."""
    return tuple(key.strip() for key in (raw or "").split(",") if key.strip())


def key_is_valid(given: str | None, keys: tuple[str, ...]) -> bool:
    """Compare in constant time against every configured key."""
    if not given:
        return False
    given_bytes = given.encode("utf-8", "surrogateescape")
    return any(hmac.compare_digest(given_bytes, key.encode("utf-8")) for key in keys)


def presented_key(headers: dict[str, str]) -> str | None:
    """The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key: <key>`."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


def gradio_auth(settings: Settings) -> Callable[[str, str], bool] | None:
    """Gradio's login check when an API key is set: any user name, a configured key as password."""
    keys = parse_api_keys(settings.api_key)
    if not keys:
        return None
    return lambda _username, password: key_is_valid(password, keys)


def warn_if_exposed(settings: Settings) -> None:
    """Log a warning when the server listens beyond loopback with no API key."""
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not parse_api_keys(settings.api_key):
        _LOGGER.warning("Listening on %s without GLMTTS_API_KEY: anyone who can reach the port can use it.", settings.host)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: `per_minute` requests a minute, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._rate = per_minute / SECONDS_PER_MINUTE  # tokens per second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """Take one token for `client`: 0.0 when allowed, else the seconds until a token is due."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= MAX_TRACKED_CLIENTS:
                    self._drop_idle(now)
                bucket = self._buckets[client] = _Bucket(float(self.per_minute), now)
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self._rate

    def _drop_idle(self, now: float) -> None:
        full_after_s = self.per_minute / self._rate
        for client in [c for c, b in self._buckets.items() if now - b.updated >= full_after_s]:
            del self._buckets[client]


def _limiter(settings: Settings, clock: Callable[[], float]):
    """The token buckets: in this process, or in Redis when replicas share state."""
    if settings.redis_url:
        from glmtts.cluster import connect
        from glmtts.cluster.ratelimit import RedisRateLimiter

        return RedisRateLimiter(settings.rate_limit, connect(settings.redis_url, settings.replica))
    return RateLimiter(settings.rate_limit, clock)


class BodyTooLarge(HTTPException):
    """A request body over the limit; an HTTPException so FastAPI's body parsing passes it on as it is."""

    def __init__(self, limit_bytes: int):
        super().__init__(413, f"The request body is larger than the {limit_bytes // (1024 * 1024)} MB limit.")


class SecurityMiddleware:
    """API key, rate limit and body size checks for every HTTP request (see the module docstring)."""

    def __init__(
        self, app: ASGIApp, settings: Settings, warmup_token: str = "", clock: Callable[[], float] = time.monotonic
    ):
        self.app = app
        self.warmup_token = warmup_token.encode("latin-1")
        self.keys = parse_api_keys(settings.api_key)
        self.limiter = _limiter(settings, clock) if settings.rate_limit > 0 else None
        self.max_body_bytes = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        # The app's own warm-up skips the key and the rate limit, and takes the body limit's path as clients do.
        warmup = bool(self.warmup_token) and hmac.compare_digest(headers.get(WARMUP_HEADER, "").encode("latin-1"), self.warmup_token)
        if not warmup and not await self._admitted(scope, path, headers, send):
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(send, 413, BodyTooLarge(self.max_body_bytes).detail, {"Connection": "close"})
            return
        await self._call_with_body_limit(scope, receive, send)

    async def _admitted(self, scope: Scope, path: str, headers: dict[str, str], send: Send) -> bool:
        """The API key and the rate limit; sends the error and returns False when the request may not go on."""
        is_api = path.startswith(API_PREFIX)
        key = presented_key(headers)
        key_ok = not self.keys or key_is_valid(key, self.keys)
        # Work and guesses cost a token: POSTs under /v1/, any /v1/ request with a wrong key, UI runs and logins.
        limited = (is_api and (scope["method"] == "POST" or not key_ok)) or path.startswith(UI_LIMITED_PATHS)
        if self.limiter is not None and limited:
            client = f"key:{key}" if is_api and self.keys and key_ok else f"ip:{(scope.get('client') or ('unknown',))[0]}"
            if getattr(self.limiter, "shared", False):  # a network call: kept off the event loop
                try:
                    wait_s = await run_in_threadpool(self.limiter.acquire, client)
                except self.limiter.Unavailable as error:
                    _LOGGER.warning("Rate limit not checked: %s", error)
                    message = "The shared state store (Redis) is unreachable; retry in a few seconds."
                    await _send_error(send, 503, message, {"Retry-After": str(SHARED_STATE_RETRY_S)})
                    return False
            else:
                wait_s = self.limiter.acquire(client)
            if wait_s > 0:
                retry_after = max(1, math.ceil(wait_s))
                message = f"Rate limit of {self.limiter.per_minute} requests a minute reached; retry in {retry_after} s."
                await _send_error(send, 429, message, {"Retry-After": str(retry_after)})
                return False
        if is_api and not key_ok:
            message = (
                "The API key is not valid."
                if key
                else "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
            )
            await _send_error(send, 401, message, {"WWW-Authenticate": "Bearer"})
            return False
        return True

    async def _call_with_body_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge as error:  # raised where no FastAPI handler turned it into a response
            if started:
                raise
            await _send_error(send, 413, error.detail, {"Connection": "close"})


async def _send_error(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps(error_body(status, detail)).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
