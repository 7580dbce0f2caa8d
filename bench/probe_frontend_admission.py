"""Issue 16's frontend probe: how long a short text waits while hostile clients send long ones and leave.

    .venv/bin/python bench/probe_frontend_admission.py [--root DIR] [--clients 6] [--text "1你"|"。"] [--stay]

Starts the text frontend's process (`FrontendProcess`) from this checkout, or from the one given as
--root (e.g. `git worktree add /tmp/old HEAD` for the code before a change), waits for it to load,
then: `--clients` threads each send a 20,000-character text (`--text` repeated) and leave 0.1 s
later (their CancelToken is cancelled, where the frontend takes one; with --stay they wait for
their answers); meanwhile a 12-character
Chinese text is sent. Prints the short text's latency, how long until the frontend held no call of
the hostile clients any more, how their calls ended (FrontendBusy: 429), and the child's memory
(before, at its peak while they ran, after).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import threading
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
SHORT = "今天天气很好，我们去公园"  # 12 characters
LONG_CHARS = 20000
LEAVE_AFTER_S = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=_ROOT, help="the checkout whose frontend process is probed")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--text", default="1你", help="the unit the hostile texts repeat")
    parser.add_argument("--stay", action="store_true", help="the clients wait for their answers")
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))
    from glmtts.frontend.process import FrontendProcess
    from glmtts.types import CancelToken

    frontend = FrontendProcess()
    frontend.load()
    rss_before = frontend.rss_mib()
    cancellable = "cancel" in inspect.signature(frontend.text_to_segments).parameters
    hostile = (args.text * (LONG_CHARS // len(args.text) + 1))[:LONG_CHARS]
    outcomes: list[str] = []

    def client() -> None:
        token = CancelToken()
        if not args.stay:
            threading.Timer(LEAVE_AFTER_S, token.cancel).start()
        try:
            frontend.text_to_segments(hostile, **({"cancel": token} if cancellable else {}))
            outcomes.append("answered")
        except Exception as error:  # every outcome is counted by name
            outcomes.append(type(error).__name__)

    peak = [rss_before]
    done = threading.Event()

    def sample_memory() -> None:
        while not done.wait(0.05):
            peak.append(frontend.rss_mib())

    threading.Thread(target=sample_memory, daemon=True).start()
    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(LEAVE_AFTER_S / 2)  # the hostile texts are sent first, as in the reproduction
    sent = time.monotonic()
    frontend.text_to_segments(SHORT)
    short_s = time.monotonic() - sent
    for thread in threads:
        thread.join()
    idle = getattr(frontend, "in_flight", None)
    while idle is not None and frontend.in_flight:
        time.sleep(0.01)
    busy_s = time.monotonic() - start
    done.set()
    print(f"frontend from {args.root.resolve()} (takes a cancel token: {cancellable})")
    leaving = "staying for their answers" if args.stay else f"leaving after {LEAVE_AFTER_S} s"
    print(f"{args.clients} clients x {LONG_CHARS:,} characters of {args.text!r}, {leaving}")
    print(f"12-character text answered in      {short_s:7.2f} s")
    print(f"frontend busy with them for         {busy_s:7.2f} s")
    print(f"their outcomes: {', '.join(f'{outcomes.count(name)} {name}' for name in sorted(set(outcomes)))}")
    print(f"child's memory: {rss_before:.0f} MiB before, {max(peak):.0f} MiB at most, {frontend.rss_mib():.0f} MiB after")
    frontend.close()


if __name__ == "__main__":
    main()
