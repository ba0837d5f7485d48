"""How late does a hard-exit deadline fire, what does arming cost, and what do operators learn?

Compares, side by side and in one run, ways to make a Python process exit at
a deadline (the anchors first):

- ``threading.Timer(t, os._exit, (code,))`` (a daemon timer thread),
- ``faulthandler.dump_traceback_later(t, exit=True)``,
- ``signal.setitimer(ITIMER_REAL, t)`` with ``SIGALRM`` at its default action,
- ``hardexit.arm_hard_exit(t)`` (watchdog thread + kernel backstop),
- the same with ``logging`` imported at start-up,
- the same with ``HARDEXIT_BACKSTOP=none`` (watchdog thread alone).

Every child is a fresh interpreter of ``sys.executable`` with this
repository's ``hardexit`` on ``PYTHONPATH`` and its bytecode cached.  A
hardexit child runs ``import hardexit`` first, as the README shows, and never
calls ``prepare()``; no child imports ``logging`` unless its column says so
(each reports ``'logging' in sys.modules`` just before arming, and a child
that had it is an error).  The wedges are ``tests/wedges.py``'s, by the names
used there.

1. Overshoot past a 0.3 s deadline.  The child builds its wedge, stores
   ``time.monotonic()`` just before and just after the arm call in shared
   memory, then wedges inside a function ``teardown()``.  The parent waits on a
   pidfd for it to die; overshoot = death seen - (start of the arm call +
   0.3 s).  ``CLOCK_MONOTONIC`` is system-wide on Linux, so the two clocks
   compare.  A child alive 3 s after arming is killed and counted as a
   timeout.  A floor is measured too: a child that calls ``os._exit`` right
   after its timestamp.
2. The cold first arm under contention: a hardexit child starts 32 busy
   threads, then times ``arm_hard_exit(30)``; another arms 0.5 s that way and
   spins: how long from the arm call until it is gone.
3. Stack dumped: in each run of faulthandler and hardexit, did the wedged
   function's frame reach stderr, for every wedge kind.
4. arm + cancel cost, in-process: median over many iterations after one
   untimed first use, idle and with 32 busy threads.
5. ``import hardexit`` from ``-X importtime`` (cumulative), the threads alive
   after import / arm / cancel, and the modules the first arm and the fire
   path import.

Then the goals, each with its verdict.  Linux only (``os.pidfd_open``).
Run from anywhere, on a quiet machine::

    python benchmarks/overshoot.py             # 15 runs per cell, about 5 minutes
    python benchmarks/overshoot.py --quick     # 3 runs per cell, shorter loops
    python benchmarks/overshoot.py --runs 2 --quick   # a smoke test, about a minute

(While an arm call under contention takes seconds, each of those runs takes
them too.)

Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, AnyStr

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.wedges: each wedge is written once

from tests import wedges  # noqa: E402
from tests.wedges import (  # noqa: E402
    BUSY_THREADS,
    BYTECODE_SPIN,
    GIL_CONTENDED,
    NATIVE_GIL_HELD,
    NATIVE_GIL_RELEASED,
    Wedge,
)

DEADLINE = 0.3  # seconds from arming
CAP = 3.0  # seconds from arming after which a child is killed as a timeout
COLD_DEADLINE = 0.5  # the cold first arm's guard
COLD_ARM_TIMEOUT = 30.0  # the cold first arm whose cost is timed
COLD_CAP = 15.0  # a cold first arm has taken seconds
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
DUMPERS = (FAULTHANDLER, HARDEXIT)  # the mechanisms that dump stacks

# Overshoot is measured for every mechanism on these; the stack dump on every kind.
OVERSHOOT_WEDGES = (NATIVE_GIL_RELEASED, BYTECODE_SPIN, GIL_CONTENDED, NATIVE_GIL_HELD)
DUMP_WEDGES = wedges.KINDS

COLD_ARM = replace(
    GIL_CONTENDED,
    name="cold_first_arm",
    description=f"the first arm_hard_exit({COLD_ARM_TIMEOUT:g}) under {BUSY_THREADS} busy threads",
    code="os._exit(0)",  # the arm call is all that is timed
)
FLOOR = Wedge("exit", "os._exit right after the timestamp", "os._exit(0)")
NOTHING = Mechanism("none", "nothing armed")


@dataclass(frozen=True)
class Cell:
    mechanism: Mechanism
    wedge: Wedge
    deadline: float = DEADLINE
    cap: float = CAP


COLD_COST = Cell(HARDEXIT, COLD_ARM, COLD_ARM_TIMEOUT, COLD_CAP)
COLD_GUARD = Cell(HARDEXIT, GIL_CONTENDED, COLD_DEADLINE, COLD_CAP)
FLOOR_CELL = Cell(NOTHING, FLOOR)


def plan() -> list[Cell]:
    cells = [Cell(m, w) for w in OVERSHOOT_WEDGES for m in MECHANISMS]
    cells += [Cell(m, w) for w in DUMP_WEDGES if w not in OVERSHOOT_WEDGES for m in DUMPERS]
    return [*cells, COLD_COST, COLD_GUARD]


# --------------------------------------------------------------------------
# The children

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


def overshoot_child(wedge: Wedge) -> str:
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


# argv: mechanism preload iterations budget_seconds busy_threads; prints JSON on fd 1
CHILD_ARM_CANCEL = (
    CHILD_HEAD
    + wedges.HELPERS
    + MAKE_ARM
    + """
