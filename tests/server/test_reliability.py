"""Bad input through the HTTP API and the UI gets a clear 4xx or a visible message, and the server keeps
serving; then a bounded concurrent soak on loopback ends with no failed request."""

import io
import json
import statistics
import threading
import time

import httpx
import librosa
import numpy as np
import pytest
import soundfile as sf

from ..decoding import decode
from .conftest import RATE, ROOT, speak

TOO_BIG = 25 * 1024 * 1024  # over the default 21 MB request body limit
DEFAULT_OPTIONS = [42, "ras", 25, 0.8, 1.0, 1.0, 24000, True, False]  # seed ... use_phoneme, as the UI sends them
JSONL_MODE = "JSONL (GLM-TTS format)"
PROMPT = ROOT / "examples" / "prompt" / "libri_367.flac"


def post(url: str, path: str = "/v1/audio/speech", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=120, **kwargs)


def raw_json(text: str) -> dict:
    return {"content": text.encode("utf-8", "surrogatepass"), "headers": {"content-type": "application/json"}}


def chunked_zeros(total: int):
    block = b"\0" * (1024 * 1024)
    for _ in range(total // len(block)):
        yield block


# ----------------------------------------------------------------------------- the speech API
SPEECH_CASES = [
    ("empty text", {"json": {"input": ""}}, 400, "empty"),
    ("whitespace only", {"json": {"input": " \n\t\r "}}, 400, "empty"),
    ("emoji only", {"json": {"input": "😀🎉🚀"}}, 400, "nothing to speak"),
    ("zero-width only", {"json": {"input": "\u200b\u200d\ufeff"}}, 400, "nothing to speak"),
    ("punctuation only", {"json": {"input": "。。。！！？…"}}, 400, "nothing to speak"),
    ("control characters only", {"json": {"input": "\x00\x01\x02\x07\x1b"}}, 400, "nothing to speak"),
    ("100,000 characters", {"json": {"input": "a" * 100_000}}, 400, "20000"),
    ("Hangul only", {"json": {"input": "안녕하세요 여러분"}}, 400, "hangul"),
    ("kana only", {"json": {"input": "こんにちは、ありがとう"}}, 400, "kana"),
    ("Arabic only", {"json": {"input": "مرحبا بالعالم"}}, 400, "arabic"),
    ("input null", {"json": {"input": None}}, 422, "valid string"),
    ("input a number", {"json": {"input": 12}}, 422, "valid string"),
    ("input a list", {"json": {"input": ["hello"]}}, 422, "valid string"),
    ("input missing", {"json": {"voice": "libri_367"}}, 400, "missing required parameter: 'input'"),
    ("lone surrogate", raw_json('{"input": "\\ud800"}'), 400, "nothing to speak"),
    ("unknown voice", {"json": {"input": "hello", "voice": "nobody"}}, 400, "there is no voice 'nobody'"),
    ("voice as a relative path", {"json": {"input": "hello", "voice": "../../etc/passwd"}}, 400, "there is no voice"),
    ("voice as an absolute path", {"json": {"input": "hello", "voice": "/etc/passwd"}}, 400, "there is no voice"),
    ("voice with a NUL byte", {"json": {"input": "hello", "voice": "libri_367\x00"}}, 400, "there is no voice"),
    ("voice of 5,000 characters", {"json": {"input": "hello", "voice": "v" * 5000}}, 400, "there is no voice"),
    ("voice a number", {"json": {"input": "hello", "voice": 367}}, 422, "valid string"),
    ("unknown format", {"json": {"input": "hello", "response_format": "exe"}}, 400, "response_format"),
    ("unknown stream format", {"json": {"input": "hello", "stream_format": "video"}}, 400, "stream_format"),
    ("speed too high", {"json": {"input": "hello", "speed": 10}}, 400, "speed must be a number from"),
    ("speed zero", {"json": {"input": "hello", "speed": 0}}, 400, "speed must be a number from"),
    ("speed a word", {"json": {"input": "hello", "speed": "fast"}}, 422, "valid number"),
    ("speed NaN", raw_json('{"input": "hello", "speed": NaN}'), 400, "speed must be a number from"),
    ("negative seed", {"json": {"input": "hello", "seed": -1}}, 400, "from 0 to 4294967295"),
    ("seed beyond 32 bits", {"json": {"input": "hello", "seed": 2**64}}, 400, "from 0 to 4294967295"),
    ("fractional seed", {"json": {"input": "hello", "seed": 1.5}}, 400, "whole number"),
    ("seed a word", {"json": {"input": "hello", "seed": "abc"}}, 422, "seed"),
    ("unsupported sample rate", {"json": {"input": "hello", "sample_rate": 8000}}, 400, "sample_rate 8000"),
    ("sample rate a word", {"json": {"input": "hello", "sample_rate": "high"}}, 422, "integer"),
    ("stream not a boolean", {"json": {"input": "hello", "stream": "maybe"}}, 422, "boolean"),
    ("malformed JSON", raw_json('{"input": "hello"'), 400, "not valid json: expecting ',' delimiter at line 1 column 18"),
    ("JSON array body", {"json": ["hello"]}, 422, "dictionary"),
    ("empty body", {"headers": {"content-type": "application/json"}}, 400, "missing request body"),
    ("text/plain body", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 422, ""),
    ("oversized body", {"content": b"\0" * TOO_BIG, "headers": {"content-type": "application/json"}}, 413, "limit"),
    (
        "oversized chunked body",
        {"content": chunked_zeros(TOO_BIG), "headers": {"content-type": "application/json"}},
        413,
        "limit",
    ),
]


@pytest.mark.parametrize(("kwargs", "status", "message"), [c[1:] for c in SPEECH_CASES], ids=[c[0] for c in SPEECH_CASES])
def test_bad_speech_requests_get_a_clear_4xx(app_server, kwargs, status, message):
    response = post(app_server.url, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail, "the client is told what was wrong"
    assert message in json.dumps(detail, ensure_ascii=False).lower()
    assert httpx.get(f"{app_server.url}/health").status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        "hello\x00 world\x07, once \x1b[1mmore\x1b[0m.",
        "\ufeff\u202eHello\u202c there.",
        "第1章：Hello，世界！Ｆｕｌｌ ｗｉｄｔｈ.",
    ],
    ids=["control characters inside words", "BOM and bidi marks", "mixed scripts and full width"],
)
def test_odd_but_speakable_text_is_spoken(app_server, text):
    response = speak(app_server.url, text)
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == RATE and len(audio) / rate > 0.3 and np.abs(audio).max() > 0.05


