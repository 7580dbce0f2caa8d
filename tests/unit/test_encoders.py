"""The response-format encoders: every OpenAI format, whole and streamed, decoded back with PyAV (and
soundfile where it can) and checked for codec, sample rate, duration and content; bounded memory of
the stream encoder; Ogg paging; the SSE events."""

import base64
import io
import json
import struct
import threading

import av
import numpy as np
import psutil
import pytest
import soundfile as sf

from glmtts.encoders import (
    FORMATS,
    OGG_FLAG_BOS,
    OGG_FLAG_EOS,
    OPEN_ENDED,
    OggPager,
    StreamEncoder,
    audio_format,
    codec_rate,
    encode_audio,
    ogg_crc,
    sse_audio_delta,
    sse_audio_done,
    sse_event,
)

from ..decoding import decode

TONE_HZ = 440.0
CODECS = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le", "pcm": "pcm_s16le"}
LOSSLESS = ("flac", "wav", "pcm")
# Decoded length minus input length, in seconds: mp3 and aac streams carry the encoder's delay and
# padding (about 2 frames); a whole mp3 file's LAME header trims them; Ogg Opus trims itself.
EXTRA_S = {"mp3": 0.12, "aac": 0.12}
LONG_MINUTES = {"mp3": 5, "aac": 5, "opus": 5}  # the lossy codecs encode about a minute a second here


def tone(seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def check_decoded(data: bytes, fmt: str, rate: int, source: np.ndarray) -> None:
    name, out_rate, audio = decode(data, fmt, rate)
    assert name.startswith(CODECS[fmt]), name  # FFmpeg's mp3 decoder is "mp3float"
    assert out_rate == (48000 if fmt == "opus" else rate)
    expected_s, got_s = len(source) / rate, len(audio) / out_rate
    assert expected_s - 0.005 <= got_s <= expected_s + EXTRA_S.get(fmt, 0.005), (expected_s, got_s)
    assert abs(dominant_hz(audio, out_rate) - TONE_HZ) < 5
    rms_in, rms_out = np.sqrt(np.mean(source**2)), np.sqrt(np.mean(audio**2))
    assert abs(rms_out / rms_in - 1) < 0.15, (rms_in, rms_out)
    if fmt in LOSSLESS:  # 16-bit: equal to within one step
        assert len(audio) == len(source) and np.max(np.abs(audio - source)) <= 1.5 / 32767


def stream_all(fmt: str, rate: int, audio: np.ndarray, pieces: int) -> list[bytes]:
    """Encode `audio` in `pieces` uneven chunks (with an empty one) and finish; every output in order."""
    encoder = StreamEncoder(fmt, rate)
    cuts = [int(len(audio) * f) for f in (0.3, 0.31, 0.55, 0.83, 0.9, 0.95)][: pieces - 1]
    chunks = np.split(audio, cuts)
    chunks.insert(1, np.zeros(0, np.float32))
    outputs = [encoder.encode(chunk) for chunk in chunks]
    outputs.append(encoder.finish())
    assert encoder.finish() == b""  # idempotent
    with pytest.raises(RuntimeError):
        encoder.encode(chunks[0])
    return outputs


# ----------------------------------------------------------------------------- whole files
@pytest.mark.parametrize("rate", [24000, 22050, 32000])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_whole_file_decodes_to_the_same_audio(fmt, rate):
    source = tone(1.3, rate)
    check_decoded(encode_audio(source, rate, fmt), fmt, rate, source)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_soundfile_reads_whole_files(fmt):
    source = tone(1.0, 24000)
    audio, rate = sf.read(io.BytesIO(encode_audio(source, 24000, fmt)), dtype="float32")
    assert rate == 24000 and len(audio) == len(source)  # the mp3's LAME header trims delay and padding


def test_whole_wav_has_exact_sizes_and_pcm_is_bare_samples():
    source = tone(0.5, 24000)
    wav, pcm = encode_audio(source, 24000, "wav"), encode_audio(source, 24000, "pcm")
    assert struct.unpack_from("<I", wav, 4)[0] == len(wav) - 8 and struct.unpack_from("<I", wav, 40)[0] == len(pcm)
    assert wav[44:] == pcm and len(pcm) == 2 * len(source)
    assert np.array_equal(np.frombuffer(pcm, "<i2"), np.rint(source * 32767).astype(np.int16))


def test_samples_outside_the_range_are_clipped_not_wrapped():
    loud = np.array([2.0, -2.0, 0.0], dtype=np.float32)
    assert np.frombuffer(encode_audio(loud, 24000, "pcm"), "<i2").tolist() == [32767, -32767, 0]


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="mp3, opus, aac, flac, wav, pcm"):
        encode_audio(tone(0.1, 24000), 24000, "ogg")
    with pytest.raises(ValueError, match="mono"):
        encode_audio(np.zeros((2, 100), np.float32), 24000, "wav")


