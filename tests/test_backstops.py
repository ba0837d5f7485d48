"""Guarantee 7: each backstop, forced on this Linux machine, and what each one covers."""

from __future__ import annotations

import signal

import pytest

from .support import SLACK, WEDGES, assert_exited_by_deadline, run
from .wedges import FINALIZER_BLOCKS

GIL_HELD = f"hardexit.arm_hard_exit(0.3, exit_code=42)\n{WEDGES['native_gil_held']}"
IN_FINALIZATION = f"{FINALIZER_BLOCKS.code}\nhardexit.arm_hard_exit(0.3, exit_code=42)"
GIL_RELEASED_WEDGE = WEDGES["native_gil_released"]
GIL_RELEASED = f"hardexit.arm_hard_exit(0.3, exit_code=42)\n{GIL_RELEASED_WEDGE}"


def backstop(name: str) -> dict[str, str]:
    return {"HARDEXIT_BACKSTOP": name}


@pytest.mark.parametrize("body", [GIL_HELD, IN_FINALIZATION], ids=["gil_held", "finalization"])
def test_timer_create_exits_with_the_exact_code_where_python_cannot_run(body: str) -> None:
    result = run(body, env=backstop("timer_create"))
    assert_exited_by_deadline(result, 42)
    assert "hardexit:" not in result.stderr  # no Python ran: the kernel timer's _exit did it


@pytest.mark.parametrize("body", [GIL_HELD, IN_FINALIZATION], ids=["gil_held", "finalization"])
def test_setitimer_kills_by_sigalrm_where_python_cannot_run(body: str) -> None:
    result = run(body, env=backstop("setitimer"))
    assert not result.timed_out
    assert result.exit_code == -signal.SIGALRM
    assert result.past_deadline is not None and 0 <= result.past_deadline <= SLACK


def test_setitimer_leaves_an_application_alarm_handler_alone() -> None:
    app_alarm = (
        "import signal\n"
        "signal.signal(signal.SIGALRM, lambda *a: os.write(1, b'app alarm\\n'))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.1)\n"
    )
    # Re-entered: each alarm interrupts the native sleep.
    wedge = f"hardexit.arm_hard_exit(0.3, exit_code=42)\nwhile True: {GIL_RELEASED_WEDGE}"
    result = run(app_alarm + wedge, env=backstop("setitimer"))
    assert_exited_by_deadline(result, 42)  # the watchdog thread still fires
    assert "app alarm" in result.stdout


@pytest.mark.parametrize("name", ["setitimer", "none"])
def test_every_backstop_keeps_the_exact_code_when_python_can_run(name: str) -> None:
    assert_exited_by_deadline(run(GIL_RELEASED, env=backstop(name)), 42)


@pytest.mark.once  # a control: what a GIL-holding wedge does to a thread is the same everywhere
@pytest.mark.parametrize("body", [GIL_HELD, IN_FINALIZATION], ids=["gil_held", "finalization"])
def test_without_a_backstop_these_wedges_outlive_the_deadline(body: str) -> None:
    """The control: a Python thread alone (a threading.Timer) cannot cover these."""
    result = run(body, env=backstop("none"), limit=0.3 + SLACK + 1.0)
    assert result.timed_out, result


def test_unknown_backstop_warns_at_import_and_the_default_serves() -> None:
    result = run("print(hardexit.backstop_mechanism())", env=backstop("rocket"))
    assert result.exit_code == 0 and result.stdout == "timer_create\n", result
    assert "environment variable HARDEXIT_BACKSTOP='rocket' is not one of" in result.stderr
