"""The backstop: the stages of an exit that need neither the GIL nor a live interpreter.

Why the watchdog thread alone is not enough, and what each stage is for, is
told once in ``docs/design.md`` ("Stages"); the numbers are in ``_config``.
Here are the mechanisms: :class:`KernelTimer` (Linux with glibc, the default
there), :class:`AlarmTimer` (opt-in only) and :class:`NoBackstop`.
``HARDEXIT_BACKSTOP=timer_create|setitimer|none`` forces one (``_config``
reads it).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time

from . import _config
from ._config import DUMP_DELAY, EXIT_DELAY, KILL_DELAY, REPORT_DEADLINE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable
    from typing import Any, Final, Protocol

    class Backstop(Protocol):
        name: str
        #: Whether it can end the process with no watchdog thread at all.
        exits_alone: bool

        def prepare(self, exit_code: int) -> None:
            """Create what exiting with *exit_code* needs; raises OSError if it cannot."""

        def attach_watchdog(self, thread_id: int | None) -> None:
            """The watchdog thread's native id, where the stack-dump stage is aimed."""

        def schedule(self, deadline: float, exit_code: int, watched: bool) -> None:
            """Program every stage for *deadline* (``time.monotonic()`` clock).

            *watched*: a watchdog thread exists, so the kernel gives it time first.
            """

        def begin_report(self, deadline: float, exit_code: int) -> tuple[bool, bool]:
            """The watchdog is reporting: hold the exit until the report's deadline.

            Returns (whether the kernel still bounds the report, whether the
            kernel's stack dump already ran).
            """

        def clear(self) -> None:
            """Nothing is due any more."""

        def forget_after_fork(self) -> None:
            """Drop state that belonged to the parent; timers are not inherited."""

else:
    import _signal  # signal's C half: `signal` itself imports enum

_CLOCK_MONOTONIC = 1  # <linux/time.h>; the clock time.monotonic() reads on Linux
_SIGEV_SIGNAL = 0  # <bits/sigevent-consts.h>
_SIGEV_THREAD = 2
_SIGEV_THREAD_ID = 4
_TIMER_ABSTIME = 1
_SIGKILL = 9


def _not_before_now(deadline: float) -> float:
    """When the stages start: the deadline, or now if it has passed already.

    A deadline moved into the past means "exit now, with my code".  Were the
    stages programmed from it, every one would be due at once, and the
    SIGKILL stage, delivered by the kernel itself, would beat the exit stage,
    which needs glibc to start a thread first.  From now, they keep their
    order and spacing.
    """
    return max(deadline, time.monotonic())


