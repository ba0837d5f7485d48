"""Arm a guard when this process's parent dies.

A pool worker or a ``subprocess`` child whose parent dies without cleaning
up (SIGKILL, the OOM killer, a crash) is orphaned: wedged in native code or
blocked on a queue nobody feeds, it holds its memory forever.
:func:`arm_on_parent_death` makes the parent's death the start of a
teardown like any other: from that moment a guard is armed, so the process
is gone within the budget.

Which parent: for a multiprocessing child, the process that started it
(``multiprocessing.parent_process()``), because a forkserver child's OS
parent is the forkserver, which outlives it; otherwise the OS parent.

How it waits: a pidfd of the parent (Linux >= 5.3), polled by one watcher
thread that blocks in ``poll()`` without the GIL and costs no CPU until the
parent dies.  multiprocessing's parent sentinel is not enough on its own: in
a fork pool every later sibling inherits the write end of an earlier
worker's sentinel, so that worker sees EOF only when its last sibling dies.
Without pidfds (older kernels, seccomp sandboxes, macOS), the watcher falls
back to what still tells: the OS parent changing (checked every 0.1 s), or,
for a forkserver child, multiprocessing's sentinel.

The watcher is a bare ``_thread`` thread, as the watchdog is: nobody joins
it, so it never delays an exit.  It is the real OS thread and ``poll()`` even
after gevent's or eventlet's monkey-patching (``_threads``).
"""

from __future__ import annotations

import os
import select
import sys

from . import _config, _guard, _threads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from typing import Final

# How often the fallback without pidfds checks whether the OS parent changed.
_REPARENT_CHECK_MS: Final = 100
_DIED: Final = select.POLLIN | select.POLLHUP  # a pidfd reads as "in" once its process exited


_poll = _threads.original("select", "poll")  # the OS poll(), even under gevent or eventlet


def arm_on_parent_death(
    timeout: float | None = None,
    *,
    exit_code: int = 0,
    reason: str | None = None,
) -> None:
    """From the moment this process's parent dies, arm ``arm_hard_exit(timeout, ...)``.

    So the process is gone within *timeout* seconds of its parent's death,
    SIGKILL included, whatever it is stuck on then.  Use it as a pool
    initializer, ``ProcessPoolExecutor(initializer=hardexit.arm_on_parent_death,
    initargs=(5,))``, or call it first thing in a ``subprocess`` child.

    The parent is the process that started this one through multiprocessing,
    else the OS parent.  If it is already dead, the guard is armed before this
    returns.  Arguments are checked now, raising TypeError or ValueError and
    watching nothing, as :func:`arm_hard_exit` checks them; *timeout* defaults
    to ``hardexit.HARD_EXIT_TIMEOUT``, read now.  *reason* defaults to "the
    parent process (pid N) died".

    Calling it again with the same arguments does nothing; with other
    arguments, it adds that guard too, and when the parent dies the earliest
    deadline wins, as always.  A child forked from this process is not
    watched: its parent is this process, and it calls this function itself if
    it wants to be.
    """
    # Resolved now, so a malformed HARDEXIT_TIMEOUT fails here, not silently
    # in the watcher thread.
    seconds = _config.resolve_timeout(timeout)
    code = _config.check_exit_code(exit_code)
    reason = _config.check_reason(reason)

    def arm(parent_pid: int) -> None:
        _guard.arm_hard_exit(
            seconds,
            exit_code=code,
            reason=reason if reason is not None else f"the parent process (pid {parent_pid}) died",
        )

    call_on_parent_death((seconds, code, reason), arm)


class _Watch:
    """This process's watch on its parent.  A forked child starts a fresh one."""

    __slots__ = ("callbacks", "keys", "lock", "parent_died", "parent_pid", "pidfd")

    def __init__(self) -> None:
        self.lock = _threads.allocate_lock()
        self.keys: set[Hashable] = set()
        self.callbacks: list[Callable[[int], object]] = []
        self.parent_pid: int | None = None  # None: nothing watched yet, no thread
        self.parent_died = False
        self.pidfd: int | None = None


_watch = _Watch()
# multiprocessing's parent as inherited through os.fork(): stale, it names our
# grandparent.  multiprocessing's own children replace it after the fork.
_inherited_mp_parent: object = None


