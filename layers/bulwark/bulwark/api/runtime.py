"""What each function does once its init is done, before its first request.

A warm container keeps everything its init made (modules, pydantic schemas, compiled patterns, clients) for its whole
life, so the cycle collector need not walk those objects again: gc.freeze() sets them aside. A request makes many
short-lived objects that reference counting frees at once (a dense 200,000-character request makes 25,000 regex
matches and tuples); with the default threshold (700) the collector ran about 60 times per such request and now and then
walked every object the process holds, which added 10-17 ms to one request in twenty (bench/validator_bench.py). A
threshold of 20,000 still collects garbage cycles, which the request path rarely makes, many times a minute.
"""

import gc
import os
import threading
from collections.abc import Callable
from types import FrameType

GEN0_THRESHOLD = 20_000


def settle_after_init() -> None:
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def flush_on_shutdown(flush: Callable[[], object]) -> None:
    """Run `flush` when the execution environment shuts down, then exit.

    Lambda's graceful shutdown sends the runtime SIGTERM before it discards an environment (on AWS only when an
    extension is registered; without one the process is simply stopped, and what `flush` would write is lost). The
    local stack sends it whenever it recycles or stops an environment. Installed from the init (the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    import signal  # imported where used: only the validator installs a handler (its enums cost ~3 ms to import)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        try:
            flush()
        finally:
            os._exit(0)  # as the default SIGTERM would end it, without waiting for the runtime's threads

    signal.signal(signal.SIGTERM, on_sigterm)
