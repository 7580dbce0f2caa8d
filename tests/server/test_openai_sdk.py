"""The official `openai` Python SDK against the running app, changed in nothing but `base_url`: OpenAI's
voice names, every response format (decoded: codec, sample rate, length), chunked streaming by default
that starts before the synthesis ends, whole files on `"stream": false`, SSE events, OpenAI-shaped errors that the SDK turns into its exceptions
(a missing field, an unknown model, route or method included), and the models, listed and retrieved."""

import base64
import json
import re
import time

import httpx
import numpy as np
import openai
import parselmouth
import pytest
from openai import OpenAI

from glmtts.encoders import FORMATS
from glmtts.openai_compat import OPENAI_SPEED_MAX, OPENAI_SPEED_MIN

from ..decoding import decode
from .conftest import RATE, ROOT

ALIASES: dict[str, str] = json.loads((ROOT / "configs" / "openai_voices.json").read_text(encoding="utf-8"))
SENTENCE = "The birch canoe slid on the smooth planks."
VOICE = "nova"  # the format checks compare lengths, so they all use one voice
VOICE_TARGET = ALIASES[VOICE]
CODECS = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le", "pcm": "pcm_s16le"}
CODEC_EXTRA_S = 0.15  # mp3 and aac streams carry the encoder's delay and padding


def paragraph(count: int) -> str:
    return " ".join(f"Sentence number {i} is here to keep the speech engine busy for a while." for i in range(count))


@pytest.fixture(scope="module")
def client(app_server) -> OpenAI:
    return OpenAI(base_url=f"{app_server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def check_audio(data: bytes, fmt: str, expected_s: float) -> float:
    """Decode `data` as `fmt`, check codec, rate and length against `expected_s`; the length in seconds."""
    name, rate, audio = decode(data, fmt)
    assert name.startswith(CODECS[fmt]), name
    assert rate == (48000 if fmt == "opus" else RATE)
    seconds = len(audio) / rate
    assert 0.9 * expected_s <= seconds <= 1.1 * expected_s + CODEC_EXTRA_S, (fmt, seconds, expected_s)
    assert np.abs(audio).max() > 0.05  # speech, not silence
    return seconds


def median_f0(data: bytes) -> float:
    _, rate, audio = decode(data, "wav")
    frequency = parselmouth.Sound(audio.astype(np.float64), rate).to_pitch().selected_array["frequency"]
    return float(np.median(frequency[frequency > 0]))


@pytest.fixture(scope="module")
def reference_s(client) -> float:
    """The length of SENTENCE in VOICE, from a wav (voice matching changes the speaking rate a little per voice)."""
    wav = client.audio.speech.create(model="tts-1", voice=VOICE, input=SENTENCE, response_format="wav")
    _, rate, audio = decode(wav.content, "wav")
    return len(audio) / rate


# ----------------------------------------------------------------------------- voices and formats
def test_every_openai_voice_speaks_as_the_voice_it_maps_to(client):
    def speak(voice: str) -> bytes:
        return client.audio.speech.create(model="tts-1", voice=voice, input=SENTENCE, response_format="wav").content

    targets = {target: median_f0(speak(target)) for target in sorted(set(ALIASES.values()))}
    print("median F0 of the mapped voices:", {t: round(f) for t, f in targets.items()})
    assert max(targets.values()) > 1.3 * min(targets.values())  # the voices differ, so the check below means something
    for alias, target in ALIASES.items():
        f0 = median_f0(speak(alias))
        assert abs(f0 / targets[target] - 1) < 0.12, (alias, target, f0, targets[target])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_decodes_with_its_codec_rate_and_length(client, reference_s, fmt):
    speech = client.audio.speech.create(model="tts-1-hd", voice=VOICE, input=SENTENCE, response_format=fmt)
    assert speech.response.headers["content-type"].startswith(FORMATS[fmt].media_type)
    check_audio(speech.content, fmt, reference_s)


def test_mp3_is_the_default_format(client, reference_s):
    speech = client.audio.speech.create(model="tts-1", voice=VOICE, input=SENTENCE)
    assert speech.response.headers["content-type"].startswith("audio/mpeg")
    check_audio(speech.content, "mp3", reference_s)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_streams_as_one_decodable_file(client, reference_s, fmt):
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice=VOICE, input=SENTENCE, response_format=fmt, stream_format="audio"
    ) as response:
        assert response.headers["content-type"].startswith(FORMATS[fmt].media_type)
        data = b"".join(response.iter_bytes())
    check_audio(data, fmt, reference_s)


