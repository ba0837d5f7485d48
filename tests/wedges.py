"""What a process can be stuck on when its deadline passes: each wedge, written once.

Tests and benchmarks build child scripts from the same pieces:

- :data:`KINDS`: each wedge as data, under the one name that test ids,
  benchmark rows and docs all use;
- :data:`HELPERS`: the source of the functions below, for a child script to
  define (they import what they need when called, so defining them loads
  nothing: a benchmark child can keep ``ctypes`` and ``logging`` out);
- :data:`PREAMBLE`: the tests' child preamble, the usual imports then HELPERS.

The functions are importable too, for code that wedges in process.
"""

# No `from __future__ import annotations`: the helpers' sources are copied into
# child scripts, where only quoted annotations cost nothing.

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable

FOREVER = 3600  # seconds: "never returns" for a test, a benchmark or a fleet soak
BUSY_THREADS = 32


@dataclass(frozen=True)
class Wedge:
    name: str
    description: str
    #: One statement, given HELPERS and :attr:`imports`.  It blocks the thread
    #: that runs it for good; with :attr:`at_exit` it returns, and the
    #: interpreter wedges in finalization once the script ends.
    code: str
    #: The modules :attr:`code` names, for a child to import before arming.
    imports: tuple[str, ...] = ()
    #: What must be in place before arming, run once in the main thread.
    setup: str = ""
    at_exit: bool = False
    #: The function a stack dump shows stuck, when not the one that ran :attr:`code`.
    frame: str | None = None


def deadlock_on_mutex(libc: "ctypes.CDLL") -> None:
    """Lock a default pthread mutex twice from one thread: blocked in libc for good.

    Called through ``ctypes.CDLL`` the GIL is released while it blocks; through
    ``ctypes.PyDLL`` it is held.
    """
    import ctypes

    mutex = ctypes.create_string_buffer(128)  # >= sizeof(pthread_mutex_t)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # a default mutex locked twice by its owner


def start_busy_threads(n: int) -> None:
    """Start *n* daemon threads that spin in bytecode for good, contending for the GIL."""
    import threading
    import time

    gate = threading.Event()  # they start spinning together: no thread start under contention

    def spin() -> None:
        gate.wait()
        while True:
            pass

    for _ in range(n):
        threading.Thread(target=spin, daemon=True).start()
    gate.set()
    time.sleep(0.05)  # let them all get going


def churn_arm_and_cancel(n: int) -> "Callable[[], None]":
    """Start *n* threads that arm and cancel in a loop; returns what stops and joins them.

    So hardexit's registry lock is often held by some thread, as at a fork.
    """
    import threading

    import hardexit

    stopping = threading.Event()

    def churn() -> None:
        while not stopping.is_set():
            hardexit.arm_hard_exit(30, exit_code=1).cancel()

    threads = [threading.Thread(target=churn) for _ in range(n)]
    for thread in threads:
        thread.start()

    def stop() -> None:
        stopping.set()
        for thread in threads:
            thread.join()

    return stop


def kernel_timers_armed() -> int:
    """How many of hardexit's kernel timers are armed, read back from the kernel.

    So a test can show that every cancelled deadline is gone from the kernel
    too, without waiting for one to pass.
    """
    import ctypes

    import hardexit

    backstop = hardexit._guard._registry.backstop
    timers = [*backstop._exit_timers.values(), backstop._kill_timer, backstop._dump_timer]
    libc = ctypes.CDLL(None, use_errno=True)
    left = (ctypes.c_long * 4)()  # struct itimerspec: interval, then the time left
    armed = 0
    for timer in timers:
        if timer is None:
            continue
        if libc.timer_gettime(timer, left) != 0:
            raise OSError(ctypes.get_errno(), "timer_gettime")
        armed += bool(left[2] or left[3])
    return armed


def block_finalization(sleep: "Callable[[float], object]") -> None:
    """Leave ``__main__`` an object whose ``__del__`` calls *sleep* for good.

    It runs when finalization clears ``__main__``, after the script ended and
    after Python threads stopped running.
    """
    import __main__

    class Finalizer:
        # Bound now: module globals are already None when __del__ runs.
        def __del__(
            self, sleep: "Callable[[float], object]" = sleep, seconds: int = FOREVER
        ) -> None:
            sleep(seconds)

    __main__.wedged_finalizer = Finalizer()


HELPERS = "\n\n".join(
    [f"FOREVER = {FOREVER}"]
    + [
        inspect.getsource(f)
        for f in (
            deadlock_on_mutex,
            start_busy_threads,
            churn_arm_and_cancel,
            kernel_timers_armed,
            block_finalization,
        )
    ]
)

PREAMBLE = "import asyncio, atexit, ctypes, os, sys, threading, time\nimport hardexit\n\n" + HELPERS

NATIVE_GIL_RELEASED = Wedge(
    "native_gil_released",
    "a native call that released the GIL (libc sleep through ctypes.CDLL), as most FFI and I/O",
    "ctypes.CDLL(None).sleep(FOREVER)",
    imports=("ctypes",),
)
NATIVE_GIL_HELD = Wedge(
    "native_gil_held",
    "a native call that holds the GIL (libc sleep through ctypes.PyDLL): no Python thread runs",
    "ctypes.PyDLL(None).sleep(FOREVER)",
    imports=("ctypes",),
)
MUTEX_GIL_RELEASED = Wedge(
    "mutex_gil_released",
    "a pthread mutex locked twice by its owner, entered through ctypes.CDLL (GIL released)",
    "deadlock_on_mutex(ctypes.CDLL(None))",
    imports=("ctypes",),
)
MUTEX_GIL_HELD = Wedge(
    "mutex_gil_held",
    "a pthread mutex locked twice by its owner, entered through ctypes.PyDLL (GIL held)",
    "deadlock_on_mutex(ctypes.PyDLL(None))",
    imports=("ctypes",),
)
BYTECODE_SPIN = Wedge("bytecode_spin", "pure Python that never yields", "while True: pass")
GIL_CONTENDED = Wedge(
    "gil_contended",
    f"bytecode spinning while {BUSY_THREADS} busy threads, started before arming, contend"
    " for the GIL",
    "while True: pass",
    setup=f"start_busy_threads({BUSY_THREADS})",
)
FINALIZER_BLOCKS = Wedge(
    "finalizer_blocks",
    "a __del__ that sleeps for good during interpreter finalization",
    "block_finalization(time.sleep)",
    imports=("time",),
    at_exit=True,
    frame="__del__",
)

KINDS = (
    NATIVE_GIL_RELEASED,
    NATIVE_GIL_HELD,
    MUTEX_GIL_RELEASED,
    MUTEX_GIL_HELD,
    BYTECODE_SPIN,
    GIL_CONTENDED,
    FINALIZER_BLOCKS,
)
