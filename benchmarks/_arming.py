"""The ways to exit at a deadline that the benchmarks compare, and children that arm one.

Every child is a fresh interpreter of ``sys.executable`` run in the
repository root, so that it imports this repository's ``hardexit``, with its
bytecode cached.  A hardexit child runs ``import hardexit`` first, as the
README shows, and never calls ``prepare()``; no child imports ``logging``
unless its mechanism preloads it (each reports ``'logging' in sys.modules``
just before arming, and a child that had it is an error).  The wedges are
``tests/wedges.py``'s, by the names used there.

A *cell* is one mechanism armed before one wedge: :func:`run_cell` runs it
once and returns a :class:`Sample`; :func:`measure` runs cells interleaved.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass

from tests import wedges
from tests.wedges import Wedge

from . import _common
from ._common import ExitWatch, child_env, exit_label, progress, read_line, reap, spawn, tail

DEADLINE = 0.3  # seconds from arming
CAP = 3.0  # seconds from arming after which a child is killed as a timeout
EXIT_CODE = 3  # asked of the mechanisms that take one
STARTUP_TIMEOUT = 30.0  # seconds for a child to reach the point of arming
SKIP_AFTER_TIMEOUTS = 3  # a cell whose first runs all time out is not run again


@dataclass(frozen=True)
class Mechanism:
    key: str  # understood by the child's make_arm()
    label: str
    env: tuple[tuple[str, str], ...] = ()
    preload: tuple[str, ...] = ()  # modules the child imports at start-up


TIMER = Mechanism("timer", "threading.Timer")
FAULTHANDLER = Mechanism("faulthandler", "faulthandler")
SETITIMER = Mechanism("setitimer", "setitimer")
HARDEXIT = Mechanism("hardexit", "hardexit")
MECHANISMS = (
    TIMER,
    FAULTHANDLER,
    SETITIMER,
    HARDEXIT,
    Mechanism("hardexit", "hardexit, logging preloaded", preload=("logging",)),
    Mechanism("hardexit", "hardexit, no backstop", env=(("HARDEXIT_BACKSTOP", "none"),)),
)
ANCHORS = (TIMER, FAULTHANDLER, SETITIMER)
NOTHING = Mechanism("none", "nothing armed")


# `import hardexit` comes first, at start-up, as the README shows.
CHILD_HEAD = """\
import sys
if sys.argv[1] == "hardexit":
    import hardexit
import mmap, os, struct, time
"""

# make_arm(mechanism, code) does the mechanism's set-up and returns
# arm(timeout) -> cancel.  hardexit is not prepare()d: the first arm is cold.
MAKE_ARM = """
def make_arm(mechanism, code):
    if mechanism == "timer":
        import threading
        def arm(t):
            timer = threading.Timer(t, os._exit, (code,))
            timer.daemon = True
            timer.start()
            return timer.cancel
    elif mechanism == "faulthandler":
        import faulthandler
        def arm(t):
            faulthandler.dump_traceback_later(t, exit=True)
            return faulthandler.cancel_dump_traceback_later
    elif mechanism == "setitimer":
        import signal
        def arm(t):
            signal.setitimer(signal.ITIMER_REAL, t)
            return lambda: signal.setitimer(signal.ITIMER_REAL, 0)
    elif mechanism == "hardexit":
        def arm(t):
            return hardexit.arm_hard_exit(t, exit_code=code).cancel
    elif mechanism == "none":  # for the measurement floor
        def arm(t):
            return lambda: None
    else:
        raise SystemExit(f"unknown mechanism {mechanism!r}")
    return arm

for module in filter(None, sys.argv[2].split(",")):  # what the mechanism preloads
    __import__(module)
