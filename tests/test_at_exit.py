"""arm_at_exit and HARDEXIT_AT_EXIT: a process that cannot hang at exit, with no code change.

Every program here runs in a fresh interpreter of a venv into which hardexit's
wheel was installed (built once per session, unpacked into site-packages as
an installer does), and nothing else of this suite: no PYTHONPATH, no import
of hardexit by the harness.  Only the environment changes.  Each hang is real:
a native sleep, a self-deadlocked lock, an await that never resolves, a
thread spinning in bytecode, a full pipe, a stuck worker process.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sysconfig
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import hardexit
from hardexit import _at_exit, _config
from hardexit.testing import run_isolated

from .installed import build_wheel, make_venv
from .support import SLACK

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 0.5
VAR = _config.AT_EXIT_ENV_VAR
# The report's first line, as an at-exit guard writes it.
PHASE_LINE = re.compile(r"hardexit: interpreter exit began (\d+\.\d+) s ago")


@pytest.fixture(scope="session")
def python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv's interpreter with hardexit installed from its wheel, as a user installs it.

    Built once per session (tests/installed.py).
    """
    tmp = tmp_path_factory.mktemp("at-exit-venv")
    venv_python, purelib = make_venv(tmp / "venv", build_wheel(tmp / "dist"))
    assert (purelib / "hardexit_at_exit.pth").is_file()
    # gevent and eventlet, from this suite's environment: a plain path line,
    # after the venv's own site-packages (so its hardexit comes first), and no
    # .pth file of that environment runs.
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    for name in ("gevent", "eventlet", "greenlet", "zope.event", "dns"):
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        if spec is not None and spec.origin:
            deps.add(str(Path(spec.origin).parents[len(name.split("."))]))
    deps.discard(str(ROOT))
    (purelib / "zz_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return venv_python


@dataclass
class Ran:
    exit_code: int
    stdout: str
    stderr: str
    started_at: float
    exited_at: float
    timed_out: bool

    @property
    def exit_began_at(self) -> float:
        """When the program's last statement ran (it writes `END <monotonic>`)."""
        match = re.search(r"^END (\S+)$", self.stdout, re.MULTILINE)
        assert match, self
        return float(match.group(1))

    @property
    def after_exit_began(self) -> float:
        return self.exited_at - self.exit_began_at


def run(python: str, program: str, env: dict[str, str] | None = None, limit: float = 20.0) -> Ran:
    """Run *program* (a file, so stacks name it) on the tests' one harness, nothing imported first.

    Without this suite's PYTHONPATH or any HARDEXIT_ or PYTHON variable of its
    own: the venv's installed hardexit, and only *env*, decide what happens.
    """
    unset: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith(("HARDEXIT_", "PYTHON"))
    }
    with tempfile.TemporaryDirectory(prefix="hardexit-at-exit-") as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(textwrap.dedent(program))
        started = time.monotonic()
        result = run_isolated(
            [str(script)],
            python=python,
            env={**unset, "PYTHONPATH": None, **(env or {})},
            cwd=tmp,
            limit=limit,
        )
    return Ran(
        exit_code=result.exit_code,
        stdout=result.stdout,
        stderr=result.stderr,
        started_at=started,
        exited_at=result.exited_at,
        timed_out=result.timed_out,
    )


PREAMBLE = """\
import ctypes, os, sys, threading, time
def end():
    if __name__ == "__main__":  # not in a spawned or forkserver worker importing this
        os.write(1, f"END {time.monotonic()!r}\\n".encode())
"""

#: The ways a program finishes, and the status the guard exits with after each.
ENDINGS = {
    "main_module_ends": ("end()", 0),
    "unhandled_exception": ("end(); raise ValueError('boom')", 1),
    "keyboard_interrupt": ("end(); raise KeyboardInterrupt", _at_exit.KEYBOARD_INTERRUPT_STATUS),
    # CPython consumes SystemExit in C before the exit begins and records it
    # nowhere: the guard sees a normal end (docs/at-exit.md, "Exit status").
    "sys_exit_3": ("end(); sys.exit(3)", 0),
}


