"""The text frontend in a process of its own, behind TextFrontend's interface.

The frontend is pure Python: loading its grammars and dictionaries takes 1.4 s on a 2-core
machine, and each request's text work holds the GIL. In a child process it loads on the second
core while the app imports its web libraries, and later its work runs beside the requests' other
Python instead of taking turns with it.

`FrontendProcess(...)` starts the child at once; `load()` waits until it has loaded. Calls go one at
a time over a private socket pair (pickled, so errors come back as the frontend raised them). A
child that died is started again on the next call, which is then retried once. The child exits when
the app closes its end or dies.

    python -m glmtts.frontend.process FD REPLACE_DICT CACHE_DIR   (what FrontendProcess runs)
"""

from __future__ import annotations

import gc
import logging
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
from glmtts.types import Segment, SynthesisError

_LOGGER = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds glmtts/
_STOP_WAIT_S = 5.0
CALL_TIMEOUT_S = 120.0  # a call still running then is stopped (the longest text takes a few seconds)
_TRIM_AFTER_CHARS = 2000  # a call on a text this long hands its freed memory back to the system
_LOST = (EOFError, OSError)  # what a call sees when the child is gone


class FrontendProcess:
    """TextFrontend's service interface (load, text_to_segments, text_to_phoneme_text,
    reload_replace_dict), served by a child process."""

    def __init__(self, replace_dict_path: Path | None = None, cache_dir: Path | None = None) -> None:
        self._args = [str(Path(path).resolve()) if path else "" for path in (replace_dict_path, cache_dir)]
        self._lock = threading.Lock()  # one call at a time on the connection
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None
        self._loaded = False
        self.load_s = 0.0  # how long the child took to load, in its own time
        self._start()

    # ----------------------------------------------------------------------------- lifecycle
    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), *self._args],
                pass_fds=(theirs.fileno(),),
                cwd=_PACKAGE_ROOT,
                stdin=subprocess.DEVNULL,
            )
        self._connection = Connection(ours.detach())
        self._loaded = False

    def load(self) -> None:
        """Wait until the child has loaded; raises what its load raised."""
        with self._lock:
            _unwrap(self._wait_loaded())

    def _wait_loaded(self) -> tuple[str, object]:
        """The child's reply to its load: ("ok", seconds) or ("error", what it raised)."""
        if self._loaded:
            return "ok", self.load_s
        reply = self._connection.recv()
        if reply[0] == "ok":
            self.load_s, self._loaded = reply[1], True
        return reply

    def close(self) -> None:
        """Close the connection (the child exits) and wait for the child."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            try:
                self._process.wait(_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def rss_mib(self) -> float:
        return memory.rss_mib(self.pid) if self.pid else 0.0

    # ----------------------------------------------------------------------------- the frontend's calls
    def text_to_segments(self, text: str, use_phoneme: bool = False) -> list[Segment]:
        return self._call("text_to_segments", text, use_phoneme)

    def text_to_phoneme_text(self, text: str) -> str:
        return self._call("text_to_phoneme_text", text)

    def reload_replace_dict(self) -> int:
        return self._call("reload_replace_dict")

    def _call(self, name: str, *args):
        with self._lock:
            try:
                reply = self._ask(name, args)
            except _LOST as error:  # the connection, not an error the frontend raised (those are replies)
                _LOGGER.warning("The text frontend's process stopped (%s); starting it again", type(error).__name__)
                self._restart()
                reply = self._ask(name, args)
        return _unwrap(reply)

    def _ask(self, name: str, args: tuple) -> tuple[str, object]:
        if self._connection is None:
            raise RuntimeError("the text frontend's process was closed")
        loaded = self._wait_loaded()
        if loaded[0] != "ok":
            return loaded
        self._connection.send((name, args))
        if not self._connection.poll(CALL_TIMEOUT_S):
            _LOGGER.error("The text frontend took over %.0f s on one call; starting it again", CALL_TIMEOUT_S)
            self._restart()
            raise SynthesisError(f"The text could not be prepared within {CALL_TIMEOUT_S:.0f} s; try a shorter or plainer text.")
        return self._connection.recv()

    def _restart(self) -> None:
        if self._process is not None:
            self._process.kill()
        self._stop()
        self._start()


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
        if type(copy) is type(error) and str(copy) == str(error):
            return error
    except Exception:
        pass
    return RuntimeError(f"{type(error).__name__}: {error}")


def serve(connection: Connection, replace_dict_path: Path | None, cache_dir: Path | None) -> None:
    """Load a TextFrontend, then answer calls until the app closes its end."""
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
    while True:
        try:
            name, args = connection.recv()
        except (EOFError, OSError):
            return  # the app closed its end, or is gone
        try:
            reply = ("ok", getattr(frontend, name)(*args))
        except Exception as error:
            reply = ("error", _sendable(error))
        connection.send(reply)
        if args and isinstance(args[0], str) and len(args[0]) > _TRIM_AFTER_CHARS:
            memory.trim()


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the app, which closes our connection
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    descriptor, replace_dict, cache_dir = argv
    with Connection(int(descriptor)) as connection:
        serve(connection, Path(replace_dict) if replace_dict else None, Path(cache_dir) if cache_dir else None)


if __name__ == "__main__":
    main(sys.argv[1:])
