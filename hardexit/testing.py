"""Helpers for testing code that arms hard exits.

Two tools, for the two kinds of test:

- :func:`run_isolated` runs a script or a module-level function in a fresh
  interpreter, kills whatever it started, and reports how it ended: exit
  code, signal, output, and when it exited relative to its first arm.  Use
  it to prove that your teardown really is bounded.  hardexit's own test
  suite is written with it.  :func:`start_isolated` starts the same run
  and returns at once, for a test that watches or acts while it runs.
- :func:`set_testing` makes the guards armed in *this* process inert: they
  are armed, readable and cancellable, but never fire.  Use it for unit tests of code
  that arms a guard on its way out, so the test runner is not shot.
"""

from __future__ import annotations

import math
import os
import select
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
    from typing import IO

__all__ = [
    "IsolatedProcess",
    "IsolatedRun",
    "is_testing",
    "run_isolated",
    "set_testing",
    "start_isolated",
]


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

    __slots__ = (
        "armed_at",
        "deadline",
        "exit_code",
        "exited_at",
        "left_behind",
        "pid",
        "reaped",
        "stderr",
        "stdout",
        "timed_out",
    )

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
        pid: int | None = None,
        reaped: Mapping[int, int] | None = None,
        left_behind: Sequence[int] = (),
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
        #: True if the child was still alive at the run's *limit* (or when
        #: :meth:`IsolatedProcess.stop` was called) and was killed.
        self.timed_out = timed_out
        #: The child's process id.
        self.pid = pid
        #: The exit code of each process the child left behind, by pid, as
        #: the reaper reaped it (a process its own parent reaped is not here;
        #: one still alive at the end was killed: ``-9``).  Empty without a
        #: subreaper (not Linux).
        self.reaped: dict[int, int] = dict(reaped or {})
        #: The processes the child started that were still running when it
        #: exited (none if it was killed at the limit: then all were).  Empty
        #: without a subreaper (not Linux).
        self.left_behind: list[int] = list(left_behind)

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


class IsolatedProcess:
    """A child started by :func:`start_isolated`, still running or not.

    Use it as a context manager: leaving the block stops the run (see
    :meth:`stop`), so nothing it started outlives the block.
    """

    def __init__(
        self,
        reaper: subprocess.Popen[bytes],
        private: tempfile.TemporaryDirectory[str],
        out: IO[bytes],
        err: IO[bytes],
    ) -> None:
        self._reaper = reaper
        self._private = private
        self._out, self._err = out, err
        self._lines: dict[str, list[str]] = {}
        self._pending = b""
        self._result: IsolatedRun | None = None
        if self._read_until("started", None):
            #: The child's process id.
            self.pid = int(self._lines["started"][0])
        else:
            self.stop()
            raise RuntimeError(f"run_isolated's reaper failed (exit code {reaper.poll()})")

    def _read_until(self, word: str, timeout: float | None) -> bool:
        """Read the reaper's report until its *word* line; False if not within *timeout*."""
        end = None if timeout is None else time.monotonic() + timeout
        assert self._reaper.stdout is not None
        fd = self._reaper.stdout.fileno()
        while word not in self._lines:
            left = None if end is None else max(0.0, end - time.monotonic())
            if fd not in select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 4096)
            if not chunk:  # the reaper is gone
                self._reaper.wait()
                return False
            *complete, self._pending = (self._pending + chunk).split(b"\n")
            for line in complete:
                first, *rest = line.decode().split()
                self._lines[first] = rest
        return True

    @property
    def stdout(self) -> str:
        """What the child and its descendants wrote to stdout so far."""
        return self._result.stdout if self._result else _read_all(self._out)

    @property
    def stderr(self) -> str:
        """What the child and its descendants wrote to stderr so far."""
        return self._result.stderr if self._result else _read_all(self._err)

    def wait_exit(self, timeout: float | None = None) -> int | None:
        """The child's exit code once it exits, or None if it runs on after *timeout* s.

        As :attr:`subprocess.Popen.returncode`: negative for death by a signal.
        The run may go on after it (*keep_descendants*).
        """
        if not self._read_until("exited", timeout) or self._lines["exited"][0] == "-":
            return None
        return int(self._lines["exited"][0])

    def wait(self, timeout: float | None = None) -> IsolatedRun | None:
        """How the run ended, once everything is reaped; None if it runs on after *timeout* s."""
        if self._result is None:
            if not self._read_until("ended", timeout):
                if self._reaper.poll() is None:
                    return None
                self._close()
                raise RuntimeError(
                    f"run_isolated's reaper failed (exit code {self._reaper.returncode})"
                )
            self._result = self._collect()
        return self._result

    def stop(self) -> IsolatedRun:
        """End the run now: kill the child and all it started, reap them, and report."""
        if self._result is None and self._reaper.stdin is not None:
            try:
                self._reaper.stdin.close()  # the reaper stops waiting and cleans up
            except BrokenPipeError:
                pass
        result = self.wait()
        assert result is not None
        return result

    def __enter__(self) -> IsolatedProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _collect(self) -> IsolatedRun:
        exit_code, timed_out, *reaped = self._lines["ended"]
        exited_at = float(self._lines["exited"][1])
        with open(os.path.join(self._private.name, "first-arm"), "rb") as report:
            reported = report.read()
        armed = struct.unpack("dd", reported[:16]) if reported[16] == 1 else None
        result = IsolatedRun(
            exit_code=int(exit_code),
            stdout=self.stdout,
            stderr=self.stderr,
            armed_at=armed[0] if armed else None,
            deadline=armed[1] if armed else None,
            exited_at=exited_at,
            timed_out=timed_out == "1",
            pid=self.pid,
            reaped={int(p): int(c) for p, _, c in (r.partition(":") for r in reaped)},
            left_behind=[int(pid) for pid in self._lines.get("left", [])],
        )
        self._close()
        return result

    def _close(self) -> None:
        self._reaper.__exit__(None, None, None)  # closes its pipes, waits for it
        self._out.close()
        self._err.close()
        self._private.cleanup()


