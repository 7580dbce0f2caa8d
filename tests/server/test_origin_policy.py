"""The cross-origin and Host suite, against the real app process in its default configuration (no key):
what a web page in the user's browser, DNS rebinding or a forged proxy header could do, it cannot."""

import httpx
import pytest

from .conftest import ROOT, launched_app

RATE_LIMIT = 20  # requests a minute per client, for the proxy-header test at the end
EVIL = "http://evil.example"
OTHER_LOCAL_PORT = "http://localhost:3000"
PROMPT = ROOT / "examples" / "prompt" / "libri_1998.flac"
MADE_UP_METHODS = 1000
UI_WRITES = (
    "/gradio_api/queue/join",
    "/gradio_api/upload",
    "/gradio_api/cancel",
    "/gradio_api/reset",
    "/gradio_api/run/to_phonemes",
    "/gradio_api/call/to_phonemes",
    "/login",
)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with launched_app(tmp_path_factory.mktemp("origin-outputs"), "--rate-limit", str(RATE_LIMIT)) as (app_url, _codes):
        yield app_url


def voice_ids(url: str) -> set[str]:
    return {voice["id"] for voice in httpx.get(f"{url}/v1/voices").json()["voices"]}


def job_ids(url: str) -> set[str]:
    return {job["id"] for job in httpx.get(f"{url}/v1/batch").json()["jobs"]}


def no_cors(response: httpx.Response) -> bool:
    return not [name for name in response.headers if name.lower().startswith("access-control-allow-")]


def test_writes_from_another_site_are_refused_and_change_nothing(url):
    voices, jobs = voice_ids(url), job_ids(url)
    evil = {"Origin": EVIL}
    files = {"file": (PROMPT.name, PROMPT.read_bytes(), "audio/flac")}
    created = httpx.post(f"{url}/v1/voices", files=files, data={"name": "evil"}, headers=evil, timeout=60)
    assert created.status_code == 403, created.text
    assert EVIL in created.json()["detail"] and "GLMTTS_ALLOWED_ORIGINS" in created.json()["detail"]
    batch = {"jsonl": '{"uttid": "a", "prompt_text": "", "prompt_speech": "libri_1998", "syn_text": "Hi."}'}
    assert httpx.post(f"{url}/v1/batch", json=batch, headers=evil, timeout=60).status_code == 403
    assert httpx.post(f"{url}/v1/batch/20261206-195606_job/cancel", headers=evil).status_code == 403
    from_a_link = {"Referer": f"{EVIL}/page.html"}  # a form post from a browser that sent no Origin
    assert httpx.post(f"{url}/v1/voices", files=files, data={"name": "evil"}, headers=from_a_link, timeout=60).status_code == 403
    assert (voice_ids(url), job_ids(url)) == (voices, jobs)


def test_other_local_ports_get_no_cors_and_cannot_delete(url):
    preflight = {"Origin": OTHER_LOCAL_PORT, "Access-Control-Request-Method": "DELETE"}
    answered = httpx.options(f"{url}/v1/voices/libri_1998", headers=preflight)
    assert answered.status_code == 403 and no_cors(answered)
    assert httpx.delete(f"{url}/v1/voices/anyone-00000000", headers={"Origin": OTHER_LOCAL_PORT}).status_code == 403
    # Gradio's own middleware echoes localhost origins: nothing of it reaches the other page.
    config = httpx.get(f"{url}/config", headers={"Origin": OTHER_LOCAL_PORT})
    assert config.status_code == 200 and no_cors(config)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:7860", "127.0.0.1.evil.com", "localhost.evil.com"])
def test_dns_rebinding_is_refused_with_421(url, host):
    status = httpx.get(f"{url}/v1/status", headers={"Host": host})
    assert status.status_code == 421 and "GLMTTS_ALLOWED_HOSTS" in status.json()["detail"]
    files = {"file": (PROMPT.name, PROMPT.read_bytes(), "audio/flac")}
    assert httpx.post(f"{url}/v1/voices", files=files, data={"name": "rebound"}, headers={"Host": host}).status_code == 421
    echoed = httpx.get(f"{url}/config", headers={"Host": host, "Origin": f"http://{host}"})
    assert echoed.status_code == 421 and no_cors(echoed)
    assert httpx.get(f"{url}/health", headers={"Host": host}).status_code == 200  # probes name the pod as they like


@pytest.mark.parametrize("path", UI_WRITES)
def test_the_ui_api_refuses_other_sites(url, path):
    refused = httpx.post(f"{url}{path}", json={}, headers={"Origin": EVIL})
    assert refused.status_code == 403, refused.text
    assert httpx.post(f"{url}{path}", json={}, headers={"Origin": OTHER_LOCAL_PORT}).status_code == 403


def test_the_page_itself_and_clients_without_a_page_keep_working(url):
    from gradio_client import Client

    own_page = {"Origin": url, "Referer": f"{url}/", "Sec-Fetch-Site": "same-origin"}
    assert httpx.post(f"{url}/gradio_api/queue/join", json={}, headers=own_page).status_code == 422  # reached Gradio
    assert httpx.post(f"{url}/v1/audio/speech", json={"input": ""}, headers=own_page).status_code == 400  # reached the route
    assert httpx.get(f"{url}/v1/status", headers={"Host": f"localhost:{url.rsplit(':', 1)[1]}"}).status_code == 200
    assert "<|" in Client(url + "/", verbose=False).predict("你好", api_name="/to_phonemes")  # an SDK: no Origin
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert httpx.get(f"{url}/", headers=link).status_code == 200  # a link from another site opens the page


def test_made_up_methods_leave_metrics_bounded(url):
    with httpx.Client(base_url=url) as http:
        http.request("FOO0", "/health")
        http.get("/metrics")
        before = http.get("/metrics").text
        for n in range(1, MADE_UP_METHODS):
            http.request(f"FOO{n}", "/health")
        after = http.get("/metrics").text
    assert len(after.splitlines()) == len(before.splitlines()), (len(before), len(after))
    assert "FOO" not in after and 'method="other"' in after


def test_a_forwarded_address_does_not_escape_the_rate_limit(url):
    statuses = [
        httpx.post(
            f"{url}/v1/audio/speech", json={"input": ""}, headers={"X-Forwarded-For": f"10.0.{n // 250}.{n % 250}"}
        ).status_code
        for n in range(RATE_LIMIT + 5)
    ]
    assert 429 in statuses and set(statuses) <= {400, 429}, statuses