def test_streaming_starts_before_the_whole_is_done(client):
    """`with_streaming_response` gets the first segment's audio while later segments are synthesized."""
    start = time.perf_counter()
    arrivals: list[tuple[float, int]] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="onyx", input=paragraph(12), response_format="mp3", stream_format="audio"
    ) as response:
        assert response.headers.get("transfer-encoding") == "chunked"
        for chunk in response.iter_bytes():
            if chunk:
                arrivals.append((time.perf_counter() - start, len(chunk)))
    first_s, total_s = arrivals[0][0], arrivals[-1][0]
    print(f"{len(arrivals)} chunks: first after {first_s:.2f} s, last after {total_s:.2f} s")
    assert first_s < 0.5 * total_s


def test_a_plain_streaming_request_gets_audio_while_the_synthesis_runs(client, app_server):
    """`with_streaming_response.create` without stream_format, as the SDK's examples, LiteLLM and Home Assistant
    send it: the first bytes come while the synthesis is still running, shown by the order of events (the
    status read after the first chunk still counts it), not by timing; then the rest in further chunks."""
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="onyx", input=paragraph(12)) as response:
        assert response.headers.get("transfer-encoding") == "chunked" and "content-length" not in response.headers
        segments = int(response.headers["x-segments"])
        chunks = response.iter_bytes()
        first = next(chunks)
        active_at_first = httpx.get(f"{app_server.url}/v1/status", timeout=30).json()["syntheses_active"]
        rest = list(chunks)
    assert segments >= 4 and first
    assert active_at_first == 1, "the first bytes came only after the synthesis had ended"
    assert len(rest) >= segments - 1  # at least a chunk a later segment
    name, rate, audio = decode(first + b"".join(rest), "mp3")
    assert name.startswith("mp3") and rate == RATE and len(audio) / rate > 20


def test_stream_false_gives_a_whole_file_with_its_length(client):
    speech = client.audio.speech.create(model="tts-1", voice=VOICE, input=SENTENCE, extra_body={"stream": False})
    headers = speech.response.headers
    assert headers["content-length"] == str(len(speech.content)) and float(headers["x-rtf"]) > 0
    assert decode(speech.content, "mp3")[0].startswith("mp3")


def test_sse_stream_sends_audio_deltas_then_done_with_usage(client):
    text = paragraph(8)
    start = time.perf_counter()
    events: list[tuple[float, dict]] = []
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="sage", input=text, response_format="mp3", stream_format="sse"
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append((time.perf_counter() - start, json.loads(line[len("data:") :])))
            else:
                assert line == "" or line.startswith((":", "event:")), line
    types = [event["type"] for _, event in events]
    assert len(types) >= 3 and set(types[:-1]) == {"speech.audio.delta"} and types[-1] == "speech.audio.done"
    done = events[-1][1]
    assert done["usage"] == {"input_tokens": len(text), "output_tokens": 0, "total_tokens": len(text)}
    audio = b"".join(base64.b64decode(event["audio"]) for _, event in events[:-1])
    name, rate, samples = decode(audio, "mp3")
    assert name.startswith("mp3") and rate == RATE and len(samples) / rate > 5.0
    first_s, done_s = events[0][0], events[-1][0]
    print(f"{len(events) - 1} deltas: first after {first_s:.2f} s, done after {done_s:.2f} s")
    assert first_s < 0.8 * done_s  # deltas come as segments finish, not all at the end


def test_instructions_and_a_custom_voice_object_are_accepted(client, reference_s):
    speech = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice={"id": VOICE_TARGET},  # newer SDKs send custom voices as objects
        input=SENTENCE,
        instructions="Speak in a cheerful and positive tone.",
        response_format="wav",
    )
    check_audio(speech.content, "wav", reference_s)


@pytest.mark.parametrize("speed", [0.25, 4.0])
def test_speed_at_the_ends_of_openais_range_works_or_names_the_supported_range(client, reference_s, speed):
    try:
        speech = client.audio.speech.create(model="tts-1", voice=VOICE, input=SENTENCE, response_format="wav", speed=speed)
    except openai.BadRequestError as error:
        low, high = range_in(error.message)
        assert low <= 1.0 <= high and not low <= speed <= high
        return
    _, rate, audio = decode(speech.content, "wav")
    seconds = len(audio) / rate
    assert (seconds > 1.5 * reference_s) if speed < 1 else (seconds < 0.67 * reference_s)