class KernelTimer:
    """POSIX timers on ``CLOCK_MONOTONIC``; every stage is one timer.

    - exit: ``SIGEV_THREAD`` whose notify function is libc's ``_exit`` and
      whose value is the exit code, one timer per exit code in use;
    - dump: ``SIGEV_THREAD_ID`` sending a free real-time signal, on which
      ``faulthandler`` is registered, to the watchdog thread;
    - kill: ``SIGEV_SIGNAL`` with ``SIGKILL``, for when glibc cannot start
      the thread that would call ``_exit`` (a pid or thread limit).

    Every timer is created on the arm path, so that cancelling only moves
    timers and can never fail for want of a resource.
    """

    name = "timer_create"
    exits_alone = True

    def __init__(self) -> None:
        import ctypes

        class Sigevent(ctypes.Structure):
            # glibc's struct sigevent: sigval, signo, notify, then a union
            # padded to 64 bytes: (function, attributes) for SIGEV_THREAD,
            # the thread id for SIGEV_THREAD_ID.
            _fields_ = [
                ("sigev_value", ctypes.c_void_p),
                ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int),
                ("sigev_notify_function", ctypes.c_void_p),
                ("sigev_notify_attributes", ctypes.c_void_p),
                ("_pad", ctypes.c_byte * (64 - 16 - 2 * ctypes.sizeof(ctypes.c_void_p))),
            ]

        # PyDLL, not CDLL: these calls return at once, and keeping the GIL
        # across them spares a GIL reacquisition on every arm and cancel,
        # which costs milliseconds when other threads are busy.
        libc = ctypes.PyDLL(None, use_errno=True)
        if not hasattr(libc, "timer_create"):  # glibc < 2.34 keeps POSIX timers in librt
            libc = ctypes.PyDLL("librt.so.1", use_errno=True)
        self._timer_create = libc.timer_create
        self._timer_create.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        # No argtypes: the timer is passed as the c_void_p that timer_create
        # filled and the itimerspec as an array, which costs least per call.
        self._timer_settime = libc.timer_settime
        self._sigaction = libc.sigaction
        self._sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._ctypes = ctypes
        self._sigevent = Sigevent
        self._exit_address = ctypes.cast(libc._exit, ctypes.c_void_p).value
        # struct itimerspec as four longs: interval seconds and nanoseconds,
        # then the value's.  All zero disarms.
        itimerspec = ctypes.c_long * 4
        self._due = itimerspec()
        self._never = itimerspec()
        self._old = itimerspec()
        self._sigaction_buffer = ctypes.create_string_buffer(256)  # >= sizeof(struct sigaction)
        # A struct sigaction whose handler (its first member) is SIG_IGN, with
        # an empty mask and no flags.
        self._ignore = ctypes.create_string_buffer(256)
        ctypes.c_void_p.from_buffer(self._ignore).value = 1  # SIG_IGN
        self._dump_signal: int | None = None  # chosen once; faulthandler stays registered
        self.forget_after_fork()

    def forget_after_fork(self) -> None:
        # A forked child has none of its parent's POSIX timers (glibc restarts
        # its timer thread there): every id below belongs to the parent.
        self._exit_timers: dict[int, Any] = {}
        self._kill_timer: Any = None
        self._dump_timer: Any = None
        self._armed_exit: Any = None
        self._scheduled: tuple[float, int, bool] | None = None

    def _create(self, notify: int, signo: int, value: int, target: int) -> Any:
        ctypes = self._ctypes
        event = self._sigevent(sigev_value=value, sigev_signo=signo, sigev_notify=notify)
        event.sigev_notify_function = target  # the function, or the thread id
        timer_id = ctypes.c_void_p()
        if self._timer_create(
            _CLOCK_MONOTONIC, ctypes.addressof(event), ctypes.addressof(timer_id)
        ):
            raise OSError(ctypes.get_errno(), "timer_create failed")
        return timer_id

    def _settime(self, timer: Any, when: float | None, old: Any = None) -> None:
        if when is None:
            failed = self._timer_settime(timer, 0, self._never, old)
        else:
            due = self._due
            due[2] = seconds = int(when)
            due[3] = int((when - seconds) * 1e9)
            failed = self._timer_settime(timer, _TIMER_ABSTIME, due, old)
        if failed:
            raise OSError(self._ctypes.get_errno(), "timer_settime failed")

    def prepare(self, exit_code: int) -> None:
        if self._kill_timer is None:
            self._kill_timer = self._create(_SIGEV_SIGNAL, _SIGKILL, 0, 0)
        if exit_code not in self._exit_timers:
            timer = self._create(_SIGEV_THREAD, 0, exit_code, self._exit_address or 0)
            self._exit_timers[exit_code] = timer

    def attach_watchdog(self, thread_id: int | None) -> None:
        if thread_id is None or self._dump_timer is not None:
            return
        if self._dump_signal is None:
            signo = self._free_realtime_signal()
            if signo is None:
                return  # every real-time signal is taken: no dump stage (docs/design.md)
            # Ignored first, so that faulthandler records SIG_IGN as the action
            # to restore when it is finalized.  From 3.14 the watchdog thread
            # outlives faulthandler (a thread that wants the GIL after
            # finalization hangs instead of exiting), and a dump aimed at it
            # then would take the default action: death by this signal, not
            # the guard's exit code.
            if self._sigaction(signo, self._ignore, None) != 0:
                return
            faulthandler.register(signo, file=2, all_threads=True, chain=False)
            self._dump_signal = signo
        try:
            self._dump_timer = self._create(_SIGEV_THREAD_ID, self._dump_signal, 0, thread_id)
        except OSError:
            pass  # the exit stages do not depend on it

    def _free_realtime_signal(self) -> int | None:
        """The highest real-time signal whose action is the default: nobody's."""
        for signo in range(_signal.SIGRTMAX, _signal.SIGRTMIN - 1, -1):
            buffer = self._sigaction_buffer
            if self._sigaction(signo, None, buffer) == 0:
                handler = self._ctypes.c_void_p.from_buffer(buffer).value
                if not handler:  # SIG_DFL
                    return signo
        return None

    def schedule(self, deadline: float, exit_code: int, watched: bool) -> None:
        if self._scheduled == (deadline, exit_code, watched):
            return
        self._scheduled = None  # until every stage below is programmed
        start = _not_before_now(deadline)
        self._arm_exit(exit_code, start + EXIT_DELAY if watched else start)
        assert self._kill_timer is not None
        self._settime(self._kill_timer, start + KILL_DELAY)
        if self._dump_timer is not None:
            self._settime(self._dump_timer, start + DUMP_DELAY if watched else None)
        self._scheduled = (deadline, exit_code, watched)

    def _arm_exit(self, exit_code: int, when: float) -> None:
        """Arm *exit_code*'s timer for *when*; at most one exit timer is armed."""
        exit_timer = self._exit_timers[exit_code]
        if self._armed_exit is not None and self._armed_exit is not exit_timer:
            self._settime(self._armed_exit, None)
            self._armed_exit = None
        self._settime(exit_timer, when)
        self._armed_exit = exit_timer

    def begin_report(self, deadline: float, exit_code: int) -> tuple[bool, bool]:
        dumped = False
        if self._dump_timer is not None:
            was_armed = self._scheduled is not None and self._scheduled[2]
            self._settime(self._dump_timer, None, self._old)
            # Disarmed with no time left: it had fired.  Its signal is aimed
            # at this thread, so that dump has run by now.
            dumped = was_armed and self._old[2] == 0 and self._old[3] == 0
        self._scheduled = None
        start = _not_before_now(deadline)
        self._arm_exit(exit_code, start + REPORT_DEADLINE)
        assert self._kill_timer is not None
        self._settime(self._kill_timer, start + KILL_DELAY)
        return True, dumped

    def clear(self) -> None:
        if self._armed_exit is not None:
            self._settime(self._armed_exit, None)
            self._armed_exit = None
        if self._kill_timer is not None:
            self._settime(self._kill_timer, None)
        if self._dump_timer is not None:
            self._settime(self._dump_timer, None)
        self._scheduled = None


