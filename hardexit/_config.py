"""One owner for hardexit's numbers and switches, and the checks on what users pass.

The numbers are the design's timings; ``docs/design.md`` explains each.  The
switches live on one object, :data:`config`.  Every check here raises before
anything is armed, so a bad value changes nothing, and every message names the
parameter and what is accepted.
"""

from __future__ import annotations

import math
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Final

    from ._diagnostics import FireDetails
    from ._registry import HardExit

DEFAULT_TIMEOUT: Final = 10.0
TIMEOUT_ENV_VAR: Final = "HARDEXIT_TIMEOUT"
BACKSTOP_ENV_VAR: Final = "HARDEXIT_BACKSTOP"
BACKSTOPS: Final = ("timer_create", "setitimer", "none")  # what HARDEXIT_BACKSTOP may force
# Read by the .pth file hardexit installs (hardexit_at_exit.pth): arm_at_exit(seconds).
AT_EXIT_ENV_VAR: Final = "HARDEXIT_AT_EXIT"
# timespec and lock waits take whole seconds in a C long; a ceiling far past any
# real teardown keeps every conversion exact.
MAX_TIMEOUT: Final = 1e9
ACCEPTED_TIMEOUTS: Final = "a finite number of seconds > 0 and <= 1e9 (int or float)"

# The stages of an exit, in seconds after the deadline (docs/design.md, "Stages").
MAX_LEAD: Final = 0.005  # the watchdog wakes at most this early and keeps the GIL
DUMP_DELAY: Final = 0.010  # the kernel has the watchdog thread dump every stack
EXIT_DELAY: Final = 0.020  # the kernel exits with the code, unless the watchdog is reporting
REPORT_DEADLINE: Final = 0.100  # ... then the kernel exits with the code anyway
KILL_DELAY: Final = 0.150  # SIGKILL, should no thread be left to run _exit


class Config:
    """Every switch a user or a test can turn, in one place.

    ``timeout`` is ``hardexit.HARD_EXIT_TIMEOUT`` as assigned (None: never);
    ``env_timeout`` is ``HARDEXIT_TIMEOUT`` read once at import (None: unset),
    or the ValueError a malformed value raises at arm time; ``backstop`` is
    the mechanism ``HARDEXIT_BACKSTOP`` forces, read once at import (None:
    the machine's default).  ``on_fire`` None means the default hook,
    ``_diagnostics.log_hard_exit``: one record on the ``hardexit`` logger.
    """

    __slots__ = ("backstop", "env_timeout", "on_arm", "on_fire", "testing", "timeout")

    def __init__(self) -> None:
        self.timeout: float | None = None
        self.env_timeout: float | ValueError | None = None
        self.backstop: str | None = None
        self.testing = False
        self.on_fire: tuple[Callable[[FireDetails], object], ...] | None = None
        self.on_arm: tuple[Callable[[HardExit], object], ...] = ()


#: The one instance.  Other modules reach it as ``_config.config``, never by
#: importing the name: at interpreter exit the watchdog thread is still alive,
#: and a direct reference from its modules would keep the hooks, and the
#: modules whose functions they are (``__main__``'s finalizers included),
#: from ever being torn down.
config = Config()


def check_timeout(value: object, name: str) -> float:
    """Return *value* as float seconds, or raise naming *name*."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be {ACCEPTED_TIMEOUTS}; got {value!r} ({type(value).__name__})"
        )
    try:
        seconds = float(value)
    except OverflowError:  # an int past float's range
        seconds = math.inf
    # `not (a < x <= b)` also rejects NaN, which compares false to everything.
    if not (0.0 < seconds <= MAX_TIMEOUT):
        raise ValueError(f"{name} must be {ACCEPTED_TIMEOUTS}; got {_short(value)}")
    return seconds


def check_deadline(value: object) -> float:
    """A deadline is a point on ``time.monotonic()``'s clock, at most 1e9 s from now."""
    accepted = "a time.monotonic() value >= 0 and at most 1e9 s from now (int or float)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"deadline must be {accepted}; got {value!r} ({type(value).__name__})")
    try:
        deadline = float(value)
    except OverflowError:
        deadline = math.inf
    if not (0.0 <= deadline <= time.monotonic() + MAX_TIMEOUT):
        raise ValueError(f"deadline must be {accepted}; got {_short(value)}")
    return deadline


def check_exit_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"exit_code must be an int in 0..255; got {value!r} ({type(value).__name__})"
        )
    if not 0 <= value <= 255:
        raise ValueError(f"exit_code must be an int in 0..255; got {_short(value)}")
    return int(value)


def check_reason(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"reason must be a str or None; got {value!r} ({type(value).__name__})")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} digits)"


def default_timeout() -> float:
    """What ``arm_hard_exit()`` uses without a timeout: assignment, else environment, else 10 s."""
    if config.timeout is not None:
        return config.timeout
    env = config.env_timeout
    if isinstance(env, ValueError):
        raise env
    return DEFAULT_TIMEOUT if env is None else env


def resolve_timeout(timeout: object) -> float:
    """The timeout a guard gets: the argument if given, else :func:`default_timeout`."""
    return default_timeout() if timeout is None else check_timeout(timeout, "timeout")


def _read_env_timeout() -> float | ValueError | None:
    return _read_env_seconds(TIMEOUT_ENV_VAR)


def read_at_exit_env() -> float | ValueError | None:
    """``HARDEXIT_AT_EXIT`` as seconds; None if unset or empty; the error if malformed."""
    seconds = _read_env_seconds(AT_EXIT_ENV_VAR)
    if isinstance(seconds, ValueError):
        return ValueError(f"{seconds}; nothing is armed at exit")
    return seconds


def _read_env_seconds(var: str) -> float | ValueError | None:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    try:
        parsed = float(raw)
    except ValueError:
        return ValueError(
            f"environment variable {var}={raw!r} is not a number; "
            f"it must be {ACCEPTED_TIMEOUTS}, e.g. {var}=10"
        )
    try:
        return check_timeout(parsed, f"environment variable {var}={raw!r}")
    except ValueError as exc:
        return exc


def _read_env_backstop() -> str | None:
    raw = os.environ.get(BACKSTOP_ENV_VAR, "").strip()
    if raw in BACKSTOPS:
        return raw
    if raw not in ("", "auto"):
        _warn(
            f"environment variable {BACKSTOP_ENV_VAR}={raw!r} is not one of "
            f"auto, {', '.join(BACKSTOPS)}; using auto"
        )
    return None


def load_environment() -> None:
    """Read hardexit's environment variables once, at import: bad values are reported then.

    Arming without a timeout then raises the same error as a malformed
    ``HARDEXIT_TIMEOUT``: shutdown is not the moment to discover it, but a
    process must not be made unable to start.
    """
    config.env_timeout = _read_env_timeout()
    if isinstance(config.env_timeout, ValueError):
        _warn(str(config.env_timeout))
    config.backstop = _read_env_backstop()


def _warn(message: str) -> None:
    import warnings  # only on these error paths, at start-up

    warnings.warn(message, RuntimeWarning, stacklevel=3)


def in_main_interpreter() -> bool:
    """False in a subinterpreter, where a watchdog thread would abort its destruction."""
    is_main = getattr(sys.modules["_thread"], "_is_main_interpreter", None)  # 3.12+
    if is_main is not None:
        return bool(is_main())
    try:
        import _xxsubinterpreters as interpreters  # type: ignore[import-not-found]  # 3.10, 3.11
    except ImportError:
        return True
    return bool(interpreters.get_current() == interpreters.get_main())


load_environment()  # before any backstop is chosen
