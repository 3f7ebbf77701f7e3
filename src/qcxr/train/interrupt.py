"""SIGTERM and SIGINT during training: stop at the next step boundary, save, say so.

`handling()` wraps training (train_frozen, train_finetune, and whatever a caller wraps around
them, such as a grid): while it is active, SIGTERM and SIGINT only set a flag. The trainers look
at `requested()` after every step (fine-tune) or every on-device chunk (frozen: a chunk is up to
CHUNK_STEPS batches and ends at every mid-epoch checkpoint point, so a signal waits for at most
that chunk), save the latest checkpoint at that exact position, write status "preempted" and
return. A second signal changes nothing (the first is being acted on; a save is never cut short);
SIGKILL still ends the process at once.

Handlers are installed only in the main thread (elsewhere `handling()` does nothing) and the
previous ones are restored when the outermost `handling()` ends. The flag is cleared when the
outermost `handling()` starts and kept after it ends, so a caller (a grid) can ask `requested()`
whether to stop before the next run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_requested: str | None = None  # name of the first signal received ("SIGTERM", "SIGINT")
_count = 0  # signals received while handling
_depth = 0  # nesting of handling() in the main thread
_previous: dict[int, object] = {}


def requested() -> str | None:
    """The name of the signal that asked training to stop ("SIGTERM", "SIGINT"), or None."""
    return _requested


def clear() -> None:
    global _requested, _count
    _requested, _count = None, 0


def request(name: str) -> None:
    """Ask training to stop as a signal would (for callers that stop it some other way)."""
    global _requested, _count
    _count += 1
    if _requested is None:
        _requested = name


def _handler(signum: int, frame: object) -> None:
    request(signal.Signals(signum).name)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGTERM/SIGINT set the stop flag while this is active (main thread only; nestable)."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        clear()
        for sig in SIGNALS:
            _previous[sig] = signal.signal(sig, _handler)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for sig, previous in _previous.items():
                # None: a handler installed outside Python; the default is the closest
                signal.signal(sig, signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]
            _previous.clear()