@dataclass(frozen=True)
class Hang:
    name: str
    setup: str  # runs after the preamble; leaves the program to hang at exit
    frame: str | None  # what the stack dump names, where a dump can be had


HANGS = [
    Hang(
        "non_daemon_thread_in_native_code",
        """
        def stuck_worker():
            ctypes.CDLL(None).sleep(3600)
        threading.Thread(target=stuck_worker).start()
        """,
        "stuck_worker",
    ),
    Hang(
        "non_daemon_thread_spinning",
        """
        def spin_forever():
            while True:
                pass
        threading.Thread(target=spin_forever).start()
        """,
        "spin_forever",
    ),
    Hang(
        "non_daemon_thread_awaiting_forever",
        """
        import asyncio
        async def never_resolves():
            await asyncio.get_running_loop().create_future()
        threading.Thread(target=asyncio.run, args=(never_resolves(),)).start()
        """,
        "run_until_complete",
    ),
    Hang(
        # concurrent.futures joins its workers in a threading._register_atexit
        # callback, registered when it is imported: after the guard's hook.
        "thread_pool_stuck_task",
        """
        from concurrent.futures import ThreadPoolExecutor
        def stuck_task():
            ctypes.CDLL(None).sleep(3600)
        pool = ThreadPoolExecutor(1)
        pool.submit(stuck_task)
        """,
        "stuck_task",
    ),
    Hang(
        "process_pool_stuck_worker",
        """
        from concurrent.futures import ProcessPoolExecutor
        if __name__ == "__main__":  # 3.14+ start workers from a forkserver, which imports this
            pool = ProcessPoolExecutor(1)
            pool.submit(int).result()  # the worker is up
            pool.submit(time.sleep, 3600)
            time.sleep(0.2)
        """,
        "_python_exit",
    ),
    Hang(
        # multiprocessing's atexit handler joins the feeder thread, which is
        # blocked writing into a pipe nobody reads.
        "multiprocessing_queue_feeder",
        """
        import multiprocessing
        queue = multiprocessing.Queue()
        queue.put(b"x" * (1 << 20))
        time.sleep(0.2)
        """,
        "_finalize_join",
    ),
    Hang(
        "atexit_handler",
        """
        import atexit
        def flush_forever():
            ctypes.CDLL(None).sleep(3600)
        atexit.register(flush_forever)
        """,
        "flush_forever",
    ),
    Hang(
        # logging.shutdown, an atexit handler, flushes every handler.
        "logging_handler_flush",
        """
        import logging
        class StuckHandler(logging.Handler):
            def emit(self, record):
                pass
            def flush(self):
                lock = threading.Lock()
                lock.acquire()
                lock.acquire()  # deadlocked on itself
        logging.getLogger().addHandler(StuckHandler())
        """,
        "flush",
    ),
    Hang(
        # When __main__ is cleared, Python threads are stopped for good: the
        # watchdog thread is gone, so no stack dump; the kernel's exit stage
        # still ends the process (docs/design.md, "Where it cannot help").
        "finalizer_in_native_code",
        """
        class NativeResource:
            def __del__(self, sleep=ctypes.PyDLL(None).sleep):
                sleep(3600)
        resource = NativeResource()
        """,
        None,
    ),
]


def program(setup: str, ending: str) -> str:
    return PREAMBLE + textwrap.dedent(setup) + ending + "\n"


def assert_bounded(ran: Ran, exit_code: int, frame: str | None) -> None:
    assert not ran.timed_out, f"still alive at the limit: {ran}"
    assert ran.exit_code == exit_code, ran
    assert BUDGET <= ran.after_exit_began <= BUDGET + SLACK, ran
    if frame is not None:
        assert f" in {frame}\n" in ran.stderr, ran.stderr


