"""The process's guards: :func:`arm_hard_exit` and what reads them.

One :class:`~hardexit._registry.Registry` per process, with this machine's
backstop and the watchdog thread; a forked child starts a fresh one.
"""

from __future__ import annotations

import os

from . import _backstop, _config, _watchdog
from ._registry import HardExit, Registry

__all__ = ["HardExit", "arm_hard_exit", "backstop_mechanism", "current_deadline"]

_registry = Registry(_backstop.load(), _watchdog.start)
_IN_MAIN_INTERPRETER = _config.in_main_interpreter()


def _after_fork_in_child() -> None:
    # The child has no watchdog thread and none of its parent's kernel timers.
    # Its parent's guards do not follow it: the child arms its own.
    global _registry
    _registry.foreign = True  # its lock may have been held by a thread that is not here
    backstop = _registry.backstop
    backstop.forget_after_fork()
    _registry = Registry(backstop, _watchdog.start)


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
    refuse_in_a_subinterpreter()
    guard = _registry.arm(seconds, code, reason)
    for hook in _config.config.on_arm:
        hook(guard)
    return guard


def refuse_in_a_subinterpreter() -> None:
    """Raise RuntimeError in a subinterpreter: a watchdog thread would abort its destruction."""
    if not _IN_MAIN_INTERPRETER:
        raise RuntimeError(
            "hardexit cannot arm in a subinterpreter: its watchdog thread would make "
            "the interpreter's destruction abort the process; arm in the main interpreter"
        )


def current_deadline() -> float | None:
    """The deadline that fires first among this process's live guards, or None."""
    return _registry.first_deadline()


def backstop_mechanism() -> str:
    """``"timer_create"``, ``"setitimer"`` or ``"none"``: what backs the deadline here."""
    return _registry.backstop.name
