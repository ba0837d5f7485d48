"""The pytest plugin, in real pytest sessions that really wedge after their verdict.

Each session is a fresh ``python -m pytest`` run through the tests' one
harness (``hardexit.testing.start_isolated``: its own session, everything it
starts killed and reaped in teardown), in a temporary directory with its own
pytest.ini, so this repository's configuration does not leak in.  Times are
measured from the moment the session's verdict line is seen to the moment
the process exits.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hardexit.pytest_plugin import ACCEPTED, parse_seconds
from hardexit.testing import IsolatedProcess, IsolatedRun, start_isolated

from .support import SLACK, modules_loaded_by

# Real pytest sessions: pytest's behaviour more than the interpreter's.
pytestmark = pytest.mark.once

BUDGET = 1.0
# The plugin arms in pytest's last hook, after the summary line is printed; on a
# loaded 2-core machine pytest's own teardown in between may take this long.
VERDICT_TO_ARM = 1.0
# Past the budget, from the verdict line to the exit.
LATE = VERDICT_TO_ARM + SLACK
# A session that is still running this long after its verdict wedged.
CONTROL_WAIT = BUDGET + LATE
# Anything longer means the session is stuck somewhere no test expects.
LIMIT = 60.0


def _registered_by_entry_point() -> bool:
    return any(
        ep.value == "hardexit.pytest_plugin"
        for ep in importlib.metadata.entry_points(group="pytest11")
    )


# `pip install -e .` registers the plugin; a bare checkout on PYTHONPATH does not.
# Naming it with -p when it is registered too would register it twice, which pytest refuses.
PLUGIN_ARGS = [] if _registered_by_entry_point() else ["-p", "hardexit.pytest_plugin"]

# The line each kind of session ends with: the summary, or a usage error.
VERDICT_LINE = re.compile(
    r"\b(\d+ (passed|failed)|no tests ran)\b.* in [\d.]+s|^ERROR: file or directory not found"
)

# Wedges, each a file set for a session.  Each blocks the interpreter's exit for 60 s.
LEFTOVER_THREAD = """
import threading

def block_forever():
    threading.Event().wait()

