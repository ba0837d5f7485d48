"""hardexit.testing: inert guards for users' unit tests, and run_isolated itself."""

from __future__ import annotations

import time

import psutil

from .support import WEDGES, assert_exited_by_deadline, run


def test_a_guard_armed_in_testing_mode_never_fires_even_after_it_ends() -> None:
    result = run(
        """
        from hardexit import testing
        testing.set_testing(True)
        forgotten = hardexit.arm_hard_exit(0.1, exit_code=42)
        assert hardexit.current_deadline() == forgotten.deadline
        testing.set_testing(False)
        time.sleep(0.5)  # past its deadline and any backstop
        assert forgotten.armed and forgotten.cancel()
        sys.exit(7)
        """
    )
    assert result.exit_code == 7, result
    assert result.stderr == ""


def test_a_guard_armed_before_testing_mode_stays_live() -> None:
    result = run(
        f"""
        from hardexit import testing
        hardexit.arm_hard_exit(0.3, exit_code=42)
        testing.set_testing(True)
        {WEDGES["native_gil_held"]}
        """
    )
    assert_exited_by_deadline(result, 42)


def test_run_isolated_kills_what_the_child_forked() -> None:
    result = run(
        """
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
        """
    )
    assert result.exit_code == 0
    grandchild = int(result.stdout)
    # SIGKILL is delivered asynchronously: allow it a generous second to land.
    deadline = time.monotonic() + 1.0
    while (state := process_state(grandchild)) not in DEAD and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state in DEAD, f"the grandchild outlived run_isolated: state {state}"


DEAD = ("gone", psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def process_state(pid: int) -> str:
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return "gone"
