"""Access control in front of the whole app (the API and the mounted UI): one policy, one middleware.

One pure ASGI middleware (streamed responses and client disconnects pass through untouched) decides,
in this order, for every request but the probes `/health` and `/ready` (SECURITY.md has the threat model):

- Browser policy (origin.py): the Host must name this server (421), a page of another origin may not
  change anything (403), preflights are answered here and CORS headers go only to allowed origins.
- Credentials: when `GLMTTS_API_KEY` is set (several keys may be given, comma-separated), every route
  needs `Authorization: Bearer <key>`, `X-API-Key: <key>` or the UI's login cookie (its password is a
  key), except the login page and its static assets; `/metrics` also takes `GLMTTS_METRICS_TOKEN`,
  which it needs alone when only that is set.
- Rate limit: a token bucket per client (its API key, else its IP address) on the requests that start
  work or guess a key: POSTs under `/v1/`, requests with a wrong key (or none, under `/v1/`), the UI's
  runs and logins. Over the limit: 429 with Retry-After. With shared state (GLMTTS_REDIS_URL) the
  buckets live in Redis (glmtts.cluster.ratelimit), so a client's limit holds across replicas; Redis
  unreachable: 503.
  The address is the connection's own unless it comes from a proxy in `GLMTTS_TRUSTED_PROXIES`.
- Body limit: a request body larger than the limit gets 413, checked on Content-Length and again on
  the bytes that actually arrive.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glmtts.http.errors import error_body
from glmtts.http.origin import BrowserPolicy, request_origin
from glmtts.ratelimit import Limiter
from glmtts.settings import Settings

_LOGGER = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/health", "/ready"})  # open to all: orchestrators probe them by any name, without a key
METRICS_PATH = "/metrics"
# With a key set, what a browser needs to show the UI's login form (static assets of Gradio's front end).
LOGIN_PATHS = frozenset(
    {"/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json"}
    | {"/gradio_api/login_check", "/gradio_api/login_check/", "/gradio_api/theme.css"}
)
LOGIN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
KEY_REQUIRED = "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>', or log in on the page."
WARMUP_HEADER = "x-glmtts-warmup"  # the app's own warm-up requests: neither keyed nor rate limited
API_PREFIXES = ("/v1/", "/dev/")  # the API: OpenAI's paths and Kokoro-FastAPI's /dev/captioned_speech
UI_LIMITED_PATHS = ("/gradio_api/queue/join", "/gradio_api/call/", "/gradio_api/run/", "/login")
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


class BodyTooLarge(HTTPException):
    """A request body over the limit; an HTTPException so FastAPI's body parsing passes it on as it is."""

    def __init__(self, limit_bytes: int):
        super().__init__(413, f"The request body is larger than the {limit_bytes // (1024 * 1024)} MB limit.")


