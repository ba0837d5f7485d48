"""The tests' one process harness: child scripts that really wedge, the bounds
the tests hold them to, and how a test watches processes it did not start.

Every test that starts a process runs it through ``hardexit.testing``'s
:func:`~hardexit.testing.run_isolated` or :func:`~hardexit.testing.start_isolated`:
a real interpreter in its own session, under a subreaper that kills and
reaps all it started, its exit timed by its parent on the one
``time.monotonic()`` clock every process shares, its stdout and stderr read
back.  This module adds what several test modules need on top of that.
"""

from __future__ import annotations

import math
import os
import select
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping

from hardexit.testing import IsolatedRun, run_isolated

from . import wedges

#: How late past its deadline a process may exit, in every test: seconds.
#:
#: hardexit's own bound is 100 ms (README, guarantee 1); ``benchmarks/``
#: measures the tight numbers.  The rest is for the machine: the suite runs on
#: 2 cores beside other suites, and a process about to exit may wait that
#: long for a core.  Bounds measured from something other than a deadline
#: add what they must to it, named where they do.
SLACK = 1.0

#: Wedges one statement makes in any thread, by name: each blocks the thread for good.
WEDGES = {w.name: w.code for w in wedges.KINDS if not (w.setup or w.at_exit)}

#: The usual imports, and the helpers the wedges call.
PREAMBLE = wedges.PREAMBLE


def script(body: str) -> str:
    """A child script: the usual imports and wedges, then *body*."""
    return PREAMBLE + "\n" + textwrap.dedent(body)


def run(body: str, *, limit: float = 10.0, **kwargs: object) -> IsolatedRun:
    return run_isolated(script(body), limit=limit, **kwargs)  # type: ignore[arg-type]


def assert_exited_by_deadline(result: IsolatedRun, exit_code: int) -> None:
    """Exited with *exit_code*, not before its deadline, and by deadline + SLACK."""
    assert not result.timed_out, f"still alive at the run's limit: {result!r}"
    assert result.exit_code == exit_code, result
    assert result.past_deadline is not None, f"nothing was armed: {result!r}"
    assert result.past_deadline >= 0.0, f"exited before its deadline: {result!r}"
    assert result.past_deadline <= SLACK, f"exited late: {result!r}"


def assert_exited_after_arm(result: IsolatedRun, exit_code: int, seconds: float) -> None:
    """Exited with *exit_code*, *seconds* after the first arm, by then + SLACK."""
    assert not result.timed_out, f"still alive at the run's limit: {result!r}"
    assert result.exit_code == exit_code, result
    assert result.after_arm is not None, f"nothing was armed: {result!r}"
    assert seconds <= result.after_arm <= seconds + SLACK, result


def modules_loaded_by(module: str, *, after: str = "") -> set[str]:
    """The modules a clean interpreter loads to import *module*, once *after* (code) ran.

    Fails if the import starts a thread.
    """
    check = f"""
import sys, threading
{after}
before, threads = set(sys.modules), threading.active_count()
import {module}
assert threading.active_count() == threads, "importing {module} started a thread"
print(" ".join(sorted(set(sys.modules) - before)))
"""
    # The interpreter's own arguments: the child imports nothing before *check*.
    result = run_isolated(["-s", "-c", check], limit=60)
    assert result.exit_code == 0, result
    return set(result.stdout.split())


def thread_count(pid: int | str = "self") -> int:
    """How many threads the process *pid* has, as the kernel counts them."""
    return len(os.listdir(f"/proc/{pid}/task"))


class ExitWatch:
    """When processes that are not our children exit, on the ``time.monotonic()`` clock.

    Each is watched through a pidfd, opened by :meth:`add` while its pid
    still names it, so a reused pid cannot fool the watch; a pidfd is
    readable from the moment its process exits, zombie or reaped.
    """

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self.gone_at: dict[int, float] = {}
        self._pidfds: dict[int, int] = {}
        for pid in pids:
            self.add(pid)

    def add(self, pid: int) -> None:
        if pid in self.gone_at or pid in self._pidfds.values():
            return
        try:
            self._pidfds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            self.gone_at[pid] = time.monotonic()  # gone already: when we learned it

    def wait(
        self,
        until: float,
        *,
        also: Mapping[int, Callable[[], bool]] | None = None,
        first: bool = False,
    ) -> dict[int, float]:
        """Wait until each watched process has exited, or until *until*: :attr:`gone_at`.

        With *first*, return at the first exit seen, and sleep until *until*
        if nothing is watched (a sampling loop's tick).  *also* maps other fds
        to callables, called when the fd is readable (a pipe to read on
        meanwhile); one that returns False is no longer watched.
        """
        poller = select.poll()
        for fd in [*self._pidfds, *(also or {})]:
            poller.register(fd, select.POLLIN)
        callbacks = dict(also or {})
        while self._pidfds or first:
            left = until - time.monotonic()
            exited = False
            # At least once, past *until* too; whole milliseconds, rounded up.
            for fd, _ in poller.poll(math.ceil(max(left, 0) * 1000)):
                now = time.monotonic()
                if fd in callbacks:
                    if not callbacks[fd]():
                        poller.unregister(fd)
                        del callbacks[fd]
                else:
                    self.gone_at[self._pidfds.pop(fd)] = now
                    poller.unregister(fd)
                    os.close(fd)
                    exited = True
            if left <= 0 or (first and exited):
                break
        return self.gone_at

    def close(self) -> None:
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()

    def __enter__(self) -> ExitWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def gone_at(pid: int, until: float) -> float | None:
    """When *pid* exited (monotonic), watching until *until*; None if it still runs."""
    with ExitWatch([pid]) as watch:
        return watch.wait(until).get(pid)