def _read_all(file: IO[bytes]) -> str:
    size = os.fstat(file.fileno()).st_size
    return os.pread(file.fileno(), size, 0).decode("utf-8", "replace")


def start_isolated(
    target: str | Sequence[str] | Callable[[], object],
    *,
    limit: float = 30.0,
    args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    python: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    keep_descendants: bool = False,
) -> IsolatedProcess:
    """Start what :func:`run_isolated` runs, and return at once.

    The arguments are :func:`run_isolated`'s, and one more: with
    *keep_descendants*, what the child leaves behind runs on after it
    exits, until the run's *limit* or :meth:`IsolatedProcess.stop`.
    """
    interpreter_args: list[str] = []
    if isinstance(target, str):
        kind, spec = "source", target
    elif isinstance(target, (list, tuple)) and all(isinstance(a, str) for a in target):
        kind, spec, interpreter_args = "command", "", list(target)
    elif callable(target) and "." not in target.__qualname__ and target.__module__ != "__main__":
        kind, spec = "function", f"{target.__module__}:{target.__qualname__}"
    else:
        raise TypeError(
            "target must be Python source (str), the interpreter's arguments (a list of str)"
            f" or an importable module-level function; got {target!r}"
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
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    deadline = time.monotonic() + limit
    # Closed by the IsolatedProcess once the run is over, or here if it cannot start.
    private = tempfile.TemporaryDirectory(prefix="hardexit-run-")
    out = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the run
    err = tempfile.TemporaryFile()  # noqa: SIM115
    report_path = os.path.join(private.name, "first-arm")
    with open(report_path, "xb") as report:
        report.write(bytes(17))  # armed_at, deadline (two doubles), then a "reported" flag
    if kind == "command":
        command = [executable, *interpreter_args, *args]
    else:
        command = [executable, "-c", _CHILD, report_path, kind, spec, *args]
    try:
        reaper = _start_reaper(deadline, out, err, keep_descendants, cwd, command, child_env)
    except BaseException:
        out.close()
        err.close()
        private.cleanup()
        raise
    return IsolatedProcess(reaper, private, out, err)


def _start_reaper(
    deadline: float,
    out: IO[bytes],
    err: IO[bytes],
    keep_descendants: bool,
    cwd: str | os.PathLike[str] | None,
    command: list[str],
    env: dict[str, str],
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            _REAPER,
            repr(deadline),
            str(out.fileno()),
            str(err.fileno()),
            "1" if keep_descendants else "0",
            "-" if cwd is None else os.fspath(cwd),
            *command,
        ],
        stdin=subprocess.PIPE,  # closed when we stop or die: the reaper stops
        stdout=subprocess.PIPE,
        env=env,
        pass_fds=(out.fileno(), err.fileno()),
        start_new_session=True,
    )


def run_isolated(
    target: str | Sequence[str] | Callable[[], object],
    *,
    limit: float = 30.0,
    args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    python: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> IsolatedRun:
    """Run *target* in a fresh interpreter and report how it ended.

    *target* is Python source (run as ``__main__``), a module-level
    function, imported by name in the child, or a list of the interpreter's
    own arguments (``["-m", "pytest"]``), run as they are: without the
    first-arm report below, so the child imports nothing first.  *args*
    become the child's ``sys.argv[1:]``; *env* is added to the environment
    (a ``None`` value removes a variable); *cwd* is the child's working
    directory; *python* (a path, or a name looked up on PATH) defaults to
    this interpreter.

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
    say) is given as the interpreter's arguments.

    If this process dies or is interrupted during the call, the reaper
    notices (its stdin pipe closes; on Linux also its parent-death signal)
    and cleans up the same way.  Only a reaper killed outright (SIGKILL)
    leaves the child's descendants behind; on Linux the child itself dies
    with it.
    """
    with start_isolated(target, limit=limit, args=args, env=env, python=python, cwd=cwd) as process:
        result = process.wait()
    assert result is not None
    return result
