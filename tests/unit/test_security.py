"""The security middleware (browser policy, API key, rate limit, body limit) and metric labels, on a tiny app (no models)."""

import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient

from glmtts.cluster import connect
from glmtts.cluster.ratelimit import RedisRateLimiter
from glmtts.http.origin import is_same_origin, normalize_origin, split_host
from glmtts.http.security import (
    WARMUP_HEADER,
    SecurityMiddleware,
    gradio_auth,
    parse_api_keys,
    presented_key,
    warn_if_exposed,
)
from glmtts.metrics import Metrics, MetricsMiddleware
from glmtts.ratelimit import RateLimiter
from glmtts.settings import Settings

SERVER = "127.0.0.1:7860"
SELF = f"http://{SERVER}"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(clock=None, **settings) -> FastAPI:
    app = FastAPI()
    settings = Settings(**settings)
    if settings.redis_url:  # as the service builds it
        limiter = RedisRateLimiter(settings.rate_limit, connect(settings.redis_url, settings.replica))
    else:
        limiter = RateLimiter(settings.rate_limit, clock or FakeClock()) if settings.rate_limit > 0 else None
    app.add_middleware(SecurityMiddleware, settings=settings, limiter=limiter)

    @app.get("/health")
    def health():
        return {"status": "up"}

    @app.get("/ready")
    def ready():
        return {"ready": True}

    @app.get("/v1/status")
    def status():
        return {"ok": True}

    @app.post("/v1/echo")
    async def echo(request: Request):
        return {"bytes": len(await request.body())}

    @app.post("/login")
    def login():
        return {"login": True}

    @app.post("/gradio_api/queue/join")
    def join():
        return {"joined": True}

    @app.get("/")
    def page():
        return {"page": True}

    return app


def client(app: FastAPI, address: str = "10.0.0.1") -> TestClient:
    return TestClient(app, base_url=f"http://{SERVER}", client=(address, 5555))


def test_keys_parse_and_are_read_from_the_environment(monkeypatch):
    assert parse_api_keys(None) == ()
    assert parse_api_keys(" alpha , ,beta ") == ("alpha", "beta")
    monkeypatch.setenv("GLMTTS_API_KEY", "k1,k2")
    monkeypatch.setenv("GLMTTS_RATE_LIMIT", "30")
    monkeypatch.setenv("GLMTTS_REQUEST_TIMEOUT_S", "12.5")
    monkeypatch.setenv("GLMTTS_MAX_QUEUE", "4")
    settings = Settings.from_args([])
    assert (settings.api_key, settings.rate_limit, settings.request_timeout_s, settings.max_queue) == ("k1,k2", 30, 12.5, 4)
    assert settings.host == "127.0.0.1"
    assert settings.max_body_bytes == 21 * 1024 * 1024


def test_presented_key_reads_bearer_then_x_api_key():
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "bearer  abc "}) == "abc"
    assert presented_key({"authorization": "Basic abc", "x-api-key": "xyz"}) == "xyz"
    assert presented_key({}) is None


def test_without_a_key_everything_is_open():
    with client(make_app()) as http:
        assert http.get("/v1/status").status_code == 200
        assert http.post("/v1/echo", content=b"hi").json() == {"bytes": 2}


