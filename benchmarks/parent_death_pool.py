"""Does arm_on_parent_death slow a normal pool run?

Runs 400 small tasks on a ProcessPoolExecutor of 4 forkserver workers,
with ``initializer=hardexit.arm_on_parent_death`` and without it, each run in
a fresh interpreter (a fresh forkserver), the arms in rotating order, and
prints the wall time of every run and the median of each arm.  Wall time is
from creating the executor to the end of ``shutdown(wait=True)``: worker
start-up, the initializer, the tasks and the exit are all inside it.

Each arm runs twice: as is, where every worker imports hardexit when it
unpickles the initializer, and with ``set_forkserver_preload(["hardexit"])``,
where the workers inherit it from the forkserver, as with any library a
pool's workers use.

    python benchmarks/parent_death_pool.py [--runs 5]

Needs a quiet machine to compare medians below a few percent.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

RUN = """\
import concurrent.futures, multiprocessing, sys, time
import hardexit

if __name__ == "__main__":
    initializer, preload = sys.argv[1:]
    arm = initializer == "with"
    kwargs = {"initializer": hardexit.arm_on_parent_death, "initargs": (5,)} if arm else {}
    start = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    if preload == "preload":
        context.set_forkserver_preload(["hardexit"])
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=context, **kwargs) as pool:
        # A builtin task: a function defined in a -c script cannot be pickled.
        assert sum(pool.map(sum, [range(1000)] * 400)) == 400 * sum(range(1000))
        first = time.perf_counter() - start
        # The same again, on workers that have started (and armed) already.
        again = time.perf_counter()
        assert sum(pool.map(sum, [range(1000)] * 400)) == 400 * sum(range(1000))
        again = time.perf_counter() - again
    print(first, again, time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each arm (default 5)")
    runs = parser.parse_args().runs
    arms = [
        (initializer, preload)
        for preload in ("plain", "preload")
        for initializer in ("without", "with")
    ]
    phases = ("first 400 tasks, start-up included", "400 more tasks", "whole run, exit included")
    times = {(arm, phase): [] for arm in arms for phase in phases}
    for i in range(runs):
        for arm in arms[i % len(arms) :] + arms[: i % len(arms)]:
            out = subprocess.run(
                [sys.executable, "-c", RUN, *arm], capture_output=True, text=True, check=True
            )
            for phase, seconds in zip(phases, out.stdout.split(), strict=True):
                times[arm, phase].append(float(seconds))
    for phase in phases:
        print(f"{phase}: median (min-max) of {runs} runs")
        for initializer, preload in arms:
            seconds = times[(initializer, preload), phase]
            print(
                f"  {initializer:>7} arm_on_parent_death, {preload:>7}: "
                f"{statistics.median(seconds):.3f} s ({min(seconds):.3f}-{max(seconds):.3f})"
            )


if __name__ == "__main__":
    main()
