"""The ways to exit at a deadline that the benchmarks compare, and children that arm one.

Every child is a fresh interpreter (``sys.executable``, or each ``--python``
given) run in the repository root, so that it imports this repository's
``hardexit``, with its bytecode cached.  A hardexit child runs ``import hardexit`` first, as the
README shows, and never calls ``prepare()``; no child imports ``logging``
unless its mechanism preloads it (each reports ``'logging' in sys.modules``
just before arming, and a child that had it is an error).  The wedges are
``tests/wedges.py``'s, by the names used there.

A *cell* is one mechanism armed before one wedge: :func:`run_cell` runs it
once on one interpreter and returns a :class:`Sample`; :func:`measure` runs
cells on interpreters, interleaved, into a :class:`Measured` per interpreter.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests import wedges
from tests.support import ExitWatch
from tests.wedges import Wedge

from . import _common
from ._common import child_env, exit_label, progress, read_line, reap, spawn, tail

DEADLINE = 0.3  # seconds from arming
CAP = 3.0  # seconds from arming after which a child is killed as a timeout
EXIT_CODE = 3  # asked of the mechanisms that take one
STARTUP_TIMEOUT = 30.0  # seconds for a child to reach the point of arming
SKIP_AFTER_TIMEOUTS = 3  # a cell whose first runs all time out is not run again
REDOS = 2  # times a run whose child never reached its arm call is redone


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
# The child says "ready" on a pipe, with its pid (a wrapper must have exec'd
# the interpreter), what it has loaded and its sys.version, then stores its
# clock just before and just after the arm call in a shared 16-byte file
# mapping: unlike a write to a pipe, a store into memory cannot give the GIL
# away (and take a contended wait to get it back) between the timestamp and
# the arm, and it survives a child that dies inside the arm call.
ARM_AND_WEDGE = """
ready_fd, times_fd, deadline = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
times = mmap.mmap(times_fd, 16)
arm = make_arm(sys.argv[1], int(sys.argv[6]))
loaded = ",".join(name for name in ("ctypes", "logging") if name in sys.modules) or "-"
version = " ".join(sys.version.split())
os.write(ready_fd, f"{time.monotonic()!r} {os.getpid()} {loaded} {version}\\n".encode())
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


class NeverArmed(RuntimeError):
    """The child said ready, then was still short of its arm call at the cap.

    Its main thread did not get the GIL back (from busy threads, on a loaded
    machine): no figure for the mechanism, which was never armed.
    """


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
    version: str  # the child's sys.version

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


def run_cell(cell: Cell, python: str) -> Sample:
    """*cell* once, in a child of *python* (a :func:`_common.interpreter`)."""
    mechanism, wedge = cell.mechanism, cell.wedge
    what = f"{mechanism.label} / {wedge.name} ({python})"
    read_fd, write_fd = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as times, ExitWatch() as w:
        os.ftruncate(times.fileno(), 16)  # two doubles, 0.0 until stored
        try:
            argv = [*_common.command(python), "-c", wedged_child(wedge), mechanism.key]
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
            w.add(proc.pid)
            ready = read_line(read_fd, STARTUP_TIMEOUT).decode().strip().split(maxsplit=3)
            if not ready:
                raise RuntimeError(f"{what}: the child never got to arm:\n{tail(stderr)}")
            if int(ready[1]) != proc.pid:
                raise RuntimeError(
                    f"{what}: the interpreter ran as pid {ready[1]}, not as the child started"
                    f" ({proc.pid}): a wrapper must exec it, or the pidfd times the wrapper"
                )
            died_at = w.wait(float(ready[0]) + cell.cap).get(proc.pid)
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if proc is not None:
                reap(proc)
        loaded = tuple(name for name in ready[2].split(",") if name != "-")
        if "logging" in loaded and "logging" not in mechanism.preload:
            raise RuntimeError(f"{what}: logging was imported before the arm; the run is void")
        before, after = struct.unpack("dd", os.pread(times.fileno(), 16, 0))
        if died_at is None:
            label = "timeout" if after else "timeout, arm call stuck"
        else:
            label = exit_label(proc.returncode)
        if not before:
            why = f"{what}: no arm time stored (exit: {label}):\n{tail(stderr)}"
            raise NeverArmed(why) if died_at is None else RuntimeError(why)
        stderr.seek(0)
        frame = re.escape(wedge.frame or "teardown").encode()
        dumped = re.search(rb'File "<string>", line \d+ in ' + frame + rb"\n", stderr.read())
        return Sample(
            cell.deadline, before, after or None, died_at, label, bool(dumped), loaded, ready[3]
        )