def _after_fork_in_child() -> None:
    global _watch, _inherited_mp_parent
    if _watch.pidfd is not None:
        os.close(_watch.pidfd)
    _watch = _Watch()
    mp = sys.modules.get("multiprocessing.process")
    _inherited_mp_parent = mp.parent_process() if mp is not None else None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def call_on_parent_death(key: Hashable, callback: Callable[[int], object]) -> None:
    """Call ``callback(parent_pid)`` once, from the watcher thread, when the parent dies.

    Called at once, in this thread, if the parent is dead already.  A second
    call with an equal *key* does nothing.  The first call starts the watch;
    ``hardexit.livekit`` uses this for its own arming.
    """
    watch = _watch
    with watch.lock:
        if key in watch.keys:
            return
        if watch.parent_pid is None:
            _start(watch)
        watch.keys.add(key)
        parent_pid = watch.parent_pid
        assert parent_pid is not None
        if not watch.parent_died:
            watch.callbacks.append(callback)
            return
    callback(parent_pid)


def _start(watch: _Watch) -> None:
    """Find the parent, and start the thread that waits for its death. Lock held."""
    pid, sentinel = _find_parent()
    wait = _waiter(pid, sentinel, watch)
    watch.parent_pid = pid
    if wait is None:
        watch.parent_died = True
    else:
        _threads.start_new_thread(_wait_then_call_back, (watch, wait))


def _find_parent() -> tuple[int, int | None]:
    """The parent's pid, and multiprocessing's sentinel for it if there is one."""
    mp = sys.modules.get("multiprocessing.process")  # a multiprocessing child has imported it
    parent = mp.parent_process() if mp is not None else None
    if parent is not None and parent is not _inherited_mp_parent:
        return parent.pid, parent.sentinel
    pid = os.getppid()
    if pid == 0:
        raise RuntimeError(
            "arm_on_parent_death(): this process's parent is outside its PID namespace "
            "(os.getppid() is 0), so there is no parent to watch"
        )
    return pid, None


def _waiter(pid: int, sentinel: int | None, watch: _Watch) -> Callable[[], object] | None:
    """A blocking call that returns once *pid* died, or None if it is dead already."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            pidfd = pidfd_open(pid)
        except ProcessLookupError:
            return None  # died and reaped
        except OSError:
            pass  # no pidfds here (kernel < 5.3, a seccomp filter): fall back below
        else:
            # If the parent died before the open, its pid may name another
            # process by now.  Trust the pidfd only if the parent was alive
            # after the open: still our OS parent, or (a forkserver child)
            # still holding multiprocessing's sentinel open.
            if os.getppid() == pid or (sentinel is not None and not _closed(sentinel)):
                watch.pidfd = pidfd
                return lambda: _wait_readable(pidfd)
            os.close(pidfd)
            return None
    if os.getppid() == pid:
        return lambda: _wait_reparented(pid)
    if sentinel is not None and not _closed(sentinel):
        return lambda: _closed(sentinel, block=True)
    return None


def _wait_then_call_back(watch: _Watch, wait: Callable[[], object]) -> None:
    try:
        wait()
    except OSError:
        return  # our fd was closed under us (e.g. os.closerange): nothing left to watch
    with watch.lock:
        watch.parent_died = True
        callbacks, watch.callbacks = watch.callbacks, []
        parent_pid = watch.parent_pid
        if watch.pidfd is not None:
            os.close(watch.pidfd)
            watch.pidfd = None
    assert parent_pid is not None
    failed: BaseException | None = None
    for callback in callbacks:
        try:
            callback(parent_pid)
        except BaseException as exc:  # the others still run; the first is reported
            failed = failed or exc
    if failed is not None:
        raise failed


def _wait_readable(fd: int) -> None:
    poller = _poll()
    poller.register(fd, select.POLLIN)
    while True:
        for _, events in poller.poll():
            if events & _DIED:
                return
            raise OSError(f"fd {fd} is not open any more (poll events {events:#x})")


def _wait_reparented(pid: int) -> None:
    # Reparenting happens as the parent exits, before anyone reaps it.
    idle = _poll()  # no fds: poll() just sleeps, without a green library's time.sleep
    while os.getppid() == pid:
        idle.poll(_REPARENT_CHECK_MS)


def _closed(fd: int, *, block: bool = False) -> bool:
    """Whether the pipe *fd* reads EOF; with *block*, wait until it does.

    multiprocessing writes nothing to its sentinel: it reads EOF once every
    write end is closed, which is when the parent is gone, unless a process
    forked from the parent holds one too.
    """
    poller = _poll()
    poller.register(fd, select.POLLIN)
    while poller.poll(None if block else 0):
        if not os.read(fd, 512):
            return True
    return False
