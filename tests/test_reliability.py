"""Guarantee 6: no hang, no stray fire, no wrong exit, wherever users arm and cancel.

Each test is a real child process doing what broke an earlier version: fork
while other threads arm, re-entry from signal handlers and finalizers, gevent
and eventlet,
resource limits, interrupts, bad values.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from hardexit.testing import run_isolated

from .support import SLACK, WEDGES, assert_exited_by_deadline, run


def test_an_inherited_guard_cancels_in_a_forked_child_without_touching_the_parent_lock() -> None:
    # Other threads arm and cancel, so the registry's lock is often held at fork.
    result = run(
        """
        stop = churn_arm_and_cancel(4)
        outcomes = []
        for _ in range(50):
            with hardexit.arm_hard_exit(30) as guard:
                pid = os.fork()
                if pid == 0:
                    guard.deadline += 1  # neither may touch the parent's lock
                    os._exit(0 if guard.cancel() is False and not guard.armed else 3)
            _, status = os.waitpid(pid, 0)
            outcomes.append(os.waitstatus_to_exitcode(status))
        stop()
        print(outcomes)
        """,
        limit=60,
    )
    assert not result.timed_out, "a forked child hung in cancel()"
    assert result.exit_code == 0 and result.stdout == f"{[0] * 50}\n", result


def test_arm_and_cancel_from_a_signal_handler_that_interrupts_them() -> None:
    result = run(
        """
        import signal
        fired = [0]
        def handler(signum, frame):
            fired[0] += 1
            hardexit.arm_hard_exit(30, exit_code=1).cancel()
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)  # 5 kHz
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            guard = hardexit.arm_hard_exit(30, exit_code=2)
            guard.deadline += 1
            assert guard.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert hardexit.current_deadline() is None
        print(fired[0] > 100)
        sys.exit(7)
        """,
        limit=30,
    )
    assert not result.timed_out, "re-entrant arm deadlocked"
    assert (result.exit_code, result.stdout) == (7, "True\n"), result


def test_cancel_from_a_finalizer_that_the_garbage_collector_runs_mid_arm() -> None:
    result = run(
        """
        import gc
        class Holder:
            def __init__(self):
                self.guard = hardexit.arm_hard_exit(30, exit_code=1)
                self.cycle = self  # collected by the cyclic GC, at any allocation
            def __del__(self):
                self.guard.cancel()
        gc.set_threshold(1)
        for _ in range(3000):
            Holder()
            hardexit.arm_hard_exit(30, exit_code=2).cancel()
        gc.collect()
        gc.set_threshold(700)
        assert hardexit.current_deadline() is None
        sys.exit(7)
        """,
        limit=30,
    )
    assert not result.timed_out, "a finalizer's cancel deadlocked"
    assert result.exit_code == 7, result


# What each green-thread library patches with, and how its code yields and spawns.
GREEN = {
    "gevent": ("from gevent import monkey; monkey.patch_all()", "gevent"),
    "eventlet": ("import eventlet; eventlet.monkey_patch()", "eventlet"),
}


@pytest.mark.parametrize("patched", ["before_import", "after_import"])
@pytest.mark.parametrize("library", sorted(GREEN))
def test_under_green_threads_the_hub_runs_and_the_watchdog_is_a_real_thread(
    library: str, patched: str
) -> None:
    patch, green = GREEN[library]
    pytest.importorskip(green)
    script = f"""
{patch if patched == "before_import" else ""}
import hardexit
{patch if patched == "after_import" else ""}
import ctypes, {green}, os, sys, time
ticks = []
def ticker():
    while True:
        ticks.append(time.monotonic())
        {green}.sleep(0.02)
{green}.spawn(ticker)
guard = hardexit.arm_hard_exit(5, exit_code=1)
{green}.sleep(0.5)  # the hub must keep running with a guard armed
print(len(ticks) >= 5, guard.cancel(), flush=True)
def dispose_native_resources():
    ctypes.PyDLL(None).sleep(60)
