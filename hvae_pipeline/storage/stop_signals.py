"""SIGINT and SIGTERM, the signals a user or a batch scheduler sends to stop a run, handled for a block of code.

By default SIGTERM ends Python without running ``finally`` clauses; the tools that write output install their own
handlers for the length of the work (staged folders raise and clean up, the training loop saves a checkpoint first).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Any  # a callable(signum, frame), signal.SIG_DFL or signal.SIG_IGN


@contextlib.contextmanager
def stop_signal_handlers(choose: Callable[[Handler], Handler]) -> Iterator[dict[int, Handler]]:
    """While the block runs, each stop signal gets the handler ``choose(previous handler)`` returns.

    Yields the previous handlers by signal number (a handler may reinstate them early); they are restored when the
    block ends. Off the main thread, the one place Python lets a handler be installed, nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number, handler in previous.items():
        signal.signal(number, choose(handler))
    try:
        yield previous
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def raise_system_exit(signum: int, frame: object) -> None:
    """Signal handler: unwind like ``sys.exit`` (running ``finally`` clauses), with the shell's 128 + signal code."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Defer stop signals until the block ends (they are delivered then); a no-op where the system cannot."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
