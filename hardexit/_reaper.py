"""The reaper :func:`hardexit.testing.run_isolated` runs its target under.

Usage: ``python -I -S _reaper.py DEADLINE STDOUT_FD STDERR_FD KEEP CWD COMMAND...``

Runs COMMAND in a new session, in CWD (``-``: here), with stdin on /dev/null
and stdout and stderr on the given fds, until it exits or until DEADLINE
(``time.monotonic()``).  With KEEP ``1``, what it leaves behind runs on after
it exits, until DEADLINE.  Then it kills the command's process group and
every process descended from it, and reaps them all.

It writes four lines to its own stdout: ``started PID`` once COMMAND is
forked; ``exited EXIT_CODE EXITED_AT`` when it exits (``exited - EXITED_AT``
if it was still running when the wait ended); then ``left PID...``, what it
had started that was still running then; and last, once everything is
reaped, ``ended EXIT_CODE TIMED_OUT PID:EXIT_CODE...``: the command's exit
code, whether it was still running when the wait ended, and the exit code
of every other process this reaper reaped.

On Linux it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process
whose parent dies is re-parented to it, whatever session or process group
it moved to.  So once it has no child left, nothing the command started is
left either.  Elsewhere only the command's process group is killed.

If the process that started it dies (its stdin, a pipe from that process,
reaches EOF; on Linux also its parent-death signal, SIGTERM), or on SIGTERM,
SIGINT or SIGHUP, it stops early and cleans up the same way.  The command
gets SIGKILL as its parent-death signal, so it cannot outlive a reaper that
was killed outright.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time

TYPE_CHECKING = False  # why: hardexit/__init__.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# Signals that end the wait: the command's exit (SIGCHLD), or a request to stop.
WATCHED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def main(argv: list[str]) -> None:
    deadline, stdout_fd, stderr_fd = float(argv[1]), int(argv[2]), int(argv[3])
    keep, cwd, command = argv[4] == "1", argv[5], argv[6:]
    prctl = _load_prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Each watched signal writes its number to this pipe, which the waits
    # below select on: no handler ever raises into the clean-up.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    inherited = {signum: signal.signal(signum, _wake) for signum in WATCHED}
    target = os.fork()
    if target == 0:
        _exec(command, cwd, stdout_fd, stderr_fd, inherited, prctl)
    os.close(stdout_fd)
    os.close(stderr_fd)
    _report(f"started {target}")
    exited_at, timed_out = _wait(target, deadline, wake_r)
    _report(f"exited {'-' if timed_out else _exit_code_of(target)} {exited_at!r}")
    if not timed_out:
        _report(" ".join(["left", *map(str, _descendants(os.getpid(), running=True))]))
    if keep and not timed_out:
        _wait(None, deadline, wake_r)
    exit_code, reaped = _kill_and_reap_all(target, wake_r)
    _report(
        " ".join(["ended", str(exit_code), str(int(timed_out))] + [f"{p}:{c}" for p, c in reaped])
    )


def _report(line: str) -> None:
    try:
        os.write(1, f"{line}\n".encode())
    except BrokenPipeError:
        pass  # the caller stopped listening (interrupted)


def _exit_code_of(target: int) -> int:
    """The exit code of *target*, which has exited, as Popen.returncode; it stays unreaped."""
    info = os.waitid(os.P_PID, target, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    assert info is not None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _wake(signum: int, frame: object) -> None:
    """A Python-level handler, so that the wakeup fd gets the signal."""


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return lambda option, value: int(prctl(option, value, 0, 0, 0))


def _exec(
    command: list[str],
    cwd: str,
    stdout_fd: int,
    stderr_fd: int,
    inherited: dict[signal.Signals, Any],
    prctl: Callable[[int, int], int] | None,
) -> None:
    """In the forked child: become COMMAND, as subprocess.Popen would make it."""
    try:
        signal.set_wakeup_fd(-1)
        for signum, handler in inherited.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        # Python ignores these; an ignored signal stays ignored across exec.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        os.setsid()
        if cwd != "-":
            os.chdir(cwd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        os.close(stdout_fd)
        os.close(stderr_fd)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.execv(command[0], command)
    except BaseException as exc:
        os.write(2, f"run_isolated could not start {command[0]!r}: {exc!r}\n".encode())
    finally:
        os._exit(127)


def _wait(target: int | None, deadline: float, wake_r: int) -> tuple[float, bool]:
    """Wait for *target* to exit; (when it exited or the wait ended, whether it timed out).

    With no *target*, wait until DEADLINE or a request to stop.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return time.monotonic(), True
        readable, _, _ = select.select([wake_r, 0], [], [], remaining)
        now = time.monotonic()
        if 0 in readable and not os.read(0, 512):
            return now, True  # the caller is gone or gave up
        if wake_r in readable:
            if _drain(wake_r) - {signal.SIGCHLD}:
                return now, True
            # Not reaped yet: its process group stays reserved for the kill.
            if (
                target is not None
                and os.waitid(os.P_PID, target, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            ):
                return now, False


def _kill_and_reap_all(target: int, wake_r: int) -> tuple[int, list[tuple[int, int]]]:
    """Kill *target*, its process group and all our descendants.

    Returns the exit code of *target*, and the pid and exit code of each other
    process reaped here.
    """
    try:
        os.killpg(target, signal.SIGKILL)
    except OSError:
        pass
    _, status = os.waitpid(target, 0)
    # Whatever the target left behind is now our child (we are a subreaper)
    # or the child of one of our descendants.
    reaped: list[tuple[int, int]] = []
    while _reap_exited_children(reaped):
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        select.select([wake_r], [], [], 0.1)  # a SIGCHLD, or look again
        _drain(wake_r)
    return os.waitstatus_to_exitcode(status), reaped


def _reap_exited_children(reaped: list[tuple[int, int]]) -> bool:
    """Reap every child that has exited, into *reaped*; whether any child is left."""
    try:
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                return True
            reaped.append((pid, os.waitstatus_to_exitcode(status)))
    except ChildProcessError:
        return False


def _descendants(root: int, *, running: bool = False) -> list[int]:
    """Every process below *root*, from /proc (empty without it); with *running*, no zombies."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    state, ppid = stat.read().rsplit(b")", 1)[1].split()[:2]
            except (OSError, IndexError, ValueError):
                continue  # gone, or not readable
            if not (running and state == b"Z"):
                children.setdefault(int(ppid), []).append(int(name))
    found: list[int] = []
    unvisited = [root]
    while unvisited:
        below = children.get(unvisited.pop(), [])
        found += below
        unvisited += below
    return found


def _drain(fd: int) -> set[int]:
    """The signal numbers waiting in the wakeup pipe."""
    signums: set[int] = set()
    try:
        while chunk := os.read(fd, 512):
            signums.update(chunk)
    except BlockingIOError:
        pass
    return signums


if __name__ == "__main__":
    main(sys.argv)
