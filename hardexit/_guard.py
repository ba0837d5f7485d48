"""Guards, and the one rule that combines them: the earliest deadline wins.

Each :class:`HardExit` is a promise made by some caller: "this process is
gone by my deadline".  Keeping every promise at once means exiting at the
earliest live deadline, with that guard's exit code.  The rules, and why, are
the README's "Deadline rules"; ``tests/test_registry.py`` tests each one here,
in process, with a fake clock and a recording backstop.
"""

from __future__ import annotations

import os
import time

from . import _backstop, _config, _watchdog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._backstop import Backstop

_ARMED = "armed"
_CANCELLED = "cancelled"


class Registry:
    """Every live guard of one process, and the one place that programs the exit.

    Arm, cancel and moving a deadline are called from any thread, from signal
    handlers and from ``__del__`` (so, re-entered on one thread).  Each one
    changes the guard lists with single atomic list operations, then asks
    :meth:`_apply` to make the backstop and the watchdog agree with them.
    ``lock`` is re-entrant and is never held across anything that blocks, nor
    across a GIL release.  A call re-entered while an outer frame of the same
    thread is applying only marks the state ``dirty``: the outer frame applies
    again before it lets go.  If an exception cuts an arm or cancel short,
    the change is undone; should that be cut short too, ``dirty`` stays set
    and the watchdog reconciles on its next wake-up.
    """

    __slots__ = (
        "applying",
        "backstop",
        "clock",
        "dirty",
        "firing",
        "foreign",
        "inert",
        "live",
        "lock",
        "next_seq",
        "start_watchdog",
        "wake",
        "watchdog_due",
        "watchdog_started",
    )

    def __init__(
        self,
        backstop: Backstop,
        start_watchdog: Callable[[Registry], int | None] = _watchdog.start,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backstop = backstop
        self.start_watchdog = start_watchdog  # returns the thread's native id, if known
        self.clock = clock
        self.lock = _watchdog.RLock()
        self.wake = _watchdog.allocate_lock()  # held = no wake-up pending
        self.wake.acquire()
        self.live: list[HardExit] = []
        self.inert: list[HardExit] = []  # armed under hardexit.testing.set_testing(True)
        self.firing: HardExit | None = None
        self.foreign = False  # True in a forked child: the parent's, never to be touched
        self.watchdog_started = False
        self.watchdog_due = float("inf")
        self.applying = False
        self.dirty = False
        self.next_seq = 0

    def due(self) -> HardExit | None:
        """The guard whose deadline comes first (ties: the first armed)."""
        live = self.live
        if len(live) == 1:  # the common case, without min()'s key calls
            try:
                return live[0]
            except IndexError:  # a signal handler or finalizer cancelled it just now
                return None
        return min(live, key=_deadline_order, default=None)

    # -- the operations -------------------------------------------------

    def arm(self, timeout: float, exit_code: int, reason: str | None) -> HardExit:
        with self.lock:
            guard = HardExit(timeout, exit_code, reason, self.clock(), self)
            if _config.config.testing:
                guard._inert = True
                self.inert.append(guard)
                return guard
            self.backstop.prepare(exit_code)  # may raise: nothing is armed yet
            if not self.watchdog_started:
                self._start_watchdog()
            try:
                self.live.append(guard)
                self._apply()
            except BaseException:
                self._undo(lambda: _remove(self.live, guard))
                guard._state = _CANCELLED
                raise
        return guard

    def cancel(self, guard: HardExit) -> bool:
        with self.lock:
            if guard._state is not _ARMED:
                return False
            if guard._inert:
                guard._state = _CANCELLED
                _remove(self.inert, guard)
                return True
            if self.firing is not None or self.clock() >= guard._deadline:
                return False  # the exit is under way, and goes ahead
            try:
                _remove(self.live, guard)
                self._apply()
            except BaseException:
                self._undo(lambda: _add(self.live, guard))
                raise
            guard._state = _CANCELLED
        return True

    def move(self, guard: HardExit, deadline: float) -> None:
        with self.lock:
            if guard._state is not _ARMED or guard._inert:
                guard._deadline = deadline
                return
            if self.firing is not None or self.clock() >= guard._deadline:
                return  # the exit is under way: nothing moves it now
            before = guard._deadline
            try:
                guard._deadline = deadline
                self._apply()
            except BaseException:
                self._undo(lambda: setattr(guard, "_deadline", before))
                raise

    # -- keeping the backstop and the watchdog in step --------------------

    def _start_watchdog(self) -> None:
        try:
            thread_id = self.start_watchdog(self)
        except RuntimeError:
            # No thread to be had: a thread limit, an enormous stack size, or
            # interpreter shutdown (3.12+).  A backstop that exits alone keeps
            # the promise without a report; the next arm tries again.
            if self.backstop.exits_alone:
                return
            raise
        self.watchdog_started = True
        self.backstop.attach_watchdog(thread_id)

    def _apply(self) -> None:
        self.dirty = True
        if self.applying:
            return  # re-entered: the frame below us on this thread applies again
        while self.dirty:
            self.applying = True
            self.dirty = False
            try:
                self._sync()
            finally:
                self.applying = False

    def _sync(self) -> None:
        if self.firing is not None:
            return  # the watchdog has moved the backstop to cover its report
        first = self.due()
        if first is None:
            self.backstop.clear()
            return
        self.backstop.schedule(first._deadline, first.exit_code, self.watchdog_started)
        if first._deadline < self.watchdog_due and self.wake.locked():
            try:
                self.wake.release()
            except RuntimeError:  # another thread woke it first
                pass

    def _undo(self, restore: Callable[[], object]) -> None:
        """Put the lists back as they were, and the backstop with them."""
        restore()
        self.dirty = True
        self._apply()

    def reconcile(self) -> None:
        """Apply a change that an exception left unapplied.  Lock held."""
        if self.dirty and not self.applying:
            self._apply()


def _deadline_order(guard: HardExit) -> tuple[float, int]:
    return (guard._deadline, guard._seq)


def _add(guards: list[HardExit], guard: HardExit) -> None:
    if guard not in guards:  # an undo may run before or after the change it undoes
        guards.append(guard)


def _remove(guards: list[HardExit], guard: HardExit) -> None:
    try:
        guards.remove(guard)  # one C call: atomic for signal handlers and __del__
    except ValueError:
        pass


class HardExit:
    """A live promise that this process is gone by :attr:`deadline`.

    Returned by :func:`arm_hard_exit`.  Read or move :attr:`deadline`,
    read :attr:`remaining`, and :meth:`cancel` when teardown finished in
    time.  As a context manager it cancels when the block ends, however it
    ends.
    """

    __slots__ = (
        "_deadline",
        "_inert",
        "_registry",
        "_seq",
        "_state",
        "armed_at",
        "exit_code",
        "reason",
        "timeout",
    )

    def __init__(
        self,
        timeout: float,
        exit_code: int,
        reason: str | None,
        armed_at: float,
        registry: Registry,
    ) -> None:
        self.timeout = timeout  #: seconds from arming to the first deadline
        self.exit_code = exit_code  #: what the process exits with if this guard fires
        self.reason = reason  #: shown in the diagnostics when it fires
        self.armed_at = armed_at  #: ``time.monotonic()`` at arm time
        self._deadline = armed_at + timeout
        self._registry = registry
        self._seq = registry.next_seq  # breaks deadline ties: the first armed fires
        registry.next_seq += 1
        self._state = _ARMED
        self._inert = False  # armed under set_testing(True): never fires, even after

    @property
    def deadline(self) -> float:
        """When the process exits, on the ``time.monotonic()`` clock.

        Assign to move it, earlier or later; the earliest deadline among all
        live guards is the one that fires.  Once it has passed, the exit is
        under way and an assignment changes nothing.
        """
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        deadline = _config.check_deadline(value)
        if self._registry.foreign:  # inherited across fork: never touch its lock
            self._deadline = deadline
            return
        self._registry.move(self, deadline)

    @property
    def remaining(self) -> float:
        """Seconds until :attr:`deadline`; negative once it has passed."""
        return self._deadline - time.monotonic()

    @property
    def armed(self) -> bool:
        """True until cancelled; False in a forked child, which has no guards."""
        return self._state is _ARMED and not self._registry.foreign

    def cancel(self) -> bool:
        """Withdraw this guard.

        Returns True if this call disarmed it, False if it was not armed any
        more: cancelled before, armed in the parent of this forked process,
        or its deadline has passed (then the exit goes ahead).  Other guards
        stay armed.
        """
        if self._registry.foreign:  # inherited across fork: never touch its lock
            return False
        return self._registry.cancel(self)

    def __enter__(self) -> HardExit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "armed" if self.armed else self._state if self._state is _CANCELLED else "inherited"
        return (
            f"<HardExit {state} timeout={self.timeout!r} remaining={self.remaining:.3f}s "
            f"exit_code={self.exit_code}{f' reason={self.reason!r}' if self.reason else ''}>"
        )


_registry = Registry(_backstop.load())
_IN_MAIN_INTERPRETER = _config.in_main_interpreter()


def _after_fork_in_child() -> None:
    # The child has no watchdog thread and none of its parent's kernel timers.
    # Its parent's guards do not follow it: the child arms its own.
    global _registry
    _registry.foreign = True  # its lock may have been held by a thread that is not here
    backstop = _registry.backstop
    backstop.forget_after_fork()
    _registry = Registry(backstop)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def arm_hard_exit(
    timeout: float | None = None,
    *,
    exit_code: int = 0,
    reason: str | None = None,
) -> HardExit:
    """Promise that this process is gone within *timeout* seconds from now.

    Call it when teardown begins.  If the process is still alive at the
    deadline, whatever it is stuck on (a native call with or without the GIL,
    an await that never resolves, a hang in interpreter finalization), it
    exits with *exit_code*, after a dump of every thread's stack.  The README
    says how late, at most, and where it cannot help.

    *timeout* defaults to ``hardexit.HARD_EXIT_TIMEOUT`` (10.0 s unless the
    ``HARDEXIT_TIMEOUT`` environment variable or an assignment says
    otherwise).  *reason* is shown in the diagnostics.

    Raises TypeError or ValueError, arming nothing, for a timeout that is not
    a finite number of seconds in (0, 1e9], an exit code that is not an int
    in 0..255, or a reason that is not a str; RuntimeError in a
    subinterpreter, where a watchdog thread would abort its destruction.
    """
    seconds = _config.resolve_timeout(timeout)
    code = _config.check_exit_code(exit_code)
    reason = _config.check_reason(reason)
    if not _IN_MAIN_INTERPRETER:
        raise RuntimeError(
            "hardexit cannot arm in a subinterpreter: its watchdog thread would make "
            "the interpreter's destruction abort the process; arm in the main interpreter"
        )
    guard = _registry.arm(seconds, code, reason)
    for hook in _config.config.on_arm:
        hook(guard)
    return guard


def current_deadline() -> float | None:
    """The deadline that fires first among this process's live guards, or None."""
    registry = _registry  # no lock: safe from signal handlers and __del__
    first = min([*registry.live, *registry.inert], key=_deadline_order, default=None)
    return None if first is None else first._deadline


def backstop_mechanism() -> str:
    """``"timer_create"``, ``"setitimer"`` or ``"none"``: what backs the deadline here."""
    return _registry.backstop.name
