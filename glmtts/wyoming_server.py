"""Home Assistant's local speech protocol, Wyoming, on a TCP port of its own (`GLMTTS_WYOMING_PORT`).

A client (Home Assistant's Wyoming integration, a voice satellite) sends events, one JSON line each:

- `describe` -> `info`: every voice a request may name (built-in, saved, aliases), each speaking the
  languages the text frontend reads, and `supports_synthesize_streaming`.
- `synthesize` -> `audio-start`, an `audio-chunk` as each segment finishes (16-bit mono PCM at the
  engine's rate), `audio-stop`. The voice is `voice.name`, the default voice when there is none.
- `synthesize-start`, `synthesize-chunk`s, `synthesize-stop` (text streamed as a language model writes
  it): each sentence is spoken as soon as it is complete, while the rest is still arriving; the audio
  as above, then `synthesize-stopped`. The `synthesize` that clients repeat inside a stream for older
  servers is ignored.

Each sentence (or the whole text) is a speech session (glmtts.session), as an HTTP request is: the
same scheduler, time limit, text limit, rate limit (per client address) and cancel path; this module
only maps the protocol to it. A client that disconnects cancels its synthesis. What a client can make
the server hold is bounded: MAX_CONNECTIONS connections, MAX_EVENT_BYTES per event (wyoming's own
reader believes any length a client declares), streamed text up to the HTTP text limit, and a
connection that sends nothing for the request time limit while nothing is spoken for it is closed.
An `error` event ends the connection, so a client never waits for audio that is not coming.

Wyoming has no authentication: `exposure_refusal` is the policy (SECURITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import numpy as np
from wyoming.audio import AudioChunk as WyomingAudioChunk
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, Eventable
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from glmtts.encoders import audio_to_pcm16
from glmtts.frontend.split import MAX_SEGMENT_CHARS, split_sentences
from glmtts.pipeline import MAX_TEXT_CHARS, SEGMENT_PAUSE_SECONDS, SynthesisRequest, playable
from glmtts.scheduler import QueueFull, QueueTimeout
from glmtts.service import Service
from glmtts.settings import Settings
from glmtts.types import SynthesisError, TimeLimitExceeded

_LOGGER = logging.getLogger(__name__)

LANGUAGES = ("en", "zh")  # what the text frontend reads (glmtts.frontend.split, Unit.lang), in every voice
MAX_CONNECTIONS = 32
MAX_EVENT_BYTES = 12 * MAX_TEXT_CHARS + 65536  # a text at the limit with every character escaped (\ud83d\ude00), and room
MAX_PAYLOAD_BYTES = 65536  # a speech client sends no audio: a payload is read and dropped
SAMPLE_WIDTH, CHANNELS = 2, 1  # 16-bit mono
ATTRIBUTION = Attribution(name="GLM-TTS warm WebUI", url="https://github.com/zai-org/GLM-TTS")
_PROBE = "x"  # a word appended to streamed text: a sentence it does not join is complete


class Refused(Exception):
    """A request this server turns down, said to the client in an `error` event with `code`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


_ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (TimeLimitExceeded, "time-limit"),
    (SynthesisError, "bad-request"),  # the text or the voice: the message says which
    (QueueFull, "busy"),
    (QueueTimeout, "busy"),
)


def error_event(error: BaseException) -> Event:
    """The `error` event a client is sent for `error`; an unexpected one is logged and not described."""
    if isinstance(error, Refused):
        return Error(str(error), error.code).event()
    for kind, code in _ERROR_CODES:
        if isinstance(error, kind):
            return Error(str(error), code).event()
    _LOGGER.error("Wyoming request failed", exc_info=error)
    return Error("The synthesis failed; the server's log says why.", "internal-error").event()


# ----------------------------------------------------------------------------- policy
def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # another host name, or "" (every interface)
        return False


def exposure_refusal(settings: Settings) -> str | None:
    """Why the Wyoming port may not open with these settings, else None.

    Wyoming has no authentication. Beyond loopback, while GLMTTS_API_KEY guards the HTTP API, it
    would let anyone who reaches the port around the key: refused unless `wyoming_allow_exposed`
    says a firewall admits only Home Assistant. Beyond loopback with no key, a warning (as for HTTP).
    """
    host = settings.wyoming_host
    if _is_loopback(host):
        return None
    if settings.api_key and not settings.wyoming_allow_exposed:
        return (
            f"GLMTTS_WYOMING_HOST={host!r} would serve speech without GLMTTS_API_KEY (Wyoming has no authentication). "
            "Listen on 127.0.0.1, or set GLMTTS_WYOMING_ALLOW_EXPOSED=1 where a firewall admits only Home Assistant."
        )
    _LOGGER.warning("Wyoming listens on %s without authentication: anyone who can reach the port can use it.", host)
    return None