def test_format_table():
    assert list(FORMATS) == ["mp3", "opus", "aac", "flac", "wav", "pcm"]
    assert {name: f.media_type for name, f in FORMATS.items()} == {
        "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
        "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm",
    }  # fmt: skip
    assert audio_format("opus").extension == "opus"


def test_codecs_are_in_the_wheel_and_take_the_pipeline_rate():
    for fmt in ("mp3", "opus", "aac", "flac"):
        av.codec.Codec(FORMATS[fmt].codec, "w")  # raises when the wheel lacks the encoder
        assert codec_rate(FORMATS[fmt], 24000) == 24000
    assert codec_rate(FORMATS["opus"], 22050) == 24000 and codec_rate(FORMATS["opus"], 32000) == 48000


# ----------------------------------------------------------------------------- streams
@pytest.mark.parametrize("rate", [24000, 32000])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_stream_is_one_decodable_file(fmt, rate):
    source = tone(2.5, rate)
    outputs = stream_all(fmt, rate, source, pieces=6)
    assert outputs[0], "the first chunk gives bytes at once"
    check_decoded(b"".join(outputs), fmt, rate, source)


def test_streamed_wav_is_open_ended_and_soundfile_reads_it():
    source = tone(1.0, 24000)
    data = b"".join(stream_all("wav", 24000, source, pieces=4))
    assert data[:4] == b"RIFF" and struct.unpack_from("<I", data, 4)[0] == OPEN_ENDED
    assert struct.unpack_from("<I", data, 40)[0] == OPEN_ENDED
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24000 and len(audio) == len(source)


def test_streamed_mp3_is_read_by_soundfile_too():
    source = tone(1.0, 24000)
    audio, rate = sf.read(io.BytesIO(b"".join(stream_all("mp3", 24000, source, pieces=4))), dtype="float32")
    assert rate == 24000 and len(source) <= len(audio) <= len(source) + EXTRA_S["mp3"] * rate


def test_streamed_pcm_is_the_whole_file():
    source = tone(1.0, 24000)
    assert b"".join(stream_all("pcm", 24000, source, pieces=5)) == encode_audio(source, 24000, "pcm")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_stream_with_no_audio_still_finishes(fmt):
    encoder = StreamEncoder(fmt, 24000)
    data = encoder.finish()
    assert isinstance(data, bytes)
    if fmt == "wav":
        assert len(data) == 44


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_finish_from_another_thread_waits_for_a_running_encode(fmt):
    encoder = StreamEncoder(fmt, 24000)
    outcome: list[object] = []

    def encode() -> None:
        try:
            outcome.append(encoder.encode(tone(20.0, 24000)))
        except RuntimeError as error:  # finish() won the race
            outcome.append(error)

    worker = threading.Thread(target=encode)
    worker.start()
    tail = encoder.finish()
    worker.join()
    assert isinstance(tail, bytes) and len(outcome) == 1


def ogg_pages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(flags, granule, sequence, page bytes) of every page, checking each page's CRC."""
    pages, at = [], 0
    while at < len(data):
        assert data[at : at + 4] == b"OggS"
        flags, granule, _serial, sequence, crc, count = struct.unpack_from("<BqIIIB", data, at + 5)
        size = 27 + count + sum(data[at + 27 : at + 27 + count])
        page = data[at : at + size]
        assert crc == reference_ogg_crc(page[:22] + b"\0\0\0\0" + page[26:])
        pages.append((flags, granule, sequence, page))
        at += size
    return pages


