"""The text frontend in a process of its own, behind TextFrontend's interface.

The frontend is pure Python: loading its grammars and dictionaries takes 1.4 s on a 2-core
machine, and each request's text work holds the GIL. In a child process it loads on the second
core while the app imports its web libraries, and later its work runs beside the requests' other
Python instead of taking turns with it.

`FrontendProcess(...)` starts the child at once; `load()` waits until it has loaded. Calls travel
over a private socket pair (pickled, so errors come back as the frontend raised them), each with an
id, and each runs in a thread of its own in the child: Python switches between running threads
every few milliseconds, so a short text is answered at once while long ones are being prepared.
Admission: at most MAX_CALLS calls are in the child at once; one more is refused at once with
FrontendBusy (a QueueFull: 429 with Retry-After). A call whose CancelToken is cancelled (its client
left) or due returns at once, and the child stops its work at the next sentence or segment. A child
that died is started again by the next call, and each call it held is retried once. The child exits
when the app closes its end or dies.

    python -m glmtts.frontend.process FD REPLACE_DICT CACHE_DIR   (what FrontendProcess runs)
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from glmtts import memory
from glmtts.scheduler import QueueFull
from glmtts.types import Cancelled, CancelToken, Segment, SynthesisError

_LOGGER = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds glmtts/
_STOP_WAIT_S = 5.0
CALL_TIMEOUT_S = 120.0  # a call still running then is stopped (the longest text takes a few seconds)
MAX_CALLS = 8  # calls in the child at once: a short text waits for none of them, it shares the CPU
_POLL_S = 0.05  # how often a waiting call looks at its cancel token
_TRIM_AFTER_CHARS = 2000  # a call on a text this long hands its freed memory back to the system
_LOST = (EOFError, OSError)  # what the connection raises when the other end is gone
_CANCELLABLE = frozenset({"text_to_segments", "text_to_phoneme_text"})


class FrontendBusy(QueueFull):
    """The text frontend's process already holds MAX_CALLS calls."""


class _Call:
    """One call: its message to the child, and the child's reply once it comes (None: the child died)."""

    def __init__(self, message: tuple) -> None:
        self.message = message  # ("call", id, name, args)
        self.reply: tuple[str, object] | None = None
        self.done = threading.Event()

    def finish(self, reply: tuple[str, object] | None) -> None:
        self.reply = reply
        self.done.set()


class _Child:
    """One start of the child process: the connection, the calls it holds, and a thread that hands
    each reply to its call (and every held call None when the child is gone)."""

    def __init__(self, args: list[str]) -> None:
        self._socket, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), *args],
                pass_fds=(theirs.fileno(),),
                cwd=_PACKAGE_ROOT,
                stdin=subprocess.DEVNULL,
            )
        self._connection = Connection(os.dup(self._socket.fileno()))
        self.load_reply: tuple[str, object] | None = None  # ("ok", seconds) or ("error", what load raised)
        self.loaded = threading.Event()  # set once load_reply came, or the child is gone
        self.calls: dict[int, _Call] = {}
        self.gone = False
        self._lock = threading.Lock()  # calls, gone and sending
        threading.Thread(target=self._read, name=f"frontend-{self.process.pid}", daemon=True).start()

    def send(self, call: _Call, limit: int | None = None) -> bool:
        """Hand a call to the child unless it holds `limit` calls already (False); a child that is
        gone finishes the call with None."""
        with self._lock:
            if limit is not None and len(self.calls) >= limit:
                return False
            if not self.gone:
                self.calls[call.message[1]] = call
                try:
                    self._connection.send(call.message)
                    return True
                except _LOST:
                    del self.calls[call.message[1]]
                    self.gone = True  # the next call starts another
        call.finish(None)
        return True

    def cancel(self, call_id: int) -> None:
        """Ask the child to stop a call; it answers it (with Cancelled) at its next sentence or segment."""
        with self._lock:
            if not self.gone:
                try:
                    self._connection.send(("cancel", call_id))
                except _LOST:
                    pass  # gone: the reader finishes every call

    def _read(self) -> None:
        try:
            self.load_reply = self._connection.recv()
            self.loaded.set()
            while True:
                call_id, status, value = self._connection.recv()
                with self._lock:
                    call = self.calls.pop(call_id, None)
                if call is not None:
                    call.finish((status, value))
        except (*_LOST, pickle.UnpicklingError):
            pass
        finally:
            with self._lock:
                self.gone = True
                held, self.calls = list(self.calls.values()), {}
            self.loaded.set()
            for call in held:
                call.finish(None)
            self._connection.close()

    def stop(self, kill: bool = False) -> None:
        """Kill the child, or end the connection (the child exits by itself); wait until it has gone."""
        if kill:
            self.process.kill()
        try:
            self._socket.shutdown(socket.SHUT_RDWR)  # the child sees the end; the reader wakes up
        except OSError:
            pass
        try:
            self.process.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._socket.close()


