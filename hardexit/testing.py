"""Helpers for testing code that arms hard exits.

Two tools, for the two kinds of test:

- :func:`run_isolated` runs a script or a module-level function in a fresh
  interpreter, kills whatever it started, and reports how it ended: exit
  code, signal, output, and when it exited relative to its first arm.  Use
  it to prove that your teardown really is bounded.  hardexit's own test
  suite is written with it.
- :func:`set_testing` makes the guards armed in *this* process inert: they
  are armed, readable and cancellable, but never fire.  Use it for unit tests of code
  that arms a guard on its way out, so the test runner is not shot.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from . import _config

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
        _config.config.testing = self._previous


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
    previous, _config.config.testing = _config.config.testing, on
    return _RestoreTesting(previous)


def is_testing() -> bool:
    """Whether :func:`set_testing` made guards inert."""
    return _config.config.testing


class IsolatedRun:
    """How a :func:`run_isolated` child ended.

    Times are ``time.monotonic()`` seconds; CLOCK_MONOTONIC is shared by
    every process on Linux and macOS, so the child's arm time and its
    parent's view of its exit are on one clock.
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
        #: When the child exited, as its parent (the reaper) saw it: woken at once.
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


# Runs in the child: report the first arm, then run the target.  The report
# is a file mapped into memory before the target runs: the code under test may
# close or reuse any fd without touching it, and the hook, which runs right
# after an arm (maybe among busy threads), makes no system call, so it gives
# up no GIL and cannot be outrun by the deadline it reports.
_CHILD = """\
import mmap, struct, sys
with open(sys.argv[1], "r+b") as _file:
    _report = mmap.mmap(_file.fileno(), 17)
_unreported = [True]
from hardexit import instrumentation

def _report_first_arm(guard):
    try:
        _unreported.pop()  # atomic: one thread reports, however many arm at once
    except IndexError:
        return
    struct.pack_into("dd", _report, 0, guard.armed_at, guard.deadline)
    _report[16] = 1  # written last: the figures are whole

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

_REAPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reaper.py")


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
    function, imported by name in the child.  *args* become the child's
    ``sys.argv[1:]``; *env* is added to the environment; *python* (a path,
    or a name looked up on PATH) defaults to this interpreter.

    The child runs in a new session, under a small reaper process.  When the
    child exits, or *limit* seconds after the call, the reaper SIGKILLs the
    child's process group and every process descended from the child, and
    reaps them all before this returns.  On Linux the reaper is a child
    subreaper (``PR_SET_CHILD_SUBREAPER``): a process whose parent died is
    re-parented to it, whatever session or process group it moved to, so
    nothing the child started outlives the call: daemons that double-forked
    included.  Without a subreaper (not Linux), only the child's process
    group is killed, and not waited for: a process that left the group
    survives once its parent has exited.

    The first arm is reported through a private temporary file that the
    child maps into memory before the target runs: code under test may
    close or reuse any fd, and the report makes no system call, so it gives
    up no GIL and is never outrun by the deadline it reports.  The report is
    an on-arm hook, so the child imports hardexit before the target runs:
    a target that must run something first (``gevent.monkey.patch_all()``,
    say) starts a fresh interpreter of its own.

    If this process dies or is interrupted during the call, the reaper
    notices (its stdin pipe closes; on Linux also its parent-death signal)
    and cleans up the same way.  Only a reaper killed outright (SIGKILL)
    leaves the child's descendants behind; on Linux the child itself dies
    with it.
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
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit < math.inf:
        raise ValueError(f"limit must be a positive, finite number of seconds; got {limit!r}")
    executable = sys.executable if python is None else shutil.which(python)
    if not executable:
        raise FileNotFoundError(f"python must name an executable; got {python!r}")
    child_env = dict(os.environ)
    # The child must import the same hardexit as this process.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, child_env.get("PYTHONPATH", "")) if p
    )
    child_env.update(env or {})
    deadline = time.monotonic() + limit
    with (
        tempfile.TemporaryDirectory(prefix="hardexit-run-") as private,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        report_path = os.path.join(private, "first-arm")
        with open(report_path, "xb") as report:
            report.write(bytes(17))  # armed_at, deadline (two doubles), then a "reported" flag
        command = [executable, "-c", _CHILD, report_path, kind, spec, *args]
        reaper = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                _REAPER,
                repr(deadline),
                str(out.fileno()),
                str(err.fileno()),
                *command,
            ],
            stdin=subprocess.PIPE,  # closed when we return or die: the reaper stops
            stdout=subprocess.PIPE,
            env=child_env,
            pass_fds=(out.fileno(), err.fileno()),
            start_new_session=True,
        )
        with reaper:
            assert reaper.stdout is not None
            ended = reaper.stdout.read().split()  # EOF once the reaper has cleaned up
        if len(ended) != 3:
            raise RuntimeError(f"run_isolated's reaper failed (exit code {reaper.returncode})")
        with open(report_path, "rb") as report:
            reported = report.read()
        armed = struct.unpack("dd", reported[:16]) if reported[16] == 1 else None
        out.seek(0)
        err.seek(0)
        return IsolatedRun(
            exit_code=int(ended[0]),
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            armed_at=armed[0] if armed else None,
            deadline=armed[1] if armed else None,
            exited_at=float(ended[1]),
            timed_out=ended[2] == b"1",
        )
