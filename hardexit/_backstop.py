"""The backstop: an exit that needs neither the GIL nor a live interpreter.

The watchdog thread (``_watchdog.py``) exits at the deadline and says why, but
it is a Python thread.  It cannot run while a C call holds the GIL, it is
starved when many threads want the GIL, and it is frozen for good once
interpreter finalization begins.  So every armed deadline is also handed to
the kernel, in two stages:

1. The kernel exits at ``deadline + BACKSTOP_DELAY`` (25 ms), time enough
   for a watchdog that can get the GIL at all to get there first.
2. When the watchdog starts firing, it moves the kernel's exit to ``deadline
   + REPORT_DEADLINE`` (100 ms) and says why inline; whatever in the
   diagnostics blocks (a logging handler's lock held by the wedged thread,
   say) is cut off there.

So the process is gone by ``deadline + 0.1 s`` in every case, and by
``deadline + 25 ms`` wherever Python cannot run.  The mechanisms:

``timer_create`` (Linux with glibc)
    A POSIX timer on ``CLOCK_MONOTONIC`` with ``SIGEV_THREAD``, whose notify
    function is libc's own ``_exit`` and whose value is the exit code.  On
    expiry glibc's timer thread calls ``_exit(code)``: no Python, no GIL, no
    lock, no allocation of ours, and the exact exit code, at every stage of
    finalization.

``setitimer`` (other POSIX systems)
    ``ITIMER_REAL`` with ``SIGALRM`` left at its default action, so the kernel
    kills the process by ``SIGALRM``.  The exit code is lost (status -14), and
    it is used only while nobody has a handler on ``SIGALRM``: the
    application's alarm is never taken.

``none`` (Windows, or forced)
    The watchdog thread alone.

``HARDEXIT_BACKSTOP=timer_create|setitimer|none`` forces one, for tests and
benchmarks; unset or ``auto`` picks the first that works here.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final, Protocol

    class Backstop(Protocol):
        name: str

        def schedule(self, when: float, exit_code: int) -> bool:
            """Exit with *exit_code* at *when* (``time.monotonic()`` clock) unless moved.

            Returns whether the kernel will carry it out.
            """

        def clear(self) -> None:
            """Nothing is due any more."""

        def forget_after_fork(self) -> None:
            """Drop state that belonged to the parent; timers are not inherited."""


BACKSTOP_ENV_VAR: Final = "HARDEXIT_BACKSTOP"
BACKSTOP_DELAY: Final = 0.025
REPORT_DEADLINE: Final = 0.100

_CLOCK_MONOTONIC = 1  # <linux/time.h>; the clock time.monotonic() reads on Linux
_SIGEV_THREAD = 2  # <bits/sigevent-consts.h>
_TIMER_ABSTIME = 1


class KernelTimer:
    """``timer_create(CLOCK_MONOTONIC, SIGEV_THREAD -> _exit(code))``, one per exit code."""

    name = "timer_create"

    def __init__(self) -> None:
        import ctypes

        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class Itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

        class Sigevent(ctypes.Structure):
            # glibc's struct sigevent: sigval, signo, notify, then a union
            # padded to 64 bytes whose SIGEV_THREAD arm is (function, attributes).
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
        self._timer_settime = libc.timer_settime
        self._timer_settime.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._ctypes = ctypes
        self._sigevent = Sigevent
        self._exit_address = ctypes.cast(ctypes.CDLL(None)._exit, ctypes.c_void_p).value
        self._due = Itimerspec()
        self._due_ref = ctypes.addressof(self._due)
        self._never = Itimerspec()  # all zero: disarm
        self._never_ref = ctypes.addressof(self._never)
        self._timers: dict[int, int] = {}
        self._armed: int | None = None

    def _timer_for(self, exit_code: int) -> int:
        timer = self._timers.get(exit_code)
        if timer is None:
            ctypes = self._ctypes
            event = self._sigevent(
                sigev_value=exit_code,
                sigev_notify=_SIGEV_THREAD,
                sigev_notify_function=self._exit_address,
            )
            timer_id = ctypes.c_void_p()
            if self._timer_create(
                _CLOCK_MONOTONIC, ctypes.addressof(event), ctypes.addressof(timer_id)
            ):
                raise OSError(ctypes.get_errno(), "timer_create failed")
            timer = self._timers[exit_code] = timer_id.value or 0
        return timer

    def _settime(self, timer: int, flags: int, spec_ref: int) -> None:
        if self._timer_settime(timer, flags, spec_ref, None):
            raise OSError(self._ctypes.get_errno(), "timer_settime failed")

    def schedule(self, when: float, exit_code: int) -> bool:
        timer = self._timer_for(exit_code)
        if self._armed is not None and self._armed != timer:
            self._settime(self._armed, 0, self._never_ref)
        seconds = int(when)
        self._due.it_value.tv_sec = seconds
        self._due.it_value.tv_nsec = int((when - seconds) * 1e9)
        self._settime(timer, _TIMER_ABSTIME, self._due_ref)
        self._armed = timer
        return True

    def clear(self) -> None:
        if self._armed is not None:
            self._settime(self._armed, 0, self._never_ref)
            self._armed = None

    def forget_after_fork(self) -> None:
        # A forked child has none of its parent's POSIX timers, and glibc
        # restarts its timer thread there; the ids above mean nothing now.
        self._timers = {}
        self._armed = None


class AlarmTimer:
    """``setitimer(ITIMER_REAL)`` with ``SIGALRM`` at its default action."""

    name = "setitimer"

    def __init__(self) -> None:
        import signal

        self._signal = signal
        self._armed = False

    def _alarm_is_free(self) -> bool:
        # getsignal() is None when C code set the handler: not ours to take.
        return self._signal.getsignal(self._signal.SIGALRM) is self._signal.SIG_DFL

    def schedule(self, when: float, exit_code: int) -> bool:
        if not (self._armed or self._alarm_is_free()):
            return False
        self._signal.setitimer(self._signal.ITIMER_REAL, max(when - time.monotonic(), 1e-6))
        self._armed = True
        return True

    def clear(self) -> None:
        if self._armed:
            self._signal.setitimer(self._signal.ITIMER_REAL, 0)
            self._armed = False

    def forget_after_fork(self) -> None:
        self._armed = False  # interval timers are not inherited across fork


class NoBackstop:
    """The watchdog thread alone."""

    name = "none"

    def schedule(self, when: float, exit_code: int) -> bool:
        return False

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
    forced = os.environ.get(BACKSTOP_ENV_VAR, "").strip() or "auto"
    if forced != "auto":
        try:
            chosen = _CHOICES[forced]
        except KeyError:
            raise ValueError(
                f"environment variable {BACKSTOP_ENV_VAR}={forced!r} is not one of "
                "auto, timer_create, setitimer, none"
            ) from None
        return chosen()
    if sys.platform.startswith("linux") and _is_glibc():
        try:
            return KernelTimer()
        except (OSError, AttributeError):
            pass
    if hasattr(os, "fork"):  # a POSIX system: setitimer exists
        return AlarmTimer()
    return NoBackstop()


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False
