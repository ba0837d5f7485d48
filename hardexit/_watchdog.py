"""The watchdog thread: exits at the deadline, and says why first.

One per process, started by the first arm and idle (blocked on a lock, no
polling) whenever nothing is armed.  It is a plain ``_thread`` thread: it
needs no ``threading`` bookkeeping lock that a wedged thread could hold, and
nobody joins it at exit, so it never delays a normal exit.

When the earliest deadline passes it hands the diagnostics to a helper
thread, waits for them at most until ``deadline + 3/4 GRACE``, and calls
``os._exit``.  If it cannot run at all (a C call holds the GIL, or
finalization froze it), the backstop exits at ``deadline + GRACE``; both
exit with the same code, so whichever comes first is right.
"""

from __future__ import annotations

import _thread
import math
import os
import time

from . import _diagnostics
from ._backstop import GRACE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._guard import HardExit, Registry

_DIAGNOSTICS_SHARE = 0.75  # of GRACE; the rest is margin before the backstop


def watch(registry: Registry) -> None:
    while True:
        with registry.lock:
            first = registry.due()
            now = time.monotonic()
            if first is not None and now >= first.deadline:
                registry.firing = first  # from here on, cancel() says False
                break
            if first is None:
                registry.watchdog_due, wait = math.inf, -1.0
            else:
                registry.watchdog_due = first.deadline
                wait = min(first.deadline - now, _thread.TIMEOUT_MAX)
        # An arm with an earlier deadline releases `wake`; a cancel does not
        # bother: waking at a deadline that was cancelled costs one loop.
        registry.wake.acquire(True, wait)
    fire(first, now)


def fire(guard: HardExit, fired_at: float) -> None:
    done = _thread.allocate_lock()
    done.acquire()
    try:
        _thread.start_new_thread(_diagnostics.report, (guard, fired_at, done))
        budget = guard.deadline + GRACE * _DIAGNOSTICS_SHARE - time.monotonic()
        done.acquire(True, max(budget, 0.0))
    finally:
        os._exit(guard.exit_code)
