"""Guarantee 5, the deadline rules (README, "Deadline rules"), in process, with a fake clock.

A :class:`Registry` is built with a recording backstop and a watchdog starter
that starts nothing, so each rule is checked in microseconds.  What only a
real process can show (the exit itself) stays in the end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hardexit._registry import HardExit, Registry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingBackstop:
    """The Backstop protocol, recording what the kernel would be told."""

    name = "recording"

    def __init__(self, *, exits_alone: bool = True) -> None:
        self.exits_alone = exits_alone
        self.due: tuple[float, int, bool] | None = None  # what would fire now
        self.prepared: list[int] = []
        self.calls: list[str] = []
        self.fail_next: BaseException | None = None
        self.during_schedule: Callable[[], object] | None = None
        self.watchdog: int | None = None

    def prepare(self, exit_code: int) -> None:
        self._maybe_fail()
        self.prepared.append(exit_code)

    def attach_watchdog(self, thread_id: int | None) -> None:
        self.watchdog = thread_id

    def schedule(self, deadline: float, exit_code: int, watched: bool) -> None:
        self.calls.append("schedule")
        if self.during_schedule is not None:
            reenter, self.during_schedule = self.during_schedule, None
            reenter()  # as a signal handler or a __del__ would, mid-way
        self._maybe_fail()
        self.due = (deadline, exit_code, watched)

    def begin_report(self, deadline: float, exit_code: int) -> tuple[bool, bool]:
        return True, False

    def clear(self) -> None:
        self.calls.append("clear")
        self._maybe_fail()
        self.due = None

    def forget_after_fork(self) -> None:
        pass

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure


class Watchdogs:
    """A watchdog starter that records starts, and can fail like start_new_thread."""

    def __init__(self) -> None:
        self.started = 0
        self.fail = False

    def __call__(self, registry: Registry) -> int | None:
        if self.fail:
            raise RuntimeError("can't start new thread")
        self.started += 1
        return 4242


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backstop() -> RecordingBackstop:
    return RecordingBackstop()


@pytest.fixture
def watchdogs() -> Watchdogs:
    return Watchdogs()


@pytest.fixture
def registry(backstop: RecordingBackstop, watchdogs: Watchdogs, clock: Clock) -> Registry:
    return Registry(backstop, watchdogs, clock)  # type: ignore[arg-type]


def test_the_earliest_deadline_fires_with_its_exit_code(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    registry.arm(30, 1, None)
    assert backstop.due == (130.0, 1, True)
    registry.arm(10, 2, None)
    assert backstop.due == (110.0, 2, True)
    registry.arm(20, 3, None)
    assert backstop.due == (110.0, 2, True)
    assert sorted(backstop.prepared) == [1, 2, 3]  # every exit code's timer, made on arm


def test_a_tie_goes_to_the_guard_armed_first(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    first = registry.arm(10, 1, None)
    second = registry.arm(10, 2, None)
    assert backstop.due == (110.0, 1, True)
    assert registry.due() is first
    registry.cancel(first)
    assert registry.due() is second and backstop.due == (110.0, 2, True)


def test_cancel_withdraws_only_that_promise(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    late = registry.arm(30, 1, None)
    early = registry.arm(10, 2, None)
    assert registry.cancel(early) is True
    assert backstop.due == (130.0, 1, True)
    assert registry.cancel(early) is False  # only once
    assert registry.cancel(late) is True
    assert backstop.due is None


def test_a_deadline_moves_both_ways_and_the_earliest_still_wins(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    guard = registry.arm(10, 1, None)
    other = registry.arm(20, 2, None)
    registry.move(guard, 125.0)  # later: it no longer comes first
    assert backstop.due == (120.0, 2, True)
    registry.move(guard, 105.0)  # earlier
    assert backstop.due == (105.0, 1, True)
    registry.cancel(other)
    registry.cancel(guard)


def test_after_its_deadline_a_guard_cannot_be_cancelled_or_moved(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guard = registry.arm(10, 1, None)
    clock.now = 110.0  # the deadline, to the tick: decided on the clock
    assert registry.cancel(guard) is False
    registry.move(guard, 500.0)
    assert guard.deadline == 110.0 and backstop.due == (110.0, 1, True)


def test_while_firing_cancel_says_false(registry: Registry) -> None:
    guard = registry.arm(10, 1, None)
    registry.firing = guard
    assert registry.cancel(guard) is False


def test_an_inert_guard_never_reaches_the_backstop(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    from hardexit.testing import set_testing

    live = registry.arm(20, 1, None)
    calls = len(backstop.calls)
    with set_testing(True):
        inert = registry.arm(5, 2, None)
    assert backstop.due == (120.0, 1, True) and 2 not in backstop.prepared
    assert registry.cancel(inert) is True
    assert len(backstop.calls) == calls  # cancelling it left the live guard's timer alone
    registry.cancel(live)


def test_one_watchdog_and_only_once_it_is_needed(
    registry: Registry, watchdogs: Watchdogs, backstop: RecordingBackstop
) -> None:
    assert watchdogs.started == 0
    guards = [registry.arm(10 + i, 0, None) for i in range(3)]
    assert watchdogs.started == 1 and backstop.watchdog == 4242
    for guard in guards:
        registry.cancel(guard)


def test_without_a_thread_the_kernel_keeps_the_promise_and_the_next_arm_retries(
    registry: Registry, watchdogs: Watchdogs, backstop: RecordingBackstop
) -> None:
    watchdogs.fail = True
    guard = registry.arm(10, 1, None)
    assert guard._state == "armed"
    assert backstop.due == (110.0, 1, False)  # unwatched: the kernel exits at the deadline
    watchdogs.fail = False
    other = registry.arm(20, 2, None)
    assert watchdogs.started == 1 and backstop.due == (110.0, 1, True)
    registry.cancel(guard)
    registry.cancel(other)


def test_without_a_thread_or_a_backstop_that_exits_alone_the_arm_raises(
    clock: Clock, watchdogs: Watchdogs
) -> None:
    backstop = RecordingBackstop(exits_alone=False)
    registry = Registry(backstop, watchdogs, clock)  # type: ignore[arg-type]
    watchdogs.fail = True
    with pytest.raises(RuntimeError, match="can't start new thread"):
        registry.arm(10, 1, None)
    assert registry.due() is None and backstop.due is None
    watchdogs.fail = False
    guard = registry.arm(10, 1, None)
    assert watchdogs.started == 1
    registry.cancel(guard)


@pytest.mark.parametrize("failure", [OSError(11, "timer_create failed"), KeyboardInterrupt()])
def test_an_arm_that_fails_leaves_nothing_armed(
    registry: Registry, backstop: RecordingBackstop, failure: BaseException
) -> None:
    standing = registry.arm(30, 1, None)
    backstop.fail_next = failure
    with pytest.raises(type(failure)):
        registry.arm(10, 2, None)
    assert registry.due() is standing and backstop.due == (130.0, 1, True)
    backstop.fail_next = failure  # the same, failing in prepare()
    with pytest.raises(type(failure)):
        registry.arm(5, 3, None)
    assert registry.due() is standing and backstop.due == (130.0, 1, True)
    registry.cancel(standing)


@pytest.mark.parametrize("failure", [OSError(22, "timer_settime failed"), KeyboardInterrupt()])
def test_a_cancel_that_fails_leaves_the_guard_armed_and_the_kernel_agreeing(
    registry: Registry, backstop: RecordingBackstop, failure: BaseException
) -> None:
    guard = registry.arm(10, 1, None)
    backstop.fail_next = failure
    with pytest.raises(type(failure)):
        registry.cancel(guard)
    assert guard._state == "armed" and registry.due() is guard
    assert backstop.due == (110.0, 1, True)
    assert registry.cancel(guard) is True and backstop.due is None


def test_a_move_that_fails_changes_nothing(registry: Registry, backstop: RecordingBackstop) -> None:
    guard = registry.arm(10, 1, None)
    backstop.fail_next = OSError(22, "timer_settime failed")
    with pytest.raises(OSError):
        registry.move(guard, 105.0)
    assert guard.deadline == 110.0 and backstop.due == (110.0, 1, True)
    registry.cancel(guard)


def test_an_arm_reentered_mid_apply_is_applied(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    # A signal handler or a __del__ arms while this thread is programming the backstop.
    inner: list[HardExit] = []
    backstop.during_schedule = lambda: inner.append(registry.arm(5, 9, None))
    outer = registry.arm(30, 1, None)
    assert backstop.due == (105.0, 9, True)
    registry.cancel(inner[0])
    assert backstop.due == (130.0, 1, True)
    registry.cancel(outer)


def test_a_cancel_reentered_mid_apply_is_applied(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    doomed = registry.arm(5, 9, None)
    results: list[bool] = []
    backstop.during_schedule = lambda: results.append(registry.cancel(doomed))
    outer = registry.arm(30, 1, None)
    assert results == [True]
    assert backstop.due == (130.0, 1, True)  # the cancelled guard's deadline is gone
    registry.cancel(outer)


def test_the_watchdog_reconciles_what_an_interrupted_undo_left(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    guard = registry.arm(10, 1, None)
    registry.live.remove(guard)  # as if cut short between the list and the kernel
    registry.dirty = True
    registry.reconcile()  # what the watchdog does on every wake-up
    assert backstop.due is None