class SecurityMiddleware:
    """The browser policy, credentials, rate limit and body size checks for every request (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: Limiter | None = None, warmup_token: str = ""):
        """`limiter`: the service's rate limiter (glmtts.ratelimit.build_limiter), None when there is no limit."""
        self.app = app
        self.warmup_token = warmup_token.encode("latin-1")
        self.keys = parse_api_keys(settings.api_key)
        self.metrics_tokens = parse_api_keys(settings.metrics_token)
        self.browser = BrowserPolicy.from_settings(settings)
        self.limiter = limiter
        self.max_body_bytes = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if scope["type"] == "websocket":  # no route takes one; should one come, it follows the same policy
            await self._websocket(scope, receive, send, headers)
            return
        method: str = scope["method"]
        refusal = self.browser.host_refusal(headers.get("host"))
        if refusal:
            await _send_error(send, 421, refusal, {})
            return
        if method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers:
            status, cors = self.browser.preflight(headers)
            await _send_preflight_answer(send, status, cors, request_origin(headers))
            return
        refusal = self.browser.origin_refusal(method, headers)
        if refusal:
            await _send_error(send, 403, refusal, {})
            return
        send = self._with_cors(send, request_origin(headers))  # from here on, answers reach an allowed page's script
        # The app's own warm-up skips the key and the rate limit, and takes the body limit's path as clients do.
        warmup = bool(self.warmup_token) and hmac.compare_digest(
            headers.get(WARMUP_HEADER, "").encode("latin-1"), self.warmup_token
        )
        if not warmup and not await self._admitted(scope, path, headers, send):
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _send_error(send, 413, BodyTooLarge(self.max_body_bytes).detail, {"Connection": "close"})
            return
        await self._call_with_body_limit(scope, receive, send)

    def _with_cors(self, send: Send, origin: str | None) -> Send:
        """`send` with the response's CORS headers replaced by the policy's for `origin` (none for most)."""

        async def policed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": self.browser.cors_headers(origin, list(message.get("headers", [])))}
            await send(message)

        return policed_send

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """A handshake from a foreign Host or page, or without credentials where they are needed, is closed (403)."""
        allowed = not self.browser.host_refusal(headers.get("host"))
        allowed = allowed and not self.browser.origin_refusal("WEBSOCKET", headers)
        if allowed and (not self._credentials_required(scope["path"]) or self._authorized(scope, scope["path"], headers)):
            await self.app(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})

    def _credentials_required(self, path: str) -> bool:
        if path == METRICS_PATH:
            return bool(self.keys or self.metrics_tokens)
        return bool(self.keys) and path not in LOGIN_PATHS and not path.startswith(LOGIN_PREFIXES)

    def _authorized(self, scope: Scope, path: str, headers: dict[str, str]) -> bool:
        """A configured key, the metrics token on /metrics, or the cookie of a login on the UI."""
        key = presented_key(headers)
        if key_is_valid(key, self.keys) or (path == METRICS_PATH and key_is_valid(key, self.metrics_tokens)):
            return True
        return bool(self.keys) and ui_login_is_valid(scope, headers.get("cookie", ""))

    async def _admitted(self, scope: Scope, path: str, headers: dict[str, str], send: Send) -> bool:
        """The credentials and the rate limit; sends the error and returns False when the request may not go on."""
        is_api = path.startswith(API_PREFIXES)
        key = presented_key(headers)
        required = self._credentials_required(path)
        authorized = not required or self._authorized(scope, path, headers)
        # Work and guesses cost a token: POSTs under /v1/, a wrong key anywhere, /v1/ without a key, UI runs and logins.
        guess = not authorized and (key is not None or is_api)
        limited = (is_api and scope["method"] == "POST") or guess or path.startswith(UI_LIMITED_PATHS)
        if self.limiter is not None and limited:
            key_ok = key_is_valid(key, self.keys)
            client = f"key:{key}" if is_api and key_ok else f"ip:{(scope.get('client') or ('unknown',))[0]}"
            if not await self._took_token(client, send):
                return False
        if not authorized:
            message = "The API key is not valid." if key else KEY_REQUIRED
            await _send_error(send, 401, message, {"WWW-Authenticate": "Bearer"})
            return False
        return True

    async def _took_token(self, client: str, send: Send) -> bool:
        """One token from `client`'s bucket; sends 429 (or 503 when the shared store is down) and returns False if none."""
        if self.limiter.shared:  # a network call: kept off the event loop
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


def ui_login_is_valid(scope: Scope, cookie_header: str) -> bool:
    """Whether the request carries the cookie of a login on the UI (Gradio's `access-token-<app id>`).

    Gradio keeps the tokens of its logins in the mounted app's memory, which the request's app (the
    FastAPI app the UI is mounted on) leads to; a token that app does not hold proves nothing.
    """
    ui = next(
        (route.app for route in getattr(scope.get("app"), "routes", ()) if _is_gradio_app(getattr(route, "app", None))), None
    )
    if ui is None or not cookie_header:
        return False
    cookies = cookie_parser(cookie_header)
    tokens = [cookies.get(f"access-token-{ui.cookie_id}"), cookies.get(f"access-token-unsecure-{ui.cookie_id}")]
    return any(token and token in ui.tokens for token in tokens)


def _is_gradio_app(app: object) -> bool:
    return isinstance(getattr(app, "tokens", None), dict) and isinstance(getattr(app, "cookie_id", None), str)


async def _send_preflight_answer(send: Send, status: int, cors: list[tuple[bytes, bytes]], origin: str | None) -> None:
    if status != 204:
        message = f"Cross-origin requests from {origin} are not allowed; add it to GLMTTS_ALLOWED_ORIGINS to allow them."
        await _send_error(send, status, message, {})
        return
    await send({"type": "http.response.start", "status": 204, "headers": cors})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_error(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps(error_body(status, detail)).encode("utf-8")
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})
