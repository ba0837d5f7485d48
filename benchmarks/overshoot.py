"""How late does each way to exit at a deadline exit, and does it say what was stuck?

Compares, side by side and in one run, ways to make a Python process exit at
a deadline (the anchors first):

- ``threading.Timer(t, os._exit, (code,))`` (a daemon timer thread),
- ``faulthandler.dump_traceback_later(t, exit=True)``,
- ``signal.setitimer(ITIMER_REAL, t)`` with ``SIGALRM`` at its default action,
- ``hardexit.arm_hard_exit(t)`` (watchdog thread + kernel backstop),
- the same with ``logging`` imported at start-up,
- the same with ``HARDEXIT_BACKSTOP=none`` (watchdog thread alone).

The children are ``benchmarks/_arming.py``'s: fresh interpreters that import
``hardexit`` first and neither ``ctypes`` nor ``logging`` of their own accord.

1. Overshoot past a 0.3 s deadline.  The child builds its wedge, stores
   ``time.monotonic()`` just before and just after the arm call in shared
   memory, then wedges inside a function ``teardown()``.  The parent waits on a
   pidfd for it to die; overshoot = death seen - (start of the arm call +
   0.3 s).  ``CLOCK_MONOTONIC`` is system-wide on Linux, so the two clocks
   compare.  A child alive 3 s after arming is killed and counted as a
   timeout.  One that said it was ready to arm but had not reached its arm
   call 3 s later (its main thread starved of the GIL) is void: that run is
   redone, and the report's warning counts it.  A floor is measured too: a
   child that calls ``os._exit`` right after its timestamp.
2. Stack dumped: in each run of faulthandler and hardexit, did the wedged
   function's frame reach stderr, for every wedge kind.

Then the goals, each with its verdict.

On several interpreters (``--python COMMAND``, repeatable; default this one)
each cell runs on every one in turn, run by run, so that drift in machine load
hits them all alike; the report opens with hardexit's overshoot and exit per
interpreter, side by side, then gives each interpreter's tables and goals under
the version its children reported.  A command is split as a shell would
(``shlex``); one that wraps the interpreter must exec it, since the pidfd
watches the pid it started (the child reports its pid, and a mismatch is an
error).  CPython 3.14 and 3.15 come from a Debian root:
``benchmarks/in_forky.sh`` (see there, and benchmarks/README.md).

The cold first arm under load is ``benchmarks.first_arm``'s question, arm +
cancel ``benchmarks.arm_cost``'s, ``import hardexit``
``benchmarks.import_cost``'s.  Linux only (``os.pidfd_open``).  From the
repository root, on a quiet machine::

    python -m benchmarks.overshoot             # 15 runs per cell, about 4 minutes
    python -m benchmarks.overshoot --quick     # 3 runs per cell
    python -m benchmarks.overshoot --runs 1    # a smoke test, about 20 s
    benchmarks/in_forky.sh run python -m benchmarks.overshoot \\
        --python python3.11 --python 'benchmarks/in_forky.sh python3.14'

Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import statistics

from tests import wedges
from tests.wedges import BYTECODE_SPIN, GIL_CONTENDED, NATIVE_GIL_HELD, NATIVE_GIL_RELEASED, Wedge

from ._arming import (
    ANCHORS,
    CAP,
    DEADLINE,
    EXIT_CODE,
    FAULTHANDLER,
    HARDEXIT,
    MECHANISMS,
    NOTHING,
    SKIP_AFTER_TIMEOUTS,
    Cell,
    Cells,
    Measured,
    Mechanism,
    Sample,
    dumped,
    fmt_exits,
    fmt_ms,
    goals,
    measure_from_command_line,
    median_max,
    median_ms,
    per_interpreter,
)
from ._common import passed, table

DUMPERS = (FAULTHANDLER, HARDEXIT)  # the mechanisms that dump stacks

# Overshoot is measured for every mechanism on these; the stack dump on every kind.
OVERSHOOT_WEDGES = (NATIVE_GIL_RELEASED, BYTECODE_SPIN, GIL_CONTENDED, NATIVE_GIL_HELD)
DUMP_WEDGES = wedges.KINDS

FLOOR = Cell(NOTHING, Wedge("exit", "os._exit right after the timestamp", "os._exit(0)"))


def plan() -> list[Cell]:
    cells = [Cell(m, w) for w in OVERSHOOT_WEDGES for m in MECHANISMS]
    return cells + [Cell(m, w) for w in DUMP_WEDGES if w not in OVERSHOOT_WEDGES for m in DUMPERS]


def overshoot_cell(samples: list[Sample]) -> str:
    if not samples:
        return "n/a"
    if all(s.timed_out for s in samples):
        return f"{fmt_ms(float('inf'))} (timeout x{len(samples)})"
    return f"{median_max([s.overshoot for s in samples])} ({fmt_exits(samples)})"


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


def kinds_dumped(cells: Cells, mechanism: Mechanism) -> int:
    """Of the wedge kinds before finalization, how many *mechanism* dumped in every run."""
    alive = [w for w in DUMP_WEDGES if not w.at_exit]
    return sum(all(s.dumped for s in cells[Cell(mechanism, w)]) for w in alive)


def report_side_by_side(measured: list[Measured], runs: int) -> list[str]:
    rows = []
    for m in measured:
        ours = [m.cells[Cell(HARDEXIT, w)] for w in OVERSHOOT_WEDGES]
        exits = [s for w in DUMP_WEDGES for s in m.cells[Cell(HARDEXIT, w)]]
        rows.append(
            [
                f"{m.version} (`{m.python}`)",
                *(median_max([s.overshoot for s in samples]) for samples in ours),
                fmt_exits(exits),
                f"{kinds_dumped(m.cells, HARDEXIT)} of {len(DUMP_WEDGES)}",
                passed(verdicts(m.cells)),
            ]
        )
    header = ["Python", *(f"`{w.name}`" for w in OVERSHOOT_WEDGES), "exit status"]
    return [
        "## hardexit on each interpreter",
        "",
        f"Overshoot past a {DEADLINE} s deadline, ms, median / max over {runs} runs, measured"
        " interleaved; the exit status of every hardexit run; the wedge kinds whose frame"
        " reached stderr in every run; the goals that pass. Each interpreter's tables follow.",
        "",
        table([*header, "stack dumped, wedge kinds", "goals"], rows),
        "",
    ]


def verdicts(cells: Cells) -> list[tuple[bool, str]]:
    verdicts: list[tuple[bool, str]] = []

    def goal(ok: bool, text: str) -> None:
        verdicts.append((ok, text))

    def overshoots(mechanism: Mechanism, wedge: Wedge) -> list[float]:
        return [s.overshoot for s in cells[Cell(mechanism, wedge)]]

    # The fire path never imports: as fast as the anchors where Python can run.
    for wedge in (NATIVE_GIL_RELEASED, BYTECODE_SPIN):
        ours = overshoots(HARDEXIT, wedge)
        best, anchor = min((statistics.median(overshoots(m, wedge)), m.label) for m in ANCHORS)
        limit = max(0.010, 1.5 * best)
        goal(
            statistics.median(ours) <= limit,
            f"`{wedge.name}`, median <= max(10 ms, 1.5 x {fmt_ms(best, unit=' ms')} ({anchor})) ="
            f" {fmt_ms(limit, unit=' ms')}: {median_ms(ours)}",
        )
    ours = overshoots(HARDEXIT, GIL_CONTENDED)
    goal(
        statistics.median(ours) <= 0.030,
        f"`{GIL_CONTENDED.name}`, deadline {DEADLINE} s, median <= 30 ms: {median_ms(ours)}",
    )

    # A stack dump wherever the watchdog lives, the exact exit code, no later exit.
    for wedge in (NATIVE_GIL_HELD, GIL_CONTENDED):
        samples = cells[Cell(HARDEXIT, wedge)]
        goal(
            all(s.dumped for s in samples),
            f"stack dumped in every run, `{wedge.name}`, deadline {DEADLINE} s: {dumped(samples)}",
        )

    # In finalization the watchdog thread may be gone: documenting that is enough.
    by_us, by_faulthandler = kinds_dumped(cells, HARDEXIT), kinds_dumped(cells, FAULTHANDLER)
    alive = sum(not w.at_exit for w in DUMP_WEDGES)
    goal(
        by_us >= by_faulthandler,
        "wedge kinds dumped in every run, at least as many as faulthandler:"
        f" {by_us} vs {by_faulthandler} of the {alive} before finalization",
    )
    exits = [s for w in DUMP_WEDGES for s in cells[Cell(HARDEXIT, w)]]
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
    return verdicts


def main() -> None:
    title = "hardexit: overshoot and stack dumps"
    report, measured, runs = measure_from_command_line(__doc__, title, plan(), FLOOR)

    def sections(m: Measured) -> list[list[str]]:
        dumps = report_dumps(m.cells)
        return [report_overshoot(m.cells, m.floor, runs), dumps, goals(verdicts(m.cells))]

    side_by_side = [report_side_by_side(measured, runs)] if len(measured) > 1 else []
    report.print(*side_by_side, *per_interpreter(measured, sections))


if __name__ == "__main__":
    main()
