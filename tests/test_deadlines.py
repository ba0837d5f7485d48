"""Guarantee 5, end to end: the earliest deadline fires, with its own exit code."""

from __future__ import annotations

import pytest

from .support import SLACK, WEDGES, assert_exited_by_deadline, run

WEDGE = WEDGES["native_gil_held"]  # so that the backstop is what fires


def test_earliest_of_several_fires_with_its_exit_code() -> None:
    result = run(
        f"""
        hardexit.arm_hard_exit(5, exit_code=1)
        hardexit.arm_hard_exit(0.5, exit_code=42)
        hardexit.arm_hard_exit(3, exit_code=2)
        {WEDGE}
        """
    )
    assert result.exit_code == 42
    assert result.after_arm is not None and 0.5 <= result.after_arm <= 1.5


def test_cancelling_the_earliest_leaves_the_next_armed() -> None:
    result = run(
        f"""
        early = hardexit.arm_hard_exit(0.3, exit_code=1)
        hardexit.arm_hard_exit(0.8, exit_code=42)
        early.cancel()
        {WEDGE}
        """
    )
    assert result.exit_code == 42
    assert result.after_arm is not None and 0.8 <= result.after_arm <= 1.8


def test_moving_a_deadline_later_and_earlier() -> None:
    later = run(
        f"""
        guard = hardexit.arm_hard_exit(0.3, exit_code=42)
        guard.deadline += 0.7
        {WEDGE}
        """
    )
    assert later.exit_code == 42
    assert later.after_arm is not None and 1.0 <= later.after_arm <= 2.0

    earlier = run(
        f"""
        guard = hardexit.arm_hard_exit(30, exit_code=42)
        guard.deadline = guard.armed_at + 0.5
        {WEDGES["native_gil_released"]}
        """
    )
    assert earlier.exit_code == 42
    assert earlier.after_arm is not None and 0.5 <= earlier.after_arm <= 1.5


@pytest.mark.parametrize("wedge", ["native_gil_held", "native_gil_released"])
def test_a_deadline_moved_into_the_past_exits_now_with_its_code(wedge: str) -> None:
    # Every stage is then due at once; the kernel's SIGKILL must not beat the exit.
    result = run(
        f"""
        guard = hardexit.arm_hard_exit(30, exit_code=42)
        guard.deadline = time.monotonic() - 5
        {WEDGES[wedge]}
        """
    )
    assert result.exit_code == 42, result
    assert result.after_arm is not None and result.after_arm <= SLACK, result


def test_among_ten_thousand_moved_deadlines_the_earliest_fires_on_time() -> None:
    result = run(
        f"""
        guards = [hardexit.arm_hard_exit(60, exit_code=i % 200) for i in range(10_000)]
        start = guards[0].armed_at
        for i, guard in reversed(list(enumerate(guards))):  # each move comes first
            guard.deadline = start + 3 + i * 1e-4
        guards[7_777].deadline = start + 1.5
        {WEDGE}
        """
    )
    assert result.exit_code == 7_777 % 200, result
    assert result.after_arm is not None and 1.5 <= result.after_arm <= 1.5 + SLACK, result


def test_timeout_from_the_environment_and_the_module_attribute() -> None:
    from_env = run(
        f"hardexit.arm_hard_exit(exit_code=42)\n{WEDGE}", env={"HARDEXIT_TIMEOUT": "0.5"}
    )
    assert_exited_by_deadline(from_env, 42)
    assert from_env.deadline is not None and from_env.armed_at is not None
    assert abs(from_env.deadline - from_env.armed_at - 0.5) < 1e-6

    assigned = run(
        f"hardexit.HARD_EXIT_TIMEOUT = 0.4\nhardexit.arm_hard_exit(exit_code=42)\n{WEDGE}",
        env={"HARDEXIT_TIMEOUT": "20"},
    )
    assert_exited_by_deadline(assigned, 42)
    assert assigned.deadline is not None and assigned.armed_at is not None
    assert abs(assigned.deadline - assigned.armed_at - 0.4) < 1e-6