"""

# argv: mechanism preload ready_fd times_fd deadline exit_code
#
# The child says "ready" on a pipe, with what it has loaded, then stores its
# clock just before and just after the arm call in a shared 16-byte file
# mapping: unlike a write to a pipe, a store into memory cannot give the GIL
# away (and take a contended wait to get it back) between the timestamp and
# the arm, and it survives a child that dies inside the arm call.
ARM_AND_WEDGE = """
ready_fd, times_fd, deadline = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
times = mmap.mmap(times_fd, 16)
arm = make_arm(sys.argv[1], int(sys.argv[6]))
loaded = [name for name in ("ctypes", "logging") if name in sys.modules]
os.write(ready_fd, f"{time.monotonic()!r} {','.join(loaded) or '-'}\\n".encode())
os.close(ready_fd)
struct.pack_into("d", times, 0, time.monotonic())
arm(deadline)
struct.pack_into("d", times, 8, time.monotonic())
teardown()
"""


def wedged_child(wedge: Wedge) -> str:
    """A child that sets *wedge* up, arms, then wedges in ``teardown()``."""
    return "\n".join(
        [
            CHILD_HEAD,
            wedges.HELPERS,
            MAKE_ARM,
            *(f"import {module}" for module in wedge.imports),
            wedge.setup,
            f"def teardown():\n    {wedge.code}\n",
            ARM_AND_WEDGE,
        ]
    )


@dataclass(frozen=True)
class Cell:
    mechanism: Mechanism
    wedge: Wedge
    deadline: float = DEADLINE
    cap: float = CAP


@dataclass
class Sample:
    deadline: float
    before: float  # the child's time.monotonic() just before the arm call
    after: float | None  # just after it returned; None if the child died inside it
    died_at: float | None  # when the parent saw it dead; None if killed at the cap
    exit_label: str
    dumped: bool  # the wedged function's frame reached stderr
    loaded: tuple[str, ...]  # of ctypes and logging, what was in sys.modules at the arm

    @property
    def overshoot(self) -> float:
        """Seconds past the deadline, counted from the start of the arm call; inf if timed out."""
        return math.inf if self.died_at is None else self.died_at - (self.before + self.deadline)

    @property
    def arm_call(self) -> float:
        """Seconds the arm call took; inf if it never returned."""
        return math.inf if self.after is None else self.after - self.before

    @property
    def timed_out(self) -> bool:
        return self.died_at is None


def run_cell(cell: Cell) -> Sample:
    mechanism, wedge = cell.mechanism, cell.wedge
    what = f"{mechanism.label} / {wedge.name}"
    read_fd, write_fd = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as times, ExitWatch() as w:
        os.ftruncate(times.fileno(), 16)  # two doubles, 0.0 until stored
        try:
            argv = [sys.executable, "-c", wedged_child(wedge), mechanism.key]
            argv += [",".join(mechanism.preload), str(write_fd), str(times.fileno())]
            argv += [repr(cell.deadline), str(EXIT_CODE)]
            proc = spawn(
                argv,
                child_env(mechanism.env),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(write_fd, times.fileno()),
            )
            os.close(write_fd)
            write_fd = -1
            w.watch(proc.pid)
            ready = read_line(read_fd, STARTUP_TIMEOUT).split()
            if not ready:
                raise RuntimeError(f"{what}: the child never got to arm:\n{tail(stderr)}")
            died_at = w.wait_for(proc.pid, float(ready[0]) + cell.cap)
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if proc is not None:
                reap(proc)
        loaded = tuple(name for name in ready[1].decode().split(",") if name != "-")
        if "logging" in loaded and "logging" not in mechanism.preload:
            raise RuntimeError(f"{what}: logging was imported before the arm; the run is void")
        before, after = struct.unpack("dd", os.pread(times.fileno(), 16, 0))
        if not before:
            raise RuntimeError(f"{what}: no arm time stored:\n{tail(stderr)}")
        if died_at is None:
            label = "timeout" if after else "timeout, arm call stuck"
        else:
            label = exit_label(proc.returncode)
        stderr.seek(0)
        frame = re.escape(wedge.frame or "teardown").encode()
        dumped = re.search(rb'File "<string>", line \d+ in ' + frame + rb"\n", stderr.read())
        return Sample(cell.deadline, before, after or None, died_at, label, bool(dumped), loaded)


Cells = dict[Cell, list[Sample]]


def measure_from_command_line(
    doc: str | None, title: str, cells: list[Cell], floor: Cell | None = None
) -> tuple[_common.Report, Cells, list[float], int]:
    """Parse ``--runs`` and ``--quick``, then :func:`measure`: the report, samples, floor, runs."""
    args = _common.parse(_common.parser(doc, runs=15, quick_runs=3))
    report = _common.Report(title)
    return (report, *measure(cells, args.runs, floor), args.runs)


def goals(verdicts: list[tuple[bool, str]]) -> list[str]:
    """The goals section of a report on cells."""
    note = "Overshoot counts from the start of the arm call, `logging` never imported."
    return _common.goals(verdicts, note)


def measure(cells: list[Cell], runs: int, floor: Cell | None = None) -> tuple[Cells, list[float]]:
    """Samples per cell, and the measurement floor in seconds (if a *floor* cell is given).

    Interleaved, so that drift in machine load spreads over every cell.
    """
    samples: Cells = {cell: [] for cell in cells}
    floors: list[float] = []
    for run in range(runs):
        if floor is not None:
            progress(f"run {run + 1}/{runs}: measurement floor")
            sample = run_cell(floor)
            assert sample.died_at is not None and sample.after is not None
            floors.append(sample.died_at - sample.after)
        for cell, done in samples.items():
            if len(done) >= SKIP_AFTER_TIMEOUTS and all(s.timed_out for s in done):
                continue
            progress(f"run {run + 1}/{runs}: {cell.wedge.name}, {cell.mechanism.label}")
            done.append(run_cell(cell))
    progress("")
    return samples, floors


# --------------------------------------------------------------------------- formatting


def fmt_ms(seconds: float, cap: float = CAP, unit: str = "") -> str:
    """Milliseconds, with *unit* after; inf (killed at the *cap*) as "> cap s"."""
    if math.isinf(seconds):
        return f"> {cap:.1f} s"
    ms = seconds * 1e3
    return (f"{ms:.1f}" if abs(ms) >= 10 else f"{ms:.2f}") + unit


def median_ms(values: list[float], cap: float = CAP) -> str:
    return fmt_ms(statistics.median(values), cap, " ms")


def median_max(values: list[float], cap: float = CAP) -> str:
    return f"{fmt_ms(statistics.median(values), cap)} / {fmt_ms(max(values), cap)}"


def fmt_exits(samples: list[Sample]) -> str:
    counts = Counter(s.exit_label for s in samples)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{label} x{n}" for label, n in counts.most_common())


def dumped(samples: list[Sample]) -> str:
    return f"{sum(s.dumped for s in samples)}/{len(samples)}" if samples else "n/a"
