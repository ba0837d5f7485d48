"""The watchdog thread: exits at the deadline, and says why first.

One per process, started by the first arm, idle on a lock whenever nothing is
due.  Its timing and its place among the kernel's stages are told in
``docs/design.md`` ("Stages"); here is only how it keeps them.
"""

from __future__ import annotations

import _thread
import math
import os
import sys
import time

from . import _diagnostics
from ._config import MAX_LEAD, REPORT_DEADLINE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from typing import Any

    from ._guard import HardExit, Registry
else:
    import _signal  # signal's C half: `signal` itself imports enum


def original(module: str, name: str) -> Any:
    """*module.name* as the interpreter made it, even if gevent or eventlet replaced it.

    gevent and eventlet swap the thread and blocking APIs for greenlet
    versions: a watchdog that is a greenlet, or that sleeps in a greenlet
    ``poll()``, blocks the hub and never runs while the application is
    wedged.  Bound at import, a later ``monkey.patch_all()`` cannot reach
    them; an earlier one is undone through the patcher's own record.
    """
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched(module):
        return gevent_monkey.get_original(module, name)
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    # eventlet's records name the modules by their patch_all() keywords.
    eventlet_name = {"_thread": "thread"}.get(module, module)
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched(eventlet_name):
        return getattr(eventlet_patcher.original(module), name)
    return getattr(sys.modules[module], name)


start_new_thread: Callable[..., int] = original("_thread", "start_new_thread")
allocate_lock: Callable[[], Any] = original("_thread", "allocate_lock")
RLock: Callable[[], Any] = original("_thread", "RLock")


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
        ident = start_new_thread(watch, (registry,))
    else:
        before = mask(_signal.SIG_BLOCK, [_signal.SIGPIPE])
        try:
            ident = start_new_thread(watch, (registry,))
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
        with registry.lock:
            registry.reconcile()  # after an arm or cancel that an exception cut short
            first = registry.due()
            now = registry.clock()
            if first is not None and now >= first.deadline:
                registry.firing = first
                bounded, dumped = registry.backstop.begin_report(first.deadline, first.exit_code)
                break
            registry.watchdog_due = deadline = math.inf if first is None else first.deadline
        # Wake a switch interval early: getting the GIL back from a busy
        # thread takes about that long.  An arm with an earlier deadline
        # releases `wake`; a cancel does not bother, as waking for a deadline
        # that was cancelled costs one loop.
        wait = deadline - now - min(sys.getswitchinterval(), MAX_LEAD)
        if wait > 0:
            registry.wake.acquire(True, min(wait, _thread.TIMEOUT_MAX))
        else:
            # Holding the GIL, a few ms before the deadline: keep it until
            # then, as any busy thread may; a sleep would give it away.
            while registry.clock() < deadline:
                pass
    fire(first, now, bounded, dumped)


def fire(guard: HardExit, fired_at: float, bounded: bool, stacks_dumped: bool) -> None:
    # The report releases the GIL at every write, and getting it back costs a
    # switch interval (5 ms) when other threads are busy.  The process is
    # exiting: nothing is left to lose by making each hand-off near-free.
    sys.setswitchinterval(1e-6)
    try:
        if bounded:
            _diagnostics.report(guard, fired_at, stacks_dumped)
        else:
            done = allocate_lock()
            done.acquire()
            start_new_thread(_report_then_release, (guard, fired_at, done))
            done.acquire(True, max(guard.deadline + REPORT_DEADLINE - time.monotonic(), 0.0))
    finally:
        os._exit(guard.exit_code)


def _report_then_release(guard: HardExit, fired_at: float, done: Any) -> None:
    try:
        _diagnostics.report(guard, fired_at, False)
    finally:
        done.release()
