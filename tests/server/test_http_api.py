"""The app as a process: readiness, the OpenAI-shaped speech API, and bad input."""

import io
import re
import statistics
import threading

import httpx
import pytest
import soundfile as sf

from glmtts.encoders import FORMATS

from .conftest import speak


def test_ready_flips_from_503_to_200(app_server):
    assert app_server.ready_codes[0] == 503, "the port should open before warm-up ends"
    assert app_server.ready_codes[-1] == 200
    assert httpx.get(f"{app_server.url}/health").json() == {"status": "up"}
    assert httpx.get(f"{app_server.url}/ready").json()["engine"] == "embedded"


def test_first_request_is_as_fast_as_warm_ones(app_server):
    warm = statistics.median(app_server.warm_latencies_s)
    ratio = app_server.first_latency_s / warm
    print(f"first {app_server.first_latency_s:.3f} s, warm median {warm:.3f} s, ratio {ratio:.2f}")
    assert ratio <= 3.0  # a generous bound against a cold path; bench/bench_service.py measures the ratio


@pytest.mark.parametrize(
    ("text", "voice", "rate"),
    [("Hello from the speech API.", None, 24000), ("你好，欢迎使用语音合成。", "libri_1688", 24000)],
)
def test_speech_returns_playable_wav(app_server, text, voice, rate):
    response = speak(app_server.url, text, voice=voice, response_format="wav")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio, sample_rate = sf.read(io.BytesIO(response.content))
    assert sample_rate == rate
    assert 0.8 < len(audio) / sample_rate < 8
    assert abs(audio).max() > 0.05


@pytest.mark.parametrize("fmt", ["mp3", "wav"])
def test_plain_requests_stream_and_stream_false_gives_a_whole_file(app_server, fmt):
    """As OpenAI's API: chunked by default, with no length and no RTF (known at the end only); `"stream": false`
    gives one file with its Content-Length and X-RTF. Both say their segments and timings."""
    streamed = speak(app_server.url, "Two sentences here. And a second one.", response_format=fmt)
    whole = speak(app_server.url, "Two sentences here. And a second one.", response_format=fmt, stream=False)
    assert streamed.status_code == whole.status_code == 200, (streamed.text, whole.text)
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.headers and "x-rtf" not in streamed.headers
    assert whole.headers["content-length"] == str(len(whole.content)) and "transfer-encoding" not in whole.headers
    assert 0 < float(whole.headers["x-rtf"]) < 5
    for response in (streamed, whole):
        assert response.headers["content-type"] == FORMATS[fmt].media_type
        assert response.headers["x-segments"] == whole.headers["x-segments"] and response.headers["x-sample-rate"] == "24000"
        assert "synthesis;dur=" in response.headers["server-timing"]
    assert "encode;dur=" in whole.headers["server-timing"]
    streamed_audio, _ = sf.read(io.BytesIO(streamed.content))
    whole_audio, _ = sf.read(io.BytesIO(whole.content))
    assert abs(len(streamed_audio) - len(whole_audio)) < 0.05 * len(whole_audio)


