"""Guarantees 1 and 2: the process is gone by its deadline, whatever it is stuck on."""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path

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


ASYNCIO_SHUTDOWNS = {
    "await_that_never_resolves": """
        async def shutdown():
            hardexit.arm_hard_exit({deadline}, exit_code=42)
            await asyncio.get_running_loop().create_future()  # nobody resolves it
        """,
    "loop_blocked_by_a_sync_call": """
        async def shutdown():
            hardexit.arm_hard_exit({deadline}, exit_code=42)
            time.sleep(60)  # a blocking call on the event loop
        """,
    "gather_of_shutdown_hooks_one_of_which_hangs": """
        done = []
        async def quick():
            done.append(1)
        async def hangs():
            await asyncio.Event().wait()

        async def shutdown():
            hardexit.arm_hard_exit({deadline}, exit_code=42)
            await asyncio.gather(quick(), hangs())
        """,
}


@pytest.mark.parametrize("shutdown", sorted(ASYNCIO_SHUTDOWNS))
def test_asyncio(shutdown: str) -> None:
    body = textwrap.dedent(ASYNCIO_SHUTDOWNS[shutdown]).format(deadline=DEADLINE)
    assert_exited_by_deadline(run(body + "\nasyncio.run(shutdown())\n"), 42)


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


def test_a_cold_first_arm_under_32_busy_threads_keeps_its_deadline(tmp_path: Path) -> None:
    # As users write it: `import hardexit` at the top, nothing else preloaded
    # (no ctypes, no logging), the first arm only once the crowd is running.
    # The bound is from the moment the arm is *called*: loading what the exit
    # needs at that point used to cost seconds under contention.  The times
    # go to shared memory, which gives up no GIL: under this contention a
    # print after the arm may not finish before the deadline.
    stamps = tmp_path / "stamps"
    stamps.write_bytes(bytes(16))
    result = run_isolated(
        f"""
import hardexit
import mmap, struct, sys, threading, time
with open({str(stamps)!r}, "r+b") as file:
    shared = mmap.mmap(file.fileno(), 16)
def spin():
    while True:
        pass
for _ in range(32):
    threading.Thread(target=spin, daemon=True).start()
time.sleep(0.2)
# The first on-arm hook stamps the moment the guard is live, before any
# other hook: what the arm itself costs.
from hardexit import instrumentation
def stamp(guard):
    struct.pack_into("d", shared, 8, time.monotonic())
instrumentation.set_on_arm_hooks([stamp, *instrumentation.get_on_arm_hooks()])
struct.pack_into("d", shared, 0, time.monotonic())
hardexit.arm_hard_exit({DEADLINE}, exit_code=42)
spin()
""",
        limit=30,
    )
    called, armed = struct.unpack("dd", stamps.read_bytes())
    assert not result.timed_out and result.exit_code == 42, result
    assert DEADLINE <= result.exited_at - called <= DEADLINE + SLACK, result
    # Nothing on the arm path gives up the GIL: no import, no file read.  Only
    # a forced GIL switch can slow it, and that costs far less than this.
    assert 0 < armed - called <= 0.5, (called, armed)


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


@pytest.mark.once  # a control: the wedge itself, not hardexit, which the rest test everywhere
def test_each_wedge_really_wedges_without_a_guard() -> None:
    """The control: without arm_hard_exit the same child is still alive at the limit."""
    result = run(WEDGES["native_gil_held"], limit=DEADLINE + 1.5)
    assert result.timed_out
