"""Guarantee 4: operators learn why, and saying so never stops the exit."""

from __future__ import annotations

import re

import pytest

from hardexit.testing import run_isolated

from .support import WEDGES, assert_exited_by_deadline, run

WEDGE = WEDGES["native_gil_released"]


def test_stack_dump_and_one_record_on_the_hardexit_logger() -> None:
    result = run(
        f"""
        import logging
        logging.basicConfig(format="%(name)s %(levelname)s %(message)s", stream=sys.stdout)
        def teardown():
            {WEDGE}
        hardexit.arm_hard_exit(0.5, exit_code=42, reason="job abc")
        teardown()
        """
    )
    assert_exited_by_deadline(result, 42)
    assert re.match(
        r"hardexit: teardown \(job abc\) still running 0\.5\d\d s after the guard was armed, "
        r"\d+\.\d ms past its deadline; exiting with code 42\. Every thread's stack:\n",
        result.stderr,
    ), result.stderr
    # the wedged frames of the main thread
    assert re.search(
        r'File "<isolated>", line \d+ in teardown\n  File "<isolated>", line \d+ in <module>',
        result.stderr,
    )
    records = [line for line in result.stdout.splitlines() if line.startswith("hardexit ")]
    assert len(records) == 1, result.stdout
    assert re.fullmatch(
        r"hardexit ERROR hard exit: teardown \(job abc\) still running 0\.5\d\d s after the "
        r"guard was armed, \d+\.\d ms past its deadline; exiting with code 42",
        records[0],
    ), records[0]


def test_buffered_stdout_is_flushed_on_the_way_out() -> None:
    result = run(f"print('written before the wedge')\nhardexit.arm_hard_exit(0.3)\n{WEDGE}")
    assert result.exit_code == 0
    assert result.stdout == "written before the wedge\n"


def test_on_fire_hooks_run_and_a_broken_one_does_not_stop_the_rest() -> None:
    result = run(
        f"""
        from hardexit import instrumentation
        def broken(details):
            raise RuntimeError("hook bug")
        def metrics(details):
            os.write(1, f"late>=0:{{details.late >= 0}} code:{{details.exit_code}}\\n".encode())
        instrumentation.set_on_fire_hooks([broken, metrics])
        hardexit.arm_hard_exit(0.3, exit_code=42)
        {WEDGE}
        """
    )
    assert_exited_by_deadline(result, 42)
    assert "raised RuntimeError('hook bug')" in result.stderr
    assert result.stdout == "late>=0:True code:42\n"


def test_a_hook_that_blocks_forever_does_not_stop_the_exit() -> None:
    result = run(
        f"""
        from hardexit import instrumentation
        instrumentation.set_on_fire_hooks([lambda details: threading.Event().wait()])
        hardexit.arm_hard_exit(0.3, exit_code=42)
        {WEDGE}
        """
    )
    assert_exited_by_deadline(result, 42)
    assert "Every thread's stack" in result.stderr


def test_logging_handler_lock_held_by_the_wedged_thread() -> None:
    result = run(
        f"""
        import logging
        logging.basicConfig(stream=sys.stderr)
        handler = logging.getLogger().handlers[0]
        hardexit.arm_hard_exit(0.3, exit_code=42)
        handler.acquire()  # the wedged thread holds the handler's lock ...
        {WEDGE}  # ... forever
        """
    )
    assert_exited_by_deadline(result, 42)
    assert "Every thread's stack" in result.stderr


def test_stdout_lock_held_by_a_thread_blocked_writing_to_a_full_pipe() -> None:
    # Real wedge: nobody reads the pipe, so the main thread blocks inside
    # sys.stdout's buffer, holding its lock; a flush from any thread waits on it,
    # and so does any logging handler writing to stdout.
    result = run(
        """
        import logging
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        logging.basicConfig(stream=sys.stdout)
        hardexit.arm_hard_exit(0.3, exit_code=42)
        sys.stdout.write("x" * 1_000_000)
        sys.stdout.flush()
        """
    )
    assert_exited_by_deadline(result, 42)
    assert "Every thread's stack" in result.stderr
    assert re.search(r'File "<isolated>", line \d+ in <module>', result.stderr)


def test_a_fire_imports_nothing_when_logging_was_never_imported() -> None:
    # No `logging` in the process: nobody can have configured a handler, and
    # importing it after the deadline would make the exit late.
    result = run_isolated(
        f"""
import hardexit, os, sys, ctypes
from hardexit import instrumentation
def probe(details):
    os.write(1, f"logging imported: {{'logging' in sys.modules}}\\n".encode())
instrumentation.set_on_fire_hooks([*instrumentation.get_on_fire_hooks(), probe])
hardexit.arm_hard_exit(0.3, exit_code=42, reason="no logging")
ctypes.CDLL(None).sleep(3600)
"""
    )
    assert_exited_by_deadline(result, 42)
    assert result.stdout == "logging imported: False\n", result
    assert result.stderr.startswith("hardexit: teardown (no logging) still running"), result


@pytest.mark.parametrize("busy_threads", [0, 32], ids=["alone", "32_busy_threads"])
def test_a_wedge_holding_the_gil_still_names_the_wedged_function(busy_threads: int) -> None:
    # No Python thread can run: the kernel has the watchdog thread dump every
    # stack (faulthandler, no GIL needed), then exits with the exact code.
    result = run(
        f"""
        def spin():
            while True:
                pass
        for _ in range({busy_threads}):
            threading.Thread(target=spin, daemon=True).start()
        def dispose_native_resources():
            {WEDGES["native_gil_held"]}
        # Time for the main thread to win the GIL back after arming and reach
        # its wedge, which takes many switch intervals among busy threads.
        hardexit.arm_hard_exit(0.5 if {busy_threads} == 0 else 3.0, exit_code=42)
        dispose_native_resources()
        """,
        limit=30,
    )
    assert_exited_by_deadline(result, 42)
    assert re.search(
        r'File "<isolated>", line \d+ in dispose_native_resources\n'
        r'  File "<isolated>", line \d+ in <module>',
        result.stderr,
    ), result.stderr


def test_the_wedged_thread_is_not_disturbed_by_the_dump() -> None:
    # The dump's signal goes to the watchdog thread only: a signal delivered to
    # the wedged thread would cut its sleep short (EINTR) and let teardown run on.
    result = run(
        """
        hardexit.arm_hard_exit(0.3, exit_code=42)
        left = ctypes.PyDLL(None).sleep(2)  # returns early, with time left, if interrupted
        print("sleep returned", left, flush=True)
        os._exit(3)
        """
    )
    assert_exited_by_deadline(result, 42)
    assert "sleep returned" not in result.stdout