class AlarmTimer:
    """``setitimer(ITIMER_REAL)`` with ``SIGALRM`` at its default action; opt-in only.

    The exit code is lost (killed by signal 14), and two hazards make it
    unfit as a default: an interval timer survives ``execve``, so a program
    exec'd while a guard is armed dies at the old deadline; and it shares the
    one ``ITIMER_REAL`` with the application.  It is used only while
    ``SIGALRM`` is at its default action, and it leaves alone an alarm that
    the application set after arming.
    """

    name = "setitimer"
    exits_alone = True

    def __init__(self) -> None:
        self._expires: float | None = None  # when our alarm is due, if it is set

    def prepare(self, exit_code: int) -> None:
        pass

    def attach_watchdog(self, thread_id: int | None) -> None:
        pass

    def _still_ours(self) -> bool:
        if self._expires is None:
            return False
        if _signal.getsignal(_signal.SIGALRM) != _signal.SIG_DFL:
            return False
        left = _signal.getitimer(_signal.ITIMER_REAL)[0]
        return bool(abs(time.monotonic() + left - self._expires) < 0.010)

    def _set(self, when: float) -> None:
        if self._expires is None and _signal.getsignal(_signal.SIGALRM) != _signal.SIG_DFL:
            return  # the application's alarm: never taken
        if self._expires is not None and not self._still_ours():
            self._expires = None
            return
        _signal.setitimer(_signal.ITIMER_REAL, max(when - time.monotonic(), 1e-6))
        self._expires = when

    def schedule(self, deadline: float, exit_code: int, watched: bool) -> None:
        start = _not_before_now(deadline)
        self._set(start + EXIT_DELAY if watched else start)

    def begin_report(self, deadline: float, exit_code: int) -> tuple[bool, bool]:
        self._set(_not_before_now(deadline) + REPORT_DEADLINE)
        return self._expires is not None, False

    def clear(self) -> None:
        if self._still_ours():
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        self._expires = None

    def forget_after_fork(self) -> None:
        self._expires = None  # interval timers are not inherited across fork


class NoBackstop:
    """The watchdog thread alone."""

    name = "none"
    exits_alone = False

    def prepare(self, exit_code: int) -> None:
        pass

    def attach_watchdog(self, thread_id: int | None) -> None:
        pass

    def schedule(self, deadline: float, exit_code: int, watched: bool) -> None:
        pass

    def begin_report(self, deadline: float, exit_code: int) -> tuple[bool, bool]:
        return False, False

    def clear(self) -> None:
        pass

    def forget_after_fork(self) -> None:
        pass


_CHOICES: Final[dict[str, Callable[[], Backstop]]] = {
    "timer_create": KernelTimer,
    "setitimer": AlarmTimer,
    "none": NoBackstop,
}


def load() -> Backstop:
    """The backstop for this machine, or the one ``HARDEXIT_BACKSTOP`` names."""
    forced = _config.config.backstop
    if forced is not None:
        return _CHOICES[forced]()
    if sys.platform.startswith("linux") and _is_glibc():
        try:
            return KernelTimer()
        except (OSError, AttributeError):
            pass
    return NoBackstop()


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False
