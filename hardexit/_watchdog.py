"""The watchdog thread: sleeps until the registry says a guard fires, then fires it.

One per process, started by the first arm, idle on the registry's wake-up
lock whenever nothing is due.  What fires, and when, is the registry's
decision (:meth:`Registry.next_step`); the watchdog only waits, spins the
last few milliseconds, reports and exits.  Its timing and its place among
the kernel's stages are told in ``docs/design.md`` ("Stages").
"""

from __future__ import annotations

import os
import sys
import time

from . import _diagnostics, _threads
from ._config import MAX_LEAD, REPORT_DEADLINE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from typing import Any

    from ._registry import Fire, Registry
else:
    import _signal  # signal's C half: `signal` itself imports enum


def start(registry: Registry) -> int | None:
    """Start the watchdog thread; its native thread id, where Linux can tell it.

    The id is known before the thread runs a line: glibc derives a thread's
    CPU-clock id from its kernel tid (``MAKE_THREAD_CPUCLOCK``), and the
    kernel ABI fixes that encoding.  So the first arm need not wait for the
    new thread to get the GIL, which under contention takes many switch
    intervals.

    The thread is born with SIGPIPE blocked (a new thread inherits its
    creator's mask).  Every report is written from it, to a stderr that may
    be a pipe with no reader left: with SIGPIPE at its default action that
    write would kill the process by signal 13 instead of the guard's exit
    code; blocked, the write fails with EPIPE instead.
    """
    mask = getattr(_signal, "pthread_sigmask", None)
    if mask is None:
        ident = _threads.start_new_thread(watch, (registry,))
    else:
        before = mask(_signal.SIG_BLOCK, [_signal.SIGPIPE])
        try:
            ident = _threads.start_new_thread(watch, (registry,))
        finally:
            if _signal.SIGPIPE not in before:
                mask(_signal.SIG_UNBLOCK, [_signal.SIGPIPE])
    clock_of = getattr(time, "pthread_getcpuclockid", None)
    if clock_of is None or not sys.platform.startswith("linux"):
        return None
    try:
        thread_id: int = ~(clock_of(ident) >> 3)
        return thread_id
    except OSError:
        return None


def watch(registry: Registry) -> None:
    while True:
        step = registry.next_step()
        if not isinstance(step, float):
            break
        # Wake a switch interval early: getting the GIL back from a busy
        # thread takes about that long.  An arm with an earlier deadline
        # wakes us; a cancel does not bother, as waking for a deadline that
        # was cancelled costs one loop.
        wait = step - registry.clock() - min(sys.getswitchinterval(), MAX_LEAD)
        if wait > 0:
            registry.sleep(wait)
        else:
            # Holding the GIL, a few ms before the deadline: keep it until
            # then, as any busy thread may; a sleep would give it away.
            while registry.clock() < step:
                pass
    fire(step)


def fire(step: Fire) -> None:
    # The report releases the GIL at every write, and getting it back costs a
    # switch interval (5 ms) when other threads are busy.  The process is
    # exiting: nothing is left to lose by making each hand-off near-free.
    sys.setswitchinterval(1e-6)
    guard = step.guard
    try:
        if step.bounded:
            _diagnostics.report(guard, step.fired_at, step.stacks_dumped)
        else:
            # Nothing in the kernel cuts a blocked report off: run it in a
            # thread of its own, and exit at the report's deadline regardless.
            done = _threads.allocate_lock()
            done.acquire()
            _threads.start_new_thread(_report_then_release, (guard, step.fired_at, done))
            cutoff = max(guard.deadline, step.fired_at) + REPORT_DEADLINE
            done.acquire(True, max(cutoff - time.monotonic(), 0.0))
    finally:
        os._exit(guard.exit_code)


def _report_then_release(guard: Any, fired_at: float, done: Any) -> None:
    try:
        _diagnostics.report(guard, fired_at, False)
    finally:
        done.release()