import json
iterations, budget, busy = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
clock = time.perf_counter_ns
arm = make_arm(sys.argv[1], 3)
start = clock()
arm(10.0)()
first = clock() - start
if busy:
    start_busy_threads(busy)
samples = []
give_up = time.monotonic() + budget
for _ in range(iterations):
    start = clock()
    cancel = arm(10.0)
    cancel()
    samples.append(clock() - start)
    if time.monotonic() > give_up:
        break
os.write(1, json.dumps({"first": first, "samples": samples}).encode())
os._exit(0)
"""
)

# What import, the first arm and cancel start and load.  The probe's own
# imports come after, so that they hide none of hardexit's.
CHILD_THREADS = """
import os, sys, time
def tasks():
    return len(os.listdir("/proc/self/task"))
before = set(sys.modules)
import hardexit
loaded = sorted(set(sys.modules) - before)
threads = {"after import": tasks()}
before = set(sys.modules)
guard = hardexit.arm_hard_exit(10.0)
arm_loaded = sorted(set(sys.modules) - before)
time.sleep(0.05)
threads["after arm"] = tasks()
guard.cancel()
time.sleep(0.05)
threads["after cancel"] = tasks()
import json
from hardexit.testing import is_testing
print(json.dumps({"threads": threads, "loaded": loaded, "arm_loaded": arm_loaded,
                  "backstop": hardexit.backstop_mechanism(), "testing": is_testing()}))
"""

# What the fire path imports, logging never imported before: run under
# `-X importtime`, which writes each import to stderr as it completes, so
# what follows the marker was imported after the arm, even by a fire that
# the exit cut short.
FIRE_MARKER = "armed, now wedged"
CHILD_FIRE = "\n".join(
    [
        "import os",
        "import hardexit",
        wedges.HELPERS,
        *(f"import {module}" for module in NATIVE_GIL_RELEASED.imports),
        f"hardexit.arm_hard_exit(0.2, exit_code={EXIT_CODE})",
        f"os.write(2, b'{FIRE_MARKER}\\n')",
        NATIVE_GIL_RELEASED.code,
    ]
)


def child_env(extra: tuple[tuple[str, str], ...]) -> dict[str, str]:
    env = dict(os.environ)
    # Bytecode cached, as in a real install: hardexit's next to it (ignored by
    # git), the standard library's where it was installed.
    for name in ("HARDEXIT_BACKSTOP", "HARDEXIT_TIMEOUT", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.update(extra)
    return env


def reap(proc: subprocess.Popen[AnyStr]) -> None:
    """Kill whatever is left of the child's process group, then reap the child.

    Called before the child is reaped, so its pid (= the group id) cannot have
    been reused yet.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def read_line(fd: int, timeout: float) -> bytes:
    """One newline-terminated line from *fd*; b"" on end of file or timeout."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    give_up = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = give_up - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1e3)):
            return b""
        chunk = os.read(fd, 4096)
        if not chunk:
            return b""
        data += chunk
    return data


def wait_for_death(pidfd: int, give_up: float) -> float | None:
    """When the child was seen dead (monotonic), or None if still alive at *give_up*."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if poller.poll(max(math.ceil((give_up - time.monotonic()) * 1e3), 0)):
        return time.monotonic()
    return None


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


