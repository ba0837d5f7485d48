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
   timeout.  A floor is measured too: a child that calls ``os._exit`` right
   after its timestamp.
2. Stack dumped: in each run of faulthandler and hardexit, did the wedged
   function's frame reach stderr, for every wedge kind.

Then the goals, each with its verdict.  The cold first arm under load is
``benchmarks.first_arm``'s question, arm + cancel ``benchmarks.arm_cost``'s,
``import hardexit`` ``benchmarks.import_cost``'s.  Linux only
(``os.pidfd_open``).  From the repository root, on a quiet machine::

    python -m benchmarks.overshoot             # 15 runs per cell, about 4 minutes
    python -m benchmarks.overshoot --quick     # 3 runs per cell
    python -m benchmarks.overshoot --runs 1    # a smoke test, about 20 s

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
    Mechanism,
    Sample,
    dumped,
    fmt_exits,
    fmt_ms,
    goals,
    measure_from_command_line,
    median_max,
    median_ms,
)
from ._common import table

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


def report_goals(cells: Cells) -> list[str]:
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
    alive = [w for w in DUMP_WEDGES if not w.at_exit]

    def kinds_dumped(mechanism: Mechanism) -> int:
        return sum(all(s.dumped for s in cells[Cell(mechanism, w)]) for w in alive)

    by_us, by_faulthandler = kinds_dumped(HARDEXIT), kinds_dumped(FAULTHANDLER)
    goal(
        by_us >= by_faulthandler,
        "wedge kinds dumped in every run, at least as many as faulthandler:"
        f" {by_us} vs {by_faulthandler} of the {len(alive)} before finalization",
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
    return goals(verdicts)


def main() -> None:
    title = "hardexit: overshoot and stack dumps"
    report, cells, floor, runs = measure_from_command_line(__doc__, title, plan(), FLOOR)
    report.print(report_overshoot(cells, floor, runs), report_dumps(cells), report_goals(cells))


if __name__ == "__main__":
    main()