@pytest.mark.parametrize("hang", HANGS, ids=lambda h: h.name)
def test_each_hang_at_exit_is_cut_off_with_a_stack_dump(python: str, hang: Hang) -> None:
    ran = run(python, program(hang.setup, "end()"), {VAR: str(BUDGET)})
    assert_bounded(ran, 0, hang.frame)
    if hang.frame is not None:
        match = PHASE_LINE.search(ran.stderr)
        assert match, ran.stderr
        assert BUDGET <= float(match.group(1)) <= BUDGET + SLACK


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_the_guard_exits_with_the_programs_status(python: str, ending: str) -> None:
    code, status = ENDINGS[ending]
    ran = run(python, program(HANGS[0].setup, code), {VAR: str(BUDGET)})
    assert_bounded(ran, status, HANGS[0].frame)


CLEAN = """\
import atexit, logging, sys, threading
from concurrent.futures import ThreadPoolExecutor
atexit.register(print, "atexit registered first, runs last")
atexit.register(print, "atexit registered last, runs first")
threading._register_atexit(print, "threading atexit")
logging.basicConfig(format="%(message)s")
logging.warning("logged")
with ThreadPoolExecutor(2) as pool:
    print(sum(pool.map(abs, range(-3, 4))))
threading.Thread(target=print, args=("from a thread",)).start()
print("to stdout")
print("to stderr", file=sys.stderr)
{ending}
"""


@pytest.mark.parametrize(
    "ending", ["pass", "sys.exit(3)", "raise ValueError('boom')"], ids=["end", "exit_3", "raise"]
)
def test_a_clean_exit_is_untouched(python: str, ending: str) -> None:
    source = CLEAN.format(ending=ending)
    plain = run(python, source)
    guarded = run(python, source, {VAR: "30"})
    assert _same_but_tmpdir(plain, guarded), (plain, guarded)
    assert "atexit registered last, runs first\natexit registered first, runs last" in plain.stdout
    # Not delayed: the 30 s budget is nowhere near, and start-up is the only cost.
    assert guarded.exited_at - guarded.started_at < plain.exited_at - plain.started_at + SLACK


def _same_but_tmpdir(plain: Ran, guarded: Ran) -> bool:
    # A traceback names the script, which lives in a per-run temporary directory.
    def norm(text: str) -> str:
        return re.sub(r"hardexit-at-exit-\w+", "TMP", text)

    return (guarded.exit_code, guarded.stdout, norm(guarded.stderr)) == (
        plain.exit_code,
        plain.stdout,
        norm(plain.stderr),
    )


PROBE = """\
import os, sys
threads = len(os.listdir("/proc/self/task"))
print(sorted(m for m in sys.modules if m.split(".")[0] == "hardexit"), threads)
"""


def test_unset_imports_nothing_and_starts_no_thread(python: str) -> None:
    for env in ({}, {VAR: ""}):
        ran = run(python, PROBE, env)
        assert (ran.exit_code, ran.stdout, ran.stderr) == (0, "[] 1\n", ""), ran


def test_set_arms_at_start_up_without_a_thread_until_exit(python: str) -> None:
    ran = run(python, PROBE, {VAR: "30"})
    assert ran.exit_code == 0 and ran.stderr == "", ran
    assert "'hardexit._at_exit'" in ran.stdout, ran
    if not _at_exit._THREADS_REFUSED_AT_EXIT:
        assert ran.stdout.endswith(" 1\n"), ran  # the watchdog starts when the exit begins


