"""Audio encoding for the speech API: OpenAI's six response formats, as whole files or as one stream.

| format | what goes out | encoder |
| --- | --- | --- |
| `mp3` | MPEG-1/2 layer III frames | libmp3lame |
| `opus` | Opus in Ogg pages (RFC 7845) | libopus; Ogg pages written here when streaming |
| `aac` | AAC-LC in ADTS frames | FFmpeg's native aac encoder |
| `flac` | a FLAC stream | FFmpeg's flac encoder, 16-bit |
| `wav` | 16-bit mono PCM in RIFF/WAVE | written here |
| `pcm` | raw 16-bit little-endian mono samples, no header | written here |

The codecs come from PyAV, whose wheels carry FFmpeg with libmp3lame and libopus built in, so the API
needs no system ffmpeg. Audio is encoded at the rate it comes in when the codec takes that rate
(libmp3lame, libopus and aac take 24 kHz, the pipeline's default); otherwise the codec's own
resampler (libswresample, inside PyAV) converts it to the nearest rate the codec takes. Opus decoders
always play at 48 kHz. `pcm` is OpenAI's "24 kHz 16-bit mono" only when the caller passes 24 kHz
audio, which the default engines produce; it carries no header, so the caller should say the rate
(the speech route sends `X-Sample-Rate`).

`encode_audio` writes a whole file to a seekable buffer, so the muxers can finish their headers
(mp3's LAME/Xing frame with the exact length, FLAC's sample count and MD5, wav's sizes).
`StreamEncoder` writes one open-ended stream instead: bytes go out as soon as the codec has them and
nothing is kept once handed out, so memory stays bounded however long the speech is. A streamed
wav has 0xFFFFFFFF as its RIFF and data sizes, as streaming servers send it; a streamed FLAC says
"length unknown" in its STREAMINFO. The Ogg muxer in FFmpeg holds pages back for up to a second
and cannot be told to flush, so streamed Opus is paged here, one flush per `encode()`.

In SSE mode (`stream_format: "sse"`) the same stream bytes travel base64-encoded in
`speech.audio.delta` events (`sse_audio_delta`), closed by one `speech.audio.done` event with the
usage (`sse_audio_done`).
"""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import threading
import zlib
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

PCM_BITS = 16
PCM_SCALE = 32767
_PCM_BLOCK = 1 << 20  # samples converted at a time
OPEN_ENDED = 0xFFFFFFFF  # RIFF and data sizes of a wav whose length is not known yet
OPUS_RATE = 48000  # Opus timestamps (granule positions, pre-skip) count 48 kHz samples
OGG_MAX_SEGMENTS = 255  # lacing values on one Ogg page
OGG_FLAG_BOS, OGG_FLAG_EOS = 0x02, 0x04
OPUS_VENDOR = b"glmtts (libopus via PyAV)"
SSE_MEDIA_TYPE = "text/event-stream"
SSE_DELTA, SSE_DONE = "speech.audio.delta", "speech.audio.done"


@dataclass(frozen=True)
class AudioFormat:
    """One response format: what the client is told (media type, file extension) and how it is encoded."""

    name: str
    media_type: str
    extension: str
    codec: str | None = None  # PyAV encoder; None: 16-bit PCM written here
    muxer: str | None = None  # FFmpeg container format
    bit_rate: int | None = None  # bits a second, for the lossy codecs


FORMATS: dict[str, AudioFormat] = {
    "mp3": AudioFormat("mp3", "audio/mpeg", "mp3", "libmp3lame", "mp3", 64_000),
    "opus": AudioFormat("opus", "audio/ogg", "opus", "libopus", "ogg", 32_000),
    "aac": AudioFormat("aac", "audio/aac", "aac", "aac", "adts", 64_000),
    "flac": AudioFormat("flac", "audio/flac", "flac", "flac", "flac"),
    "wav": AudioFormat("wav", "audio/wav", "wav"),
    "pcm": AudioFormat("pcm", "audio/pcm", "pcm"),
}
DEFAULT_FORMAT = "mp3"  # what OpenAI answers when a request names none


