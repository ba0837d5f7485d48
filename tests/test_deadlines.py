"""Guarantee 5, end to end: each deadline rule once, in a real process that wedges.

The rules themselves, and the decision to fire, are tested in process with a
fake clock in test_registry.py.
"""

from __future__ import annotations

import textwrap

import pytest

from .support import WEDGES, assert_exited_after_arm, assert_exited_by_deadline, run

WEDGE = WEDGES["native_gil_held"]  # so that the backstop is what fires

# (the child's script before it wedges, the exit code, seconds after the first arm)
RULES = {
    "the earliest of several fires with its exit code": (
        """
        hardexit.arm_hard_exit(5, exit_code=1)
        hardexit.arm_hard_exit(0.5, exit_code=42)
        hardexit.arm_hard_exit(3, exit_code=2)
        """,
        42,
        0.5,
    ),
    "cancelling the earliest leaves the next armed": (
        """
        early = hardexit.arm_hard_exit(0.3, exit_code=1)
        hardexit.arm_hard_exit(0.8, exit_code=42)
        early.cancel()
        """,
        42,
        0.8,
    ),
    "a deadline moved later": (
        """
        guard = hardexit.arm_hard_exit(0.3, exit_code=42)
        guard.deadline += 0.7
        """,
        42,
        1.0,
    ),
    "a deadline moved earlier": (
        """
        guard = hardexit.arm_hard_exit(30, exit_code=42)
        guard.deadline = guard.armed_at + 0.5
        """,
        42,
        0.5,
    ),
    # Every stage is then due at once; the kernel's SIGKILL must not beat the exit.
    "a deadline moved 5 s into the past exits now": (
        """
        guard = hardexit.arm_hard_exit(30, exit_code=42)
        guard.deadline = time.monotonic() - 5
        """,
        42,
        0.0,
    ),
    "among 10,000 moved deadlines the earliest fires on time": (
        """
        guards = [hardexit.arm_hard_exit(60, exit_code=i % 200) for i in range(10_000)]
        start = guards[0].armed_at
        for i, guard in reversed(list(enumerate(guards))):  # each move comes first
            guard.deadline = start + 3 + i * 1e-4
        guards[7_777].deadline = start + 1.5
        """,
        7_777 % 200,
        1.5,
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_rule(rule: str) -> None:
    script, exit_code, seconds = RULES[rule]
    result = run(textwrap.dedent(script) + WEDGE)
    assert_exited_after_arm(result, exit_code, seconds)


def test_a_deadline_in_the_past_exits_through_the_watchdog_too() -> None:
    # Where Python can run, the watchdog fires first; the kernel must not beat it either.
    script, exit_code, seconds = RULES["a deadline moved 5 s into the past exits now"]
    result = run(textwrap.dedent(script) + WEDGES["native_gil_released"])
    assert_exited_after_arm(result, exit_code, seconds)
    assert "hardexit: teardown still running" in result.stderr, result


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
