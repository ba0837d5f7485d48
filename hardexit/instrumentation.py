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

from . import _config
from ._diagnostics import FireDetails, log_hard_exit, on_fire_hooks
from ._registry import HardExit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


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


#: What an on-fire hook is: called with the :class:`FireDetails`.
OnFireHook = _collections_abc.Callable[[FireDetails], object]
#: What an on-arm hook is: called with each new guard, once it is armed.
OnArmHook = _collections_abc.Callable[[HardExit], object]


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
    return on_fire_hooks()


def set_on_arm_hooks(hooks: Iterable[OnArmHook]) -> None:
    """Replace the on-arm hooks, called with each new guard once it is armed.

    They run in the arming thread, after the guard is live; an exception from
    one propagates to the caller of ``arm_hard_exit()`` with the guard armed.
    """
    _config.config.on_arm = _checked(hooks, "on-arm hooks")


def get_on_arm_hooks() -> tuple[OnArmHook, ...]:
    """The on-arm hooks, in the order they run."""
    return _config.config.on_arm
