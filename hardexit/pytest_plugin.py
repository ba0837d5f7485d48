"""pytest plugin: a test session cannot hang after its verdict.

Turned on by ``--hardexit-timeout=SECONDS`` or the ``hardexit_timeout`` ini
option (the command line wins); inert otherwise.  When pytest's main
function has returned its exit status -- terminal summary printed,
``pytest_unconfigure`` run, config cleaned up -- a hard exit is armed with
that budget and that status.  Whatever then keeps the interpreter from
exiting (a non-daemon thread, an ``atexit`` handler, a finalizer stuck in C)
is cut off at the deadline, after a stack dump, with the session's own exit
code.  A session that exits in time is untouched.

Registered through the ``pytest11`` entry point as ``hardexit``; ``-p
no:hardexit`` turns it off.  Loading it imports the hardexit core (no thread
starts) and never hardexit's optional integrations.
"""

from __future__ import annotations

import argparse

import pytest

from ._config import check_timeout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator

OPTION = "--hardexit-timeout"
INI_OPTION = "hardexit_timeout"
# What arm_hard_exit's own rule (_config.check_timeout) accepts, said for the
# command line: the rule is applied here, so that a bad value is a usage error
# before any test runs, not an exception at exit.
ACCEPTED = "a finite number of seconds > 0 and <= 1e9, e.g. 60"
HELP = (
    "After the session's verdict, give the process SECONDS to exit; if it has not "
    "(a non-daemon thread, an atexit handler, a finalizer stuck in C), dump every "
    "thread's stack and exit with the session's own exit status."
)

REASON = "the pytest session is over; the process did not exit"

arm_key = pytest.StashKey["Callable[[int], object]"]()


def parse_seconds(raw: str) -> float:
    """*raw* as seconds, or ``ValueError`` saying what is accepted."""
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number; it must be {ACCEPTED}") from None
    try:
        return check_timeout(seconds, OPTION)
    except ValueError:
        raise ValueError(f"{raw!r} is out of range; it must be {ACCEPTED}") from None


def _cli_seconds(raw: str) -> float:
    # argparse turns this into "argument --hardexit-timeout: <message>", a usage error.
    try:
        return parse_seconds(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hardexit", "hard exit after the session's verdict")
    group.addoption(
        OPTION,
        dest="hardexit_timeout",
        type=_cli_seconds,
        default=None,
        metavar="SECONDS",
        help=HELP + f" Overrides the {INI_OPTION} ini option.",
    )
    parser.addini(INI_OPTION, HELP + " Default: off.", default="")


def pytest_configure(config: pytest.Config) -> None:
    budget: float | None = config.getoption("hardexit_timeout")
    if budget is None:
        raw = str(config.getini(INI_OPTION)).strip()
        if not raw:
            return
        try:
            budget = parse_seconds(raw)
        except ValueError as error:
            raise pytest.UsageError(f"ini option {INI_OPTION}: {error}") from None
    config.stash[arm_key] = _arming(budget)


def _arming(budget: float) -> Callable[[int], object]:
    """Everything arming needs, imported and loaded now: nothing is left for the exit path.

    At exit, leftover busy threads can make an import, or loading the backstop, slow.
    """
    import hardexit
    from hardexit import testing

    def arm(exit_code: int) -> None:
        # set_testing(True) makes guards inert for the code under test; this one
        # guards the test runner itself.
        with testing.set_testing(False):
            hardexit.arm_hard_exit(budget, exit_code=exit_code, reason=REASON)

    return arm


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # The outermost wrapper of the last hook pytest calls: when it returns, the
    # session is over, unconfigured and cleaned up, and the status is final.
    # Only the interpreter's exit is left.
    try:
        status = yield
    except pytest.UsageError:
        _arm(config, pytest.ExitCode.USAGE_ERROR)
        raise
    _arm(config, status)
    return status


def _arm(config: pytest.Config, status: object) -> None:
    arm = config.stash.get(arm_key, None)
    if arm is not None and isinstance(status, int):
        arm(status & 0xFF)  # what the process exits with: sys.exit(n) keeps the low 8 bits
