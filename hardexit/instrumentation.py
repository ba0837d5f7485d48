"""Hooks: how a hard exit reaches your logs, metrics and tests.

Nothing in hardexit logs or counts by itself; it calls hooks.  The default
is one on-fire hook, :func:`log_hard_exit`, which puts one record on the
``hardexit`` logger.  Replace or extend the lists with
:func:`set_on_fire_hooks` and :func:`set_on_arm_hooks`; annotate your hooks
with :data:`OnFireHook` and :data:`OnArmHook`.

On-fire hooks run after the deadline, in the watchdog thread, while a wedged
thread may hold any lock in the process.  The exit does not wait for them
past the report's deadline (docs/design.md, "Stages"), so a hook that blocks
costs its own output, never the exit.  Keep them short, take no lock you
cannot bound, and import nothing: an import then reads files with the exit
already late.
"""

from __future__ import annotations

import _collections_abc
import sys

from . import _config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._guard import HardExit  # noqa: F401 - named in OnArmHook

__all__ = [
    "FireDetails",
    "OnArmHook",
    "OnFireHook",
    "get_on_arm_hooks",
    "get_on_fire_hooks",
    "log_hard_exit",
    "set_on_arm_hooks",
    "set_on_fire_hooks",
]


_EXIT_PHASE = "interpreter exit began"  # hardexit._at_exit.PHASE


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
        if reason.startswith(_EXIT_PHASE):  # arm_at_exit() armed it as the exit began
            rest = reason[len(_EXIT_PHASE) :]
            return f"{_EXIT_PHASE} {self.since_armed:.3f} s ago{rest} and has not ended, {late}"
        because = f" ({self.reason})" if self.reason else ""
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


#: What an on-fire hook is: called with the :class:`FireDetails`.
OnFireHook = _collections_abc.Callable[[FireDetails], object]
#: What an on-arm hook is: called with each new guard, once it is armed.
OnArmHook = _collections_abc.Callable[["HardExit"], object]


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


def _checked(
    hooks: Iterable[Callable[..., object]], name: str
) -> tuple[Callable[..., object], ...]:
    checked = tuple(hooks)
    for hook in checked:
        if not callable(hook):
            raise TypeError(f"{name} must be callables; got {hook!r}")
    return checked


def set_on_fire_hooks(hooks: Iterable[OnFireHook]) -> None:
    """Replace the on-fire hooks; ``[]`` silences the record (the stack dump stays)."""
    _config.config.on_fire = _checked(hooks, "on-fire hooks")


def get_on_fire_hooks() -> tuple[OnFireHook, ...]:
    """The on-fire hooks, in the order they run."""
    return _config.config.on_fire


def set_on_arm_hooks(hooks: Iterable[OnArmHook]) -> None:
    """Replace the on-arm hooks, called with each new guard once it is armed.

    They run in the arming thread, after the guard is live; an exception from
    one propagates to the caller of ``arm_hard_exit()`` with the guard armed.
    """
    _config.config.on_arm = _checked(hooks, "on-arm hooks")


def get_on_arm_hooks() -> tuple[OnArmHook, ...]:
    """The on-arm hooks, in the order they run."""
    return _config.config.on_arm


_config.config.on_fire = (log_hard_exit,)
