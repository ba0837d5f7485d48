"""Where a guard's numbers come from, and which ones are accepted.

Every check here raises before anything is armed, so a bad value changes
nothing; every message names the parameter and the accepted range.
"""

from __future__ import annotations

import math
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

DEFAULT_TIMEOUT: Final = 10.0
TIMEOUT_ENV_VAR: Final = "HARDEXIT_TIMEOUT"
# timespec and lock waits take whole seconds in a C long; a ceiling far past any
# real teardown keeps every conversion exact.
MAX_TIMEOUT: Final = 1e9
ACCEPTED_TIMEOUTS: Final = "a finite number of seconds > 0 and <= 1e9 (int or float)"


class DefaultTimeout(float):
    """The shipped default, still unassigned.

    ``hardexit.HARD_EXIT_TIMEOUT`` starts as an instance of this subclass, so
    arm time can tell "never assigned" (consult ``HARDEXIT_TIMEOUT``) from
    "assigned, even to 10.0" (the assignment wins).  It prints as a float.
    """

    __slots__ = ()


def check_timeout(value: object, name: str) -> float:
    """Return *value* as float seconds, or raise naming *name*."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be {ACCEPTED_TIMEOUTS}; got {value!r} ({type(value).__name__})"
        )
    seconds = float(value)
    # `not (a < x <= b)` also rejects NaN, which compares false to everything.
    if not (0.0 < seconds <= MAX_TIMEOUT):
        raise ValueError(f"{name} must be {ACCEPTED_TIMEOUTS}; got {value!r}")
    return seconds


def check_deadline(value: object) -> float:
    """A deadline is a point on ``time.monotonic()``'s clock."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            "deadline must be a finite time.monotonic() value (int or float); "
            f"got {value!r} ({type(value).__name__})"
        )
    deadline = float(value)
    if not math.isfinite(deadline) or deadline < 0.0:
        raise ValueError(
            f"deadline must be a finite, non-negative time.monotonic() value; got {value!r}"
        )
    return deadline


def check_exit_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"exit_code must be an int in 0..255; got {value!r} ({type(value).__name__})"
        )
    if not 0 <= value <= 255:
        raise ValueError(f"exit_code must be an int in 0..255; got {value!r}")
    return int(value)


def resolve_timeout(timeout: object, module_default: object) -> float:
    """The timeout a guard gets: argument, else assignment, else environment, else 10 s.

    *module_default* is the current ``hardexit.HARD_EXIT_TIMEOUT``.  It is read
    at arm time, not import time, so ``hardexit.HARD_EXIT_TIMEOUT = 3`` works
    whenever it happens before the arm.
    """
    if timeout is not None:
        return check_timeout(timeout, "timeout")
    if type(module_default) is not DefaultTimeout:
        return check_timeout(module_default, "hardexit.HARD_EXIT_TIMEOUT")
    raw = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not raw:
        return float(module_default)
    try:
        parsed = float(raw)
    except ValueError:
        raise ValueError(
            f"environment variable {TIMEOUT_ENV_VAR}={raw!r} is not a number; "
            f"it must be {ACCEPTED_TIMEOUTS}, e.g. {TIMEOUT_ENV_VAR}=10"
        ) from None
    return check_timeout(parsed, f"environment variable {TIMEOUT_ENV_VAR}={raw!r}")