Cells = dict[Cell, list[Sample]]


@dataclass
class Measured:
    """One interpreter's samples per cell, and its measurement floor in seconds."""

    python: str  # as _common.interpreter() gave it
    cells: Cells
    floor: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)  # sys.version, as its children said
    void: list[Cell] = field(default_factory=list)  # each run redone: NeverArmed

    def run(self, cell: Cell) -> Sample:
        """*cell* once; a run whose child never reached its arm call is redone (REDOS)."""
        for redo in range(REDOS + 1):
            try:
                sample = run_cell(cell, self.python)
            except NeverArmed:
                if redo == REDOS:
                    raise
                self.void.append(cell)
                continue
            self.versions.add(sample.version)
            return sample
        raise AssertionError("unreachable")

    @property
    def version(self) -> str:
        """The version number its children ran, e.g. ``3.14.8``."""
        return " / ".join(sorted({v.split()[0] for v in self.versions})) or "?"

    def heading(self) -> str:
        return f"Python {' / '.join(sorted(self.versions)) or '?'}: `{self.python}`"


def measure_from_command_line(
    doc: str | None, title: str, cells: list[Cell], floor: Cell | None = None
) -> tuple[_common.Report, list[Measured], int]:
    """Parse the command line (``--python`` included), then :func:`measure`.

    The report's warning says which runs, if any, were void and redone.
    """
    args = _common.parse(_common.parser(doc, runs=15, quick_runs=3, pythons=True))
    report = _common.Report(title)
    measured = measure(cells, args.runs, args.python, floor)
    void = Counter(
        f"{cell.wedge.name}, {cell.mechanism.label}"
        + (f", {m.version}" if len(measured) > 1 else "")
        for m in measured
        for cell in m.void
    )
    if void:
        report.warning = (
            f"{void.total()} runs void and redone: the child, ready, had not reached its arm"
            f" call {CAP:g} s later ({', '.join(f'{what} x{n}' for what, n in void.items())})"
        )
    return report, measured, args.runs


def goals(verdicts: list[tuple[bool, str]]) -> list[str]:
    """The goals section of a report on cells."""
    note = "Overshoot counts from the start of the arm call, `logging` never imported."
    return _common.goals(verdicts, note)


def measure(
    cells: list[Cell], runs: int, pythons: Sequence[str], floor: Cell | None = None
) -> list[Measured]:
    """Samples per interpreter and cell, and the measurement floor (if a *floor* cell is given).

    Interleaved: for each run, for each cell, for each interpreter, so that
    drift in machine load spreads over every cell and every interpreter alike.
    """
    measured = [Measured(python, {cell: [] for cell in cells}) for python in pythons]
    for run in range(runs):
        for i, m in enumerate(measured):
            where = f", interpreter {i + 1}" if len(measured) > 1 else ""
            if floor is not None:
                progress(f"run {run + 1}/{runs}: measurement floor{where}")
                sample = m.run(floor)
                assert sample.died_at is not None and sample.after is not None
                m.floor.append(sample.died_at - sample.after)
        for cell in cells:
            for i, m in enumerate(measured):
                done = m.cells[cell]
                if len(done) >= SKIP_AFTER_TIMEOUTS and all(s.timed_out for s in done):
                    continue
                where = f", interpreter {i + 1}" if len(measured) > 1 else ""
                progress(f"run {run + 1}/{runs}: {cell.wedge.name}, {cell.mechanism.label}{where}")
                done.append(m.run(cell))
    progress("")
    return measured


def per_interpreter(
    measured: list[Measured], sections: Callable[[Measured], list[list[str]]]
) -> list[list[str]]:
    """Each interpreter's report *sections*: as they are for this one alone; else each under
    its heading (the version its children reported, and the command), one level down."""
    if [m.python for m in measured] == [_common.interpreter(sys.executable)]:
        return sections(measured[0])
    out = []
    for m in measured:
        out.append([f"## {m.heading()}", ""])
        out += [["#" + line if line.startswith("#") else line for line in s] for s in sections(m)]
    return out


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