def test_subinterpreters_arm_nothing_and_say_nothing(python: str) -> None:
    # site runs the .pth file in each subinterpreter too; hardexit cannot load
    # there on 3.12+ (faulthandler), and cannot arm on any version.
    ran = run(
        python,
        """
        try:
            import _interpreters as interpreters  # 3.13+
        except ImportError:
            import _xxsubinterpreters as interpreters
        sub = interpreters.create()
        interpreters.run_string(sub, "print('subinterpreter ran')")
        interpreters.destroy(sub)
        print("main ran")
        """,
        {VAR: "30"},
    )
    assert (ran.exit_code, ran.stderr) == (0, ""), ran
    # Each interpreter has its own sys.stdout buffer: the order is not kept.
    assert sorted(ran.stdout.splitlines()) == ["main ran", "subinterpreter ran"], ran


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1e10", "10s", "0x10"])
def test_a_malformed_value_warns_once_and_arms_nothing(python: str, value: str) -> None:
    ran = run(
        python,
        PROBE
        + "import threading, types\n"
        + "assert type(threading) is types.ModuleType, 'armed'\n"
        + "print('ran')\n",
        {VAR: value},
    )
    assert ran.exit_code == 0 and ran.stdout.endswith("ran\n"), ran
    assert ran.stderr.count("RuntimeWarning") == 1, ran.stderr
    assert f"{VAR}={value!r}" in ran.stderr and _config.ACCEPTED_TIMEOUTS in ran.stderr, ran


def test_the_earliest_promise_wins(python: str) -> None:
    ran = run(
        python,
        program(
            HANGS[0].setup,
            f"""
import hardexit
hardexit.arm_at_exit(20, exit_code=3)
hardexit.arm_at_exit({BUDGET}, exit_code=4, reason="my service")
hardexit.arm_at_exit(10)
end()
""",
        ),
        {VAR: "30"},
    )
    assert_bounded(ran, 4, HANGS[0].frame)
    assert "interpreter exit began" in ran.stderr and "s ago (my service)" in ran.stderr, ran


def test_armed_after_the_exit_began_arms_at_once(python: str) -> None:
    ran = run(
        python,
        PREAMBLE
        + f"""
import atexit, hardexit
def late_cleanup():
    hardexit.arm_at_exit({BUDGET}, exit_code=5)
    end()
    ctypes.CDLL(None).sleep(3600)
atexit.register(late_cleanup)
""",
    )
    # 3.12.0-3.12.2 refuse new threads once the exit has begun: a first arm then has
    # the kernel's exit but no watchdog thread to report (docs/at-exit.md).
    assert_bounded(ran, 5, None if _at_exit._THREADS_REFUSED_AT_EXIT else "late_cleanup")


GREEN = {
    "gevent": ("from gevent import monkey; monkey.patch_all()", "import gevent as green"),
    "eventlet": ("import eventlet; eventlet.monkey_patch()", "import eventlet as green"),
}


@pytest.mark.parametrize("when", ["env_before_patching", "api_after_patching"])
@pytest.mark.parametrize("green", sorted(GREEN))
def test_green_programs_are_covered(python: str, green: str, when: str) -> None:
    # eventlet replaces threading._shutdown without calling the one it replaced.
    pytest.importorskip(green)
    patch, module = GREEN[green]
    arm = f"import hardexit; hardexit.arm_at_exit({BUDGET})" if when.startswith("api") else ""
    ran = run(
        python,
        f"""
        {patch}
        {arm}
        {module}
        import atexit, os, time
        def green_forever():
            green.sleep(3600)  # a green sleep: the hub waits for good
        atexit.register(green_forever)
        os.write(1, f"END {{time.monotonic()!r}}\\n".encode())
        """,
        {VAR: str(BUDGET)} if when.startswith("env") else {},
    )
    # faulthandler shows OS threads: the main thread is in the hub, not in the greenlet.
    assert_bounded(ran, 0, "run")
    assert PHASE_LINE.search(ran.stderr), ran.stderr


# The API itself, in this process: bad input raises and changes nothing.


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"timeout": 5, "exit_code": 256}, ValueError, "exit_code"),
        ({"timeout": 5, "exit_code": True}, TypeError, "exit_code"),
        ({"timeout": 5, "reason": 1}, TypeError, "reason"),
    ],
)
def test_bad_arguments_raise_and_change_nothing(
    kwargs: dict[str, object], error: type[Exception], names: str
) -> None:
    import threading

    module_class, promises = type(threading), list(_at_exit._promises)
    with pytest.raises(error, match=names):
        hardexit.arm_at_exit(**kwargs)  # type: ignore[arg-type]
    assert _at_exit._promises == promises
    assert type(threading) is module_class