hardexit.arm_hard_exit(0.5, exit_code=42)
dispose_native_resources()
"""
    # As the interpreter's own arguments: run_isolated's child would import
    # hardexit before a source target runs, and "before_import" must mean it.
    result = run_isolated(["-c", script], limit=30)
    assert result.stdout == "True True\n", result
    assert result.exit_code == 42, result
    # Only a real thread, targeted by the kernel, can dump while the GIL is held.
    assert "line 16 in dispose_native_resources" in result.stderr, result.stderr


def test_an_arm_that_cannot_start_a_thread_is_kept_by_the_kernel_and_the_next_arm_retries() -> None:
    result = run(
        f"""
        threading.stack_size(1 << 44)  # no thread can be started with that stack
        quiet = hardexit.arm_hard_exit(30, exit_code=1)
        assert quiet.armed and hardexit.current_deadline() == quiet.deadline
        assert quiet.cancel()
        threading.stack_size(0)
        hardexit.arm_hard_exit(0.3, exit_code=42)  # tries again: the watchdog starts
        {WEDGES["native_gil_released"]}
        """
    )
    assert not result.timed_out and result.exit_code == 42, result
    assert result.stderr.startswith("hardexit: teardown still running 0.3"), result


def test_without_a_thread_the_kernel_alone_exits_at_the_deadline() -> None:
    result = run(
        f"""
        threading.stack_size(1 << 44)
        hardexit.arm_hard_exit(0.3, exit_code=42)
        {WEDGES["native_gil_held"]}
        """
    )
    assert_exited_by_deadline(result, 42)


def test_without_a_thread_or_a_kernel_backstop_the_arm_raises_and_arms_nothing() -> None:
    result = run(
        """
        threading.stack_size(1 << 44)
        try:
            hardexit.arm_hard_exit(0.3, exit_code=42)
        except RuntimeError as exc:
            print("refused:", exc)
        assert hardexit.current_deadline() is None
        time.sleep(0.6)  # past the deadline it would have had
        sys.exit(7)
        """,
        env={"HARDEXIT_BACKSTOP": "none"},
    )
    assert result.exit_code == 7, result
    assert result.stdout.startswith("refused:"), result


def test_the_first_arm_inside_an_atexit_handler() -> None:
    # Python 3.12+ refuses new threads at interpreter shutdown: the kernel keeps the promise.
    result = run(
        f"""
        def teardown():
            hardexit.arm_hard_exit(0.3, exit_code=42)
            {WEDGES["native_gil_released"]}
        atexit.register(teardown)
        """
    )
    assert_exited_by_deadline(result, 42)


def test_a_keyboard_interrupt_inside_cancel_leaves_state_and_kernel_agreeing() -> None:
    result = run(
        """
        import signal
        inside = [False]
        def interrupt(signum, frame):
            if inside[0]:
                inside[0] = False  # one per cancel: a second could escape the except clause
                raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
        for _ in range(5000):
            guard = hardexit.arm_hard_exit(30, exit_code=9)
            try:
                inside[0] = True
                guard.cancel()
                inside[0] = False
            except KeyboardInterrupt:
                inside[0] = False
                if not guard.armed:  # withdrawn in Python: the kernel must agree
                    break
                assert guard.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert hardexit.current_deadline() is None
        assert kernel_timers_armed() == 0  # read back from the kernel
        sys.exit(7)
        """,
        limit=60,
    )
    assert result.exit_code == 7, result  # no guard withdrawn in Python fires in the kernel


def test_cancel_after_the_deadline_says_false_and_the_exit_goes_ahead() -> None:
    # A long switch interval keeps the watchdog from the GIL: the clock decides, not it.
    result = run(
        """
        sys.setswitchinterval(0.05)
        guard = hardexit.arm_hard_exit(0.2, exit_code=42)
        while time.monotonic() < guard.deadline + 0.002:
            pass
        print(guard.cancel(), flush=True)
        guard.deadline += 30  # nothing moves an exit under way
        time.sleep(2)
        sys.exit(7)
        """
    )
    # Empty if the watchdog won the GIL first; never True, and never a survivor.
    assert result.stdout in ("False\n", ""), result
    assert result.exit_code == 42, result


def test_arming_from_a_finalizer_during_module_teardown() -> None:
    # Nothing on the arm path imports: sys.meta_path is gone by then.
    result = run(
        """
        import __main__
        from hardexit import instrumentation
        instrumentation.set_on_arm_hooks([])  # run_isolated's own hook needs globals
        class NativeHandle:
            def __del__(self, arm=hardexit.arm_hard_exit, sleep=ctypes.CDLL(None).sleep,
                        now=time.monotonic, write=os.write):
                arm(0.3, exit_code=42)
                write(1, repr(now()).encode())
                sleep(60)  # the dispose that never returns
        __main__.handle = NativeHandle()
        """
    )
    assert not result.timed_out and result.exit_code == 42, result
    armed_at = float(result.stdout)
    assert 0.3 <= result.exited_at - armed_at <= 0.3 + SLACK, result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to a user at its limit")
def test_at_the_thread_limit_the_last_stage_still_kills() -> None:
    # glibc starts a thread to run each SIGEV_THREAD notification; at
    # RLIMIT_NPROC it cannot, and drops the exit.  SIGKILL needs no thread.
    result = run(
        f"""
        import pwd, resource
        hardexit.arm_hard_exit(0.3, exit_code=42)
        nobody = pwd.getpwnam("nobody")
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
        try:
            threading.Thread(target=lambda: None).start()
            print("a thread started", flush=True)
        except RuntimeError:
            pass
        {WEDGES["native_gil_held"]}
        """
    )
    assert result.stdout == "", result  # the limit really is reached
    assert not result.timed_out, result
    assert result.exit_code == -signal.SIGKILL, result
    assert result.past_deadline is not None and 0 <= result.past_deadline <= SLACK, result


def test_a_report_to_a_closed_pipe_does_not_die_of_sigpipe() -> None:
    for wedge in ("native_gil_released", "native_gil_held"):
        result = run(
            f"""
            import signal
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as many CLI tools do
            read_end, write_end = os.pipe()
            os.dup2(write_end, 2)
            os.close(read_end)  # stderr: a pipe nobody will read
            hardexit.arm_hard_exit(0.3, exit_code=42)
            {WEDGES[wedge]}
            """
        )
        assert_exited_by_deadline(result, 42)


def test_deadlines_out_of_range_are_refused_and_change_nothing() -> None:
    result = run(
        """
        guard = hardexit.arm_hard_exit(0.5, exit_code=42)
        before = guard.deadline
        for bad in (1e19, 2.0**64 + 5, 10**400, -1.0, float("nan")):
            try:
                guard.deadline = bad
            except ValueError as exc:
                assert str(exc).startswith("deadline must be"), exc
            else:
                raise AssertionError(f"accepted {bad!r}")
            assert guard.deadline == before
        for bad in (10**400, 1e10):
            try:
                hardexit.arm_hard_exit(bad)
            except ValueError as exc:
                assert str(exc).startswith("timeout must be"), exc
        ctypes.CDLL(None).sleep(60)
        """
    )
    assert_exited_by_deadline(result, 42)  # the old deadline, unmoved, fires


def test_without_pending_signal_room_arming_is_refused_and_cancel_still_works() -> None:
    # Every kernel timer holds a pending-signal slot; they are made at arm time
    # so that cancel never needs one.
    result = run(
        """
        import resource
        standing = hardexit.arm_hard_exit(0.5, exit_code=1)
        resource.setrlimit(resource.RLIMIT_SIGPENDING, (0, 0))
        try:
            hardexit.arm_hard_exit(0.4, exit_code=2)  # a new exit code: a new timer
        except OSError as exc:
            print("refused:", exc.strerror, flush=True)
        assert hardexit.current_deadline() == standing.deadline
        assert standing.cancel()
        time.sleep(1.0)
        sys.exit(7)
        """
    )
    assert result.stdout.startswith("refused:"), result
    assert result.exit_code == 7, result


def test_a_subinterpreter_is_refused_and_the_process_exits_normally() -> None:
    module = "_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters"
    result = run(
        f"""
        import {module} as interpreters
        try:
            interp = interpreters.create(isolated=False)  # a legacy subinterpreter
        except TypeError:
            interp = interpreters.create("legacy")  # 3.13 names it so
        code = "\\n".join([
            "import os, hardexit",
            "try:",
            "    hardexit.arm_hard_exit(1)",
            "except RuntimeError as exc:",
            "    os.write(1, b'refused: ' + str(exc).encode())",
        ])
        interpreters.run_string(interp, code)
        interpreters.destroy(interp)
        sys.exit(5)
        """
    )
    assert result.exit_code == 5, result
    assert result.stdout.startswith("refused: hardexit cannot arm in a subinterpreter"), result


def test_a_tiny_thread_stack_size_still_reports() -> None:
    result = run(
        f"""
        # The smallest stack the interpreter accepts: 32 KiB, 52 KiB from 3.14.
        for size in range(32768, 1 << 20, 4096):
            try:
                threading.stack_size(size)
                break
            except ValueError:
                pass
        else:
            raise SystemExit("no stack size under 1 MiB accepted")
        hardexit.arm_hard_exit(0.3, exit_code=42)
        {WEDGES["native_gil_released"]}
        """
    )
    assert_exited_by_deadline(result, 42)
    assert result.stderr.startswith("hardexit: teardown still running"), result
