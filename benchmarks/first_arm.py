"""What does the first, cold arm cost while busy threads contend for the GIL?

A hardexit child (``benchmarks/_arming.py``'s: ``import hardexit`` first, no
``prepare()``, no ``ctypes`` or ``logging`` of its own) starts 32 busy
threads, then arms once:

- ``arm_hard_exit(30)``, then exits: how long the arm call took;
- ``arm_hard_exit(0.5)``, then spins: how long the arm call took, how long
  until the process was gone, past its deadline, whether its stack was
  dumped, and its exit status.

Before 0.2.0 that call took seconds: it loaded ``ctypes`` under contention.
Then the goals, each with its verdict.  Linux only (``os.pidfd_open``).  From
the repository root, on a quiet machine::

    python -m benchmarks.first_arm             # 15 runs, about 30 s
    python -m benchmarks.first_arm --quick     # 3 runs
    python -m benchmarks.first_arm --runs 1    # a smoke test

On several interpreters (``--python COMMAND``, repeatable, as
``benchmarks.overshoot`` takes it) each run measures both on every one in
turn; each interpreter's table and goals come under the version its children
reported.  (While an arm call under contention takes seconds, each run takes
them too.)
Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import replace

from tests.wedges import BUSY_THREADS, GIL_CONTENDED

from ._arming import (
    EXIT_CODE,
    HARDEXIT,
    Cell,
    Cells,
    Measured,
    dumped,
    fmt_exits,
    goals,
    measure_from_command_line,
    median_max,
    median_ms,
    per_interpreter,
)
from ._common import table

COLD_DEADLINE = 0.5  # the cold first arm's guard
COLD_ARM_TIMEOUT = 30.0  # the cold first arm whose cost is timed
COLD_CAP = 15.0  # a cold first arm has taken seconds

COLD_ARM = replace(
    GIL_CONTENDED,
    name="cold_first_arm",
    description=f"the first arm_hard_exit({COLD_ARM_TIMEOUT:g}) under {BUSY_THREADS} busy threads",
    code="os._exit(0)",  # the arm call is all that is timed
)
COLD_COST = Cell(HARDEXIT, COLD_ARM, COLD_ARM_TIMEOUT, COLD_CAP)
COLD_GUARD = Cell(HARDEXIT, GIL_CONTENDED, COLD_DEADLINE, COLD_CAP)


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


def report_goals(cells: Cells) -> list[str]:
    cost = [s.arm_call for s in cells[COLD_COST]]
    guard = cells[COLD_GUARD]
    overshoot = [s.overshoot for s in guard]
    verdicts = [
        (
            statistics.median(cost) <= 0.002,
            f"cold first arm under {BUSY_THREADS} busy threads, median <= 2 ms:"
            f" {median_ms(cost, COLD_CAP)}",
        ),
        (
            statistics.median(overshoot) <= 0.030,
            f"`{GIL_CONTENDED.name}`, deadline {COLD_DEADLINE} s, median <= 30 ms:"
            f" {median_ms(overshoot, COLD_CAP)}",
        ),
        (
            all(s.dumped for s in guard),
            f"stack dumped in every run, `{GIL_CONTENDED.name}`, deadline {COLD_DEADLINE} s:"
            f" {dumped(guard)}",
        ),
        (
            all(s.exit_label == str(EXIT_CODE) for s in guard),
            f"exit code {EXIT_CODE} in every run of the cold guard: {fmt_exits(guard)}",
        ),
    ]
    return goals(verdicts)


def main() -> None:
    title = "hardexit: the cold first arm under load"
    report, measured, _ = measure_from_command_line(__doc__, title, [COLD_COST, COLD_GUARD])

    def sections(m: Measured) -> list[list[str]]:
        return [report_cold(m.cells), report_goals(m.cells)]

    report.print(*per_interpreter(measured, sections))


if __name__ == "__main__":
    main()
