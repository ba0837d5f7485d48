"""Helpers for testing code that arms hard exits.

Two tools, for the two kinds of test:

- :func:`run_isolated` runs a script or a module-level function in a fresh
  interpreter, in its own process group, and reports how it ended: exit
  code, signal, output, and when it exited relative to its first arm.  Use
  it to prove that your teardown really is bounded.  hardexit's own test
  suite is written with it.
- :func:`set_testing` makes the guards armed in *this* process inert: they
  are armed, readable and cancellable, but never fire.  Use it for unit tests of code
  that arms a guard on its way out, so the test runner is not shot.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from ._config import config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["IsolatedRun", "is_testing", "run_isolated", "set_testing"]


class _RestoreTesting:
    """Returned by :func:`set_testing`: as a context manager, restores the previous mode."""

    __slots__ = ("_previous",)

    def __init__(self, previous: bool) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        config.testing = self._previous


def set_testing(on: bool) -> _RestoreTesting:
    """Make the guards armed from now on inert (True), or live again (False).

    While on, ``arm_hard_exit()`` validates and returns guards as usual, and
    :func:`hardexit.current_deadline` reports them, but they never fire: no
    watchdog, no backstop.  A guard armed while it was on stays inert after
    it is turned off, so a guard a test forgot to cancel cannot shoot the
    test runner later; guards armed before it was turned on stay live.

    It takes effect at once; use the result as a context manager to restore
    the previous mode when the block ends::

        with hardexit.testing.set_testing(True):
            ...
    """
    if not isinstance(on, bool):
        raise TypeError(f"on must be a bool; got {on!r}")
    previous, config.testing = config.testing, on
    return _RestoreTesting(previous)


def is_testing() -> bool:
    """Whether :func:`set_testing` made guards inert."""
    return config.testing


class IsolatedRun:
    """How a :func:`run_isolated` child ended.

    Times are ``time.monotonic()`` seconds; CLOCK_MONOTONIC is shared by
    every process on Linux and macOS, so the child's arm time and the
    parent's reap time are on one clock.
    """

    __slots__ = ("armed_at", "deadline", "exit_code", "exited_at", "stderr", "stdout", "timed_out")

    def __init__(
        self,
        *,
        exit_code: int,
        stdout: str,
        stderr: str,
        armed_at: float | None,
        deadline: float | None,
        exited_at: float,
        timed_out: bool,
    ) -> None:
        #: As :attr:`subprocess.Popen.returncode`: negative for death by a signal.
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        #: When the child's first guard was armed, or None if it armed none.
        self.armed_at = armed_at
        #: That guard's deadline when armed, or None.
        self.deadline = deadline
        #: When the parent saw the child exit.
        self.exited_at = exited_at
        #: True if the child was still alive at the run's *limit* and was killed.
        self.timed_out = timed_out

    @property
    def after_arm(self) -> float | None:
        """Seconds from the first arm to the exit, or None if nothing was armed."""
        return None if self.armed_at is None else self.exited_at - self.armed_at

    @property
    def past_deadline(self) -> float | None:
        """Seconds from the first guard's deadline to the exit (negative: before it)."""
        return None if self.deadline is None else self.exited_at - self.deadline

    def __repr__(self) -> str:
        return (
            f"IsolatedRun(exit_code={self.exit_code}, after_arm={self.after_arm}, "
            f"past_deadline={self.past_deadline}, timed_out={self.timed_out}, "
            f"stderr={self.stderr[-400:]!r})"
        )


# Runs in the child: report the first arm through the pipe, then run the target.
_CHILD = """\
import os, sys
_unreported = [int(sys.argv[1])]
from hardexit import instrumentation

def _report_first_arm(guard):
    try:
        fd = _unreported.pop()  # atomic: one thread reports, however many arm at once
    except IndexError:
        return
    os.write(fd, f"{guard.armed_at!r} {guard.deadline!r}\\n".encode())
    os.close(fd)

instrumentation.set_on_arm_hooks([_report_first_arm])
kind, target = sys.argv[2], sys.argv[3]
sys.argv[:] = [sys.argv[0], *sys.argv[4:]]
if kind == "source":
    exec(compile(target, "<isolated>", "exec"), {"__name__": "__main__"})
else:
    import importlib
    module, _, name = target.partition(":")
    func = importlib.import_module(module)
    for part in name.split("."):
        func = getattr(func, part)
    func()
"""


def run_isolated(
    target: str | Callable[[], object],
    *,
    limit: float = 30.0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    python: str | None = None,
) -> IsolatedRun:
    """Run *target* in a fresh interpreter and report how it ended.

    *target* is Python source (run as ``__main__``) or a module-level
    function, imported by name in the child.  The child runs in its own
    session and process group; when it exits, or at *limit* seconds, the
    whole group is killed, so nothing it forked outlives the call.  *args*
    become the child's ``sys.argv[1:]``; *env* is added to the environment;
    *python* defaults to this interpreter.
    """
    if isinstance(target, str):
        kind, spec = "source", target
    elif callable(target) and "." not in target.__qualname__ and target.__module__ != "__main__":
        kind, spec = "function", f"{target.__module__}:{target.__qualname__}"
    else:
        raise TypeError(
            "target must be Python source (str) or an importable module-level function; "
            f"got {target!r}"
        )
    child_env = dict(os.environ)
    # The child must import the same hardexit as this process.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, child_env.get("PYTHONPATH", "")) if p
    )
    child_env.update(env or {})
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [python or sys.executable, "-c", _CHILD, str(write_fd), kind, spec, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        try:
            timed_out = not _wait_exact(proc, limit)
            exited_at = time.monotonic()
        finally:
            _kill_group(proc.pid)
            proc.wait()
        with os.fdopen(read_fd, "rb") as pipe:
            armed = pipe.read().split()
        out.seek(0)
        err.seek(0)
        return IsolatedRun(
            exit_code=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            armed_at=float(armed[0]) if armed else None,
            deadline=float(armed[1]) if armed else None,
            exited_at=exited_at,
            timed_out=timed_out,
        )


def _wait_exact(proc: subprocess.Popen[bytes], limit: float) -> bool:
    """Wait for *proc* to exit, at most *limit* s; True if it did.

    A pidfd wakes us the moment the child dies; Popen.wait(timeout) polls
    with sleeps of up to 50 ms, too coarse to time an exit.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            pidfd = pidfd_open(proc.pid)
        except OSError:
            pass
        else:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                return bool(poller.poll(limit * 1000))
            finally:
                os.close(pidfd)
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
