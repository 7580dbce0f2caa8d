"""API key, rate limit and body limit middleware, on a tiny app (no models)."""

import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from glmtts.http.security import RateLimiter, SecurityMiddleware, gradio_auth, parse_api_keys, presented_key, warn_if_exposed
from glmtts.settings import Settings


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(clock=None, **settings) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SecurityMiddleware, settings=Settings(**settings), clock=clock or FakeClock())

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
    return TestClient(app, client=(address, 5555))


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
