"""Guarantee 4: operators learn why, and saying so never stops the exit."""

from __future__ import annotations

import re

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
    assert result.stderr.startswith(
        "hardexit: teardown outlived its 0.500 s deadline (job abc); exiting with code 42."
    )
    # the wedged frames of the main thread
    assert re.search(
        r'File "<isolated>", line \d+ in teardown\n  File "<isolated>", line \d+ in <module>',
        result.stderr,
    )
    records = [line for line in result.stdout.splitlines() if line.startswith("hardexit ")]
    assert len(records) == 1, result.stdout
    assert records[0].startswith(
        "hardexit ERROR hard exit (job abc): teardown outlived its 0.500 s deadline; "
        "the deadline passed "
    )
    assert records[0].endswith("ms ago, exiting with code 42")


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
    assert "Stacks of every thread" in result.stderr


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
    assert "Stacks of every thread" in result.stderr


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
    assert "Stacks of every thread" in result.stderr
    assert re.search(r'File "<isolated>", line \d+ in <module>', result.stderr)