def audio_format(name: str) -> AudioFormat:
    """The format called `name`, or ValueError with a message that lists the formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"response_format must be one of {', '.join(FORMATS)}, not {name!r}.") from None


def codec_rate(fmt: AudioFormat, sample_rate: int) -> int:
    """The rate `fmt`'s codec runs at for audio at `sample_rate`: that rate when the codec takes it,
    else the smallest higher rate it takes (the highest when none is higher)."""
    rates = av.codec.Codec(fmt.codec, "w").audio_rates if fmt.codec else None
    if not rates or sample_rate in rates:
        return sample_rate
    higher = [rate for rate in rates if rate > sample_rate]
    return min(higher) if higher else max(rates)


def audio_to_pcm16(audio: np.ndarray) -> bytes:
    """Float audio in [-1, 1] (clipped) to 16-bit little-endian PCM, converted a block at a time (a long
    file costs its PCM, not several float copies)."""
    pcm = np.empty(len(audio), dtype="<i2")
    for start in range(0, len(audio), _PCM_BLOCK):
        block = audio[start : start + _PCM_BLOCK]
        pcm[start : start + len(block)] = np.rint(np.clip(block, -1.0, 1.0) * PCM_SCALE)
    return pcm.tobytes()


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A mono 16-bit wav header; `data_bytes=None` gives the open-ended sizes a stream starts with."""
    block_align = PCM_BITS // 8
    riff = OPEN_ENDED if data_bytes is None else 36 + data_bytes
    data = OPEN_ENDED if data_bytes is None else data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", riff, b"WAVE",
        b"fmt ", 16, 1, 1, sample_rate, sample_rate * block_align, block_align, PCM_BITS,
        b"data", data,
    )  # fmt: skip


def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"Expected mono audio (one dimension), got shape {audio.shape}.")
    return audio


def _mono_float(audio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(_mono(audio), -1.0, 1.0), dtype=np.float32)


