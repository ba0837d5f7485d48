"""``arm_at_exit``: a guard armed the moment the interpreter begins to exit.

The hook is ``threading._shutdown``.  Every CPython from 3.10 to 3.15 begins
``Py_FinalizeEx`` -- reached when the main module ends, after ``sys.exit()``,
an unhandled exception or ``KeyboardInterrupt`` -- by looking up
``_shutdown`` on the ``threading`` module, if it is in ``sys.modules``, and
calling it.  Everything else the exit runs comes after that, or inside it:
the ``threading._register_atexit`` callbacks (concurrent.futures' joins),
the joins of non-daemon threads, then ``atexit`` handlers, then finalization.
docs/design.md ("Arming at interpreter exit") gives the reasoning per version.

So arming imports ``threading``, and gives the ``threading`` module a class
whose ``_shutdown`` is a property: whatever is stored there, by CPython,
gevent, eventlet or anyone, is called through a wrapper that arms first.
Plain assignment would lose the hook to ``eventlet.monkey_patch()``, which
replaces ``_shutdown`` without calling the one it replaced.

Everything the exit path needs is imported and resolved when
:func:`arm_at_exit` is called: at exit nothing imports or reads a file.
"""

from __future__ import annotations

import os
import sys
import time

from . import _config, _guard
from ._diagnostics import EXIT_BEGAN
from ._guard import arm_hard_exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType


#: What the guard exits with after an unhandled KeyboardInterrupt.  CPython
#: itself re-raises SIGINT and dies by it; an exit status cannot say that, so
#: the guard uses what a shell shows for it (128 + SIGINT).
KEYBOARD_INTERRUPT_STATUS = 130

# 3.12.0 to 3.12.2 refuse to start a thread once Py_FinalizeEx has begun
# ("can't create new thread at interpreter shutdown", gh-104690; allowed again
# until finalization proper by gh-113964 in 3.12.3), so a first arm at exit
# would have the kernel's exit but no watchdog thread, and so no report.
# There the watchdog is started when arm_at_exit() is called (_start_watchdog).
_THREADS_REFUSED_AT_EXIT = (3, 12) <= sys.version_info[:3] < (3, 12, 3)

# Each promise: (timeout, exit_code or None, reason or None).
_promises: list[tuple[float, int | None, str | None]] = []
_exit_began_at: list[float] = []  # set once, by the first call of the hook
_last_exception_before: list[object] = []  # sys.last_* when first called: not this exit's
_environment_read: list[bool] = []


def arm_at_exit(
    timeout: float | None = None,
    *,
    exit_code: int | None = None,
    reason: str | None = None,
) -> None:
    """From the moment the interpreter begins to exit, the process is gone within *timeout*.

    The guard is armed before anything the exit runs: the joins of
    non-daemon threads and of ``concurrent.futures`` executors, ``atexit``
    handlers (multiprocessing's, logging's), finalization.  However the exit
    began -- the main module ended, ``sys.exit()``, an unhandled exception,
    ``KeyboardInterrupt`` -- a hang there ends in a stack dump and an exit
    at the deadline.  A clean exit is untouched.

    *exit_code* ``None`` (the default) exits with the status the program was
    exiting with, as far as CPython records it: 1 after an unhandled
    exception, 130 after an unhandled ``KeyboardInterrupt``, otherwise 0
    (``sys.exit(n)`` is not recorded anywhere: docs/at-exit.md).  Calling
    again adds another promise; the earliest deadline wins.  If the exit has
    already begun, the guard is armed at once.

    Raises TypeError or ValueError, arming nothing, for arguments that
    ``arm_hard_exit()`` would refuse; RuntimeError in a subinterpreter.
    """
    seconds = _config.resolve_timeout(timeout)
    code = None if exit_code is None else _config.check_exit_code(exit_code)
    reason = _config.check_reason(reason)
    _guard.refuse_in_a_subinterpreter()
    threading = sys.modules.get("threading")
    if _exit_began_at or getattr(threading, "_SHUTTING_DOWN", False):
        # Called from an atexit handler or a finalizer: the exit is under way.
        _arm(seconds, code, reason)
        return
    _install()
    _promises.append((seconds, code, reason))


def from_environment() -> None:
    """What the ``.pth`` file runs at start-up when ``HARDEXIT_AT_EXIT`` is set.

    Never raises: a malformed value warns once and arms nothing.  Some
    CPythons (3.11.7 in a venv, for one) process site-packages, and so this
    file, twice: only the first call counts.  A subinterpreter runs the
    ``.pth`` file too: the process's own guard covers it, and it arms nothing
    (the ``.pth`` line does not even import hardexit there on 3.12+).
    """
    if _environment_read:
        return
    _environment_read.append(True)
    try:
        if not _guard._IN_MAIN_INTERPRETER:
            return
        seconds = _config.read_at_exit_env()
        if isinstance(seconds, ValueError):
            _warn(str(seconds))
        elif seconds is not None:
            arm_at_exit(seconds)
    except Exception as error:  # a program must never fail to start because of hardexit
        _warn(f"{_config.AT_EXIT_ENV_VAR}: nothing armed: {error!r}")


