"""Hooks: how a hard exit reaches your logs, metrics and tests.

Nothing in hardexit logs or counts by itself; it calls hooks.  The default
is one on-fire hook, :func:`log_hard_exit`, which puts one record on the
``hardexit`` logger.  Replace or extend the lists with
:func:`set_on_fire_hooks` and :func:`set_on_arm_hooks`.

On-fire hooks run after the deadline, in the watchdog thread, while a wedged
thread may hold any lock in the process.  The exit does not wait for them
past the deadline + 100 ms, so a hook that blocks costs its own
output, never the exit.  Keep them short; do not take locks you cannot bound.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._guard import HardExit

    OnFireHook = Callable[["FireDetails"], object]
    OnArmHook = Callable[[HardExit], object]

__all__ = [
    "FireDetails",
    "get_on_arm_hooks",
    "get_on_fire_hooks",
    "log_hard_exit",
    "set_on_arm_hooks",
    "set_on_fire_hooks",
]


class FireDetails:
    """What is known when a guard fires; passed to every on-fire hook.

    All times are seconds on the ``time.monotonic()`` clock.
    """

    __slots__ = ("armed_at", "deadline", "exit_code", "fired_at", "reason", "timeout")

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
        self.timeout = timeout  #: the timeout the guard was armed with
        self.armed_at = armed_at  #: when arm_hard_exit() was called
        self.deadline = deadline  #: the deadline that passed
        self.fired_at = fired_at  #: when the watchdog thread saw it pass
        self.exit_code = exit_code  #: the code the process exits with
        self.reason = reason  #: the reason given to arm_hard_exit(), if any

    @property
    def late(self) -> float:
        """How long after the deadline the watchdog thread got to run."""
        return self.fired_at - self.deadline

    def __repr__(self) -> str:
        return (
            f"FireDetails(timeout={self.timeout!r}, deadline={self.deadline!r}, "
            f"late={self.late:.6f}, exit_code={self.exit_code!r}, reason={self.reason!r})"
        )


def log_hard_exit(details: FireDetails) -> None:
    """The default on-fire hook: one ERROR record on the ``hardexit`` logger.

    The record carries ``hardexit_deadline``, ``hardexit_late`` and
    ``hardexit_exit_code`` as extra attributes for structured handlers.
    """
    import logging

    because = f" ({details.reason})" if details.reason else ""
    logging.getLogger("hardexit").error(
        "hard exit%s: teardown outlived its %.3f s deadline; the deadline passed "
        "%.1f ms ago, exiting with code %d",
        because,
        details.timeout,
        details.late * 1e3,
        details.exit_code,
        extra={
            "hardexit_deadline": details.deadline,
            "hardexit_late": details.late,
            "hardexit_exit_code": details.exit_code,
        },
    )


_on_fire: tuple[OnFireHook, ...] = (log_hard_exit,)
_on_arm: tuple[OnArmHook, ...] = ()


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
    global _on_fire
    _on_fire = _checked(hooks, "on-fire hooks")


def get_on_fire_hooks() -> tuple[OnFireHook, ...]:
    """The on-fire hooks, in the order they run."""
    return _on_fire


def set_on_arm_hooks(hooks: Iterable[OnArmHook]) -> None:
    """Replace the on-arm hooks, called with each new guard once it is armed.

    They run in the arming thread, after the guard is live; an exception from
    one propagates to the caller of ``arm_hard_exit()`` with the guard armed.
    """
    global _on_arm
    _on_arm = _checked(hooks, "on-arm hooks")


def get_on_arm_hooks() -> tuple[OnArmHook, ...]:
    """The on-arm hooks, in the order they run."""
    return _on_arm
