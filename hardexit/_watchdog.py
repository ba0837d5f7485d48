"""The watchdog thread: exits at the deadline, and says why first.

One per process, started by the first arm and idle (blocked on a lock, no
polling) whenever nothing is armed.  It is a plain ``_thread`` thread: it
needs no ``threading`` bookkeeping lock that a wedged thread could hold, and
nobody joins it at exit, so it never delays a normal exit.

It wakes a GIL switch interval before the earliest deadline and keeps the
GIL until then.  When the deadline passes it marks the guard as firing
(``cancel()`` says False from then on), moves the kernel backstop to
``deadline + REPORT_DEADLINE``, reports inline, and calls ``os._exit``.
Inline, because every hand-off to another thread costs a GIL switch interval
when other threads are busy; the moved backstop is what bounds a report that
blocks.  Without a backstop the report runs in a helper thread instead, and
the watchdog waits for it until that same moment at most.

If the watchdog cannot run at all (a C call holds the GIL, the GIL is
contended, finalization froze it), the backstop exits at ``deadline +
BACKSTOP_DELAY``.  Both exit with the guard's code, so whichever comes first
is right.
"""

from __future__ import annotations

import _thread
import math
import os
import sys
import time

from . import _diagnostics
from ._backstop import REPORT_DEADLINE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._guard import HardExit, Registry

# The most the watchdog wakes early and keeps the GIL before a deadline.
_MAX_LEAD = 0.005


def watch(registry: Registry) -> None:
    while True:
        with registry.lock:
            first = registry.due()
            now = time.monotonic()
            if first is not None and now >= first.deadline:
                registry.firing = first  # from here on, cancel() says False
                assert registry.backstop is not None
                bounded = registry.backstop.schedule(
                    first.deadline + REPORT_DEADLINE, first.exit_code
                )
                break
            registry.watchdog_due = deadline = math.inf if first is None else first.deadline
        # Wake a switch interval early: getting the GIL back from a busy
        # thread takes about that long.  An arm with an earlier deadline
        # releases `wake`; a cancel does not bother, as waking for a deadline
        # that was cancelled costs one loop.
        wait = deadline - now - min(sys.getswitchinterval(), _MAX_LEAD)
        if wait > 0:
            registry.wake.acquire(True, min(wait, _thread.TIMEOUT_MAX))
        else:
            # Holding the GIL, a few ms before the deadline: keep it until
            # then, as any busy thread may; a sleep would give it away.
            while time.monotonic() < deadline:
                pass
    fire(first, now, bounded)


def fire(guard: HardExit, fired_at: float, bounded: bool) -> None:
    # The report releases the GIL at every write, and getting it back costs a
    # switch interval (5 ms) when other threads are busy.  The process is
    # exiting: nothing is left to lose by making each hand-off near-free.
    sys.setswitchinterval(1e-6)
    try:
        if bounded:
            _diagnostics.report(guard, fired_at)
        else:
            done = _thread.allocate_lock()
            done.acquire()
            _thread.start_new_thread(_report_then_release, (guard, fired_at, done))
            done.acquire(True, max(guard.deadline + REPORT_DEADLINE - time.monotonic(), 0.0))
    finally:
        os._exit(guard.exit_code)


def _report_then_release(guard: HardExit, fired_at: float, done: _thread.LockType) -> None:
    try:
        _diagnostics.report(guard, fired_at)
    finally:
        done.release()