threading.Thread(target=block_forever).start()  # not a daemon: exit waits for it
"""

WEDGES = {
    # A passing test that leaves a non-daemon thread behind.
    "thread": {"test_wedge.py": LEFTOVER_THREAD + "\ndef test_passes():\n    pass\n"},
    # A failing test, and an atexit handler stuck in native code (GIL released).
    "atexit": {
        "test_wedge.py": """
            import atexit, ctypes

            def hang_in_native_code():
                ctypes.CDLL(None).sleep(60)

            atexit.register(hang_in_native_code)

            def test_fails():
                assert False
        """,
    },
    # A module-level object whose __del__ holds the GIL in native code: it runs
    # while the interpreter finalizes, where no Python thread can run again.
    "finalizer": {
        "test_wedge.py": """
            import ctypes

            class NativeHandle:
                def __init__(self):
                    # Kept on the object: module globals may be gone when __del__ runs.
                    self.close_native = ctypes.PyDLL(None).sleep

                def __del__(self):
                    self.close_native(60)

            handle = NativeHandle()

            def test_passes():
                pass
        """,
    },
}


class Session:
    """A pytest session started by :func:`start_session`, running or not.

    Its verdict line is timestamped when first seen: stdout is looked at
    every 10 ms while a test waits on the session.
    """

    def __init__(self, process: IsolatedProcess) -> None:
        self.process = process
        self.verdict_at: float | None = None

    def wait(self, timeout: float) -> IsolatedRun | None:
        """How it ended, or None if it is still running after *timeout*."""
        end = time.monotonic() + timeout
        while True:
            result = self.process.wait(max(0.0, min(0.01, end - time.monotonic())))
            self._look_for_verdict()
            if result is not None or time.monotonic() >= end:
                return result

    def wait_for_verdict(self, timeout: float) -> float:
        """When its verdict line was first seen, waiting for it up to *timeout*."""
        end = time.monotonic() + timeout
        while self.verdict_at is None:
            if self.wait(min(0.01, end - time.monotonic())) is not None or (
                time.monotonic() >= end
            ):
                break  # the output ended without one, or it is late
        if self.verdict_at is None:
            raise AssertionError(f"no verdict line within {timeout} s:\n{self.output}")
        return self.verdict_at

    def _look_for_verdict(self) -> None:
        if self.verdict_at is None and self.verdict is not None:
            self.verdict_at = time.monotonic()

    @property
    def verdict(self) -> str | None:
        """The line the session ended with so far: its summary, or a usage error."""
        return next((line for line in self.lines if VERDICT_LINE.search(line)), None)

    @property
    def lines(self) -> list[str]:
        """What it wrote on stdout so far, line by line."""
        return self.process.stdout.splitlines()

    @property
    def output(self) -> str:
        """What it wrote so far: stdout, then stderr (the stack dumps)."""
        return self.process.stdout + self.process.stderr


StartSession = Callable[..., Session]


@pytest.fixture
def start_session(tmp_path: Path) -> Iterator[StartSession]:
    """Start ``python -m pytest`` in *tmp_path*, through the tests' one harness.

    It runs under start_isolated, as the interpreter's own arguments (the
    child imports nothing first, as ``pytest`` would not), in its own
    session; every process it started is killed and reaped when the test
    ends.  This suite's own PYTEST_* and HARDEXIT_* variables do not leak in.
    """
    env: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith(("PYTEST_", "HARDEXIT_"))
    }
    env["PYTHONUNBUFFERED"] = "1"  # each line is seen as soon as it is printed

    def start(
        files: dict[str, str], *args: str, ini: str = "", backstop: str | None = None
    ) -> Session:
        (tmp_path / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
        for name, text in files.items():
            (tmp_path / name).write_text(textwrap.dedent(text))
        process = stack.enter_context(
            start_isolated(
                ["-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN_ARGS, *args],
                cwd=tmp_path,
                env=env if backstop is None else {**env, "HARDEXIT_BACKSTOP": backstop},
                limit=2 * LIMIT,
            )
        )
        return Session(process)

    with contextlib.ExitStack() as stack:
        yield start


def assert_exits_within_budget(session: Session, exit_code: int) -> float:
    """Exited with *exit_code*, no sooner than its budget after its verdict and by
    BUDGET + LATE.

    Returns the time from the verdict line to the exit.
    """
    verdict = session.wait_for_verdict(LIMIT)
    result = session.wait(LIMIT)
    assert result is not None, f"still running {LIMIT} s after its verdict:\n{session.output}"
    after_verdict = result.exited_at - verdict
    assert result.exit_code == exit_code, session.output
    # It did wedge: a session that exits on its own does so in milliseconds.
    assert after_verdict >= BUDGET - 0.25, f"exited {after_verdict:.3f} s after its verdict"
    assert after_verdict <= BUDGET + LATE, f"exited {after_verdict:.3f} s after its verdict"
    # The figure docs/pytest.md quotes (pytest -s shows it).
    print(f"exited {after_verdict:.3f} s after its verdict; budget {BUDGET} s")
    return after_verdict


@pytest.mark.parametrize(
    ("wedge", "exit_code", "dumped"),
    [
        ("thread", 0, "in block_forever"),
        ("atexit", 1, "in hang_in_native_code"),
        # The GIL is held during finalization: only the kernel can act, and the
        # watchdog thread that its dump needs may be gone (docs/design.md).
        ("finalizer", 0, None),
    ],
)
def test_a_session_wedged_after_its_verdict_exits_within_budget_with_it(
    start_session: StartSession, wedge: str, exit_code: int, dumped: str | None
) -> None:
    session = start_session(WEDGES[wedge], f"--hardexit-timeout={BUDGET}")
    assert_exits_within_budget(session, exit_code)
    if dumped is not None:
        assert "hardexit: teardown (the pytest session is over; the process did not exit)" in (
            session.output
        )
        assert dumped in session.output


@pytest.mark.parametrize(
    ("files", "args", "exit_code"),
    [
        pytest.param({"conftest.py": LEFTOVER_THREAD}, [], 5, id="no-tests-ran"),
        pytest.param({"conftest.py": LEFTOVER_THREAD}, ["missing_test.py"], 4, id="usage-error"),
    ],
)
def test_the_exit_code_is_the_sessions_own_status(
    start_session: StartSession, files: dict[str, str], args: list[str], exit_code: int
) -> None:
    session = start_session(files, f"--hardexit-timeout={BUDGET}", *args)
    assert_exits_within_budget(session, exit_code)


@pytest.mark.once  # a control: the plugin's switch is plain Python, alike on every interpreter
@pytest.mark.parametrize("wedge", sorted(WEDGES))
def test_without_the_option_the_plugin_is_inert(start_session: StartSession, wedge: str) -> None:
    # The same sessions, the plugin loaded but not asked: each stays wedged.
    session = start_session(WEDGES[wedge])
    verdict = session.wait_for_verdict(LIMIT)
    assert session.wait(verdict + CONTROL_WAIT - time.monotonic()) is None, session.output
    assert "hardexit" not in session.output


def test_the_budget_starts_at_the_verdict(start_session: StartSession) -> None:
    # A session longer than its budget: the guard is armed at the end, not at the start.
    files = {
        "test_wedge.py": LEFTOVER_THREAD
        + f"\nimport time\n\ndef test_slow():\n    time.sleep({BUDGET + 1})\n"
    }
    assert_exits_within_budget(start_session(files, f"--hardexit-timeout={BUDGET}"), 0)


def test_the_ini_option_is_used_without_the_command_line(start_session: StartSession) -> None:
    session = start_session(WEDGES["thread"], ini=f"hardexit_timeout = {BUDGET}")
    assert_exits_within_budget(session, 0)


def test_the_command_line_wins_over_the_ini_option(start_session: StartSession) -> None:
    session = start_session(
        WEDGES["thread"], f"--hardexit-timeout={BUDGET}", ini="hardexit_timeout = 600"
    )
    assert_exits_within_budget(session, 0)


def test_a_suite_that_left_testing_mode_on_is_still_guarded(start_session: StartSession) -> None:
    # set_testing(True) makes guards inert for code under test; the runner's guard is not that.
    files = {
        "conftest.py": "import hardexit.testing\nhardexit.testing.set_testing(True)\n",
        **WEDGES["thread"],
    }
    assert_exits_within_budget(start_session(files, f"--hardexit-timeout={BUDGET}"), 0)


def _normalized(output: str) -> str:
    return re.sub(r" in [\d.]+s\b", " in <time>", output)


def test_a_session_that_exits_normally_is_untouched(start_session: StartSession) -> None:
    files = {
        "test_plain.py": "def test_passes():\n    print('out')\n\ndef test_fails():\n    1/0\n"
    }
    plain_session = start_session(files)
    plain = plain_session.wait(LIMIT)
    guarded_session = start_session(files, "--hardexit-timeout=30")
    guarded = guarded_session.wait(LIMIT)
    assert plain is not None and guarded is not None
    assert guarded.exit_code == plain.exit_code == 1
    assert _normalized(guarded.stdout) == _normalized(plain.stdout)
    assert guarded.stderr == plain.stderr
    # did not wait out its 30 s
    assert guarded.exited_at - guarded_session.wait_for_verdict(0) < 5


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf", "1e10", ""])
def test_a_bad_command_line_value_is_a_usage_error(start_session: StartSession, value: str) -> None:
    session = start_session(WEDGES["thread"], f"--hardexit-timeout={value}")
    result = session.wait(LIMIT)
    assert result is not None and result.exit_code == 4, session.output
    assert "argument --hardexit-timeout" in session.output
    assert ACCEPTED in session.output
    assert "passed" not in session.output  # no test ran: the thread was never started


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf", "1e10"])
def test_a_bad_ini_value_is_a_usage_error(start_session: StartSession, value: str) -> None:
    session = start_session(WEDGES["thread"], ini=f"hardexit_timeout = {value}")
    result = session.wait(LIMIT)
    assert result is not None and result.exit_code == 4, session.output
    assert f"ERROR: ini option hardexit_timeout: {value!r} is " in session.output
    assert ACCEPTED in session.output
    assert "passed" not in session.output


@pytest.mark.parametrize("value", ["60", "0.001", "1e9", " 2.5 "])
def test_accepted_values_are_hardexits_own(value: str) -> None:
    assert parse_seconds(value) == float(value)


@pytest.mark.parametrize("value", ["0", "-0.0", "-1", "nan", "inf", "-inf", "1000000001", "x"])
def test_rejected_values_are_hardexits_own(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(ACCEPTED)):
        parse_seconds(value)


PYTEST_TIMEOUT_FILES = {
    "test_slow.py": """
        import time, pytest

        @pytest.mark.timeout(1)
        def test_slow():
            time.sleep(30)

        def test_passes():
            pass
    """,
}


# Where timer_create is missing (macOS, musl), the backstop is setitimer and SIGALRM,
# the signal pytest-timeout uses too.
@pytest.mark.parametrize("backstop", ["timer_create", "setitimer"])
def test_pytest_timeout_still_fails_a_slow_test(start_session: StartSession, backstop: str) -> None:
    pytest.importorskip("pytest_timeout")
    outcomes = []
    for args in ([], [f"--hardexit-timeout={BUDGET}"]):
        session = start_session(PYTEST_TIMEOUT_FILES, *args, backstop=backstop)
        result = session.wait(LIMIT)
        assert result is not None
        assert "Timeout (>1.0s) from pytest-timeout" in session.output
        outcomes.append((result.exit_code, session.lines[-1].split(" in ")[0]))
    assert outcomes[0] == outcomes[1] == (1, "1 failed, 1 passed")


def test_xdist_workers_wedged_at_exit_are_bounded(start_session: StartSession) -> None:
    # The conftest starts a leftover thread in the controller and in every worker.
    # Unbounded, xdist waits 10 s for its workers before killing them, then the
    # controller wedges; bounded, the workers exit within the budget and the
    # controller keeps its verdict.
    pytest.importorskip("xdist")
    files = {
        "conftest.py": LEFTOVER_THREAD,
        "test_many.py": "def test_fails():\n    assert False\n\n"
        + "".join(f"def test_passes_{i}():\n    pass\n\n" for i in range(4)),
    }
    session = start_session(files, "-n", "2", f"--hardexit-timeout={BUDGET}")
    assert_exits_within_budget(session, 1)
    summary = session.verdict
    assert summary is not None
    assert summary.startswith("1 failed, 4 passed in ")
    session_seconds = float(summary.split(" in ")[1].split("s")[0])
    assert session_seconds < 10, summary  # workers did not wait for xdist to kill them
    assert session.output.count("in block_forever") >= 2  # stack dumps: workers and controller


def test_importing_the_plugin_is_cheap() -> None:
    # Every pytest session in an environment with hardexit installed loads the plugin.
    loaded = modules_loaded_by("hardexit.pytest_plugin", after="import pytest")
    # The core only (with what its arm and fire paths need, ctypes included):
    # no hardexit.testing, no integration.
    assert not {"hardexit.testing", "hardexit.livekit", "livekit"} & loaded, loaded
