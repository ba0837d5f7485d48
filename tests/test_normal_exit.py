"""Guarantee 3: a process that exits in time behaves as if nothing had been armed."""

from __future__ import annotations

import pytest

from .support import run

NORMAL_EXIT = """
atexit.register(lambda: print("atexit ran", flush=True))
print("to stdout, buffered")
print("to stderr", file=sys.stderr)
{arm}
sys.exit(3)
"""


@pytest.mark.parametrize(
    "arm",
    [
        "guard = hardexit.arm_hard_exit(30, exit_code=42); guard.cancel()",
        "hardexit.arm_hard_exit(30, exit_code=42)  # still armed at exit",
        "with hardexit.arm_hard_exit(30, exit_code=42): pass",
    ],
)
def test_normal_exit_is_untouched(arm: str) -> None:
    plain = run(NORMAL_EXIT.format(arm="pass"))
    guarded = run(NORMAL_EXIT.format(arm=arm))
    assert (
        (guarded.exit_code, guarded.stdout, guarded.stderr)
        == (
            plain.exit_code,
            plain.stdout,
            plain.stderr,
        )
        == (3, "to stdout, buffered\natexit ran\n", "to stderr\n")
    )
    assert guarded.after_arm is not None and guarded.after_arm < 5  # did not wait for the 30 s


def test_unhandled_exception_exit_is_untouched() -> None:
    result = run('hardexit.arm_hard_exit(30, exit_code=42)\nraise SystemExit("bye")')
    assert result.exit_code == 1
    assert result.stderr == "bye\n"


@pytest.mark.parametrize("dll", ["CDLL", "PyDLL"], ids=["gil_released", "gil_held"])
def test_cancelled_guard_never_fires(dll: str) -> None:
    # The native sleep outlasts the cancelled deadline and its backstop.
    result = run(
        f"""
        guard = hardexit.arm_hard_exit(0.2, exit_code=42)
        assert guard.cancel()
        ctypes.{dll}(None).sleep(1)
        sys.exit(7)
        """
    )
    assert result.exit_code == 7
    assert result.stderr == ""


def test_thousands_of_arm_cancel_cycles_never_kill_the_process() -> None:
    result = run(
        """
        import random
        rng = random.Random(1)
        for i in range(5000):
            # Deadlines honest for a loaded machine, yet all passed by the sleep below.
            guard = hardexit.arm_hard_exit(rng.choice([0.5, 0.7, 1.0, 30]), exit_code=42)
            if i % 3 == 0:
                guard.deadline += 0.2  # move it
            if i % 5 == 0:
                with hardexit.arm_hard_exit(0.5, exit_code=43):
                    pass
            assert guard.cancel()
        assert hardexit.current_deadline() is None
        time.sleep(1.5)  # past every deadline and backstop that was ever set
        sys.exit(7)
        """
    )
    assert result.exit_code == 7, result
    assert result.stderr == ""