class FrontendProcess:
    """TextFrontend's service interface (load, text_to_segments, text_to_phoneme_text,
    reload_replace_dict), served by a child process with bounded admission and cancellation."""

    def __init__(self, replace_dict_path: Path | None = None, cache_dir: Path | None = None) -> None:
        self._args = [str(Path(path).resolve()) if path else "" for path in (replace_dict_path, cache_dir)]
        self._lock = threading.Lock()  # which child is current
        self._ids = itertools.count()
        self.load_s = 0.0  # how long the child took to load, in its own time
        self._call_s = 1.0  # a running average of how long calls take, for Retry-After
        self._child: _Child | None = _Child(self._args)

    # ----------------------------------------------------------------------------- lifecycle
    def load(self) -> None:
        """Wait until the child has loaded; raises what its load raised."""
        try:
            self._ready_child()
        except _ChildLost:
            self._ready_child()

    def _ready_child(self) -> _Child:
        """The child, started again if it is gone, once it has loaded; raises what its load raised,
        _ChildLost when it died while loading."""
        with self._lock:
            if self._child is None:
                raise RuntimeError("the text frontend's process was closed")
            if self._child.gone:
                _LOGGER.warning("The text frontend's process stopped; starting it again")
                self._child = _Child(self._args)
            child = self._child
        child.loaded.wait()
        if child.load_reply is None:
            raise _ChildLost
        self.load_s = _unwrap(child.load_reply)
        return child

    def _restart(self, child: _Child) -> None:
        """Kill `child` and start another, unless that happened already."""
        with self._lock:
            if self._child is not child:
                return
            self._child = _Child(self._args)
        child.stop(kill=True)

    def close(self) -> None:
        """End the connection (the child exits) and wait for the child."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.stop()

    @property
    def pid(self) -> int | None:
        child = self._child
        return None if child is None else child.process.pid

    def rss_mib(self) -> float:
        return memory.rss_mib(self.pid) if self.pid else 0.0

    @property
    def in_flight(self) -> int:
        """Calls the child is working on (a cancelled one until the child has stopped it)."""
        child = self._child
        return 0 if child is None else len(child.calls)

    # ----------------------------------------------------------------------------- the frontend's calls
    def text_to_segments(self, text: str, use_phoneme: bool = False, cancel: CancelToken | None = None) -> list[Segment]:
        return self._call("text_to_segments", (text, use_phoneme), cancel)

    def text_to_phoneme_text(self, text: str, cancel: CancelToken | None = None) -> str:
        return self._call("text_to_phoneme_text", (text,), cancel)

    def reload_replace_dict(self) -> int:
        return self._call("reload_replace_dict", (), None)

    def _call(self, name: str, args: tuple, cancel: CancelToken | None):
        """Ask the child; raises FrontendBusy past MAX_CALLS, Cancelled once `cancel` is, and what the
        frontend raised. A child that dies meanwhile is started again and asked once more."""
        if cancel is not None:
            cancel.check()
        start = time.monotonic()
        call_id = next(self._ids)
        for attempt in (1, 2):
            try:
                child = self._ready_child()
            except _ChildLost:
                child = self._ready_child()
            call = _Call(("call", call_id, name, args))
            if not child.send(call, MAX_CALLS if attempt == 1 else None):
                raise FrontendBusy(MAX_CALLS, max(1, math.ceil(self._call_s)))
            reply = self._wait(child, call, cancel)
            if reply is not None:
                self._call_s = 0.8 * self._call_s + 0.2 * (time.monotonic() - start)
                return _unwrap(reply)
        raise RuntimeError("the text frontend's process stopped twice during one call")

    def _wait(self, child: _Child, call: _Call, cancel: CancelToken | None) -> tuple[str, object] | None:
        """The child's reply to `call`: None when the child died; raises Cancelled (after telling
        the child) once `cancel` is, and SynthesisError (after a restart) past CALL_TIMEOUT_S."""
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not call.done.wait(_POLL_S):
            if cancel is not None:
                try:
                    cancel.check()
                except Cancelled:
                    child.cancel(call.message[1])
                    raise
            if time.monotonic() > deadline:
                _LOGGER.error("The text frontend took over %.0f s on one call; starting it again", CALL_TIMEOUT_S)
                self._restart(child)
                raise SynthesisError(
                    f"The text could not be prepared within {CALL_TIMEOUT_S:.0f} s; try a shorter or plainer text."
                )
        return call.reply


class _ChildLost(RuntimeError):
    """The child died while it loaded."""

    def __init__(self) -> None:
        super().__init__("the text frontend's process stopped while it loaded")


def _unwrap(reply: tuple[str, object]):
    status, value = reply
    if status == "error":
        raise value
    return value


# --------------------------------------------------------------------------------- the child
def _sendable(error: BaseException) -> BaseException:
    """The error itself when pickling keeps its type and message, else a RuntimeError that says what it was."""
    try:
        copy = pickle.loads(pickle.dumps(error))
    except Exception:  # not picklable: sent as its type and message
        copy = None
    if type(copy) is type(error) and str(copy) == str(error):
        return error
    return RuntimeError(f"{type(error).__name__}: {error}")


def serve(connection: Connection, replace_dict_path: Path | None, cache_dir: Path | None) -> None:
    """Load a TextFrontend, then run each call in a thread of its own until the app closes its end."""
    from glmtts.frontend import TextFrontend

    frontend = TextFrontend(replace_dict_path, cache_dir)
    start = time.perf_counter()
    gc.disable()  # no cycle collection while the dictionaries are built: 20 % faster
    try:
        frontend.load()
    except Exception as error:
        connection.send(("error", _sendable(error)))
        return
    gc.freeze()  # they live as long as the process: later collections skip them
    gc.enable()
    connection.send(("ok", time.perf_counter() - start))
    sending = threading.Lock()
    tokens: dict[int, CancelToken] = {}

    def run(call_id: int, name: str, args: tuple) -> None:
        try:
            extra = {"cancel": tokens[call_id]} if name in _CANCELLABLE else {}
            reply = (call_id, "ok", getattr(frontend, name)(*args, **extra))
        except Exception as error:
            reply = (call_id, "error", _sendable(error))
        finally:
            tokens.pop(call_id, None)
        with sending:
            try:
                connection.send(reply)
            except _LOST:
                return  # the app is gone; the main loop ends
        if args and isinstance(args[0], str) and len(args[0]) > _TRIM_AFTER_CHARS:
            memory.trim()

    while True:
        try:
            message = connection.recv()
        except _LOST:
            return  # the app closed its end, or is gone
        if message[0] == "cancel":
            token = tokens.get(message[1])
            if token is not None:
                token.cancel()
            continue
        _, call_id, name, args = message
        tokens[call_id] = CancelToken()
        threading.Thread(target=run, args=(call_id, name, args), name=f"call-{call_id}", daemon=True).start()


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the app, which closes our connection
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    descriptor, replace_dict, cache_dir = argv
    with Connection(int(descriptor)) as connection:
        try:
            serve(connection, Path(replace_dict) if replace_dict else None, Path(cache_dir) if cache_dir else None)
        except _LOST:
            pass  # the app closed its end while this process loaded


if __name__ == "__main__":
    main(sys.argv[1:])
