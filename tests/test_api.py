"""Guarantee 6, bad input: the handle, the defaults and the checks, in process (inert guards)."""

from __future__ import annotations

import collections.abc
import math
import os
import sys
import threading
import time
import typing
from collections.abc import Iterator

import pytest

import hardexit
from hardexit import instrumentation, testing
from hardexit._config import config, load_environment


@pytest.fixture
def inert() -> Iterator[None]:
    with testing.set_testing(True):
        yield


@pytest.fixture
def default_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave HARD_EXIT_TIMEOUT and HARDEXIT_TIMEOUT as they were."""
    monkeypatch.delenv("HARDEXIT_TIMEOUT", raising=False)
    saved = config.timeout, config.env_timeout
    config.timeout = config.env_timeout = None
    yield
    config.timeout, config.env_timeout = saved


BAD_TIMEOUTS = [
    (-1, ValueError),
    (0, ValueError),
    (0.0, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (1e10, ValueError),
    (True, TypeError),
    (False, TypeError),
    ("5", TypeError),
    (b"5", TypeError),
    ([5], TypeError),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS)
def test_bad_timeout_is_refused_and_arms_nothing(timeout: object, error: type) -> None:
    threads_before = threading.active_count()
    with pytest.raises(error, match=r"^timeout must be a finite number of seconds > 0"):
        hardexit.arm_hard_exit(timeout)  # type: ignore[arg-type]
    assert hardexit.current_deadline() is None
    assert threading.active_count() == threads_before


@pytest.mark.parametrize(
    ("exit_code", "error"),
    [
        (-1, ValueError),
        (256, ValueError),
        (1.0, TypeError),
        ("0", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_exit_code_is_refused_and_arms_nothing(exit_code: object, error: type) -> None:
    with pytest.raises(error, match=r"^exit_code must be an int in 0\.\.255"):
        hardexit.arm_hard_exit(5, exit_code=exit_code)  # type: ignore[arg-type]
    assert hardexit.current_deadline() is None


def test_bad_reason_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^reason must be a str"):
        hardexit.arm_hard_exit(5, reason=3)  # type: ignore[arg-type]
    assert hardexit.current_deadline() is None


@pytest.mark.usefixtures("inert", "default_timeout")
@pytest.mark.parametrize("raw", ["soon", "nan", "-3", "0", "inf", "1e400"])
def test_malformed_environment_timeout_warns_at_import_and_raises_at_arm(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARDEXIT_TIMEOUT", raw)
    with pytest.warns(RuntimeWarning, match=r"^environment variable HARDEXIT_TIMEOUT="):
        load_environment()  # what `import hardexit` runs
    with pytest.raises(ValueError, match=r"^environment variable HARDEXIT_TIMEOUT="):
        hardexit.arm_hard_exit()
    with pytest.raises(ValueError, match=r"^environment variable HARDEXIT_TIMEOUT="):
        hardexit.HARD_EXIT_TIMEOUT  # noqa: B018 - the attribute tells the same truth
    assert hardexit.current_deadline() is None
    with hardexit.arm_hard_exit(4) as guard:  # an explicit timeout needs no default
        assert guard.timeout == 4.0


@pytest.mark.usefixtures("default_timeout")
@pytest.mark.parametrize(
    ("value", "error"), [("3", TypeError), (-1, ValueError), (10**400, ValueError)]
)
def test_bad_assignment_is_refused_and_changes_nothing(value: object, error: type) -> None:
    hardexit.HARD_EXIT_TIMEOUT = 4
    with pytest.raises(error, match=r"^hardexit\.HARD_EXIT_TIMEOUT must be a finite number"):
        hardexit.HARD_EXIT_TIMEOUT = value  # type: ignore[assignment]
    assert hardexit.HARD_EXIT_TIMEOUT == 4.0


@pytest.mark.usefixtures("inert", "default_timeout")
def test_timeout_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    def timeout_of(**kwargs: float) -> float:
        with hardexit.arm_hard_exit(**kwargs) as guard:
            return guard.deadline - guard.armed_at

    assert hardexit.HARD_EXIT_TIMEOUT == 10.0
    assert timeout_of() == pytest.approx(10.0)
    monkeypatch.setenv("HARDEXIT_TIMEOUT", " 2.5 ")
    load_environment()
    assert hardexit.HARD_EXIT_TIMEOUT == 2.5  # the attribute reads what arming uses
    assert timeout_of() == pytest.approx(2.5)  # the environment overrides the default
    hardexit.HARD_EXIT_TIMEOUT = 10.0
    assert timeout_of() == pytest.approx(10.0)  # an assignment, even of 10.0, overrides both
    hardexit.HARD_EXIT_TIMEOUT = 3
    assert timeout_of() == pytest.approx(3.0)
    assert timeout_of(timeout=1) == pytest.approx(1.0)  # the argument overrides everything
    del hardexit.HARD_EXIT_TIMEOUT
    assert hardexit.HARD_EXIT_TIMEOUT == 2.5  # back to the environment's


def test_the_environment_is_read_at_import() -> None:
    script = "import hardexit; print(hardexit.HARD_EXIT_TIMEOUT)"
    good = testing.run_isolated(script, env={"HARDEXIT_TIMEOUT": "3"})
    assert (good.exit_code, good.stdout.strip()) == (0, "3.0"), good
    bad = testing.run_isolated("import hardexit; print('imported')", env={"HARDEXIT_TIMEOUT": "x"})
    assert bad.exit_code == 0 and bad.stdout.strip() == "imported", bad
    assert "RuntimeWarning: environment variable HARDEXIT_TIMEOUT='x' is not a number" in bad.stderr


@pytest.mark.usefixtures("inert")
def test_handle_reads_and_moves_its_deadline() -> None:
    before = time.monotonic()
    guard = hardexit.arm_hard_exit(5, exit_code=3, reason="closing")
    try:
        assert guard.armed
        assert guard.timeout == 5.0 and guard.exit_code == 3 and guard.reason == "closing"
        assert before <= guard.armed_at <= time.monotonic()
        assert guard.deadline == pytest.approx(guard.armed_at + 5)
        assert 0 < guard.remaining <= 5
        assert hardexit.current_deadline() == guard.deadline
        guard.deadline = guard.armed_at + 1
        assert hardexit.current_deadline() == guard.armed_at + 1
        assert guard.remaining <= 1
        for bad in (math.inf, math.nan, -1.0, 1e19, 2.0**64 + 5, 10**400):
            with pytest.raises(ValueError, match=r"^deadline must be a time\.monotonic\(\) value"):
                guard.deadline = bad
        with pytest.raises(TypeError, match=r"^deadline must be a time\.monotonic\(\) value"):
            guard.deadline = "soon"  # type: ignore[assignment]
        assert guard.deadline == guard.armed_at + 1  # unchanged by bad input
        assert "armed" in repr(guard) and "closing" in repr(guard)
    finally:
        assert guard.cancel() is True
    assert guard.cancel() is False
    assert not guard.armed
    assert "cancelled" in repr(guard)


@pytest.mark.usefixtures("inert")
def test_context_manager_cancels_on_error_too() -> None:
    with pytest.raises(KeyError), hardexit.arm_hard_exit(5) as guard:
        assert guard.armed
        raise KeyError
    assert not guard.armed


def test_backstop_on_this_machine() -> None:
    # The one HARDEXIT_BACKSTOP forces; else timer_create on Linux with glibc, else none.
    forced = os.environ.get("HARDEXIT_BACKSTOP", "").strip()
    if forced in ("timer_create", "setitimer", "none"):
        expected = forced
    elif sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        expected = "timer_create"
    else:
        expected = "none"
    assert hardexit.backstop_mechanism() == expected


def test_set_testing_restores_the_previous_mode_as_a_context_manager() -> None:
    assert not testing.is_testing()
    with testing.set_testing(True):
        assert testing.is_testing()
        with testing.set_testing(False):
            assert not testing.is_testing()
        assert testing.is_testing()
    assert not testing.is_testing()


def test_hook_types_are_callables_of_what_hooks_are_given_and_details_are_immutable() -> None:
    # Callables of one argument, whatever they return, resolvable at run time.
    def install(on_fire: instrumentation.OnFireHook, on_arm: instrumentation.OnArmHook) -> None:
        pass

    hints = typing.get_type_hints(install, localns={"HardExit": hardexit.HardExit})
    Callable = collections.abc.Callable
    assert hints["on_fire"] == Callable[[instrumentation.FireDetails], object]
    assert hints["on_arm"] == Callable[[hardexit.HardExit], object]
    for hook_type in (instrumentation.OnFireHook, instrumentation.OnArmHook):
        assert typing.get_origin(hook_type) is Callable
        assert isinstance(instrumentation.log_hard_exit, typing.get_origin(hook_type))
    details = instrumentation.FireDetails(
        timeout=1.0, armed_at=10.0, deadline=12.0, fired_at=12.004, exit_code=3, reason="r"
    )
    with pytest.raises(AttributeError, match="immutable"):
        details.exit_code = 4  # type: ignore[misc]
    assert details.late == pytest.approx(0.004)
    # The deadline was moved from 11 to 12: the summary says what really happened.
    assert details.summary() == (
        "teardown (r) still running 2.004 s after the guard was armed, "
        "4.0 ms past its deadline; exiting with code 3"
    )


def test_set_testing_takes_a_bool() -> None:
    with pytest.raises(TypeError, match=r"^on must be a bool"):
        testing.set_testing("yes")  # type: ignore[arg-type]
    assert not testing.is_testing()


def test_hooks_must_be_callables() -> None:
    before = instrumentation.get_on_fire_hooks()
    with pytest.raises(TypeError, match="on-fire hooks must be callables"):
        instrumentation.set_on_fire_hooks([print, "not a hook"])  # type: ignore[list-item]
    assert instrumentation.get_on_fire_hooks() == before == (instrumentation.log_hard_exit,)


def test_run_isolated_refuses_what_it_cannot_import() -> None:
    with pytest.raises(TypeError, match=r"^target must be Python source"):
        testing.run_isolated(lambda: None)
