"""What does arm_on_parent_death cost a pool, and what would PR_SET_PDEATHSIG add?

1. **pool** (formerly ``parent_death_pool.py``): does
   ``initializer=hardexit.arm_on_parent_death`` slow a normal pool run?
   Runs 400 small tasks on a ProcessPoolExecutor of 4 forkserver workers,
   with the initializer and without it, each run in a fresh interpreter (a
   fresh forkserver), the arms in rotating order, and prints the wall time of
   every run and the median of each arm.  Wall time is from creating the
   executor to the end of ``shutdown(wait=True)``: worker start-up, the
   initializer, the tasks and the exit are all inside it.  Each arm runs
   twice: as is, where every worker imports hardexit when it unpickles the
   initializer, and with ``set_forkserver_preload(["hardexit"])``, where the
   workers inherit it from the forkserver, as with any library a pool's
   workers use.  Needs a quiet machine to compare medians below a few percent.

2. **pdeathsig** (formerly ``pdeathsig.py``): arm_on_parent_death's watcher
   is a Python thread: while a worker's main thread holds the GIL forever (a
   native call through ``ctypes.PyDLL``, a C extension that never releases
   it), it cannot arm.  The kernel's ``prctl(PR_SET_PDEATHSIG, SIGKILL)``
   needs no GIL.  Measured with real orphans under a subreaper
   (tests/parent_death_harness.py):

   1. a fork-pool worker holding the GIL forever, arm_on_parent_death only;
   2. the same with PR_SET_PDEATHSIG(SIGKILL) set in the initializer too;
   3. the same in a forkserver pool;
   4. a spawn pool whose workers were started by a thread that has since
      exited, its parent alive: the signal follows the parent *thread*.

Every child runs in the repository root, so it imports this repository's
``hardexit`` and ``tests``.  From the repository root::

    python -m benchmarks.parent_death                  # both: about 1.5 min
    python -m benchmarks.parent_death pool --runs 15   # the pool alone
    python -m benchmarks.parent_death pdeathsig        # about 20 s
    python -m benchmarks.parent_death --quick          # 1 run of each pool arm
"""

from __future__ import annotations

import statistics
import sys

from tests.parent_death_harness import orphan as run_orphan

from . import _common
from ._common import child_env, run_checked

# --------------------------------------------------------------------------- pool

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


def pool(runs: int) -> None:
    arms = [
        (initializer, preload)
        for preload in ("plain", "preload")
        for initializer in ("without", "with")
    ]
    phases = ("first 400 tasks, start-up included", "400 more tasks", "whole run, exit included")
    times: dict[tuple[tuple[str, str], str], list[float]] = {
        (arm, phase): [] for arm in arms for phase in phases
    }
    env = child_env()
    for i in range(runs):
        for arm in arms[i % len(arms) :] + arms[: i % len(arms)]:
            out = run_checked([sys.executable, "-c", RUN, *arm], env, timeout=300)
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


# --------------------------------------------------------------------------- pdeathsig

BUDGET, OBSERVE = 1.0, 4.0

THREAD_EXITED = """\
import concurrent.futures, multiprocessing, os, threading, time
from tests.parent_death_harness import set_pdeathsig

if __name__ == "__main__":
    pool = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=set_pdeathsig
    )
    starter = threading.Thread(target=lambda: print("worker", pool.submit(os.getpid).result()))
    starter.start()  # this thread starts the worker, then exits
    starter.join()
    time.sleep(0.5)
    try:
        print("after the thread exited:", pool.submit(os.getpid).result(timeout=10))
    except Exception as exc:
        print("after the thread exited:", type(exc).__name__, exc)
    pool.shutdown(wait=False, cancel_futures=True)
"""


def orphan(method: str, pdeathsig: bool) -> str:
    config = {
        "kind": "executor",
        "method": method,
        "wedge": "native_gil_held",
        "timeout": BUDGET,
        "workers": 2,
        "armed": True,
        "pdeathsig": pdeathsig,
        "expect": {"worker": 2},
        "observe": OBSERVE,
    }
    outcome = run_orphan(config)
    parts = []
    for pid, after in ((pid, outcome.after_kill(pid)) for pid in outcome.gone_at):
        status = outcome.status.get(pid, "reaped by the forkserver")
        if after is None:
            parts.append(f"alive after {OBSERVE:.0f} s")
        else:
            parts.append(f"gone at +{after:.3f} s, status {status}")
    return "; ".join(parts)


def pdeathsig() -> None:
    print(f"Parent SIGKILLed; its 2 workers hold the GIL forever; budget {BUDGET} s.")
    print("1. fork pool, arm_on_parent_death:             ", orphan("fork", False))
    print("2. fork pool, + PR_SET_PDEATHSIG(SIGKILL):     ", orphan("fork", True))
    print("3. forkserver pool, + PR_SET_PDEATHSIG(SIGKILL):", orphan("forkserver", True))
    out = run_checked([sys.executable, "-c", THREAD_EXITED], child_env(), timeout=60)
    print("4. spawn pool started from a thread that exited, parent alive:")
    print("   " + out.stdout.strip().replace("\n", "\n   "))


def main() -> None:
    parser = _common.parser(__doc__, runs=5, quick_runs=1, what="runs of each pool arm")
    parser.add_argument(
        "what",
        nargs="?",
        choices=("pool", "pdeathsig", "both"),
        default="both",
        help="which (default both)",
    )
    args = _common.parse(parser)
    if args.what in ("pool", "both"):
        pool(args.runs)
    if args.what == "both":
        print()
    if args.what in ("pdeathsig", "both"):
        pdeathsig()


if __name__ == "__main__":
    main()