def test_flac_and_pcm_formats(app_server):
    flac = speak(app_server.url, "Format check.", response_format="flac")
    assert flac.status_code == 200 and sf.info(io.BytesIO(flac.content)).format == "FLAC"
    pcm = speak(app_server.url, "Format check.", response_format="pcm")
    assert pcm.status_code == 200 and len(pcm.content) % 2 == 0 and len(pcm.content) > 24000


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": ""}, 400, "empty"),
        ({"input": "   \n\t "}, 400, "empty"),
        ({"input": "😀🎉🚀"}, 400, ""),
        ({"input": "hello", "voice": "nobody"}, 400, "There is no voice"),
        ({"input": "hello", "voice": "../../etc/passwd"}, 400, "There is no voice"),
        ({"input": "hello", "response_format": "exe"}, 400, "response_format"),
        ({"input": "hello", "speed": 10}, 400, "speed must be a number from 0.25 to 4"),
        ({"input": 12}, 422, ""),
        ({"input": "x" * 20001}, 400, "the limit is 20000"),
        ({"voice": "libri_367"}, 400, "Missing required parameter: 'input'."),
    ],
)
def test_bad_requests_get_clear_4xx(app_server, body, status, message):
    response = httpx.post(f"{app_server.url}/v1/audio/speech", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert message.lower() in response.text.lower()
    assert httpx.get(f"{app_server.url}/health").status_code == 200


def test_status_lists_voices_and_memory(app_server):
    status = httpx.get(f"{app_server.url}/v1/status").json()
    assert status["ready"] is True and status["device"] == "cpu"
    assert set(status["builtin_voices"]) >= {"libri_367", "libri_1688"}
    assert status["memory"]["rss_mib"] > 100


@pytest.mark.parametrize("text", ["The same seed gives the same audio.", "同一个种子，同样的声音。", "Seed 42 说两遍 the same."])
def test_same_seed_same_bytes_even_with_other_requests_running(app_server, text):
    body = {"input": text, "seed": 7, "response_format": "wav"}
    alone = httpx.post(f"{app_server.url}/v1/audio/speech", json=body, timeout=300)
    others = [
        threading.Thread(target=speak, args=(app_server.url, f"Another request, number {n}, in between.")) for n in range(2)
    ]
    for thread in others:
        thread.start()
    crowded = httpx.post(f"{app_server.url}/v1/audio/speech", json=body, timeout=300)
    for thread in others:
        thread.join()
    assert alone.status_code == crowded.status_code == 200
    assert alone.content == crowded.content
    other_seed = httpx.post(f"{app_server.url}/v1/audio/speech", json={**body, "seed": 8}, timeout=300)
    if any("a" <= c.lower() <= "z" for c in text):  # the English voice samples noise; Mandarin is deterministic by nature
        assert other_seed.content != alone.content


def test_metrics_are_prometheus_text(app_server):
    speak(app_server.url, "Counted.")
    httpx.post(f"{app_server.url}/v1/audio/speech", json={"input": ""}, timeout=60)
    text = httpx.get(f"{app_server.url}/metrics").text
    assert 'glmtts_http_requests_total{method="POST",route="/v1/audio/speech",status="200"}' in text
    assert 'glmtts_http_requests_total{method="POST",route="/v1/audio/speech",status="400"}' in text
    for name in ("glmtts_synthesis_rtf_bucket", "glmtts_http_request_seconds_bucket", "glmtts_queue_waiting",
                 "glmtts_ready 1.0", 'glmtts_memory_mib{kind="rss_mib"}', "glmtts_batch_items_pending"):  # fmt: skip
        assert name in text, name


def test_open_webui_lists_our_voices_and_models(app_server):
    """Open WebUI's TTS settings (OpenAI engine, base URL .../v1) replayed: `GET {base}/audio/voices`, read as
    `{voice["id"]: voice["name"]}`, and `GET {base}/audio/models`, read as `data["models"]`; no key sent."""
    base = f"{app_server.url}/v1"
    voices_response = httpx.get(f"{base}/audio/voices", timeout=30)
    assert voices_response.status_code == 200, voices_response.text
    voices = {voice["id"]: voice["name"] for voice in voices_response.json()["voices"]}
    listing = httpx.get(f"{base}/voices", timeout=30).json()
    assert set(voices) == {v["id"] for v in listing["voices"]} | {a["id"] for a in listing["aliases"]}
    assert voices["libri_367"] == "libri_367" and voices["alloy"].startswith("alloy (libri_")
    models = httpx.get(f"{base}/audio/models", timeout=30).json()["models"]
    assert [model["id"] for model in models] == [model["id"] for model in httpx.get(f"{base}/models").json()["data"]]
    for voice in ("libri_1688", "alloy"):  # what Open WebUI then sends: every listed name speaks
        assert speak(app_server.url, "Listed, then spoken.", voice=voice, model=models[0]["id"]).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/audio/nothing", 404, None),
        ("PUT", "/v1/audio/voices", 405, "GET"),
        ("GET", "/v1/voices/x/y", 404, None),
    ],
)
def test_unknown_routes_and_methods_under_v1_carry_the_error_object(app_server, method, path, status, allow):
    response = httpx.request(method, f"{app_server.url}{path}", timeout=30)
    assert response.status_code == status and response.headers.get("allow") == allow, response.text
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error" and body["detail"] == body["error"]["message"]
    assert f"({method} {path})" in body["detail"]


def test_unknown_v1_paths_are_one_metric_series(app_server):
    for n in range(3):
        httpx.get(f"{app_server.url}/v1/made-up-{n}", timeout=30)
    text = httpx.get(f"{app_server.url}/metrics").text
    assert 'route="other"' in text and "made-up" not in text


def test_the_api_page_loads_nothing_from_another_site(app_server):
    """/docs serves Swagger UI's script and styles itself: an offline machine shows the page, and no
    other site's script runs on this origin."""
    page = httpx.get(f"{app_server.url}/docs", timeout=30)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"""(?:src|href|url)\s*[=:]\s*['"](?:https?:)?//""", page.text), page.text
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert {asset.rsplit(".", 1)[-1] for asset in assets} == {"js", "css", "png"}
    for asset in assets:
        served = httpx.get(f"{app_server.url}{asset}", timeout=30)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert httpx.get(f"{app_server.url}/openapi.json", timeout=30).json()["info"]["title"]