# ----------------------------------------------------------------------------- saved voices and batch jobs


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()


def corrupt_flac() -> bytes:
    return PROMPT.read_bytes()[:200] + bytes(range(256)) * 40


def batch_line(**fields) -> str:
    return json.dumps(
        {"uttid": "u1", "prompt_text": "", "prompt_speech": "examples/prompt/libri_367.flac", "syn_text": "Hi.", **fields}
    )


V1_CASES = [
    ("voice: empty file", "/v1/voices", {"files": {"file": ("p.wav", b"")}, "data": {"name": "e"}}, "empty"),
    (
        "voice: not audio",
        "/v1/voices",
        {"files": {"file": ("p.wav", b"not audio at all " * 20)}, "data": {"name": "n"}},
        "could not be decoded",
    ),
    (
        "voice: corrupt flac",
        "/v1/voices",
        {"files": {"file": ("p.flac", corrupt_flac())}, "data": {"name": "c"}},
        "could not be decoded",
    ),
    (
        "voice: silent",
        "/v1/voices",
        {"files": {"file": ("p.wav", wav_bytes(np.zeros(4 * RATE), RATE))}, "data": {"name": "s"}},
        "silent",
    ),
    ("voice: too short", "/v1/voices", {"files": {"file": ("p.wav", wav_bytes(np.full(RATE // 10, 0.3), RATE))}}, "at least 1 s"),
    ("voice: no file field", "/v1/voices", {"data": {"name": "x"}}, "file"),
    ("voice: JSON instead of a form", "/v1/voices", {"json": {"file": "x"}}, "file"),
    ("batch: malformed JSONL", "/v1/batch", {"json": {"jsonl": "{not json\n[1, 2]"}}, "not valid json"),
    (
        "batch: path outside the allowed folders",
        "/v1/batch",
        {"json": {"jsonl": batch_line(prompt_speech="../../etc/passwd")}},
        "outside",
    ),
    ("batch: absolute path", "/v1/batch", {"json": {"jsonl": batch_line(prompt_speech="/etc/passwd")}}, "outside"),
    ("batch: jsonl not a string", "/v1/batch", {"json": {"jsonl": 5}}, "string"),
    ("batch: body not JSON", "/v1/batch", raw_json("nope"), "json"),
    ("batch: wrong content type", "/v1/batch", {"content": b"x", "headers": {"content-type": "text/plain"}}, "multipart"),
    ("batch: huge JSONL", "/v1/batch", {"json": {"jsonl": "\n".join([batch_line(syn_text="x" * 300)] * 8000)}}, "limit"),
]


@pytest.mark.parametrize(("path", "kwargs", "message"), [c[1:] for c in V1_CASES], ids=[c[0] for c in V1_CASES])
def test_bad_voice_and_batch_requests_get_a_clear_4xx(app_server, path, kwargs, message):
    response = post(app_server.url, path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert message in json.dumps(response.json()["detail"], ensure_ascii=False).lower()
    assert httpx.get(f"{app_server.url}/health").status_code == 200


# ----------------------------------------------------------------------------- the UI, through Gradio's API
@pytest.fixture(scope="module")
def ui(app_server):
    from gradio_client import Client

    return Client(app_server.url + "/", verbose=False)


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory) -> dict[str, str]:
    """Prompt files that are bad in every way a user can make them (noise included), plus two odd but usable ones."""
    folder = tmp_path_factory.mktemp("prompts")
    speech, rate = sf.read(PROMPT, dtype="float32")
    files = {
        "not audio": ("prompt.wav", b"this is not audio at all " * 40),
        "empty": ("empty.wav", b""),
        "corrupt": ("corrupt.flac", corrupt_flac()),
        "silent": ("silent.wav", wav_bytes(np.zeros(4 * RATE, dtype=np.float32), RATE)),
        "too short": ("short.wav", wav_bytes((0.3 * np.sin(np.arange(RATE // 6) / 5)).astype(np.float32), RATE)),
        "garbage samples": ("garbage.wav", wav_bytes(np.random.default_rng(0).uniform(-1, 1, 3 * RATE).astype(np.float32), RATE)),
    }
    paths = {}
    for name, (filename, data) in files.items():
        (folder / filename).write_bytes(data)
        paths[name] = str(folder / filename)
    # One hour at 8 kHz: the real prompt, then silence; small as FLAC, cut to 30 s on reading.
    hour = np.zeros(8000 * 3600, dtype=np.float32)
    low = librosa.resample(speech, orig_sr=rate, target_sr=8000)
    hour[: len(low)] = low
    sf.write(folder / "hour.flac", hour, 8000, subtype="PCM_16")
    paths["one hour"] = str(folder / "hour.flac")
    high = librosa.resample(speech, orig_sr=rate, target_sr=96000)
    sf.write(folder / "stereo96k.wav", np.stack([high, 0.7 * high], axis=1), 96000, subtype="PCM_24")
    paths["96 kHz stereo"] = str(folder / "stereo96k.wav")
    return paths


def ui_error(ui, api_name: str, *args) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        ui.predict(*args, api_name=api_name)
    return str(caught.value)


def options(**changes) -> list:
    values = dict(
        zip(["seed", "sampling", "top_k", "top_p", "temperature", "speed", "rate", "cache", "phoneme"], DEFAULT_OPTIONS)
    )
    values.update(changes)
    return list(values.values())


UI_TEXT_CASES = [
    ("empty text", ["", None, "libri_367", "", *options()], "empty"),
    ("whitespace only", ["  \n ", None, "libri_367", "", *options()], "empty"),
    ("emoji only", ["😀🎉", None, "libri_367", "", *options()], "nothing to speak"),
    ("control characters only", ["\x00\x01\x1b", None, "libri_367", "", *options()], "nothing to speak"),
    ("100,000 characters", ["a" * 100_000, None, "libri_367", "", *options()], "limit is 20000"),
    ("unknown voice", ["hello", None, "nobody", "", *options()], "there is no voice 'nobody'"),
    ("voice as a path", ["hello", None, "../../etc/passwd", "", *options()], "there is no voice"),
    ("speed out of range", ["hello", None, "libri_367", "", *options(speed=5)], "greater than maximum"),
    ("sample rate not offered", ["hello", None, "libri_367", "", *options(rate=8000)], "not in the list of choices"),
    ("negative seed", ["hello", None, "libri_367", "", *options(seed=-1)], "from 0 to 4294967295"),
    ("no seed", ["hello", None, "libri_367", "", *options(seed=None)], "give a seed"),
    ("Hangul only", ["안녕하세요", None, "libri_367", "", *options()], "hangul"),
]


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in UI_TEXT_CASES], ids=[c[0] for c in UI_TEXT_CASES])
def test_ui_bad_text_and_settings_show_a_message(ui, args, message):
    assert message in ui_error(ui, "/synthesize", *args).lower()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not audio", "could not be decoded"),
        ("empty", "empty"),
        ("corrupt", "could not be decoded"),
        ("silent", "silent"),
        ("too short", "at least 1 s"),
        ("garbage samples", "voiced speech"),
    ],
)
def test_ui_bad_prompt_files_show_a_message(ui, prompt_files, name, message):
    from gradio_client import handle_file

    assert message in ui_error(ui, "/synthesize", "Hello.", handle_file(prompt_files[name]), "libri_367", "", *options()).lower()


@pytest.mark.parametrize("name", ["one hour", "96 kHz stereo"])
def test_ui_odd_prompt_files_still_give_speech(ui, prompt_files, name):
    from gradio_client import handle_file

    *_, status, _normalized = ui.predict(
        "Hello there.", handle_file(prompt_files[name]), "libri_367", "", *options(), api_name="/synthesize"
    )
    assert status.startswith("Done"), status


def test_ui_refuses_files_that_were_not_uploaded(app_server):
    """A hand-made request naming a server path must not make the server read that file."""
    for path in ["/etc/passwd", str(PROMPT)]:
        file_data = {"path": path, "meta": {"_type": "gradio.FileData"}}
        event = httpx.post(
            f"{app_server.url}/gradio_api/call/synthesize", json={"data": ["Hello.", file_data, "libri_367", "", *options()]}
        ).json()["event_id"]
        events = httpx.get(f"{app_server.url}/gradio_api/call/synthesize/{event}", timeout=60).text
        assert "event: error" in events and "not uploaded by a user" in events, events


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def batch_args(file, mode: str = JSONL_MODE) -> list:
    return [file, mode, None, "libri_367", "", "", *options()]


def test_ui_bad_batch_files_show_a_message(ui, tmp_path):
    from gradio_client import handle_file

    huge = "\n".join([batch_line(syn_text="x" * 300)] * 8000).encode()
    cases = [
        (None, JSONL_MODE, "choose a batch file"),
        (write(tmp_path, "binary.jsonl", b"\xff\xfe\x00garbage\x80\x81"), JSONL_MODE, "not utf-8"),
        (write(tmp_path, "empty.jsonl", b""), JSONL_MODE, "no utterances"),
        (write(tmp_path, "blank.txt", b"\n \n"), "One utterance a line", "no utterances"),
        (write(tmp_path, "huge.jsonl", huge), JSONL_MODE, "the limit is 2 mb"),
    ]
    for path, mode, message in cases:
        assert message in ui_error(ui, "/batch", *batch_args(handle_file(path) if path else None, mode)).lower(), path


def test_ui_bad_batch_lines_are_reported_in_the_table(ui, tmp_path):
    from gradio_client import handle_file

    lines = [
        "{not json",
        "[1, 2]",
        json.dumps({"uttid": "no_keys"}),
        batch_line(uttid="escape", prompt_speech="../../etc/passwd"),
        batch_line(uttid="absolute", prompt_speech="/etc/passwd"),
        batch_line(uttid="empty_text", syn_text="  "),
    ]
    path = write(tmp_path, "bad.jsonl", "\n".join(lines).encode())
    table, _archive, summary = ui.predict(*batch_args(handle_file(path)), api_name="/batch")
    assert "0 of 6 items ok" in summary
    messages = [row[3] for row in table["data"]]
    assert all(status == "error" for _, status, *_ in table["data"])
    assert "not valid JSON" in messages[0] and "missing" in messages[2]
    assert "outside the allowed folders" in messages[3] and "outside the allowed folders" in messages[4]


def test_ui_bad_phonemes_show_a_message(ui):  # the dictionary's save is the page's own (test_gradio_api)
    assert "empty" in ui_error(ui, "/to_phonemes", "").lower()
    bad_tokens = ["<|NOPE|><|XX9|>", None, "libri_367", "", *options(phoneme=True)]
    assert "unknown phoneme token" in ui_error(ui, "/synthesize", *bad_tokens).lower()


def test_the_ui_and_api_still_serve_after_all_that(ui, app_server):
    *_, status, normalized = ui.predict("Still serving.", None, "libri_367", "", *options(), api_name="/synthesize")
    assert status.startswith("Done") and "serving" in normalized.lower()
    assert speak(app_server.url, "Still serving.").status_code == 200


# ----------------------------------------------------------------------------- concurrent soak
SOAK_CLIENTS = 4
SOAK_REQUESTS = 10


def speech_seconds(data: bytes, body: dict) -> float:
    _, rate, audio = decode(data, body.get("response_format"))
    return len(audio) / rate


SOAK_TEXTS = [
    {"input": "The quick brown fox jumps over the lazy dog."},
    {"input": "今天天气很好，我们一起去公园散步吧。", "voice": "libri_1688"},
    {"input": "我们明天用 Python 写一个 demo 吧。", "response_format": "flac"},
    {"input": "Streaming keeps the first sentence quick. The second one follows.", "stream": True, "response_format": "pcm"},
]


def test_concurrent_soak_has_no_failures(app_server):
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=300) as http:
            for index in range(SOAK_REQUESTS):
                body = SOAK_TEXTS[(number + index) % len(SOAK_TEXTS)]
                start = time.perf_counter()
                try:
                    response = http.post(f"{app_server.url}/v1/audio/speech", json=body)
                    ok = response.status_code == 200 and speech_seconds(response.content, body) > 0.5
                    outcome = f"{response.status_code} {response.text[:100] if not ok else ''}"
                except httpx.HTTPError as error:
                    ok, outcome = False, repr(error)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if not ok:
                        failures.append(f"client {number} request {index}: {outcome}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(SOAK_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    wall = time.perf_counter() - started
    print(
        f"soak: {len(latencies)} requests from {SOAK_CLIENTS} clients in {wall:.1f} s, "
        f"p50 {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
    )
    assert not failures, failures
    assert len(latencies) == SOAK_CLIENTS * SOAK_REQUESTS
    assert httpx.get(f"{app_server.url}/v1/status").json()["queue_waiting"] == 0