# ----------------------------------------------------------------------------- reading events
def _json_object(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as error:  # not JSON (an HTTP request line, say), or nested too deep
        raise Refused("bad-event", "An event is not a JSON object.") from error
    if not isinstance(value, dict):
        raise Refused("bad-event", "An event is not a JSON object.")
    return value


def _length(header: dict, name: str, limit: int) -> int:
    value = header.get(name) or 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise Refused("bad-event", f"An event's {name} must be a whole number from 0 to {limit}.")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, None when the client has gone; raises Refused for one this server will not read.
    The header line is bounded by the reader's limit (64 KiB), the data and payload by MAX_*_BYTES."""
    try:
        line = await reader.readline()
        if not line:
            return None
        header = _json_object(line)
        data_length = _length(header, "data_length", MAX_EVENT_BYTES)
        payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
        data = header.get("data") or {}
        if not isinstance(header.get("type"), str) or not isinstance(data, dict):
            raise Refused("bad-event", "An event needs a string `type` and an object `data`.")
        if data_length:
            data = {**data, **_json_object(await reader.readexactly(data_length))}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:  # gone in the middle of an event
        return None
    except ValueError as error:  # readline past the reader's limit
        raise Refused("bad-event", "An event's header line is too long.") from error
    return Event(header["type"], data, payload)


def _text(data: dict) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise Refused("bad-event", "`text` must be a string.")
    return text


def _voice_name(data: dict) -> str | None:
    """`voice.name`, None for the default voice (a voice given by language only: any voice speaks both)."""
    voice = data.get("voice")
    name = voice.get("name") if isinstance(voice, dict) else None
    if name is not None and not isinstance(name, str):
        raise Refused("bad-event", "`voice.name` must be a string.")
    return name or None


# ----------------------------------------------------------------------------- streamed text
def complete_sentences(text: str) -> tuple[list[str], str]:
    """Streamed text -> the sentences more text cannot change, and the rest, which it may still extend.

    A sentence is complete once something follows its end: a line break, or what follows the end
    mark (a space after a period, so "3." waits for "14" and "Dr." for a name; anything after 。！？).
    A rest longer than a segment may be is cut at a space and given out without waiting for its end,
    so the rest stays short and each chunk of a stream costs the time of its own length.
    """
    ended, _, open_line = text.rpartition("\n")
    sentences = split_sentences(ended) + split_sentences(open_line)
    rest = ""
    if sentences and split_sentences(open_line + _PROBE)[-1] != _PROBE:
        last = sentences.pop()  # the open line's last sentence: a suffix of it, up to the trailing spaces
        rest = open_line[len(open_line.rstrip()) - len(last) :]
    while len(rest) > MAX_SEGMENT_CHARS:
        cut = rest.rfind(" ", 1, MAX_SEGMENT_CHARS)
        cut = cut if cut > 0 else MAX_SEGMENT_CHARS
        sentences.append(rest[:cut].strip())
        rest = rest[cut:].lstrip()
    return [sentence for sentence in sentences if sentence], rest


@dataclass
class TextStream:
    """Text arriving in `synthesize-chunk`s: each sentence goes to the speaker once it is complete."""

    sentences: asyncio.Queue[str | None]
    pending: str = ""  # the open sentence (complete_sentences keeps it short)
    carried: str = ""  # complete sentences without a letter or digit (an emoji, a stray "!"): alone they say nothing
    received: int = 0

    def add(self, text: str) -> None:
        self.received += len(text)
        if self.received > MAX_TEXT_CHARS:
            raise Refused("text-too-long", f"The streamed text has over {MAX_TEXT_CHARS} characters, the limit.")
        complete, self.pending = complete_sentences(self.pending + text)
        for sentence in complete:
            self.carried = f"{self.carried} {sentence}" if self.carried else sentence
            if any(character.isalnum() for character in sentence) or len(self.carried) > MAX_SEGMENT_CHARS:
                self.sentences.put_nowait(self.carried)
                self.carried = ""

    def end(self) -> None:
        if rest := f"{self.carried} {self.pending}".strip():
            self.sentences.put_nowait(rest)
        self.sentences.put_nowait(None)


# ----------------------------------------------------------------------------- one client
class WyomingConnection(AsyncEventHandler):
    """One client's conversation: its events in order, one request spoken at a time in a task of its
    own, so that streamed text keeps arriving while it speaks and a disconnect is seen at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: WyomingServer):
        super().__init__(reader, writer)
        self.server = server
        self.service = server.service
        self.timeout_s = self.service.settings.request_timeout_s
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "unknown"
        self.speaking: asyncio.Task | None = None
        self.stream: TextStream | None = None  # between synthesize-start and synthesize-stop

    async def run(self) -> None:
        """Handle events until the client goes or an error ends the conversation, then stop its synthesis."""
        if len(self.server.connections) >= MAX_CONNECTIONS:
            await self._fail(Refused("busy", f"The server holds {MAX_CONNECTIONS} Wyoming connections; retry later."))
            return
        self.server.connections.add(self)
        try:
            while (event := await self._next_event()) is not None and await self.handle_event(event):
                pass
        except (ConnectionError, TimeoutError):
            pass  # the client went away, or stopped reading what it was sent
        except Exception as error:
            await self._fail(error)
        finally:
            self.server.connections.discard(self)
            await self.disconnect()
            self.writer.close()

    async def _next_event(self) -> Event | None:
        """The next event; None when the client has gone, or sent nothing for the time limit while idle."""
        reading = asyncio.ensure_future(read_event(self.reader))
        try:
            while not (await asyncio.wait({reading}, timeout=self.timeout_s))[0]:
                if not self._speaking:
                    _LOGGER.info("Wyoming client %s idle for %.0f s: closing", self.client, self.timeout_s)
                    return None
            return reading.result()
        finally:
            reading.cancel()

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            self._require_warm()  # before, the voices are not all known: a client would keep a short list
            await self._send(await asyncio.to_thread(self._info))  # saved voices may be read from Redis
        elif SynthesizeStart.is_type(event.type):
            await self._start(_voice_name(event.data), None)
        elif SynthesizeChunk.is_type(event.type) and self.stream is not None:
            self.stream.add(_text(event.data))
        elif SynthesizeStop.is_type(event.type) and self.stream is not None:
            self.stream.end()
            self.stream = None
        elif Synthesize.is_type(event.type) and self.stream is None:  # inside a stream it repeats the text: ignored
            await self._start(_voice_name(event.data), _text(event.data))
        return True  # any other event is not for a speech server

    async def disconnect(self) -> None:
        """The conversation is over (the client gone, an error, the server stopping): stop what is spoken for it."""
        if self._speaking:
            _LOGGER.info("Wyoming client %s gone: cancelling its synthesis", self.client)
            self.speaking.cancel()

    @property
    def _speaking(self) -> bool:
        return self.speaking is not None and not self.speaking.done()

    def _info(self) -> Info:
        """Every name `voice.name` may take: the built-in voices, the saved ones and the aliases (as /v1/audio/voices)."""
        program = TtsProgram(
            name="glmtts",
            description=f"GLM-TTS warm WebUI ({self.service.engine.name} engine)",
            attribution=ATTRIBUTION,
            installed=True,
            version=None,
            voices=[
                TtsVoice(
                    name=voice_id,
                    description=label,
                    attribution=ATTRIBUTION,
                    installed=True,
                    version=None,
                    languages=list(LANGUAGES),
                )
                for voice_id, label in self.service.voices.listing()
            ],
            supports_synthesize_streaming=True,
        )
        return Info(tts=[program])

    # ------------------------------------------------------------------------- speaking
    async def _start(self, voice: str | None, text: str | None) -> None:
        """Start speaking `text`, or the text a stream will bring (None)."""
        if self._speaking:
            raise Refused("busy", "This connection is still speaking its last request; open another one.")
        self._require_warm()
        await self._take_token()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        if text is None:
            self.stream = TextStream(sentences)
        else:
            sentences.put_nowait(text)
            sentences.put_nowait(None)
        self.speaking = asyncio.create_task(self._speak(sentences, voice, streamed=text is None))

    def _require_warm(self) -> None:
        if not self.service.warm:
            raise Refused("not-ready", "The model is still warming up; retry in a few seconds.")

    async def _take_token(self) -> None:
        """One token of the client address's rate limit, the bucket its HTTP requests take from too."""
        limiter = self.service.limiter
        if limiter is None:
            return
        client = f"ip:{self.client}"
        wait_s = await asyncio.to_thread(limiter.acquire, client) if limiter.shared else limiter.acquire(client)
        if wait_s > 0:
            message = f"Rate limit of {limiter.per_minute} requests a minute reached; retry in {max(1, math.ceil(wait_s))} s."
            raise Refused("rate-limited", message)

    async def _speak(self, sentences: asyncio.Queue[str | None], voice: str | None, streamed: bool) -> None:
        """Speak each text from `sentences` until None: audio-start before the first audio, audio-stop
        after the last, synthesize-stopped to end a stream. Once a stream is heard, a sentence with
        nothing to read is left out (as HTTP leaves out text no voice reads); before, it is the error."""
        rate: int | None = None
        try:
            while (text := await sentences.get()) is not None:
                try:
                    rate = await self._speak_one(text, voice, rate)
                except SynthesisError as error:
                    if not streamed or rate is None:
                        raise
                    _LOGGER.info("Wyoming client %s: a streamed sentence left out: %s", self.client, error)
            if rate is not None:
                await self._send(AudioStop())
            if streamed:
                await self._send(SynthesizeStopped())
        except Exception as error:
            await self._fail(error)

    async def _speak_one(self, text: str, voice: str | None, rate: int | None) -> int:
        """One speech session's chunks as audio-chunks (after audio-start, when none was sent yet); a
        sentence after the first starts with the pause the pipeline puts between segments."""
        session = self.service.start_speech(SynthesisRequest(text, voice))
        try:
            async for chunk in session:
                audio = playable(chunk)
                if rate is None:
                    rate = chunk.sample_rate
                    await self._send(AudioStart(rate=rate, width=SAMPLE_WIDTH, channels=CHANNELS))
                elif chunk.index == 0 and chunk.first:
                    audio = np.concatenate([np.zeros(round(SEGMENT_PAUSE_SECONDS * rate), np.float32), audio])
                pcm = audio_to_pcm16(audio)
                await self._send(WyomingAudioChunk(rate=rate, width=SAMPLE_WIDTH, channels=CHANNELS, audio=pcm))
        finally:
            session.close()
        return rate

    async def _send(self, message: Eventable | Event) -> None:
        """Write an event; a client that reads nothing for the time limit is cut off (what it was sent dropped)."""
        try:
            await asyncio.wait_for(self.write_event(message if isinstance(message, Event) else message.event()), self.timeout_s)
        except TimeoutError:
            self.writer.transport.abort()
            raise

    async def _fail(self, error: BaseException) -> None:
        """Tell the client what went wrong and end the conversation."""
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self._send(error_event(error))
        await self.stop()


# ----------------------------------------------------------------------------- the listener
class WyomingServer:
    """The Wyoming listener on `wyoming_host:wyoming_port` and its live connections."""

    def __init__(self, service: Service):
        self.service = service
        self.connections: set[WyomingConnection] = set()
        self._tcp = AsyncTcpServer(service.settings.wyoming_host, service.settings.wyoming_port)

    @property
    def address(self) -> str:
        return f"tcp://{self._tcp.host}:{self._tcp.port}"

    async def start(self) -> None:
        try:
            await self._tcp.start(lambda reader, writer: WyomingConnection(reader, writer, self))
        except OSError as error:
            _LOGGER.error("Could not listen for Wyoming on %s (is the port in use?): %s", self.address, error)
            raise
        _LOGGER.info("Wyoming (Home Assistant) on %s", self.address)

    async def stop(self) -> None:
        await self._tcp.stop()


def with_wyoming(
    lifespan: Callable[[object], AbstractAsyncContextManager], service: Service
) -> Callable[[object], AbstractAsyncContextManager]:
    """A web app's `lifespan` with the Wyoming server started before it and stopped after it, in its event loop."""

    @asynccontextmanager
    async def lifespan_and_wyoming(app: object) -> AsyncIterator[object]:
        server = WyomingServer(service)
        await server.start()
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            await server.stop()

    return lifespan_and_wyoming