def test_api_key_guards_v1_but_not_health_ready_or_the_ui():
    with client(make_app(api_key="secret,other")) as http:
        missing = http.get("/v1/status")
        assert missing.status_code == 401 and "API key is required" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = http.get("/v1/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
        assert http.get("/v1/status", headers={"Authorization": "Bearer secret"}).status_code == 200
        assert http.get("/v1/status", headers={"X-API-Key": "other"}).status_code == 200
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 200
        assert http.get("/").status_code == 200  # the UI has Gradio's own login


def test_gradio_login_takes_any_user_and_a_key_as_password():
    assert gradio_auth(Settings()) is None
    check = gradio_auth(Settings(api_key="secret"))
    assert check("anyone", "secret") is True
    assert check("anyone", "Secret") is False
    assert check("secret", "") is False


def test_token_bucket_allows_a_burst_then_refills():
    clock = FakeClock()
    limiter = RateLimiter(3, clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(20.0)  # 3 a minute: one token every 20 s
    assert limiter.acquire("b") == 0.0  # another client has its own bucket
    clock.now += 20.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0.0


def test_rate_limit_answers_429_with_retry_after_on_work_routes_only():
    clock = FakeClock()
    with client(make_app(clock, rate_limit=2)) as http:
        assert [http.post("/v1/echo").status_code for _ in range(2)] == [200, 200]
        limited = http.post("/v1/echo")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "30"
        assert "2 requests a minute" in limited.json()["detail"]
        assert http.get("/v1/status").status_code == 200  # reading status costs nothing
        assert http.get("/health").status_code == 200
    app = make_app(clock, rate_limit=1)
    with client(app) as http, client(app, "10.0.0.2") as other:
        assert http.post("/gradio_api/queue/join").status_code == 200
        assert http.post("/gradio_api/queue/join").status_code == 429
        assert other.post("/gradio_api/queue/join").status_code == 200  # keyed by address
        clock.now += 60
        assert http.post("/gradio_api/queue/join").status_code == 200


def test_rate_limit_is_per_api_key_when_keys_are_set():
    app = make_app(FakeClock(), rate_limit=1, api_key="k1,k2")
    with client(app) as http:
        assert http.post("/v1/echo", headers={"X-API-Key": "k1"}).status_code == 200
        assert http.post("/v1/echo", headers={"X-API-Key": "k1"}).status_code == 429
        assert http.post("/v1/echo", headers={"X-API-Key": "k2"}).status_code == 200


def test_key_guessing_is_rate_limited_by_address():
    app = make_app(FakeClock(), rate_limit=2, api_key="k1")
    with client(app) as http:
        assert [http.get("/v1/status", headers={"X-API-Key": f"guess{i}"}).status_code for i in range(3)] == [401, 401, 429]
        assert http.post("/login", data={"username": "u", "password": "p"}).status_code == 429  # same address, same bucket
        assert http.get("/v1/status", headers={"X-API-Key": "k1"}).status_code == 200  # a valid key reading costs nothing


def test_bodies_over_the_limit_get_413_declared_or_streamed():
    app = make_app(max_upload_mb=1)  # limit: 2 MiB
    limit = Settings(max_upload_mb=1).max_body_bytes
    with client(app) as http:
        assert http.post("/v1/echo", content=b"x" * limit).json() == {"bytes": limit}
        declared = http.post("/v1/echo", content=b"x" * (limit + 1))
        assert declared.status_code == 413 and "2 MB limit" in declared.json()["detail"]

        def chunks():  # no Content-Length: the bytes are counted as they arrive
            for _ in range(5):
                yield b"y" * (limit // 4)

        streamed = http.post("/v1/echo", content=chunks())
        assert streamed.status_code == 413


def test_listening_beyond_loopback_without_a_key_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="glmtts.http.security"):
        warn_if_exposed(Settings(host="127.0.0.1"))
        warn_if_exposed(Settings(host="0.0.0.0", api_key="k"))
        assert not caplog.records
        warn_if_exposed(Settings(host="0.0.0.0"))
    assert "without GLMTTS_API_KEY" in caplog.text


# The browser policy (Host, Origin, CORS), credentials on every route, bounded metric labels.

EVIL = "http://evil.example"
OTHER_LOCAL_PORT = "http://localhost:3000"


class FakeUi(FastAPI):
    """Stands in for the mounted Gradio app: its login tokens, its cookie id, and a CORS echo like Gradio's."""

    def __init__(self):
        super().__init__()
        self.tokens: dict[str, str] = {}
        self.cookie_id = "cookie-id"

        @self.post("/cancel")
        def cancel(request: Request):
            origin = request.headers.get("origin", "*")
            return JSONResponse({"cancelled": True}, headers={"Access-Control-Allow-Origin": origin})

        @self.get("/startup-events")
        def startup_events():
            return {"started": True}


def make_ui_app(**settings) -> tuple[FastAPI, FakeUi]:
    """A tiny app shaped like the real one: API routes, /metrics, and a mounted "UI" that echoes CORS as Gradio does."""
    app = make_app(**settings)
    metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics")
    def exposition():
        return Response(metrics.exposition(), media_type="text/plain")

    ui = FakeUi()
    app.mount("/gradio_api", ui)
    return app, ui


def test_browser_settings_parse_from_the_environment(monkeypatch):
    assert (Settings().allowed_hosts, Settings().allowed_origins, Settings().trusted_proxies) == ((), (), ())
    monkeypatch.setenv("GLMTTS_ALLOWED_HOSTS", "tts.lan, box.local")
    monkeypatch.setenv("GLMTTS_ALLOWED_ORIGINS", "https://app.example.com,")
    monkeypatch.setenv("GLMTTS_TRUSTED_PROXIES", "127.0.0.1")
    monkeypatch.setenv("GLMTTS_METRICS_TOKEN", "scrape")
    settings = Settings.from_args([])
    assert settings.allowed_hosts == ("tts.lan", "box.local")
    assert settings.allowed_origins == ("https://app.example.com",)
    assert (settings.trusted_proxies, settings.metrics_token) == (("127.0.0.1",), "scrape")


def test_origins_and_hosts_parse_exactly():
    assert split_host("[::1]:7860") == ("::1", 7860) and split_host("LocalHost") == ("localhost", None)
    assert split_host("a:b") is None and split_host("[::1") is None
    assert normalize_origin("HTTP://Example.COM:80/x?y") == "http://example.com"
    assert normalize_origin("http://127.0.0.1:7860/page?x=1") == "http://127.0.0.1:7860"
    assert normalize_origin("null") == "null"
    assert is_same_origin("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert is_same_origin("https://tts.lan", "tts.lan")  # a TLS proxy in front: default ports on both sides
    assert is_same_origin("http://[::1]:7860", "[::1]:7860")
    assert not is_same_origin("http://localhost:3000", "localhost:7860")
    assert not is_same_origin("http://127.0.0.1:7860", "localhost:7860")
    assert not is_same_origin("null", "127.0.0.1:7860")


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.com", "localhost.evil.com", "evil.example:7860", "a b"])
def test_a_foreign_host_is_refused_on_every_route_but_the_probes(host):
    with client(make_app()) as http:
        refused = http.get("/v1/status", headers={"Host": host})
        assert refused.status_code in (400, 421), refused.text
        assert "access-control-allow-origin" not in refused.headers
        if refused.status_code == 421:
            assert "GLMTTS_ALLOWED_HOSTS" in refused.json()["detail"]
        assert http.post("/v1/echo", content=b"x", headers={"Host": host}).status_code in (400, 421)
        assert http.get("/health", headers={"Host": host}).status_code == 200  # probes send the pod's name or IP
        assert http.get("/ready", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:7860", "localhost:7860", "LOCALHOST", "[::1]:7860", "192.168.1.20:7860"])
def test_ip_addresses_and_localhost_are_served(host):
    with client(make_app()) as http:
        assert http.get("/v1/status", headers={"Host": host}).status_code == 200


def test_configured_and_bound_names_are_served():
    with client(make_app(allowed_hosts=("tts.lan",))) as http:
        assert http.get("/v1/status", headers={"Host": "tts.lan:7860"}).status_code == 200
        assert http.get("/v1/status", headers={"Host": "tts.lan.evil.com"}).status_code == 421
    with client(make_app(host="box.local")) as http:
        assert http.get("/v1/status", headers={"Host": "box.local"}).status_code == 200
    with client(make_app(allowed_hosts=("*",))) as http:
        assert http.get("/v1/status", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},
        {"Origin": OTHER_LOCAL_PORT},
        {"Origin": "null"},
        {"Referer": f"{EVIL}/attack.html"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
    ],
)
def test_writes_from_a_foreign_page_get_403_naming_the_setting(headers):
    with client(make_app()) as http:
        for path in ("/v1/echo", "/gradio_api/queue/join", "/login"):
            refused = http.post(path, content=b"x", headers=headers)
            assert refused.status_code == 403, (path, refused.text)
            assert "GLMTTS_ALLOWED_ORIGINS" in refused.json()["detail"]
        if "Origin" in headers:
            assert headers["Origin"] in http.post("/v1/echo", headers=headers).json()["detail"]


def test_same_origin_pages_sdks_and_allowed_origins_may_write():
    with client(make_app()) as http:
        assert http.post("/v1/echo", content=b"x", headers={"Origin": SELF, "Sec-Fetch-Site": "same-origin"}).status_code == 200
        assert http.post("/v1/echo", content=b"x", headers={"Referer": f"{SELF}/?view=api"}).status_code == 200
        assert http.post("/v1/echo", content=b"x").status_code == 200  # an SDK, curl: no Origin, no Referer
    with client(make_app(allowed_origins=("https://app.example.com",))) as http:
        allowed = http.post("/v1/echo", content=b"x", headers={"Origin": "https://app.example.com"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        assert allowed.headers["access-control-allow-credentials"] == "true"


def test_foreign_pages_may_link_to_the_ui_but_not_load_from_it():
    with client(make_app()) as http:
        link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        assert http.get("/", headers=link).status_code == 200
        assert http.get("/v1/status", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}).status_code == 403
        embedded = {**link, "Sec-Fetch-Dest": "embed"}
        assert http.get("/", headers=embedded).status_code == 403
        assert http.get("/v1/status", headers={"Origin": EVIL}).status_code == 200  # a read: the browser hides the answer


def test_preflights_from_other_origins_get_403_and_allowed_ones_204():
    preflight = {"Origin": OTHER_LOCAL_PORT, "Access-Control-Request-Method": "DELETE"}
    app, _ui = make_ui_app()
    with client(app) as http:
        refused = http.options("/v1/voices/abc", headers=preflight)
        assert refused.status_code == 403 and OTHER_LOCAL_PORT in refused.json()["detail"]
        assert "access-control-allow-origin" not in refused.headers
    app, _ui = make_ui_app(allowed_origins=(OTHER_LOCAL_PORT,))
    with client(app) as http:
        allowed = http.options("/v1/voices/abc", headers={**preflight, "Access-Control-Request-Headers": "x-api-key"})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == OTHER_LOCAL_PORT
        assert allowed.headers["access-control-allow-methods"] == "DELETE"
        assert allowed.headers["access-control-allow-headers"] == "x-api-key"


def test_cors_headers_of_the_app_behind_reach_no_other_origin():
    app, _ui = make_ui_app()
    with client(app) as http:
        own = http.post("/gradio_api/cancel", headers={"Origin": SELF})  # the UI echoes the origin, as Gradio does
        assert own.status_code == 200 and "access-control-allow-origin" not in own.headers
        read = http.get("/gradio_api/startup-events", headers={"Origin": OTHER_LOCAL_PORT})
        assert read.status_code == 200 and not [name for name in read.headers if name.startswith("access-control-")]


def test_with_a_key_everything_but_the_probes_and_the_login_page_needs_it():
    app, ui = make_ui_app(api_key="secret")
    with client(app) as http:
        for method, path in [
            ("GET", "/metrics"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("GET", "/gradio_api/startup-events"),
            ("POST", "/gradio_api/cancel"),
            ("POST", "/gradio_api/queue/join"),
        ]:
            refused = http.request(method, path)
            assert refused.status_code == 401 and "API key is required" in refused.json()["detail"], path
            assert http.request(method, path, headers={"X-API-Key": "secret"}).status_code == 200, path
        assert http.get("/").status_code == 200  # the login form
        assert http.post("/login").status_code == 200
        assert http.get("/health").status_code == 200 and http.get("/ready").status_code == 200

        ui.tokens["token-1"] = "me"  # a login on the UI: its cookie opens the same routes
        assert http.get("/docs", cookies={"access-token-unsecure-cookie-id": "token-1"}).status_code == 200
        http.cookies.clear()
        assert http.get("/docs", cookies={"access-token-cookie-id": "forged"}).status_code == 401
        http.cookies.clear()
        assert http.get("/docs", cookies={"access-token-other-app": "token-1"}).status_code == 401


def test_metrics_take_their_own_token():
    app, _ui = make_ui_app(metrics_token="scrape")
    with client(app) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200
        assert http.get("/v1/status").status_code == 200  # no API key: the rest stays open
    app, _ui = make_ui_app(api_key="secret", metrics_token="scrape")
    with client(app) as http:
        assert http.get("/metrics", headers={"Authorization": "Bearer secret"}).status_code == 200
        assert http.get("/v1/status", headers={"Authorization": "Bearer scrape"}).status_code == 401


def test_the_apps_own_warmup_passes_with_a_key():
    app = FastAPI()
    app.add_middleware(SecurityMiddleware, settings=Settings(api_key="secret"), warmup_token="warm")

    @app.post("/v1/audio/speech")
    def speech():
        return {"spoken": True}

    with client(app) as http:
        assert http.post("/v1/audio/speech").status_code == 401
        assert http.post("/v1/audio/speech", headers={WARMUP_HEADER: "warm"}).status_code == 200


def test_made_up_methods_add_no_metric_series():
    app, _ui = make_ui_app()

    def made_up_requests(http, numbers):
        for n in numbers:
            http.request(f"FOO{n}", "/health")
            http.request("GET", f"/made-up/{n}")

    with client(app) as http:
        made_up_requests(http, range(2))
        http.get("/metrics")  # a scrape counts too
        before = http.get("/metrics").text
        made_up_requests(http, range(2, 1000))
        after = http.get("/metrics").text
    assert len(after.splitlines()) == len(before.splitlines())  # the same series, counting higher
    assert 'method="other"' in after and 'route="other"' in after and "FOO" not in after


def test_websocket_handshakes_follow_the_same_policy():
    from starlette.websockets import WebSocket, WebSocketDisconnect

    app = make_app(api_key="secret")

    @app.websocket("/ws")
    async def echo(socket: WebSocket):
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    keyed = {"Host": SERVER, "X-API-Key": "secret"}  # the test client's handshakes name "testserver" unless told
    with client(app) as http:
        with http.websocket_connect("/ws", headers={**keyed, "Origin": SELF}) as socket:
            assert socket.receive_text() == "hello"
        for refused in ({**keyed, "Origin": EVIL}, {**keyed, "Host": "evil.example"}, {"Host": SERVER}):
            with pytest.raises(WebSocketDisconnect), http.websocket_connect("/ws", headers=refused) as socket:
                socket.receive_text()


def test_an_allowed_origin_reads_the_errors_too():
    with client(make_app(api_key="secret", allowed_origins=("https://app.example.com",))) as http:
        refused = http.get("/v1/status", headers={"Origin": "https://app.example.com"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example.com"