# ----------------------------------------------------------------------------- errors the SDK understands
def range_in(message: str) -> tuple[float, float]:
    """The first "A to B" / "A and B" / "A-B" range in an error message."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*(?:to|and|-|–)\s*(\d+(?:\.\d+)?)", message)
    assert found, message
    return float(found.group(1)), float(found.group(2))


def check_error_body(error: openai.APIStatusError) -> None:
    assert isinstance(error.body, dict) and set(error.body) >= {"message", "type", "param", "code"}, error.body
    assert error.body["message"] in error.message  # the SDK shows our message, not a bare "Error code: 400"


@pytest.mark.parametrize("stream_format", [None, "audio", "sse"])
def test_a_bad_voice_raises_bad_request_naming_the_voice(client, stream_format):
    extra = {"stream_format": stream_format} if stream_format else {}
    speech = client.audio.speech.with_streaming_response
    with (
        pytest.raises(openai.BadRequestError) as caught,
        speech.create(model="tts-1", voice="nobody-at-all", input=SENTENCE, **extra),
    ):
        pass
    check_error_body(caught.value)
    assert "nobody-at-all" in caught.value.message and caught.value.type == "invalid_request_error"
    assert "alloy" in caught.value.message or "libri_" in caught.value.message  # it says what would work


@pytest.mark.parametrize("speed", [5.0, 0.1])
def test_speed_outside_the_range_raises_bad_request_naming_the_range(client, speed):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, speed=speed)
    check_error_body(caught.value)
    low, high = range_in(caught.value.message)
    assert "speed" in caught.value.message.lower() and not low <= speed <= high
    assert OPENAI_SPEED_MIN <= low < high <= OPENAI_SPEED_MAX


def test_unknown_format_and_model_are_named(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCE, response_format="ogg")
    check_error_body(caught.value)
    assert "ogg" in caught.value.message and "opus" in caught.value.message
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as caught:
        client.audio.speech.create(model="tts-9000", voice="alloy", input=SENTENCE)
    check_error_body(caught.value)
    assert "tts-9000" in caught.value.message


def test_a_missing_input_raises_bad_request_naming_it(client):
    """OpenAI answers a body without a required field with a 400 naming it (FastAPI's default is a 422)."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/audio/speech", body={"model": "tts-1", "voice": "alloy"}, cast_to=httpx.Response)
    check_error_body(caught.value)
    assert caught.value.param == "input" and caught.value.code == "missing_required_parameter"
    assert caught.value.body["message"] == "Missing required parameter: 'input'."


def test_empty_input_keeps_todays_message(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="")
    check_error_body(caught.value)
    assert "empty" in caught.value.message.lower()


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/v1/voices/nobody-at-all", {}),
        ("GET", "/v1/batch/no-such-job", {}),
        ("POST", "/v1/audio/speech", {"json": {"input": "hello", "speed": "fast"}}),
        ("POST", "/v1/audio/speech", {"json": {"voice": "alloy"}}),
        ("POST", "/v1/batch", {"content": b"x", "headers": {"content-type": "text/plain"}}),
        ("GET", "/v1/models/nope", {}),
        ("GET", "/v1/no/such/route", {}),  # an unknown path under /v1: ours to answer, not the UI's
        ("GET", "/v1/audio/speech", {}),  # a known path, another method: 405
        ("DELETE", "/v1/models", {}),
    ],
)
def test_errors_on_every_v1_route_share_openais_shape(app_server, method, path, kwargs):
    response = httpx.request(method, f"{app_server.url}{path}", timeout=60, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"] and error["type"]
    if response.status_code in (400, 422):
        assert error["type"] == "invalid_request_error"


# ----------------------------------------------------------------------------- listings
def test_models_list_names_openais_models_and_ours(client):
    ids = [model.id for model in client.models.list()]
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "embedded"} <= set(ids)


def test_every_listed_model_is_retrieved_and_an_unknown_one_is_not_found(client):
    for listed in client.models.list():
        model = client.models.retrieve(listed.id)
        assert (model.id, model.object, model.created, model.owned_by) == (listed.id, "model", listed.created, listed.owned_by)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    check_error_body(caught.value)
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    assert "'nope' does not exist" in caught.value.message and "tts-1" in caught.value.message  # what would work


def test_voices_list_the_openai_aliases(app_server):
    listing = httpx.get(f"{app_server.url}/v1/voices", timeout=30).json()
    entries = {entry["id"]: entry for entry in listing.get("aliases", []) + listing["voices"]}
    for alias, target in ALIASES.items():
        assert entries[alias]["alias_of"] == target
