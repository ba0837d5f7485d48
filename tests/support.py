"""Child scripts that really wedge, and the bounds the tests hold them to."""

from __future__ import annotations

import textwrap

from hardexit.testing import IsolatedRun, run_isolated

# Tests assert generous bounds only; the tight numbers live in benchmarks/.
SLACK = 1.0

# Wedges, by name.  Each blocks the calling thread for 60 s unless killed.
WEDGES = {
    # A native call that released the GIL (most FFI and I/O).
    "native_gil_released": "ctypes.CDLL(None).sleep(60)",
    # A native call that holds the GIL: no Python thread can run.
    "native_gil_held": "ctypes.PyDLL(None).sleep(60)",
    # A pthread mutex locked twice by its owner, entered without / with the GIL.
    "mutex_gil_released": "deadlock_on_mutex(ctypes.CDLL(None))",
    "mutex_gil_held": "deadlock_on_mutex(ctypes.PyDLL(None))",
    # Pure Python that never yields.
    "bytecode_spin": "while True: pass",
}


PREAMBLE = """\
import asyncio, atexit, ctypes, os, sys, threading, time
import hardexit

def deadlock_on_mutex(libc):
    mutex = ctypes.create_string_buffer(128)  # >= sizeof(pthread_mutex_t)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # a default mutex locked twice by its owner
"""


def script(body: str) -> str:
    """A child script: the usual imports and wedges, then *body*."""
    return PREAMBLE + textwrap.dedent(body)


def run(body: str, *, limit: float = 10.0, **kwargs: object) -> IsolatedRun:
    return run_isolated(script(body), limit=limit, **kwargs)  # type: ignore[arg-type]


def assert_exited_by_deadline(result: IsolatedRun, exit_code: int) -> None:
    """Exited with *exit_code*, not before its deadline, and by deadline + SLACK."""
    assert not result.timed_out, f"still alive at the run's limit: {result!r}"
    assert result.exit_code == exit_code, result
    assert result.past_deadline is not None, f"nothing was armed: {result!r}"
    assert result.past_deadline >= 0.0, f"exited before its deadline: {result!r}"
    assert result.past_deadline <= SLACK, f"exited late: {result!r}"
