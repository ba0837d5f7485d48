"""Guarantee 5, the deadline rules (README, "Deadline rules"), in process, with a fake clock.

A :class:`Registry` is built with a recording backstop and a watchdog starter
that starts nothing, so each rule is checked in microseconds, and the
decision to fire is asked of it as the watchdog asks it (``next_step()``).
What only a real process can show (the exit itself) is in test_deadlines.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hardexit._registry import Fire, HardExit, Registry


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
        # Raised by the next calls, in turn; None lets that call succeed.
        self.failures: list[BaseException | None] = []
        self.during_schedule: Callable[[], object] | None = None
        self.watchdog: int | None = None
        self.reporting: tuple[float, int] | None = None

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
        self.calls.append("begin_report")
        self.reporting = (deadline, exit_code)
        return True, False

    def clear(self) -> None:
        self.calls.append("clear")
        self._maybe_fail()
        self.due = None

    def forget_after_fork(self) -> None:
        pass

    def _maybe_fail(self) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
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


def fires(registry: Registry) -> Fire:
    """What the watchdog is told now, which must be to fire."""
    step = registry.next_step()
    assert isinstance(step, Fire), f"the watchdog is told to look again at {step}"
    return step


# -- the earliest fires -------------------------------------------------------


def test_the_earliest_deadline_fires_with_its_exit_code(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    registry.arm(30, 1, None)
    assert backstop.due == (130.0, 1, True)
    early = registry.arm(10, 2, None)
    assert backstop.due == (110.0, 2, True)
    registry.arm(20, 3, None)
    assert backstop.due == (110.0, 2, True)
    assert sorted(backstop.prepared) == [1, 2, 3]  # every exit code's timer, made on arm
    assert registry.next_step() == 110.0  # the watchdog sleeps until then
    clock.now = 110.0
    step = fires(registry)
    assert step.guard is early and step.guard.exit_code == 2 and step.fired_at == 110.0
    assert backstop.reporting == (110.0, 2)  # the kernel now bounds the report


def test_nothing_armed_means_sleep_until_woken(registry: Registry) -> None:
    assert registry.next_step() == float("inf")


def test_a_tie_goes_to_the_guard_armed_first(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    first = registry.arm(10, 1, None)
    second = registry.arm(10, 2, None)
    assert backstop.due == (110.0, 1, True)
    assert registry.due() is first
    registry.cancel(first)
    assert registry.due() is second and backstop.due == (110.0, 2, True)
    clock.now = 110.0
    assert fires(registry).guard is second


def test_ten_thousand_guards_moved_the_earliest_fires(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guards = [registry.arm(1000 + i, i % 200, None) for i in range(10_000)]
    for i, guard in enumerate(reversed(guards)):
        guard.deadline = 200.0 + i  # the last armed now comes first
    assert backstop.due == (200.0, guards[-1].exit_code, True)
    clock.now = 199.0
    assert registry.next_step() == 200.0
    clock.now = 200.0
    assert fires(registry).guard is guards[-1]


# -- cancel withdraws one promise ---------------------------------------------


def test_cancel_withdraws_only_that_promise(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    late = registry.arm(30, 1, None)
    early = registry.arm(10, 2, None)
    assert registry.cancel(early) is True
    assert backstop.due == (130.0, 1, True)
    assert registry.cancel(early) is False  # only once
    clock.now = 110.0
    assert registry.next_step() == 130.0  # the cancelled deadline passes: nothing fires
    clock.now = 130.0
    assert fires(registry).guard is late


def test_the_last_cancel_clears_the_backstop(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guard = registry.arm(10, 1, None)
    assert registry.cancel(guard) is True
    assert backstop.due is None
    clock.now = 500.0
    assert registry.next_step() == float("inf")


def test_cancelled_guards_do_not_pile_up(registry: Registry) -> None:
    keeper = registry.arm(1, 0, None)  # the earliest: every other entry is below it
    for _ in range(3):
        for guard in [registry.arm(10 + i, 0, None) for i in range(1000)]:
            registry.cancel(guard)
    assert len(registry.heap) < 200  # cancelled entries are dropped in bulk, not kept
    assert registry.due() is keeper


# -- a deadline moves both ways -------------------------------------------------


def test_a_deadline_moves_both_ways_and_the_earliest_still_wins(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guard = registry.arm(10, 1, None)
    other = registry.arm(20, 2, None)
    registry.move(guard, 125.0)  # later: it no longer comes first
    assert backstop.due == (120.0, 2, True)
    registry.move(guard, 105.0)  # earlier
    assert backstop.due == (105.0, 1, True)
    registry.move(guard, 120.0)  # a tie with the other: the first armed still comes first
    clock.now = 120.0
    assert fires(registry).guard is guard
    assert other.exit_code == 2


def test_a_deadline_moved_into_the_past_fires_at_once(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    registry.arm(30, 1, None)
    guard = registry.arm(60, 7, None)
    registry.move(guard, 95.0)  # "exit now, with my code"
    assert backstop.due == (95.0, 7, True)  # the backstop starts its stages from now
    step = fires(registry)
    assert step.guard is guard and step.fired_at == 100.0


def test_an_earlier_deadline_wakes_the_watchdog(registry: Registry, clock: Clock) -> None:
    registry.arm(30, 1, None)
    assert registry.next_step() == 130.0  # the watchdog goes to sleep until then
    registry.sleep(0)  # it takes the wake-up the first arm left for it
    assert registry.wake.locked()
    registry.arm(60, 2, None)
    assert registry.wake.locked()  # later: no need to wake it
    registry.arm(10, 3, None)
    assert not registry.wake.locked()  # earlier: it wakes and looks again
    assert registry.next_step() == 110.0


# -- once the deadline has passed, the exit is under way -------------------------


def test_after_its_deadline_a_guard_cannot_be_cancelled_or_moved(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guard = registry.arm(10, 1, None)
    clock.now = 110.0  # the deadline, to the tick: decided on the clock
    assert registry.cancel(guard) is False
    registry.move(guard, 500.0)
    assert guard.deadline == 110.0 and backstop.due == (110.0, 1, True)
    assert fires(registry).guard is guard  # even before the watchdog has looked


def test_once_firing_nothing_changes_the_exit(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guard = registry.arm(10, 1, None)
    later = registry.arm(20, 2, None)
    clock.now = 110.0
    assert fires(registry).guard is guard
    calls = len(backstop.calls)
    assert registry.cancel(later) is False  # the exit is under way
    registry.move(later, 105.0)
    earlier = registry.arm(1, 3, None)  # armed, but the first decision stands
    assert earlier.armed and later.deadline == 120.0
    assert backstop.calls[calls:] == [] and backstop.reporting == (110.0, 1)
    assert registry.next_step() == float("inf")  # one fire per process


def test_an_inert_guard_never_reaches_the_backstop(
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    from hardexit.testing import set_testing

    live = registry.arm(20, 1, None)
    calls = len(backstop.calls)
    with set_testing(True):
        inert = registry.arm(5, 2, None)
    assert backstop.due == (120.0, 1, True) and 2 not in backstop.prepared
    assert registry.first_deadline() == 105.0  # current_deadline() reports it all the same
    clock.now = 105.0
    assert registry.next_step() == 120.0  # it never fires
    assert registry.cancel(inert) is True
    assert len(backstop.calls) == calls  # cancelling it left the live guard's timer alone
    registry.cancel(live)


# -- the watchdog ---------------------------------------------------------------


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
    assert guard.armed
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


# -- failures and re-entry: the heap and the kernel always agree ------------------


@pytest.mark.parametrize("failure", [OSError(22, "timer_settime failed"), KeyboardInterrupt()])
@pytest.mark.parametrize(
    ("operation", "succeeding"),
    [
        ("arm, failing in prepare()", 0),
        ("arm, failing in schedule()", 1),
        ("cancel", 0),
        ("move", 0),
    ],
)
def test_an_operation_that_fails_changes_nothing(
    registry: Registry,
    backstop: RecordingBackstop,
    failure: BaseException,
    operation: str,
    succeeding: int,
) -> None:
    registry.arm(30, 1, None)
    first = registry.arm(10, 2, None)
    backstop.failures = [*[None] * succeeding, failure]  # the backstop's calls, in turn
    with pytest.raises(type(failure)):
        if operation.startswith("arm"):
            registry.arm(5, 3, None)
        elif operation == "cancel":
            registry.cancel(first)
        else:
            registry.move(first, 105.0)
    assert first.armed and first.deadline == 110.0
    assert registry.due() is first and backstop.due == (110.0, 2, True)
    assert registry.cancel(first) is True  # and it goes on working
    assert backstop.due == (130.0, 1, True)


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
    registry: Registry, backstop: RecordingBackstop, clock: Clock
) -> None:
    guard = registry.arm(10, 1, None)
    later = registry.arm(20, 2, None)
    # The cancel fails, then its undo fails too: the kernel is left unapplied.
    backstop.failures = [OSError(22, "timer_settime failed"), KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        registry.cancel(guard)
    assert guard.armed and registry.dirty
    assert registry.next_step() == 110.0  # what the watchdog does on every wake-up
    assert not registry.dirty and backstop.due == (110.0, 1, True)
    clock.now = 110.0
    assert fires(registry).guard is guard
    assert later.armed


# -- what the rules cost ----------------------------------------------------------


def test_thousands_of_moves_and_cancels_keep_the_first_and_leave_no_litter(
    registry: Registry, backstop: RecordingBackstop
) -> None:
    guards = [registry.arm(100 + i, 0, None) for i in range(10_000)]
    for guard in guards[1:]:  # none of them comes first
        registry.move(guard, guard.deadline + 1)
    for guard in guards[1:]:
        registry.cancel(guard)
    assert registry.due() is guards[0] and backstop.due == (200.0, 0, True)
    assert len(registry.heap) < 200  # the stale entries were dropped