def exit_label(returncode: int) -> str:
    if returncode >= 0:
        return str(returncode)
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_cell(cell: Cell) -> Sample:
    mechanism, wedge = cell.mechanism, cell.wedge
    what = f"{mechanism.label} / {wedge.name}"
    read_fd, write_fd = os.pipe()
    pidfd = -1
    proc: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as times:
        os.ftruncate(times.fileno(), 16)  # two doubles, 0.0 until stored
        try:
            argv = [sys.executable, "-c", overshoot_child(wedge), mechanism.key]
            argv += [",".join(mechanism.preload), str(write_fd), str(times.fileno())]
            argv += [repr(cell.deadline), str(EXIT_CODE)]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                pass_fds=(write_fd, times.fileno()),
                env=child_env(mechanism.env),
                start_new_session=True,
            )
            os.close(write_fd)
            write_fd = -1
            pidfd = os.pidfd_open(proc.pid)
            ready = read_line(read_fd, STARTUP_TIMEOUT).split()
            if not ready:
                raise RuntimeError(f"{what}: the child never got to arm:\n{tail(stderr)}")
            died_at = wait_for_death(pidfd, float(ready[0]) + cell.cap)
        finally:
            for fd in (read_fd, write_fd, pidfd):
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


def tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")[-2000:]


def run_arm_cancel(
    mechanism: Mechanism, iterations: int, budget: float, busy: int
) -> tuple[float, list[float]]:
    """(first use, [each later arm+cancel]) in microseconds."""
    argv = [sys.executable, "-c", CHILD_ARM_CANCEL, mechanism.key, ",".join(mechanism.preload)]
    argv += [str(iterations), repr(budget), str(busy)]
    out = run_checked(argv, child_env(mechanism.env), timeout=budget + 60).stdout
    result = json.loads(out)
    return result["first"] / 1e3, [ns / 1e3 for ns in result["samples"]]


