"""arm_on_parent_death: real parents SIGKILLed while their real workers are wedged.

Each scenario runs under run_isolated, whose subreaper adopts the orphans
(see parent_death_harness.py): their exits are timed through pidfds, and
whatever is left is killed and reaped.
"""

from __future__ import annotations

import math
import multiprocessing
from typing import Any

import pytest

import hardexit

from . import parent_death_harness
from .parent_death_harness import Outcome
from .support import SLACK, thread_count

pytestmark = pytest.mark.timeout(90)

BUDGET = 1.0
# The guard is armed only once a watcher thread has seen the death: on a loaded
# 2-core machine, in a worker among four, that thread may wait this long for
# the GIL.  Still below the budget's multiples: a fork-pool worker that waits on
# multiprocessing's sentinel sees EOF only when its last sibling dies, so with
# 4 workers the first would be gone at 4 budgets.
WATCH_SLACK = 1.0
LATE = SLACK + WATCH_SLACK
ON_TIME = (BUDGET * 0.95, BUDGET + LATE)  # float rounding only below; the guard arms at death


def orphan(kind: str, *, observe: float = BUDGET + LATE + 1.0, **config: object) -> Outcome:
    """Run one scenario; the parent is SIGKILLed once its workers report."""
    return parent_death_harness.orphan(
        {
            "kind": kind,
            "wedge": "native_gil_released",
            "timeout": BUDGET,
            "workers": 4,
            "armed": True,
            "calls": [{"args": [BUDGET], "kwargs": {}}],
            "expect": {"worker": 1 if kind == "subprocess" else 4},
            "observe": observe,
            **config,
        }
    )


def assert_gone_on_time(outcome: Outcome, pids: list[int]) -> None:
    assert pids, outcome
    print("gone after the parent's death:", sorted(map(outcome.after_kill, pids), key=str))
    for pid in pids:
        after = outcome.after_kill(pid)
        assert after is not None, f"worker {pid} outlived its parent: {outcome!r}"
        assert ON_TIME[0] <= after <= ON_TIME[1], outcome
        if pid in outcome.status:  # re-parented to the reaper, which reaped it
            assert outcome.status[pid] == 0, outcome


# method None: the interpreter's default start method, the first listed (fork,
# forkserver from 3.14).  Where it is fork, the fork cases cover it.
DEFAULT_METHOD = multiprocessing.get_all_start_methods()[0]
default_method = pytest.mark.skipif(
    DEFAULT_METHOD == "fork", reason="the default start method is fork here: the fork case tests it"
)

pools = pytest.mark.parametrize(
    ("kind", "method"),
    [
        ("executor", "fork"),
        ("executor", "spawn"),
        ("executor", "forkserver"),
        pytest.param("executor", None, marks=default_method),
        ("pool", "fork"),
        ("subprocess", None),
    ],
    ids=[
        "executor-fork",
        "executor-spawn",
        "executor-forkserver",
        "executor-default",
        "Pool-fork",
        "subprocess",
    ],
)


@pools
# The fallback without pidfds is the OS's behaviour, not the interpreter's: once.
@pytest.mark.parametrize(
    "no_pidfd", [False, pytest.param(True, marks=pytest.mark.once)], ids=["pidfd", "no-pidfd"]
)
def test_orphans_wedged_in_native_code_are_gone_within_the_budget(
    kind: str, method: str | None, no_pidfd: bool
) -> None:
    outcome = orphan(kind, method=method, no_pidfd=no_pidfd)
    assert_gone_on_time(outcome, outcome.pids("worker"))


@pytest.mark.parametrize(
    ("kind", "method"),
    [("executor", "forkserver"), ("subprocess", None)],
    ids=["forkserver", "subprocess"],
)
@pytest.mark.once  # orphans outliving their parent is the OS's behaviour
def test_control_without_it_the_orphans_outlive_the_budget(kind: str, method: str | None) -> None:
    outcome = orphan(kind, method=method, armed=False, calls=[], observe=BUDGET + LATE)
    for pid in outcome.pids("worker"):
        assert outcome.gone_at[pid] is None, outcome


def test_the_reason_names_the_parent() -> None:
    outcome = orphan("subprocess")
    assert_gone_on_time(outcome, outcome.pids("worker"))
    # Best effort under load: the diagnostics need the watchdog to run by deadline + 20 ms.
    assert f"(the parent process (pid {outcome.parent_pid}) died)" in outcome.stderr, outcome


def test_a_worker_holding_the_gil_is_gone_within_the_budget_once_it_releases_it() -> None:
    # The watcher is a Python thread: it cannot arm while the main thread holds
    # the GIL, so the budget starts when the GIL is released, not at the death.
    outcome = orphan("subprocess", gil_held_first=3, observe=3 + BUDGET + LATE + 1)
    [(pid, wedged_at)] = outcome.words("worker")
    released_at = float(wedged_at) + 3
    gone = outcome.gone_at[int(pid)]
    assert gone is not None, outcome
    assert outcome.killed_at < released_at - 1, "the parent died after the GIL was released"
    assert released_at + BUDGET * 0.95 <= gone <= released_at + BUDGET + LATE, outcome


