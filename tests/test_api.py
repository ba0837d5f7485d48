"""The handle, the defaults and the checks, in process (guards made inert by set_testing)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

import hardexit
from hardexit import instrumentation, testing


@pytest.fixture
def inert() -> Iterator[None]:
    testing.set_testing(True)
    try:
        yield
    finally:
        testing.set_testing(False)


@pytest.fixture
def default_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave HARD_EXIT_TIMEOUT and HARDEXIT_TIMEOUT as they were."""
    monkeypatch.delenv("HARDEXIT_TIMEOUT", raising=False)
    original = hardexit.HARD_EXIT_TIMEOUT
    yield
    hardexit.HARD_EXIT_TIMEOUT = original


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


@pytest.mark.usefixtures("default_timeout")
@pytest.mark.parametrize("raw", ["soon", "nan", "-3", "0", "inf"])
def test_malformed_environment_timeout_names_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARDEXIT_TIMEOUT", raw)
    with pytest.raises(ValueError, match=r"^environment variable HARDEXIT_TIMEOUT="):
        hardexit.arm_hard_exit()
    assert hardexit.current_deadline() is None


@pytest.mark.usefixtures("default_timeout")
def test_bad_module_default_names_the_attribute() -> None:
    hardexit.HARD_EXIT_TIMEOUT = "3"  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"^hardexit\.HARD_EXIT_TIMEOUT must be"):
        hardexit.arm_hard_exit()


@pytest.mark.usefixtures("inert", "default_timeout")
def test_timeout_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    def timeout_of(**kwargs: float) -> float:
        with hardexit.arm_hard_exit(**kwargs) as guard:
            return guard.deadline - guard.armed_at

    assert hardexit.HARD_EXIT_TIMEOUT == 10.0
    assert timeout_of() == pytest.approx(10.0)
    monkeypatch.setenv("HARDEXIT_TIMEOUT", " 2.5 ")
    assert timeout_of() == pytest.approx(2.5)  # the environment overrides the default
    hardexit.HARD_EXIT_TIMEOUT = 10.0
    assert timeout_of() == pytest.approx(10.0)  # an assignment, even of 10.0, overrides both
    hardexit.HARD_EXIT_TIMEOUT = 3
    assert timeout_of() == pytest.approx(3.0)
    assert timeout_of(timeout=1) == pytest.approx(1.0)  # the argument overrides everything


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
        with pytest.raises(ValueError, match=r"^deadline must be a finite"):
            guard.deadline = math.inf
        with pytest.raises(TypeError, match=r"^deadline must be a finite"):
            guard.deadline = "soon"  # type: ignore[assignment]
        assert guard.deadline == guard.armed_at + 1  # unchanged by bad input
        assert "armed" in repr(guard) and "closing" in repr(guard)
    finally:
        assert guard.cancel() is True
    assert guard.cancel() is False
    assert not guard.armed
    assert "cancelled" in repr(guard)


@pytest.mark.usefixtures("inert")
def test_earliest_deadline_wins_and_cancel_leaves_the_others() -> None:
    late = hardexit.arm_hard_exit(30)
    early = hardexit.arm_hard_exit(20)
    assert hardexit.current_deadline() == early.deadline
    assert early.cancel()
    assert late.armed
    assert hardexit.current_deadline() == late.deadline
    assert late.cancel()
    assert hardexit.current_deadline() is None


@pytest.mark.usefixtures("inert")
def test_context_manager_cancels_on_error_too() -> None:
    with pytest.raises(KeyError), hardexit.arm_hard_exit(5) as guard:
        assert guard.armed
        raise KeyError
    assert not guard.armed


def test_backstop_on_this_machine() -> None:
    assert hardexit.backstop_mechanism() == "timer_create"  # Linux with glibc
    assert hardexit.prepare() == "timer_create"


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
