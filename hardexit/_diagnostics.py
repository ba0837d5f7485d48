"""What operators learn when a guard fires.

This runs while some other thread is wedged, possibly holding a logging
handler's lock or the lock inside ``sys.stdout``.  So the order is: first
what cannot block on a Python lock (a line and every thread's stack, written
straight to fd 2), then what can (hooks, flushing handlers and stdio).  The
caller bounds it (docs/design.md, "Stages").  Nothing here imports.
"""

from __future__ import annotations

import faulthandler
import os
import sys

from . import _config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._registry import HardExit


#: The reason of a guard that ``arm_at_exit()`` armed as the interpreter began
#: to exit (with the caller's own in parentheses); its report names the phase.
EXIT_BEGAN = "interpreter exit began"


class FireDetails:
    """What is known when a guard fires; passed to every on-fire hook.  Immutable.

    All times are seconds on the ``time.monotonic()`` clock.
    """

    __slots__ = ("armed_at", "deadline", "exit_code", "fired_at", "reason", "timeout")

    armed_at: float  #: when arm_hard_exit() was called
    deadline: float  #: the deadline that passed, after any move
    exit_code: int  #: the code the process exits with
    fired_at: float  #: when the watchdog thread saw it pass
    reason: str | None  #: the reason given to arm_hard_exit(), if any
    timeout: float  #: the timeout the guard was armed with (moving the deadline keeps it)

    def __init__(
        self,
        *,
        timeout: float,
        armed_at: float,
        deadline: float,
        fired_at: float,
        exit_code: int,
        reason: str | None,
    ) -> None:
        for name, value in (
            ("timeout", timeout),
            ("armed_at", armed_at),
            ("deadline", deadline),
            ("fired_at", fired_at),
            ("exit_code", exit_code),
            ("reason", reason),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"FireDetails is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"FireDetails is immutable; cannot delete {name!r}")

    @property
    def late(self) -> float:
        """How long after the deadline the watchdog thread got to run."""
        return self.fired_at - self.deadline

    @property
    def since_armed(self) -> float:
        """How long teardown had run when the guard fired."""
        return self.fired_at - self.armed_at

    def summary(self) -> str:
        """One line: when it was armed, by how much the deadline passed, the exit code."""
        late = f"{self.late * 1e3:.1f} ms past its deadline; exiting with code {self.exit_code}"
        reason = self.reason or ""
        if reason == EXIT_BEGAN or reason.startswith(f"{EXIT_BEGAN} ("):
            # arm_at_exit() armed it as the exit began: the phase, then how long ago.
            rest = reason[len(EXIT_BEGAN) :]
            return f"{EXIT_BEGAN} {self.since_armed:.3f} s ago{rest} and has not ended, {late}"
        because = f" ({reason})" if reason else ""
        return (
            f"teardown{because} still running {self.since_armed:.3f} s after the guard was "
            f"armed, {late}"
        )

    def __repr__(self) -> str:
        return (
            f"FireDetails(timeout={self.timeout!r}, armed_at={self.armed_at!r}, "
            f"deadline={self.deadline!r}, late={self.late:.6f}, "
            f"exit_code={self.exit_code!r}, reason={self.reason!r})"
        )


def log_hard_exit(details: FireDetails) -> None:
    """The default on-fire hook: one ERROR record on the ``hardexit`` logger.

    The record carries ``hardexit_deadline``, ``hardexit_late`` and
    ``hardexit_exit_code`` as extra attributes for structured handlers.  If
    the application never imported :mod:`logging`, no handler can be
    configured, and the line hardexit wrote to stderr is the whole story:
    the hook does nothing rather than import it after the deadline.
    """
    logging = sys.modules.get("logging")
    if logging is None:
        return
    logging.getLogger("hardexit").error(
        "hard exit: %s",
        details.summary(),
        extra={
            "hardexit_deadline": details.deadline,
            "hardexit_late": details.late,
            "hardexit_exit_code": details.exit_code,
        },
    )


def on_fire_hooks() -> tuple[Callable[[FireDetails], object], ...]:
    """The hooks a fire runs: those set, or the default (``_config.Config.on_fire``)."""
    hooks = _config.config.on_fire
    return (log_hard_exit,) if hooks is None else hooks


def report(guard: HardExit, fired_at: float, stacks_dumped: bool) -> None:
    """*stacks_dumped*: the kernel's dump stage already wrote every stack."""
    details = FireDetails(
        timeout=guard.timeout,
        armed_at=guard.armed_at,
        deadline=guard.deadline,
        fired_at=fired_at,
        exit_code=guard.exit_code,
        reason=guard.reason,
    )
    stacks = "Every thread's stack is above." if stacks_dumped else "Every thread's stack:"
    _write_stderr(f"hardexit: {details.summary()}. {stacks}\n")
    if not stacks_dumped:
        try:
            faulthandler.dump_traceback(2, all_threads=True)
        except (OSError, RuntimeError, ValueError):
            pass
    for hook in on_fire_hooks():
        try:
            hook(details)
        except BaseException as exc:  # a broken hook must not stop the rest
            _write_stderr(f"hardexit: on-fire hook {hook!r} raised {exc!r}\n")
    _flush_logging()
    _flush_stdio()


def _write_stderr(text: str) -> None:
    # os.write on fd 2 takes no Python lock, unlike sys.stderr.
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _flush_logging() -> None:
    logging = sys.modules.get("logging")
    if logging is None:
        return
    # Every live handler, attached or not: the list logging.shutdown() walks.
    for ref in list(getattr(logging, "_handlerList", ())):
        handler = ref()
        if handler is not None:
            try:
                handler.flush()
            except Exception:
                pass


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