@pytest.mark.once  # a limit of the design, on every interpreter with a GIL
def test_a_worker_holding_the_gil_forever_is_not_covered() -> None:
    # What docs/parent-death.md says: the watcher never gets the GIL, so nothing
    # is armed.  (benchmarks/pdeathsig.py measures the kernel alternative.)
    outcome = orphan("subprocess", wedge="native_gil_held", observe=BUDGET + LATE)
    [pid] = outcome.pids("worker")
    assert outcome.gone_at[pid] is None, outcome


@pytest.mark.parametrize(
    "method",
    ["fork", "spawn", "forkserver", pytest.param(None, marks=default_method)],
    ids=lambda m: m or "default",
)
def test_a_parent_dead_before_the_call_arms_at_once(method: str | None) -> None:
    outcome = orphan("executor", method=method, workers=2, race=True, expect={"worker": 2})
    assert_gone_on_time(outcome, outcome.pids("worker"))
    armed = outcome.words("armed_at_return")
    assert sorted(armed) == sorted([str(pid), "True"] for pid in outcome.pids("worker")), outcome


def test_a_second_call_with_the_same_arguments_does_nothing_and_others_add_a_guard() -> None:
    outcome = orphan(
        "subprocess",
        calls=[
            {"args": [5.0], "kwargs": {"exit_code": 3}},
            {"args": [5.0], "kwargs": {"exit_code": 3}},  # the same: nothing
            {"args": [BUDGET], "kwargs": {"exit_code": 4}},  # another promise: it wins
        ],
        count_arms=True,
    )
    [pid] = outcome.pids("worker")
    before, *after_each_call = (int(n) for [n] in outcome.words("threads"))
    assert after_each_call == [before + 1] * 3, "one watcher thread, started by the first call"
    assert sorted(outcome.words("arm")) == [["3"], ["4"]], outcome
    after = outcome.after_kill(pid)
    assert after is not None and ON_TIME[0] <= after <= ON_TIME[1], outcome
    assert outcome.status[pid] == 4, outcome


@pytest.mark.once  # no thread survives a fork, on any interpreter
def test_a_forked_child_is_not_watched() -> None:
    outcome = orphan(
        "subprocess", fork="child_does_not_call", expect={"worker": 1, "forked_child": 1}
    )
    assert_gone_on_time(outcome, outcome.pids("worker"))
    [child] = outcome.pids("forked_child")
    assert outcome.gone_at[child] is None, outcome  # its parent died; it was not watching


@pytest.mark.parametrize(
    ("kind", "method"),
    [("subprocess", None), ("executor", "fork")],
    ids=["subprocess", "fork-pool"],
)
def test_a_forked_child_that_calls_watches_its_own_parent(kind: str, method: str | None) -> None:
    # Kill G; its child W is gone a budget later; W's forked child C watches W,
    # not G (in a fork pool, multiprocessing still names G as C's parent), so C
    # is gone a budget after W.
    outcome = orphan(
        kind,
        method=method,
        workers=1,
        fork="child_arms",
        expect={"worker": 1, "forked_child": 1},
        observe=2 * BUDGET + LATE + 1,
    )
    [worker] = outcome.pids("worker")
    [child] = outcome.pids("forked_child")
    assert_gone_on_time(outcome, [worker])
    worker_gone, child_gone = outcome.gone_at[worker], outcome.gone_at[child]
    assert worker_gone is not None and child_gone is not None, outcome
    assert worker_gone + BUDGET * 0.95 <= child_gone <= worker_gone + BUDGET + LATE, outcome


@pytest.mark.parametrize("green", ["gevent", "eventlet"])
def test_under_monkey_patching(green: str) -> None:
    # Patched, the watcher thread would be a greenlet that never runs while the
    # main thread is wedged in native code.  (eventlet also removes select.poll.)
    pytest.importorskip(green)
    outcome = orphan("subprocess", green=green)
    assert_gone_on_time(outcome, outcome.pids("worker"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"timeout": 0}, ValueError, "timeout must be a finite number of seconds > 0"),
        ({"timeout": math.nan}, ValueError, "timeout must be"),
        ({"timeout": "5"}, TypeError, "timeout must be"),
        ({"timeout": True}, TypeError, "timeout must be"),
        ({"exit_code": 256}, ValueError, "exit_code must be an int in 0..255"),
        ({"exit_code": 1.0}, TypeError, "exit_code must be an int in 0..255"),
        ({"reason": 3}, TypeError, "reason must be a str or None"),
    ],
)
def test_bad_input_raises_naming_the_parameter_and_watches_nothing(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    threads = thread_count()
    with pytest.raises(error, match=message):
        hardexit.arm_on_parent_death(**kwargs)
    assert thread_count() == threads


def test_a_malformed_default_timeout_fails_at_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from hardexit._config import config

    monkeypatch.setattr(
        config, "env_timeout", ValueError("HARDEXIT_TIMEOUT='soon' is not a number")
    )
    threads = thread_count()
    with pytest.raises(ValueError, match="HARDEXIT_TIMEOUT='soon' is not a number"):
        hardexit.arm_on_parent_death()
    assert thread_count() == threads