def _frame(audio: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
    """A float32 mono frame; the codec context converts its format, rate and frame size itself."""
    frame = av.AudioFrame.from_ndarray(audio[np.newaxis, :], format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = Fraction(1, sample_rate)
    return frame


def _open_muxer(
    target: object, fmt: AudioFormat, sample_rate: int
) -> tuple[av.container.OutputContainer, av.audio.stream.AudioStream]:
    container = av.open(target, mode="w", format=fmt.muxer)
    stream = container.add_stream(fmt.codec, rate=codec_rate(fmt, sample_rate), layout="mono")
    if fmt.bit_rate:
        stream.bit_rate = fmt.bit_rate
    if fmt.codec == "flac":
        stream.format = "s16"  # 16-bit, like wav and pcm
    return container, stream


def encode_audio(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole file of mono float32 `audio` at `sample_rate` in format `fmt` (a key of FORMATS)."""
    spec = audio_format(fmt)
    if spec.name in ("pcm", "wav"):
        pcm = audio_to_pcm16(_mono(audio))
        return pcm if spec.name == "pcm" else wav_header(sample_rate, len(pcm)) + pcm
    audio = _mono_float(audio)
    buffer = io.BytesIO()  # seekable: the muxer finishes its header at the end
    container, stream = _open_muxer(buffer, spec, sample_rate)
    try:
        if len(audio):
            container.mux(stream.encode(_frame(audio, sample_rate, 0)))
        container.mux(stream.encode(None))
    finally:
        container.close()
    return buffer.getvalue()


class _Sink:
    """A write-only, unseekable file for PyAV: the muxer sees a pipe and never rewrites a header."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0  # bytes written and not yet taken

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return data


class _MuxedStream:
    """mp3, ADTS AAC or FLAC through PyAV's muxer into an unseekable sink."""

    def __init__(self, fmt: AudioFormat, sample_rate: int):
        self._sink = _Sink()
        self._rate = sample_rate
        self._samples = 0
        self._container, self._stream = _open_muxer(self._sink, fmt, sample_rate)

    @property
    def buffered_bytes(self) -> int:
        return self._sink.size

    def write(self, audio: np.ndarray) -> bytes:
        if len(audio):
            self._container.mux(self._stream.encode(_frame(audio, self._rate, self._samples)))
            self._samples += len(audio)
        return self._sink.take()

    def close(self) -> bytes:
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
        return self._sink.take()


_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0, no final xor).

    zlib computes the reflected CRC-32; reflecting the input bytes and the result gives Ogg's, at C speed.
    """
    register = zlib.crc32(data.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF  # initial register 0
    return int(f"{register:032b}"[::-1], 2)


class OggPager:
    """Ogg pages of one logical stream: whole packets only, at most 255 lacing values a page."""

    def __init__(self, serial: int):
        self._serial = serial
        self._sequence = 0

    def page(self, packets: list[bytes], granule: int, flags: int = 0) -> bytes:
        lacing = b"".join(_lacing(len(packet)) for packet in packets)
        if len(lacing) > OGG_MAX_SEGMENTS:
            raise ValueError("Too many packets for one Ogg page.")
        header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, self._serial, self._sequence, 0, len(lacing))
        self._sequence += 1
        page = bytearray(header + lacing + b"".join(packets))
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))  # the checksum field sits at byte 22
        return bytes(page)

    def pages(self, packets: list[tuple[bytes, int]], flags: int = 0) -> bytes:
        """As few pages as hold (packet, granule position after it) pairs; `flags` go on the last page."""
        out = bytearray()
        start = 0
        while start < len(packets):
            end, segments = start, 0
            while end < len(packets) and segments + len(_lacing(len(packets[end][0]))) <= OGG_MAX_SEGMENTS:
                segments += len(_lacing(len(packets[end][0])))
                end += 1
            if end == start:
                raise ValueError("An Ogg packet too large for one page.")
            last = end == len(packets)
            out += self.page([packet for packet, _ in packets[start:end]], packets[end - 1][1], flags if last else 0)
            start = end
        return bytes(out)


def _lacing(size: int) -> bytes:
    """Ogg lacing values of one packet of `size` bytes."""
    return b"\xff" * (size // 255) + bytes([size % 255])


class _OggOpusStream:
    """Opus packets from libopus, paged here so that every `write` hands out all it can.

    The last packet is always held back, so that the final page, which carries the end-of-stream flag
    and the granule position that trims the encoder's padding, has a packet to carry.
    """

    def __init__(self, fmt: AudioFormat, sample_rate: int):
        rate = codec_rate(fmt, sample_rate)
        self._codec = av.CodecContext.create(fmt.codec, "w")
        self._codec.sample_rate = rate
        self._codec.layout = "mono"
        self._codec.format = "flt"
        self._codec.bit_rate = fmt.bit_rate
        self._codec.time_base = Fraction(1, rate)
        self._codec.open()
        head = bytes(self._codec.extradata)  # OpusHead (RFC 7845 section 5.1), pre-skip at byte 10
        self._pre_skip = struct.unpack_from("<H", head, 10)[0]
        self._packet_span = self._codec.frame_size * OPUS_RATE // rate  # each packet's length in 48 kHz samples
        self._rate = sample_rate
        self._samples = 0  # input samples so far
        self._packets = 0  # packets paged so far
        self._held: bytes | None = None
        self._pager = OggPager(random.getrandbits(32))
        tags = b"OpusTags" + struct.pack("<I", len(OPUS_VENDOR)) + OPUS_VENDOR + struct.pack("<I", 0)
        self._pending = self._pager.page([head], 0, OGG_FLAG_BOS) + self._pager.page([tags], 0)

    @property
    def buffered_bytes(self) -> int:
        return len(self._pending) + len(self._held or b"")

    def _paged(self, packets: list[bytes], final_granule: int | None = None) -> bytes:
        numbered = []
        for packet in packets:
            self._packets += 1
            numbered.append((packet, self._packets * self._packet_span))
        if final_granule is not None and numbered:
            numbered[-1] = (numbered[-1][0], min(numbered[-1][1], final_granule))
        out = self._pending + (self._pager.pages(numbered, OGG_FLAG_EOS if final_granule is not None else 0) if numbered else b"")
        self._pending = b""
        return out

    def write(self, audio: np.ndarray) -> bytes:
        packets = []
        if len(audio):
            packets = [bytes(p) for p in self._codec.encode(_frame(audio, self._rate, self._samples))]
            self._samples += len(audio)
        if self._held is not None:
            packets.insert(0, self._held)
        self._held = packets.pop() if packets else None
        return self._paged(packets)

    def close(self) -> bytes:
        packets = [bytes(p) for p in self._codec.encode(None)] if self._samples else []
        if self._held is not None:
            packets.insert(0, self._held)
            self._held = None
        end = self._pre_skip + round(self._samples * OPUS_RATE / self._rate)  # trims the encoder's padding
        return self._paged(packets, end)


class _PcmStream:
    """Raw 16-bit PCM, behind an open-ended wav header for `wav`."""

    def __init__(self, fmt: AudioFormat, sample_rate: int):
        self._header = wav_header(sample_rate) if fmt.name == "wav" else b""
        self.buffered_bytes = 0

    def write(self, audio: np.ndarray) -> bytes:
        header, self._header = self._header, b""
        return header + audio_to_pcm16(audio)

    def close(self) -> bytes:
        return self.write(np.zeros(0, dtype=np.float32)) if self._header else b""


class StreamEncoder:
    """Turns float32 mono chunks into the bytes of ONE open-ended stream in a response format.

    `encode(chunk)` returns the bytes ready to send now (possibly none: codecs hold back a frame or
    so); `finish()` returns the rest and may be called again (then it returns nothing). Concatenated,
    the outputs are one valid file that standard decoders read in full. Nothing is kept once handed
    out, so memory stays bounded however long the stream runs. Calls are serialized by a lock: a
    `finish()` from a response's cleanup waits for an `encode()` still running in a worker thread
    (PyAV's codec contexts must not be used from two threads at once).
    """

    def __init__(self, fmt: str, sample_rate: int):
        self.format = audio_format(fmt)
        self.sample_rate = sample_rate
        self.media_type = self.format.media_type
        if self.format.codec is None:
            self._backend: _PcmStream | _MuxedStream | _OggOpusStream = _PcmStream(self.format, sample_rate)
        elif self.format.name == "opus":
            self._backend = _OggOpusStream(self.format, sample_rate)
        else:
            self._backend = _MuxedStream(self.format, sample_rate)
        self._finished = False
        self._lock = threading.Lock()

    @property
    def buffered_bytes(self) -> int:
        """Encoded bytes held inside this object, not yet handed out (codec-internal state aside)."""
        return 0 if self._finished else self._backend.buffered_bytes

    def encode(self, audio: np.ndarray) -> bytes:
        audio = _mono_float(audio)
        with self._lock:
            if self._finished:
                raise RuntimeError("The stream is finished; start a new StreamEncoder.")
            return self._backend.write(audio)

    def finish(self) -> bytes:
        """The stream's last bytes (encoder tail, end-of-stream page); b"" when called again."""
        with self._lock:
            if self._finished:
                return b""
            self._finished = True
            return self._backend.close()


def sse_event(event_type: str, payload: dict[str, object]) -> bytes:
    """One server-sent event as OpenAI sends them: a `data:` line holding `{"type": event_type, ...}`."""
    body = json.dumps({"type": event_type, **payload}, ensure_ascii=False, separators=(",", ":"))
    return f"data: {body}\n\n".encode()


def sse_audio_delta(audio: bytes) -> bytes:
    """A `speech.audio.delta` event: the next bytes of the stream (in the requested format), base64."""
    return sse_event(SSE_DELTA, {"audio": base64.b64encode(audio).decode("ascii")})


def sse_audio_done(input_characters: int) -> bytes:
    """The closing `speech.audio.done` event; usage counts input characters as tokens, no output tokens."""
    usage = {"input_tokens": input_characters, "output_tokens": 0, "total_tokens": input_characters}
    return sse_event(SSE_DONE, {"usage": usage})
