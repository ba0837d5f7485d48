"""Guards, and the one rule that combines them: the earliest deadline wins.

Each :class:`HardExit` is a promise made by some caller: "this process is
gone by my deadline".  Keeping every promise at once means exiting at the
earliest live deadline, with that guard's exit code.  Cancelling a guard
withdraws its promise only; it never moves another guard's deadline.
"""

from __future__ import annotations

import _thread
import os
import time

from . import _backstop, _config, _watchdog, instrumentation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

    from ._backstop import Backstop

_ARMED = "armed"
_CANCELLED = "cancelled"


class Registry:
    """Every live guard of this process; a forked child starts a fresh one.

    ``lock`` guards every field and is never held across anything that can
    block, nor across a GIL release: arming under GIL contention stays cheap.
    """

    __slots__ = (
        "backstop",
        "firing",
        "inert",
        "live",
        "lock",
        "next_seq",
        "wake",
        "watchdog_due",
    )

    def __init__(self, backstop: Backstop | None) -> None:
        self.lock = _thread.allocate_lock()
        self.wake = _thread.allocate_lock()  # held = no wake-up pending
        self.wake.acquire()
        self.live: list[HardExit] = []
        self.inert: list[HardExit] = []  # armed under hardexit.testing.set_testing(True)
        self.backstop = backstop
        self.firing: HardExit | None = None
        self.watchdog_due: float | None = None  # None: no watchdog thread yet
        self.next_seq = 0

    def due(self) -> HardExit | None:
        """The guard whose deadline comes first (ties: the first armed)."""
        return min(self.live, key=_deadline_order) if self.live else None

    def reschedule(self) -> None:
        """Point the backstop and the watchdog at the earliest deadline. Lock held."""
        if self.firing is not None:
            return  # the watchdog has moved the backstop to cover its diagnostics
        first = self.due()
        assert self.backstop is not None
        if first is None:
            self.backstop.clear()
            return
        self.backstop.schedule(first.deadline + _backstop.BACKSTOP_DELAY, first.exit_code)
        if self.watchdog_due is None:
            self.watchdog_due = first.deadline
            _thread.start_new_thread(_watchdog.watch, (self,))
        elif first.deadline < self.watchdog_due and self.wake.locked():
            try:
                self.wake.release()
            except RuntimeError:  # another thread woke it first
                pass


def _deadline_order(guard: HardExit) -> tuple[float, int]:
    return (guard._deadline, guard._seq)


_registry = Registry(None)
testing_mode = False  # set by hardexit.testing.set_testing()


def _after_fork_in_child() -> None:
    # The child has no watchdog thread and none of its parent's kernel timers.
    # Its parent's guards do not follow it: the child arms its own.
    global _registry
    backstop = _registry.backstop
    if backstop is not None:
        backstop.forget_after_fork()
    _registry = Registry(backstop)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
        self._inert = testing_mode  # never fires, even after testing mode ends

    @property
    def deadline(self) -> float:
        """When the process exits, on the ``time.monotonic()`` clock.

        Assign to move it, earlier or later; the earliest deadline among all
        live guards is the one that fires.
        """
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        deadline = _config.check_deadline(value)
        registry = self._registry
        with registry.lock:
            self._deadline = deadline
            if self._state is _ARMED and registry is _registry and not self._inert:
                registry.reschedule()

    @property
    def remaining(self) -> float:
        """Seconds until :attr:`deadline`; negative once it has passed."""
        return self._deadline - time.monotonic()

    @property
    def armed(self) -> bool:
        """True until cancelled; False in a forked child, which has no guards."""
        return self._state is _ARMED and self._registry is _registry

    def cancel(self) -> bool:
        """Withdraw this guard.

        Returns True if this call disarmed it, False if it was not armed any
        more: cancelled before, armed in the parent of this forked process,
        or already firing (then the exit goes ahead).  Other guards stay armed.
        """
        registry = self._registry
        with registry.lock:
            if self._state is not _ARMED or registry is not _registry or registry.firing:
                return False
            self._state = _CANCELLED
            if self._inert:
                registry.inert.remove(self)
            else:
                registry.live.remove(self)
                registry.reschedule()
        return True

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
    exits with *exit_code*: a dump of every thread's stack and one record on
    the ``hardexit`` logger first where Python can still run, then
    ``os._exit``; and where it cannot, the kernel backstop, 25 ms later.
    Either way the process is gone by the deadline + 0.1 s.

    *timeout* defaults to ``hardexit.HARD_EXIT_TIMEOUT`` (10.0 s unless the
    ``HARDEXIT_TIMEOUT`` environment variable or an assignment says
    otherwise), read now.  *reason* is shown in the diagnostics.

    Raises TypeError or ValueError, arming nothing, for a timeout that is not
    a finite number of seconds > 0 (bools and strings included), an exit code
    that is not an int in 0..255, or a reason that is not a str.
    """
    seconds = _config.resolve_timeout(timeout, hardexit_timeout())
    code = _config.check_exit_code(exit_code)
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"reason must be a str or None; got {reason!r} ({type(reason).__name__})")
    registry = _registry
    if registry.backstop is None:
        prepare()
    with registry.lock:
        guard = HardExit(seconds, code, reason, time.monotonic(), registry)
        if guard._inert:
            registry.inert.append(guard)
        else:
            registry.live.append(guard)
            try:
                registry.reschedule()
            except BaseException:
                registry.live.remove(guard)
                guard._state = _CANCELLED
                raise
    for hook in instrumentation.get_on_arm_hooks():
        hook(guard)
    return guard


def hardexit_timeout() -> object:
    """``hardexit.HARD_EXIT_TIMEOUT`` as it is now (users assign to it)."""
    import hardexit

    return hardexit.HARD_EXIT_TIMEOUT


def current_deadline() -> float | None:
    """The deadline that fires first among this process's live guards, or None."""
    registry = _registry
    with registry.lock:
        first = min(registry.live + registry.inert, key=_deadline_order, default=None)
    return None if first is None else first.deadline


def prepare() -> str:
    """Do the one-time set-up now, so that the first arm costs what every arm does.

    Loads the backstop (through ctypes on Linux).  Call it at start-up if the
    first arm may happen under heavy thread contention: an import gives up
    the GIL at every file it reads, and getting it back from busy threads
    takes a switch interval each time.  Returns the backstop's name, as
    :func:`backstop_mechanism` does.  Starts no thread.
    """
    registry = _registry
    if registry.backstop is None:
        backstop = _backstop.load()
        with registry.lock:
            if registry.backstop is None:
                registry.backstop = backstop
    return registry.backstop.name


def backstop_mechanism() -> str:
    """``"timer_create"``, ``"setitimer"`` or ``"none"``: what backs the deadline here."""
    return prepare()
