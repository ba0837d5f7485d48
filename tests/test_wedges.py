"""Guarantees 1 and 2: the process is gone by its deadline, whatever it is stuck on."""

from __future__ import annotations

import pytest

from hardexit.testing import run_isolated

from .support import SLACK, WEDGES, assert_exited_by_deadline, run
from .wedges import GIL_CONTENDED

DEADLINE = 0.5


@pytest.mark.parametrize("wedge", sorted(WEDGES))
def test_main_thread_wedged_after_arming(wedge: str) -> None:
    result = run(
        f"""
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        {WEDGES[wedge]}
        """
    )
    assert_exited_by_deadline(result, 42)


@pytest.mark.parametrize("wedge", ["native_gil_released", "native_gil_held"])
def test_wedged_in_a_worker_thread_while_main_joins_it(wedge: str) -> None:
    result = run(
        f"""
        def work():
            {WEDGES[wedge]}
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        t = threading.Thread(target=work)
        t.start()
        t.join()
        """
    )
    assert_exited_by_deadline(result, 42)


def test_default_exit_code_is_zero() -> None:
    result = run(
        f"""
        hardexit.arm_hard_exit({DEADLINE})
        {WEDGES["native_gil_released"]}
        """
    )
    assert_exited_by_deadline(result, 0)


def test_asyncio_await_that_never_resolves() -> None:
    result = run(
        f"""
        async def shutdown():
            hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
            await asyncio.get_running_loop().create_future()  # nobody resolves it

        asyncio.run(shutdown())
        """
    )
    assert_exited_by_deadline(result, 42)


def test_asyncio_loop_blocked_by_a_sync_call() -> None:
    result = run(
        f"""
        async def shutdown():
            hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
            time.sleep(60)  # a blocking call on the event loop

        asyncio.run(shutdown())
        """
    )
    assert_exited_by_deadline(result, 42)


def test_asyncio_gather_of_shutdown_hooks_one_of_which_hangs() -> None:
    result = run(
        f"""
        done = []
        async def quick():
            done.append(1)
        async def hangs():
            await asyncio.Event().wait()

        async def main():
            hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
            await asyncio.gather(quick(), hangs())

        asyncio.run(main())
        """
    )
    assert_exited_by_deadline(result, 42)


def test_32_threads_contending_for_the_gil_at_arm_time_and_deadline() -> None:
    result = run(
        f"""
        {GIL_CONTENDED.setup}
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        {GIL_CONTENDED.code}
        """,
        limit=30,  # 33 threads on a loaded 2-core machine
    )
    assert_exited_by_deadline(result, 42)


def test_a_cold_first_arm_under_32_busy_threads_keeps_its_deadline() -> None:
    # As users write it: `import hardexit` at the top, nothing else preloaded
    # (no ctypes, no logging), the first arm only once the crowd is running.
    # The bound is from the moment the arm is *called*: loading what the exit
    # needs at that point used to cost seconds under contention.
    result = run_isolated(
        f"""
import hardexit
import sys, threading, time
def spin():
    while True:
        pass
for _ in range(32):
    threading.Thread(target=spin, daemon=True).start()
time.sleep(0.2)
# Stamped by the first on-arm hook, as soon as the guard is live: the
# run_isolated hook after it writes a file, giving up the GIL, which is
# this test's cost, not the arm's.
from hardexit import instrumentation
armed = []
instrumentation.set_on_arm_hooks(
    [lambda guard: armed.append(time.monotonic()), *instrumentation.get_on_arm_hooks()]
)
called = time.monotonic()
hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
print(called, armed[0] - called, flush=True)
spin()
""",
        limit=30,
    )
    assert_exited_by_deadline(result, 42)
    called, arm_took = map(float, result.stdout.split())
    assert result.exited_at - called <= DEADLINE + SLACK, result
    # Nothing on the arm path gives up the GIL: no import, no file read.  Only
    # a forced GIL switch can slow it, and that costs far less than this.
    assert arm_took <= 0.5, result.stdout


# Interpreter shutdown: the watchdog thread is frozen or gone; only the backstop runs.


@pytest.mark.parametrize("sleep", ["time.sleep", "ctypes.PyDLL(None).sleep"])
def test_del_wedged_during_module_teardown(sleep: str) -> None:
    result = run(
        f"""
        block_finalization({sleep})
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        """
    )
    assert_exited_by_deadline(result, 42)


def test_py_atexit_function_that_never_returns() -> None:
    # Py_AtExit functions run at the very end of Py_FinalizeEx, with no
    # interpreter left; libc's pause() stands in for a native cleanup hang.
    result = run(
        f"""
        ctypes.pythonapi.Py_AtExit.argtypes = [ctypes.c_void_p]
        pause = ctypes.cast(ctypes.CDLL(None).pause, ctypes.c_void_p).value
        assert ctypes.pythonapi.Py_AtExit(pause) == 0
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        """
    )
    assert_exited_by_deadline(result, 42)


def test_atexit_handler_that_never_returns() -> None:
    result = run(
        f"""
        atexit.register(ctypes.CDLL(None).sleep, 60)
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        """
    )
    assert_exited_by_deadline(result, 42)


def test_non_daemon_thread_that_never_finishes_blocks_interpreter_exit() -> None:
    result = run(
        f"""
        threading.Thread(target=ctypes.CDLL(None).sleep, args=(60,)).start()
        hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
        # main returns; the interpreter waits for the thread forever
        """
    )
    assert_exited_by_deadline(result, 42)


def test_each_wedge_really_wedges_without_a_guard() -> None:
    """The control: without arm_hard_exit the same child is still alive at the limit."""
    result = run(WEDGES["native_gil_held"], limit=DEADLINE + 1.5)
    assert result.timed_out