def run_checked(
    argv: list[str], env: dict[str, str], timeout: float = 60, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        reap(proc)
    if proc.returncode not in ok:
        raise RuntimeError(f"child exited {proc.returncode}:\n{err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@dataclass
class ImportTime:
    cumulative_us: int
    self_us: dict[str, int]  # hardexit and what it imported, self time


def import_time(env: dict[str, str]) -> ImportTime:
    """Parse ``-X importtime``: hardexit's cumulative time and its subtree."""
    done = run_checked([sys.executable, "-X", "importtime", "-c", "import hardexit"], env)
    rows: list[tuple[int, str, int, int]] = []  # (depth, name, self, cumulative)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((depth, name.strip(), int(parts[0]), int(parts[1])))
    for index, (depth, name, _, cumulative) in enumerate(rows):
        if name == "hardexit":
            subtree: dict[str, int] = {}
            for row in reversed(rows[: index + 1]):
                if row[1] != "hardexit" and row[0] <= depth:
                    break
                subtree[row[1]] = row[2]
            return ImportTime(cumulative, subtree)
    raise RuntimeError(f"no hardexit line in -X importtime output:\n{done.stderr}")


# --------------------------------------------------------------------------
# Formatting


def fmt_ms(seconds: float, cap: float = CAP, unit: str = "") -> str:
    """Milliseconds, with *unit* after; inf (killed at the *cap*) as "> cap s"."""
    if math.isinf(seconds):
        return f"> {cap:.1f} s"
    ms = seconds * 1e3
    return (f"{ms:.1f}" if abs(ms) >= 10 else f"{ms:.2f}") + unit


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def fmt_exits(samples: list[Sample]) -> str:
    counts = Counter(s.exit_label for s in samples)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{label} x{n}" for label, n in counts.most_common())


def median_max(values: list[float], cap: float = CAP) -> str:
    return f"{fmt_ms(statistics.median(values), cap)} / {fmt_ms(max(values), cap)}"


def overshoot_cell(samples: list[Sample]) -> str:
    if not samples:
        return "n/a"
    if all(s.timed_out for s in samples):
        return f"{fmt_ms(math.inf)} (timeout x{len(samples)})"
    return f"{median_max([s.overshoot for s in samples])} ({fmt_exits(samples)})"


def dumped(samples: list[Sample]) -> str:
    return f"{sum(s.dumped for s in samples)}/{len(samples)}" if samples else "n/a"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def progress(text: str) -> None:
    print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Measurements 1-3: the child runs


Cells = dict[Cell, list[Sample]]


def measure_runs(runs: int) -> tuple[Cells, list[float]]:
    """Samples per cell, and the measurement floor in seconds."""
    cells: Cells = {cell: [] for cell in plan()}
    floor: list[float] = []
    # Interleaved, so that drift in machine load spreads over every cell.
    for run in range(runs):
        progress(f"run {run + 1}/{runs}: measurement floor")
        sample = run_cell(FLOOR_CELL)
        assert sample.died_at is not None and sample.after is not None
        floor.append(sample.died_at - sample.after)
        for cell, samples in cells.items():
            if len(samples) >= SKIP_AFTER_TIMEOUTS and all(s.timed_out for s in samples):
                continue
            progress(f"run {run + 1}/{runs}: {cell.wedge.name}, {cell.mechanism.label}")
            samples.append(run_cell(cell))
    progress("")
    return cells, floor


def report_overshoot(cells: Cells, floor: list[float], runs: int) -> list[str]:
    rows = [
        [f"`{w.name}`", *(overshoot_cell(cells[Cell(m, w)]) for m in MECHANISMS)]
        for w in OVERSHOOT_WEDGES
    ]
    return [
        f"## Overshoot past a {DEADLINE} s deadline",
        "",
        f"ms, median / max over {runs} runs (exit status), from the start of the arm call"
        " to the parent seeing the child die (pidfd). `logging` is never imported but"
        " where a column says so. `threading.Timer` and hardexit are asked for exit code"
        f" {EXIT_CODE}; faulthandler always exits 1; setitimer dies by SIGALRM."
        f" A child alive {CAP:.0f} s after arming is killed (`timeout`); a cell whose"
        f" first {SKIP_AFTER_TIMEOUTS} runs all time out is not run again.",
        "",
        f"Measurement floor (a child that calls `os._exit` right after its timestamp):"
        f" median {fmt_ms(statistics.median(floor))} ms, max {fmt_ms(max(floor))} ms.",
        "",
        table(["wedge", *(m.label for m in MECHANISMS)], rows),
        "",
    ]


def report_cold(cells: Cells) -> list[str]:
    cost, guard = cells[COLD_COST], cells[COLD_GUARD]
    preloaded = Counter(name for s in cost + guard for name in s.loaded)
    gone = [s.overshoot + s.deadline for s in guard]
    rows = [
        [f"`arm_hard_exit({COLD_ARM_TIMEOUT:g})` call", median_max([s.arm_call for s in cost])],
        [
            f"`arm_hard_exit({COLD_DEADLINE})` call, then spinning",
            median_max([s.arm_call for s in guard], COLD_CAP),
        ],
        ["… from that call until the process is gone", median_max(gone, COLD_CAP)],
        ["… past the deadline", median_max([s.overshoot for s in guard], COLD_CAP)],
        ["… stack dumped; exit status", f"{dumped(guard)}; {fmt_exits(guard)}"],
    ]
    return [
        f"## The cold first arm under {BUSY_THREADS} busy threads",
        "",
        f"ms, median / max over {len(cost)} runs. The child imports `hardexit` first and"
        f" nothing else of note (no `prepare()`, no `ctypes`, no `logging`), starts"
        f" {BUSY_THREADS} busy threads, then arms once. At the arm call, `ctypes` was in"
        f" `sys.modules` (loaded by `import hardexit`) in {preloaded['ctypes']} of"
        f" {len(cost + guard)} runs, `logging` in {preloaded['logging']}.",
        "",
        table(["", "median / max"], rows),
        "",
    ]


def report_dumps(cells: Cells) -> list[str]:
    rows = []
    for w in DUMP_WEDGES:
        ours = cells[Cell(HARDEXIT, w)]
        overshoot = statistics.median(s.overshoot for s in ours)
        rows.append(
            [
                f"`{w.name}`",
                dumped(cells[Cell(FAULTHANDLER, w)]),
                dumped(ours),
                fmt_exits(ours),
                fmt_ms(overshoot),
            ]
        )
    rows.append(
        [
            f"`{GIL_CONTENDED.name}`, cold arm, {COLD_DEADLINE} s",
            "",
            dumped(cells[COLD_GUARD]),
            fmt_exits(cells[COLD_GUARD]),
            fmt_ms(statistics.median(s.overshoot for s in cells[COLD_GUARD]), COLD_CAP),
        ]
    )
    legend = [f"- `{w.name}`: {w.description}" for w in DUMP_WEDGES]
    return [
        "## Stack dumped",
        "",
        "Runs in which the wedged function's frame (`teardown`, or the blocking `__del__`)"
        " reached stderr, and hardexit's exit status and median overshoot (ms). The wedges:",
        "",
        *legend,
        "",
        table(["wedge", "faulthandler", "hardexit", "hardexit exit", "hardexit overshoot"], rows),
        "",
    ]


# --------------------------------------------------------------------------
# Measurement 4: arm + cancel

ArmCancel = dict[tuple[Mechanism, bool], tuple[float, list[float]]]  # (first, samples) in µs


def measure_arm_cancel(quick: bool) -> ArmCancel:
    results: ArmCancel = {}
    for busy in (0, BUSY_THREADS):
        if busy:
            iterations, budget = (200, 1.0) if quick else (1000, 3.0)
        else:
            iterations, budget = (500, 30.0) if quick else (5000, 60.0)
        for mechanism in MECHANISMS:
            progress(f"arm+cancel: {mechanism.label}, {busy} busy threads")
            results[mechanism, bool(busy)] = run_arm_cancel(mechanism, iterations, budget, busy)
    progress("")
    return results


def report_arm_cancel(results: ArmCancel) -> list[str]:
    rows = [["first use (cold, idle)", *(fmt_us(results[m, False][0]) for m in MECHANISMS)]]
    for busy, label in ((False, "idle"), (True, f"{BUSY_THREADS} busy threads")):
        medians, p90s = [], []
        for m in MECHANISMS:
            samples = results[m, busy][1]
            medians.append(f"{fmt_us(statistics.median(samples))} (n={len(samples)})")
            p90s.append(fmt_us(statistics.quantiles(samples, n=10)[-1]) if len(samples) > 1 else "")
        rows += [[f"median, {label}", *medians], [f"p90, {label}", *p90s]]
    return [
        "## arm + cancel cost",
        "",
        "One arm+cancel pair (timeout 10 s), in-process in a fresh child, after one untimed"
        " first use (shown in the first row). Under contention the busy threads start after"
        " the first use and each mechanism gets a few seconds, hence the small n for"
        " `threading.Timer`, whose `start()` waits for the new thread to get the GIL.",
        "",
        table(["", *(m.label for m in MECHANISMS)], rows),
        "",
    ]


# --------------------------------------------------------------------------
# Measurement 5: import, threads, imports on the arm and fire paths


@dataclass
class Startup:
    times: list[ImportTime]
    threads: dict[str, int]  # OS threads after import, arm, cancel
    loaded: list[str]  # by `import hardexit`
    arm_loaded: list[str]  # by the first arm
    fire_loaded: list[str]  # by a fire with logging never imported
    backstop: str
    testing: bool  # hardexit.testing.is_testing() right after import


def measure_startup(runs: int) -> Startup:
    env = child_env(())
    progress("import time")
    import_time(env)  # write hardexit's bytecode
    times = [import_time(env) for _ in range(runs)]
    probe = json.loads(run_checked([sys.executable, "-c", CHILD_THREADS], env).stdout)
    progress("fire path")
    argv = [sys.executable, "-X", "importtime", "-c", CHILD_FIRE]
    fire = run_checked(argv, env, timeout=30, ok=(EXIT_CODE,)).stderr
    if FIRE_MARKER not in fire:
        raise RuntimeError(f"the fire probe never armed:\n{fire[-2000:]}")
    after_arm = fire.split(FIRE_MARKER, 1)[1].splitlines()
    imported = [
        line.split("|")[-1].strip() for line in after_arm if line.startswith("import time:")
    ]
    progress("")
    return Startup(
        times,
        probe["threads"],
        probe["loaded"],
        probe["arm_loaded"],
        imported,
        probe["backstop"],
        probe["testing"],
    )


def report_startup(startup: Startup) -> list[str]:
    times = startup.times
    cumulative = [t.cumulative_us for t in times]
    modules = {name for t in times for name in t.self_us}
    self_us = {name: statistics.median(t.self_us.get(name, 0) for t in times) for name in modules}
    top = sorted(self_us.items(), key=lambda item: -item[1])[:6]
    heavy = [n for n in ("ctypes", "logging", "threading", "signal") if n in startup.loaded]
    return [
        "## import hardexit",
        "",
        f"`-X importtime` cumulative for `hardexit`: median"
        f" {fmt_us(statistics.median(cumulative))}, min {fmt_us(min(cumulative))},"
        f" max {fmt_us(max(cumulative))} over {len(times)} runs (bytecode cached)."
        " Largest self times in its subtree (median): "
        + ", ".join(f"`{name}` {fmt_us(us)}" for name, us in top)
        + ".",
        "",
        f"`import hardexit` loads {len(startup.loaded)} modules"
        + (f", including {fmt_modules(heavy)}" if heavy else "")
        + f". Backstop here: `{startup.backstop}`. The first arm imported"
        f" {fmt_modules(startup.arm_loaded)}; a fire with `logging` never imported"
        f" imported {fmt_modules(startup.fire_loaded)}.",
        "",
        table(["stage", "OS threads"], [[k, str(n)] for k, n in startup.threads.items()]),
        "",
    ]


def fmt_modules(modules: Sequence[str]) -> str:
    return ", ".join(f"`{m}`" for m in modules) if modules else "nothing"


# --------------------------------------------------------------------------
# Goals


def report_goals(cells: Cells, results: ArmCancel, startup: Startup) -> list[str]:
    verdicts: list[tuple[bool, str]] = []

    def goal(ok: bool, text: str) -> None:
        verdicts.append((ok, text))

    def overshoots(mechanism: Mechanism, wedge: Wedge) -> list[float]:
        return [s.overshoot for s in cells[Cell(mechanism, wedge)]]

    def median_ms(values: list[float], cap: float = CAP) -> str:
        return fmt_ms(statistics.median(values), cap, " ms")

    # 1. The first arm keeps its promise under load.
    cost = [s.arm_call for s in cells[COLD_COST]]
    goal(
        statistics.median(cost) <= 0.002,
        f"cold first arm under {BUSY_THREADS} busy threads, median <= 2 ms:"
        f" {median_ms(cost, COLD_CAP)}",
    )
    arm_loaded = startup.arm_loaded
    goal(not arm_loaded, f"the first arm imports nothing: it imported {fmt_modules(arm_loaded)}")
    imported = statistics.median(t.cumulative_us for t in startup.times)
    goal(imported <= 10_000, f"`import hardexit`, median <= 10 ms: {fmt_us(imported)}")
    goal(
        startup.threads["after import"] == 1,
        f"no thread before the first arm: {startup.threads['after import']} after import",
    )

    # 2. The fire path never imports.
    fire = startup.fire_loaded
    goal(not fire, f"the fire path imports nothing: it imported {fmt_modules(fire)}")
    for wedge in (NATIVE_GIL_RELEASED, BYTECODE_SPIN):
        ours = overshoots(HARDEXIT, wedge)
        best, anchor = min((statistics.median(overshoots(m, wedge)), m.label) for m in ANCHORS)
        limit = max(0.010, 1.5 * best)
        goal(
            statistics.median(ours) <= limit,
            f"`{wedge.name}`, median <= max(10 ms, 1.5 x {fmt_ms(best, unit=' ms')} ({anchor})) ="
            f" {fmt_ms(limit, unit=' ms')}: {median_ms(ours)}",
        )
    for cell in (Cell(HARDEXIT, GIL_CONTENDED), COLD_GUARD):
        ours = [s.overshoot for s in cells[cell]]
        goal(
            statistics.median(ours) <= 0.030,
            f"`{GIL_CONTENDED.name}`, deadline {cell.deadline} s, median <= 30 ms:"
            f" {median_ms(ours, cell.cap)}",
        )

    # 3. A stack dump wherever the watchdog lives, the exact exit code, no later exit.
    for cell in (Cell(HARDEXIT, NATIVE_GIL_HELD), Cell(HARDEXIT, GIL_CONTENDED), COLD_GUARD):
        samples = cells[cell]
        goal(
            all(s.dumped for s in samples),
            f"stack dumped in every run, `{cell.wedge.name}`, deadline {cell.deadline} s:"
            f" {dumped(samples)}",
        )

    # In finalization the watchdog thread may be gone: documenting that is enough.
    alive = [w for w in DUMP_WEDGES if not w.at_exit]

    def kinds_dumped(mechanism: Mechanism) -> int:
        return sum(all(s.dumped for s in cells[Cell(mechanism, w)]) for w in alive)

    by_us, by_faulthandler = kinds_dumped(HARDEXIT), kinds_dumped(FAULTHANDLER)
    goal(
        by_us >= by_faulthandler,
        "wedge kinds dumped in every run, at least as many as faulthandler:"
        f" {by_us} vs {by_faulthandler} of the {len(alive)} before finalization",
    )
    exits = [s for w in DUMP_WEDGES for s in cells[Cell(HARDEXIT, w)]] + cells[COLD_GUARD]
    goal(
        all(s.exit_label == str(EXIT_CODE) for s in exits),
        f"exit code {EXIT_CODE} in every hardexit run: {fmt_exits(exits)}",
    )

    # Standing goals from earlier work.
    held = overshoots(HARDEXIT, NATIVE_GIL_HELD)
    goal(
        max(held) <= 0.250,
        f"`{NATIVE_GIL_HELD.name}`, every run <= 250 ms: max {fmt_ms(max(held), unit=' ms')}",
    )
    for busy, label in ((False, "idle"), (True, f"{BUSY_THREADS} busy threads")):
        us = statistics.median(results[HARDEXIT, busy][1])
        goal(us <= 20, f"arm+cancel {label}, median <= 20 µs: {fmt_us(us)}")

    passed = sum(ok for ok, _ in verdicts)
    return [
        "## Goals for hardexit",
        "",
        "Overshoot counts from the start of the arm call, `logging` never imported.",
        "",
        *(f"- {'pass' if ok else '**MISS**'}: {text}" for ok, text in verdicts),
        "",
        f"{passed} of {len(verdicts)} goals pass.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per cell (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 runs per cell, shorter loops")
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else (3 if args.quick else 15)
    if runs < 1:
        parser.error("--runs must be >= 1")
    if not hasattr(os, "pidfd_open"):
        sys.exit("needs Linux >= 5.3 and Python >= 3.9 (os.pidfd_open)")

    started = time.monotonic()
    load_before = os.getloadavg()[0]
    startup = measure_startup(3 if args.quick else 10)
    if startup.testing:
        print("warning: hardexit is in testing mode; its guards never fire", file=sys.stderr)
    results = measure_arm_cancel(args.quick)
    cells, floor = measure_runs(runs)

    out = ["# hardexit: overshoot, overhead and diagnostics", ""]
    if startup.testing:
        out += [
            "**WARNING: `hardexit.testing.is_testing()` is True right after import: guards"
            " are inert, so the hardexit columns measure nothing.**",
            "",
        ]
    out += [
        f"Python {platform.python_version()} ({sys.executable}), {platform.system()}"
        f" {platform.release()}, {os.cpu_count()} CPUs, GIL switch interval"
        f" {sys.getswitchinterval() * 1e3:g} ms, hardexit from {REPO_ROOT}."
        f" 1-minute load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end;"
        f" took {time.monotonic() - started:.0f} s.",
        "",
        *report_overshoot(cells, floor, runs),
        *report_cold(cells),
        *report_dumps(cells),
        *report_arm_cancel(results),
        *report_startup(startup),
        *report_goals(cells, results, startup),
    ]
    print("\n".join(out).rstrip())


if __name__ == "__main__":
    main()
