"""The real app process started with an API key, a rate limit and a short time limit per request:
the API and the UI refuse strangers, each key has its own budget, and long work stops at the limit."""

import re

import httpx
import pytest

from .conftest import launched_app

KEYS = ("alpha-key", "beta-key")
METRICS_TOKEN = "scrape-token"
# Routes that answered without the key before: with one set, only /health, /ready and the login form stay open.
CLOSED_WITHOUT_KEY = (
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/docs-assets/swagger-ui-bundle.js"),
    ("GET", "/openapi.json"),
    ("GET", "/gradio_api/startup-events"),
    ("POST", "/gradio_api/cancel"),
    ("POST", "/gradio_api/reset"),
    ("POST", "/gradio_api/upload"),
    ("GET", "/gradio_api/file=/etc/hostname"),
    ("GET", "/gradio_api/info"),
)
RATE_LIMIT = 12  # requests a minute per client
# Long enough for the first segment (two sentences: 1.2 s here alone, twice that beside the other test
# worker) to arrive streamed before it.
TIME_LIMIT_S = 4
# Minutes of speech (194 s measured): far more than a 4 s budget can synthesize on any machine.
LONG_TEXT = " ".join(f"Part {n}: the committee met on Tuesday to review the results, and all agreed to go on." for n in range(40))
MIN_FULL_AUDIO_S = 40 * 4.0
PCM_BYTES_PER_S = 24000 * 2
DEFAULT_OPTIONS = [42, "ras", 25, 0.8, 1.0, 1.0, 24000, True, False]  # seed ... use_phoneme, as the UI sends them


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("secured-outputs")
    args = ("--rate-limit", str(RATE_LIMIT), "--request-timeout", str(TIME_LIMIT_S))
    with launched_app(outputs, *args, GLMTTS_API_KEY=",".join(KEYS), GLMTTS_METRICS_TOKEN=METRICS_TOKEN) as (url, _codes):
        yield url


def speech(url: str, body: dict, key: str | None = None, header: str = "authorization") -> httpx.Response:
    headers = {} if key is None else {header: f"Bearer {key}" if header == "authorization" else key}
    return httpx.post(f"{url}/v1/audio/speech", json={"response_format": "wav", **body}, headers=headers, timeout=120)


def test_probes_stay_open_and_the_api_wants_a_valid_key(secured):
    assert httpx.get(f"{secured}/health").status_code == 200 and httpx.get(f"{secured}/ready").status_code == 200

    missing = speech(secured, {"input": "Hello."})
    assert missing.status_code == 401 and "API key is required" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = speech(secured, {"input": "Hello."}, key="not-a-key")
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
    assert httpx.get(f"{secured}/v1/voices").status_code == 401

    spoken = speech(secured, {"input": "Hello with a key."}, key=KEYS[0])
    assert spoken.status_code == 200 and spoken.content[:4] == b"RIFF"
    assert httpx.get(f"{secured}/v1/status", headers={"x-api-key": KEYS[1]}).status_code == 200


def test_everything_but_the_probes_and_the_login_form_needs_the_key(secured):
    for method, path in CLOSED_WITHOUT_KEY:
        refused = httpx.request(method, f"{secured}{path}")
        assert refused.status_code == 401 and "API key is required" in refused.json()["detail"], (path, refused.text)
    keyed = {"authorization": f"Bearer {KEYS[0]}"}
    for path in ("/metrics", "/docs", "/openapi.json", "/gradio_api/startup-events"):
        assert httpx.get(f"{secured}{path}", headers=keyed).status_code == 200, path
    scrape = {"authorization": f"Bearer {METRICS_TOKEN}"}
    assert httpx.get(f"{secured}/metrics", headers=scrape).status_code == 200  # Prometheus' bearer token
    assert httpx.get(f"{secured}/v1/status", headers=scrape).status_code == 401  # and nothing else

    login_form = httpx.get(f"{secured}/")
    assert login_form.status_code == 200
    script = re.search(r'src="[^"]*?(/assets/[^"]+\.js)"', login_form.text).group(1)
    assert httpx.get(f"{secured}{script}").status_code == 200 and httpx.get(f"{secured}/theme.css").status_code == 200

    with httpx.Client(base_url=secured) as browser:  # the page's login cookie stands for the key
        assert browser.post("/login", data={"username": "me", "password": KEYS[1]}).status_code == 200
        assert browser.get("/docs").status_code == 200 and browser.get("/gradio_api/startup-events").status_code == 200
        assert browser.post("/gradio_api/reset", json={"event_id": "none"}).status_code != 401


def test_the_ui_asks_for_the_key_as_its_password(secured):
    from gradio_client import Client

    assert httpx.get(f"{secured}/config").status_code == 401
    refused = httpx.post(f"{secured}/login", data={"username": "me", "password": "not-a-key"})
    assert refused.status_code == 400, refused.text
    ui = Client(secured + "/", auth=("me", KEYS[0]), verbose=False)
    assert "<|" in ui.predict("你好", api_name="/to_phonemes")


def test_each_key_has_its_own_rate_limit(secured):
    statuses = [speech(secured, {"input": ""}, key=KEYS[1]).status_code for _ in range(RATE_LIMIT + 8)]
    first_refused = statuses.index(429)  # a refill may let one or two more through on a slow machine
    assert first_refused >= RATE_LIMIT and set(statuses[:first_refused]) == {400}, statuses
    refused = speech(secured, {"input": ""}, key=KEYS[1])
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert f"Rate limit of {RATE_LIMIT} requests a minute" in refused.json()["detail"]
    assert speech(secured, {"input": "Another key still speaks."}, key=KEYS[0]).status_code == 200


def test_long_work_stops_at_the_time_limit_and_the_server_goes_on(secured):
    whole = speech(secured, {"input": LONG_TEXT, "stream": False}, key=KEYS[0])
    assert whole.status_code == 504 and f"{TIME_LIMIT_S} s time limit" in whole.json()["detail"]

    body = {"input": LONG_TEXT, "stream": True, "response_format": "pcm"}
    headers = {"authorization": f"Bearer {KEYS[0]}"}
    with httpx.stream("POST", f"{secured}/v1/audio/speech", json=body, headers=headers, timeout=120) as streamed:
        assert streamed.status_code == 200
        received_s = sum(len(chunk) for chunk in streamed.iter_raw()) / PCM_BYTES_PER_S
    assert 0 < received_s < 0.9 * MIN_FULL_AUDIO_S  # it ended early, after some audio

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    ui = Client(secured + "/", auth=("me", KEYS[0]), verbose=False)
    with pytest.raises(AppError, match="time limit"):
        ui.predict(LONG_TEXT, None, "libri_367", "", *DEFAULT_OPTIONS, api_name="/synthesize")
    assert speech(secured, {"input": "Still serving."}, key=KEYS[0]).status_code == 200
