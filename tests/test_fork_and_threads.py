"""Guarantees 5 and 6: fork and threads."""

from __future__ import annotations

from .support import WEDGES, run


def test_forked_child_inherits_no_guard_and_arms_its_own() -> None:
    result = run(
        f"""
        inherited = hardexit.arm_hard_exit(0.3, exit_code=42)
        pid = os.fork()
        if pid == 0:
            assert hardexit.current_deadline() is None
            assert not inherited.armed and inherited.cancel() is False
            ctypes.PyDLL(None).sleep(1)  # outlives the inherited deadline
            hardexit.arm_hard_exit(0.3, exit_code=7)
            {WEDGES["native_gil_held"]}
        inherited.cancel()
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    assert result.exit_code == 7, result  # the child's own guard, not the parent's 42
    assert result.after_arm is not None and 1.3 <= result.after_arm <= 3.0


def test_fork_while_other_threads_arm_and_cancel() -> None:
    # A child forked while another thread holds hardexit's lock must not deadlock
    # (a child forked while faulthandler's watchdog is armed does).
    result = run(
        f"""
        stop = churn_arm_and_cancel(4)
        codes = []
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                hardexit.arm_hard_exit(0.2, exit_code=7)
                {WEDGES["native_gil_held"]}
            _, status = os.waitpid(pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
        stop()
        print(codes)
        """,
        limit=30,
    )
    assert result.exit_code == 0, result
    assert result.stdout == f"{[7] * 20}\n"


def test_arm_and_cancel_from_many_threads_at_once() -> None:
    result = run(
        f"""
        import random
        errors = []
        def churn(seed):
            rng = random.Random(seed)
            try:
                for _ in range(500):
                    # Deadlines no loaded machine can let pass between arm and
                    # cancel; whether the kernel agrees is read back below.
                    guard = hardexit.arm_hard_exit(rng.choice([30, 40, 60]), exit_code=1)
                    guard.deadline += rng.choice([-5.0, 0.0, 5.0])
                    assert guard.cancel()
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert hardexit.current_deadline() is None
        assert kernel_timers_armed() == 0  # nothing that was cancelled can fire
        # and the guard still works afterwards, armed from another thread
        arm = lambda: hardexit.arm_hard_exit(0.3, exit_code=42)
        threading.Thread(target=arm).start()
        {WEDGES["native_gil_released"]}
        """
    )
    assert result.exit_code == 42, result
    assert result.stderr.startswith("hardexit: teardown still running 0.3")