def _warn(message: str) -> None:
    try:
        import warnings  # only on this error path, at start-up

        # Shown as coming from the .pth file's first line, which says what it does.
        pth = os.path.join(os.path.dirname(os.path.dirname(__file__)), "hardexit_at_exit.pth")
        warnings.warn_explicit(message, RuntimeWarning, pth, 1)
    except Exception:  # -W error makes the warning raise: say it anyway
        try:
            os.write(2, f"RuntimeWarning: {message}\n".encode("utf-8", "replace"))
        except OSError:
            pass


def _install() -> None:
    # CPython calls threading._shutdown() at exit only if threading is imported.
    import threading  # at call time, never at exit

    module_class = type(threading)
    if getattr(module_class, "_hardexit_at_exit", False):
        return
    if not _last_exception_before:
        _last_exception_before.append(_last_exception())
    if _THREADS_REFUSED_AT_EXIT:
        _start_watchdog()
    # A subclass of whatever class the module has now (ModuleType, unless
    # someone else did this too), with _shutdown as a property.
    threading.__class__ = type(
        "ThreadingModule", (module_class,), {"_shutdown": _SHUTDOWN, "_hardexit_at_exit": True}
    )


def _start_watchdog() -> None:
    # The public API's only way to start the watchdog thread: arm and cancel.
    # On-arm hooks see this guard, armed and cancelled at once.
    arm_hard_exit(_config.MAX_TIMEOUT, reason="arm_at_exit: starting the watchdog").cancel()


# The threading module's ``_shutdown``, as a property of its class.  CPython
# looks ``_shutdown`` up by name when the exit begins, so this serves whatever
# was stored last (by CPython, gevent, eventlet, anyone), wrapped.
def _get_shutdown(module: ModuleType) -> Callable[[], object]:
    try:
        return _ShutdownHook(module.__dict__["_shutdown"])
    except KeyError:
        raise AttributeError("module 'threading' has no attribute '_shutdown'") from None


def _set_shutdown(module: ModuleType, value: Callable[[], object]) -> None:
    module.__dict__["_shutdown"] = value


def _del_shutdown(module: ModuleType) -> None:
    del module.__dict__["_shutdown"]


_SHUTDOWN = property(_get_shutdown, _set_shutdown, _del_shutdown)


class _ShutdownHook:
    """``threading._shutdown`` as stored, called once the at-exit guards are armed."""

    __slots__ = ("__wrapped__",)

    def __init__(self, shutdown: Callable[[], object]) -> None:
        self.__wrapped__ = shutdown

    def __call__(self) -> object:
        try:
            _exit_begins()
        finally:
            # Whatever happened above, the exit goes on as CPython wrote it.
            result = self.__wrapped__()
        return result

    def __repr__(self) -> str:
        return f"<hardexit arm_at_exit hook around {self.__wrapped__!r}>"


def _exit_begins() -> None:
    if _exit_began_at:
        return  # 3.15 calls _shutdown again; gevent's wrapper calls the one it replaced
    _exit_began_at.append(time.monotonic())
    while _promises:
        seconds, code, reason = _promises.pop(0)
        _arm(seconds, code, reason)


def _arm(seconds: float, code: int | None, reason: str | None) -> None:
    try:
        arm_hard_exit(
            seconds,
            exit_code=_exit_status() if code is None else code,
            # The one-line report then reads "interpreter exit began N s ago".
            reason=EXIT_BEGAN if reason is None else f"{EXIT_BEGAN} ({reason})",
        )
    except Exception as error:  # say so, and let the exit go on
        try:
            os.write(2, f"hardexit: arm_at_exit could not arm: {error!r}\n".encode())
        except OSError:
            pass


def _last_exception() -> object:
    """What CPython's PyErr_Print recorded last: the unhandled exception, if any."""
    last = getattr(sys, "last_exc", None)  # 3.12+
    return last if last is not None else getattr(sys, "last_value", None)


def _exit_status() -> int:
    """The status the program is exiting with, as far as CPython records it."""
    last = _last_exception()
    if last is None or (_last_exception_before and last is _last_exception_before[0]):
        return 0
    if isinstance(last, KeyboardInterrupt):
        return KEYBOARD_INTERRUPT_STATUS
    return 1
