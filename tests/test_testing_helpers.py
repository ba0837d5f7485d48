"""hardexit.testing: inert guards for users' unit tests, and run_isolated itself."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardexit.testing import run_isolated, start_isolated

from . import isolated_targets
from .support import SLACK, WEDGES, assert_exited_by_deadline, gone_at, run, script


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


def test_run_isolated_runs_a_module_level_function() -> None:
    result = run_isolated(isolated_targets.arm_then_wedge, args=["42"], limit=10)
    assert_exited_by_deadline(result, 42)
    assert result.stdout == "arming\n"


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
    assert result.exit_code == 0, result
    with killed_if_left(int(result.stdout)) as grandchild:
        assert gone(grandchild), "the grandchild outlived run_isolated"
        assert result.left_behind == [grandchild]  # running when the child exited
        assert result.reaped == {grandchild: -9}  # then killed


def test_run_isolated_kills_a_grandchild_in_a_new_session() -> None:
    result = run(
        """
        import subprocess
        sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
        print(sleeper.pid, flush=True)
        """
    )
    assert result.exit_code == 0, result
    with killed_if_left(int(result.stdout)) as grandchild:
        assert gone(grandchild), "the grandchild in its own session outlived run_isolated"


def test_a_daemon_neither_delays_run_isolated_nor_outlives_it() -> None:
    started = time.monotonic()
    result = run(
        """
        if os.fork() == 0:  # the classic double fork
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                time.sleep(60)
                os._exit(0)
            print(daemon, flush=True)
            os._exit(0)
        os.wait()
        """,
        limit=1,
    )
    returned_after = time.monotonic() - started
    assert result.exit_code == 0, result
    with killed_if_left(int(result.stdout)) as daemon:
        assert returned_after <= 1 + SLACK, f"run_isolated(limit=1) took {returned_after:.1f} s"
        assert gone(daemon), "the daemon outlived run_isolated"


def test_start_isolated_lets_what_the_child_left_run_on_until_stopped() -> None:
    # keep_descendants: the child's exit is known at once; its orphan runs on,
    # then is reaped by the subreaper, which reports its exit code.
    with start_isolated(
        script(
            """
            orphan = os.fork()
            if orphan:
                print(orphan, flush=True)
                sys.exit(3)
            time.sleep(0.3)  # the orphan
            os._exit(4)
            """
        ),
        keep_descendants=True,
        limit=10,
    ) as process:
        assert process.wait_exit(5) == 3
        orphan = int(process.stdout)
        assert process.wait(0) is None  # the orphan still runs
        assert gone_at(orphan, time.monotonic() + 5) is not None
        result = process.stop()
    assert (result.exit_code, result.timed_out) == (3, False)
    assert result.reaped == {orphan: 4}, result.reaped
    assert result.left_behind == [orphan]


def test_the_first_arm_is_reported_whatever_the_child_does_with_its_fds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run(
        """
        os.closerange(3, 1 << 16)  # as daemons do
        # Like a server with many files open, it now holds every low fd.
        fds = [os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND) for _ in range(256)]
        guard = hardexit.arm_hard_exit(10)
        for fd in fds:
            os.write(fd, b"x")
            os.close(fd)
        guard.cancel()
        """,
        args=[str(data)],
    )
    assert result.exit_code == 0, result
    assert data.read_bytes() == b"x" * 256
    assert result.armed_at is not None, result
    assert result.deadline == result.armed_at + 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be a positive, finite number of seconds; got 0"),
        ({"limit": float("nan")}, "limit must be a positive, finite number of seconds; got nan"),
        ({"limit": "10"}, "limit must be a positive, finite number of seconds; got '10'"),
        ({"python": "no-such-python"}, "python must name an executable; got 'no-such-python'"),
    ],
)
def test_run_isolated_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError)) as refused:
        run_isolated("raise SystemExit(3)", **kwargs)  # type: ignore[arg-type]
    assert str(refused.value) == message


def gone(pid: int) -> bool:
    """Whether *pid* no longer exists, not even as a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextlib.contextmanager
def killed_if_left(pid: int) -> Iterator[int]:
    """Yield *pid*; then SIGKILL it if it is still there, so a failing test leaks nothing."""
    try:
        yield pid
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