def reference_ogg_crc(data: bytes) -> int:
    """Ogg's CRC bit by bit, as the specification writes it."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def test_ogg_crc_matches_the_specification():
    for data in (b"", b"OggS", bytes(range(256)) * 3, np.random.default_rng(1).bytes(5000)):
        assert ogg_crc(data) == reference_ogg_crc(data)


def test_streamed_opus_pages_are_well_formed():
    rate = 24000
    source = tone(2.0, rate)
    outputs = stream_all("opus", rate, source, pieces=5)
    pages = ogg_pages(b"".join(outputs))
    assert pages[0][0] == OGG_FLAG_BOS and pages[0][3][28:36] == b"OpusHead"
    assert pages[1][3][28:36] == b"OpusTags"
    assert [p[2] for p in pages] == list(range(len(pages)))
    assert all(p[0] == 0 for p in pages[1:-1]) and pages[-1][0] == OGG_FLAG_EOS
    pre_skip = struct.unpack_from("<H", pages[0][3], 28 + 10)[0]
    assert pages[-1][1] == pre_skip + len(source) * 48000 // rate  # end trimming to the exact length
    granules = [p[1] for p in pages[2:]]
    assert granules == sorted(granules)
    # every encode() ends on a page boundary: what it returned is whole pages
    for output in outputs:
        if output:
            ogg_pages(output)


def test_ogg_pager_splits_at_255_lacing_values():
    pager = OggPager(serial=7)
    packets = [(bytes(300), 960 * (i + 1)) for i in range(200)]  # 2 lacing values each
    pages = ogg_pages(pager.pages(packets, OGG_FLAG_EOS))
    assert len(pages) == 2 and pages[0][1] == 960 * 127 and pages[1][1] == 960 * 200
    assert pages[0][0] == 0 and pages[1][0] == OGG_FLAG_EOS


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_stream_encoder_memory_stays_bounded_over_minutes_of_audio(fmt):
    rate, minutes = 24000, LONG_MINUTES.get(fmt, 10)
    second = tone(1.0, rate, amplitude=0.3)
    encoder = StreamEncoder(fmt, rate)
    process = psutil.Process()
    sizes, buffered = [], []
    for index in range(minutes * 60):
        sizes.append(len(encoder.encode(second)))
        buffered.append(encoder.buffered_bytes)
        if index == 10:
            rss_start = process.memory_info().rss
    rss_growth = process.memory_info().rss - rss_start
    sizes.append(len(encoder.finish()))
    per_second = sum(sizes) / (minutes * 60)
    print(f"{fmt}: {sum(sizes) / 1e6:.1f} MB out, largest output {max(sizes)} B, RSS +{rss_growth / 1e6:.1f} MB")
    assert max(buffered) < 4096  # at most one held-back packet and the Ogg headers
    assert max(sizes) <= 2 * per_second + 16384  # handed out as it comes, never saved up
    assert rss_growth < 8e6  # the audio alone is 5.76 MB a minute as float32, 2.88 MB as 16-bit


# ----------------------------------------------------------------------------- server-sent events
def parse_sse(data: bytes) -> list[dict]:
    events = data.decode().split("\n\n")
    assert events[-1] == ""
    out = []
    for event in events[:-1]:
        assert event.startswith("data: ") and "\n" not in event
        out.append(json.loads(event[len("data: ") :]))
    return out


def test_sse_events_have_openais_shape():
    assert parse_sse(sse_event("x.y", {"a": 1})) == [{"type": "x.y", "a": 1}]
    audio = bytes(range(256))
    (delta,) = parse_sse(sse_audio_delta(audio))
    assert delta == {"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()}
    (done,) = parse_sse(sse_audio_done(42))
    assert done == {"type": "speech.audio.done", "usage": {"input_tokens": 42, "output_tokens": 0, "total_tokens": 42}}


def test_sse_deltas_carry_one_stream_in_the_requested_format():
    source = tone(1.5, 24000)
    encoder = StreamEncoder("mp3", 24000)
    body = b"".join(sse_audio_delta(out) for chunk in np.array_split(source, 3) if (out := encoder.encode(chunk)))
    body += sse_audio_delta(encoder.finish()) + sse_audio_done(10)
    events = parse_sse(body)
    assert [e["type"] for e in events] == ["speech.audio.delta"] * (len(events) - 1) + ["speech.audio.done"]
    check_decoded(b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), "mp3", 24000, source)
